// WorkloadPlacement end to end, in process: the real control plane (SQLite),
// real TLS sockets, nodes enrolled through Enrolment, delegates whose chains
// the nodes forward as they saw them. A node reserves for Carol's chain
// against every level of it, two nodes race for Bob's last workload, a node
// sees and releases only its own holders, and every refusal changes nothing.
import assert from 'node:assert/strict';
import { type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  DelegationClient,
  type DelegationStatus,
  type ReserveWorkloadRequest,
  type WorkloadNode,
  WorkloadPlacementClient,
  WorkloadPlacementService,
  type WorkloadReservation,
} from '../../src/gen/sigil/v1/sigil.ts';
import { createLogger } from '../../src/logging.ts';
import { issueDelegateLeaf } from '../../src/pki/delegation-certificates.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { uriName } from '../../src/pki/names.ts';
import { possessionFor, registerChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import type { RunningServer } from '../../src/server/start-server.ts';
import { ALL_METHODS, sigilAuthorizationRules } from '../../src/services/authorization-rules.ts';
import { AuthorizationPolicy } from '../../src/transport/authorization.ts';
import { Delegates, type Held, policy } from '../server/delegation-fixtures.ts';
import {
  adminIdentity,
  anonymousCredentials,
  assertStatus,
  type Clients,
  call,
  clients,
  credentialsFor,
  identityOf,
  startTestServer,
} from '../server/helpers.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { sha256 } from '../support/fingerprint.ts';
import { tempDir } from '../support/temp-dir.ts';
import { admittedCarol, peer } from './peer-fixtures.ts';

interface EnrolledNode {
  readonly nodeId: string;
  readonly name: string;
  /** DER of its certificate. */
  readonly certificate: Buffer;
  readonly placement: WorkloadPlacementClient;
}

/** A caller as a node sees it: its leaf, the chain it presented (issuer first) and its key. */
interface ForwardedCaller {
  readonly leaf: Buffer;
  readonly chain: readonly Buffer[];
  readonly key: KeyObject;
}

describe('workload placement through the server', () => {
  const dataDir = join(tempDir(), 'data');
  const logs = new PassThrough();
  let logText = '';
  logs.on('data', (chunk: Buffer) => {
    logText += chunk.toString();
  });
  let running: RunningServer;
  let delegates: Delegates;
  let admin: Clients;
  let anonymous: Clients;
  let adminPlacement: WorkloadPlacementClient;
  const open: grpc.Client[] = [];

  let alice: Held;
  let carol: Held;
  let bob: Held;
  let web1: EnrolledNode;
  let web2: EnrolledNode;

  async function enrolNode(name: string): Promise<EnrolledNode> {
    const created = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: true,
      name,
      replica: false,
    });
    const token = parseJoinToken(created.token);
    const key = generateKeyPair('ed25519');
    const registered = await call(anonymous.enrolment, anonymous.enrolment.register, {
      tokenId: token.id,
      tokenSecret: token.secret,
      possession: possessionFor(key.privateKey, registerChallenge(token.id, token.secret)),
      name,
    });
    assert.ok(registered.certificate, `node ${name} is up`);
    const identity = identityOf(registered.certificate, privateKeyToPem(key.privateKey));
    const placement = new WorkloadPlacementClient(running.address, credentialsFor(dataDir, identity));
    open.push(placement);
    return { nodeId: registered.nodeId, name, certificate: registered.certificate.certificate, placement };
  }

  /** A fresh identity leaf of a held delegation (or the command certificate itself), as a node forwards it. */
  function callerOf(held: Held): ForwardedCaller {
    if (!new X509Certificate(held.ca).ca) return { leaf: held.ca, chain: held.above, key: held.key };
    const keys = generateKeyPair('p256');
    const leaf = issueDelegateLeaf({
      parent: { issuer: Issuer.fromCertificate(held.ca, held.key), certificateDer: held.ca },
      trustDomain: delegates.trustDomain,
      policyOid: delegates.policyOid,
      publicKey: keys.publicKey,
    });
    return { leaf: leaf.der, chain: [held.ca, ...held.above], key: keys.privateKey };
  }

  const reserve = (
    node: EnrolledNode,
    caller: ForwardedCaller | null,
    name: string,
    resources: Partial<Pick<ReserveWorkloadRequest, 'workloads' | 'cpus' | 'memoryMib' | 'blockMib'>> = {},
  ): Promise<WorkloadReservation> =>
    call(node.placement, node.placement.reserveWorkload, {
      leaf: caller?.leaf ?? Buffer.alloc(0),
      chain: [...(caller?.chain ?? [])],
      name,
      workloads: 1,
      cpus: [],
      memoryMib: 256,
      blockMib: 0,
      ...resources,
    });

  const release = (node: EnrolledNode, subtree: string, name: string) =>
    call(node.placement, node.placement.releaseWorkload, { subtree, name });

  const held = async (node: EnrolledNode) =>
    (await call(node.placement, node.placement.listWorkloadReservations, {})).reservations;

  /** Carol's view of her own subtree (what `sigil delegation status` prints). */
  async function statusOf(who: Held): Promise<DelegationStatus> {
    const caller = callerOf(who);
    const client = new DelegationClient(
      running.address,
      delegates.credentials([caller.leaf, ...caller.chain], caller.key),
    );
    open.push(client);
    return call(client, client.getDelegationStatus, {});
  }

  /** A WorkloadPlacement client calling as a delegate. */
  function placementAs(who: Held): WorkloadPlacementClient {
    const caller = callerOf(who);
    const client = new WorkloadPlacementClient(
      running.address,
      delegates.credentials([caller.leaf, ...caller.chain], caller.key),
    );
    open.push(client);
    return client;
  }

  const find = (client: WorkloadPlacementClient, node: string): Promise<WorkloadNode> =>
    call(client, client.findWorkloadNode, { node });

  before(async () => {
    running = await startTestServer({
      dataDir,
      logger: createLogger({ destination: logs, level: 'info' }),
    });
    delegates = new Delegates(
      running.address,
      dataDir,
      running.authority.trustDomain,
      running.authority.policyOid,
    );
    admin = clients(running.address, credentialsFor(dataDir, adminIdentity(dataDir)));
    anonymous = clients(running.address, anonymousCredentials(dataDir));
    adminPlacement = new WorkloadPlacementClient(
      running.address,
      credentialsFor(dataDir, adminIdentity(dataDir)),
    );
    open.push(adminPlacement);
    alice = await delegates.adminDelegates(
      'alice',
      policy('info,create,destroy,delegate,revoke', {
        workloads: 4,
        cpus: [0, 1],
        memoryMiB: 2048,
        blockMiB: 1024,
      }),
    );
    carol = delegates.subDelegate(
      alice,
      'carol',
      policy('info,create,destroy', { workloads: 2, cpus: [0], memoryMiB: 1024, blockMiB: 512 }),
    );
    bob = await delegates.adminDelegates(
      'bob',
      policy('info,create,destroy', { workloads: 1, cpus: [0], memoryMiB: 512 }),
    );
    [web1, web2] = await Promise.all([enrolNode('web-1'), enrolNode('web-2')]);
  });

  after(async () => {
    for (const client of open) client.close();
    admin?.close();
    anonymous?.close();
    delegates?.close();
    await running?.close(0);
  });

  test("a node reserves for Carol's chain: charged to every level, shown in her status, idempotent, listed, released", async () => {
    const carolAtWeb1 = callerOf(carol);
    const placed = await reserve(web1, carolAtWeb1, 'web', { cpus: [0], memoryMib: 256, blockMib: 64 });
    assert.equal(placed.holder, `node/${web1.nodeId}/web`);
    assert.equal(placed.subtree, '/alice/carol');
    assert.equal(placed.existing, false);
    assert.deepEqual(placed.policy?.permissions.slice().sort(), ['create', 'destroy', 'info']);
    assert.equal(placed.policy?.limits?.memoryMib, 1024);

    const usage = (await statusOf(carol)).usage;
    assert.deepEqual(
      { workloads: usage?.workloads, cpus: usage?.cpus, memory: usage?.memoryMib, block: usage?.blockMib },
      { workloads: 1, cpus: [0], memory: 256, block: 64 },
    );
    assert.equal((await statusOf(alice)).usage?.workloads, 1, "Alice's subtree counts Carol's workload");

    // The same name with the same resources (another leaf of Carol's): nothing changes.
    const again = await reserve(web1, callerOf(carol), 'web', { cpus: [0], memoryMib: 256, blockMib: 64 });
    assert.equal(again.existing, true);
    assert.equal((await statusOf(carol)).usage?.workloads, 1);
    // The same name with other resources is refused, and changes nothing.
    assertStatus(
      await failureOf(reserve(web1, carolAtWeb1, 'web', { cpus: [0], memoryMib: 512, blockMib: 64 })),
      grpc.status.ALREADY_EXISTS,
      /workload web already holds a reservation on this node with other resources/,
    );
    assert.equal((await statusOf(carol)).usage?.memoryMib, 256);

    assert.deepEqual(await held(web1), [
      { subtree: '/alice/carol', name: 'web', workloads: 1, cpus: [0], memoryMib: 256, blockMib: 64 },
    ]);
    assert.deepEqual(await held(web2), [], 'web-2 holds nothing');

    assert.equal((await release(web1, '/alice/carol', 'web')).released, true);
    assert.equal((await release(web1, '/alice/carol', 'web')).released, false, 'nothing held any more');
    assert.equal((await statusOf(carol)).usage?.workloads, 0);
    assert.deepEqual(await held(web1), []);
  });

  test("two nodes race for Bob's last workload: exactly one wins, every round", async () => {
    const bobCaller = callerOf(bob);
    for (let round = 0; round < 5; round++) {
      const outcomes = await Promise.allSettled([
        reserve(web1, bobCaller, `app-${round}`),
        reserve(web2, bobCaller, `app-${round}`),
      ]);
      const won = outcomes.flatMap((outcome, index) =>
        outcome.status === 'fulfilled' ? [[web1, web2][index]] : [],
      );
      assert.equal(won.length, 1, `round ${round}: exactly one node wins`);
      const lost = outcomes.find((outcome) => outcome.status === 'rejected');
      assert.ok(lost?.status === 'rejected');
      assertStatus(
        lost.reason as grpc.ServiceError,
        grpc.status.RESOURCE_EXHAUSTED,
        /^reserving this would exceed your delegation's workloads limit \(1 in use of 1\)$/,
      );
      assert.equal((await statusOf(bob)).usage?.workloads, 1);
      assert.equal((await release(won[0], '/bob', `app-${round}`)).released, true);
    }
    assert.equal((await statusOf(bob)).usage?.workloads, 0);
  });

  test("a node cannot release (or list) another node's reservation", async () => {
    await reserve(web1, callerOf(bob), 'db');
    assert.equal((await release(web2, '/bob', 'db')).released, false, "web-2 names web-1's workload");
    assert.deepEqual(await held(web2), []);
    assert.deepEqual(
      (await held(web1)).map((reservation) => reservation.name),
      ['db'],
    );
    assert.equal((await statusOf(bob)).usage?.workloads, 1, 'still charged');
    // Another subtree under web-1's own name releases nothing either.
    assert.equal((await release(web1, '/alice', 'db')).released, false);
    assert.equal((await release(web1, '/bob', 'db')).released, true);
  });

  test('refuses: callers that are not nodes (an admin, a delegate) on the node-only methods', async () => {
    const carolPlacement = placementAs(carol);
    const empty = {
      leaf: Buffer.alloc(0),
      chain: [],
      name: 'web',
      workloads: 1,
      cpus: [],
      memoryMib: 0,
      blockMib: 0,
    };
    const methods = [
      (client: WorkloadPlacementClient) => call(client, client.reserveWorkload, empty),
      (client: WorkloadPlacementClient) =>
        call(client, client.releaseWorkload, { subtree: '/alice/carol', name: 'web' }),
      (client: WorkloadPlacementClient) => call(client, client.listWorkloadReservations, {}),
      (client: WorkloadPlacementClient) =>
        call(client, client.registerWorkloadEndpoint, { address: '127.0.0.1:7543' }),
    ];
    for (const [index, method] of methods.entries()) {
      assertStatus(
        await failureOf(method(adminPlacement)),
        grpc.status.PERMISSION_DENIED,
        /^only a node may .*spiffe:\/\/sigil\.internal\/admin\/admin/,
      );
      const refused = await failureOf(method(carolPlacement), `method ${index} as Carol`);
      assertStatus(
        refused,
        grpc.status.PERMISSION_DENIED,
        /peer delegate spiffe:\/\/carol\.alice\.d\.sigil\.internal is not in allowed SPIFFE ID patterns/,
      );
    }
  });

  test('an admin caller on a node (no leaf, or its deployment-issued leaf) is charged nothing; a node certificate is no caller', async () => {
    const none = await reserve(web1, null, 'tools');
    assert.deepEqual(
      { holder: none.holder, subtree: none.subtree, existing: none.existing, policy: none.policy },
      { holder: '', subtree: '', existing: false, policy: undefined },
    );
    const adminLeaf = new X509Certificate(readFileSync(join(dataDir, 'admin.pem'))).raw;
    const withLeaf = await reserve(
      web1,
      { leaf: adminLeaf, chain: [], key: generateKeyPair('p256').privateKey },
      'tools',
    );
    assert.equal(withLeaf.subtree, '');
    assert.deepEqual(await held(web1), [], 'nothing is held for an admin');
    assertStatus(
      await failureOf(
        reserve(
          web1,
          { leaf: web2.certificate, chain: [], key: generateKeyPair('p256').privateKey },
          'tools',
        ),
      ),
      grpc.status.PERMISSION_DENIED,
      /only an admin or a delegation may run workloads \(caller spiffe:\/\/sigil\.internal\/node\//,
    );
  });

  test('refuses: a revoked chain (and its reservations are gone with it)', async () => {
    const dan = delegates.subDelegate(
      alice,
      'dan',
      policy('info,create,destroy', { workloads: 1, cpus: [1], memoryMiB: 256 }),
    );
    const danCaller = callerOf(dan);
    await reserve(web2, danCaller, 'cache', { memoryMib: 128 });
    assert.deepEqual(
      (await held(web2)).map((r) => `${r.subtree} ${r.name}`),
      ['/alice/dan cache'],
    );
    await call(admin.delegation, admin.delegation.revokeDelegated, {
      certificate: dan.ca,
      chain: [alice.ca, ...alice.above],
      reason: 'superseded',
    });
    assertStatus(
      await failureOf(reserve(web2, callerOf(dan), 'cache2', { memoryMib: 128 })),
      grpc.status.PERMISSION_DENIED,
      /a certificate in the chain has been revoked/,
    );
    assert.deepEqual(await held(web2), [], 'revoking Dan released what web-2 held for him');
  });

  test('refuses: a chain without "create", and a command certificate (without "create", or with it but holding no resources)', async () => {
    const erin = delegates.subDelegate(
      alice,
      'erin',
      policy('info,destroy', { workloads: 1, cpus: [0], memoryMiB: 256 }),
    );
    assertStatus(
      await failureOf(reserve(web1, callerOf(erin), 'web')),
      grpc.status.PERMISSION_DENIED,
      /^this delegation lacks the "create" permission$/,
    );
    const readOnly = await delegates.adminDelegates('ops-read', policy('info', null), true);
    assertStatus(
      await failureOf(reserve(web1, callerOf(readOnly), 'web')),
      grpc.status.PERMISSION_DENIED,
      /lacks the "create" permission/,
    );
    const creator = await delegates.adminDelegates('ops-create', policy('info,create', null), true);
    assertStatus(
      await failureOf(reserve(web1, callerOf(creator), 'web')),
      grpc.status.PERMISSION_DENIED,
      /holds no resources \(a command certificate\)/,
    );
    assert.deepEqual(await held(web1), []);
  });

  test('refuses: a garbage leaf, a CA as the leaf, a leaf from elsewhere, a forged chain that escalates', async () => {
    assertStatus(
      await failureOf(
        reserve(
          web1,
          { leaf: Buffer.from('not a certificate'), chain: [], key: generateKeyPair('p256').privateKey },
          'web',
        ),
      ),
      grpc.status.INVALID_ARGUMENT,
      /^leaf: not a DER certificate$/,
    );
    assertStatus(
      await failureOf(
        reserve(web1, { leaf: carol.ca, chain: [alice.ca, ...alice.above], key: carol.key }, 'web'),
      ),
      grpc.status.PERMISSION_DENIED,
      /^the caller certificate is a CA, not a client certificate$/,
    );
    const elsewhere = generateKeyPair('p256');
    const root = createRootCertificate({
      privateKey: elsewhere.privateKey,
      subject: { commonName: 'elsewhere' },
    });
    const stranger = generateKeyPair('p256');
    const strangerLeaf = Issuer.fromCertificate(root.der, elsewhere.privateKey).issue({
      publicKey: stranger.publicKey,
      profile: 'client',
      subject: { commonName: 'stranger' },
      sans: [uriName(`spiffe://${delegates.trustDomain}/admin/admin`)],
      ttlMs: 3_600_000,
    });
    assertStatus(
      await failureOf(
        reserve(web1, { leaf: strangerLeaf.der, chain: [root.der], key: stranger.privateKey }, 'web'),
      ),
      grpc.status.PERMISSION_DENIED,
      /does not lead to this control plane's CAs/,
    );
    const forged = delegates.forge(
      alice,
      ['alice', 'mallory'],
      delegates.id(['alice', 'mallory']),
      policy('info,create', { workloads: 100, cpus: [0, 1, 2], memoryMiB: 1 << 20 }),
    );
    assertStatus(
      await failureOf(reserve(web1, callerOf(forged), 'web')),
      grpc.status.PERMISSION_DENIED,
      /"CN=forged alice\/mallory" escalates .*workloads 100 exceeds the parent's 4/,
    );
    assert.deepEqual(await held(web1), []);
    assert.equal((await statusOf(alice)).usage?.workloads, 0);
  });

  test("refuses: a CPU outside the policy, memory over it (naming the limit; figures only for the caller's own level), a bad name", async () => {
    const carolCaller = callerOf(carol);
    assertStatus(
      await failureOf(reserve(web1, carolCaller, 'web', { cpus: [1] })),
      grpc.status.PERMISSION_DENIED,
      /^cpu 1 is not among the cpus this delegation may use$/,
    );
    assertStatus(
      await failureOf(reserve(web1, carolCaller, 'web', { memoryMib: 1025 })),
      grpc.status.RESOURCE_EXHAUSTED,
      /^reserving this would exceed your delegation's memoryMiB limit \(0 in use of 1024\)$/,
    );
    assertStatus(
      await failureOf(reserve(web1, carolCaller, 'web', { memoryMib: 4096 })),
      grpc.status.RESOURCE_EXHAUSTED,
      /^reserving this would exceed the memoryMiB limit of a delegation above yours$/,
    );
    for (const name of ['Web', 'web_1', '-web', '../web', 'a'.repeat(64)]) {
      assertStatus(
        await failureOf(reserve(web1, carolCaller, name)),
        grpc.status.INVALID_ARGUMENT,
        /workload name .* must be 1 to 63 lower-case letters/,
      );
    }
    assert.deepEqual(await held(web1), []);
    assert.equal((await statusOf(carol)).usage?.workloads, 0);
  });

  test("a node gets its workload's identity over gRPC; the workload reaches nothing on the control plane; releasing revokes it", async () => {
    const placed = await reserve(web1, callerOf(carol), 'svc', { cpus: [0], memoryMib: 64 });
    const key = generateKeyPair('p256');
    const ask = (node: EnrolledNode, client = node.placement) =>
      call(client, client.issueWorkloadIdentity, {
        subtree: placed.subtree,
        name: 'svc',
        key: {
          $case: 'possession',
          value: possessionFor(key.privateKey, signChallenge(sha256(node.certificate))),
        },
        ttlSeconds: 0,
      });
    const issued = await ask(web1);
    assert.ok(issued.certificate);
    assert.equal(issued.certificate.spiffeId, `spiffe://carol.alice.d.${delegates.trustDomain}/workload/svc`);
    assert.equal(issued.ownerSpiffeId, `spiffe://carol.alice.d.${delegates.trustDomain}`);
    assert.equal(issued.subtree, '/alice/carol');

    // Refused: node web-2 asks for web-1's workload; Carol herself asks.
    assertStatus(await failureOf(ask(web2)), grpc.status.PERMISSION_DENIED, /holds no workload svc/);
    assertStatus(await failureOf(ask(web1, placementAs(carol))), grpc.status.PERMISSION_DENIED);

    // The workload calls the control plane as itself: no method admits it.
    const asWorkload = new WorkloadPlacementClient(
      running.address,
      credentialsFor(dataDir, identityOf(issued.certificate, privateKeyToPem(key.privateKey))),
    );
    open.push(asWorkload);
    for (const attempt of [
      ask(web1, asWorkload),
      find(asWorkload, 'web-1'),
      held({ ...web1, placement: asWorkload }),
    ]) {
      assertStatus(
        await failureOf(attempt),
        grpc.status.PERMISSION_DENIED,
        /a workload of spiffe:\/\/carol\.alice/,
      );
    }

    const listed = async () =>
      (
        await call(admin.ca, admin.ca.listCertificates, {
          pageSize: 0,
          pageToken: '',
          requester: web1.nodeId,
          profile: 'workload',
          revoked: '',
        })
      ).certificates.map((summary) => [summary.serial, summary.revocationReason]);
    assert.deepEqual(await listed(), [[issued.certificate.serial, '']]);
    assert.equal((await release(web1, '/alice/carol', 'svc')).released, true);
    assert.deepEqual(await listed(), [[issued.certificate.serial, 'cessationOfOperation']]);
  });

  test('a node registers its endpoint; anyone authenticated finds it by name or ID; "" withdraws', async () => {
    const registered = await call(web1.placement, web1.placement.registerWorkloadEndpoint, {
      address: '127.0.0.1:7543',
    });
    const expected = {
      nodeId: web1.nodeId,
      name: 'web-1',
      address: '127.0.0.1:7543',
      spiffeId: `spiffe://sigil.internal/node/${web1.nodeId}`,
    };
    assert.deepEqual(registered, expected);
    assert.deepEqual(await find(adminPlacement, 'web-1'), expected);
    assert.deepEqual(await find(adminPlacement, web1.nodeId), expected);
    assert.deepEqual(await find(web2.placement, 'web-1'), expected, 'another node finds it');
    assert.deepEqual(await find(placementAs(carol), 'web-1'), expected, 'a delegate finds it');
    const command = await delegates.adminDelegates('ops-find', policy('info', null), true);
    assert.deepEqual(
      await find(placementAs(command), web1.nodeId),
      expected,
      'a command certificate finds it',
    );

    await call(web1.placement, web1.placement.registerWorkloadEndpoint, { address: '[::1]:7600' });
    assert.equal((await find(adminPlacement, 'web-1')).address, '[::1]:7600');
    await call(web1.placement, web1.placement.registerWorkloadEndpoint, { address: '' });
    assertStatus(
      await failureOf(find(adminPlacement, 'web-1')),
      grpc.status.FAILED_PRECONDITION,
      /^node web-1 serves no workloads \(start it with sigil agent --workloads\)$/,
    );
    assertStatus(
      await failureOf(find(adminPlacement, 'web-2')),
      grpc.status.FAILED_PRECONDITION,
      /serves no workloads/,
    );
  });

  test('refuses: a malformed address, and changes nothing', async () => {
    await call(web2.placement, web2.placement.registerWorkloadEndpoint, { address: 'web-2.example:7543' });
    for (const address of [
      'web-2',
      'web-2:0',
      'web-2:65536',
      'web 2:7543',
      '::1:7543',
      'http://web-2:7543',
    ]) {
      assertStatus(
        await failureOf(call(web2.placement, web2.placement.registerWorkloadEndpoint, { address })),
        grpc.status.INVALID_ARGUMENT,
        /^address .* must be host:port/,
      );
    }
    assert.equal((await find(adminPlacement, web2.nodeId)).address, 'web-2.example:7543');
    await call(web2.placement, web2.placement.registerWorkloadEndpoint, { address: '' });
  });

  test('FindWorkloadNode: an unknown node and a revoked one are NOT_FOUND alike', async () => {
    assertStatus(
      await failureOf(find(adminPlacement, 'no-such-node')),
      grpc.status.NOT_FOUND,
      /^no node "no-such-node"$/,
    );
    assertStatus(await failureOf(find(adminPlacement, `n${'0'.repeat(32)}`)), grpc.status.NOT_FOUND);
    const gone = await enrolNode('gone-1');
    await call(gone.placement, gone.placement.registerWorkloadEndpoint, { address: '127.0.0.1:7700' });
    assert.equal((await find(adminPlacement, 'gone-1')).nodeId, gone.nodeId);
    await call(admin.admin, admin.admin.revokeNode, { id: gone.nodeId, reason: '' });
    assertStatus(
      await failureOf(find(adminPlacement, 'gone-1')),
      grpc.status.NOT_FOUND,
      /^no node "gone-1"$/,
    );
    assertStatus(await failureOf(find(adminPlacement, gone.nodeId)), grpc.status.NOT_FOUND);
  });

  test('every reservation and release is in the audit log, by the caller, with the node and holder', async () => {
    await reserve(web2, callerOf(carol), 'audited');
    assert.equal((await release(web2, '/alice/carol', 'audited')).released, true);
    const lines = await eventually('the audit lines', () => {
      const parsed = logText
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.holder === `node/${web2.nodeId}/audited`);
      return parsed.length === 2 && parsed;
    });
    assert.deepEqual(
      lines.map((line) => [line.audit, line.by, line.nodeId, line.subtree]),
      [
        ['workload.reserved', delegates.id(['alice', 'carol']), web2.nodeId, '/alice/carol'],
        ['workload.released', `spiffe://sigil.internal/node/${web2.nodeId}`, web2.nodeId, '/alice/carol'],
      ],
    );
  });
});

