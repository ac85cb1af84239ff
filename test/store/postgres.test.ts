// The Store contract on a real, throwaway PostgreSQL, plus what only
// PostgreSQL has: events that cross replicas through LISTEN/NOTIFY, the
// LISTEN connection coming back after it is killed, crash durability with
// fsync on, and openStore with a postgres:// URL. Skips, saying why, when
// PostgreSQL is not installed; fails instead under SIGIL_CI=1 (.ci/run
// installs it): postgresUnavailable() throws there.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { SigilError } from '../../src/errors.ts';
import {
  LATEST_SCHEMA_VERSION,
  MIGRATIONS,
  SCHEMA_MIGRATIONS_TABLE,
  statementsFor,
} from '../../src/store/migrations.ts';
import { openStore } from '../../src/store/open-store.ts';
import {
  openPostgresStore,
  type PostgresStoreOptions,
  redactConnectionString,
} from '../../src/store/postgres.ts';
import type { Store, StoreEvent } from '../../src/store/store.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { type LegacyRow, sampleCertificate, sampleNode, sampleToken, storeContract } from './contract.ts';

const skip = postgresUnavailable() ?? undefined;
const server: TestPostgres | null = skip ? null : await startPostgres();
after(async () => {
  await server?.stop();
});

storeContract({
  name: 'PostgreSQL',
  skip,
  async fresh(options = {}) {
    const url = await server!.createDatabase();
    const store = await openPostgresStore(url, { onError: options.onError });
    if (options.migrate ?? true) await store.migrate();
    return { store, openAnother: () => openPostgresStore(url, { onError: options.onError }) };
  },
  async atSchemaVersion(version, rows) {
    const url = await server!.createDatabase();
    await withRawClient(url, (client) => writeAtSchemaVersion(client, version, rows));
    const store = await openPostgresStore(url);
    return { store, openAnother: () => openPostgresStore(url) };
  },
});

/** Migrations 1..version applied in one transaction as PostgresStore.migrate does, then `rows` inserted. */
async function writeAtSchemaVersion(
  client: pg.Client,
  version: number,
  rows: readonly LegacyRow[],
): Promise<void> {
  await client.query('BEGIN');
  try {
    await client.query(SCHEMA_MIGRATIONS_TABLE);
    for (const migration of MIGRATIONS.filter((m) => m.version <= version)) {
      for (const statement of statementsFor(migration, 'postgres')) await client.query(statement);
      await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
        migration.version,
        migration.name,
        Date.now(),
      ]);
    }
    for (const { table, values } of rows) {
      const columns = Object.keys(values);
      await client.query(
        `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})`,
        Object.values(values),
      );
    }
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  }
}

const at = (seconds: number): Date => new Date(Date.UTC(2030, 0, 1) + seconds * 1000);

