// `sigil pki verify`: OpenSSL (the openssl command) decides; sigil maps the
// flags (chain to --ca, --purpose, --name, --crl) and reports OpenSSL's
// verdict: exit 0 with the chain it built, or exit 1 with its reason, error
// number and depth (JSON with --json); bad usage is 2.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { type RunResult, sigil } from '../support/cli.ts';
import { assertRefused } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { jsonOf } from './pki-helpers.ts';

interface Verdict {
  verified: boolean;
  subject: string;
  serial: string;
  chain: string[];
  purpose: string;
  name: string | null;
  crlChecked: string;
  error: { code: number; depth: number; message: string } | null;
}

const dir = tempDir('sigil-verify-test-');

/** A refused verification: the refusal contract, naming OpenSSL's error `code`. */
function refused(result: RunResult, code: number, message: RegExp): void {
  assertRefused(result, message);
  assert.match(result.stderr, new RegExp(`\\(OpenSSL error ${code} at depth \\d+\\)`));
}

before(async () => {
  const quickstart = await sigil([
    'pki',
    'quickstart',
    '--out',
    join(dir, 'q'),
    '--dns',
    'localhost',
    '--ip',
    '127.0.0.1',
  ]);
  assert.equal(quickstart.code, 0, quickstart.stderr);
  const init = await sigil(['pki', 'init', '--dir', join(dir, 'ca'), '--intermediate']);
  assert.equal(init.code, 0, init.stderr);
});

describe('sigil pki verify', () => {
  test("a server certificate verifies for its purpose and names; the chain is OpenSSL's", async () => {
    for (const name of ['localhost', '127.0.0.1']) {
      const verdict = jsonOf<Verdict>(
        await sigil([
          'pki',
          'verify',
          join(dir, 'q/server.pem'),
          '--ca',
          join(dir, 'q/ca.pem'),
          '--purpose',
          'server',
          '--name',
          name,
          '--json',
        ]),
        'verify',
      );
      assert.equal(verdict.verified, true);
      assert.equal(verdict.name, name);
      assert.equal(verdict.error, null);
      assert.equal(verdict.crlChecked, 'none');
      assert.deepEqual(verdict.chain, ['CN=localhost', 'CN=sigil root CA']);
    }
    const text = await sigil([
      'pki',
      'verify',
      join(dir, 'q/client.pem'),
      '--ca',
      join(dir, 'q/ca.pem'),
      '--purpose',
      'client',
    ]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /client\.pem: OK \(OpenSSL verified it\)/);
  });

  test("the wrong purpose, a wrong name or address, and another CA are refused with OpenSSL's reason", async () => {
    const server = join(dir, 'q/server.pem');
    const ca = join(dir, 'q/ca.pem');
    refused(
      await sigil(['pki', 'verify', server, '--ca', ca, '--purpose', 'client']),
      26,
      /unsuitable certificate purpose/,
    );
    refused(
      await sigil(['pki', 'verify', server, '--ca', ca, '--name', 'other.example']),
      62,
      /hostname mismatch/,
    );
    refused(
      await sigil(['pki', 'verify', server, '--ca', ca, '--name', '10.1.1.1']),
      64,
      /IP address mismatch/,
    );
    refused(
      await sigil(['pki', 'verify', server, '--ca', join(dir, 'ca/root.pem')]),
      20,
      /unable to get local issuer certificate/,
    );
  });

  test('a chain in the file is used as untrusted intermediates; CRLs are checked', async () => {
    const caDir = join(dir, 'ca');
    const issue = (name: string) =>
      sigil(['pki', 'issue', '--dir', caDir, '--client', '--name', name, '--out', join(dir, name), '--json']);
    const bob = jsonOf<{ certificate: { serial: string } }>(await issue('bob'), 'issue bob').certificate;
    jsonOf(await issue('carol'), 'issue carol');
    const crl = await sigil([
      'pki',
      'crl',
      '--dir',
      caDir,
      '--revoke',
      `${bob.serial}:keyCompromise`,
      '--out',
      join(dir, 'crl.pem'),
    ]);
    assert.equal(crl.code, 0, crl.stderr);
    const root = join(caDir, 'root.pem');
    // bob.pem holds bob's leaf then the intermediate: it verifies against the root alone.
    const ok = jsonOf<Verdict>(
      await sigil(['pki', 'verify', join(dir, 'bob.pem'), '--ca', root, '--purpose', 'client', '--json']),
      'bob without CRL',
    );
    assert.equal(ok.chain.length, 3);
    refused(
      await sigil(['pki', 'verify', join(dir, 'bob.pem'), '--ca', root, '--crl', join(dir, 'crl.pem')]),
      23,
      /certificate revoked/,
    );
    const carol = jsonOf<Verdict>(
      await sigil([
        'pki',
        'verify',
        join(dir, 'carol.pem'),
        '--ca',
        root,
        '--crl',
        join(dir, 'crl.pem'),
        '--json',
      ]),
      'carol with CRL',
    );
    assert.equal(carol.verified, true);
    assert.equal(carol.crlChecked, 'leaf');
    // Every level needs its CRL with --crl-all: the root's is missing.
    refused(
      await sigil([
        'pki',
        'verify',
        join(dir, 'carol.pem'),
        '--ca',
        root,
        '--crl',
        join(dir, 'crl.pem'),
        '--crl-all',
      ]),
      3,
      /unable to get certificate CRL/,
    );
  });

  test('--json on a refusal prints the verdict on stdout and still exits 1', async () => {
    const result = await sigil([
      'pki',
      'verify',
      join(dir, 'q/server.pem'),
      '--ca',
      join(dir, 'q/ca.pem'),
      '--purpose',
      'client',
      '--json',
    ]);
    assert.equal(result.code, 1);
    const verdict = JSON.parse(result.stdout) as Verdict;
    assert.equal(verdict.verified, false);
    assert.deepEqual(verdict.error, { code: 26, depth: 0, message: 'unsuitable certificate purpose' });
  });

  test('a file that is not a certificate is a failure naming it (exit 1), bad flags are usage (exit 2)', async () => {
    const junk = join(dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    const result = await sigil(['pki', 'verify', junk, '--ca', join(dir, 'q/ca.pem')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /junk\.pem/);
    const usage = await sigil(['pki', 'verify', junk, '--ca', join(dir, 'q/ca.pem'), '--purpose', 'email']);
    assert.equal(usage.code, 2);
  });
});
