// The policy extension's OID is a deployment setting: `sigil server
// --policy-oid` fixes it when a data directory is bootstrapped, and from then
// on every delegation certificate (server-issued and offline) carries the
// policy under exactly that OID, `sigil status` and GetTrustBundle say which,
// delegation.json records it for offline sub-delegation, and the server
// admits chains that carry it (and only those). A restart with another OID is
// refused and changes nothing; so is an OID that is not one.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { TrustBundle } from '../../src/gen/sigil/v1/sigil.ts';
import { issueDelegateLeaf, issueDelegation, NO_GRANTS } from '../../src/pki/delegation-certificates.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, readPrivateKey } from '../../src/pki/keys.ts';
import {
  DEFAULT_POLICY_OID,
  DEFAULT_POLICY_OID_TEXT,
  findPolicyExtension,
  parsePermissions,
  parsePolicyOid,
  readPolicy,
} from '../../src/pki/policy-extension.ts';
import type { ServerInfoFile } from '../../src/server/data-directory.ts';
import { delegateArgs, derOf, jsonOf, pemCertificates, snapshot } from '../cli/pki-helpers.ts';
import { openssl, type RunResult, sigil } from '../support/cli.ts';
import { failureOf } from '../support/failure.ts';
import { assertRefused, assertUsageError } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { Delegates } from './delegation-fixtures.ts';
import {
  adminIdentity,
  anonymousCredentials,
  call,
  clients,
  credentialsFor,
  FREE_PORTS,
  type ServerProcess,
  spawnServer,
  statusName,
  waitForServer,
} from './helpers.ts';

const OID = '1.3.6.1.4.1.55555.7.1';
const OTHER_OID = '1.3.6.1.4.1.55555.7.2';
/** The dotted OIDs `openssl x509 -text` prints as extension names (the ones it has no name for). */
async function unnamedExtensions(pem: string): Promise<string[]> {
  const result = await openssl(['x509', '-noout', '-text'], pem);
  assert.equal(result.code, 0, result.stderr);
  const start = result.stdout.indexOf('X509v3 extensions:');
  assert.ok(start > 0, result.stdout);
  return [...result.stdout.slice(start).matchAll(/^ {12}(\d+(?:\.\d+)+): ?\n/gm)].map((match) => match[1]);
}

const firstPem = (file: string): string => pemCertificates(readFileSync(file, 'utf8'))[0];

/** `sigil ARGS`, which must exit 0, then the first certificate of `file` (which it wrote). */
async function firstPemAfter(args: readonly string[], file: string): Promise<string> {
  ok(await sigil(args), `sigil ${args.join(' ')}`);
  return firstPem(file);
}

function ok(result: RunResult, what: string): RunResult {
  assert.equal(result.code, 0, `${what}: ${result.stderr}`);
  return result;
}

interface DelegationJson {
  spiffeId: string;
  policyOid: string;
  dnsNames: string[];
  ipRanges: string[];
}

const delegationJson = (dir: string): DelegationJson =>
  JSON.parse(readFileSync(join(dir, 'delegation.json'), 'utf8')) as DelegationJson;

/** The refusal of a `sigil server` that must not start: exit 1 and one line, `sigil: …`, on stderr. */
async function assertServerRefused(server: ServerProcess, problem: RegExp): Promise<void> {
  assertRefused(await server.result, problem);
}

