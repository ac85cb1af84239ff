// The Store contract on SQLite, plus what only SQLite has: the file itself
// (mode, WAL), several threads racing on one file, kill -9 durability, and
// openStore's handling of the --store value.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { SigilError } from '../../src/errors.ts';
import {
  LATEST_SCHEMA_VERSION,
  MIGRATIONS,
  SCHEMA_MIGRATIONS_TABLE,
  statementsFor,
} from '../../src/store/migrations.ts';
import { openStore, storeKind } from '../../src/store/open-store.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { tempDir } from '../support/temp-dir.ts';
import { type LegacyRow, sampleCertificate, sampleToken, storeContract } from './contract.ts';

storeContract({
  name: 'SQLite',
  async fresh(options = {}) {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const store = await openSqliteStore(path, { onError: options.onError });
    if (options.migrate ?? true) await store.migrate();
    return { store, openAnother: () => openSqliteStore(path, { onError: options.onError }) };
  },
  async atSchemaVersion(version, rows) {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    writeAtSchemaVersion(path, version, rows);
    const store = await openSqliteStore(path);
    return { store, openAnother: () => openSqliteStore(path) };
  },
});

/** Migrations 1..version applied to a new file at `path` as SqliteStore.migrate does, then `rows` inserted. */
function writeAtSchemaVersion(path: string, version: number, rows: readonly LegacyRow[]): void {
  const db = new DatabaseSync(path);
  try {
    db.exec('BEGIN IMMEDIATE');
    db.exec(SCHEMA_MIGRATIONS_TABLE);
    const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
    for (const migration of MIGRATIONS.filter((m) => m.version <= version)) {
      for (const statement of statementsFor(migration, 'sqlite')) db.exec(statement);
      record.run(migration.version, migration.name, Date.now());
    }
    for (const { table, values } of rows) {
      const columns = Object.keys(values);
      db.prepare(
        `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`,
      ).run(...Object.values(values).map((v) => (typeof v === 'boolean' ? Number(v) : v)));
    }
    db.exec('COMMIT');
  } finally {
    db.close();
  }
}

