// What the main thread and the SQLite writer thread exchange
// (sqlite-writer.ts, sqlite-writer-worker.ts).
import type { CertificateWrite, NodeChange } from './sqlite-writer-batch.ts';

/** The SQL the writer thread prepares (sqlite.ts owns the statements and their columns). */
export interface WriterStatementsSql {
  /** INSERT INTO certificates. */
  readonly insertSql: string;
  /** The node's row by id. */
  readonly getNodeSql: string;
  /** UPDATE nodes … RETURNING, bound as (to, at, serial, id). */
  readonly transitionNodeSql: string;
}

export interface WriterData extends WriterStatementsSql {
  readonly path: string;
  readonly busyTimeoutMs: number;
}

/** An error as it crosses the thread boundary: node:sqlite's fields kept. */
export interface SerializedError {
  readonly message: string;
  readonly code?: string;
  readonly errcode?: number;
  readonly errstr?: string;
}

/** A write's result as it crosses the thread boundary (sqlite-writer-batch.ts WriteResult). */
export type SerializedResult = { readonly error: SerializedError } | { readonly change: NodeChange | null };

export type WriterRequest =
  | { readonly type: 'commit'; readonly writes: readonly CertificateWrite[] }
  | { readonly type: 'close' };

export type WriterReply =
  | { readonly type: 'ready' }
  /** The batch is committed (fsynced); per write the constraint it broke, or its node's change. */
  | { readonly type: 'committed'; readonly results: readonly SerializedResult[] }
  /** Nothing of the batch was written (or the connection did not open). */
  | { readonly type: 'failed'; readonly error: SerializedError };
