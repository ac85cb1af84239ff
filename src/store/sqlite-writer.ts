// Where certificate rows are committed: group commit either on the event loop
// (InlineCertificateWriter, SQLite's fsync blocking it for the commit) or on a
// writer thread with its own connection (ThreadCertificateWriter), which lets
// the event loop go on serving while a batch is fsynced.
//
// Both keep the promise of insertCertificate: it resolves only after its row
// is committed with synchronous=FULL, so an acknowledged certificate survives
// kill -9 (and so is its node's step, for insertNodeCertificate: the same
// transaction). Rows are committed in the order they were written: a batch holds
// whatever arrived since the last one was sent, and one batch is in flight at
// a time (the next one grows while the previous is fsynced).
import type { DatabaseSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import { SigilError } from '../errors.ts';
import {
  type BatchStatements,
  type CertificateWrite,
  commitCertificateRows,
  type NodeChange,
  type WriteResult,
} from './sqlite-writer-batch.ts';
import type {
  SerializedError,
  SerializedResult,
  WriterData,
  WriterReply,
  WriterRequest,
} from './sqlite-writer-protocol.ts';

export interface CertificateWriter {
  /**
   * Resolves once the write is committed, with its node's change (null: no
   * step, or the node unknown or in another state); rejects with the write's
   * own error or its batch's.
   */
  write(write: CertificateWrite): Promise<NodeChange | null>;
  /** Commits what is pending, then lets go of what the writer holds. */
  close(): Promise<void>;
}

interface Pending {
  readonly write: CertificateWrite;
  readonly resolve: (change: NodeChange | null) => void;
  readonly reject: (error: unknown) => void;
}

function settle(batch: readonly Pending[], results: readonly WriteResult[]): void {
  for (let i = 0; i < batch.length; i++) {
    const result = results[i];
    if (result === undefined) batch[i].reject(new SigilError('internal', 'the SQLite writer lost a write'));
    else if ('error' in result) batch[i].reject(result.error);
    else batch[i].resolve(result.change);
  }
}

/** Group commit on the event loop: every row written in one turn of it shares one transaction. */
export class InlineCertificateWriter implements CertificateWriter {
  readonly #db: () => DatabaseSync;
  readonly #statements: () => BatchStatements;
  #pending: Pending[] = [];

  /** `db` and `statements` are asked for at each commit (they throw once the store is closed). */
  constructor(db: () => DatabaseSync, statements: () => BatchStatements) {
    this.#db = db;
    this.#statements = statements;
  }

  write(write: CertificateWrite): Promise<NodeChange | null> {
    return new Promise<NodeChange | null>((resolve, reject) => {
      if (this.#pending.length === 0) setImmediate(() => this.flush());
      this.#pending.push({ write, resolve, reject });
    });
  }

  /** Commits the pending rows now (synchronously). */
  flush(): void {
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    let results: WriteResult[];
    try {
      results = commitCertificateRows(
        this.#db(),
        this.#statements(),
        batch.map((item) => item.write),
      );
    } catch (error) {
      for (const item of batch) item.reject(error);
      return;
    }
    settle(batch, results);
  }

  async close(): Promise<void> {
    this.flush();
  }
}

/** node:sqlite's error back from the writer thread, with the fields callers look at. */
function revive(serialized: SerializedError): Error {
  const error = new Error(serialized.message) as Error & { code?: string; errcode?: number; errstr?: string };
  if (serialized.code !== undefined) error.code = serialized.code;
  if (serialized.errcode !== undefined) error.errcode = serialized.errcode;
  if (serialized.errstr !== undefined) error.errstr = serialized.errstr;
  return error;
}

function reviveResult(result: SerializedResult): WriteResult {
  return 'error' in result ? { error: revive(result.error) } : result;
}

const WORKER_URL = new URL(
  `./sqlite-writer-worker.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`,
  import.meta.url,
);

/**
 * Group commit on a writer thread with its own connection, started at the
 * first write. The thread keeps the process alive only while rows are
 * waiting for their commit.
 */
export class ThreadCertificateWriter implements CertificateWriter {
  readonly #data: WriterData;
  #worker: Worker | null = null;
  #ready = false;
  #pending: Pending[] = [];
  #inFlight: Pending[] | null = null;
  #sendScheduled = false;
  /** Set when the thread failed or stopped: every later write fails with it. */
  #broken: Error | null = null;
  #closing = false;
  #drained: (() => void) | null = null;

  constructor(data: WriterData) {
    this.#data = data;
  }

  write(write: CertificateWrite): Promise<NodeChange | null> {
    if (this.#broken) return Promise.reject(this.#broken);
    return new Promise<NodeChange | null>((resolve, reject) => {
      this.#pending.push({ write, resolve, reject });
      this.#start();
      if (!this.#sendScheduled && this.#inFlight === null) {
        // Let every write of this turn of the event loop join the batch.
        this.#sendScheduled = true;
        setImmediate(() => {
          this.#sendScheduled = false;
          this.#send();
        });
      }
    });
  }

  #start(): void {
    if (this.#worker) return;
    const worker = new Worker(WORKER_URL, { workerData: this.#data });
    this.#worker = worker;
    worker.on('message', (reply: WriterReply) => this.#onReply(reply));
    worker.on('error', (error) => this.#fail(error));
    worker.on('exit', (code) => {
      if (!this.#closing || this.#inFlight || this.#pending.length > 0) {
        this.#fail(
          new SigilError(
            'internal',
            `the SQLite writer thread stopped (exit code ${code}) before committing`,
          ),
        );
      }
    });
  }

  #send(): void {
    const worker = this.#worker;
    if (!worker || !this.#ready || this.#inFlight !== null || this.#broken) return;
    if (this.#pending.length === 0) {
      worker.unref();
      this.#drained?.();
      return;
    }
    const batch = this.#pending;
    this.#pending = [];
    this.#inFlight = batch;
    worker.ref();
    worker.postMessage({ type: 'commit', writes: batch.map((item) => item.write) } satisfies WriterRequest);
  }

  #onReply(reply: WriterReply): void {
    if (reply.type === 'ready') {
      this.#ready = true;
      this.#send();
      return;
    }
    const batch = this.#inFlight;
    if (batch === null) {
      // The connection did not open: nothing was sent yet.
      if (reply.type === 'failed') this.#fail(revive(reply.error));
      return;
    }
    this.#inFlight = null;
    if (reply.type === 'committed') settle(batch, reply.results.map(reviveResult));
    else {
      const error = revive(reply.error);
      for (const item of batch) item.reject(error);
    }
    // Rows that arrived during the commit go now, as the next batch.
    this.#send();
  }

  #fail(error: Error): void {
    if (this.#broken) return;
    this.#broken = error;
    const waiting = [...(this.#inFlight ?? []), ...this.#pending];
    this.#inFlight = null;
    this.#pending = [];
    for (const item of waiting) item.reject(error);
    this.#drained?.();
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    if (!worker || this.#closing) return;
    if ((this.#inFlight !== null || this.#pending.length > 0) && !this.#broken) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
        this.#send();
      });
    }
    this.#closing = true;
    if (this.#broken) {
      await worker.terminate();
      return;
    }
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.ref();
    worker.postMessage({ type: 'close' } satisfies WriterRequest);
    await exited;
  }
}