/** Resolves with the first event `store` delivers that matches (fails after 10 s). */
function nextEvent(store: Store, match: (e: StoreEvent) => boolean, what: string): Promise<StoreEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no ${what} event arrived`));
    }, 10_000);
    const unsubscribe = store.subscribe((event) => {
      if (!match(event)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(event);
    });
  });
}

async function withRawClient<T>(url: string, body: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await body(client);
  } finally {
    await client.end();
  }
}

describe('PostgreSQL store', { skip }, () => {
  const opened: Store[] = [];
  const open = async (url: string, options?: PostgresStoreOptions): Promise<Store> => {
    const store = await openPostgresStore(url, options);
    opened.push(store);
    return store;
  };
  after(async () => {
    for (const store of opened) await store.close();
  });

  let url = '';
  before(async () => {
    url = await server!.createDatabase();
    const store = await open(url);
    await store.migrate();
  });

  test('an event published by one replica reaches another through LISTEN/NOTIFY, once each', async () => {
    const a = await open(url);
    const b = await open(url);
    const seenByA: StoreEvent[] = [];
    const seenByB: StoreEvent[] = [];
    a.subscribe((e) => seenByA.push(e));
    b.subscribe((e) => seenByB.push(e));

    const certificate = sampleCertificate(101);
    await a.insertCertificate(certificate);
    const onB = nextEvent(b, (e) => e.kind === 'revocation', 'revocation on the other replica');
    assert.equal(await a.revokeCertificate(certificate.serial, 'keyCompromise', at(10)), true);
    assert.deepEqual(await onB, { kind: 'revocation', serials: [certificate.serial] });

    await a.insertToken(sampleToken('tok-cross'));
    const nodeOnA = nextEvent(a, (e) => e.kind === 'node', 'node on the publishing replica');
    await b.registerNode('tok-cross', sampleNode('node-cross', 'tok-cross'), at(60));
    assert.deepEqual(await nodeOnA, { kind: 'node', nodeId: 'node-cross', state: 'NEW' });

    // Notifications arrive in commit order: once this one is in, so is everything before it.
    const sentinel = (store: Store) =>
      nextEvent(store, (e) => e.kind === 'ca' && e.caId === 'sentinel-cross', 'sentinel');
    const sentinels = [sentinel(a), sentinel(b)];
    await b.putCa({
      id: 'sentinel-cross',
      kind: 'intermediate',
      replicaId: 'b',
      certificate: Buffer.from('x'),
      encryptedKey: null,
      notBefore: at(0),
      notAfter: at(1),
      createdAt: at(0),
      retiredAt: null,
    });
    await Promise.all(sentinels);
    for (const seen of [seenByA, seenByB]) {
      assert.equal(seen.filter((e) => e.kind === 'revocation').length, 1, 'the revocation, exactly once');
      assert.equal(seen.filter((e) => e.kind === 'node').length, 1, 'the registration, exactly once');
    }
  });

  test('a replica that hears an event already sees the committed change', async () => {
    const a = await open(url);
    const b = await open(url);
    const certificate = sampleCertificate(102);
    await a.insertCertificate(certificate);
    const observed = new Promise<Date | null | undefined>((resolve) => {
      const unsubscribe = b.subscribe((event) => {
        if (event.kind !== 'revocation' || !event.serials.includes(certificate.serial)) return;
        unsubscribe();
        b.getCertificate(certificate.serial).then(
          (record) => resolve(record?.revokedAt),
          () => resolve(undefined),
        );
      });
    });
    await a.revokeCertificate(certificate.serial, 'superseded', at(20));
    assert.deepEqual(await observed, at(20));
  });

  test('the LISTEN connection comes back after it is killed, reports the gap, and delivers later events', async () => {
    const errors: Error[] = [];
    let gapReported: () => void = () => {};
    const gap = new Promise<void>((resolve) => {
      gapReported = resolve;
    });
    // A database of its own, so that only these two store objects lose their LISTEN connections.
    const database = await server!.createDatabase();
    const listener = await open(database, {
      onError: (error) => errors.push(error),
      onEventGap: () => gapReported(),
      reconnectDelayMs: { min: 20, max: 200 },
    });
    const publisher = await open(database, { onError: () => {} });
    await publisher.migrate();
    const killed = await withRawClient(database, async (client) => {
      const result = await client.query(
        "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE application_name = 'sigil-events' AND datname = current_database()",
      );
      return result.rows.length;
    });
    assert.ok(killed >= 1);
    await gap;
    assert.ok(errors.some((e) => /lost the PostgreSQL event connection/.test(e.message)));
    assert.ok(errors.some((e) => /re-established/.test(e.message)));

    const certificate = sampleCertificate(103);
    await publisher.insertCertificate(certificate);
    const arrives = nextEvent(listener, (e) => e.kind === 'revocation', 'revocation after reconnect');
    await publisher.revokeCertificate(certificate.serial, 'superseded', at(30));
    assert.deepEqual(await arrives, { kind: 'revocation', serials: [certificate.serial] });
  });

  test('schema_migrations holds one row per migration; a schema from a newer sigil is refused', async () => {
    const fresh = await server!.createDatabase();
    const store = await open(fresh);
    await store.migrate();
    await store.migrate();
    const versions = await withRawClient(fresh, async (client) =>
      (await client.query('SELECT version FROM schema_migrations ORDER BY version')).rows.map(
        (r) => r.version,
      ),
    );
    assert.deepEqual(
      versions,
      MIGRATIONS.map((m) => m.version),
    );
    await withRawClient(fresh, (client) =>
      client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
        LATEST_SCHEMA_VERSION + 1,
        'from the future',
        1,
      ]),
    );
    await assert.rejects(store.migrate(), (error: unknown) => {
      assert.ok(error instanceof SigilError);
      assert.equal(error.code, 'failed_precondition');
      assert.match(error.message, /newer than this sigil/);
      return true;
    });
  });

  test('schema version 3 keeps subtree keys byte-ordered (COLLATE "C"), indexed, and the reservations keyed by (subtree, holder), fresh or migrated from version 2', async () => {
    const fresh = await server!.createDatabase();
    const fromVersion2 = await server!.createDatabase();
    await withRawClient(fromVersion2, (client) => writeAtSchemaVersion(client, 2, []));
    for (const database of [fresh, fromVersion2]) {
      const store = await open(database);
      await store.migrate();
      await withRawClient(database, async (client) => {
        const columns = await client.query(
          `SELECT table_name, collation_name, is_nullable FROM information_schema.columns
           WHERE table_schema = current_schema() AND column_name = 'subtree' ORDER BY table_name`,
        );
        assert.deepEqual(columns.rows, [
          { table_name: 'delegations', collation_name: 'C', is_nullable: 'NO' },
          { table_name: 'usage_reservations', collation_name: 'C', is_nullable: 'NO' },
        ]);
        const gone = await client.query(
          `SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = 'usage_reservations' AND column_name = 'spiffe_id'`,
        );
        assert.deepEqual(gone.rows, []);
        const indexes = await client.query(
          `SELECT indexname, indexdef FROM pg_indexes
           WHERE schemaname = current_schema() AND tablename = 'delegations' ORDER BY indexname`,
        );
        const names = indexes.rows.map((r) => r.indexname);
        assert.ok(names.includes('delegations_subtree'), `indexes: ${names}`);
        assert.ok(!names.includes('delegations_spiffe_id'), `indexes: ${names}`);
        assert.match(
          indexes.rows.find((r) => r.indexname === 'delegations_subtree').indexdef,
          /\(subtree, recorded_at\)/,
        );
        const key = await client.query(
          `SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
           WHERE i.indrelid = 'usage_reservations'::regclass AND i.indisprimary
           ORDER BY array_position(i.indkey::int2[], a.attnum)`,
        );
        assert.deepEqual(
          key.rows.map((r) => r.attname),
          ['subtree', 'holder'],
        );
      });
    }
  });

  test('openStore with a postgres:// URL connects and migrates; a failure names the URL without its password', async () => {
    const withPassword = url.replace('postgres@', 'postgres:hunter2@');
    const store = await openStore(withPassword, '/nonexistent-data-dir-not-used');
    opened.push(store);
    await store.insertToken(sampleToken('tok-open-store'));
    assert.equal((await store.getToken('tok-open-store'))?.id, 'tok-open-store');

    const missing = withPassword.replace(/\/[^/]+$/, '/no_such_database');
    await assert.rejects(openStore(missing, '/unused'), (error: unknown) => {
      assert.ok(error instanceof SigilError);
      assert.equal(error.code, 'failed_precondition');
      assert.ok(error.message.includes(redactConnectionString(missing)), error.message);
      assert.ok(error.message.includes('no_such_database'));
      assert.ok(!error.message.includes('hunter2'));
      return true;
    });
  });

  test('redactConnectionString hides passwords in the user info and in parameters', () => {
    const cases: [string, string][] = [
      ['postgres://sigil:s3cret@db:5432/sigil', 'postgres://sigil:***@db:5432/sigil'],
      [
        'postgresql://sigil:p@ss:w/rd@db/sigil?sslmode=require',
        'postgresql://sigil:***@db/sigil?sslmode=require',
      ],
      ['postgres://sigil@db/sigil', 'postgres://sigil@db/sigil'],
      ['postgres://db/sigil?user=sigil&password=s3cret', 'postgres://db/sigil?user=sigil&password=***'],
      ['postgres://db/sigil', 'postgres://db/sigil'],
    ];
    for (const [input, expected] of cases) assert.equal(redactConnectionString(input), expected);
  });
});

describe('PostgreSQL durability', { skip }, () => {
  test('an immediate shutdown (crash) with fsync on loses no acknowledged write; a store object lives through it', async () => {
    const durable = await startPostgres({ fsync: true });
    try {
      let gapReported: () => void = () => {};
      const gap = new Promise<void>((resolve) => {
        gapReported = resolve;
      });
      const crashed = await openPostgresStore(durable.url, {
        onError: () => {},
        onEventGap: () => gapReported(),
        reconnectDelayMs: { min: 20, max: 200 },
      });
      await crashed.migrate();
      const serials: string[] = [];
      await Promise.all(
        Array.from({ length: 40 }, async (_, n) => {
          const record = sampleCertificate(n);
          await crashed.insertCertificate(record);
          serials.push(record.serial);
        }),
      );
      await crashed.insertToken(sampleToken('tok'));
      assert.equal(
        (await crashed.registerNode('tok', sampleNode('node-1', 'tok'), at(60))).outcome,
        'created',
      );
      assert.equal(await crashed.revokeCertificate(serials[0], 'keyCompromise', at(70)), true);

      await durable.restart({ crash: true });

      const store = await openPostgresStore(durable.url);
      try {
        const missing: string[] = [];
        for (const serial of serials) if ((await store.getCertificate(serial)) === null) missing.push(serial);
        assert.deepEqual(missing, []);
        assert.equal((await store.getCertificate(serials[0]))?.revocationReason, 'keyCompromise');
        assert.equal((await store.getToken('tok'))?.usesLeft, 0);
        assert.equal((await store.getNode('node-1'))?.state, 'NEW');

        // The store object that was connected during the crash gets its events back and keeps working.
        await gap;
        const later = sampleCertificate(1000);
        await store.insertCertificate(later);
        const heard = nextEvent(crashed, (e) => e.kind === 'revocation', 'revocation after the crash');
        assert.equal(await crashed.revokeCertificate(later.serial, 'superseded', at(80)), true);
        assert.deepEqual(await heard, { kind: 'revocation', serials: [later.serial] });
      } finally {
        await store.close();
        await crashed.close();
      }
    } finally {
      await durable.stop();
    }
  });
});
