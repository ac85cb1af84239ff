// The writer thread's side (sqlite-writer.ts ThreadCertificateWriter): its
// own connection to the store file, synchronous=FULL like the main one, and
// one group commit per batch it is sent. The reply for a batch is posted only
// after COMMIT returned, that is after the fsync.
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';
import { type BatchStatements, commitCertificateRows } from './sqlite-writer-batch.ts';
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

const { path, busyTimeoutMs, insertSql, getNodeSql, transitionNodeSql } = workerData as WriterData;
const port = parentPort;
if (port === null) throw new Error('sqlite-writer-worker.ts runs as a worker thread');

let db: DatabaseSync;
let statements: BatchStatements;
try {
  db = new DatabaseSync(path);
  db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
  db.exec('PRAGMA synchronous = FULL'); // per connection: this one's commits are fsynced too
  db.exec('PRAGMA foreign_keys = ON');
  statements = {
    insert: db.prepare(insertSql),
    getNode: db.prepare(getNodeSql),
    transitionNode: db.prepare(transitionNodeSql),
  };
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
    const results = commitCertificateRows(db, statements, request.writes);
    reply = {
      type: 'committed',
      results: results.map((result) => ('error' in result ? { error: serialize(result.error) } : result)),
    };
  } catch (error) {
    reply = { type: 'failed', error: serialize(error) };
  }
  port.postMessage(reply);
});