describe('sigil server --policy-oid', () => {
  const work = tempDir('sigil-policy-oid-');
  const dataDir = join(work, 'data');
  const dirs = { alice: join(work, 'alice'), carol: join(work, 'carol'), ops: join(work, 'ops') };
  let server: ServerProcess;
  let info: ServerInfoFile;
  let trustDomain: string;
  const asAdmin = (args: readonly string[]) => sigil([...args, '--data', dataDir]);

  before(async () => {
    server = spawnServer(['--data', dataDir, ...FREE_PORTS, '--policy-oid', OID]);
    info = await waitForServer(server, dataDir, 60_000);
    trustDomain = info.trustDomain;
  });

  after(async () => {
    if (server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });

  test('the bootstrap announces the OID', () => {
    assert.match(
      server.stdout(),
      new RegExp(
        `^ {2}policy extension OID: ${OID.replaceAll('.', '\\.')} \\(fixed for this deployment\\)$`,
        'm',
      ),
    );
  });

  test('sigil status shows the OID, as text and as --json', async () => {
    const json = jsonOf<{ policyOid: string; trustDomain: string }>(
      await asAdmin(['status', '--json']),
      'status --json',
    );
    assert.equal(json.policyOid, OID);
    assert.equal(json.trustDomain, trustDomain);
    const text = ok(await asAdmin(['status']), 'status').stdout;
    assert.match(text, new RegExp(`^ {2}policy OID: +${OID.replaceAll('.', '\\.')}$`, 'm'));
  });

  test('GetTrustBundle carries the OID, anonymously (Enrolment) and to a client (CertificateAuthority)', async () => {
    const anonymous = clients(info.listen, anonymousCredentials(dataDir));
    const admin = clients(info.listen, credentialsFor(dataDir, adminIdentity(dataDir)));
    try {
      const fromEnrolment: TrustBundle = await call(
        anonymous.enrolment,
        anonymous.enrolment.getTrustBundle,
        {},
      );
      const fromCa: TrustBundle = await call(admin.ca, admin.ca.getTrustBundle, {});
      for (const bundle of [fromEnrolment, fromCa]) {
        assert.equal(bundle.policyOid, OID);
        assert.equal(bundle.trustDomain, trustDomain);
      }
    } finally {
      anonymous.close();
      admin.close();
    }
  });

  test('a server-issued delegation carries the policy under exactly that OID; delegation.json records it', async () => {
    const pem = await firstPemAfter(
      delegateArgs(
        'alice',
        'info,create,delegate,issue,revoke',
        dirs.alice,
        ...['--data', dataDir, '--workloads', '2', '--cpus', '0,1'],
        ...['--dns', 'alice.example', '--ip', '10.1.0.0/16'],
      ),
      join(dirs.alice, 'delegation.pem'),
    );
    // openssl knows neither OID by name, so it prints it dotted: exactly ours, and no other.
    assert.deepEqual(await unnamedExtensions(pem), [OID]);
    const der = derOf(pem);
    const oid = parsePolicyOid(OID);
    assert.equal(findPolicyExtension(der, DEFAULT_POLICY_OID), null);
    assert.deepEqual(
      [...(readPolicy(der, oid)?.permissions ?? [])],
      ['info', 'create', 'delegate', 'revoke', 'issue'],
    );
    const written = delegationJson(dirs.alice);
    assert.equal(written.policyOid, OID);
    assert.equal(written.spiffeId, `spiffe://alice.d.${trustDomain}`);
    assert.deepEqual(written.dnsNames, ['alice.example']);
    assert.deepEqual(written.ipRanges, ['10.1.0.0/16']);
  });

  test('an offline sub-delegation (and command certificate) uses the OID of delegation.json, and the server admits the chain', async () => {
    const carolPem = await firstPemAfter(
      ['delegate', '--from', dirs.alice, '--to', 'carol', '--workloads', '1', '--out', dirs.carol],
      join(dirs.carol, 'delegation.pem'),
    );
    assert.deepEqual(await unnamedExtensions(carolPem), [OID]);
    assert.equal(findPolicyExtension(derOf(carolPem), DEFAULT_POLICY_OID), null);
    const written = delegationJson(dirs.carol);
    assert.equal(written.policyOid, OID);
    // The names not given are alice's.
    assert.deepEqual(written.dnsNames, ['alice.example']);
    assert.deepEqual(written.ipRanges, ['10.1.0.0/16']);

    const status = jsonOf<{
      spiffeId: string;
      policy: { permissions: string[]; limits: { workloads: number } };
    }>(await sigil(['status', '--identity', dirs.carol, '--json']), 'status as carol');
    assert.equal(status.spiffeId, `spiffe://carol.alice.d.${trustDomain}`);
    assert.deepEqual(status.policy.permissions, ['info', 'create', 'delegate', 'revoke', 'issue']);
    assert.equal(status.policy.limits.workloads, 1);

    const opsPem = await firstPemAfter(
      delegateArgs('ops', 'info', dirs.ops, '--from', dirs.alice, '--command'),
      join(dirs.ops, 'cert.pem'),
    );
    assert.deepEqual(await unnamedExtensions(opsPem), [OID]);
    const ops = jsonOf<{ spiffeId: string; policy: { permissions: string[]; limits: null } }>(
      await sigil(['status', '--identity', dirs.ops, '--json']),
      'status as ops',
    );
    assert.equal(ops.spiffeId, `spiffe://ops.alice.d.${trustDomain}`);
    assert.deepEqual(ops.policy, { version: 1, permissions: ['info'], limits: null });
  });

  test('a sub-delegation whose policy is under another OID is not admitted: for this deployment it carries none', async () => {
    const aliceChain = pemCertificates(readFileSync(join(dirs.alice, 'delegation.pem'), 'utf8')).map(derOf);
    const aliceKey = readPrivateKey(readFileSync(join(dirs.alice, 'delegation.key'), 'utf8'));
    const policy = { version: 1 as const, permissions: parsePermissions('info'), limits: null };
    const keys = generateKeyPair('p256');
    // Alice signs it, but writes the policy under the default OID: issueDelegation reads her
    // certificate under that OID too, where it finds no policy, so it takes hers as stated.
    const stray = issueDelegation({
      parent: {
        issuer: Issuer.fromCertificate(aliceChain[0], aliceKey),
        certificateDer: aliceChain[0],
        policy: { ...policy, permissions: parsePermissions('info,delegate') },
        grants: NO_GRANTS,
      },
      trustDomain,
      policyOid: DEFAULT_POLICY_OID,
      publicKey: keys.publicKey,
      name: 'stray',
      policy,
    });
    assert.deepEqual(await unnamedExtensions(new X509Certificate(stray.der).toString()), [
      DEFAULT_POLICY_OID_TEXT,
    ]);
    const leafKeys = generateKeyPair('p256');
    const leaf = issueDelegateLeaf({
      parent: { issuer: Issuer.fromCertificate(stray.der, keys.privateKey), certificateDer: stray.der },
      trustDomain,
      policyOid: DEFAULT_POLICY_OID,
      publicKey: leafKeys.publicKey,
    });
    const delegates = new Delegates(info.listen, dataDir, trustDomain, parsePolicyOid(OID));
    try {
      const { delegation } = delegates.clientsFor([leaf.der, stray.der, ...aliceChain], leafKeys.privateKey);
      const error = await failureOf(call(delegation, delegation.getDelegationStatus, {}));
      assert.equal(error.code, grpc.status.PERMISSION_DENIED, `${statusName(error.code)}: ${error.details}`);
      assert.match(error.details, /without a policy/);
    } finally {
      delegates.close();
    }
  });

  test('a restart keeps the OID; one with another --policy-oid exits 1 naming both and changes nothing', async () => {
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.stderr());

    const before = snapshot(dataDir);
    const other = spawnServer(['--data', dataDir, ...FREE_PORTS, '--policy-oid', OTHER_OID]);
    await assertServerRefused(
      other,
      new RegExp(
        `policy extension OID is ${OID.replaceAll('.', '\\.')}, not ${OTHER_OID.replaceAll('.', '\\.')}`,
      ),
    );
    assert.deepEqual(snapshot(dataDir), before);
    // The environment variable is refused the same way.
    const fromEnvironment = spawnServer(['--data', dataDir, ...FREE_PORTS], { SIGIL_POLICY_OID: OTHER_OID });
    await assertServerRefused(fromEnvironment, new RegExp(`not ${OTHER_OID.replaceAll('.', '\\.')}`));
    assert.deepEqual(snapshot(dataDir), before);

    // Without the flag, or with the same OID, it serves the one fixed at bootstrap.
    for (const flags of [[], ['--policy-oid', OID]]) {
      server = spawnServer(['--data', dataDir, ...FREE_PORTS, ...flags]);
      const restarted = await waitForServer(server, dataDir, 60_000);
      const status = jsonOf<{ policyOid: string }>(await asAdmin(['status', '--json']), 'status');
      assert.equal(status.policyOid, OID);
      // Certificates made before the restart are still admitted (on the new port).
      const carol = jsonOf<{ spiffeId: string }>(
        await sigil(['status', '--identity', dirs.carol, '--server', restarted.listen, '--json']),
        'status as carol',
      );
      assert.equal(carol.spiffeId, `spiffe://carol.alice.d.${trustDomain}`);
      server.child.kill('SIGTERM');
      assert.equal(await server.exited, 0, server.stderr());
    }
  });

  test('a fresh deployment without --policy-oid uses the default, 2.999.7445.1', async () => {
    const fresh = join(work, 'default');
    server = spawnServer(['--data', fresh, ...FREE_PORTS]);
    await waitForServer(server, fresh, 60_000);
    const status = jsonOf<{ policyOid: string }>(
      await sigil(['status', '--json', '--data', fresh]),
      'status',
    );
    assert.equal(status.policyOid, DEFAULT_POLICY_OID_TEXT);
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.stderr());
  });

  for (const [bad, why] of [
    ['1.3.6.1.4.1.268435456.1', /every arc must be below 2\^28/],
    ['1.2', /at least three arcs/],
    ['abc', /dotted decimal/],
    ['1.3.6.01.4', /leading zeros/],
    ['3.1.2', /first arc is 0, 1 or 2/],
  ] as const) {
    test(`--policy-oid ${bad} is bad usage (exit 2) naming the flag, and creates nothing`, async () => {
      const fresh = join(work, `never-${bad}`);
      const refusedStart = spawnServer(['--data', fresh, ...FREE_PORTS, '--policy-oid', bad]);
      assertUsageError(
        await refusedStart.result,
        new RegExp(
          `option '--policy-oid <oid>' argument '${bad.replaceAll('.', '\\.')}' is invalid\\. invalid policy OID "${bad.replaceAll('.', '\\.')}"`,
        ),
      );
      assert.match(refusedStart.stderr(), why);
      assert.equal(existsSync(fresh), false, `${fresh} was created`);
    });
  }
});
