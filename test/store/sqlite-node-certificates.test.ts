// A node's certificate on SQLite (insertNodeCertificate): the certificate row
// and the node's transition go through the certificate writer's group commit
// (sqlite-writer-batch.ts), on either writer. Row and step stand or fall
// together: a step that breaks a constraint undoes its own row and no other,
// and a batch that fails as a whole leaves neither.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CERTIFICATE_COLUMNS, certificateParams, NODE_COLUMNS } from '../../src/store/rows.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { type CertificateWrite, commitCertificateRows } from '../../src/store/sqlite-writer-batch.ts';
import type { Store } from '../../src/store/store.ts';
import { tempDir } from '../support/temp-dir.ts';
import { sampleCertificate, sampleNode, sampleToken } from './contract.ts';

const AT = new Date(Date.UTC(2030, 0, 1));
const INSERT_CERTIFICATE = `INSERT INTO certificates (${CERTIFICATE_COLUMNS.join(', ')})
  VALUES (${CERTIFICATE_COLUMNS.map(() => '?').join(', ')})`;

/** A migrated store file with `nodes` UP nodes (node-0 …), each pointed at serial 'aa'. */
async function storeWithNodes(
  writer: 'inline' | 'thread',
  nodes: number,
): Promise<{ store: Store; path: string }> {
  const path = join(tempDir('sigil-sqlite-node-certificates-'), 'sigil.db');
  const store = await openSqliteStore(path, { certificateWriter: writer });
  await store.migrate();
  for (let i = 0; i < nodes; i++) {
    await store.insertToken(sampleToken(`tok-${i}`));
    await store.registerNode(`tok-${i}`, sampleNode(`node-${i}`, `tok-${i}`), AT);
    await store.transitionNode(`node-${i}`, ['NEW'], 'UP', { certificateSerial: 'aa', at: AT });
  }
  return { store, path };
}

/** What a connection of its own finds in the file: certificate serials and each node's serial. */
function onDisk(path: string): { serials: string[]; nodes: Record<string, string | null> } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const serials = db
      .prepare('SELECT serial FROM certificates ORDER BY rowid')
      .all()
      .map((row) => String(row.serial));
    const nodes: Record<string, string | null> = {};
    for (const row of db.prepare('SELECT id, certificate_serial FROM nodes ORDER BY id').all())
      nodes[String(row.id)] = row.certificate_serial === null ? null : String(row.certificate_serial);
    return { serials, nodes };
  } finally {
    db.close();
  }
}

for (const writer of ['inline', 'thread'] as const) {
  describe(`insertNodeCertificate on the ${writer} writer`, () => {
    test('node certificates and plain inserts written together are each committed once acknowledged, with their nodes', async (t) => {
      const { store, path } = await storeWithNodes(writer, 20);
      t.after(() => store.close());
      const unseen: string[] = [];
      const writes = Array.from({ length: 40 }, (_, n) => {
        const record = sampleCertificate(n);
        const acknowledged =
          n % 2 === 0
            ? store.insertNodeCertificate(record, { id: `node-${n / 2}`, from: ['UP'], to: 'UP', at: AT })
            : store.insertCertificate(record);
        return acknowledged.then(() => {
          if (!onDisk(path).serials.includes(record.serial)) unseen.push(record.serial);
        });
      });
      await Promise.all(writes);
      assert.deepEqual(unseen, [], 'every write is on disk once acknowledged');
      const { serials, nodes } = onDisk(path);
      assert.equal(serials.length, 40);
      for (let i = 0; i < 20; i++) assert.equal(nodes[`node-${i}`], sampleCertificate(2 * i).serial);
    });

    test('after close, insertNodeCertificate is refused and nothing is written', async () => {
      const { store, path } = await storeWithNodes(writer, 1);
      await store.close();
      await assert.rejects(
        store.insertNodeCertificate(sampleCertificate(1), { id: 'node-0', from: ['UP'], to: 'UP', at: AT }),
        /closed/,
      );
      assert.deepEqual(onDisk(path), { serials: [], nodes: { 'node-0': 'aa' } });
    });

    test('kill -9 with 32 node renewals in flight loses no acknowledged certificate or node pointer', async (t) => {
      const { store, path } = await storeWithNodes(writer, 32);
      await store.close();
      const child = spawn(
        process.execPath,
        [fileURLToPath(new URL('./sqlite-node-certificates-child.ts', import.meta.url)), path, writer, '32'],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      t.after(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
      const acknowledged: [string, string][] = [];
      let partial = '';
      await new Promise<void>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code, signal) => {
          if (signal === 'SIGKILL') resolve();
          else reject(new Error(`the child exited on its own (code ${code})`));
        });
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
          const lines = (partial + chunk).split('\n');
          partial = lines.pop() ?? '';
          for (const line of lines) acknowledged.push(line.split(' ') as [string, string]);
          if (acknowledged.length >= 400 && child.exitCode === null && child.signalCode === null)
            child.kill('SIGKILL');
        });
      });
      assert.ok(acknowledged.length >= 400);
      const { serials, nodes } = onDisk(path);
      const stored = new Set(serials);
      assert.deepEqual(
        acknowledged.filter(([, serial]) => !stored.has(serial)),
        [],
        'every acknowledged certificate survives kill -9',
      );
      // Each node's writes are one after another with rising serials: on disk, at least the last acknowledged.
      const lastAcknowledged = new Map(acknowledged);
      const behind = [...lastAcknowledged].filter(
        ([id, serial]) => Number.parseInt(nodes[id] ?? '0', 16) < Number.parseInt(serial, 16),
      );
      assert.deepEqual(behind, [], 'every acknowledged node pointer survives kill -9');
    });
  });
}

