// The control plane, assembled: data directory, store, authority, the gRPC
// API on sigil's mTLS server (one port; Enrolment callable without a client
// certificate) and the HTTP side (CRLs, metrics, health) on another.
//
// startServer() is what `sigil server` runs, and what tests start in process.
// close() shuts down in order: readiness off, revocation watchers ended, gRPC
// stops accepting and drains running calls (grace period, then cut), HTTP
// side closed, authority stopped, store closed.
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { Authority } from '../authority/authority.ts';
import type { StartupMode } from '../authority/bootstrap.ts';
import { invalid, preconditionFailed, SigilError } from '../errors.ts';
import {
  AdminService,
  CertificateAuthorityService,
  DelegationService,
  EnrolmentService,
} from '../gen/sigil/v1/sigil.ts';
import { type Logger, silentLogger } from '../logging.ts';
import { dnsName } from '../pki/names.ts';
import { parsePolicyOid } from '../pki/policy-extension.ts';
import { adminService } from '../services/admin.ts';
import { PUBLIC_METHODS, sigilAuthorizationInterceptor } from '../services/authorization-rules.ts';
import { certificateAuthorityService } from '../services/certificate-authority.ts';
import { DelegateGrants } from '../services/delegate-grants.ts';
import { delegationService } from '../services/delegation.ts';
import { enrolmentService } from '../services/enrolment.ts';
import { type FailureReporter, INTERNAL_ERROR_MESSAGE } from '../services/handlers.ts';
import { ServerMetrics } from '../services/server-metrics.ts';
import { addStandardServices } from '../services/standard-services.ts';
import { MAX_MESSAGE_BYTES } from '../services/validation.ts';
import { openStore, type StoreKind, storeKind } from '../store/open-store.ts';
import type { Store } from '../store/store.ts';
import { TransportMetrics } from '../transport/metrics.ts';
import { MtlsServer } from '../transport/mtls-server.ts';
import { AdminRenewal } from './admin-renewal.ts';
import { auditLog } from './audit-log.ts';
import { defaultCrlBaseUrl, parseHttpAdvertise } from './crl-distribution.ts';
import {
  ADMIN_CERTIFICATE_FILE,
  ADMIN_KEY_FILE,
  CA_BUNDLE_FILE,
  createDataDirectory,
  httpAdminToken,
  refuseLoosePrivateFiles,
  resolveReplicaId,
  type ServerInfoFile,
  writeAdminIdentity,
  writeCaBundle,
  writeServerInfo,
} from './data-directory.ts';
import { isLoopbackHost } from './http-listener.ts';
import { type HttpSide, startHttpSide } from './http-side.ts';
import { checkListenable } from './listen-check.ts';
import { joinReplica } from './replica-join.ts';
import { loadStoreKey, STORE_KEY_ENV } from './store-key.ts';

export const DEFAULT_LISTEN = '127.0.0.1:7443';
export const DEFAULT_HTTP_LISTEN = '127.0.0.1:7080';
export const DEFAULT_DATA_DIR = '.sigil';
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/**
 * What one peer may hold of the control plane (transport/peer-limits.ts).
 * Its clients make short unary calls and at most a few long-lived streams
 * (WatchRevocations, health Watch): a node's agent holds one connection and
 * one stream; an operator tool or service one connection with up to a few
 * dozen calls in flight.
 */
export const CONTROL_PLANE_PEER_LIMITS = Object.freeze({
  maxStreamsPerConnection: 64,
  maxStreamsPerIdentity: 128,
  maxConnectionsPerIdentity: 32,
});
const READINESS_TIMEOUT_MS = 2_000;

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
}

/** What a bootstrap produced (the key itself is only in the file). */
export interface BootstrapInfo {
  readonly trustDomain: string;
  readonly rootFingerprint: string;
  readonly adminSpiffeId: string;
  readonly adminCertificatePath: string;
  readonly adminKeyPath: string;
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
  /** Graceful shutdown (idempotent): drain calls for up to `graceMs` (default 10 s), then close everything. */
  close(graceMs?: number): Promise<void>;
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** "HOST:PORT" (IPv6 in brackets) with port 0..65535; `flag` names the option in errors. */
export function parseListenAddress(text: string, flag: string): ListenAddress {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || port > 65535) {
    throw invalid(
      `${flag} must be HOST:PORT (IPv6 in brackets, e.g. [::1]:7443), got ${JSON.stringify(text)}`,
    );
  }
  return { host: match[1] ?? match[2], port };
}

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]']);

