// Security issue #9, "a delegation can mint any identity", attacked from the
// outside: a real `sigil server` (subprocess), delegation directories written
// by the real `sigil delegate`, and certificates the attacker mints with the
// openssl CLI under a delegation's CA key (`openssl x509 -req -CA
// A/delegation.pem -CAkey A/delegation.key …`). Each attack is a named test
// with its positive control, so that removing the check it relies on makes it
// fail:
//
//   1. an admin name (spiffe://<td>/admin/mallory) minted under a delegation
//      holding only "info": refused at the TLS handshake by the delegation's
//      URI name constraints, so no token, delegation or revocation happens;
//      the same name inside the delegation's host is admitted only as a
//      delegate with the delegation's policy, and every Admin method refuses
//      it; after `sigil delegation revoke`, refused, and its live session ends.
//   2. a node's or a replica's name forged (outside the host: refused at the
//      handshake; inside: a delegate): it renews and revokes nothing, and
//      joins no replica.
//   3. CA certificates as clients (one minted under a delegation, and the
//      delegation certificate itself): refused at the handshake with
//      CA_CERTIFICATE_AS_CLIENT.
//   7. a leaf minted offline two levels down (bob → carol → leaf): revoking
//      bob with `sigil cert revoke <serial>` ends its live session and refuses
//      it afterwards; across two replicas on PostgreSQL (the session on B,
//      `sigil delegation revoke` on A).
//
// The outcome the server decides is read back through the admin's view
// (`sigil token list`, node and certificate listings), never taken from the
// attacker's side alone. Handshake refusals are also read from the server's
// log (the verify code, read from OpenSSL's text where Node's own code is
// "UNSPECIFIED"), and the cause is confirmed with `openssl verify` on the same chain.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { enrol } from '../../src/agent/enrol.ts';
import { AdminService, type CertificateAuthorityClient } from '../../src/gen/sigil/v1/sigil.ts';
import { readPrivateKey } from '../../src/pki/keys.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { parsePermissions } from '../../src/pki/policy-extension.ts';
import { possessionFor, replicaChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { newTokenId, newTokenSecret } from '../../src/protocol/join-tokens.ts';
import { policyMessage } from '../../src/protocol/policy-messages.ts';
import type { RunningServer } from '../../src/server/start-server.ts';
import { delegateArgs, jsonOf } from '../cli/pki-helpers.ts';
import { sigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { sha256 } from '../support/fingerprint.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp-dir.ts';
import {
  assertRefusedWith,
  assertSucceeded,
  attempt,
  callerWith,
  type Forged,
  Forger,
  identityIn,
  LOCAL_GRANTS,
  type Outcome,
  type SpawnedServer,
  startSigilServer,
  verifyForged,
} from './forgery-fixtures.ts';
import { adminJoinToken, type Clients, startTestServer } from './helpers.ts';

interface DelegateJson {
  spiffeId: string;
  serial: string;
  issuedBy: string;
  effective: { permissions: string[] };
}

interface TokenJson {
  id: string;
  createdBy: string | null;
  replica: boolean;
}

/** A live server stream (WatchRevocations): resolves `first` on its first message, `ended` when it ends. */
function openStream(client: CertificateAuthorityClient) {
  const stream = client.watchRevocations({});
  let resolveFirst: () => void;
  const first = new Promise<void>((resolve) => {
    resolveFirst = resolve;
  });
  const ended = new Promise<{ code: number; details: string }>((resolve) => {
    stream.on('data', () => resolveFirst());
    stream.on('error', (error: grpc.ServiceError) => resolve({ code: error.code, details: error.details }));
    stream.on('end', () => resolve({ code: grpc.status.OK, details: 'the stream ended' }));
  });
  return { first, ended, cancel: () => stream.cancel() };
}

const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    promise,
    new Promise<T>((_resolve, reject) =>
      setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms).unref(),
    ),
  ]);

/** A refusal of a revoked chain: the handshake (UNAVAILABLE) or admission naming the revocation. */
function assertRevokedRefusal(outcome: Outcome<unknown>, what: string): void {
  assert.equal(outcome.ok, false, `${what}: the call succeeded after the revocation`);
  if (outcome.ok) return;
  if (outcome.code === grpc.status.PERMISSION_DENIED) assert.match(outcome.details, /revoked/, what);
  else
    assert.equal(
      outcome.code,
      grpc.status.UNAVAILABLE,
      `${what}: ${grpc.status[outcome.code]} ${outcome.details}`,
    );
}

