// Every refusal of `sigil pki`: exit code 1, exactly one line on stderr that
// names the problem, nothing on stdout, and not one file created or changed.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { certificatePem, metadataFile } from '../../src/cli/ca-directory.ts';
import { createRootCertificate } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { decodePem, encodePem } from '../../src/pki/pem.ts';
import { openssl, type RunResult, sigil } from '../support/cli.ts';
import { assertRefused } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { makeCa, NEW_P256_KEY, snapshot } from './pki-helpers.ts';

/** Runs sigil in `root` and checks the refusal contract. */
async function refuses(
  root: string,
  args: readonly string[],
  problem: RegExp,
  env: Record<string, string> = {},
): Promise<RunResult> {
  const before = snapshot(root);
  const result = await sigil(args, env);
  assertRefused(result, problem);
  assert.deepEqual(snapshot(root), before, 'files changed');
  return result;
}

const issueArgs = (dir: string, out: string, ...more: string[]) => [
  'pki',
  'issue',
  '--dir',
  dir,
  '--server',
  '--dns',
  'api.internal',
  '--out',
  out,
  ...more,
];

/** A temp dir with a p256 root-only CA in ca/. */
function withCa(options: Parameters<typeof makeCa>[1] = {}): { root: string; ca: string } {
  const root = tempDir();
  const ca = join(root, 'ca');
  makeCa(ca, options);
  return { root, ca };
}

