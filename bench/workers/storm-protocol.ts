// What bench/storm.ts and its load process (storm-client.ts) exchange over IPC.
import type { TlsMaterial } from '../../src/pki/material.ts';

export type ToStormClient =
  | {
      /**
       * Enrol `nodes` nodes (untimed): an auto-approve join token from the
       * admin, then one Enrolment.Register per node with a fresh P-256 key,
       * `concurrency` in flight. Each node keeps its key and certificate.
       */
      readonly type: 'setup';
      readonly address: string;
      readonly trustDomain: string;
      readonly admin: TlsMaterial;
      readonly nodes: number;
      readonly concurrency: number;
    }
  | {
      /**
       * Every node renews once: its due time is drawn uniformly in
       * [0, windowMs); at that time it opens its own mTLS channel and calls
       * CertificateAuthority.Renew, retrying failures as the agent does
       * (renewal-schedule.ts), until it succeeds or `budgetMs` has passed
       * since the storm began. At most `maxInFlight` nodes are between their
       * first attempt and their success at once (the load process's bound).
       */
      readonly type: 'storm';
      readonly windowMs: number;
      readonly budgetMs: number;
      readonly maxInFlight: number;
      readonly callTimeoutMs: number;
      /** lean: HTTP/2 + TLS by hand (storm-renew.ts); sigil: grpc-js with sigil's client checks. */
      readonly client: 'lean' | 'sigil';
    }
  | { readonly type: 'teardown' };

export interface SetupReport {
  readonly nodes: number;
  readonly ms: number;
}

export interface StormReport {
  readonly nodes: number;
  /** Nodes that got their new certificate. */
  readonly renewed: number;
  /** Nodes still without one when the budget ran out. */
  readonly unfinished: number;
  /** From the first Renew call of the first node to the last success. */
  readonly ms: number;
  /** Attempts by outcome: OK, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, … */
  readonly attempts: Readonly<Record<string, number>>;
  /** Refusals that carried a retry-after hint (admission control). */
  readonly hinted: number;
  /** A few distinct failure messages. */
  readonly messages: readonly string[];
  /** First attempt → success, per renewed node (ms): p50, p90, p99, max. */
  readonly latency: Percentiles;
  /** Due time → success (includes waiting for the load process's bound). */
  readonly fromDue: Percentiles;
  /** Nodes that had to wait for a slot under maxInFlight. */
  readonly heldBack: number;
  /** Client process CPU during the storm (user + system, ms). */
  readonly clientCpuMs: number;
}

export interface Percentiles {
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export type StormReply =
  | { readonly type: 'ok' }
  | { readonly type: 'sample'; readonly sample: SetupReport | StormReport }
  | { readonly type: 'error'; readonly message: string };

/** The value at quantile q of ascending `sorted` (nearest rank); 0 for no values. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

export function percentiles(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    max: sorted.length === 0 ? 0 : sorted[sorted.length - 1],
  };
}