describe('the group commit of certificate rows with node steps (commitCertificateRows)', () => {
  const transitionSql = `UPDATE nodes SET state = ?, updated_at = ?, certificate_serial = ? WHERE id = ?
    RETURNING ${NODE_COLUMNS.join(', ')}`;

  async function fileWithNodes(t: { after: (fn: () => Promise<void>) => void }) {
    const { store, path } = await storeWithNodes('inline', 3);
    await store.close();
    const db = new DatabaseSync(path);
    t.after(async () => db.close());
    return { db, path };
  }

  const rowOf = (n: number) => certificateParams(sampleCertificate(n)) as CertificateWrite['row'];
  const stepFor = (n: number) => ({
    id: `node-${n}`,
    from: ['UP'],
    to: 'UP',
    at: AT.getTime() + 1000,
    certificateSerial: sampleCertificate(n).serial,
  });

  test('a node step that breaks a constraint undoes its own certificate row; the rest of the batch is committed', async (t) => {
    const { db, path } = await fileWithNodes(t);
    // For node-1 only, the step writes NULL into a NOT NULL column.
    const breaking = db.prepare(`UPDATE nodes SET state = ?, updated_at = ?, certificate_serial = ?,
        token_id = CASE WHEN id = 'node-1' THEN NULL ELSE token_id END WHERE id = ?
        RETURNING ${NODE_COLUMNS.join(', ')}`);
    const statements = {
      insert: db.prepare(INSERT_CERTIFICATE),
      getNode: db.prepare(`SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE id = ?`),
      transitionNode: breaking,
    };
    const results = commitCertificateRows(
      db,
      statements,
      [0, 1, 2].map((n) => ({ row: rowOf(n), node: stepFor(n) })),
    );
    assert.ok('change' in results[0] && results[0].change?.previous === 'UP');
    assert.ok('error' in results[1]);
    assert.match(String((results[1] as { error: Error }).error.message), /NOT NULL/);
    assert.ok('change' in results[2] && results[2].change !== null);
    assert.deepEqual(onDisk(path), {
      serials: [sampleCertificate(0).serial, sampleCertificate(2).serial],
      nodes: { 'node-0': sampleCertificate(0).serial, 'node-1': 'aa', 'node-2': sampleCertificate(2).serial },
    });
  });

  test('a step that fails otherwise fails the whole batch: no row and no node is written', async (t) => {
    const { db, path } = await fileWithNodes(t);
    const statements = {
      insert: db.prepare(INSERT_CERTIFICATE),
      // Not a constraint: malformed JSON is an SQLITE_ERROR.
      getNode: db.prepare("SELECT json('{not json') AS state WHERE ? IS NOT NULL"),
      transitionNode: db.prepare(transitionSql),
    };
    assert.throws(
      () => commitCertificateRows(db, statements, [{ row: rowOf(0) }, { row: rowOf(1), node: stepFor(1) }]),
      /malformed JSON/,
    );
    assert.deepEqual(onDisk(path), {
      serials: [],
      nodes: { 'node-0': 'aa', 'node-1': 'aa', 'node-2': 'aa' },
    });
    assert.equal(db.isTransaction, false);
  });
});
