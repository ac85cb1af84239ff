// The primary's side of `sigil server --workers N`: forks N-1 worker processes
// (worker-entry.ts, same Node and execArgv, an IPC channel), hands each what
// to open and the server's TLS identity, and waits until all serve. Then it
// relays store events between them (worker-event-relay.ts), pushes renewed
// server certificates, restarts a worker that dies (with backoff, logged) and,
// on close, drains them all. Workers exit when the channel closes, so none
// outlives the primary, however the primary ends.
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SigilError } from '../errors.ts';
import type { Logger } from '../logging.ts';
import type { MaterialSource } from '../pki/material.ts';
import type { Store } from '../store/store.ts';
import { insertForWorker } from './worker-certificate-writes.ts';
import type { StoreEventRelay } from './worker-event-relay.ts';
import type { PrimaryIdentityLocks } from './worker-identity-locks.ts';
import type { FromWorker, ToWorker, WorkerStart } from './worker-messages.ts';

/** How long a worker may take from fork to serving. */
const WORKER_START_TIMEOUT_MS = 60_000;
/** Restart delays: doubling from the first to the last; reset once a worker has served this long. */
const RESTART_FIRST_DELAY_MS = 500;
const RESTART_MAX_DELAY_MS = 30_000;
const RESTART_RESET_AFTER_MS = 60_000;
/** After the grace period, a worker still draining is killed. */
const DRAIN_KILL_MARGIN_MS = 5_000;