/** What clients dial for a bind address: the address itself, or for a wildcard, loopback and the host name. */
function defaultAdvertised(host: string, port: number): string[] {
  if (!WILDCARDS.has(host)) return [formatAddress(host, port)];
  const out = [formatAddress(host === '::' ? '::1' : '127.0.0.1', port)];
  try {
    out.unshift(formatAddress(dnsName(hostname()).value, port));
  } catch {
    // a host name that is not a valid DNS name is simply not advertised
  }
  return out;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message.split('\n')[0] : String(error);
}

/** Start the control plane; resolves once both ports are listening and server.json is written. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const log = options.logger ?? silentLogger();
  const dataDir = resolve(options.dataDir);
  const grpcListen = parseListenAddress(options.listen ?? DEFAULT_LISTEN, '--listen');
  const httpListen = parseListenAddress(options.httpListen ?? DEFAULT_HTTP_LISTEN, '--http-listen');
  if (!isLoopbackHost(httpListen.host)) {
    throw invalid(
      `--http-listen ${JSON.stringify(options.httpListen)}: the HTTP side is plain HTTP and binds loopback only (127.0.0.1, ::1 or localhost)`,
    );
  }
  const storeSpec = options.store ?? 'sqlite';
  const kind: StoreKind = storeKind(storeSpec);
  // Checked before the data directory is touched: a bad flag changes nothing.
  if (options.policyOid !== undefined) {
    try {
      parsePolicyOid(options.policyOid);
    } catch (error) {
      throw invalid(`--policy-oid: ${describe(error)}`, error);
    }
  }

  const httpAdvertise =
    options.httpAdvertise === undefined ? undefined : parseHttpAdvertise(options.httpAdvertise);
  // Both ports must be free before the data directory is created or bootstrapped (listen-check.ts).
  await checkListenable(grpcListen, '--listen');
  await checkListenable(httpListen, '--http-listen');

  const directory = createDataDirectory(dataDir);
  if (directory.loose) {
    log.warn({ dataDir }, 'the data directory is readable by group or others; chmod 700 it');
  }
  // Before anything is read or written: a private key others can read is refused, like store.key.
  refuseLoosePrivateFiles(dataDir);
  const replicaId = resolveReplicaId(dataDir, options.replicaId);
  const storeKey = loadStoreKey({ dataDir, environment: options.storeKey ?? process.env[STORE_KEY_ENV] });
  if (storeKey.origin === 'created') log.info({ path: join(dataDir, 'store.key') }, 'created the store key');

  const cleanup: (() => Promise<unknown>)[] = [];
  const unwind = async (): Promise<void> => {
    for (const step of cleanup.reverse()) await step().catch(() => {});
  };
  try {
    // Events missed while PostgreSQL's LISTEN connection was down are not
    // replayed; the authority re-reads what it derives from them (revoked
    // serials, CAs) instead. Bound once the authority exists.
    let resync = (): void => {};
    const store: Store = await openStore(storeSpec, dataDir, {
      onError: (error) => log.warn({ err: error }, 'store problem'),
      postgres: {
        onEventGap: (gap) => {
          log.warn({ from: gap.from, to: gap.to }, 'store events may have been missed; re-reading state');
          resync();
        },
      },
    });
    cleanup.push(() => store.close());

    // The advertised addresses go into the server certificate (hosts) and join
    // tokens (host:port). With port 0 the port is known only after listen;
    // the array is updated in place then (the authority reads it at token time).
    const advertised: string[] = options.advertise
      ? [...options.advertise]
      : defaultAdvertised(grpcListen.host, grpcListen.port === 0 ? 1 : grpcListen.port);
    // The CRL distribution point of the leaves issued (crl-distribution.ts); with
    // HTTP port 0 the default is known only once the HTTP side listens.
    let crlBase = httpAdvertise ?? defaultCrlBaseUrl(advertised, httpListen.host, httpListen.port);

    let join: Awaited<ReturnType<typeof joinReplica>> | undefined;
    if (options.join !== undefined && options.join !== '') {
      const cas = await store.listCas();
      // Refused before the token is spent: a join only makes sense on the deployment's own store.
      if (!cas.some((ca) => ca.kind === 'root')) {
        throw preconditionFailed(
          kind === 'sqlite'
            ? "--join needs the deployment's shared PostgreSQL store (--store postgres://…); a SQLite store belongs to one replica"
            : '--join: this store holds no CA yet; give the --store of the deployment you are joining',
        );
      }
      const own = cas.some((ca) => ca.kind === 'intermediate' && ca.replicaId === replicaId);
      if (own) {
        log.info(
          { replicaId },
          'this replica already has its intermediate CA in the store; --join is not needed',
        );
      } else {
        log.info({ replicaId }, 'joining the deployment with a replica join token');
        join = await joinReplica({
          token: options.join,
          replicaId,
          onProgress: (message) => log.info(message),
        });
      }
    }

    // Metrics first: the authority reports every CA operation (bootstrap included) to the audit sink.
    const registry = new Registry();
    const transportMetrics = new TransportMetrics({ registry });
    const serverMetrics = new ServerMetrics(registry);
    collectDefaultMetrics({ register: registry });
    const writeAudit = auditLog(log);

    const opened = await Authority.open({
      store,
      replicaId,
      storeKey: storeKey.key,
      ...(options.trustDomain ? { trustDomain: options.trustDomain } : {}),
      ...(options.policyOid ? { policyOid: options.policyOid } : {}),
      serverAddresses: advertised,
      storeKind: kind,
      ...(join ? { join } : {}),
      ...(options.timers === false ? { timers: false } : {}),
      onWarning: (message, error) => log.warn({ ...(error ? { err: error } : {}) }, message),
      crlBaseUrl: () => crlBase,
      onAudit: (event) => {
        writeAudit(event);
        serverMetrics.record(event);
      },
    });
    const authority = opened.authority;
    cleanup.push(() => authority.close());
    resync = () => {
      authority.maintain().catch((error: unknown) => log.warn({ err: error }, 're-reading state failed'));
    };

    let bootstrapped: BootstrapInfo | null = null;
    if (opened.bootstrapped) {
      const output = opened.bootstrapped;
      const paths = writeAdminIdentity(dataDir, {
        certificatePem: output.adminCertificatePem,
        keyPem: output.adminKeyPem,
      });
      bootstrapped = {
        trustDomain: output.trustDomain,
        rootFingerprint: output.rootFingerprint,
        adminSpiffeId: output.adminSpiffeId,
        adminCertificatePath: paths.certificatePath,
        adminKeyPath: paths.keyPath,
      };
      log.info(
        {
          trustDomain: output.trustDomain,
          rootFingerprint: output.rootFingerprint,
          admin: output.adminSpiffeId,
        },
        'bootstrapped a new trust domain',
      );
    }
    writeCaBundle(dataDir, authority.trustBundlePem());

    const onFailure: FailureReporter = (method, error, status) => {
      if (status.details === INTERNAL_ERROR_MESSAGE) log.error({ err: error, method }, 'call failed');
      else log.debug({ method, code: status.code, details: status.details }, 'call refused');
    };
    const grants = new DelegateGrants(authority);
    const deps = { authority, metrics: serverMetrics, onFailure, delegateGrants: grants };
    const ca = certificateAuthorityService(deps);

    const mtls = new MtlsServer({
      material: authority.serverMaterial(),
      revocation: authority.revocationSource(),
      metrics: transportMetrics,
      publicMethods: PUBLIC_METHODS,
      // Roles come from who issued a leaf: the deployment's CAs, or a delegation admitted by the authority.
      deploymentAuthorities: () => authority.deploymentAuthorities(),
      delegation: { trustDomain: authority.trustDomain, policyOid: authority.policyOid },
      delegates: grants.admitter,
      interceptors: [
        sigilAuthorizationInterceptor(authority.trustDomain, {
          onDenied: (denial) => log.info({ method: denial.method, rule: denial.rule }, denial.message),
        }),
      ],
      grpcOptions: {
        'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
        'grpc.max_send_message_length': 16 * 1024 * 1024,
      },
      onError: (error) => log.warn({ err: error }, 'transport problem'),
      peerLimits: CONTROL_PLANE_PEER_LIMITS,
      // A certificate refused is something an operator acts on (which one, from where, why): info.
      // A connection that never got as far as a certificate (port scans, plaintext, TLS 1.2): debug.
      onHandshakeError: (failure) =>
        log[failure.serial !== undefined || failure.alert !== undefined ? 'info' : 'debug'](
          {
            reason: failure.reason,
            remote: formatAddress(failure.remoteAddress ?? 'unknown', failure.remotePort ?? 0),
            ...(failure.serial !== undefined ? { serial: failure.serial } : {}),
            ...(failure.spiffeId ? { spiffeId: failure.spiffeId } : {}),
            ...(failure.alert ? { alert: failure.alert } : {}),
          },
          `handshake refused: ${failure.message}`,
        ),
      onRotated: (material) => log.info({ serial: material.leaf.serialHex }, 'server certificate rotated'),
    });
    mtls.addService(CertificateAuthorityService, ca.implementation);
    mtls.addService(EnrolmentService, enrolmentService(deps));
    mtls.addService(AdminService, adminService(deps));
    mtls.addService(DelegationService, delegationService(deps));
    // grpc.health.v1 and server reflection, behind the same mTLS and authorization.
    const standard = addStandardServices(mtls, [
      'sigil.v1.CertificateAuthority',
      'sigil.v1.Enrolment',
      'sigil.v1.Admin',
      'sigil.v1.Delegation',
    ]);
    let port: number;
    try {
      port = await mtls.listen(grpcListen.host, grpcListen.port);
    } catch (error) {
      await mtls.close(0);
      throw new SigilError(
        'failed_precondition',
        `cannot listen on ${formatAddress(grpcListen.host, grpcListen.port)}: ${describe(error)}`,
        { cause: error },
      );
    }
    cleanup.push(() => mtls.close(0));
    if (!options.advertise && grpcListen.port === 0) {
      advertised.splice(0, advertised.length, ...defaultAdvertised(grpcListen.host, port));
    }

    let serving = true;
    const http: HttpSide = await startHttpSide(
      {
        crl: (issuerId) => authority.crl(issuerId),
        crlIssuers: () => authority.crlIssuers(),
        metrics: registry,
        delegations: () => authority.delegationTree(),
        adminToken: httpAdminToken(dataDir),
        readiness: async () => {
          if (!serving) return 'shutting down';
          let timer: NodeJS.Timeout | undefined;
          try {
            await Promise.race([
              store.getSetting('trust_domain'),
              new Promise((_resolve, reject) => {
                timer = setTimeout(() => reject(new Error('timed out')), READINESS_TIMEOUT_MS);
              }),
            ]);
            return null;
          } catch (error) {
            return `the store is not reachable (${describe(error)})`;
          } finally {
            clearTimeout(timer);
          }
        },
      },
      {
        host: httpListen.host,
        port: httpListen.port,
        onError: (error) => log.error({ err: error }, 'HTTP side problem'),
      },
    ).catch((error: unknown) => {
      throw new SigilError(
        'failed_precondition',
        `cannot listen on ${formatAddress(httpListen.host, httpListen.port)} (--http-listen): ${describe(error)}`,
        { cause: error },
      );
    });
    cleanup.push(() => http.close());
    crlBase = httpAdvertise ?? defaultCrlBaseUrl(advertised, httpListen.host, http.port);
    if (crlBase === undefined) {
      log.info(
        'certificates carry no CRL distribution point: the HTTP side is loopback only and clients dial other addresses (give --http-advertise URL where a proxy publishes it)',
      );
    }
    // Only now is the bootstrap's admin identity delivered: had a listen failed,
    // the next start would issue a new one and show the banner again.
    if (bootstrapped) await authority.confirmBootstrap();
    // admin.pem renews itself in its renewal window while the server runs (admin-renewal.ts).
    const adminRenewal = new AdminRenewal({ dataDir, authority, logger: log });
    cleanup.push(async () => adminRenewal.close());
    await adminRenewal.check();
    if (options.timers !== false) adminRenewal.start();

    const address = formatAddress(grpcListen.host, port);
    const info: ServerInfoFile = {
      version: 1,
      listen: address,
      httpListen: formatAddress(httpListen.host, http.port),
      httpUrl: http.url,
      advertise: [...advertised],
      rootFingerprint: authority.rootFingerprint,
      trustDomain: authority.trustDomain,
      replicaId,
      store: kind,
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
        store: kind,
        mode: opened.mode,
      },
      'serving',
    );

    let closing: Promise<void> | null = null;
    const close = (graceMs = DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> => {
      closing ??= (async () => {
        serving = false;
        adminRenewal.close();
        log.info({ graceMs }, 'shutting down: draining calls');
        ca.closeWatchers();
        standard.close();
        // Let the watchers' final status frames go out before the GOAWAY.
        await new Promise((resolve) => setImmediate(resolve));
        await mtls.close(graceMs);
        log.debug('gRPC listener closed');
        await http.close();
        log.debug('HTTP listener closed');
        await authority.close();
        await store.close();
        log.info('stopped');
      })();
      return closing;
    };

    return {
      dataDir,
      mode: opened.mode,
      info,
      serverInfoPath,
      address,
      port,
      httpUrl: http.url,
      httpPort: http.port,
      bootstrapped,
      authority,
      registry,
      close,
    };
  } catch (error) {
    await unwind();
    throw error;
  }
}
