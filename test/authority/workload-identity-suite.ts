// Workload identity at the authority, on a real store (SQLite or PostgreSQL:
// the same tests run on both). Alice holds a direct delegation, Carol a
// sub-delegation of hers that Carol signed offline; node A reserves Carol's
// workload "web" with Carol's leaf as it saw it, then asks for web's
// identity. Every refusal is a named test that also checks nothing was issued.
import assert from 'node:assert/strict';
import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import { Authority } from '../../src/authority/authority.ts';
import { startUp } from '../../src/authority/bootstrap.ts';
import { type AuthorityContext, createAuthorityContext } from '../../src/authority/context.ts';
import { type Caller, callerFrom } from '../../src/authority/identities.ts';
import { INTERMEDIATE_TTL_MS } from '../../src/authority/lifetimes.ts';
import {
  revokeWorkloadIdentitiesBeneath,
  type WorkloadIdentityRequest,
} from '../../src/authority/workload-identity.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { issueDelegateLeaf, issueDelegation } from '../../src/pki/delegation-certificates.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { type Policy, parsePermissions } from '../../src/pki/policy-extension.ts';
import { possessionFor, registerChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { generateStoreKey } from '../../src/server/store-key.ts';
import type { CertificateRecord, Store } from '../../src/store/store.ts';
import { refusal } from '../support/refusals.ts';
import { callerFromDer, callerFromPem, HOUR, TestClock } from './helpers.ts';

const TD = 'workloads.test';

/** A store for one test and how to dispose of it. */
export interface OpenedStore {
  readonly store: Store;
  close(): Promise<void>;
}

interface Node {
  readonly caller: Caller;
  readonly id: string;
}

interface World {
  readonly authority: Authority;
  readonly store: Store;
  readonly clock: TestClock;
  readonly admin: Caller;
  readonly nodeA: Node;
  readonly nodeB: Node;
  readonly alice: { readonly certificate: Buffer; readonly chain: readonly Buffer[] };
  readonly carol: { readonly der: Buffer; readonly key: KeyObject; readonly notAfter: Date };
  /** Carol's identity leaf and the chain she presents (her delegation, Alice's, the intermediate). */
  readonly carolLeaf: Buffer;
  readonly carolChain: readonly Buffer[];
  /** Node `node` asks for an identity of `name` in Carol's subtree with a fresh key. */
  ask(
    node: Node,
    name: string,
    more?: Partial<WorkloadIdentityRequest>,
  ): ReturnType<Authority['issueWorkloadIdentity']>;
  /** Every workload identity the store records, oldest first. */
  identities(): Promise<CertificateRecord[]>;
  /** Another authority context on the same store (as another start of this replica would build). */
  context(): Promise<AuthorityContext>;
}

function limits(issuancePerHour: number): NonNullable<Policy['limits']> {
  return { workloads: 4, cpus: [0, 1], memoryMiB: 4096, blockMiB: 0, bridges: [], issuancePerHour };
}

async function openWorld(
  opened: OpenedStore,
  options: { carolIssuancePerHour?: number; carolTtlMs?: number } = {},
): Promise<World> {
  const { store } = opened;
  const clock = new TestClock();
  const authorityOptions = {
    store,
    replicaId: 'r1',
    storeKey: generateStoreKey(),
    trustDomain: TD,
    serverAddresses: ['127.0.0.1:7443'],
    now: clock.now,
    timers: false,
    onWarning: () => {},
  };
  const { authority, bootstrapped } = await Authority.open(authorityOptions);
  assert.ok(bootstrapped);
  const admin = callerFromPem(bootstrapped.adminCertificatePem, authority);

  async function enrol(name: string): Promise<Node> {
    const token = parseJoinToken((await authority.createToken(admin, { autoApprove: true, name })).token);
    const key = generateKeyPair('p256');
    const registered = await authority.register({
      tokenId: token.id,
      tokenSecret: token.secret,
      possession: possessionFor(key.privateKey, registerChallenge(token.id, token.secret)),
      name,
    });
    assert.ok(registered.certificate, `node ${name} is up`);
    const caller = callerFromDer(registered.certificate.certificate, authority);
    assert.equal(caller.role, 'node');
    return { caller, id: caller.name ?? '' };
  }
  const nodeA = await enrol('node-a');
  const nodeB = await enrol('node-b');

  const aliceKey = generateKeyPair('p256');
  const alicePolicy: Policy = {
    version: 1,
    permissions: parsePermissions('info,create,destroy,delegate,issue,revoke'),
    limits: limits(100),
  };
  const alice = await authority.createDelegation(admin, {
    name: 'alice',
    policy: alicePolicy,
    possession: possessionFor(aliceKey.privateKey, signChallenge(admin.fingerprint, clock.now())),
    command: false,
  });
  const carolKey = generateKeyPair('p256');
  const carol = issueDelegation({
    parent: {
      issuer: Issuer.fromCertificate(alice.certificate, aliceKey.privateKey),
      certificateDer: alice.certificate,
      policy: alicePolicy,
    },
    trustDomain: TD,
    policyOid: authority.policyOid,
    publicKey: carolKey.publicKey,
    name: 'carol',
    policy: {
      version: 1,
      permissions: parsePermissions('info,create,destroy'),
      limits: limits(options.carolIssuancePerHour ?? 50),
    },
    now: clock.now(),
    ...(options.carolTtlMs ? { ttlMs: options.carolTtlMs } : {}),
  });
  const carolLeaf = issueDelegateLeaf({
    parent: { issuer: Issuer.fromCertificate(carol.der, carolKey.privateKey), certificateDer: carol.der },
    trustDomain: TD,
    policyOid: authority.policyOid,
    publicKey: generateKeyPair('p256').publicKey,
    now: clock.now(),
  });
  const carolChain = [carol.der, alice.certificate, ...alice.chain];

  // Node A runs Carol's "web"; node B runs Carol's "db".
  const reserve = (node: Node, name: string) =>
    authority.reserveWorkload(node.caller, {
      leaf: carolLeaf.der,
      chain: carolChain,
      name,
      workloads: 1,
      cpus: [0],
      memoryMiB: 256,
      blockMiB: 0,
    });
  assert.equal((await reserve(nodeA, 'web')).subtree, '/alice/carol');
  assert.equal((await reserve(nodeB, 'db')).subtree, '/alice/carol');

  return {
    authority,
    store,
    clock,
    admin,
    nodeA,
    nodeB,
    alice,
    carol: { der: carol.der, key: carolKey.privateKey, notAfter: carol.notAfter },
    carolLeaf: carolLeaf.der,
    carolChain,
    ask(node, name, more = {}) {
      const key = generateKeyPair('p256');
      return authority.issueWorkloadIdentity(node.caller, {
        subtree: '/alice/carol',
        name,
        possession: possessionFor(key.privateKey, signChallenge(node.caller.fingerprint, clock.now())),
        ...more,
      });
    },
    async context() {
      const started = await startUp({
        ...authorityOptions,
        now: clock.now(),
        intermediateTtlMs: INTERMEDIATE_TTL_MS,
      });
      return createAuthorityContext(authorityOptions, started);
    },
    async identities() {
      const page = await store.listCertificates({ profile: 'workload', pageSize: 1000 });
      return [...page.items].sort((a, b) => a.issuedAt.getTime() - b.issuedAt.getTime());
    },
  };
}

const fingerprintOf = (der: Buffer): string => createHash('sha256').update(der).digest('hex');

/** The notAfter of a certificate issued at `now` for `ttlMs` (the issuer keeps whole seconds). */
const notAfterFor = (now: Date, ttlMs: number): number => Math.floor((now.getTime() + ttlMs) / 1000) * 1000;

/** The workload identity tests on stores `open` makes (one per test). */
export function workloadIdentitySuite(
  backend: string,
  open: () => Promise<OpenedStore>,
  skip?: string,
): void {
  describe(`workload identity (${backend})`, { skip }, () => {
    async function withWorld(
      t: { after: (fn: () => Promise<void>) => void },
      options: Parameters<typeof openWorld>[1] = {},
    ): Promise<World> {
      const opened = await open();
      let world: World | undefined;
      t.after(async () => {
        await world?.authority.close();
        await opened.close();
      });
      world = await openWorld(opened, options);
      return world;
    }

    test("a node gets its workload's identity: Carol's subtree, signed by the replica's intermediate, 1 h, recorded and counted", async (t) => {
      const world = await withWorld(t);
      const carolGrant = await world.authority.admitDelegate(world.carolLeaf, world.carolChain);
      const before = (await world.authority.delegationStatus(carolGrant)).issuedLastHour;

      const issued = await world.ask(world.nodeA, 'web');
      assert.equal(issued.spiffeId, `spiffe://carol.alice.d.${TD}/workload/web`);
      assert.equal(issued.owner, `spiffe://carol.alice.d.${TD}`);
      assert.equal(issued.subtree, '/alice/carol');
      const certificate = new X509Certificate(issued.certificate);
      assert.equal(certificate.ca, false);
      assert.equal(certificate.subjectAltName, `URI:${issued.spiffeId}`);
      const intermediate = new X509Certificate(issued.chain[0]);
      assert.ok(certificate.checkIssued(intermediate) && certificate.verify(intermediate.publicKey));
      assert.deepEqual(world.authority.trustBundle().intermediates, [issued.chain[0]]);
      assert.equal(issued.notAfter.getTime(), notAfterFor(world.clock.now(), HOUR), 'the default lifetime');

      // A deployment-issued leaf named in Carol's subtree is no admin, node or replica.
      const asCaller = callerFromDer(issued.certificate, world.authority);
      assert.deepEqual([asCaller.role, asCaller.name], ['other', null]);

      // Recorded: in ListCertificates, and as a certificate of Carol's subtree.
      const listed = await world.authority.listCertificates(world.admin, { profile: 'workload' });
      assert.deepEqual(
        listed.items.map((item) => [item.serial, item.requester]),
        [[issued.serial, world.nodeA.id]],
      );
      const record = await world.store.getDelegation(fingerprintOf(issued.certificate));
      assert.equal(record?.subtree, '/alice/carol//workload/web');
      assert.equal(record?.parentFingerprint, fingerprintOf(world.carol.der));
      assert.equal((await world.authority.delegationStatus(carolGrant)).issuedLastHour, before + 1);
    });

    test('a CSR is a proof of possession too, and the lifetime asked for is given up to 24 hours', async (t) => {
      const world = await withWorld(t);
      const key = generateKeyPair('p256');
      const issued = await world.ask(world.nodeA, 'web', {
        possession: undefined,
        csr: createCsr(key.privateKey, {}),
        ttlSeconds: 6 * 3600,
      });
      assert.ok(new X509Certificate(issued.certificate).publicKey.equals(key.publicKey));
      assert.equal(issued.notAfter.getTime(), notAfterFor(world.clock.now(), 6 * HOUR));
      await assert.rejects(
        world.ask(world.nodeA, 'web', { ttlSeconds: 24 * 3600 + 1 }),
        refusal('invalid_argument', /ttl_seconds must be at most 86400/),
      );
      assert.equal((await world.identities()).length, 1, 'nothing issued for the refused lifetime');
    });

    test("an identity never outlives the owner's delegation chain", async (t) => {
      const world = await withWorld(t, { carolTtlMs: 2 * HOUR });
      const issued = await world.ask(world.nodeA, 'web', { ttlSeconds: 24 * 3600 });
      assert.ok(issued.notAfter.getTime() <= world.carol.notAfter.getTime());
      assert.ok(issued.notAfter.getTime() > world.carol.notAfter.getTime() - 60_000);
    });

    test('rotation is asking again: a workload keeps its two newest identities, older ones are superseded', async (t) => {
      const world = await withWorld(t);
      const first = await world.ask(world.nodeA, 'web');
      world.clock.advance(60_000);
      const second = await world.ask(world.nodeA, 'web');
      world.clock.advance(60_000);
      const third = await world.ask(world.nodeA, 'web');
      const records = await world.identities();
      assert.deepEqual(
        records.map((record) => [record.serial, record.revocationReason]),
        [
          [first.serial, 'superseded'],
          [second.serial, null],
          [third.serial, null],
        ],
      );
      assert.ok(world.authority.revokedSerials().includes(first.serial));
    });

    test("refused: a workload identity forwarded as a caller reserves nothing in its owner's name", async (t) => {
      const world = await withWorld(t);
      const web = await world.ask(world.nodeA, 'web');
      await assert.rejects(
        world.authority.reserveWorkload(world.nodeA.caller, {
          leaf: web.certificate,
          chain: web.chain,
          name: 'spawned',
          workloads: 1,
          cpus: [0],
          memoryMiB: 64,
          blockMiB: 0,
        }),
        refusal('permission_denied'),
      );
      assert.deepEqual(
        (await world.authority.listWorkloadReservations(world.nodeA.caller)).map((held) => held.name),
        ['web'],
      );
    });

    test('refused: a node asks for a workload it does not hold', async (t) => {
      const world = await withWorld(t);
      await assert.rejects(
        world.ask(world.nodeA, 'cache'),
        refusal('permission_denied', /holds no workload cache in \/alice\/carol/),
      );
      await assert.rejects(
        world.ask(world.nodeA, 'web', { subtree: '/alice' }),
        refusal('permission_denied', /holds no workload web in \/alice/),
      );
      assert.deepEqual(await world.identities(), []);
    });

    test("refused: node B asks for node A's workload", async (t) => {
      const world = await withWorld(t);
      await assert.rejects(
        world.ask(world.nodeB, 'web'),
        refusal('permission_denied', new RegExp(`node ${world.nodeB.id} holds no workload web`)),
      );
      assert.deepEqual(await world.identities(), []);
    });

    test('refused: a delegate, an admin or a proof made for another caller', async (t) => {
      const world = await withWorld(t);
      const key = generateKeyPair('p256');
      const request = (caller: Caller): WorkloadIdentityRequest => ({
        subtree: '/alice/carol',
        name: 'web',
        possession: possessionFor(key.privateKey, signChallenge(caller.fingerprint, world.clock.now())),
      });
      const carol = callerFrom(
        {
          spiffeId: `spiffe://carol.alice.d.${TD}`,
          serial: '1',
          fingerprint: fingerprintOf(world.carolLeaf),
          issuedByDeployment: false,
          delegateKey: '/alice/carol',
        },
        TD,
      );
      assert.equal(carol.role, 'delegate');
      for (const caller of [carol, world.admin]) {
        await assert.rejects(
          world.authority.issueWorkloadIdentity(caller, request(caller)),
          refusal('permission_denied', /only a node may ask for workload identities/),
        );
      }
      // Node A's own request, but with node B's proof: the key was proven to someone else.
      await assert.rejects(
        world.authority.issueWorkloadIdentity(world.nodeA.caller, request(world.nodeB.caller)),
        refusal('unauthenticated'),
      );
      assert.deepEqual(await world.identities(), []);
    });

    test("refused: the owner's delegation is revoked", async (t) => {
      const world = await withWorld(t);
      await world.authority.revokeDelegated(world.admin, null, {
        certificate: world.carol.der,
        chain: [world.alice.certificate, ...world.alice.chain],
        reason: 'keyCompromise',
      });
      await assert.rejects(world.ask(world.nodeA, 'web'), refusal('permission_denied'));
      assert.deepEqual(await world.identities(), []);
    });

    test("revoking the owner's delegation revokes the identities already issued beneath it (privilegeWithdrawn)", async (t) => {
      const world = await withWorld(t);
      const web = await world.ask(world.nodeA, 'web');
      const db = await world.ask(world.nodeB, 'db');
      const carol = fingerprintOf(world.carol.der);
      const context = await world.context();
      assert.deepEqual(
        await revokeWorkloadIdentitiesBeneath(context, carol, 'test'),
        [],
        'not revoked yet: nothing',
      );
      await world.authority.revokeDelegated(world.admin, null, {
        certificate: world.carol.der,
        chain: [world.alice.certificate, ...world.alice.chain],
        reason: 'keyCompromise',
      });
      // A workload identity's own record is a leaf: revoking one ends no subtree.
      assert.deepEqual(
        await revokeWorkloadIdentitiesBeneath(context, fingerprintOf(web.certificate), 'test'),
        [],
      );
      // revokeDelegated ran it already (delegation-requests.ts releaseReservations): both are revoked.
      const identities = await world.identities();
      assert.deepEqual(identities.map((record) => record.serial).sort(), [web.serial, db.serial].sort());
      for (const record of identities) assert.notEqual(record.revokedAt, null);
      for (const record of await world.identities())
        assert.equal(record.revocationReason, 'privilegeWithdrawn');
      assert.deepEqual(
        await revokeWorkloadIdentitiesBeneath(context, carol, 'test'),
        [],
        'repeating it is safe',
      );
    });

    test("refused: a delegation above the owner is revoked while the owner's reservation is still held", async (t) => {
      const world = await withWorld(t);
      // As the record another replica wrote before its release of the subtree's reservations ran.
      await world.store.revokeDelegation(
        fingerprintOf(world.alice.certificate),
        'keyCompromise',
        world.clock.now(),
        'test',
      );
      assert.equal((await world.authority.listWorkloadReservations(world.nodeA.caller)).length, 1);
      await assert.rejects(
        world.ask(world.nodeA, 'web'),
        refusal(
          'permission_denied',
          new RegExp(`the delegation chain of spiffe://carol.alice.d.${TD} is revoked or expired`),
        ),
      );
      assert.deepEqual(await world.identities(), []);
    });

    test('refused: over issuancePerHour is RESOURCE_EXHAUSTED and issues nothing', async (t) => {
      // Carol's own leaf, recorded when node A forwarded it, is one of her 3 this hour.
      const world = await withWorld(t, { carolIssuancePerHour: 3 });
      await world.ask(world.nodeA, 'web');
      await world.ask(world.nodeB, 'db');
      const issued = (await world.identities()).map((record) => record.serial);
      assert.equal(issued.length, 2);
      await assert.rejects(
        world.ask(world.nodeA, 'web'),
        refusal(
          'resource_exhausted',
          new RegExp(`the delegation spiffe://carol.alice.d.${TD} allows 3 new certificates an hour`),
        ),
      );
      assert.deepEqual(
        (await world.identities()).map((record) => record.serial),
        issued,
      );
      // An hour later the subtree may issue again.
      world.clock.advance(HOUR + 1000);
      await world.ask(world.nodeA, 'web');
      assert.equal((await world.identities()).length, 3);
    });

    test('refused: an admin-owned workload (nothing held in any subtree) gets no identity', async (t) => {
      const world = await withWorld(t);
      const placed = await world.authority.reserveWorkload(world.nodeA.caller, {
        leaf: Buffer.alloc(0),
        chain: [],
        name: 'ops',
        workloads: 1,
        cpus: [0],
        memoryMiB: 64,
        blockMiB: 0,
      });
      assert.deepEqual([placed.holder, placed.subtree], ['', '']);
      await assert.rejects(
        world.ask(world.nodeA, 'ops', { subtree: '' }),
        refusal('invalid_argument', /subtree must be a subtree key/),
      );
      assert.deepEqual(await world.identities(), []);
    });

    test("after ReleaseWorkload the workload's identities are revoked (cessationOfOperation), others are not", async (t) => {
      const world = await withWorld(t);
      const web1 = await world.ask(world.nodeA, 'web');
      const web2 = await world.ask(world.nodeA, 'web');
      const db = await world.ask(world.nodeB, 'db');
      assert.equal(await world.authority.releaseWorkload(world.nodeA.caller, '/alice/carol', 'web'), true);
      for (const issued of [web1, web2]) {
        const record = await world.store.getCertificate(issued.serial);
        assert.equal(record?.revocationReason, 'cessationOfOperation');
        const subtreeRecord = await world.store.getDelegation(fingerprintOf(issued.certificate));
        assert.equal(subtreeRecord?.revocationReason, 'cessationOfOperation');
        assert.ok(world.authority.revokedSerials().includes(issued.serial));
      }
      assert.equal(
        (await world.store.getCertificate(db.serial))?.revokedAt,
        null,
        "node B's db keeps its own",
      );
      // And no new one: node A no longer holds web.
      await assert.rejects(
        world.ask(world.nodeA, 'web'),
        refusal('permission_denied', /holds no workload web/),
      );
      assert.equal((await world.identities()).length, 3);
    });
  });
}