describe('pki refusals', { concurrency: 4 }, () => {
  test('a CA directory that does not exist', async () => {
    const root = tempDir();
    await refuses(
      root,
      issueArgs(join(root, 'nope'), join(root, 'api')),
      /ca directory \S+nope does not exist \(run sigil pki init --dir \S+nope\)/,
    );
  });

  test('a CA directory without root.pem', async () => {
    const { root, ca } = withCa();
    rmSync(join(ca, 'root.pem'));
    await refuses(
      root,
      issueArgs(ca, join(root, 'api')),
      /ca directory \S+ has no root\.pem \(run sigil pki init --dir /,
    );
  });

  test('an unreadable CA file', async () => {
    const { root, ca } = withCa();
    rmSync(join(ca, 'root.key'));
    mkdirSync(join(ca, 'root.key'));
    await refuses(root, issueArgs(ca, join(root, 'api')), /CA key \S+root\.key is a directory/);
    if (process.getuid?.() !== 0) {
      rmSync(join(ca, 'root.key'), { recursive: true });
      writeFileSync(join(ca, 'root.key'), 'x', { mode: 0 });
      chmodSync(join(ca, 'root.key'), 0);
      await refuses(
        root,
        issueArgs(ca, join(root, 'api')),
        /root\.key is not readable \(permission denied\)/,
      );
    }
  });

  test('garbage in a key file', async () => {
    const { root, ca } = withCa();
    writeFileSync(join(ca, 'root.key'), 'this is not a key\n');
    await refuses(
      root,
      issueArgs(ca, join(root, 'api')),
      /root\.key.*not a valid private key|no private key found in \S+root\.key/,
    );
  });

  test('a corrupt sigil-ca.json', async () => {
    const { root, ca } = withCa();
    writeFileSync(join(ca, 'sigil-ca.json'), '{"version": 1,');
    await refuses(root, issueArgs(ca, join(root, 'api')), /sigil-ca\.json is not valid JSON/);
  });

  test('a wrong passphrase', async () => {
    const { root, ca } = withCa({ passphrase: 'the right one' });
    writeFileSync(join(root, 'wrong'), 'the wrong one\n');
    const result = await refuses(
      root,
      issueArgs(ca, join(root, 'api'), '--passphrase-file', join(root, 'wrong')),
      /wrong passphrase for \S+root\.key/,
    );
    assert.doesNotMatch(result.stderr, /the (wrong|right) one/);
    await refuses(root, issueArgs(ca, join(root, 'api')), /wrong passphrase/, {
      SIGIL_CA_PASSPHRASE: 'nope',
    });
  });

  test('no passphrase for an encrypted CA key', async () => {
    const { root, ca } = withCa({ passphrase: 'secret', intermediate: true });
    await refuses(
      root,
      issueArgs(ca, join(root, 'api')),
      /intermediate\.key is encrypted; give --passphrase-file or set SIGIL_CA_PASSPHRASE/,
    );
  });

  test('an empty passphrase file', async () => {
    const { root, ca } = withCa({ passphrase: 'secret' });
    writeFileSync(join(root, 'empty'), '\n');
    await refuses(
      root,
      issueArgs(ca, join(root, 'api'), '--passphrase-file', join(root, 'empty')),
      /passphrase file \S+empty is empty/,
    );
  });

  test('a CSR whose signature does not verify', async () => {
    const { root, ca } = withCa();
    const csrPath = join(root, 'node.csr');
    const req = await openssl([
      'req',
      '-new',
      ...NEW_P256_KEY,
      '-keyout',
      join(root, 'node.key'),
      '-subj',
      '/CN=node-1',
      '-addext',
      'subjectAltName=DNS:node-1.internal',
      '-out',
      csrPath,
    ]);
    assert.equal(req.code, 0, req.stderr);
    const der = decodePem(readFileSync(csrPath, 'utf8'))[0].der;
    der[der.length - 1] ^= 0x01; // last byte of the ECDSA signature's s
    writeFileSync(csrPath, encodePem('CERTIFICATE REQUEST', der));
    await refuses(
      root,
      ['pki', 'issue', '--dir', ca, '--server', '--csr', csrPath, '--out', join(root, 'node')],
      /node\.csr: CSR signature does not verify/,
    );
  });

  test('an IP address given to --dns', async () => {
    const { root, ca } = withCa();
    await refuses(
      root,
      ['pki', 'issue', '--dir', ca, '--server', '--dns', 'ok.internal,10.0.0.1', '--out', join(root, 'api')],
      /"10\.0\.0\.1" is an IP address, not a DNS name \(use --ip\)/,
    );
  });

  test('a malformed SPIFFE ID', async () => {
    const { root, ca } = withCa();
    await refuses(
      root,
      issueArgs(ca, join(root, 'api'), '--spiffe-id', 'spiffe://sigil.internal/a//b'),
      /invalid SPIFFE ID "spiffe:\/\/sigil\.internal\/a\/\/b": the path may not contain empty segments/,
    );
  });

  test('a SPIFFE ID outside the CA trust domain', async () => {
    const { root, ca } = withCa();
    await refuses(
      root,
      issueArgs(ca, join(root, 'api'), '--spiffe-id', 'spiffe://evil.example/api'),
      /spiffe:\/\/evil\.example\/api .*outside this CA's trust domain "sigil\.internal"/,
    );
  });

  test('an expired issuer', async () => {
    const root = tempDir();
    const ca = join(root, 'ca');
    mkdirSync(ca);
    const { privateKey } = generateKeyPair('p256');
    const expired = createRootCertificate({
      privateKey,
      subject: { commonName: 'expired root' },
      ttlMs: 1000,
      now: new Date(Date.now() - 3_600_000),
    });
    writeFileSync(join(ca, 'root.pem'), certificatePem(expired.der));
    writeFileSync(join(ca, 'ca.pem'), certificatePem(expired.der));
    writeFileSync(join(ca, 'root.key'), privateKeyToPem(privateKey), { mode: 0o600 });
    const metadata = metadataFile(ca, {
      version: 1,
      keyType: 'p256',
      trustDomain: 'sigil.internal',
      files: { rootCertificate: 'root.pem', rootKey: 'root.key', trustBundle: 'ca.pem' },
      crlNumber: 0,
    });
    writeFileSync(metadata.path, metadata.contents);
    await refuses(
      root,
      issueArgs(ca, join(root, 'api')),
      new RegExp(`root\\.pem \\("CN=expired root"\\) expired at ${expired.notAfter.toISOString()}`),
    );
    await refuses(root, ['pki', 'crl', '--dir', ca, '--out', join(root, 'crl.pem')], /expired at/);
  });

  test('a CA key that does not match its certificate', async () => {
    const { root, ca } = withCa();
    writeFileSync(join(ca, 'root.key'), privateKeyToPem(generateKeyPair('p256').privateKey));
    await refuses(
      root,
      issueArgs(ca, join(root, 'api')),
      /ca directory \S+: root\.key does not match root\.pem/,
    );
  });

  test('an intermediate not issued by the root', async () => {
    const { root, ca } = withCa({ intermediate: true });
    const other = join(root, 'other');
    makeCa(other, { intermediate: true });
    for (const name of ['intermediate.pem', 'intermediate.key']) {
      writeFileSync(join(ca, name), readFileSync(join(other, name)));
    }
    rmSync(other, { recursive: true });
    await refuses(root, issueArgs(ca, join(root, 'api')), /intermediate\.pem was not issued by \S+root\.pem/);
  });

  test('init over an existing CA without --force', async () => {
    const { root, ca } = withCa();
    await refuses(
      root,
      ['pki', 'init', '--dir', ca],
      /\S+ca already holds a CA \(sigil-ca\.json exists\); use --force/,
    );
  });

  test('init with a bad flag value is bad usage (exit 2) and creates no directory', async () => {
    const root = tempDir();
    for (const [flags, problem] of [
      [['--key-type', 'dsa'], /unknown key type "dsa"/],
      [['--ttl', '10'], /invalid duration "10"/],
      [['--trust-domain', 'Bad Domain'], /invalid trust domain "Bad Domain"/],
    ] as const) {
      const before = snapshot(root);
      const result = await sigil(['pki', 'init', '--dir', join(root, 'new'), ...flags]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, problem);
      assert.deepEqual(snapshot(root), before, 'files changed');
    }
  });

  test('issue over existing output without --force', async () => {
    const { root, ca } = withCa();
    writeFileSync(join(root, 'api.key'), 'keep me\n');
    await refuses(
      root,
      issueArgs(ca, join(root, 'api')),
      /\S+api\.key already exists \(use --force to overwrite\)/,
    );
  });

  test('issue into a directory that does not exist', async () => {
    const { root, ca } = withCa();
    await refuses(
      root,
      issueArgs(ca, join(root, 'missing', 'api')),
      /output directory \S+missing does not exist/,
    );
  });

  test('a malformed serial to crl --revoke', async () => {
    const { root, ca } = withCa();
    await refuses(
      root,
      ['pki', 'crl', '--dir', ca, '--revoke', '12:zz', '--out', join(root, 'crl.pem')],
      /unknown revocation reason "zz"/,
    );
    await refuses(
      root,
      ['pki', 'crl', '--dir', ca, '--revoke', 'xyz', '--out', join(root, 'crl.pem')],
      /--revoke "xyz": the serial must be a positive hex number/,
    );
    await refuses(
      root,
      ['pki', 'crl', '--dir', ca, '--revoke', '0a,0x0A', '--out', join(root, 'crl.pem')],
      /serial a is given to --revoke more than once/,
    );
  });

  test('inspect of a file that does not exist', async () => {
    const root = tempDir();
    await refuses(root, ['pki', 'inspect', join(root, 'nothing.pem')], /file \S+nothing\.pem does not exist/);
  });
});
