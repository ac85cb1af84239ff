// `sigil delegate`, `sigil delegation …` and `sigil status` as a delegate, run
// as the real CLI. Offline (`--from DIR`): a parent delegation directory is
// made in-process (root → replica-like intermediate → alice) with the
// command's own writer, under a policy OID of its own (delegation.json says
// which), then sub-delegations are made from it and checked by openssl (chain,
// name constraints) and by the chain check the server applies; every refusal
// is a named test that leaves nothing behind. From the server: an admin
// creates alice through a real server, alice delegates to carol offline, and
// carol's `sigil status` shows her policy.
//
// Delegated identities are hosts: alice is spiffe://alice.d.<td>, carol
// spiffe://carol.alice.d.<td>; a delegation's name constraints permit its own
// host and the hosts beneath it, the DNS names and IP ranges it was granted
// (--dns, --ip; with --from the parent's unless narrowed), and nothing else.
import assert from 'node:assert/strict';
import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { assembleDelegation } from '../../src/cli/delegation-directory.ts';
import { writeFilesAtomically } from '../../src/files/file-sets.ts';
import { issueDelegation, type NameGrants, NO_GRANTS } from '../../src/pki/delegation-certificates.ts';
import { checkDelegationChain } from '../../src/pki/delegation-chain.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, keysMatch, readPrivateKey } from '../../src/pki/keys.ts';
import { encodePem } from '../../src/pki/pem.ts';
import {
  DEFAULT_POLICY_OID,
  findPolicyExtension,
  type Limits,
  PERMISSIONS,
  type Permission,
  type Policy,
  parsePolicyOid,
} from '../../src/pki/policy-extension.ts';
import { openssl, type RunResult, sigil } from '../support/cli.ts';
import { assertRefused } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { pemCertificates, snapshot } from './pki-helpers.ts';

const TD = 'sigil.internal';
/** The in-process deployment's policy OID: not the default, so every step must carry it from delegation.json. */
const OID = parsePolicyOid('2.999.42.9');
const DAY = 24 * 3_600_000;
const ADDRESS = '127.0.0.1:7443';

const policy = (permissions: Permission[], limits: Limits | null): Policy => ({
  version: 1,
  permissions: new Set(permissions),
  limits,
});
const limits = (over: Partial<Limits> = {}): Limits => ({
  workloads: 2,
  cpus: [0, 1],
  memoryMiB: 4096,
  blockMiB: 1024,
  bridges: ['br0', 'br1'],
  issuancePerHour: 100,
  ...over,
});

const ADMIN = policy([...PERMISSIONS], {
  workloads: 10,
  cpus: [0, 1, 2, 3],
  memoryMiB: 8192,
  blockMiB: 4096,
  bridges: ['br0', 'br1'],
  issuancePerHour: 1000,
});
const ALICE_PERMISSIONS: Permission[] = ['info', 'create', 'destroy', 'delegate', 'revoke', 'issue'];
const ALICE = policy(ALICE_PERMISSIONS, limits());
/** What alice may name: two DNS names and an IPv4 and an IPv6 range. */
const ALICE_GRANTS: NameGrants = {
  dnsNames: ['alice.example', 'svc.example'],
  ipRanges: ['10.1.0.0/16', 'fd00:a::/32'],
};

// --- the in-process parent: root → intermediate → delegations ------------------------

const work = tempDir('sigil-delegate-');
const rootKey = generateKeyPair('p256');
const root = createRootCertificate({
  privateKey: rootKey.privateKey,
  subject: { commonName: 'delegate test root' },
  ttlMs: 60 * DAY,
});
const rootFingerprint = createHash('sha256').update(root.der).digest('hex');
const intermediateKey = generateKeyPair('p256');
const intermediate = Issuer.fromIssued(root, rootKey.privateKey).issue({
  publicKey: intermediateKey.publicKey,
  profile: 'intermediate',
  subject: { commonName: 'delegate test replica intermediate' },
  ttlMs: 40 * DAY,
  pathLen: 4,
});
const intermediateIssuer = Issuer.fromIssued(intermediate, intermediateKey.privateKey);

