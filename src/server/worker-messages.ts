// What the primary of `sigil server --workers N` and its worker processes
// say to each other over the IPC channel of child_process.fork (JSON: in
// paired rounds it cost less CPU per forwarded insert than fork's "advanced"
// serialization, 130-187 µs against 161-218 µs, all of it counted).
// Nothing secret travels on argv or through a file: the store key comes from
// the data directory or SIGIL_STORE_KEY in each process, and the server's TLS
// identity (its key lives only in memory) is handed over on this channel.
import type { TlsMaterial } from '../pki/material.ts';
import type { StoreKind } from '../store/open-store.ts';
import type { InsertReply, InsertRequest } from './worker-certificate-writes.ts';
import type { LockGrant, LockRequest } from './worker-identity-locks.ts';

/** Primary -> worker, once, right after the fork: what to open and where to listen. */
export interface WorkerStart {
  readonly type: 'start';
  /** 1..N-1 (the primary is 0): on every log line of the worker as `worker`. */
  readonly index: number;
  readonly dataDir: string;
  /** "sqlite" or a postgres:// URL. */
  readonly storeSpec: string;
  readonly storeKind: StoreKind;
  readonly replicaId: string;
  /** The primary's bound gRPC address: the workers listen on the same port (SO_REUSEPORT). */
  readonly host: string;
  readonly port: number;
  readonly serverAddresses: readonly string[];
  readonly crlBaseUrl: string | null;
  readonly logLevel: string;
  /** The primary's server TLS identity, served by every process. */
  readonly material: TlsMaterial;
  /** Store events travel through the primary (SQLite); PostgreSQL's LISTEN reaches every process itself. */
  readonly relayEvents: boolean;
  /** SQLite: certificate inserts are made by the primary (worker-certificate-writes.ts). */
  readonly forwardInserts: boolean;
  /** Only when the primary was given the key in code (ServerOptions.storeKey), base64; else read as the primary reads it. */
  readonly storeKey: string | null;
}

/** Primary -> worker. */
export type ToWorker =
  | WorkerStart
  /** A store event made in another process (worker-event-relay.ts encodes it). */
  | { readonly type: 'event'; readonly event: string }
  /** The server certificate was renewed. */
  | { readonly type: 'material'; readonly material: TlsMaterial }
  /** Stop accepting, drain running calls for up to graceMs, close and exit. */
  | { readonly type: 'drain'; readonly graceMs: number }
  /** A scrape of /metrics on the primary: send your registry's metrics (worker-metrics.ts). */
  | { readonly type: 'metrics'; readonly id: number }
  | InsertReply
  | LockGrant;

/** Worker -> primary. */
export type FromWorker =
  | { readonly type: 'ready'; readonly pid: number }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'event'; readonly event: string }
  /** The answer to a 'metrics' request: `registry.getMetricsAsJSON()`. */
  | { readonly type: 'metrics-report'; readonly id: number; readonly metrics: object[] }
  | InsertRequest
  | LockRequest;

/** The exit code of a worker that stopped to be started afresh (e.g. it may have missed store events). */
export const WORKER_RESTART_EXIT_CODE = 75;
