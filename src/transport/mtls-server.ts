// A grpc-js server behind sigil's own TLS 1.3 listener.
//
// sigil owns the TLS layer: a node:tls Server requires and verifies client
// certificates (OpenSSL does the path validation against the trust bundle and
// CRLs), and each verified socket is handed to grpc-js through its public
// connection injector. The injector is created with
// ServerCredentials.createInsecure() only because the bytes it receives are
// already inside our TLS session: grpc-js binds no port and never sees a
// plaintext socket from the network, it runs HTTP/2 over the TLSSocket we give
// it. sigil never opens a plaintext listener.
//
// Owning the TLS layer is what makes the rest possible: new material is
// swapped in with setSecureContext (new handshakes see it, established
// connections stay up), each connection is recorded with its peer chain at
// handshake (peer identity without re-parsing per call), and revocation can
// refuse a connection before grpc-js sees it or destroy it mid-stream.

import { constants, X509Certificate } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { firstLineOf, SigilError } from '../errors.ts';
import { certificateNames } from '../pki/certificate-names.ts';
import { issuedDirectlyBy } from '../pki/issued-by.ts';
import type { MaterialSource, TlsMaterial } from '../pki/material.ts';
import { parseSpiffeId } from '../pki/names.ts';
import { DEFAULT_POLICY_OID, type PolicyOid, parsePolicyOid } from '../pki/policy-extension.ts';
import type { RevocationSource } from '../pki/revocation-source.ts';
import { checkChainStrictness } from './chain-strictness.ts';
import { ConnectionAging } from './connection-aging.ts';
import { ConnectionRegistry } from './connection-registry.ts';
import {
  chainDelegateAdmitter,
  type DelegateAdmitter,
  type DelegationSettings,
  delegateAdmissionInterceptor,
} from './delegate-admission.ts';
import {
  alertFor,
  CA_CERTIFICATE_AS_CLIENT,
  CERT_CHAIN_NOT_STRICT,
  NO_CLIENT_CERTIFICATE,
  type PresentedCertificate,
  presentedCertificate,
  TOO_MANY_CONNECTIONS,
  verificationCode,
} from './handshake-refusal.ts';
import type { TransportMetrics } from './metrics.ts';
import {
  anonymousPeerKey,
  http2StreamLimit,
  type PeerKey,
  type PeerLimitOptions,
  PeerLimits,
} from './peer-limits.ts';
import { exemptAnonymousPublicCalls, publicMethodSet, publicMethodsInterceptor } from './public-methods.ts';
import { RevocationEnforcement } from './revocation-enforcement.ts';
import { ServerAlerts, type TlsAlert } from './tls-alert.ts';
import { type ValidatedMaterial, validateMaterial } from './validate-material.ts';
import { workloadPeerOf } from './workload-peers.ts';

/** A connection that never reached grpc-js. */
export interface HandshakeFailure {
  /**
   * Node's verification code when the certificate was refused
   * ('CERT_HAS_EXPIRED', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'INVALID_PURPOSE',
   * 'CERT_REVOKED' — also used for sigil's own revocation check;
   * 'PERMITTED_SUBTREE_VIOLATION' and every other code Node calls
   * 'UNSPECIFIED', named after OpenSSL's text; sigil's own refusals
   * 'CA_CERTIFICATE_AS_CLIENT', 'CERT_CHAIN_NOT_STRICT', 'TOO_MANY_CONNECTIONS'),
   * else the TLS error code ('ERR_SSL_UNSUPPORTED_PROTOCOL', …).
   */
  readonly reason: string;
  readonly message: string;
  readonly remoteAddress: string | undefined;
  readonly remotePort?: number | undefined;
  /** The client's leaf, when it presented one: serial (lower-case hex) and SPIFFE ID. */
  readonly serial?: string;
  readonly spiffeId?: string | null;
  /** The TLS alert that told the client why, when one was sent. */
  readonly alert?: TlsAlert;
}

