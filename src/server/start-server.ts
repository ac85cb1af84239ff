// The control plane, assembled: what `sigil server` runs, and what tests
// start in process. Each step is a file of its own:
//
//   start-plan.ts         flags checked and both ports free, before anything is touched
//   server-authority.ts   data directory, replica ID, store key, store, --join, authority
//   bootstrap-identity.ts after a bootstrap, admin.pem / admin.key
//   grpc-side.ts          the API on sigil's mTLS server (one port; Enrolment callable
//                         without a client certificate)
//   control-plane-http.ts the HTTP side (CRLs, metrics, health, readiness.ts) on another
//   advertised.ts         the addresses and CRL URL clients are told, known once both listen
//   admin-renewal.ts      admin.pem renewed while the server runs
//   worker-pool.ts        --workers N: N-1 more processes serving the same port
//   shutdown.ts           close() in order, draining running calls

import type { Registry } from 'prom-client';
import type { Authority } from '../authority/authority.ts';
import type { StartupMode } from '../authority/bootstrap.ts';
import { invalid } from '../errors.ts';
import { ADMIN_CERTIFICATE_FILE, ADMIN_KEY_FILE, CA_BUNDLE_FILE } from '../files/data-directory-names.ts';
import { type Logger, silentLogger } from '../logging.ts';
import { AdminRenewal } from './admin-renewal.ts';
import { Advertised } from './advertised.ts';
import { auditLog } from './audit-log.ts';
import { type BootstrapInfo, writeBootstrapIdentity } from './bootstrap-identity.ts';
import { startControlPlaneHttp } from './control-plane-http.ts';
import { type ServerInfoFile, writeCaBundle, writeServerInfo } from './data-directory.ts';
import { startGrpcSide } from './grpc-side.ts';
import { formatAddress } from './listen-address.ts';
import { createServerMetrics } from './metrics-registry.ts';
import { Readiness } from './readiness.ts';
import { openServerAuthority } from './server-authority.ts';
import { shutdownInOrder } from './shutdown.ts';
import { planStart } from './start-plan.ts';
import { StoreEventRelay } from './worker-event-relay.ts';
import { PrimaryIdentityLocks } from './worker-identity-locks.ts';
import { AggregatedMetrics, WORKER_METRICS_TIMEOUT_MS } from './worker-metrics.ts';
import { WorkerPool } from './worker-pool.ts';

export interface ServerOptions {
  /** Created 0700 when missing. */
  readonly dataDir: string;
  /** HOST:PORT of the gRPC API; port 0 picks a free port. Default 127.0.0.1:7443. */
  readonly listen?: string;
  /** HOST:PORT of the HTTP side (loopback only); port 0 picks a free port. Default 127.0.0.1:7080. */
  readonly httpListen?: string;
  /** Addresses clients dial (join tokens, server certificate SANs). Default: derived from `listen`. */
  readonly advertise?: readonly string[];
  /**
   * The URL the HTTP side is published at (a proxy in front of it): leaves
   * name <url>/crl/<issuer> as their CRL distribution point. Default: the
   * HTTP side's own URL when clients reach the gRPC side on loopback only,
   * else none (crl-distribution.ts).
   */
  readonly httpAdvertise?: string;
  /** "sqlite" (default; <dataDir>/sigil.db) or a postgres:// URL. */
  readonly store?: string;
  /** Used when bootstrapping an empty store; default sigil.internal. A different one later is refused. */
  readonly trustDomain?: string;
  /** Used when bootstrapping an empty store (the policy extension's OID); a different one later is refused. */
  readonly policyOid?: string;
  /** Default: the one recorded in the data directory, else a new random one. */
  readonly replicaId?: string;
  /** A replica join token: obtain this replica's intermediate from the replica holding the root key. */
  readonly join?: string;
  /** Base64 store key (SIGIL_STORE_KEY); default: <dataDir>/store.key, created on first start. */
  readonly storeKey?: string;
  readonly logger?: Logger;
  /** Authority maintenance timer (default true). */
  readonly timers?: boolean;
  /**
   * Processes serving the gRPC side (default 1: this one alone). With more,
   * this process forks the others; they serve the same port (SO_REUSEPORT)
   * from the same store, and everything else stays here (worker-pool.ts).
   */
  readonly workers?: number;
}

export interface RunningServer {
  readonly dataDir: string;
  readonly mode: StartupMode;
  /** server.json as written. */
  readonly info: ServerInfoFile;
  readonly serverInfoPath: string;
  /** The bound gRPC address, HOST:PORT. */
  readonly address: string;
  readonly port: number;
  readonly httpUrl: string;
  readonly httpPort: number;
  /** Set when this start bootstrapped the store. */
  readonly bootstrapped: BootstrapInfo | null;
  readonly authority: Authority;
  readonly registry: Registry;
  /** Process IDs of the worker processes serving besides this one (--workers). */
  readonly workerPids: () => number[];
  /** Graceful shutdown (idempotent): drain calls for up to `graceMs` (default 10 s), then close everything. */
  close(graceMs?: number): Promise<void>;
}

