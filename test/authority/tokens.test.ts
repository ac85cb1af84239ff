import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  encodeJoinToken,
  hashTokenSecret,
  newTokenId,
  newTokenSecret,
  parseJoinToken,
  secretMatches,
  tokenKindOf,
} from '../../src/protocol/join-tokens.ts';

const fingerprint = 'ab'.repeat(32);

function sample(addresses = ['127.0.0.1:7443', '[::1]:7443', 'ca.example.test:443']) {
  return { addresses, rootFingerprint: fingerprint, id: newTokenId('node'), secret: newTokenSecret() };
}

/** A token string over a hand-made body, to test the parser's refusals. */
function withBody(body: Buffer): string {
  return `sigil1.${body.toString('base64url')}`;
}

describe('join token format', () => {
  it('round-trips addresses, fingerprint, id and secret in one compact string', () => {
    const token = sample();
    const text = encodeJoinToken(token);
    assert.match(text, /^sigil1\.[A-Za-z0-9_-]+$/);
    assert.ok(text.length < 200, `compact (${text.length} characters)`);
    const parsed = parseJoinToken(`  ${text}\n`);
    assert.deepEqual(parsed.addresses, token.addresses);
    assert.equal(parsed.rootFingerprint, fingerprint);
    assert.equal(parsed.id, token.id);
    assert.deepEqual(parsed.secret, token.secret);
  });

  it('token IDs carry their kind', () => {
    assert.equal(tokenKindOf(newTokenId('node')), 'node');
    assert.equal(tokenKindOf(newTokenId('replica')), 'replica');
    assert.equal(tokenKindOf('tx0123456789abcdef'), null);
    assert.equal(tokenKindOf('../etc/passwd'), null);
  });

  it('malformed tokens are refused with a message naming the problem, never echoing the token', () => {
    const text = encodeJoinToken(sample());
    const cases: [string, RegExp][] = [
      ['hello', /must start with "sigil1\."/],
      ['sigil2.AAAA', /join token version 2 is not supported \(this sigil reads version 1\)/],
      ['sigil1.!!!', /not base64url/],
      ['sigil1.', /must start with "sigil1\."|not base64url/],
      [text.slice(0, 30), /truncated/],
      [`${text}AAAA`, /unexpected bytes after the server addresses|truncated/],
    ];
    for (const [input, expected] of cases) {
      assert.throws(
        () => parseJoinToken(input),
        (error: Error) => {
          assert.match(error.message, expected, input);
          if (input.length > 20) assert.ok(!error.message.includes(input.slice(7, 30)), 'token not echoed');
          return true;
        },
      );
    }
  });

  it('a fingerprint of the wrong length is refused by its length', () => {
    const body = Buffer.concat([Buffer.of(20), Buffer.alloc(20, 1), Buffer.of(0)]);
    assert.throws(
      () => parseJoinToken(withBody(body)),
      /the CA fingerprint is 20 bytes; expected 32 \(SHA-256\)/,
    );
  });

  it('a secret of the wrong length and a bad address are refused by name', () => {
    const id = Buffer.from(newTokenId('node'), 'latin1');
    const head = Buffer.concat([Buffer.of(32), Buffer.alloc(32, 1), Buffer.of(id.length), id]);
    const shortSecret = Buffer.concat([
      head,
      Buffer.of(8),
      Buffer.alloc(8),
      Buffer.of(1),
      Buffer.of(3),
      Buffer.from('a:1'),
    ]);
    assert.throws(() => parseJoinToken(withBody(shortSecret)), /the secret is 8 bytes; expected 32/);
    const badAddress = Buffer.concat([
      head,
      Buffer.of(32),
      Buffer.alloc(32),
      Buffer.of(1),
      Buffer.of(4),
      Buffer.from('nope'),
    ]);
    assert.throws(() => parseJoinToken(withBody(badAddress)), /server address #1 is not host:port/);
    const noAddress = Buffer.concat([head, Buffer.of(32), Buffer.alloc(32), Buffer.of(0)]);
    assert.throws(() => parseJoinToken(withBody(noAddress)), /1 to 16 server addresses, not 0/);
  });

  it('encoding refuses what it could not parse back', () => {
    assert.throws(() => encodeJoinToken({ ...sample(), addresses: [] }), /1 to 16 server addresses/);
    assert.throws(() => encodeJoinToken({ ...sample(), addresses: ['no port'] }), /must be host:port/);
    assert.throws(
      () => encodeJoinToken({ ...sample(), rootFingerprint: 'abcd' }),
      /32 bytes of lower-case hex/,
    );
  });
});

describe('token secrets', () => {
  it('only the SHA-256 is kept, and matching is by that hash', () => {
    const secret = newTokenSecret();
    const hash = hashTokenSecret(secret);
    assert.equal(hash.length, 32);
    assert.ok(!hash.equals(secret));
    assert.ok(secretMatches(secret, hash));
    assert.ok(!secretMatches(newTokenSecret(), hash));
    assert.ok(!secretMatches(secret, null), 'an unknown ID never matches (compared against a dummy hash)');
    assert.ok(!secretMatches(secret, Buffer.alloc(3)), 'a damaged stored hash never matches');
  });
});
