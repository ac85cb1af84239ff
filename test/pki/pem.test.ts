import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { decodePem, encodePem, looksLikePem } from '../../src/pki/pem.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

const refused = (fn: () => unknown, pattern: RegExp) => assertThrowsRefusal(fn, 'invalid_argument', pattern);

describe('encodePem', () => {
  test('wraps base64 at 64 characters and ends with a newline', () => {
    const der = randomBytes(60);
    const pem = encodePem('CERTIFICATE', der);
    const lines = pem.split('\n');
    assert.equal(lines[0], '-----BEGIN CERTIFICATE-----');
    assert.equal(lines[1].length, 64);
    assert.equal(lines[2].length, der.toString('base64').length - 64);
    assert.equal(lines[3], '-----END CERTIFICATE-----');
    assert.equal(lines[4], '');
    assert.ok(pem.endsWith('-----\n'));
  });

  test('a body that is an exact multiple of 64 has no blank line', () => {
    const pem = encodePem('X', randomBytes(48)); // 64 base64 characters
    assert.equal(pem.split('\n').length, 4);
  });

  test('round-trips through decodePem for many sizes', () => {
    for (let size = 1; size < 200; size += 7) {
      const der = randomBytes(size);
      assert.deepEqual(decodePem(encodePem('PRIVATE KEY', der)), [{ label: 'PRIVATE KEY', der }]);
    }
  });

  test('openssl reads what we write', () => {
    const der = execFileSync('openssl', ['genpkey', '-algorithm', 'ed25519', '-outform', 'DER']);
    const out = execFileSync('openssl', ['pkey', '-inform', 'PEM', '-outform', 'DER'], {
      input: encodePem('PRIVATE KEY', der),
    });
    assert.deepEqual(out, der);
  });

  test('refuses a label with dashes at the ends or newlines', () => {
    refused(() => encodePem('-X', Buffer.of(1)), /invalid PEM label/);
    refused(() => encodePem('X\nY', Buffer.of(1)), /invalid PEM label/);
    refused(() => encodePem('', Buffer.of(1)), /invalid PEM label/);
  });

  test('refuses an empty body', () => {
    refused(() => encodePem('X', Buffer.alloc(0)), /empty/);
  });
});

describe('decodePem', () => {
  test('returns every block in order with text around and between them ignored', () => {
    const a = randomBytes(10);
    const b = randomBytes(300);
    const text = `subject=CN=x\n${encodePem('CERTIFICATE', a)}some words\n\n${encodePem('X509 CRL', b)}trailing`;
    assert.deepEqual(decodePem(text), [
      { label: 'CERTIFICATE', der: a },
      { label: 'X509 CRL', der: b },
    ]);
  });

  test('accepts CRLF line endings and indentation', () => {
    const der = randomBytes(80);
    const text = encodePem('CERTIFICATE', der)
      .split('\n')
      .map((line) => (line ? `  ${line}` : line))
      .join('\r\n');
    assert.deepEqual(decodePem(text), [{ label: 'CERTIFICATE', der }]);
  });

  test('returns [] when there is no block', () => {
    assert.deepEqual(decodePem(''), []);
    assert.deepEqual(decodePem('just some text\n'), []);
  });

  test('keeps RFC 1421 headers of legacy encrypted keys', () => {
    const pem = execFileSync(
      'openssl',
      ['genrsa', '-traditional', '-aes256', '-passout', 'pass:pw', '1024'],
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    ).toString();
    const [block] = decodePem(pem);
    assert.equal(block.label, 'RSA PRIVATE KEY');
    assert.equal(block.headers?.['Proc-Type'], '4,ENCRYPTED');
    assert.match(block.headers?.['DEK-Info'] ?? '', /^AES-256-CBC,[0-9A-F]{32}$/);
    assert.ok(block.der.length > 600);
  });

  test('refuses an unterminated block', () => {
    const pem = encodePem('CERTIFICATE', randomBytes(50));
    refused(
      () => decodePem(pem.replace('-----END CERTIFICATE-----\n', '')),
      /"CERTIFICATE" is not terminated/,
    );
  });

  test('refuses a block interrupted by another BEGIN', () => {
    const pem = encodePem('A', randomBytes(50));
    const broken = pem.replace('-----END A-----\n', '') + encodePem('B', randomBytes(5));
    refused(() => decodePem(broken), /"A" is not terminated \(found another BEGIN/);
  });

  test('refuses a mismatched END label', () => {
    const pem = encodePem('CERTIFICATE', randomBytes(50)).replace('END CERTIFICATE', 'END PRIVATE KEY');
    refused(() => decodePem(pem), /"CERTIFICATE" ends with a mismatched label "PRIVATE KEY"/);
  });

  test('refuses characters outside base64', () => {
    // Replace the body's first character whatever it is (a random body may start with '+' or '/').
    const pem = encodePem('X', randomBytes(50)).replace(/^(-----BEGIN X-----\n)./, '$1!');
    assert.match(pem, /^-----BEGIN X-----\n!/);
    refused(() => decodePem(pem), /"X" contains invalid base64/);
  });

  test('refuses base64 with missing padding', () => {
    refused(() => decodePem('-----BEGIN X-----\nAAE\n-----END X-----\n'), /invalid base64/);
  });

  test('refuses base64 with padding in the middle', () => {
    refused(() => decodePem('-----BEGIN X-----\nAA==\nAAAA\n-----END X-----\n'), /invalid base64/);
  });

  test('refuses non-canonical base64 (non-zero padding bits)', () => {
    refused(() => decodePem('-----BEGIN X-----\nAB==\n-----END X-----\n'), /invalid base64/);
  });

  test('refuses an empty block', () => {
    refused(() => decodePem('-----BEGIN X-----\n-----END X-----\n'), /"X" is empty/);
  });
});

describe('looksLikePem', () => {
  test('recognises PEM text and buffers', () => {
    const pem = encodePem('CERTIFICATE', randomBytes(20));
    assert.equal(looksLikePem(pem), true);
    assert.equal(looksLikePem(Buffer.from(`# comment\n${pem}`)), true);
  });

  test('does not mistake DER or plain text for PEM', () => {
    assert.equal(looksLikePem(Buffer.from([0x30, 0x82, 0x01, 0x0a, 0x02, 0x01])), false);
    assert.equal(looksLikePem('hello'), false);
    assert.equal(looksLikePem(''), false);
  });
});