/** A delegation directory under the intermediate, written by sigil delegate's own assembler. */
async function parentDirectory(
  name: string,
  p: Policy,
  pathLen: number,
  grants: NameGrants = NO_GRANTS,
): Promise<string> {
  const key = generateKeyPair('p256');
  const issued = issueDelegation({
    parent: { issuer: intermediateIssuer, certificateDer: intermediate.der, policy: ADMIN },
    trustDomain: TD,
    policyOid: OID,
    publicKey: key.publicKey,
    name,
    policy: p,
    pathLen,
    ttlMs: 20 * DAY,
    grants,
  });
  const assembled = await assembleDelegation({
    kind: 'delegation',
    certificateDer: issued.der,
    chainDer: [intermediate.der],
    key: key.privateKey,
    trustDomain: TD,
    policyOid: OID,
    grants: issued.grants,
    rootFingerprint,
    addresses: [ADDRESS],
    bundlePem: encodePem('CERTIFICATE', root.der),
    leafKeyType: 'p256',
  });
  const dir = join(work, 'parents', name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFilesAtomically(assembled.files(dir));
  return dir;
}

const alice = await parentDirectory('alice', ALICE, 2, ALICE_GRANTS);
// No "delegate" permission.
const bob = await parentDirectory('bob', policy(['info', 'create', 'issue'], ALICE.limits), 2);
// "delegate", but pathLen 0: no CA may follow beneath it.
const dave = await parentDirectory('dave', policy(['info', 'delegate'], ALICE.limits), 0);

// --- helpers -------------------------------------------------------------------------

interface PolicyOut {
  version: number;
  permissions: string[];
  limits: {
    workloads: number;
    cpus: number[];
    memoryMiB: number;
    blockMiB: number;
    bridges: string[];
    issuancePerHour: number;
  } | null;
}

interface DelegateOut {
  kind: 'delegation' | 'command';
  spiffeId: string;
  serial: string;
  fingerprint: string;
  pathLen: number | null;
  notAfter: string;
  policy: PolicyOut;
  effective: PolicyOut;
  dnsNames: string[];
  ipRanges: string[];
  policyOid: string;
  issuedBy: 'server' | 'offline';
  server: string | null;
  from: string | null;
  dir: string;
  files: string[];
}

interface DelegationJson {
  version: number;
  kind: string;
  spiffeId: string;
  serial: string;
  fingerprint: string;
  isCa: boolean;
  pathLen: number | null;
  policy: PolicyOut;
  effective: PolicyOut;
  dnsNames: string[];
  ipRanges: string[];
  notAfter: string;
  trustDomain: string;
  policyOid: string;
  rootFingerprint: string;
  addresses: string[];
}

interface StatusOut {
  server: string;
  spiffeId: string;
  policy: PolicyOut | null;
  usage: { workloads: number; cpus: number[]; memoryMiB: number; reservations: number } | null;
  delegated: { spiffeId: string; isCa: boolean; origin: string; children: unknown[] }[];
}

let outputs = 0;
/** A fresh output path (not created). */
function outDir(name: string): string {
  outputs++;
  return join(work, 'out', `${outputs}-${name}`);
}

async function delegateJson(args: readonly string[]): Promise<DelegateOut> {
  const result = await sigil(['delegate', ...args, '--json']);
  assert.equal(result.code, 0, `sigil delegate ${args.join(' ')}: ${result.stderr}`);
  return JSON.parse(result.stdout) as DelegateOut;
}

/** A refused `sigil delegate --from PARENT …`: nothing written, the parent unchanged. */
async function refusedOffline(parent: string, args: readonly string[], problem: RegExp): Promise<void> {
  const out = outDir('refused');
  const before = snapshot(parent);
  assertRefused(await sigil(['delegate', '--from', parent, '--out', out, ...args]), problem);
  assert.equal(existsSync(out), false, `${out} was created`);
  assert.deepEqual(snapshot(parent), before);
}

const mode = (path: string): number => statSync(path).mode & 0o777;

/** openssl verify -x509_strict of the first certificate of FILE, with the rest as untrusted, against BUNDLE. */
async function opensslVerify(file: string, bundle: string): Promise<void> {
  const [leaf, ...rest] = pemCertificates(readFileSync(file, 'utf8'));
  const scratch = join(work, 'verify', createHash('sha256').update(file).digest('hex').slice(0, 12));
  mkdirSync(scratch, { recursive: true });
  writeFileSync(join(scratch, 'leaf.pem'), leaf);
  writeFileSync(join(scratch, 'untrusted.pem'), rest.join(''));
  const args = ['verify', '-x509_strict', '-CAfile', bundle];
  if (rest.length > 0) args.push('-untrusted', join(scratch, 'untrusted.pem'));
  const result = await openssl([...args, join(scratch, 'leaf.pem')]);
  assert.equal(result.code, 0, `openssl verify ${file}: ${result.stdout}${result.stderr}`);
  assert.match(result.stdout, /: OK\n$/);
}

const ders = (file: string): Buffer[] =>
  pemCertificates(readFileSync(file, 'utf8')).map((pem) => Buffer.from(new X509Certificate(pem).raw));

const readJson = <T>(file: string): T => JSON.parse(readFileSync(file, 'utf8')) as T;

function spiffeIdOf(der: Buffer): string | undefined {
  return (new X509Certificate(der).subjectAltName ?? '')
    .split(/,\s*/)
    .find((name) => name.startsWith('URI:'))
    ?.slice(4);
}

function keyOf(file: string): KeyObject {
  return readPrivateKey(readFileSync(file, 'utf8'), { source: file });
}

interface NameConstraintsText {
  permitted: string[];
  excluded: string[];
}

/** The name constraints of the first certificate in FILE, as `openssl x509 -text` prints them. */
async function nameConstraintsOf(file: string): Promise<NameConstraintsText> {
  const result = await openssl(['x509', '-noout', '-text'], pemCertificates(readFileSync(file, 'utf8'))[0]);
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.split('\n');
  const start = lines.findIndex((line) => line.trim() === 'X509v3 Name Constraints: critical');
  assert.ok(start >= 0, `no critical name constraints in ${file}:\n${result.stdout}`);
  const out: NameConstraintsText = { permitted: [], excluded: [] };
  let into: string[] | null = null;
  for (const line of lines.slice(start + 1)) {
    const text = line.trim();
    if (text === 'Permitted:') into = out.permitted;
    else if (text === 'Excluded:') into = out.excluded;
    else if (/^(DNS|IP|URI|email|DirName):/.test(text) && into !== null) into.push(text);
    else break;
  }
  return out;
}

/** alice's constraints, as openssl prints them, for a child named `host`. */
const ALICE_IP_TEXT = ['IP:10.1.0.0/255.255.0.0', 'IP:FD00:A:0:0:0:0:0:0/FFFF:FFFF:0:0:0:0:0:0'];
const NO_IP_TEXT = ['IP:0.0.0.0/0.0.0.0', 'IP:0:0:0:0:0:0:0:0/0:0:0:0:0:0:0:0'];
const uriConstraints = (host: string): string[] => [`URI:${host}`, `URI:.${host}`];

// --- offline ---------------------------------------------------------------------------

describe('sigil delegate --from (offline)', { concurrency: 4 }, () => {
  test('a sub-delegation: its files, their modes, chains openssl accepts, a policy that narrows', async () => {
    const out = outDir('carol');
    const made = await delegateJson([
      '--from',
      alice,
      '--to',
      'carol',
      '--permissions',
      'info,create,issue',
      '--workloads',
      '1',
      '--cpus',
      '1',
      '--out',
      out,
    ]);
    assert.equal(made.kind, 'delegation');
    assert.equal(made.spiffeId, `spiffe://carol.alice.d.${TD}`);
    assert.equal(made.issuedBy, 'offline');
    assert.equal(made.policyOid, OID.text);
    assert.equal(made.server, null);
    assert.equal(made.pathLen, 1, "one below alice's 2");
    // Named limits narrow; the rest are alice's.
    assert.deepEqual(made.effective, {
      version: 1,
      permissions: ['info', 'create', 'issue'],
      limits: {
        workloads: 1,
        cpus: [1],
        memoryMiB: 4096,
        blockMiB: 1024,
        bridges: ['br0', 'br1'],
        issuancePerHour: 100,
      },
    });
    assert.deepEqual(made.policy, made.effective);

    const names = [
      'bundle.pem',
      'cert.pem',
      'delegation.json',
      'delegation.key',
      'delegation.pem',
      'key.pem',
    ];
    assert.deepEqual(made.files.map((file) => file.slice(out.length + 1)).sort(), names);
    assert.equal(mode(out), 0o700);
    assert.equal(mode(join(out, 'delegation.key')), 0o600);
    assert.equal(mode(join(out, 'key.pem')), 0o600);
    for (const name of ['bundle.pem', 'cert.pem', 'delegation.json', 'delegation.pem']) {
      assert.equal(mode(join(out, name)), 0o644, name);
    }

    // delegation.pem: carol, then alice and the intermediate (no root); cert.pem: carol's own leaf first.
    const delegationChain = ders(join(out, 'delegation.pem'));
    const aliceChain = ders(join(alice, 'delegation.pem'));
    assert.equal(delegationChain.length, 3);
    assert.deepEqual(delegationChain.slice(1), aliceChain);
    const certificateChain = ders(join(out, 'cert.pem'));
    assert.deepEqual(certificateChain.slice(1), delegationChain);
    assert.equal(spiffeIdOf(certificateChain[0]), made.spiffeId);
    assert.equal(new X509Certificate(certificateChain[0]).ca, false);
    assert.ok(keysMatch(keyOf(join(out, 'key.pem')), new X509Certificate(certificateChain[0]).publicKey));
    assert.ok(
      keysMatch(keyOf(join(out, 'delegation.key')), new X509Certificate(delegationChain[0]).publicKey),
    );
    assert.equal(
      readFileSync(join(out, 'bundle.pem'), 'utf8'),
      readFileSync(join(alice, 'bundle.pem'), 'utf8'),
    );

    await opensslVerify(join(out, 'cert.pem'), join(out, 'bundle.pem'));
    await opensslVerify(join(out, 'delegation.pem'), join(out, 'bundle.pem'));

    // The chain check the server applies agrees, under the deployment's OID (delegation.json's).
    const checked = checkDelegationChain(certificateChain, { trustDomain: TD, policyOid: OID });
    assert.deepEqual(checked.subtree, ['alice', 'carol']);
    assert.equal(checked.path, '');
    assert.equal(checked.spiffeId, made.spiffeId);
    assert.deepEqual([...checked.effective.permissions], ['info', 'create', 'issue']);
    assert.equal(checked.effective.limits?.workloads, 1);
    // The policy is written under that OID, not the default one.
    assert.notEqual(findPolicyExtension(delegationChain[0], OID), null);
    assert.equal(findPolicyExtension(delegationChain[0], DEFAULT_POLICY_OID), null);
    // Name constraints: carol's host and those beneath it; alice's names, which carol was not asked to narrow.
    assert.deepEqual(await nameConstraintsOf(join(out, 'delegation.pem')), {
      permitted: [
        'DNS:alice.example',
        'DNS:svc.example',
        ...ALICE_IP_TEXT,
        ...uriConstraints(`carol.alice.d.${TD}`),
      ],
      excluded: [],
    });

    const info = readJson<DelegationJson>(join(out, 'delegation.json'));
    assert.equal(info.kind, 'delegation');
    assert.equal(info.spiffeId, made.spiffeId);
    assert.equal(info.serial, made.serial);
    assert.equal(info.fingerprint, createHash('sha256').update(delegationChain[0]).digest('hex'));
    assert.equal(info.isCa, true);
    assert.equal(info.trustDomain, TD);
    assert.equal(info.policyOid, OID.text);
    assert.deepEqual(info.dnsNames, ALICE_GRANTS.dnsNames);
    assert.deepEqual(info.ipRanges, ALICE_GRANTS.ipRanges);
    assert.equal(info.rootFingerprint, rootFingerprint);
    assert.deepEqual(info.addresses, [ADDRESS]);
    assert.deepEqual(info.effective, made.effective);
    assert.equal(info.notAfter, made.notAfter);
    assert.ok(Date.parse(info.notAfter) <= new X509Certificate(aliceChain[0]).validToDate.getTime());
  });

  test("omitted flags default to the parent's effective policy; a grandchild chains too", async () => {
    const dan = outDir('dan');
    const made = await delegateJson(['--from', alice, '--to', 'dan', '--out', dan]);
    assert.equal(made.spiffeId, `spiffe://dan.alice.d.${TD}`);
    // --dns and --ip default to the parent's too.
    assert.deepEqual(made.dnsNames, ALICE_GRANTS.dnsNames);
    assert.deepEqual(made.ipRanges, ALICE_GRANTS.ipRanges);
    assert.deepEqual(made.effective.permissions, ALICE_PERMISSIONS);
    assert.deepEqual(made.effective.limits, {
      workloads: 2,
      cpus: [0, 1],
      memoryMiB: 4096,
      blockMiB: 1024,
      bridges: ['br0', 'br1'],
      issuancePerHour: 100,
    });
    assert.equal(made.pathLen, 1);

    const eve = outDir('eve');
    const grandchild = await delegateJson([
      '--from',
      dan,
      '--to',
      'eve',
      '--bridges',
      'br1',
      '--memory',
      '512',
      '--ttl',
      '2d',
      '--out',
      eve,
    ]);
    assert.equal(grandchild.spiffeId, `spiffe://eve.dan.alice.d.${TD}`);
    assert.equal(grandchild.policyOid, OID.text, "dan's delegation.json hands the OID on");
    assert.deepEqual((await nameConstraintsOf(join(eve, 'delegation.pem'))).permitted, [
      'DNS:alice.example',
      'DNS:svc.example',
      ...ALICE_IP_TEXT,
      ...uriConstraints(`eve.dan.alice.d.${TD}`),
    ]);
    assert.equal(grandchild.pathLen, 0);
    assert.deepEqual(grandchild.effective.limits?.bridges, ['br1']);
    assert.equal(grandchild.effective.limits?.memoryMiB, 512);
    assert.equal(grandchild.effective.limits?.workloads, 2);
    assert.ok(Math.abs(Date.parse(grandchild.notAfter) - Date.now() - 2 * DAY) < 120_000);
    assert.equal(ders(join(eve, 'cert.pem')).length, 5, 'leaf, eve, dan, alice, intermediate');
    await opensslVerify(join(eve, 'cert.pem'), join(eve, 'bundle.pem'));
    await opensslVerify(join(eve, 'delegation.pem'), join(eve, 'bundle.pem'));
  });

  test('text output names what was made and where', async () => {
    const out = outDir('text');
    const result = await sigil([
      'delegate',
      '--from',
      alice,
      '--to',
      'text',
      '--workloads',
      '0',
      '--out',
      out,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      new RegExp(`^created delegation spiffe://text\\.alice\\.d\\.${TD} \\(offline`),
    );
    assert.match(result.stdout, /permissions: +info, create, destroy, delegate, revoke, issue\n/);
    assert.match(
      result.stdout,
      /limits: +0 workloads, cpus 0,1, 4096 MiB memory, 1024 MiB block, bridges br0,br1, 100 issuances\/hour\n/,
    );
    assert.match(result.stdout, /path length: +1\n/);
    assert.match(
      result.stdout,
      /names: +DNS alice\.example, DNS svc\.example, IP 10\.1\.0\.0\/16, IP fd00:a::\/32\n/,
    );
    assert.match(result.stdout, /wrote .*delegation\.key.*cert\.pem/);
  });

  test('--command: a command certificate with permissions only, no CA files', async () => {
    const out = outDir('ops');
    const made = await delegateJson([
      '--from',
      alice,
      '--to',
      'ops',
      '--command',
      '--permissions',
      'info',
      '--out',
      out,
    ]);
    assert.equal(made.kind, 'command');
    assert.equal(made.spiffeId, `spiffe://ops.alice.d.${TD}`);
    assert.equal(made.pathLen, null);
    assert.deepEqual(made.effective, { version: 1, permissions: ['info'], limits: null });
    assert.deepEqual(made.files.map((file) => file.slice(out.length + 1)).sort(), [
      'bundle.pem',
      'cert.pem',
      'delegation.json',
      'key.pem',
    ]);
    const chain = ders(join(out, 'cert.pem'));
    assert.equal(chain.length, 3, 'command certificate, alice, intermediate');
    assert.equal(new X509Certificate(chain[0]).ca, false);
    assert.equal(mode(join(out, 'key.pem')), 0o600);
    await opensslVerify(join(out, 'cert.pem'), join(out, 'bundle.pem'));
    assert.equal(readJson<DelegationJson>(join(out, 'delegation.json')).isCa, false);
  });

  test('refused: --command with resource flags', async () => {
    await refusedOffline(
      alice,
      ['--to', 'ops2', '--command', '--permissions', 'info', '--workloads', '1', '--path-len', '0'],
      /--command makes a command certificate.*drop --workloads, --path-len/,
    );
  });

  test('refused: escalating workloads', async () => {
    await refusedOffline(
      alice,
      ['--to', 'greedy', '--workloads', '5'],
      /escalates.*workloads 5 exceeds the parent's 2/,
    );
  });

  test('refused: escalating cpus', async () => {
    await refusedOffline(
      alice,
      ['--to', 'greedy', '--cpus', '0,2'],
      /escalates.*cpus 2 not granted by the parent/,
    );
  });

  test('refused: escalating a permission', async () => {
    await refusedOffline(
      alice,
      ['--to', 'greedy', '--permissions', 'info,admin'],
      /escalates.*permission admin not held by the parent/,
    );
  });

  test('refused: pathLen overflow', async () => {
    await refusedOffline(
      alice,
      ['--to', 'deep', '--path-len', '2'],
      /pathLen overflow.*2 is not below the parent's pathLen 2/,
    );
    await refusedOffline(dave, ['--to', 'deep'], /pathLen overflow: the parent has pathLen 0/);
  });

  test('refused: a lifetime past the parent', async () => {
    await refusedOffline(alice, ['--to', 'old', '--ttl', '365d'], /would outlive its parent/);
  });

  test('refused: a parent lacking "delegate"', async () => {
    await refusedOffline(bob, ['--to', 'x', '--permissions', 'info'], /lacks the "delegate" permission/);
  });

  test('bad --cpus text is bad usage: exit 2, nothing written', async () => {
    for (const [cpus, problem] of [
      ['0,one', /--cpus "0,one": "one" is not a cpu id or range/],
      ['3-1', /--cpus "3-1": "3-1" is out of range/],
    ] as const) {
      const out = outDir('refused');
      const before = snapshot(alice);
      const result = await sigil(['delegate', '--from', alice, '--out', out, '--to', 'x', '--cpus', cpus]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, problem);
      assert.equal(existsSync(out), false, `${out} was created`);
      assert.deepEqual(snapshot(alice), before);
    }
  });

  test('refused: an unknown permission and a bad name', async () => {
    await refusedOffline(
      alice,
      ['--to', 'x', '--permissions', 'info,fly'],
      /--permissions: unknown permission "fly"/,
    );
    await refusedOffline(
      alice,
      ['--to', 'Carol'],
      /--to: delegation name "Carol" must be 1 to 63 lower-case letters, digits or inner hyphens/,
    );
  });

  test('refused: --to with a dot or an underscore, naming the rule (one DNS label)', async () => {
    for (const name of ['car.ol', 'car_ol']) {
      await refusedOffline(
        alice,
        ['--to', name],
        new RegExp(
          `--to: delegation name "${name.replace('.', '\\.')}" must be 1 to 63 lower-case letters, digits or inner hyphens \\(it becomes a DNS label\\); no "\\." or "_" \\(e\\.g\\. car-ol\\)`,
        ),
      );
    }
    await refusedOffline(
      alice,
      ['--to', `${'a'.repeat(64)}`],
      /--to: delegation name "a{64}" must be 1 to 63/,
    );
    await refusedOffline(alice, ['--to', '-carol'], /--to: delegation name "-carol" must be/);
  });

  test("--ip and --dns narrow the parent's names; openssl shows exactly those constraints", async () => {
    const out = outDir('narrow');
    const made = await delegateJson([
      '--from',
      alice,
      '--to',
      'narrow',
      '--ip',
      '10.1.2.0/24,fd00:a:b::/48',
      '--dns',
      'web.svc.example',
      '--out',
      out,
    ]);
    assert.deepEqual(made.ipRanges, ['10.1.2.0/24', 'fd00:a:b::/48']);
    assert.deepEqual(made.dnsNames, ['web.svc.example']);
    assert.deepEqual(await nameConstraintsOf(join(out, 'delegation.pem')), {
      permitted: [
        'DNS:web.svc.example',
        'IP:10.1.2.0/255.255.255.0',
        'IP:FD00:A:B:0:0:0:0:0/FFFF:FFFF:FFFF:0:0:0:0:0',
        ...uriConstraints(`narrow.alice.d.${TD}`),
      ],
      excluded: [],
    });
    const info = readJson<DelegationJson>(join(out, 'delegation.json'));
    assert.deepEqual(info.ipRanges, ['10.1.2.0/24', 'fd00:a:b::/48']);
    assert.deepEqual(info.dnsNames, ['web.svc.example']);
    await opensslVerify(join(out, 'cert.pem'), join(out, 'bundle.pem'));
  });

  test('an empty --ip and --dns grant no name: every address of both families is excluded, DNS only "invalid"', async () => {
    const out = outDir('nameless');
    const made = await delegateJson([
      '--from',
      alice,
      '--to',
      'nameless',
      '--ip',
      '',
      '--dns',
      '',
      '--out',
      out,
    ]);
    assert.deepEqual(made.ipRanges, []);
    assert.deepEqual(made.dnsNames, []);
    assert.deepEqual(await nameConstraintsOf(join(out, 'delegation.pem')), {
      permitted: ['DNS:invalid', ...uriConstraints(`nameless.alice.d.${TD}`)],
      excluded: NO_IP_TEXT,
    });
    // Its own sub-delegations inherit nothing to name either.
    const below = outDir('nameless-below');
    const child = await delegateJson(['--from', out, '--to', 'below', '--out', below]);
    assert.deepEqual([child.dnsNames, child.ipRanges], [[], []]);
    await refusedOffline(
      out,
      ['--to', 'wider', '--ip', '10.1.0.0/16'],
      /10\.1\.0\.0\/16 is not within nothing/,
    );
  });

  test("refused: an --ip range outside the parent's, naming the range", async () => {
    await refusedOffline(
      alice,
      ['--to', 'wide', '--ip', '10.0.0.0/15'],
      /escalates its parent's IP ranges: 10\.0\.0\.0\/15 is not within 10\.1\.0\.0\/16, fd00:a::\/32/,
    );
    await refusedOffline(
      alice,
      ['--to', 'wide', '--ip', '10.1.2.0/24,192.168.0.0/24'],
      /IP ranges: 192\.168\.0\.0\/24 is not within/,
    );
    await refusedOffline(alice, ['--to', 'wide', '--ip', 'fd00::/16'], /IP ranges: fd00::\/16 is not within/);
  });

  test("refused: a --dns name outside the parent's, naming it", async () => {
    await refusedOffline(
      alice,
      ['--to', 'wide', '--dns', 'bob.example'],
      /escalates its parent's DNS names: bob\.example is not within alice\.example, svc\.example/,
    );
  });

  test('refused: a malformed --ip range, with the flag and the problem named', async () => {
    await refusedOffline(
      alice,
      ['--to', 'x', '--ip', '10.1.0.0/33'],
      /--ip: invalid IP range "10\.1\.0\.0\/33"/,
    );
    await refusedOffline(alice, ['--to', 'x', '--ip', 'abc'], /--ip: invalid IP range "abc"/);
    await refusedOffline(alice, ['--to', 'x', '--ip', '10.1.0.1/16'], /--ip: .*host bits are set/);
    await refusedOffline(
      alice,
      ['--to', 'x', '--ip', '10.1.0.0/16,'],
      /--ip "10\.1\.0\.0\/16," contains an empty entry/,
    );
    await refusedOffline(alice, ['--to', 'x', '--dns', 'a b'], /--dns: invalid DNS name "a b"/);
  });

  test('--dns ".svc.example" grants the subdomains of svc.example only (as --help says)', async () => {
    // A leading "." in a DNS constraint means "subdomains only" to OpenSSL (nc_dns) and Go's
    // crypto/x509; the grant, the certificate and delegation.json all keep it.
    const out = outDir('subdomains');
    const made = await delegateJson([
      '--from',
      alice,
      '--to',
      'subdomains',
      '--dns',
      '.svc.example',
      '--out',
      out,
    ]);
    assert.deepEqual(made.dnsNames, ['.svc.example']);
    assert.deepEqual(readJson<DelegationJson>(join(out, 'delegation.json')).dnsNames, ['.svc.example']);
    assert.deepEqual((await nameConstraintsOf(join(out, 'delegation.pem'))).permitted, [
      'DNS:.svc.example',
      ...ALICE_IP_TEXT,
      ...uriConstraints(`subdomains.alice.d.${TD}`),
    ]);
    // svc.example itself is not within ".svc.example".
    await refusedOffline(
      out,
      ['--to', 'apex', '--dns', 'svc.example'],
      /svc\.example is not within \.svc\.example/,
    );
  });

  test('refused: --from a delegation.json without policyOid (an older sigil wrote it), or with a malformed one', async () => {
    for (const [label, edit, problem] of [
      ['no-oid', (info: Record<string, unknown>) => delete info.policyOid, /names no policyOid/],
      [
        'bad-oid',
        (info: Record<string, unknown>) => {
          info.policyOid = '2.25.55506409673561962886091138008118191280';
        },
        /delegation\.json: invalid policy OID .*below 2\^28/,
      ],
    ] as const) {
      const copy = outDir(`parent-${label}`);
      mkdirSync(copy, { recursive: true, mode: 0o700 });
      for (const name of ['delegation.pem', 'delegation.key', 'cert.pem', 'key.pem', 'bundle.pem']) {
        writeFileSync(join(copy, name), readFileSync(join(alice, name)), { mode: 0o600 });
      }
      const info = readJson<Record<string, unknown>>(join(alice, 'delegation.json'));
      edit(info);
      writeFileSync(join(copy, 'delegation.json'), JSON.stringify(info));
      await refusedOffline(copy, ['--to', 'x'], problem);
    }
  });

  test('refused: --from a directory that holds no delegation', async () => {
    const ops = outDir('ops-parent');
    await delegateJson(['--from', alice, '--to', 'ops3', '--command', '--permissions', 'info', '--out', ops]);
    await refusedOffline(
      ops,
      ['--to', 'x'],
      /delegation\.pem does not exist.*a command certificate cannot delegate/,
    );
  });

  test('refused: --out exists without --force (nothing written, directory unchanged); --force replaces', async () => {
    const out = outDir('again');
    const first = await delegateJson(['--from', alice, '--to', 'again', '--workloads', '1', '--out', out]);
    const before = snapshot(out);
    assertRefused(
      await sigil(['delegate', '--from', alice, '--to', 'again', '--workloads', '1', '--out', out]),
      /already exists \(use --force to overwrite\)/,
    );
    assert.deepEqual(snapshot(out), before);
    // A directory holding any one of the files is refused too.
    const partial = outDir('partial');
    mkdirSync(partial, { mode: 0o700 });
    writeFileSync(join(partial, 'bundle.pem'), 'mine\n');
    const partialBefore = snapshot(partial);
    assertRefused(
      await sigil(['delegate', '--from', alice, '--to', 'partial', '--out', partial]),
      /bundle\.pem already exists/,
    );
    assert.deepEqual(snapshot(partial), partialBefore);

    const second = await delegateJson([
      '--from',
      alice,
      '--to',
      'again',
      '--workloads',
      '1',
      '--out',
      out,
      '--force',
    ]);
    assert.notEqual(second.serial, first.serial);
    assert.equal(readJson<DelegationJson>(join(out, 'delegation.json')).serial, second.serial);
    assert.equal(mode(join(out, 'delegation.key')), 0o600);
  });

  test('refused: without --from, --permissions is required (checked before any connection)', async () => {
    const out = outDir('noperm');
    assertRefused(
      await sigil(['delegate', '--to', 'alice', '--out', out, '--data', join(work, 'no-such-data')]),
      /give --permissions/,
    );
    assert.equal(existsSync(out), false);
  });
});

// --- from the server -----------------------------------------------------------------------

// Started at the top level (its clean-up hooks belong to the file), but
// caught: the offline tests above do not depend on the server being loadable.
interface Server {
  dataDir: string;
  running: {
    address: string;
    info: { rootFingerprint: string; trustDomain: string };
    authority: { policyOid: { text: string } };
  };
}
const started: Server | Error = await import('../agent/server-fixture.ts')
  .then(({ startTestServer }) => startTestServer())
  .catch((error: unknown) => (error instanceof Error ? error : new Error(String(error))));

describe('sigil delegate from the server, then offline, then sigil status as the delegate', () => {
  const dirs = { alice: outDir('srv-alice'), carol: outDir('srv-carol'), ops: outDir('srv-ops') };
  const server = started instanceof Error ? (undefined as unknown as Server) : started;

  before(() => {
    if (started instanceof Error) throw started;
  });

  const asAdmin = (args: readonly string[]) => sigil([...args, '--data', server.dataDir]);
  const as = (dir: string, args: readonly string[]) => sigil([...args, '--identity', dir]);
  const json = <T>(result: RunResult, what: string): T => {
    assert.equal(result.code, 0, `${what}: ${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  };

  test('an admin creates alice through the server', async () => {
    const made = json<DelegateOut>(
      await asAdmin([
        'delegate',
        '--to',
        'alice',
        '--permissions',
        'info,create,destroy,delegate,issue,revoke',
        '--workloads',
        '2',
        '--cpus',
        '0,1',
        '--memory',
        '4096',
        '--dns',
        'alice.example',
        '--ip',
        '10.1.0.0/16,fd00:a::/32',
        '--out',
        dirs.alice,
        '--json',
      ]),
      'delegate --to alice',
    );
    const td = server.running.info.trustDomain;
    assert.equal(made.kind, 'delegation');
    assert.equal(made.issuedBy, 'server');
    assert.equal(made.server, server.running.address);
    assert.equal(made.spiffeId, `spiffe://alice.d.${td}`);
    assert.deepEqual(made.dnsNames, ['alice.example']);
    assert.deepEqual(made.ipRanges, ['10.1.0.0/16', 'fd00:a::/32']);
    assert.deepEqual(made.effective.limits, {
      workloads: 2,
      cpus: [0, 1],
      memoryMiB: 4096,
      blockMiB: 0,
      bridges: [],
      issuancePerHour: 1000,
    });
    const info = readJson<DelegationJson>(join(dirs.alice, 'delegation.json'));
    assert.deepEqual(info.addresses, [server.running.address]);
    assert.equal(info.rootFingerprint, server.running.info.rootFingerprint);
    assert.equal(info.policyOid, server.running.authority.policyOid.text);
    assert.deepEqual(info.dnsNames, ['alice.example']);
    assert.deepEqual(info.ipRanges, ['10.1.0.0/16', 'fd00:a::/32']);
    // The server wrote the grants into the certificate's name constraints, with alice's host.
    assert.deepEqual(await nameConstraintsOf(join(dirs.alice, 'delegation.pem')), {
      permitted: ['DNS:alice.example', ...ALICE_IP_TEXT, ...uriConstraints(`alice.d.${td}`)],
      excluded: [],
    });
    assert.equal(mode(join(dirs.alice, 'delegation.key')), 0o600);
    await opensslVerify(join(dirs.alice, 'cert.pem'), join(dirs.alice, 'bundle.pem'));
    await opensslVerify(join(dirs.alice, 'delegation.pem'), join(dirs.alice, 'bundle.pem'));

    const status = json<StatusOut>(await as(dirs.alice, ['status', '--json']), 'status as alice');
    assert.equal(status.spiffeId, made.spiffeId);
    assert.deepEqual(status.policy, made.effective);
  });

  test('refused by the server side of sigil delegate: a malformed --ip, before anything is sent', async () => {
    const out = outDir('srv-bad-ip');
    assertRefused(
      await asAdmin([
        'delegate',
        '--to',
        'badip',
        '--permissions',
        'info',
        '--ip',
        '10.0.0.0/8,300.0.0.0/8',
        '--out',
        out,
      ]),
      /--ip: invalid IP range "300\.0\.0\.0\/8"/,
    );
    assert.equal(existsSync(out), false);
    assertRefused(
      await asAdmin(['delegate', '--to', 'bad.name', '--permissions', 'info', '--out', out]),
      /--to: delegation name "bad\.name" must be .*no "\." or "_"/,
    );
    assert.equal(existsSync(out), false);
  });

  test('alice delegates to carol offline; sigil status --identity carol shows her policy', async () => {
    const made = json<DelegateOut>(
      await sigil([
        'delegate',
        '--from',
        dirs.alice,
        '--to',
        'carol',
        '--permissions',
        'info,create,destroy',
        '--workloads',
        '1',
        '--cpus',
        '1',
        '--ip',
        '10.1.7.0/24',
        '--out',
        dirs.carol,
        '--json',
      ]),
      'delegate --from alice --to carol',
    );
    const td = server.running.info.trustDomain;
    assert.equal(made.spiffeId, `spiffe://carol.alice.d.${td}`);
    assert.deepEqual(made.ipRanges, ['10.1.7.0/24']);
    assert.deepEqual(made.dnsNames, ['alice.example'], "alice's, not narrowed");
    assert.deepEqual((await nameConstraintsOf(join(dirs.carol, 'delegation.pem'))).permitted, [
      'DNS:alice.example',
      'IP:10.1.7.0/255.255.255.0',
      ...uriConstraints(`carol.alice.d.${td}`),
    ]);
    // Outside alice's ranges: refused offline, naming the range.
    await refusedOffline(
      dirs.alice,
      ['--to', 'wide', '--ip', '10.2.0.0/16'],
      /10\.2\.0\.0\/16 is not within 10\.1\.0\.0\/16/,
    );

    const status = json<StatusOut>(await as(dirs.carol, ['status', '--json']), 'status as carol');
    assert.equal(status.server, server.running.address);
    assert.equal(status.spiffeId, made.spiffeId);
    assert.deepEqual(status.policy, {
      version: 1,
      permissions: ['info', 'create', 'destroy'],
      limits: { workloads: 1, cpus: [1], memoryMiB: 4096, blockMiB: 0, bridges: [], issuancePerHour: 1000 },
    });
    const text = await as(dirs.carol, ['delegation', 'status']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^delegate ${made.spiffeId} at `));
    assert.match(text.stdout, /permissions: +info, create, destroy\n/);
  });

  test('sigil status with a delegate identity that has no delegation.json still asks for the delegation status', async () => {
    // cert.pem, key.pem and bundle.pem only: the leaf's host (carol.alice.d.<td>) says it is a delegate.
    const bare = outDir('srv-bare');
    mkdirSync(bare, { recursive: true, mode: 0o700 });
    for (const name of ['cert.pem', 'key.pem', 'bundle.pem']) {
      writeFileSync(join(bare, name), readFileSync(join(dirs.carol, name)), { mode: 0o600 });
    }
    const status = json<StatusOut>(
      await as(bare, [
        'status',
        '--server',
        server.running.address,
        '--ca-fingerprint',
        server.running.info.rootFingerprint,
        '--json',
      ]),
      'status as carol without delegation.json',
    );
    assert.equal(status.spiffeId, `spiffe://carol.alice.d.${server.running.info.trustDomain}`);
    assert.equal(status.policy?.limits?.workloads, 1);
  });

  test("carol reserves within her limits, not past them, and releases; alice sees carol's subtree", async () => {
    const reserved = json<{ holder: string; existing: boolean; spiffeId: string }>(
      await as(dirs.carol, ['delegation', 'reserve', 'web-1', '--workloads', '1', '--cpus', '1', '--json']),
      'reserve web-1',
    );
    assert.equal(reserved.holder, 'web-1');
    assert.equal(reserved.existing, false);
    // Answered with the caller's own SPIFFE ID.
    assert.equal(reserved.spiffeId, `spiffe://carol.alice.d.${server.running.info.trustDomain}`);
    const again = await as(dirs.carol, ['delegation', 'reserve', 'web-2', '--workloads', '1']);
    assert.equal(again.code, 1, `a second workload past carol's 1 was reserved: ${again.stdout}`);
    assert.match(again.stderr, /^sigil: [^\n]+\n$/);

    const aliceStatus = json<StatusOut>(
      await as(dirs.alice, ['delegation', 'status', '--json']),
      'alice status',
    );
    assert.equal(aliceStatus.usage?.workloads, 1, "carol's workload counts against alice");
    assert.ok(
      aliceStatus.delegated.some(
        (node) => node.spiffeId === `spiffe://carol.alice.d.${server.running.info.trustDomain}`,
      ),
      `carol not in ${JSON.stringify(aliceStatus.delegated)}`,
    );

    const released = json<{ released: boolean }>(
      await as(dirs.carol, ['delegation', 'release', 'web-1', '--json']),
      'release web-1',
    );
    assert.equal(released.released, true);
  });

  test('an admin makes a command certificate through the server; its status shows permissions only', async () => {
    const made = json<DelegateOut>(
      await asAdmin([
        'delegate',
        '--to',
        'ops',
        '--command',
        '--permissions',
        'info',
        '--out',
        dirs.ops,
        '--json',
      ]),
      'delegate --command',
    );
    assert.equal(made.kind, 'command');
    assert.equal(existsSync(join(dirs.ops, 'delegation.pem')), false);
    const status = json<StatusOut>(await as(dirs.ops, ['status', '--json']), 'status as ops');
    assert.deepEqual(status.policy, { version: 1, permissions: ['info'], limits: null });
  });

  test("alice revokes carol's delegation; carol can no longer call", async () => {
    const revoked = json<{ revoked: boolean; alreadyRevoked: boolean; spiffeId: string }>(
      await as(dirs.alice, [
        'delegation',
        'revoke',
        join(dirs.carol, 'delegation.pem'),
        '--reason',
        'keyCompromise',
        '--json',
      ]),
      'revoke carol',
    );
    assert.equal(revoked.alreadyRevoked, false);
    assert.equal(revoked.spiffeId, `spiffe://carol.alice.d.${server.running.info.trustDomain}`);
    const refused = await as(dirs.carol, ['status', '--json']);
    assert.equal(refused.code, 1, `carol still answered: ${refused.stdout}`);
    assert.match(refused.stderr, /^sigil: [^\n]+\n$/);
  });

  test('a delegate six levels deep calls the control plane: its chain goes out once, within the bound', async () => {
    // The leaf, six delegations and the replica intermediate: seven CA certificates in sigil-chain-bin,
    // under the bound of nine; sent twice (once per credential layer) they would have been refused.
    let parent = outDir('deep-0');
    json(
      await asAdmin([
        'delegate',
        '--to',
        'deep0',
        '--permissions',
        'info,delegate',
        '--path-len',
        '8',
        '--out',
        parent,
        '--json',
      ]),
      'delegate --to deep0',
    );
    for (let level = 1; level < 6; level++) {
      const child = outDir(`deep-${level}`);
      json(
        await sigil(['delegate', '--from', parent, '--to', `deep${level}`, '--out', child, '--json']),
        `delegate --to deep${level}`,
      );
      parent = child;
    }
    const status = json<StatusOut>(await as(parent, ['status', '--json']), 'status six levels down');
    assert.equal(
      status.spiffeId,
      `spiffe://deep5.deep4.deep3.deep2.deep1.deep0.d.${server.running.info.trustDomain}`,
    );
  });
});
