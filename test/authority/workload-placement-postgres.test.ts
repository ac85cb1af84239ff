// Workload placement across two replicas on one real PostgreSQL: a node on
// each replica races for Alice's last workload and exactly one wins, every
// round; what one replica records (reservations, a node's endpoint) the other
// reads. Skips, saying why, without PostgreSQL (fails instead under SIGIL_CI=1).
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Authority } from '../../src/authority/authority.ts';
import type { Caller } from '../../src/authority/identities.ts';
import { issueDelegateLeaf } from '../../src/pki/delegation-certificates.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { parsePermissions } from '../../src/pki/policy-extension.ts';
import {
  possessionFor,
  registerChallenge,
  replicaChallenge,
  signChallenge,
} from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { generateStoreKey } from '../../src/server/store-key.ts';
import { openPostgresStore } from '../../src/store/postgres.ts';
import type { Store } from '../../src/store/store.ts';
import { eventually } from '../support/eventually.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { callerFromDer, callerFromPem, TestClock } from './helpers.ts';

const skip = postgresUnavailable() ?? undefined;

describe('workload placement on two PostgreSQL replicas', { skip }, () => {
  let pg: TestPostgres;
  const stores: Store[] = [];
  const authorities: Authority[] = [];
  before(async () => {
    pg = await startPostgres();
  });
  after(async () => {
    for (const authority of authorities) await authority.close();
    for (const store of stores) await store.close();
    await pg?.stop();
  });

  async function storeFor(url: string): Promise<Store> {
    const store = await openPostgresStore(url);
    stores.push(store);
    await store.migrate();
    return store;
  }

  it("nodes on two replicas race for Alice's last workload: exactly one wins; each replica sees the other's records", async () => {
    const url = await pg.createDatabase();
    const clock = new TestClock();
    const common = { trustDomain: 'pg.test', now: clock.now, timers: false, storeKind: 'postgres' };
    const first = await Authority.open({
      ...common,
      onWarning: () => {},
      store: await storeFor(url),
      replicaId: 'r1',
      storeKey: generateStoreKey(),
      serverAddresses: ['127.0.0.1:7443'],
    });
    authorities.push(first.authority);
    const r1 = first.authority;
    assert.ok(first.bootstrapped);
    const admin: Caller = callerFromPem(first.bootstrapped.adminCertificatePem, r1);
    const joinToken = parseJoinToken((await r1.createToken(admin, { replica: true })).token);
    const replicaKey = generateKeyPair('p256');
    const joined = await r1.joinReplica({
      tokenId: joinToken.id,
      tokenSecret: joinToken.secret,
      replicaId: 'r2',
      possession: possessionFor(
        replicaKey.privateKey,
        replicaChallenge(joinToken.id, joinToken.secret, 'r2'),
      ),
    });
    const second = await Authority.open({
      ...common,
      onWarning: () => {},
      store: await storeFor(url),
      replicaId: 'r2',
      storeKey: generateStoreKey(),
      serverAddresses: ['127.0.0.1:7444'],
      join: { intermediate: joined.intermediate.certificate, privateKey: replicaKey.privateKey },
    });
    authorities.push(second.authority);
    const r2 = second.authority;
    await eventually('r1 to see the r2 intermediate', () => r1.trustBundle().intermediates.length === 2);

    // One node enrolled through each replica.
    async function enrolNode(on: Authority, name: string): Promise<Caller> {
      const token = parseJoinToken((await on.createToken(admin, { autoApprove: true, name })).token);
      const key = generateKeyPair('p256');
      const registered = await on.register({
        tokenId: token.id,
        tokenSecret: token.secret,
        possession: possessionFor(key.privateKey, registerChallenge(token.id, token.secret)),
        name,
      });
      assert.ok(registered.certificate, `node ${name} is up`);
      return callerFromDer(registered.certificate.certificate, on);
    }
    const node1 = await enrolNode(r1, 'web-1');
    const node2 = await enrolNode(r2, 'web-2');
    assert.equal(node1.role, 'node');
    assert.equal(node2.role, 'node');

    // Alice: one workload; her leaf as a node would forward it.
    const aliceKey = generateKeyPair('p256');
    const alice = await r1.createDelegation(admin, {
      name: 'alice',
      policy: {
        version: 1,
        permissions: parsePermissions('info,create,destroy'),
        limits: { workloads: 1, cpus: [0], memoryMiB: 512, blockMiB: 0, bridges: [], issuancePerHour: 100 },
      },
      possession: possessionFor(aliceKey.privateKey, signChallenge(admin.fingerprint, clock.now())),
      command: false,
    });
    const leaf = issueDelegateLeaf({
      parent: {
        issuer: Issuer.fromCertificate(alice.certificate, aliceKey.privateKey),
        certificateDer: alice.certificate,
      },
      trustDomain: r1.trustDomain,
      policyOid: r1.policyOid,
      publicKey: generateKeyPair('p256').publicKey,
    });
    assert.equal(new X509Certificate(leaf.der).ca, false);
    const request = (name: string) => ({
      leaf: leaf.der,
      chain: [alice.certificate, ...alice.chain],
      name,
      workloads: 1,
      cpus: [0],
      memoryMiB: 256,
      blockMiB: 0,
    });

    for (let round = 0; round < 8; round++) {
      const name = `app-${round}`;
      const outcomes = await Promise.allSettled([
        r1.reserveWorkload(node1, request(name)),
        r2.reserveWorkload(node2, request(name)),
      ]);
      const winners = outcomes.flatMap((outcome, index) => (outcome.status === 'fulfilled' ? [index] : []));
      assert.equal(winners.length, 1, `round ${round}: exactly one replica grants the last workload`);
      const lost = outcomes.find((outcome) => outcome.status === 'rejected');
      assert.ok(lost?.status === 'rejected');
      assert.match(String(lost.reason), /your delegation's workloads limit \(1 in use of 1\)/);
      // The other replica lists what the winner's replica recorded.
      const [winner, winnerNode] = winners[0] === 0 ? [r1, node1] : [r2, node2];
      const other = winner === r1 ? r2 : r1;
      assert.deepEqual(
        (await other.listWorkloadReservations(winnerNode)).map((held) => `${held.subtree} ${held.name}`),
        [`/alice ${name}`],
      );
      assert.equal(await other.releaseWorkload(winnerNode, '/alice', name), true);
    }

    // A node's endpoint registered on one replica is found on the other, by name and by ID.
    await r1.registerWorkloadEndpoint(node1, '10.0.0.1:7543');
    const found = await r2.findWorkloadNode(admin, 'web-1');
    assert.deepEqual(found, {
      nodeId: node1.name,
      name: 'web-1',
      address: '10.0.0.1:7543',
      spiffeId: `spiffe://pg.test/node/${node1.name}`,
    });
    assert.deepEqual(await r2.findWorkloadNode(node2, node1.name ?? ''), found);
  });
});
