// The writer thread's side (sqlite-writer.ts ThreadCertificateWriter): its
// own connection to the store file, synchronous=FULL like the main one, and
// one group commit per batch it is sent. The reply for a batch is posted only
// after COMMIT returned, that is after the fsync.
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';
import { type CertificateRow, commitCertificateRows } from './sqlite-writer-batch.ts';
import type { SerializedError, WriterData, WriterReply, WriterRequest } from './sqlite-writer-protocol.ts';

function serialize(error: unknown): SerializedError {
  const fields = (error ?? {}) as { message?: unknown; code?: unknown; errcode?: unknown; errstr?: unknown };
  return {
    message: typeof fields.message === 'string' ? fields.message : String(error),
    ...(typeof fields.code === 'string' ? { code: fields.code } : {}),
    ...(typeof fields.errcode === 'number' ? { errcode: fields.errcode } : {}),
    ...(typeof fields.errstr === 'string' ? { errstr: fields.errstr } : {}),
  };
}

const { path, busyTimeoutMs, insertSql } = workerData as WriterData;
const port = parentPort;
if (port === null) throw new Error('sqlite-writer-worker.ts runs as a worker thread');

let db: DatabaseSync;
let insert: ReturnType<DatabaseSync['prepare']>;
try {
  db = new DatabaseSync(path);
  db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
  db.exec('PRAGMA synchronous = FULL'); // per connection: this one's commits are fsynced too
  db.exec('PRAGMA foreign_keys = ON');
  insert = db.prepare(insertSql);
} catch (error) {
  port.postMessage({ type: 'failed', error: serialize(error) } satisfies WriterReply);
  port.close();
  throw error;
}
port.postMessage({ type: 'ready' } satisfies WriterReply);

port.on('message', (request: WriterRequest) => {
  if (request.type === 'close') {
    db.close();
    port.close();
    return;
  }
  let reply: WriterReply;
  try {
    const errors = commitCertificateRows(db, insert, request.rows as CertificateRow[]);
    reply = { type: 'committed', errors: errors.map((error) => (error === null ? null : serialize(error))) };
  } catch (error) {
    reply = { type: 'failed', error: serialize(error) };
  }
  port.postMessage(reply);
});
