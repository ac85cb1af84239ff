// `sigil pki crl` keeps the CA directory's revocation history, as `openssl
// ca` keeps its index (issue #10: a second CRL forgot the first one's
// entries): revocations.json per signing CA, every CRL listing all of them;
// removeFromCRL only where it belongs (a certificateHold released, never an
// entry of a full CRL); a refused revocation changes no file. openssl
// reads every CRL and verifies leaves against it.
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadCaDirectory } from '../../src/cli/ca-directory.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { dnsName } from '../../src/pki/names.ts';
import { openssl, type RunResult, sigil } from '../support/cli.ts';
import { pemOf } from '../support/pem.ts';
import { assertRefused } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { makeCa, snapshot } from './pki-helpers.ts';

/** A server leaf from the CA directory's issuing CA, written as NAME.pem (leaf, then chain); its serial. */
function issueLeaf(ca: string, out: string, name: string): string {
  const loaded = loadCaDirectory(ca);
  const issued = loaded.issuer.issue({
    publicKey: createPublicKey(generateKeyPair('p256').privateKey),
    profile: 'server',
    sans: [dnsName(name)],
    ttlMs: 3_600_000,
  });
  writeFileSync(join(out, `${name}.pem`), pemOf(issued.der, ...loaded.chain));
  return issued.serialHex;
}

interface CrlJson {
  crlNumber: number;
  revoked: { serial: string; reason: string }[];
  added: string[];
  released: string[];
  changed: string[];
}