export interface MtlsServerOptions {
  readonly material: MaterialSource;
  /** Revoked certificates are refused at handshake, on every call, and cut off when revoked. */
  readonly revocation?: RevocationSource;
  /** The user's interceptors; they run after sigil's own (metrics, revocation). */
  readonly interceptors?: readonly grpc.ServerInterceptor[];
  /**
   * Full method paths ('/sigil.v1.Enrolment/Register') that may be called
   * without a client certificate (see public-methods.ts). When given, a
   * handshake without a client certificate completes and such a connection
   * may call these methods only (UNAUTHENTICATED for the rest); a presented
   * certificate that fails verification is still refused at connection.
   * Without it every connection must present a valid certificate.
   */
  readonly publicMethods?: readonly string[];
  /**
   * Call, handshake-failure and certificate-expiry metrics. Its interceptor
   * runs outermost: a status sent by an inner interceptor never reaches the
   * outer ones, so anything outside it would count refusals as CANCELLED.
   */
  readonly metrics?: TransportMetrics;
  /**
   * Connections get a GOAWAY after this long (±10% jitter; at the next
   * request, see connection-aging.ts) so long-lived clients reconnect and
   * pick up rotated material. Default: half the lifetime of the leaf current
   * at construction. No call is lost to aging with sigil's channelCredentials;
   * other grpc-js clients may still fail a call whose request was being
   * written when its connection was aged (refused-stream-retry.ts).
   */
  readonly maxConnectionAgeMs?: number;
  /** After the GOAWAY, calls still running get this long before the connection is cut. Default: half the age. */
  readonly maxConnectionAgeGraceMs?: number;
  /** A peer that has not finished its handshake by then is dropped. Default 10 s. */
  readonly handshakeTimeoutMs?: number;
  /**
   * How much one peer may hold (peer-limits.ts): calls in progress per
   * connection (default 100) and per identity (default 400), open
   * connections per identity (default 100). Over a limit is refused:
   * RESOURCE_EXHAUSTED for a call, the TLS alert access_denied for a connection.
   */
  readonly peerLimits?: PeerLimitOptions;
  /**
   * The strict structural checks (chain-strictness.ts) on each client chain
   * OpenSSL verified. Node shows a server only the client's leaf, so they
   * see the leaf and the CAs this server knows (readPeerChain). A refused
   * connection is destroyed and reported to onHandshakeError with reason
   * 'CERT_CHAIN_NOT_STRICT'. Default true; false turns them off.
   */
  readonly strictChain?: boolean;
  /** Passed to grpc.Server (sigil sets interceptors and the connection age itself). */
  readonly grpcOptions?: Omit<grpc.ServerOptions, 'interceptors'>;
  /**
   * Refused material and listener errors. Never thrown: the server keeps
   * serving with what it has. Without it, errors become process warnings.
   */
  readonly onError?: (error: Error) => void;
  /** Every connection refused before grpc-js saw it (metrics, logs). */
  readonly onHandshakeError?: (failure: HandshakeFailure) => void;
  /** Every material accepted after construction. */
  readonly onRotated?: (material: ValidatedMaterial) => void;
  /**
   * The deployment's own CAs: a client leaf signed directly by one of them
   * is a deployment identity; any other leaf OpenSSL accepts lies beneath a
   * delegation and is admitted only through `delegates`. Default: the
   * material's trust bundle and the server's own intermediates.
   */
  readonly deploymentAuthorities?: () => readonly X509Certificate[];
  /**
   * Where delegated identities live: the trust domain (default: the one of
   * the server's own SPIFFE ID) and the policy extension OID (default
   * DEFAULT_POLICY_OID_TEXT). Without a trust domain, delegates are refused.
   */
  readonly delegation?: { readonly trustDomain?: string; readonly policyOid?: string | PolicyOid };
  /**
   * How a delegate's chain is admitted: 'refuse' (every delegated leaf is
   * refused), or an admitter (the control plane passes its own). Default:
   * the chain checks of pki/delegation-chain.ts against the deployment CAs,
   * with `revocation` applied to every link.
   */
  readonly delegates?: DelegateAdmitter | 'refuse';
}

const authoritiesByMaterial = new WeakMap<ValidatedMaterial, X509Certificate[]>();

