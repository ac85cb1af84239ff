// Two replicas on one PostgreSQL store: the second joins with a replica join
// token (`--join`), gets its own intermediate signed by the root on the
// first, serves the same trust domain, and sees revocations made on the
// first through its own WatchRevocations.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { RevocationEvent } from '../../src/gen/sigil/v1/sigil.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { possessionFor, signChallenge } from '../../src/protocol/challenges.ts';
import type { RunningServer } from '../../src/server/start-server.ts';
import { cancellationOnly } from '../support/cancellation.ts';
import { eventually } from '../support/eventually.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp-dir.ts';
import { adminIdentity, type Clients, call, clients, credentialsFor, startTestServer } from './helpers.ts';

const skip = postgresUnavailable() ?? undefined;

describe('replicas on PostgreSQL', { skip }, () => {
  let postgres: TestPostgres;
  let url: string;
  const first = join(tempDir(), 'a');
  const second = join(tempDir(), 'b');
  const running: RunningServer[] = [];
  const opened: Clients[] = [];

  before(async () => {
    postgres = await startPostgres();
    url = await postgres.createDatabase();
  });

  after(async () => {
    for (const made of opened) made.close();
    for (const server of running.reverse()) await server.close(1000);
    await postgres?.stop();
  });

  test('a second replica joins with a replica token and serves with its own intermediate', async () => {
    const a = await startTestServer({ dataDir: first, store: url, replicaId: 'a' });
    running.push(a);
    assert.equal(a.mode, 'bootstrap');
    assert.equal(a.info.store, 'postgres');
    const adminA = clients(a.address, credentialsFor(first, adminIdentity(first)));
    opened.push(adminA);

    // Without a token the second replica is refused: it has no intermediate.
    await assert.rejects(startTestServer({ dataDir: second, store: url, replicaId: 'b' }), /join token/);

    const nodeToken = await call(adminA.admin, adminA.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: false,
      name: '',
      replica: false,
    });
    await assert.rejects(
      startTestServer({ dataDir: second, store: url, replicaId: 'b', join: nodeToken.token }),
      /replica join token/,
    );

    const created = await call(adminA.admin, adminA.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: false,
      name: 'replica b',
      replica: true,
    });
    // On its own SQLite store, or an empty PostgreSQL database, --join is refused before the token is spent.
    await assert.rejects(
      startTestServer({ dataDir: join(tempDir(), 'lite'), replicaId: 'b', join: created.token }),
      /--join needs the deployment's shared PostgreSQL store/,
    );
    await assert.rejects(
      startTestServer({
        dataDir: join(tempDir(), 'empty'),
        store: await postgres.createDatabase(),
        join: created.token,
      }),
      /this store holds no CA yet/,
    );
    const b = await startTestServer({ dataDir: second, store: url, replicaId: 'b', join: created.token });
    running.push(b);
    assert.equal(b.mode, 'join');
    assert.equal(b.bootstrapped, null);
    assert.equal(b.info.rootFingerprint, a.info.rootFingerprint);
    assert.equal(b.info.trustDomain, a.info.trustDomain);
    assert.equal(readFileSync(join(second, 'ca.pem'), 'utf8'), readFileSync(join(first, 'ca.pem'), 'utf8'));

    // The admin identity of the first replica works on the second: one trust domain.
    const adminB = clients(b.address, credentialsFor(first, adminIdentity(first)));
    opened.push(adminB);
    const status = await call(adminB.admin, adminB.admin.getStatus, {});
    assert.equal(status.replicaId, 'b');
    assert.deepEqual(status.replicas.map((replica) => replica.replicaId).sort(), ['a', 'b']);

    // Certificates signed on b chain to b's own intermediate.
    const { privateKey } = generateKeyPair('p256');
    const adminFingerprint = new X509Certificate(adminIdentity(first).certificateChain).fingerprint256
      .replaceAll(':', '')
      .toLowerCase();
    const issued = await call(adminB.ca, adminB.ca.sign, {
      key: { $case: 'possession', value: possessionFor(privateKey, signChallenge(adminFingerprint)) },
      profile: 'client',
      commonName: 'worker',
      dnsNames: [],
      ipAddresses: [],
      uris: [],
      ttlSeconds: 3600,
    });
    const intermediate = new X509Certificate(issued.chain[0]);
    assert.match(intermediate.subject, /sigil b #1/);

    // The token was single use.
    await assert.rejects(
      startTestServer({ dataDir: join(tempDir(), 'c'), store: url, replicaId: 'c', join: created.token }),
      /already been used/,
    );
  });

  /** Admin clients of replica a and replica b (one admin identity serves the whole trust domain). */
  function adminsOnBothReplicas(): { adminA: Clients; adminB: Clients } {
    const [a, b] = running;
    const adminA = clients(a.address, credentialsFor(first, adminIdentity(first)));
    const adminB = clients(b.address, credentialsFor(first, adminIdentity(first)));
    opened.push(adminA, adminB);
    return { adminA, adminB };
  }

  /** A client certificate signed by `admin`'s replica, proven with a fresh P-256 key. */
  function signClient(admin: Clients, commonName: string) {
    const { privateKey } = generateKeyPair('p256');
    const adminFingerprint = new X509Certificate(adminIdentity(first).certificateChain).fingerprint256
      .replaceAll(':', '')
      .toLowerCase();
    return call(admin.ca, admin.ca.sign, {
      key: { $case: 'possession', value: possessionFor(privateKey, signChallenge(adminFingerprint)) },
      profile: 'client',
      commonName,
      dnsNames: [],
      ipAddresses: [],
      uris: [],
      ttlSeconds: 3600,
    });
  }

  test('a revocation on one replica reaches WatchRevocations on the other', async () => {
    const { adminA, adminB } = adminsOnBothReplicas();
    const issued = await signClient(adminA, 'doomed');
    const events: RevocationEvent[] = [];
    const stream = adminB.ca.watchRevocations({});
    stream.on('data', (event: RevocationEvent) => events.push(event));
    const streamErrors = cancellationOnly(stream);
    await eventually('the snapshot', () => events.length >= 1);
    await call(adminA.ca, adminA.ca.revoke, { serial: issued.serial, reason: 'keyCompromise' });
    await eventually('the revocation on replica b', () =>
      events.some((event) => !event.snapshot && event.serials.includes(issued.serial)),
    );
    stream.cancel();
    assert.deepEqual(streamErrors, [], 'the watch stream failed');
  });

  test('a revocation made while the other replica lost its LISTEN connection still reaches it (re-read on the gap)', async () => {
    const { adminA } = adminsOnBothReplicas();
    const issued = await signClient(adminA, 'missed');
    // Cut every LISTEN connection, then revoke at once: the NOTIFY goes out
    // before the listeners are back (they wait at least 100 ms), so replica b
    // can only learn of it by re-reading the store when it sees the gap.
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      const killed = await admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
      );
      assert.ok(killed.rowCount && killed.rowCount >= 2, 'both replicas had a LISTEN connection');
    } finally {
      await admin.end();
    }
    await call(adminA.ca, adminA.ca.revoke, { serial: issued.serial, reason: 'keyCompromise' });
    await eventually(
      'the missed revocation in replica b',
      () => running[1].authority.revokedSerials().includes(issued.serial),
      10_000,
    );
  });
});
