// A running server's graceful shutdown, in order: readiness off, admin.pem
// renewal stopped, long-lived streams ended, gRPC stops accepting and drains
// running calls (grace period, then cut) here and in every worker process
// (--workers) at the same time, HTTP side closed, authority
// stopped, store closed. Idempotent: every call gets the one shutdown.
import type { Logger } from '../logging.ts';

/** How long running calls may finish when none is given. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

export interface ShutdownSteps {
  readonly log: Logger;
  readonly stopServing: () => void;
  readonly stopRenewal: () => void;
  readonly grpc: { endStreams(): void; close(graceMs: number): Promise<void> };
  /** The other processes of --workers; null when this one serves alone. */
  readonly workers: { close(graceMs: number): Promise<void> } | null;
  readonly http: { close(): Promise<void> };
  readonly authority: { close(): Promise<void> };
  readonly store: { close(): Promise<void> };
}

export function shutdownInOrder(steps: ShutdownSteps): (graceMs?: number) => Promise<void> {
  const { log } = steps;
  let closing: Promise<void> | null = null;
  return (graceMs = DEFAULT_SHUTDOWN_GRACE_MS) => {
    closing ??= (async () => {
      steps.stopServing();
      steps.stopRenewal();
      log.info({ graceMs }, 'shutting down: draining calls');
      steps.grpc.endStreams();
      // Let the watchers' final status frames go out before the GOAWAY.
      await new Promise((resolve) => setImmediate(resolve));
      await Promise.all([steps.grpc.close(graceMs), steps.workers?.close(graceMs)]);
      log.debug('gRPC listener closed');
      await steps.http.close();
      log.debug('HTTP listener closed');
      await steps.authority.close();
      await steps.store.close();
      log.info('stopped');
    })();
    return closing;
  };
}