/** The CA certificates a server's material knows: its trust bundle and its own intermediates. */
function knownAuthorities(material: ValidatedMaterial): X509Certificate[] {
  let authorities = authoritiesByMaterial.get(material);
  if (!authorities) {
    authorities = [...material.trusted, ...material.chain.slice(1)].map((ca) => new X509Certificate(ca.der));
    authoritiesByMaterial.set(material, authorities);
  }
  return authorities;
}

// The age timer is armed with the age plus up to 10% jitter; Node clamps a
// delay over 2^31-1 ms to 1 ms, which would close every connection at once.
const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_CONNECTION_AGE_MS = Math.floor(MAX_TIMER_MS / 1.1);
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_GRACE_MS = 10_000;

function checkDuration(value: number, what: string): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new SigilError(
      'invalid_argument',
      `${what} must be a positive number of milliseconds (got ${value})`,
    );
  }
  return Math.min(Math.ceil(value), MAX_CONNECTION_AGE_MS);
}

/** Half the leaf's lifetime, so a connection never spans more than one rotation window. */
export function defaultMaxConnectionAgeMs(leaf: { notBefore: Date; notAfter: Date }): number {
  const lifetime = leaf.notAfter.getTime() - leaf.notBefore.getTime();
  return Math.min(Math.max(Math.floor(lifetime / 2), 1000), MAX_CONNECTION_AGE_MS);
}

/** The TLS context for validated material: TLS 1.3 only, no session resumption. */
function secureContextOptions(validated: ValidatedMaterial): tls.SecureContextOptions {
  const { material } = validated;
  return {
    cert: material.certificateChain,
    key: material.privateKey,
    ca: material.trustBundle,
    ...(material.crls && material.crls.length > 0 ? { crl: [...material.crls] } : {}),
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    // A resumed session skips certificate verification. Without tickets every
    // connection gets a full handshake against the current bundle and CRLs.
    secureOptions: constants.SSL_OP_NO_TICKET,
  };
}

export class MtlsServer {
  readonly grpcServer: grpc.Server;
  /** The live connections of this server. */
  readonly connections = new ConnectionRegistry();
  /** What one peer may hold, and what each holds now. */
  readonly peerLimits: PeerLimits;
  readonly maxConnectionAgeMs: number;
  readonly #tlsServer: tls.Server;
  readonly #alerts: ServerAlerts;
  readonly #injector: grpc.ConnectionInjector;
  readonly #aging: ConnectionAging;
  readonly #revocation: RevocationEnforcement | undefined;
  readonly #options: MtlsServerOptions;
  readonly #unsubscribeMaterial: () => void;
  // Raw sockets, including those still in their handshake, so close() can end them all.
  readonly #sockets = new Set<Socket>();
  readonly #allowAnonymous: boolean;
  #material: ValidatedMaterial;
  readonly #delegation: DelegationSettings | null;
  #listening: { reject: (error: Error) => void } | null = null;
  #closed: Promise<void> | null = null;

