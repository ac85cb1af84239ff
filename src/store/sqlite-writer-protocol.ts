// What the main thread and the SQLite writer thread exchange
// (sqlite-writer.ts, sqlite-writer-worker.ts).
import type { CertificateRow } from './sqlite-writer-batch.ts';

export interface WriterData {
  readonly path: string;
  readonly busyTimeoutMs: number;
  /** The INSERT INTO certificates statement (sqlite.ts owns the column list). */
  readonly insertSql: string;
}

/** An error as it crosses the thread boundary: node:sqlite's fields kept. */
export interface SerializedError {
  readonly message: string;
  readonly code?: string;
  readonly errcode?: number;
  readonly errstr?: string;
}

export type WriterRequest =
  | { readonly type: 'commit'; readonly rows: readonly CertificateRow[] }
  | { readonly type: 'close' };

export type WriterReply =
  | { readonly type: 'ready' }
  /** The batch is committed (fsynced); per row null or the constraint it broke. */
  | { readonly type: 'committed'; readonly errors: readonly (SerializedError | null)[] }
  /** Nothing of the batch was written (or the connection did not open). */
  | { readonly type: 'failed'; readonly error: SerializedError };
