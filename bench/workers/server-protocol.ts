// What bench/server.ts and its load-generating child (server-client.ts)
// exchange over IPC, and the constants both sides use.
import type { TlsMaterial } from '../../src/pki/material.ts';

/** The sigil server under load: its address and the admin identity the bench signs with. */
export interface SigilTarget {
  /** HOST:PORT of the gRPC API. */
  readonly address: string;
  readonly trustDomain: string;
  /** Admin certificate and key (Sign is admin-only), trusting the data directory's ca.pem. */
  readonly admin: TlsMaterial;
}

/** What the child can drive in timed slices. */
export type SignSubject =
  /** sigil Sign with SPKI + proof of possession (the fast path). */
  | 'sigil-spki'
  /** sigil Sign with a PKCS#10 CSR. */
  | 'sigil-csr'
  /** cfssl serve, POST /api/v1/cfssl/sign with the same kind of CSR. */
  | 'cfssl';

export type ToClient =
  | {
      readonly type: 'setup';
      readonly sigil: SigilTarget;
      /** http://127.0.0.1:PORT of `cfssl serve`, or null when cfssl is not installed. */
      readonly cfsslUrl: string | null;
      /** Calls (HTTP requests) in flight per subject. */
      readonly concurrency: number;
    }
  | { readonly type: 'run'; readonly subject: SignSubject; readonly maxMs: number; readonly maxOps: number }
  /**
   * One enrolment batch: create an auto-approve join token with `count` uses
   * (untimed), make `count` fresh Ed25519 keys and their Register proofs
   * (untimed), then time `count` Enrolment.Register calls, `concurrency` in flight.
   */
  | { readonly type: 'enrol'; readonly count: number; readonly concurrency: number }
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
