// One worker process of `sigil server --workers N` (forked by worker-pool.ts
// through worker-entry.ts). It serves the gRPC API on the primary's port
// (SO_REUSEPORT: the kernel spreads connections over the processes) from
// the same data directory, store and store key, with the authority's
// maintenance timer off: bootstrap, rotation, CRLs, admin.pem and the HTTP
// side belong to the primary alone. It serves the primary's TLS identity,
// renewed when the primary's is, and exits as soon as the IPC channel closes
// (the primary is gone), so a worker never outlives its primary.
import { ServerMaterialSource } from '../authority/server-material.ts';
import { firstLineOf } from '../errors.ts';
import { createLogger, type Logger, type LogLevel } from '../logging.ts';
import type { Store } from '../store/store.ts';
import { auditLog } from './audit-log.ts';
import { openAuthorityOn, openDeploymentStore } from './authority-wiring.ts';
import { startGrpcSide } from './grpc-side.ts';
import { createServerMetrics } from './metrics-registry.ts';
import { loadStoreKey, parseStoreKey, STORE_KEY_ENV } from './store-key.ts';
import { ForwardedCertificateWrites } from './worker-certificate-writes.ts';
import { StoreEventRelay } from './worker-event-relay.ts';
import { WorkerIdentityLock } from './worker-identity-locks.ts';
import {
  type FromWorker,
  type ToWorker,
  WORKER_RESTART_EXIT_CODE,
  type WorkerStart,
} from './worker-messages.ts';

function send(message: FromWorker): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send?.(message, undefined, {}, () => resolve())) resolve();
  });
}

/** Leaves once what was sent is out: closing the IPC channel ends the process (see runWorker). */
async function leave(exitCode: number, last?: FromWorker): Promise<void> {
  process.exitCode = exitCode;
  if (last) await send(last);
  if (process.connected) process.disconnect();
}

/** Runs this process as a worker: waits for the primary's start message, then serves until told to drain. */
export function runWorker(): void {
  if (!process.send) {
    process.stderr.write('sigil: a server worker is started by `sigil server --workers N`, not directly\n');
    process.exit(1);
  }
  // The primary is gone (crashed, killed): stop at once, serving nothing it no longer supervises.
  process.once('disconnect', () => process.exit());
  // Signals go to the primary, which drains its workers itself (a terminal's ^C reaches the whole group).
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  process.once('message', (message: ToWorker) => {
    if (message.type !== 'start') return;
    serve(message).catch((error: unknown) => leave(1, { type: 'failed', message: firstLineOf(error) }));
  });
}

async function serve(start: WorkerStart): Promise<void> {
  const log = createLogger({ level: start.logLevel as LogLevel, base: { worker: start.index } });
  const storeKey =
    start.storeKey !== null
      ? parseStoreKey(start.storeKey)
      : loadStoreKey({ dataDir: start.dataDir, environment: process.env[STORE_KEY_ENV] }).key;
  const closers: (() => Promise<unknown>)[] = [];
  try {
    const inner = await openDeploymentStore(start.storeSpec, start.dataDir, {
      log,
      // PostgreSQL events missed: a fresh worker re-reads everything (and rotates nothing, unlike maintain()).
      onEventGap: () => restart(log, 'store events may have been missed'),
    });
    closers.push(() => inner.close());
    const relay = start.relayEvents
      ? new StoreEventRelay(inner, (error) => log.warn({ err: error }, 'store problem'))
      : null;
    relay?.sendTo((event) => void send({ type: 'event', event }));
    const relayed: Store = relay?.store ?? inner;
    const writes = start.forwardInserts
      ? new ForwardedCertificateWrites(relayed, (request) => void send(request))
      : null;
    const identityLock = new WorkerIdentityLock((request) => void send(request));
    process.once('disconnect', () => {
      writes?.failAll();
      identityLock.failAll();
    });
    const store: Store = writes?.store ?? relayed;

    // Listening from here on: an event made elsewhere while the authority loads its state is not lost.
    const material = new ServerMaterialSource(start.material, (error) =>
      log.warn({ err: error }, 'server certificate rotation failed'),
    );
    const metrics = createServerMetrics();
    let drain: ((graceMs: number) => Promise<void>) | null = null;
    let draining = false;
    process.on('message', (message: ToWorker) => {
      if (message.type === 'event') relay?.deliver(message.event);
      else if (message.type === 'material') material.set(message.material);
      else if (message.type === 'inserted') writes?.settle(message);
      else if (message.type === 'locked') identityLock.settle(message);
      else if (message.type === 'metrics') {
        void metrics.registry
          .getMetricsAsJSON()
          .then((report) => send({ type: 'metrics-report', id: message.id, metrics: report }));
      } else if (message.type === 'drain' && !draining) {
        draining = true;
        void (drain ? drain(message.graceMs) : leave(0));
      }
    });

    const writeAudit = auditLog(log);
    const { authority } = await openAuthorityOn(store, {
      replicaId: start.replicaId,
      storeKey,
      storeKind: start.storeKind,
      serverAddresses: start.serverAddresses,
      log,
      timers: false,
      identityLock,
      crlBaseUrl: () => start.crlBaseUrl ?? undefined,
      onAudit: (event) => {
        writeAudit(event);
        metrics.server.record(event);
      },
    });
    closers.push(() => authority.close());
    const grpc = await startGrpcSide({
      authority,
      metrics,
      listen: { host: start.host, port: start.port },
      log,
      reusePort: true,
      material,
    });
    closers.push(() => grpc.close(0));
    drain = async (graceMs) => {
      grpc.endStreams();
      // Let the watchers' final status frames go out before the GOAWAY (as shutdown.ts does).
      await new Promise((resolve) => setImmediate(resolve));
      await grpc.close(graceMs);
      await authority.close();
      await inner.close();
      await leave(0);
    };
    log.debug({ pid: process.pid, port: start.port }, 'worker serving');
    await send({ type: 'ready', pid: process.pid });
  } catch (error) {
    for (const close of closers.reverse()) await close().catch(() => {});
    throw error;
  }
}

/** Exits with the code that tells the primary to start this worker afresh. */
function restart(log: Logger, why: string): void {
  log.warn(`${why}; restarting this worker to re-read state`);
  void leave(WORKER_RESTART_EXIT_CODE);
}
