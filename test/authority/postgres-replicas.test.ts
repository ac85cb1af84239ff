// Two replicas, each with its own store connection and store key, on one real
// PostgreSQL: the joining flow end to end, revocations crossing replicas
// through LISTEN/NOTIFY, and a rotation by the root holder reaching the other
// replica through a 'ca' event. Skips, saying why, without PostgreSQL.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Authority } from '../../src/authority/authority.ts';
import type { Caller } from '../../src/authority/identities.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { possessionFor, replicaChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { generateStoreKey } from '../../src/server/store-key.ts';
import { openPostgresStore } from '../../src/store/postgres.ts';
import type { Store } from '../../src/store/store.ts';
import { eventually } from '../support/eventually.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { callerFromPem, DAY, HOUR, TestClock } from './helpers.ts';

const skip = postgresUnavailable() ?? undefined;

describe('replicas on PostgreSQL', { skip }, () => {
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

  it('a second replica joins, revocations cross replicas, and rotation reaches the other replica', async () => {
    const url = await pg.createDatabase();
    const clock = new TestClock();
    const common = {
      trustDomain: 'pg.test',
      now: clock.now,
      timers: false,
      storeKind: 'postgres',
      onWarning: () => {},
    };
    const first = await Authority.open({
      ...common,
      store: await storeFor(url),
      replicaId: 'r1',
      storeKey: generateStoreKey(),
      serverAddresses: ['127.0.0.1:7443'],
      intermediateTtlMs: 3 * DAY,
    });
    authorities.push(first.authority);
    const r1 = first.authority;
    assert.ok(first.bootstrapped);
    const admin: Caller = callerFromPem(first.bootstrapped.adminCertificatePem, first.authority);

    const { token } = await r1.createToken(admin, { replica: true });
    const parsed = parseJoinToken(token);
    const key = generateKeyPair('p256');
    const joined = await r1.joinReplica({
      tokenId: parsed.id,
      tokenSecret: parsed.secret,
      replicaId: 'r2',
      possession: possessionFor(key.privateKey, replicaChallenge(parsed.id, parsed.secret, 'r2')),
    });
    const second = await Authority.open({
      ...common,
      store: await storeFor(url),
      replicaId: 'r2',
      storeKey: generateStoreKey(),
      serverAddresses: ['127.0.0.1:7444'],
      join: { intermediate: joined.intermediate.certificate, privateKey: key.privateKey },
    });
    authorities.push(second.authority);
    const r2 = second.authority;
    assert.equal(second.mode, 'join');
    assert.equal(r2.rootFingerprint, r1.rootFingerprint);
    await eventually('r1 to see the r2 intermediate', () => r1.trustBundle().intermediates.length === 2);

    const proof = () =>
      possessionFor(generateKeyPair('p256').privateKey, signChallenge(admin.fingerprint, clock.now()));
    const issued = await r2.sign(admin, { possession: proof(), profile: 'client', commonName: 'pg-client' });
    const seen: string[] = [];
    r1.revocationSource().subscribe((serials) => seen.push(...serials));
    await r2.revoke(admin, issued.serial, 'keyCompromise');
    await eventually('r1 to hear of the revocation on r2', () =>
      r1.revocationSource().isRevoked(issued.serial),
    );
    assert.deepEqual(seen, [issued.serial]);

    clock.advance(2 * DAY + HOUR);
    await r1.maintain();
    await eventually(
      'r2 to see the rotated intermediates',
      () => r2.trustBundle().intermediates.length === 4,
    );
    const afterRotation = await r2.sign(admin, {
      possession: proof(),
      profile: 'client',
      commonName: 'pg-after',
    });
    assert.match(new X509Certificate(afterRotation.chain[0]).subject, /sigil r2 #2/);
    const status = await r2.status(admin);
    assert.equal(status.store, 'postgres');
    assert.deepEqual(
      status.replicas.map((r) => r.replicaId),
      ['r1', 'r2'],
    );
  });
});
