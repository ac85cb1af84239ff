// What bench/server.ts (and bench/soak.ts) and their load-generating child
// (server-client.ts) exchange over IPC, and the constants both sides use.
import type { TlsMaterial } from '../../src/pki/material.ts';

/** A sigil server under load: its address and the admin identity the bench signs with. */
export interface SigilTarget {
  /** HOST:PORT of the gRPC API. */
  readonly address: string;
  readonly trustDomain: string;
  /** Admin certificate and key (Sign is admin-only), trusting the data directory's ca.pem. */
  readonly admin: TlsMaterial;
}

/** A `cfssl serve` under load. */
export interface CfsslTarget {
  /** https://127.0.0.1:PORT (HTTP/2 over TLS, one connection) or http://127.0.0.1:PORT (HTTP/1.1 keep-alive). */
  readonly url: string;
  /** The root to trust over TLS; null in plaintext. */
  readonly rootPem: string | null;
}

/** One thing the child can drive in timed slices, named in `setup`. */
export type SubjectSpec =
  /**
   * sigil Sign on `server`: SPKI + proof of possession (the fast path) or a
   * PKCS#10 CSR (the very CSR bytes cfssl gets), over `connections` gRPC
   * channels (HTTP/2 connections), the calls in flight spread over them.
   */
  | {
      readonly kind: 'sigil';
      readonly server: string;
      readonly path: 'possession' | 'csr';
      readonly connections: number;
    }
  /** cfssl serve on `server`, POST /api/v1/cfssl/sign with the same kind of CSR. */
  | { readonly kind: 'cfssl'; readonly server: string };

export type ToClient =
  | {
      readonly type: 'setup';
      readonly sigil: Readonly<Record<string, SigilTarget>>;
      readonly cfssl: Readonly<Record<string, CfsslTarget>>;
      readonly subjects: Readonly<Record<string, SubjectSpec>>;
      /** Calls (requests) in flight per subject. */
      readonly concurrency: number;
    }
  | { readonly type: 'run'; readonly subject: string; readonly maxMs: number; readonly maxOps: number }
  /**
   * One enrolment batch on sigil server `server`: create an auto-approve join
   * token with `count` uses (untimed), make `count` fresh Ed25519 keys and
   * their Register proofs (untimed), then time `count` Enrolment.Register
   * calls, `concurrency` in flight.
   */
  | { readonly type: 'enrol'; readonly server: string; readonly count: number; readonly concurrency: number }
  | { readonly type: 'teardown' };

export interface Sample {
  /** Operations that succeeded (a certificate came back). */
  readonly ops: number;
  readonly failures: number;
  readonly ms: number;
  /** Up to a few distinct error messages. */
  readonly errors: readonly string[];
}

export type FromClient =
  | { readonly type: 'ok' }
  | { readonly type: 'sample'; readonly sample: Sample }
  | { readonly type: 'error'; readonly message: string };

/** Every call gets a deadline, so a lost call fails instead of hanging the bench. */
export const CALL_DEADLINE_MS = 10_000;

/** Keys (and CSRs, proofs) made up front and used in turn, so the client's load is the calls, not keygen. */
export const KEY_POOL_SIZE = 256;

/** Sign/Renew proofs carry a minute timestamp the server accepts for ±5 minutes: remade when older than this. */
export const PROOF_MAX_AGE_MS = 2 * 60_000;

/** The names every signed certificate carries: one DNS SAN and one SPIFFE URI SAN. */
export function leafNames(
  trustDomain: string,
  index: number,
): { dns: string; uri: string; commonName: string } {
  return {
    commonName: `bench-${index}`,
    dns: `bench-${index}.bench.internal`,
    uri: `spiffe://${trustDomain}/bench/leaf-${index}`,
  };
}