  /** Throws when the source's current material is invalid: there is nothing to serve with. */
  constructor(options: MtlsServerOptions) {
    this.#options = options;
    this.#material = validateMaterial(options.material.current());
    options.metrics?.setCertificateExpiry('server', () => this.#material.leaf.notAfter);
    this.maxConnectionAgeMs =
      options.maxConnectionAgeMs !== undefined
        ? checkDuration(options.maxConnectionAgeMs, 'maxConnectionAgeMs')
        : defaultMaxConnectionAgeMs(this.#material.leaf);
    const graceMs =
      options.maxConnectionAgeGraceMs !== undefined
        ? checkDuration(options.maxConnectionAgeGraceMs, 'maxConnectionAgeGraceMs')
        : Math.max(Math.floor(this.maxConnectionAgeMs / 2), 1);
    const handshakeTimeout = checkDuration(
      options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      'handshakeTimeoutMs',
    );

    this.#revocation = options.revocation
      ? new RevocationEnforcement(options.revocation, this.connections)
      : undefined;
    this.#delegation = delegationSettings(options.delegation, this.#material);
    this.peerLimits = new PeerLimits(options.peerLimits, () => this.#delegation?.trustDomain ?? null);
    const admitter =
      options.delegates === 'refuse' || this.#delegation === null
        ? null
        : (options.delegates ??
          chainDelegateAdmitter({
            ...this.#delegation,
            deploymentAuthorities: () => this.#deploymentAuthorities(),
            ...(options.revocation ? { revocation: options.revocation } : {}),
          }));
    const admission = delegateAdmissionInterceptor(admitter, () => this.#delegation);
    const publicMethods = options.publicMethods ? publicMethodSet(options.publicMethods) : null;
    // grpc-js hands inbound events to interceptors[0] first: sigil's checks run before the user's.
    const interceptors = [
      ...(options.metrics ? [options.metrics.serverInterceptor] : []),
      this.peerLimits.interceptor,
      ...(publicMethods ? [publicMethodsInterceptor(publicMethods)] : []),
      ...(this.#revocation
        ? [
            publicMethods
              ? exemptAnonymousPublicCalls(this.#revocation.interceptor, publicMethods)
              : this.#revocation.interceptor,
          ]
        : []),
      publicMethods ? exemptAnonymousPublicCalls(admission, publicMethods) : admission,
      ...(options.interceptors ?? []),
    ];
    this.#allowAnonymous = publicMethods !== null;
    this.grpcServer = new grpc.Server({
      'grpc.max_concurrent_streams': http2StreamLimit(this.peerLimits.maxStreamsPerConnection),
      ...options.grpcOptions,
      // sigil ages connections itself (connection-aging.ts); grpc-js's aging loses calls.
      'grpc.max_connection_age_ms': undefined,
      'grpc.max_connection_age_grace_ms': undefined,
      interceptors,
    });
    this.#aging = new ConnectionAging({ maxAgeMs: this.maxConnectionAgeMs, graceMs });
    this.#injector = this.grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());

    this.#tlsServer = tls.createServer({
      ...secureContextOptions(this.#material),
      requestCert: true,
      // Node's rejectUnauthorized only destroys the socket, and the client
      // never learns why; #admit refuses every certificate that failed
      // verification (and a missing one, unless public methods allow it)
      // with the TLS alert that says why (tls-alert.ts).
      rejectUnauthorized: false,
      ALPNProtocols: ['h2'],
      handshakeTimeout,
      // gRPC writes small frames and waits for answers: with Nagle's algorithm
      // a response can sit behind the peer's delayed ACK for ~40 ms.
      noDelay: true,
    });
    this.#alerts = new ServerAlerts(this.#tlsServer);
    this.#tlsServer.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
    this.#tlsServer.on('secureConnection', (socket) => this.#admit(socket));
    this.#tlsServer.on('tlsClientError', (error, socket) => {
      // Node sets authorizationError to the verification code (typed Error, a string at run time).
      const verification: unknown = socket.authorizationError;
      const reason = typeof verification === 'string' ? verificationCode(socket) : errorCode(error);
      this.#handshakeFailed(reason, firstLineOf(error), socket);
    });
    this.#tlsServer.on('error', (error) => {
      if (this.#listening) this.#listening.reject(error);
      else this.#report(error);
    });
    this.#unsubscribeMaterial = options.material.subscribe((material) => this.#rotate(material));
  }

  /** The material new handshakes use. */
  get material(): ValidatedMaterial {
    return this.#material;
  }

  addService(service: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): void {
    this.grpcServer.addService(service, implementation);
  }

  /**
   * Start accepting TLS connections; resolves with the bound port. With
   * `reusePort` (SO_REUSEPORT, Linux) several processes of one user listen on
   * the same port and the kernel spreads new connections over them.
   */
  listen(host = '127.0.0.1', port = 0, options: { readonly reusePort?: boolean } = {}): Promise<number> {
    if (this.#closed) return Promise.reject(new SigilError('failed_precondition', 'the server is closed'));
    return new Promise<number>((resolve, reject) => {
      this.#listening = { reject };
      this.#tlsServer.listen({ host, port, ...(options.reusePort ? { reusePort: true } : {}) }, () => {
        resolve((this.#tlsServer.address() as AddressInfo).port);
      });
    }).finally(() => {
      this.#listening = null;
    });
  }

  address(): AddressInfo | null {
    const address = this.#tlsServer.address();
    return address && typeof address === 'object' ? address : null;
  }

  /**
   * Stop accepting, let running calls finish for up to `graceMs`, then
   * destroy whatever is left. Resolves when every connection is gone.
   */
  close(graceMs = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    this.#closed ??= this.#shutdown(graceMs);
    return this.#closed;
  }

  async #shutdown(graceMs: number): Promise<void> {
    this.#unsubscribeMaterial();
    this.#aging.stop();
    this.#revocation?.close();
    const listenerClosed = new Promise<void>((resolve) => {
      if (this.#tlsServer.listening) this.#tlsServer.close(() => resolve());
      else resolve();
    });
    const deadline = Date.now() + graceMs;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.grpcServer.forceShutdown();
        resolve();
      }, graceMs);
      this.grpcServer.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    // tryShutdown may report a session closed as soon as it has been asked to
    // close (Node's http2 server.close() closes sessions first, and grpc-js
    // then sees session.closed): the calls on it can still be running. Wait
    // for the connections themselves to end, within the same grace period.
    await this.#socketsClosed(deadline - Date.now());
    this.connections.closeWhere(() => true);
    for (const socket of this.#sockets) socket.destroy();
    await listenerClosed;
  }

  /** Resolves when every socket has closed, or after `ms`. */
  #socketsClosed(ms: number): Promise<void> {
    if (this.#sockets.size === 0 || ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, ms);
      const check = (): void => {
        if (this.#sockets.size === 0) done();
      };
      // The set's own 'close' listener (registered first) runs before this one.
      for (const socket of this.#sockets) socket.once('close', check);
    });
  }

  #admit(socket: tls.TLSSocket): void {
    if (this.#closed || socket.destroyed) {
      this.#alerts.forget(socket);
      socket.destroy();
      return;
    }
    const leaf = socket.getPeerX509Certificate();
    if (!socket.authorized) {
      if (!leaf && this.#allowAnonymous) {
        // No certificate at all: an anonymous connection, limited to the public methods.
        this.#inject(socket, anonymousPeerKey(socket.remoteAddress));
        return;
      }
      if (!leaf) {
        this.#refuse(socket, NO_CLIENT_CERTIFICATE, 'the client presented no certificate');
        return;
      }
      // Refuse exactly what OpenSSL's verdict refused, naming its code.
      const reason = verificationCode(socket);
      this.#refuse(socket, reason, `the client certificate failed verification: ${reason}`);
      return;
    }
    if (!leaf) {
      // Unreachable: Node authorizes no socket without a peer certificate; refuse rather than trust that.
      this.#refuse(socket, NO_CLIENT_CERTIFICATE, 'the client presented no certificate');
      return;
    }
    if (leaf.ca) {
      this.#refuse(
        socket,
        CA_CERTIFICATE_AS_CLIENT,
        'the client presented a CA certificate; clients call with a leaf certificate',
      );
      return;
    }
    const issuedBy = issuedDirectlyBy(leaf, this.#deploymentAuthorities()) ? 'deployment' : 'delegated';
    // Only a leaf the deployment signed can be a workload identity: a delegate could sign any name.
    const workload =
      issuedBy === 'deployment' && this.#delegation !== null
        ? workloadPeerOf(leaf.raw, this.#delegation)
        : null;
    const connection = this.connections.track(socket, knownAuthorities(this.#material), issuedBy, workload);
    if (!connection) {
      this.#refuse(socket, NO_CLIENT_CERTIFICATE, 'the client presented no certificate');
      return;
    }
    const nonconforming =
      this.#options.strictChain === false ? undefined : checkChainStrictness(connection.chain);
    if (nonconforming !== undefined) {
      this.#refuse(socket, CERT_CHAIN_NOT_STRICT, nonconforming.message);
      return;
    }
    const revoked = this.#revocation?.refusal(connection);
    if (revoked !== undefined) {
      this.#refuse(socket, 'CERT_REVOKED', `certificate serial ${revoked} is revoked`);
      return;
    }
    this.#inject(socket, this.peerLimits.keyOf(connection));
  }

  /** Hand an admitted connection to grpc-js, unless its identity already holds all the connections it may. */
  #inject(socket: tls.TLSSocket, peer: PeerKey): void {
    const over = this.peerLimits.admitConnection(peer, socket);
    if (over !== undefined) {
      this.#refuse(socket, TOO_MANY_CONNECTIONS, over);
      return;
    }
    this.#alerts.forget(socket);
    this.#injector.injectConnection(socket);
    this.#aging.track(socket);
  }

  /** Tell the client why with a TLS alert, close the connection and report it. */
  #refuse(socket: tls.TLSSocket, reason: string, message: string): void {
    // Read before the socket is gone.
    const details = {
      presented: presentedCertificate(socket),
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
    };
    const alert = alertFor(reason);
    const sent = this.#alerts.send(socket, alert);
    socket.destroy();
    this.#handshakeFailed(reason, message, socket, { ...details, ...(sent ? { alert } : {}) });
  }

  #deploymentAuthorities(): readonly X509Certificate[] {
    return this.#options.deploymentAuthorities?.() ?? knownAuthorities(this.#material);
  }