// --- one real server for the whole file ------------------------------------------------

describe('forged identities against a real sigil server', () => {
  const work = tempDir('sigil-forged-');
  const dataDir = join(work, 'data');
  const dirs = {
    alice: join(work, 'alice'),
    ivan: join(work, 'ivan'),
    bob: join(work, 'bob'),
    carol: join(work, 'carol'),
  };
  let server: SpawnedServer;
  let td: string;
  let bundle: string;
  let admin: Clients;
  const open: Clients[] = [];
  let alice: Forger;
  let ivan: Forger;
  let carol: Forger;
  let aliceMade: DelegateJson;
  const adminTokens = new Set<string>();
  let victim: { nodeId: string; serial: string; chain: string; key: string };
  let spare: { nodeId: string; serial: string };

  const as = (identity: { chain: string; key: string }): Clients => {
    const caller = callerWith(server.info.listen, identity, bundle);
    open.push(caller);
    return caller;
  };
  const asAdmin = (args: readonly string[]) => sigil([...args, '--data', dataDir]);

  async function adminToken(name: string, replica = false): Promise<string> {
    const created = assertSucceeded(
      await attempt(admin.admin, admin.admin.createToken, {
        ttlSeconds: 600,
        uses: 1,
        autoApprove: !replica,
        name,
        replica,
      }),
      `the admin creates token ${name}`,
    );
    assert.ok(created.summary);
    adminTokens.add(created.summary.id);
    return created.token;
  }

  async function enrolNode(name: string) {
    const dir = join(work, `node-${name}`);
    const result = await enrol({ token: await adminToken(name), dir, keyType: 'p256' });
    assert.equal(result.state, 'UP');
    assert.ok(result.certificate);
    return {
      nodeId: result.nodeId,
      serial: result.certificate.serial,
      ...identityIn(dir),
    };
  }

  before(async () => {
    server = await startSigilServer(dataDir);
    td = server.info.trustDomain;
    bundle = readFileSync(join(dataDir, 'ca.pem'), 'utf8');
    admin = callerWith(server.info.listen, identityIn(dataDir, 'admin.pem', 'admin.key'), bundle);
    open.push(admin);
    // The admin hands out three delegations through the server.
    const [a, i, b] = await Promise.all([
      asAdmin(delegateArgs('alice', 'info,issue', dirs.alice, ...LOCAL_GRANTS, '--json')),
      asAdmin(delegateArgs('ivan', 'info', dirs.ivan, '--json')),
      asAdmin(delegateArgs('bob', 'info,issue,delegate', dirs.bob, '--json')),
    ]);
    aliceMade = jsonOf<DelegateJson>(a, 'delegate --to alice');
    assert.equal(
      aliceMade.issuedBy,
      'server',
      'the positive control of CreateDelegation: the admin made alice',
    );
    assert.equal(jsonOf<DelegateJson>(i, 'delegate --to ivan').effective.permissions.join(), 'info');
    jsonOf<DelegateJson>(b, 'delegate --to bob');
    // Bob delegates to carol offline: the server never sees carol until her chain is presented.
    jsonOf<DelegateJson>(
      await sigil(delegateArgs('carol', 'info,issue', dirs.carol, '--from', dirs.bob, '--json')),
      'delegate --from bob --to carol',
    );
    alice = Forger.fromDelegationDirectory(join(work, 'forge-alice'), dirs.alice);
    ivan = Forger.fromDelegationDirectory(join(work, 'forge-ivan'), dirs.ivan);
    carol = Forger.fromDelegationDirectory(join(work, 'forge-carol'), dirs.carol);
    victim = await enrolNode('victim');
    const spareNode = await enrolNode('spare');
    spare = { nodeId: spareNode.nodeId, serial: spareNode.serial };
  });

  after(async () => {
    for (const caller of open) caller.close();
    await server?.stop();
  });

  /** The handshake refusals the server logged after `before` of them, once there are more. */
  const newRefusals = (before: number) =>
    eventually('the server to log the refused handshake', () => {
      const all = server.handshakeRefusals();
      return all.length > before ? all.slice(before) : undefined;
    });

  /** openssl's verdict on a forged client leaf, chained through the attacker's delegation, against ca.pem. */
  const verdict = (forged: Forged) => verifyForged(forged, bundle, 'client');

  /** The admin's view of the victim node and its certificate. */
  async function assertVictimIntact(): Promise<void> {
    const node = assertSucceeded(
      await attempt(admin.admin, admin.admin.getNode, { id: victim.nodeId }),
      'the admin reads the victim node',
    );
    assert.equal(node.state, 'UP');
    const revoked = assertSucceeded(
      await attempt(admin.ca, admin.ca.listCertificates, {
        pageSize: 1000,
        pageToken: '',
        requester: '',
        profile: '',
        revoked: 'yes',
      }),
      'the admin lists revoked certificates',
    );
    assert.ok(
      !revoked.certificates.some((c) => c.serial === victim.serial),
      `the victim's certificate ${victim.serial} was revoked`,
    );
  }

  /** Every request of the attack: join tokens, a delegation, revocations of the victim. */
  function adminAttacks(caller: Clients, leaf: Forged) {
    const key = readPrivateKey(leaf.key);
    return {
      'CreateToken (node)': () =>
        attempt(caller.admin, caller.admin.createToken, {
          ttlSeconds: 600,
          uses: 5,
          autoApprove: true,
          name: 'mallory',
          replica: false,
        }),
      'CreateToken (replica)': () =>
        attempt(caller.admin, caller.admin.createToken, {
          ttlSeconds: 600,
          uses: 1,
          autoApprove: false,
          name: 'mallory replica',
          replica: true,
        }),
      CreateDelegation: () =>
        attempt(caller.delegation, caller.delegation.createDelegation, {
          name: 'mallory',
          policy: policyMessage({
            version: 1,
            permissions: parsePermissions('info,create,destroy,delegate,revoke,issue,admin'),
            limits: {
              workloads: 100,
              cpus: [0, 1],
              memoryMiB: 1024,
              blockMiB: 1024,
              bridges: [],
              issuancePerHour: 1000,
            },
          }),
          pathLen: -1,
          ttlSeconds: 0,
          dnsNames: [],
          ipRanges: [],
          possession: possessionFor(key, signChallenge(sha256(leaf.der))),
          command: false,
        }),
      'RevokeNode (victim)': () =>
        attempt(caller.admin, caller.admin.revokeNode, { id: victim.nodeId, reason: 'keyCompromise' }),
      "Revoke (the victim's certificate)": () =>
        attempt(caller.ca, caller.ca.revoke, { serial: victim.serial, reason: 'keyCompromise' }),
    };
  }

  test('1. spiffe://<td>/admin/mallory minted under a delegation holding only "info" is refused at the handshake: no token, no delegation, no revocation', async () => {
    for (const [name, forger] of [
      ['ivan (info only)', ivan],
      ['alice (info, issue)', alice],
    ] as const) {
      const leaf = await forger.mint({ commonName: 'mallory', uris: [`spiffe://${td}/admin/mallory`] });
      // The cause: the delegation's URI name constraint, as OpenSSL reports it.
      const checked = await verdict(leaf);
      assert.equal(checked.ok, false, `openssl verify accepted ${name}'s forged admin leaf`);
      assert.match(checked.output, /permitted subtree violation/);

      const refusalsBefore = server.handshakeRefusals().length;
      const mallory = as(leaf);
      for (const [what, run] of Object.entries(adminAttacks(mallory, leaf))) {
        assertRefusedWith(await run(), grpc.status.UNAVAILABLE, `${name}: ${what}`);
      }
      // Refused in the handshake, before grpc-js saw it, for the name constraint.
      const refusals = await newRefusals(refusalsBefore);
      assert.ok(!refusals.includes('CA_CERTIFICATE_AS_CLIENT'), refusals.join());
    }

    // A URI with userinfo, whose host OpenSSL 3.0's constraint check reads as alice's while a URL
    // parser reads the trust domain (see test/pki/peers-delegation.test.ts): no SPIFFE ID, never an admin.
    const userinfo = await alice.mint({
      commonName: 'mallory',
      uris: [`spiffe://alice.d.${td}:1@${td}/admin/mallory`],
    });
    const sneaky = as(userinfo);
    for (const [what, run] of Object.entries(adminAttacks(sneaky, userinfo))) {
      const outcome = await run();
      assert.equal(outcome.ok, false, `userinfo URI: ${what} succeeded`);
      if (!outcome.ok) {
        assert.ok(
          [grpc.status.UNAVAILABLE, grpc.status.PERMISSION_DENIED].includes(outcome.code),
          `userinfo URI: ${what}: ${grpc.status[outcome.code]} ${outcome.details}`,
        );
      }
    }

    // The server never treated it as an admin: only the admin's tokens exist, the victim is intact.
    const listed = jsonOf<{ tokens: TokenJson[] }>(await asAdmin(['token', 'list', '--json']), 'token list');
    assert.deepEqual(new Set(listed.tokens.map((t) => t.id)), adminTokens);
    for (const token of listed.tokens) assert.equal(token.createdBy, `spiffe://${td}/admin/admin`);
    await assertVictimIntact();

    // Positive controls: the same requests by the real admin succeed.
    await adminToken('control');
    await adminToken('control replica', true);
    const after = jsonOf<{ tokens: TokenJson[] }>(await asAdmin(['token', 'list', '--json']), 'token list');
    assert.deepEqual(new Set(after.tokens.map((t) => t.id)), adminTokens);
    assert.ok(after.tokens.some((t) => t.replica));
    const revokedSpare = assertSucceeded(
      await attempt(admin.admin, admin.admin.revokeNode, { id: spare.nodeId, reason: 'keyCompromise' }),
      'the admin revokes the spare node',
    );
    assert.equal(revokedSpare.state, 'REVOKED');
    // …and a correctly formed delegate leaf under the same delegation passes the same handshake.
    const proper = await ivan.mint({ commonName: 'ivan', uris: [`spiffe://ivan.d.${td}`] });
    assert.equal((await verdict(proper)).ok, true);
    const ivanCaller = as(proper);
    const status = assertSucceeded(
      await attempt(ivanCaller.delegation, ivanCaller.delegation.getDelegationStatus, {}),
      "ivan's own leaf, minted by openssl",
    );
    assert.equal(status.spiffeId, `spiffe://ivan.d.${td}`);
    assert.deepEqual(status.policy?.permissions, ['info']);
  });

  test("1. spiffe://alice.d.<td>/admin/mallory (inside the host, which OpenSSL accepts) is only a delegate with alice's policy: every Admin method is PERMISSION_DENIED", async () => {
    const leaf = await alice.mint({ commonName: 'mallory', uris: [`spiffe://alice.d.${td}/admin/mallory`] });
    assert.equal((await verdict(leaf)).ok, true, 'OpenSSL accepts a name inside the host');
    const mallory = as(leaf);

    const status = assertSucceeded(
      await attempt(mallory.delegation, mallory.delegation.getDelegationStatus, {}),
      'the in-host leaf is admitted as a delegate',
    );
    assert.equal(status.spiffeId, `spiffe://alice.d.${td}/admin/mallory`);
    assert.deepEqual(status.policy?.permissions, aliceMade.effective.permissions);

    for (const [key, method] of Object.entries(AdminService)) {
      const request = method.requestDeserialize(Buffer.alloc(0));
      const outcome = await new Promise<Outcome<unknown>>((resolve) => {
        mallory.admin.makeUnaryRequest(
          method.path,
          method.requestSerialize as (value: unknown) => Buffer,
          method.responseDeserialize as (value: Buffer) => unknown,
          request,
          new grpc.Metadata(),
          { deadline: Date.now() + 5_000 },
          (error, response) =>
            resolve(error ? { ok: false, code: error.code, details: error.details } : { ok: true, response }),
        );
      });
      assertRefusedWith(outcome, grpc.status.PERMISSION_DENIED, `Admin.${key}`, /delegate/);
    }
    const attacks = adminAttacks(mallory, leaf);
    assertRefusedWith(await attacks.CreateDelegation(), grpc.status.PERMISSION_DENIED, 'CreateDelegation');
    // Revoke is open to members; the authority answers as if the certificate did not exist.
    assertRefusedWith(
      await attacks["Revoke (the victim's certificate)"](),
      grpc.status.NOT_FOUND,
      "Revoke (the victim's certificate)",
    );
    for (const [what, outcome] of [
      [
        'Sign',
        await attempt(mallory.ca, mallory.ca.sign, {
          possession: possessionFor(readPrivateKey(leaf.key), signChallenge(sha256(leaf.der))),
          profile: 'client',
          commonName: 'mallory',
          dnsNames: [],
          ipAddresses: [],
          uris: [`spiffe://${td}/admin/mallory2`],
          ttlSeconds: 0,
        }),
      ],
      [
        'ListCertificates',
        await attempt(mallory.ca, mallory.ca.listCertificates, {
          pageSize: 10,
          pageToken: '',
          requester: '',
          profile: '',
          revoked: '',
        }),
      ],
    ] as const) {
      assertRefusedWith(outcome, grpc.status.PERMISSION_DENIED, what);
    }
    // Under ivan, who lacks "issue", a path leaf is not even admitted.
    const ivanLeaf = await ivan.mint({
      commonName: 'mallory',
      uris: [`spiffe://ivan.d.${td}/admin/mallory`],
    });
    const asIvan = as(ivanLeaf);
    assertRefusedWith(
      await attempt(asIvan.delegation, asIvan.delegation.getDelegationStatus, {}),
      grpc.status.PERMISSION_DENIED,
      'an in-host path leaf under ivan',
      /"issue"/,
    );

    await assertVictimIntact();
    const listed = jsonOf<{ tokens: TokenJson[] }>(await asAdmin(['token', 'list', '--json']), 'token list');
    assert.deepEqual(new Set(listed.tokens.map((t) => t.id)), adminTokens);
    // Positive control: the real admin may call every one of those methods (here, the read-only ones).
    assertSucceeded(await attempt(admin.admin, admin.admin.getStatus, {}), 'admin GetStatus');
    assertSucceeded(await attempt(admin.admin, admin.admin.listNodes, { state: '' }), 'admin ListNodes');
  });

  test("2. a forged node leaf cannot renew or revoke the node's certificate (outside the host: the handshake; inside: a delegate)", async () => {
    const outside = await alice.mint({
      commonName: victim.nodeId,
      uris: [`spiffe://${td}/node/${victim.nodeId}`],
    });
    assert.match((await verdict(outside)).output, /permitted subtree violation/);
    const refusalsBefore = server.handshakeRefusals().length;
    const forgedNode = as(outside);
    assertRefusedWith(
      await attempt(forgedNode.ca, forgedNode.ca.renew, {}),
      grpc.status.UNAVAILABLE,
      'Renew',
    );
    assertRefusedWith(
      await attempt(forgedNode.ca, forgedNode.ca.revoke, { serial: victim.serial, reason: '' }),
      grpc.status.UNAVAILABLE,
      'Revoke',
    );
    await newRefusals(refusalsBefore);

    const inside = [
      await alice.mint({ commonName: victim.nodeId, uris: [`spiffe://alice.d.${td}/node/${victim.nodeId}`] }),
      // The victim's own serial number, reused.
      await alice.mint({
        commonName: victim.nodeId,
        uris: [`spiffe://alice.d.${td}/node/${victim.nodeId}`],
        serial: victim.serial,
      }),
      // The node ID as a command-certificate label.
      await alice.mint({ commonName: victim.nodeId, uris: [`spiffe://${victim.nodeId}.alice.d.${td}`] }),
    ];
    assert.equal(inside[1].serial, victim.serial);
    for (const leaf of inside) {
      const caller = as(leaf);
      const status = assertSucceeded(
        await attempt(caller.delegation, caller.delegation.getDelegationStatus, {}),
        'admitted as a delegate',
      );
      assert.match(status.spiffeId, new RegExp(`alice\\.d\\.${td.replaceAll('.', '\\.')}`));
      assertRefusedWith(
        await attempt(caller.ca, caller.ca.renew, {}),
        grpc.status.PERMISSION_DENIED,
        `Renew as ${status.spiffeId}`,
        /not issued by this authority/,
      );
      assertRefusedWith(
        await attempt(caller.ca, caller.ca.revoke, { serial: victim.serial, reason: 'keyCompromise' }),
        grpc.status.NOT_FOUND,
        `Revoke the victim's certificate as ${status.spiffeId}`,
      );
    }
    await assertVictimIntact();

    // Positive control: the node itself renews, and with the renewed certificate revokes the previous one.
    const node = as(victim);
    const renewed = assertSucceeded(await attempt(node.ca, node.ca.renew, {}), 'the node renews itself');
    assert.equal(renewed.spiffeId, `spiffe://${td}/node/${victim.nodeId}`);
    assert.notEqual(renewed.serial, victim.serial);
    const renewedNode = as({
      chain: [renewed.certificate, ...renewed.chain]
        .map((der) => encodePem('CERTIFICATE', Buffer.from(der)))
        .join(''),
      key: victim.key,
    });
    const revoked = assertSucceeded(
      await attempt(renewedNode.ca, renewedNode.ca.revoke, { serial: victim.serial, reason: 'superseded' }),
      'the node revokes its previous certificate',
    );
    assert.equal(revoked.alreadyRevoked, false);
    // …and the admin's view, which said "intact" after every forged attempt, now shows it revoked.
    await assert.rejects(assertVictimIntact(), /was revoked/);
  });

  test('2. a forged replica leaf (spiffe://<td>/replica/fake, and inside the host) cannot join or act as a replica', async () => {
    const outside = await alice.mint({
      commonName: 'fake',
      uris: [`spiffe://${td}/replica/fake`],
      dns: ['localhost'],
      ips: ['127.0.0.1'],
    });
    assert.match((await verdict(outside)).output, /permitted subtree violation/);
    const key = readPrivateKey(outside.key);
    const tokenId = newTokenId('replica');
    const tokenSecret = newTokenSecret();
    const join = (caller: Clients) =>
      attempt(caller.enrolment, caller.enrolment.joinReplica, {
        tokenId,
        tokenSecret,
        possession: possessionFor(key, replicaChallenge(tokenId, tokenSecret, 'fake')),
        replicaId: 'fake',
      });
    const refusalsBefore = server.handshakeRefusals().length;
    const forged = as(outside);
    assertRefusedWith(await join(forged), grpc.status.UNAVAILABLE, 'JoinReplica (outside the host)');
    assertRefusedWith(
      await attempt(forged.ca, forged.ca.getTrustBundle, {}),
      grpc.status.UNAVAILABLE,
      'GetTrustBundle (outside the host)',
    );
    await newRefusals(refusalsBefore);

    const inside = await alice.mint({
      commonName: 'fake',
      uris: [`spiffe://alice.d.${td}/replica/fake`],
      dns: ['localhost'],
      ips: ['127.0.0.1'],
    });
    const delegate = as(inside);
    // Admitted, but as what it is: a delegate of alice's, not a replica.
    const status = assertSucceeded(
      await attempt(delegate.delegation, delegate.delegation.getDelegationStatus, {}),
      'the in-host replica name',
    );
    assert.equal(status.spiffeId, `spiffe://alice.d.${td}/replica/fake`);
    assertSucceeded(
      await attempt(delegate.ca, delegate.ca.getTrustBundle, {}),
      'GetTrustBundle as a delegate',
    );
    const joined = await join(delegate);
    assert.equal(joined.ok, false, 'JoinReplica without a replica token succeeded');
    if (!joined.ok)
      assert.ok([grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED].includes(joined.code));
    assertRefusedWith(
      await attempt(delegate.ca, delegate.ca.renew, {}),
      grpc.status.PERMISSION_DENIED,
      'Renew',
    );
    // The replica set is the one the server started with.
    const replicas = assertSucceeded(
      await attempt(admin.admin, admin.admin.getStatus, {}),
      'GetStatus',
    ).replicas;
    assert.deepEqual(
      replicas.map((r) => r.replicaId),
      [server.info.replicaId],
    );
  });

  test('3. a CA certificate signed by a delegation, and the delegation certificate itself, are refused as clients (CA_CERTIFICATE_AS_CLIENT)', async () => {
    const caLeaf = await alice.mint({
      commonName: 'mallory ca',
      uris: [`spiffe://alice.d.${td}/ca`],
      ca: true,
    });
    // OpenSSL's path validation accepts it as a client: only sigil's own rule refuses it.
    assert.equal((await verdict(caLeaf)).ok, true, 'openssl verify refused the CA:TRUE client');
    const delegationItself = identityIn(dirs.alice, 'delegation.pem', 'delegation.key');
    for (const [what, identity] of [
      ['a CA:TRUE certificate under alice', caLeaf],
      ["alice's delegation certificate", delegationItself],
    ] as const) {
      const before = server.handshakeRefusals().filter((r) => r === 'CA_CERTIFICATE_AS_CLIENT').length;
      const caller = as(identity);
      assertRefusedWith(
        await attempt(caller.delegation, caller.delegation.getDelegationStatus, {}),
        grpc.status.UNAVAILABLE,
        what,
      );
      await eventually(`the server to log CA_CERTIFICATE_AS_CLIENT for ${what}`, () =>
        server.handshakeRefusals().filter((r) => r === 'CA_CERTIFICATE_AS_CLIENT').length > before
          ? true
          : undefined,
      );
    }
    // Positive control: alice's own identity leaf (cert.pem) under the same delegation is admitted.
    const aliceCaller = as(identityIn(dirs.alice));
    const status = assertSucceeded(
      await attempt(aliceCaller.delegation, aliceCaller.delegation.getDelegationStatus, {}),
      "alice's identity",
    );
    assert.equal(status.spiffeId, aliceMade.spiffeId);
  });

  test("1. after `sigil delegation revoke A/delegation.pem --data`: alice's forged leaves are refused, and a session opened before is closed", async (t) => {
    const leaf = await alice.mint({ commonName: 'mallory', uris: [`spiffe://alice.d.${td}/admin/mallory`] });
    const mallory = as(leaf);
    const session = openStream(mallory.ca);
    await within(session.first, 10_000, "the delegate's revocation stream");
    const bystander = as(identityIn(dirs.ivan));
    const bystanderSession = openStream(bystander.ca);
    await within(bystanderSession.first, 10_000, "ivan's revocation stream");

    const revoked = jsonOf<{ alreadyRevoked: boolean; spiffeId: string }>(
      await asAdmin([
        'delegation',
        'revoke',
        join(dirs.alice, 'delegation.pem'),
        '--reason',
        'keyCompromise',
        '--json',
      ]),
      'sigil delegation revoke',
    );
    assert.equal(revoked.alreadyRevoked, false);
    assert.equal(revoked.spiffeId, aliceMade.spiffeId);

    const ended = await within(session.ended, 15_000, 'the live session to be closed');
    t.diagnostic(`the live session ended with ${grpc.status[ended.code]}: ${ended.details}`);
    assert.equal(ended.code, grpc.status.UNAVAILABLE, 'the connection was not cut');

    // New connections with anything under alice are refused.
    for (const [what, identity] of [
      ['the same forged leaf', leaf],
      [
        'a new in-host leaf',
        await alice.mint({ commonName: 'm2', uris: [`spiffe://alice.d.${td}/admin/m2`] }),
      ],
      ["alice's own identity", identityIn(dirs.alice)],
    ] as const) {
      const caller = as(identity);
      assertRevokedRefusal(await attempt(caller.delegation, caller.delegation.getDelegationStatus, {}), what);
    }
    const outside = as(await alice.mint({ commonName: 'm3', uris: [`spiffe://${td}/admin/m3`] }));
    assertRefusedWith(
      await attempt(outside.admin, outside.admin.createToken, {
        ttlSeconds: 0,
        uses: 0,
        autoApprove: false,
        name: 'm3',
        replica: false,
      }),
      grpc.status.UNAVAILABLE,
      'the outside-host admin leaf after the revocation',
    );

    // Positive control: another delegation's session stays up and its calls go on.
    const raced = await Promise.race([
      bystanderSession.ended.then(() => 'ended'),
      new Promise((resolve) => setTimeout(() => resolve('alive'), 300)),
    ]);
    assert.equal(raced, 'alive', "ivan's session was closed too");
    assertSucceeded(
      await attempt(bystander.delegation, bystander.delegation.getDelegationStatus, {}),
      'ivan after the revocation',
    );
    bystanderSession.cancel();
  });

  test('7. a leaf minted offline under carol (bob → carol), never seen by the server: revoking bob (`sigil cert revoke <serial>`) closes its live session and refuses it', async (t) => {
    const offline = await carol.mint({ commonName: 'web', uris: [`spiffe://carol.bob.d.${td}/web`] });
    assert.equal((await verdict(offline)).ok, true);
    const web = as(offline);
    const status = assertSucceeded(
      await attempt(web.delegation, web.delegation.getDelegationStatus, {}),
      'the offline leaf is admitted',
    );
    assert.equal(status.spiffeId, `spiffe://carol.bob.d.${td}/web`);
    const session = openStream(web.ca);
    await within(session.first, 10_000, "the offline leaf's revocation stream");

    const bobSerial = (
      JSON.parse(readFileSync(join(dirs.bob, 'delegation.json'), 'utf8')) as { serial: string }
    ).serial;
    const revoked = jsonOf<{ alreadyRevoked: boolean }>(
      await asAdmin(['cert', 'revoke', bobSerial, '--reason', 'keyCompromise', '--json']),
      'sigil cert revoke',
    );
    assert.equal(revoked.alreadyRevoked, false);

    const ended = await within(session.ended, 15_000, "the offline leaf's session to be closed");
    t.diagnostic(`the live session ended with ${grpc.status[ended.code]}: ${ended.details}`);
    assert.equal(ended.code, grpc.status.UNAVAILABLE, 'the connection was not cut');
    const again = as(offline);
    assertRevokedRefusal(
      await attempt(again.delegation, again.delegation.getDelegationStatus, {}),
      'the same leaf',
    );
    const fresh = as(await carol.mint({ commonName: 'web2', uris: [`spiffe://carol.bob.d.${td}/web2`] }));
    assertRevokedRefusal(
      await attempt(fresh.delegation, fresh.delegation.getDelegationStatus, {}),
      'a leaf minted under carol after the revocation',
    );
  });
});

