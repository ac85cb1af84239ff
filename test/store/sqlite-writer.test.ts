// The SQLite certificate writers (src/store/sqlite-writer.ts): group commit on
// the event loop ('inline') or on a writer thread with its own connection
// ('thread'). Both must keep insertCertificate's promise: resolved only once
// the row is committed (fsynced), in order, a bad row failing alone, and the
// same errors either way.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SigilError } from '../../src/errors.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/store.ts';
import { tempDir } from '../support/temp-dir.ts';
import { sampleCertificate } from './contract.ts';

type Writer = 'inline' | 'thread';

async function migratedStore(writer: Writer): Promise<{ store: Store; path: string }> {
  const path = join(tempDir('sigil-sqlite-writer-'), 'sigil.db');
  const store = await openSqliteStore(path, { certificateWriter: writer });
  await store.migrate();
  return { store, path };
}

/** Serials in the file, read through a connection of its own. */
function serialsOnDisk(path: string): string[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db
      .prepare('SELECT serial FROM certificates ORDER BY rowid')
      .all()
      .map((row) => String(row.serial));
  } finally {
    db.close();
  }
}

async function settled(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
    return null;
  } catch (error) {
    return error;
  }
}

for (const writer of ['inline', 'thread'] as const) {
  describe(`SQLite certificate writer: ${writer}`, () => {
    test('concurrent inserts are acknowledged in the order written, each row readable once acknowledged, committed in that order', async (t) => {
      const { store, path } = await migratedStore(writer);
      t.after(() => store.close());
      const acknowledged: number[] = [];
      const unreadable: number[] = [];
      await Promise.all(
        Array.from({ length: 200 }, (_, n) =>
          store.insertCertificate(sampleCertificate(n)).then(async () => {
            acknowledged.push(n);
            if ((await store.getCertificate(sampleCertificate(n).serial)) === null) unreadable.push(n);
          }),
        ),
      );
      assert.deepEqual(
        acknowledged,
        Array.from({ length: 200 }, (_, n) => n),
      );
      assert.deepEqual(unreadable, [], 'a row is readable as soon as its insert is acknowledged');
      assert.deepEqual(
        serialsOnDisk(path),
        Array.from({ length: 200 }, (_, n) => sampleCertificate(n).serial),
      );
      assert.deepEqual(await store.getCertificate(sampleCertificate(7).serial), sampleCertificate(7));
    });

    test('a duplicate serial fails alone with already_exists; the rest of its batch is stored and the first row is unchanged', async (t) => {
      const { store, path } = await migratedStore(writer);
      t.after(() => store.close());
      await store.insertCertificate(sampleCertificate(1));
      const duplicate = sampleCertificate(1, { subject: 'CN=impostor' });
      const outcomes = await Promise.all([
        settled(store.insertCertificate(sampleCertificate(2))),
        settled(store.insertCertificate(duplicate)),
        settled(store.insertCertificate(sampleCertificate(3))),
      ]);
      assert.equal(outcomes[0], null);
      assert.equal(outcomes[2], null);
      const refusal = outcomes[1];
      assert.ok(refusal instanceof SigilError);
      assert.equal(refusal.code, 'already_exists');
      assert.equal(refusal.message, `a certificate with serial ${duplicate.serial} already exists`);
      assert.deepEqual(serialsOnDisk(path), ['1001', '1002', '1003']);
      assert.deepEqual(await store.getCertificate('1001'), sampleCertificate(1));
    });

    test('a record that fails validation is refused (invalid_argument) and nothing of it is stored', async (t) => {
      const { store, path } = await migratedStore(writer);
      t.after(() => store.close());
      const bad = sampleCertificate(4, { revokedAt: new Date(), revocationReason: null });
      const [refusal, fine] = await Promise.all([
        settled(store.insertCertificate(bad)),
        settled(store.insertCertificate(sampleCertificate(5))),
      ]);
      assert.ok(refusal instanceof SigilError);
      assert.equal(refusal.code, 'invalid_argument');
      assert.equal(fine, null);
      assert.deepEqual(serialsOnDisk(path), [sampleCertificate(5).serial]);
    });

    test('close commits what is still pending: another connection sees every row, later inserts are refused', async () => {
      const { store, path } = await migratedStore(writer);
      const inserts = Array.from({ length: 50 }, (_, n) => store.insertCertificate(sampleCertificate(n)));
      await store.close();
      assert.deepEqual(
        await Promise.all(inserts.map(settled)),
        inserts.map(() => null),
      );
      assert.equal(serialsOnDisk(path).length, 50);
      const refusal = await settled(store.insertCertificate(sampleCertificate(99)));
      assert.ok(refusal instanceof SigilError);
      assert.equal(refusal.code, 'failed_precondition');
      assert.equal(serialsOnDisk(path).length, 50);
    });

    test('kill -9 with 32 inserts in flight loses no acknowledged row', async (t) => {
      const { store, path } = await migratedStore(writer);
      await store.close();
      const child = spawn(
        process.execPath,
        [fileURLToPath(new URL('./sqlite-writer-child.ts', import.meta.url)), path, writer],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      t.after(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
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
          if (acknowledged.length >= 500 && child.exitCode === null && child.signalCode === null)
            child.kill('SIGKILL');
        });
      });
      assert.ok(acknowledged.length >= 500);
      const stored = new Set(serialsOnDisk(path));
      assert.deepEqual(
        acknowledged.filter((serial) => !stored.has(serial)),
        [],
        'every acknowledged certificate survives kill -9',
      );
    });
  });
}

test('both writers fail an insert into an unmigrated store with the same error, and write nothing', async () => {
  const messages: string[] = [];
  for (const writer of ['inline', 'thread'] as const) {
    const path = join(tempDir('sigil-sqlite-writer-'), 'sigil.db');
    const store = await openSqliteStore(path, { certificateWriter: writer });
    const [first, second] = await Promise.all([
      settled(store.insertCertificate(sampleCertificate(1))),
      settled(store.insertCertificate(sampleCertificate(2))),
    ]);
    assert.ok(first instanceof Error && second instanceof Error, `${writer}: both inserts fail`);
    messages.push(first.message);
    await store.close();
    const db = new DatabaseSync(path, { readOnly: true });
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
    db.close();
    assert.deepEqual(tables, [], `${writer}: nothing was created`);
  }
  assert.equal(messages[0], messages[1]);
  assert.match(messages[0], /no such table: certificates/);
});

test('an unknown writer is refused naming it', async () => {
  const path = join(tempDir('sigil-sqlite-writer-'), 'sigil.db');
  await assert.rejects(
    openSqliteStore(path, { certificateWriter: 'elsewhere' as Writer }),
    (error: unknown) =>
      error instanceof SigilError &&
      error.code === 'invalid_argument' &&
      error.message === `the SQLite certificate writer must be 'inline' or 'thread', got "elsewhere"`,
  );
});