describe('SQLite store', () => {
  test('the database file and its WAL are created mode 0600, in WAL mode', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const store = await openSqliteStore(path);
    await store.migrate();
    await store.insertToken(sampleToken('tok'));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(`${path}-wal`).mode & 0o777, 0o600);
    const inspector = new DatabaseSync(path, { readOnly: true });
    assert.equal(inspector.prepare('PRAGMA journal_mode').get()?.journal_mode, 'wal');
    inspector.close();
    await store.close();
  });

  test('an existing database file with a looser mode is tightened to 0600', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    writeFileSync(path, '', { mode: 0o644 });
    const store = await openSqliteStore(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await store.close();
  });

  test('schema_migrations records each migration once with its time, however often migrate runs', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const store = await openSqliteStore(path);
    await store.migrate();
    await store.migrate();
    const inspector = new DatabaseSync(path, { readOnly: true });
    const rows = inspector
      .prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version')
      .all();
    inspector.close();
    assert.deepEqual(
      rows.map((r) => r.version),
      MIGRATIONS.map((m) => m.version),
    );
    assert.ok(rows.every((r) => typeof r.applied_at === 'number' && r.applied_at > 0));
    await store.close();
  });

  test('a store migrated by a newer sigil is refused (failed_precondition) and left alone', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const store = await openSqliteStore(path);
    await store.migrate();
    const writer = new DatabaseSync(path);
    writer
      .prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
      .run(LATEST_SCHEMA_VERSION + 1, 'from the future', 1);
    writer.close();
    await assert.rejects(store.migrate(), (error: unknown) => {
      assert.ok(error instanceof SigilError);
      assert.equal(error.code, 'failed_precondition');
      assert.match(error.message, /newer than this sigil/);
      return true;
    });
    await store.close();
  });

  test('schema version 3: delegations.subtree NOT NULL and indexed with recorded_at, reservations keyed by (subtree, holder), fresh or migrated from version 2', async () => {
    const fresh = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const fromVersion2 = join(tempDir('sigil-sqlite-'), 'sigil.db');
    writeAtSchemaVersion(fromVersion2, 2, []);
    for (const path of [fresh, fromVersion2]) {
      const store = await openSqliteStore(path);
      await store.migrate();
      await store.close();
      const inspector = new DatabaseSync(path, { readOnly: true });
      try {
        const delegations = inspector.prepare("PRAGMA table_info('delegations')").all();
        const subtree = delegations.find((c) => c.name === 'subtree');
        assert.equal(subtree?.notnull, 1);
        assert.equal(subtree?.type, 'TEXT');
        const indexes = inspector
          .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'delegations'")
          .all()
          .map((r) => r.name);
        assert.ok(indexes.includes('delegations_subtree'), `indexes: ${indexes}`);
        assert.ok(!indexes.includes('delegations_spiffe_id'), `indexes: ${indexes}`);
        assert.deepEqual(
          inspector
            .prepare("PRAGMA index_info('delegations_subtree')")
            .all()
            .map((r) => r.name),
          ['subtree', 'recorded_at'],
        );
        const reservations = inspector.prepare("PRAGMA table_info('usage_reservations')").all();
        assert.deepEqual(
          reservations
            .filter((c) => Number(c.pk) > 0)
            .sort((a, b) => Number(a.pk) - Number(b.pk))
            .map((c) => c.name),
          ['subtree', 'holder'],
        );
        assert.ok(!reservations.some((c) => c.name === 'spiffe_id'));
      } finally {
        inspector.close();
      }
    }
  });

  test('a file that is not a SQLite database is refused naming the file', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    writeFileSync(
      path,
      'this is not a database, just some text that is long enough to have a header'.repeat(20),
    );
    await assert.rejects(openSqliteStore(path), (error: unknown) => {
      assert.ok(error instanceof SigilError);
      assert.equal(error.code, 'failed_precondition');
      assert.ok(error.message.includes(path));
      return true;
    });
  });

  /** Each worker opens its own store object (own connection) on `path` and registers its ids once all have started. */
  function race(
    path: string,
    tokenId: string,
    idsPerWorker: readonly (readonly string[])[],
  ): Promise<string[]> {
    const barrier = new SharedArrayBuffer(4);
    return Promise.all(
      idsPerWorker.map(
        (nodeIds) =>
          new Promise<string[]>((resolve, reject) => {
            const worker = new Worker(new URL('./sqlite-child.ts', import.meta.url), {
              workerData: { path, tokenId, nodeIds, barrier, parties: idsPerWorker.length },
            });
            worker.once('message', resolve);
            worker.once('error', reject);
          }),
      ),
    ).then((outcomes) => outcomes.flat());
  }

  test('no double spend across threads: 4 threads with their own connections race 20 registrations on a single-use token', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const store = await openSqliteStore(path);
    await store.migrate();
    await store.insertToken(sampleToken('tok'));
    const all = await race(
      path,
      'tok',
      Array.from({ length: 4 }, (_, w) => Array.from({ length: 5 }, (_, i) => `node-${w}-${i}`)),
    );
    assert.equal(all.length, 20);
    assert.equal(all.filter((o) => o === 'created').length, 1, `outcomes: ${all}`);
    assert.equal(all.filter((o) => o === 'token-unusable').length, 19);
    assert.equal((await store.listNodes()).length, 1);
    assert.equal((await store.getToken('tok'))?.usesLeft, 0);
    await store.close();
  });

  test('the same key from 4 threads at once: one created, the rest existing, the token used once', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const store = await openSqliteStore(path);
    await store.migrate();
    await store.insertToken(sampleToken('tok', { usesTotal: 5, usesLeft: 5 }));
    const all = await race(
      path,
      'tok',
      Array.from({ length: 4 }, () => ['node-x', 'node-x', 'node-x']),
    );
    assert.deepEqual(all.sort(), ['created', ...Array(11).fill('existing')]);
    assert.equal((await store.getToken('tok'))?.usesLeft, 4);
    await store.close();
  });

  test('kill -9 loses no acknowledged write', async () => {
    const path = join(tempDir('sigil-sqlite-'), 'sigil.db');
    const setup = await openSqliteStore(path);
    await setup.migrate();
    await setup.close();

    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL('./sqlite-child.ts', import.meta.url)), 'write', path],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const acknowledged: string[] = [];
    let partial = '';
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        if (signal === 'SIGKILL') resolve();
        else reject(new Error(`the writer exited on its own (code ${code})`));
      });
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        acknowledged.push(...lines);
        if (acknowledged.length >= 300 && child.exitCode === null && child.signalCode === null)
          child.kill('SIGKILL');
      });
    });
    assert.ok(acknowledged.length >= 300);

    const store = await openSqliteStore(path);
    const missing: string[] = [];
    for (const serial of acknowledged)
      if ((await store.getCertificate(serial)) === null) missing.push(serial);
    assert.deepEqual(missing, [], 'every acknowledged certificate survives kill -9');
    assert.deepEqual(await store.getCertificate(acknowledged[0]), sampleCertificate(0));
    await store.close();
  });
});

describe('openStore', () => {
  test("'sqlite' and the empty default open <dataDir>/sigil.db, creating the directory, migrated", async () => {
    for (const spec of ['sqlite', '']) {
      const dataDir = join(tempDir('sigil-sqlite-'), 'data', 'nested');
      const store = await openStore(spec, dataDir);
      await store.insertToken(sampleToken('tok'));
      await store.close();
      assert.equal(statSync(join(dataDir, 'sigil.db')).mode & 0o777, 0o600);
      assert.equal(statSync(dataDir).mode & 0o777, 0o700);
      const again = await openStore(spec, dataDir);
      assert.equal((await again.getToken('tok'))?.id, 'tok');
      await again.close();
    }
  });

  test('an unknown --store value is refused naming it, with any password redacted', async () => {
    for (const [spec, shown] of [
      ['mysql://root:hunter2@db.example/sigil', 'mysql://root:***@db.example/sigil'],
      ['sqlite3', 'sqlite3'],
      ['postgres:/missing-slash', 'postgres:/missing-slash'],
      ['https://db.example/?password=hunter2&x=1', 'https://db.example/?password=***&x=1'],
    ]) {
      await assert.rejects(openStore(spec, tempDir('sigil-sqlite-')), (error: unknown) => {
        assert.ok(error instanceof SigilError);
        assert.equal(error.code, 'invalid_argument');
        assert.ok(error.message.includes(shown), error.message);
        assert.ok(!error.message.includes('hunter2'));
        return true;
      });
    }
  });

  test('storeKind tells SQLite from PostgreSQL', () => {
    assert.equal(storeKind('sqlite'), 'sqlite');
    assert.equal(storeKind(''), 'sqlite');
    assert.equal(storeKind('postgres://u@h/db'), 'postgres');
    assert.equal(storeKind('postgresql://u@h/db'), 'postgres');
    assert.equal(storeKind('PostgreSQL://u@h/db'), 'postgres');
  });
});