describe('WorkloadPlacement in the authorization table', () => {
  const table = new AuthorizationPolicy(sigilAuthorizationRules('example.test'));
  const nodeOnly = [
    WorkloadPlacementService.reserveWorkload.path,
    WorkloadPlacementService.releaseWorkload.path,
    WorkloadPlacementService.listWorkloadReservations.path,
    WorkloadPlacementService.registerWorkloadEndpoint.path,
    WorkloadPlacementService.issueWorkloadIdentity.path,
  ];
  const findNode = WorkloadPlacementService.findWorkloadNode.path;

  test('every method has a rule and is in ALL_METHODS', () => {
    for (const method of [...nodeOnly, findNode]) {
      assert.ok(ALL_METHODS.includes(method), method);
      assert.notEqual(table.ruleFor(method), null, method);
    }
  });

  test('the node-only methods: nodes (and admins, whom the authority then refuses); never a delegate or anyone else', () => {
    for (const method of nodeOnly) {
      assert.equal(table.decide(method, peer('spiffe://example.test/node/n1')).allowed, true, method);
      assert.equal(table.decide(method, peer('spiffe://example.test/admin/root')).allowed, true, method);
      for (const other of [
        peer('spiffe://example.test/client/bob'),
        peer('spiffe://example.test/replica/r1'),
        peer('spiffe://other.test/node/n1'),
        peer('spiffe://example.test/node/n1', 'delegated'),
        admittedCarol(),
        admittedCarol('spiffe://example.test/node/n1'),
        peer(null),
      ]) {
        const decision = table.decide(method, other);
        assert.equal(decision.allowed, false, `${method} ${other.spiffeId}`);
      }
    }
  });

  test('FindWorkloadNode: any deployment peer of the trust domain and admitted delegates', () => {
    for (const allowed of [
      peer('spiffe://example.test/node/n1'),
      peer('spiffe://example.test/admin/root'),
      peer('spiffe://example.test/client/bob'),
      admittedCarol(),
    ])
      assert.equal(table.decide(findNode, allowed).allowed, true, String(allowed.spiffeId));
    for (const refused of [
      peer('spiffe://other.test/admin/eve'),
      peer(null),
      peer('spiffe://example.test/x', 'delegated'),
    ])
      assert.equal(table.decide(findNode, refused).allowed, false, String(refused.spiffeId));
  });
});