/** The worker entry next to this file: .ts in the repository, .js in the built package. */
const WORKER_ENTRY = fileURLToPath(
  new URL(`./worker-entry.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url),
);

export interface WorkerPoolOptions {
  /** Worker processes besides the primary. */
  readonly count: number;
  /** What every worker opens (WorkerStart without its type, index and material). */
  readonly start: Omit<WorkerStart, 'type' | 'index' | 'material'>;
  /** The primary's store: where forwarded certificate inserts go (WorkerStart.forwardInserts). */
  readonly store: Store;
  /** The primary's server identity, served by every worker too. */
  readonly material: MaterialSource;
  /** SQLite: the primary's store relay; null when the store reaches every process itself. */
  readonly relay: StoreEventRelay | null;
  /** Each identity's issuance decisions, one at a time across all processes. */
  readonly identityLocks: PrimaryIdentityLocks;
  readonly log: Logger;
}

interface Slot {
  readonly index: number;
  child: ChildProcess | null;
  /** Its child serves (sent ready). */
  ready: boolean;
  startedAt: number;
  failures: number;
  restartTimer: NodeJS.Timeout | null;
}

export class WorkerPool {
  readonly #options: WorkerPoolOptions;
  readonly #slots: Slot[];
  /** Scrapes waiting for workers' metrics, by request id. */
  readonly #metricsWaiting = new Map<number, (metrics: object[]) => void>();
  #nextMetricsId = 1;
  #closing = false;
  #unsubscribeMaterial: () => void = () => {};

  private constructor(options: WorkerPoolOptions) {
    this.#options = options;
    this.#slots = Array.from({ length: options.count }, (_, i) => ({
      index: i + 1,
      child: null,
      ready: false,
      startedAt: 0,
      failures: 0,
      restartTimer: null,
    }));
  }

  /** Forks the workers; resolves once every one serves, else stops those started and fails naming the worker's error. */
  static async start(options: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(options);
    options.relay?.sendTo((event) => pool.#broadcast({ type: 'event', event }, null));
    pool.#unsubscribeMaterial = options.material.subscribe((material) =>
      pool.#broadcast({ type: 'material', material }, null),
    );
    const started = await Promise.allSettled(pool.#slots.map((slot) => pool.#launch(slot)));
    const failed = started.find((result) => result.status === 'rejected');
    if (failed) {
      await pool.close(0);
      throw failed.reason;
    }
    return pool;
  }

  /** The process IDs of the running workers. */
  pids(): number[] {
    return this.#slots.flatMap((slot) => (slot.child?.pid !== undefined ? [slot.child.pid] : []));
  }

  /**
   * Every serving worker's metrics (registry.getMetricsAsJSON()); a worker
   * that has not answered within `timeoutMs` is left out, and logged.
   */
  async metricsOfWorkers(timeoutMs: number): Promise<object[][]> {
    const asked = this.#slots.flatMap((slot) => {
      const child = slot.child;
      if (!child || !slot.ready) return [];
      const id = this.#nextMetricsId++;
      return [
        new Promise<object[] | null>((resolve) => {
          const timer = setTimeout(() => {
            this.#metricsWaiting.delete(id);
            this.#options.log.warn(
              { worker: slot.index },
              'server worker did not report its metrics in time',
            );
            resolve(null);
          }, timeoutMs);
          this.#metricsWaiting.set(id, (metrics) => {
            clearTimeout(timer);
            resolve(metrics);
          });
          this.#send(child, { type: 'metrics', id });
        }),
      ];
    });
    return (await Promise.all(asked)).filter((metrics) => metrics !== null);
  }

  /** Drains every worker (running calls get up to `graceMs`), killing any still there after a margin. */
  async close(graceMs: number): Promise<void> {
    this.#closing = true;
    this.#unsubscribeMaterial();
    await Promise.all(
      this.#slots.map(async (slot) => {
        if (slot.restartTimer) clearTimeout(slot.restartTimer);
        const child = slot.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        // One still starting has nothing to drain: closing its channel ends it.
        if (slot.ready) this.#send(child, { type: 'drain', graceMs });
        else if (child.connected) child.disconnect();
        const kill = setTimeout(() => child.kill('SIGKILL'), graceMs + DRAIN_KILL_MARGIN_MS);
        await exited;
        clearTimeout(kill);
      }),
    );
  }

  /** Forks the slot's worker and resolves once it serves. */
  #launch(slot: Slot, restart = false): Promise<void> {
    const { log } = this.#options;
    const child = fork(WORKER_ENTRY, [], {
      execArgv: process.execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    slot.child = child;
    slot.ready = false;
    slot.startedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      let failure: string | null = null;
      const timer = setTimeout(() => {
        failure = `did not start within ${WORKER_START_TIMEOUT_MS / 1000} s`;
        child.kill('SIGKILL');
      }, WORKER_START_TIMEOUT_MS);
      child.on('message', (message: FromWorker) => {
        if (message.type === 'ready') {
          slot.ready = true;
          clearTimeout(timer);
          log.debug({ worker: slot.index, pid: message.pid }, 'worker serving');
          resolve();
        } else if (message.type === 'failed') {
          failure = message.message;
        } else if (message.type === 'metrics-report') {
          const waiting = this.#metricsWaiting.get(message.id);
          this.#metricsWaiting.delete(message.id);
          waiting?.(message.metrics);
        } else if (message.type === 'lock' || message.type === 'unlock') {
          this.#options.identityLocks.handle(slot.index, message, (grant) => this.#send(child, grant));
        } else if (message.type === 'insert') {
          void insertForWorker(this.#options.store, message).then((reply) => this.#send(child, reply));
        } else if (message.type === 'event') {
          // A store event made in that worker: to this process's subscribers and the other workers.
          this.#options.relay?.deliver(message.event);
          this.#broadcast(message, child);
        }
      });
      child.once('error', (error) => {
        failure ??= error.message;
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        this.#options.identityLocks.releaseAll(slot.index);
        const ready = slot.ready;
        if (slot.child === child) {
          slot.child = null;
          slot.ready = false;
        }
        const how = signal ?? `exit code ${code}`;
        if (!ready) {
          reject(
            new SigilError(
              'failed_precondition',
              `server worker ${slot.index} did not start: ${failure ?? `it ended (${how})`}`,
            ),
          );
          if (!restart) return;
        }
        if (!this.#closing) this.#scheduleRestart(slot, how);
      });
      this.#send(child, {
        ...this.#options.start,
        type: 'start',
        index: slot.index,
        material: this.#options.material.current(),
      });
    });
  }

  #scheduleRestart(slot: Slot, how: string): void {
    const { log } = this.#options;
    if (Date.now() - slot.startedAt >= RESTART_RESET_AFTER_MS) slot.failures = 0;
    const delay = Math.min(RESTART_FIRST_DELAY_MS * 2 ** slot.failures, RESTART_MAX_DELAY_MS);
    slot.failures += 1;
    log.error({ worker: slot.index, exit: how, restartInMs: delay }, 'server worker stopped; restarting it');
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      if (this.#closing) return;
      this.#launch(slot, true).then(
        () => log.info({ worker: slot.index, pid: slot.child?.pid }, 'server worker restarted'),
        (error: unknown) => log.error({ err: error, worker: slot.index }, 'server worker restart failed'),
      );
    }, delay);
  }

  #broadcast(message: ToWorker, except: ChildProcess | null): void {
    for (const slot of this.#slots) {
      if (slot.child && slot.child !== except) this.#send(slot.child, message);
    }
  }

  #send(child: ChildProcess, message: ToWorker): void {
    // A worker that just died is restarted and reads the store afresh: nothing to deliver to it.
    if (child.connected) child.send(message, (error) => error && undefined);
  }
}