  #rotate(material: TlsMaterial): void {
    try {
      const validated = validateMaterial(material);
      const options = secureContextOptions(validated);
      // Let OpenSSL load it first: setSecureContext mutates the server before it can fail.
      tls.createSecureContext(options);
      this.#tlsServer.setSecureContext(options);
      this.#material = validated;
    } catch (error) {
      const code = error instanceof SigilError ? error.code : 'failed_precondition';
      this.#report(
        new SigilError(
          code,
          `refused new TLS material, the current material keeps serving: ${firstLineOf(error)}`,
          {
            cause: error,
          },
        ),
      );
      return;
    }
    try {
      this.#options.onRotated?.(this.#material);
    } catch (error) {
      this.#report(error);
    }
  }

  #handshakeFailed(
    reason: string,
    message: string,
    socket: tls.TLSSocket,
    details: {
      presented?: PresentedCertificate | undefined;
      remoteAddress?: string | undefined;
      remotePort?: number | undefined;
      alert?: TlsAlert;
    } = {},
  ): void {
    // The reason already holds the verification code; the socket's would mislabel sigil's own refusals.
    this.#options.metrics?.recordHandshakeFailure({ code: reason, message });
    const hook = this.#options.onHandshakeError;
    if (!hook) return;
    const presented = details.presented ?? presentedCertificate(socket);
    try {
      hook({
        reason,
        message,
        remoteAddress: details.remoteAddress ?? socket.remoteAddress,
        remotePort: details.remotePort ?? socket.remotePort,
        ...(presented ? { serial: presented.serial, spiffeId: presented.spiffeId } : {}),
        ...(details.alert ? { alert: details.alert } : {}),
      });
    } catch (error) {
      this.#report(error);
    }
  }

  /** Hands a failure to onError, else a process warning; whatever was thrown becomes an Error. */
  #report(thrown: unknown): void {
    const error = thrown instanceof Error ? thrown : new Error(String(thrown));
    try {
      if (this.#options.onError) {
        this.#options.onError(error);
        return;
      }
    } catch {
      // fall through to the warning: an error report must never escape
    }
    process.emitWarning(error.message, { code: 'SIGIL_TRANSPORT' });
  }
}

/** Delegation settings from the options, the trust domain defaulting to the server's own; null without one. */
function delegationSettings(
  given: MtlsServerOptions['delegation'],
  material: ValidatedMaterial,
): DelegationSettings | null {
  const policyOid =
    given?.policyOid === undefined
      ? DEFAULT_POLICY_OID
      : typeof given.policyOid === 'string'
        ? parsePolicyOid(given.policyOid)
        : given.policyOid;
  if (given?.trustDomain !== undefined) return { trustDomain: given.trustDomain, policyOid };
  for (const uri of certificateNames(material.leaf.der).uris) {
    try {
      return { trustDomain: parseSpiffeId(uri).trustDomain, policyOid };
    } catch {
      // not a SPIFFE ID
    }
  }
  return null;
}

function errorCode(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : 'HANDSHAKE_FAILED';
}