// --- two replicas on PostgreSQL ----------------------------------------------------------

const skip = postgresUnavailable() ?? undefined;
if (skip) console.log(`# skipping the PostgreSQL replica attack: ${skip}`);

describe('forged identities across two replicas on PostgreSQL', { skip }, () => {
  const work = tempDir('sigil-forged-pg-');
  const first = join(work, 'a');
  const second = join(work, 'b');
  let postgres: TestPostgres;
  const running: RunningServer[] = [];
  const open: Clients[] = [];

  before(async () => {
    postgres = await startPostgres();
    const url = await postgres.createDatabase();
    const a = await startTestServer({ dataDir: first, store: url, replicaId: 'a' });
    running.push(a);
    const token = await adminJoinToken(a.address, first, 'replica b', true);
    running.push(await startTestServer({ dataDir: second, store: url, replicaId: 'b', join: token }));
  });

  after(async () => {
    for (const caller of open) caller.close();
    for (const server of running.reverse()) await server.close(1000);
    await postgres?.stop();
  });

  test('7. a leaf minted offline under carol (alice → carol) connected on replica B: `sigil delegation revoke` of alice on replica A closes it and B refuses it', async (t) => {
    const [a, b] = running;
    const td = a.authority.trustDomain;
    const bundle = readFileSync(join(first, 'ca.pem'), 'utf8');
    const aliceDir = join(work, 'alice');
    const carolDir = join(work, 'carol');
    jsonOf(
      await sigil(delegateArgs('alice', 'info,issue,delegate', aliceDir, '--data', first, '--json')),
      'delegate --to alice on A',
    );
    jsonOf(
      await sigil(delegateArgs('carol', 'info,issue', carolDir, '--from', aliceDir, '--json')),
      'delegate --from alice --to carol',
    );
    const carol = Forger.fromDelegationDirectory(join(work, 'forge'), carolDir);
    const offline = await carol.mint({ commonName: 'web', uris: [`spiffe://carol.alice.d.${td}/web`] });
    const onB = callerWith(b.address, offline, bundle);
    open.push(onB);
    const status = assertSucceeded(
      await attempt(onB.delegation, onB.delegation.getDelegationStatus, {}),
      'the offline leaf on replica B',
    );
    assert.equal(status.spiffeId, `spiffe://carol.alice.d.${td}/web`);
    const session = openStream(onB.ca);
    await within(session.first, 10_000, 'the session on replica B');
    // Positive control: before the revocation the session on B carries calls.
    assertSucceeded(
      await attempt(onB.delegation, onB.delegation.getDelegationStatus, {}),
      'a second call on B',
    );

    const revoked = jsonOf<{ alreadyRevoked: boolean }>(
      await sigil(['delegation', 'revoke', join(aliceDir, 'delegation.pem'), '--data', first, '--json']),
      'sigil delegation revoke on A',
    );
    assert.equal(revoked.alreadyRevoked, false);

    const ended = await within(session.ended, 20_000, 'the session on replica B to be closed');
    t.diagnostic(`the live session ended with ${grpc.status[ended.code]}: ${ended.details}`);
    assert.equal(ended.code, grpc.status.UNAVAILABLE, 'the connection was not cut');
    const again = callerWith(b.address, offline, bundle);
    open.push(again);
    const refusedOnB = await eventually('replica B to refuse the revoked chain', async () => {
      const outcome = await attempt(again.delegation, again.delegation.getDelegationStatus, {});
      return outcome.ok ? undefined : outcome;
    });
    assertRevokedRefusal(refusedOnB, 'the offline leaf on B after the revocation on A');
  });
});