async function crl(ca: string, out: string, ...revoke: string[]): Promise<CrlJson> {
  const result = await sigil([
    'pki',
    'crl',
    '--dir',
    ca,
    ...revoke.flatMap((value) => ['--revoke', value]),
    '--out',
    out,
    '--force',
    '--json',
  ]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as CrlJson;
}

/** The serials (lower-case, no leading zeros) and reasons `openssl crl -text` shows. */
async function listed(file: string): Promise<Record<string, string>> {
  const text = await openssl(['crl', '-in', file, '-noout', '-text']);
  assert.equal(text.code, 0, text.stderr);
  const out: Record<string, string> = {};
  for (const block of text.stdout.split('Serial Number: ').slice(1)) {
    const serial = /^([0-9A-F]+)/.exec(block)?.[1] ?? '';
    const reason = /X509v3 CRL Reason Code:\s*\n\s+([^\n]+)/.exec(block.split('Serial Number')[0])?.[1];
    out[serial.toLowerCase().replace(/^0+(?=.)/, '')] = reason?.trim() ?? 'Unspecified';
  }
  return out;
}

async function verify(ca: string, crlFile: string, leaf: string): Promise<RunResult> {
  return openssl([
    'verify',
    '-crl_check',
    '-CAfile',
    join(ca, 'ca.pem'),
    '-untrusted',
    leaf,
    '-CRLfile',
    crlFile,
    leaf,
  ]);
}

describe('sigil pki crl keeps the revocation history', { concurrency: 3 }, () => {
  test("a second CRL keeps the first one's entries (openssl sees both), with their first date", async () => {
    const dir = tempDir();
    const ca = join(dir, 'ca');
    makeCa(ca, { intermediate: true });
    const a = issueLeaf(ca, dir, 'a.internal');
    const b = issueLeaf(ca, dir, 'b.internal');
    issueLeaf(ca, dir, 'c.internal'); // never revoked: verifies against every CRL
    const first = await crl(ca, join(dir, 'one.crl'), `${a}:keyCompromise`);
    assert.deepEqual(first.added, [a]);
    const second = await crl(ca, join(dir, 'two.crl'), `${b}:superseded`);
    assert.equal(second.crlNumber, first.crlNumber + 1);
    assert.deepEqual(second.added, [b]);
    assert.deepEqual(second.revoked, [
      { serial: a, reason: 'keyCompromise' },
      { serial: b, reason: 'superseded' },
    ]);
    assert.deepEqual(await listed(join(dir, 'two.crl')), { [a]: 'Key Compromise', [b]: 'Superseded' });
    const revokedA = await verify(ca, join(dir, 'two.crl'), join(dir, 'a.internal.pem'));
    assert.match(revokedA.stdout + revokedA.stderr, /certificate revoked/);
    assert.equal((await verify(ca, join(dir, 'two.crl'), join(dir, 'c.internal.pem'))).code, 0);
    // A CRL with no --revoke re-signs the whole history; the revocation dates stay the first ones.
    const oneText = await openssl(['crl', '-in', join(dir, 'one.crl'), '-noout', '-text']);
    const three = join(dir, 'three.crl');
    const again = await crl(ca, three);
    assert.deepEqual(again.added, []);
    assert.deepEqual(Object.keys(await listed(three)).sort(), [a, b].sort());
    const dateOf = (text: string, serial: string) =>
      new RegExp(`Serial Number: 0*${serial.toUpperCase()}\\s+Revocation Date: ([^\\n]+)`).exec(text)?.[1];
    const threeText = (await openssl(['crl', '-in', three, '-noout', '-text'])).stdout;
    assert.ok(dateOf(oneText.stdout, a));
    assert.equal(dateOf(threeText, a), dateOf(oneText.stdout, a));
    assert.equal(JSON.parse(readFileSync(join(ca, 'revocations.json'), 'utf8')).version, 1);
    // The root level has a history of its own.
    const rootCrl = join(dir, 'root.crl');
    const root = await sigil(['pki', 'crl', '--dir', ca, '--root', '--out', rootCrl, '--json']);
    assert.equal(root.code, 0, root.stderr);
    assert.deepEqual(JSON.parse(root.stdout).revoked, []);
    assert.deepEqual(await listed(rootCrl), {});
  });

  test('certificateHold: listed while on hold, released with removeFromCRL (never listed as such), or made permanent', async () => {
    const dir = tempDir();
    const ca = join(dir, 'ca');
    makeCa(ca, { intermediate: true });
    const held = issueLeaf(ca, dir, 'held.internal');
    const kept = issueLeaf(ca, dir, 'kept.internal');
    await crl(ca, join(dir, 'hold.crl'), `${held}:certificateHold`, `${kept}:certificateHold`);
    assert.deepEqual(await listed(join(dir, 'hold.crl')), {
      [held]: 'Certificate Hold',
      [kept]: 'Certificate Hold',
    });
    const onHold = await verify(ca, join(dir, 'hold.crl'), join(dir, 'held.internal.pem'));
    assert.match(onHold.stdout + onHold.stderr, /certificate revoked/);

    const release = await crl(ca, join(dir, 'release.crl'), `${held}:removeFromCRL`, `${kept}:keyCompromise`);
    assert.deepEqual(release.released, [held]);
    assert.deepEqual(release.changed, [kept]);
    assert.deepEqual(release.revoked, [{ serial: kept, reason: 'keyCompromise' }]);
    const text = (await openssl(['crl', '-in', join(dir, 'release.crl'), '-noout', '-text'])).stdout;
    assert.doesNotMatch(text, /Remove From CRL/, 'a full CRL never carries removeFromCRL');
    assert.deepEqual(await listed(join(dir, 'release.crl')), { [kept]: 'Key Compromise' });
    assert.equal((await verify(ca, join(dir, 'release.crl'), join(dir, 'held.internal.pem'))).code, 0);
  });

  test('refusals change no file: removeFromCRL of a serial not on hold, a new reason for a final revocation', async () => {
    const dir = tempDir();
    const ca = join(dir, 'ca');
    makeCa(ca, { intermediate: true });
    const a = issueLeaf(ca, dir, 'a.internal');
    const b = issueLeaf(ca, dir, 'b.internal');
    await crl(ca, join(dir, 'one.crl'), `${a}:keyCompromise`);
    const before = snapshot(dir);
    const run = (...revoke: string[]) =>
      sigil([
        'pki',
        'crl',
        '--dir',
        ca,
        ...revoke.flatMap((v) => ['--revoke', v]),
        '--out',
        join(dir, 'x.crl'),
      ]);
    assertRefused(
      await run(`${b}:removeFromCRL`),
      new RegExp(`serial ${b} is not on hold: removeFromCRL only releases a certificateHold`),
    );
    assertRefused(
      await run(`${a}:removeFromCRL`),
      new RegExp(`serial ${a} is revoked \\(keyCompromise, .*\\) for good`),
    );
    assertRefused(
      await run(`${a}:superseded`),
      new RegExp(`serial ${a} is already revoked \\(keyCompromise, .*\\): a revocation is final`),
    );
    assertRefused(await run(`${a}:certificateHold`), /a revocation is final/);
    // All or nothing: a good revocation next to a refused one is not recorded either.
    assertRefused(await run(`${b}:superseded`, `${a}:affiliationChanged`), /a revocation is final/);
    assert.deepEqual(snapshot(dir), before, 'no CRL written, sigil-ca.json and revocations.json unchanged');
    // Revoking it again without a reason, or with the same one, changes nothing and is fine.
    const again = await crl(ca, join(dir, 'again.crl'), a);
    assert.deepEqual(again.added, []);
    const same = await crl(ca, join(dir, 'same.crl'), `0x${a.toUpperCase()}:keyCompromise`);
    assert.deepEqual(same.added, []);
    assert.deepEqual(same.revoked, [{ serial: a, reason: 'keyCompromise' }]);
  });

  test('a damaged revocations.json is refused, naming it, before anything is signed', async () => {
    const dir = tempDir();
    const ca = join(dir, 'ca');
    makeCa(ca, { intermediate: true });
    writeFileSync(join(ca, 'revocations.json'), '{"version":1,"issuers":{"nothex":{}}}\n');
    const before = snapshot(dir);
    assertRefused(
      await sigil(['pki', 'crl', '--dir', ca, '--out', join(dir, 'x.crl')]),
      /revocations\.json: issuer key "nothex" is not a SHA-256/,
    );
    assert.deepEqual(snapshot(dir), before);
  });
});