/** Start the control plane; resolves once both ports are listening and server.json is written. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const log = options.logger ?? silentLogger();
  const plan = await planStart(options);
  const { dataDir } = plan;
  const workers = checkWorkerCount(options.workers ?? 1);
  // On SQLite a store's events reach only its own process: relayed through this one (worker-event-relay.ts).
  let relay: StoreEventRelay | null = null;
  // Each identity's issuance decisions one at a time across all processes, as within one.
  const identityLocks = workers > 1 ? new PrimaryIdentityLocks() : null;

  // What is open so far, closed in reverse should a later step fail.
  const opened: (() => Promise<unknown>)[] = [];
  try {
    const advertised = new Advertised({
      grpcListen: plan.grpcListen,
      httpListen: plan.httpListen,
      advertise: options.advertise,
      httpAdvertise: plan.httpAdvertise,
    });
    // Metrics first: the authority reports every CA operation (bootstrap included) to the audit sink.
    const metrics = createServerMetrics();
    const writeAudit = auditLog(log);
    const { replicaId, store, authority, mode, bootstrapped } = await openServerAuthority(plan, options, {
      serverAddresses: advertised.addresses,
      crlBaseUrl: advertised.crlBaseUrl,
      onAudit: (event) => {
        writeAudit(event);
        metrics.server.record(event);
      },
      log,
      opened: (close) => opened.push(close),
      ...(identityLocks ? { identityLock: identityLocks } : {}),
      ...(workers > 1 && plan.storeKind === 'sqlite'
        ? {
            decorateStore: (store) => {
              relay = new StoreEventRelay(store, (error) => log.warn({ err: error }, 'store problem'));
              return relay.store;
            },
          }
        : {}),
    });
    const bootstrap = bootstrapped ? writeBootstrapIdentity(dataDir, bootstrapped, log) : null;
    writeCaBundle(dataDir, authority.trustBundlePem());

    const grpc = await startGrpcSide({
      authority,
      metrics,
      listen: plan.grpcListen,
      log,
      reusePort: workers > 1,
    });
    opened.push(() => grpc.close(0));
    advertised.grpcListening(grpc.port);

    const readiness = new Readiness(authority);
    // With workers, /metrics sums every process's (worker-metrics.ts), once they serve.
    const scrape = identityLocks ? new AggregatedMetrics(metrics.registry) : null;
    const http = await startControlPlaneHttp({
      authority,
      metrics,
      ...(scrape ? { scrape } : {}),
      readiness,
      dataDir,
      listen: plan.httpListen,
      log,
    });
    opened.push(() => http.close());
    if (advertised.httpListening(http.port) === undefined) {
      log.info(
        'certificates carry no CRL distribution point: the HTTP side is loopback only and clients dial other addresses (give --http-advertise URL where a proxy publishes it)',
      );
    }
    // Only now is the bootstrap's admin identity delivered: had a listen failed,
    // the next start would issue a new one and show the banner again.
    if (bootstrap) await authority.confirmBootstrap();
    // admin.pem renews itself in its renewal window while the server runs (admin-renewal.ts).
    const adminRenewal = new AdminRenewal({ dataDir, authority, logger: log });
    opened.push(async () => adminRenewal.close());
    await adminRenewal.check();
    if (options.timers !== false) adminRenewal.start();

    const pool = identityLocks
      ? await WorkerPool.start({
          count: workers - 1,
          start: {
            dataDir,
            storeSpec: plan.storeSpec,
            storeKind: plan.storeKind,
            replicaId,
            host: plan.grpcListen.host,
            port: grpc.port,
            serverAddresses: [...advertised.addresses],
            crlBaseUrl: advertised.crlBaseUrl() ?? null,
            logLevel: log.level,
            relayEvents: relay !== null,
            forwardInserts: relay !== null,
            storeKey: options.storeKey ?? null,
          },
          material: authority.serverMaterial(),
          store,
          relay,
          identityLocks,
          log,
        })
      : null;
    if (pool) opened.push(() => pool.close(0));
    if (pool) scrape?.includeWorkers(() => pool.metricsOfWorkers(WORKER_METRICS_TIMEOUT_MS));

    const address = formatAddress(plan.grpcListen.host, grpc.port);
    const info: ServerInfoFile = {
      version: 1,
      listen: address,
      httpListen: formatAddress(plan.httpListen.host, http.port),
      httpUrl: http.url,
      advertise: [...advertised.addresses],
      rootFingerprint: authority.rootFingerprint,
      trustDomain: authority.trustDomain,
      replicaId,
      store: plan.storeKind,
      adminCertificate: ADMIN_CERTIFICATE_FILE,
      adminKey: ADMIN_KEY_FILE,
      caBundle: CA_BUNDLE_FILE,
      pid: process.pid,
      startedAt: new Date().toISOString(),
    };
    const serverInfoPath = writeServerInfo(dataDir, info);
    log.info(
      {
        listen: address,
        http: http.url,
        replicaId,
        trustDomain: authority.trustDomain,
        store: plan.storeKind,
        mode,
        workers,
      },
      'serving',
    );

    return {
      dataDir,
      mode,
      info,
      serverInfoPath,
      address,
      port: grpc.port,
      httpUrl: http.url,
      httpPort: http.port,
      bootstrapped: bootstrap,
      authority,
      registry: metrics.registry,
      workerPids: () => pool?.pids() ?? [],
      close: shutdownInOrder({
        log,
        stopServing: () => readiness.stopServing(),
        stopRenewal: () => adminRenewal.close(),
        grpc,
        workers: pool,
        http,
        authority,
        store,
      }),
    };
  } catch (error) {
    for (const close of opened.reverse()) await close().catch(() => {});
    throw error;
  }
}

/** Processes at most: more than this is a typo, not a machine. */
export const MAX_WORKERS = 256;

function checkWorkerCount(count: number): number {
  if (!Number.isInteger(count) || count < 1 || count > MAX_WORKERS) {
    throw invalid(`--workers ${count}: give a whole number from 1 to ${MAX_WORKERS}`);
  }
  return count;
}
