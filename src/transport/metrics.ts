// Prometheus metrics for sigil's transport, on a registry the caller owns (a
// fresh one by default, never prom-client's global): gRPC calls started and
// handled by method and status code with latency histograms, on the server and
// on the client; TLS handshakes refused, by a small closed set of reasons; and
// seconds until the current server/client certificate expires, computed at
// scrape time.
//
// Labels are bounded on purpose: method labels come from service definitions,
// status codes and handshake reasons from closed sets. No peer identity (SPIFFE
// ID, address, serial) is ever a label: that would be a cardinality hazard and
// would put identities into every scrape.
//
// Interceptor order matters on the server. grpc-js runs server interceptors in
// array order from the wire inwards and a status sent by an inner interceptor
// never passes the outer ones, so put `serverInterceptor` first (before
// revocation and authorization) or their refusals are counted as CANCELLED.
import type tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { messageOf, SigilError } from '../errors.ts';

/** Why a TLS handshake was refused. A closed set: these are the only label values. */
export type HandshakeFailureReason =
  /** The peer's chain does not lead to a trusted CA (or the peer said ours does not). */
  | 'unknown_ca'
  | 'certificate_expired'
  | 'certificate_revoked'
  /** A certificate was presented but is unusable: wrong EKU, bad signature, not yet valid, CRL trouble… */
  | 'bad_certificate'
  /** The client presented no certificate. */
  | 'no_certificate'
  /** Not TLS 1.3: an older TLS version, or not TLS at all (plaintext HTTP/gRPC). */
  | 'wrong_version'
  /** The peer did not finish its handshake in time. */
  | 'timeout'
  | 'other';

export const HANDSHAKE_FAILURE_REASONS: readonly HandshakeFailureReason[] = Object.freeze([
  'unknown_ca',
  'certificate_expired',
  'certificate_revoked',
  'bad_certificate',
  'no_certificate',
  'wrong_version',
  'timeout',
  'other',
]);

// OpenSSL verification codes (socket.authorizationError / error.code on the
// verifying side) and Node TLS error codes (alerts received, protocol errors).
const REASON_BY_CODE: Readonly<Record<string, HandshakeFailureReason>> = {
  UNABLE_TO_GET_ISSUER_CERT: 'unknown_ca',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unknown_ca',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unknown_ca',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'unknown_ca',
  SELF_SIGNED_CERT_IN_CHAIN: 'unknown_ca',
  CERT_UNTRUSTED: 'unknown_ca',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'unknown_ca',
  CERT_HAS_EXPIRED: 'certificate_expired',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: 'certificate_expired',
  CERT_REVOKED: 'certificate_revoked',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED: 'certificate_revoked',
  CERT_NOT_YET_VALID: 'bad_certificate',
  CERT_SIGNATURE_FAILURE: 'bad_certificate',
  CERT_REJECTED: 'bad_certificate',
  INVALID_PURPOSE: 'bad_certificate',
  INVALID_CA: 'bad_certificate',
  PATH_LENGTH_EXCEEDED: 'bad_certificate',
  CERT_CHAIN_TOO_LONG: 'bad_certificate',
  UNABLE_TO_DECRYPT_CERT_SIGNATURE: 'bad_certificate',
  UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: 'bad_certificate',
  ERROR_IN_CERT_NOT_BEFORE_FIELD: 'bad_certificate',
  ERROR_IN_CERT_NOT_AFTER_FIELD: 'bad_certificate',
  UNABLE_TO_GET_CRL: 'bad_certificate',
  CRL_HAS_EXPIRED: 'bad_certificate',
  CRL_NOT_YET_VALID: 'bad_certificate',
  CRL_SIGNATURE_FAILURE: 'bad_certificate',
  HOSTNAME_MISMATCH: 'bad_certificate',
  // OpenSSL's codes Node reports as UNSPECIFIED (handshake-refusal.ts names them), and sigil's own refusals.
  PERMITTED_SUBTREE_VIOLATION: 'bad_certificate',
  EXCLUDED_SUBTREE_VIOLATION: 'bad_certificate',
  CA_CERTIFICATE_AS_CLIENT: 'bad_certificate',
  CERT_CHAIN_NOT_STRICT: 'bad_certificate',
  ERR_TLS_CERT_ALTNAME_INVALID: 'bad_certificate',
  ERR_SSL_CERTIFICATE_VERIFY_FAILED: 'bad_certificate',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'bad_certificate',
  ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE: 'bad_certificate',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN: 'bad_certificate',
  ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR: 'bad_certificate',
  NO_PEER_CERTIFICATE: 'no_certificate',
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: 'no_certificate',
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'no_certificate',
  ERR_SSL_UNSUPPORTED_PROTOCOL: 'wrong_version',
  ERR_SSL_WRONG_VERSION_NUMBER: 'wrong_version',
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: 'wrong_version',
  ERR_SSL_NO_PROTOCOLS_AVAILABLE: 'wrong_version',
  ERR_SSL_VERSION_TOO_LOW: 'wrong_version',
  ERR_SSL_HTTP_REQUEST: 'wrong_version',
  ERR_SSL_HTTPS_PROXY_REQUEST: 'wrong_version',
  ERR_SSL_PACKET_LENGTH_TOO_LONG: 'wrong_version',
  ERR_TLS_HANDSHAKE_TIMEOUT: 'timeout',
};

// OpenSSL's reason texts, for errors that carry no code we know.
const REASON_BY_TEXT: readonly [RegExp, HandshakeFailureReason][] = [
  [/unknown ca|unable to (get|verify) (local )?(issuer|leaf)|self[- ]signed certificate/i, 'unknown_ca'],
  [/certificate (has )?expired/i, 'certificate_expired'],
  [/certificate (is )?revoked/i, 'certificate_revoked'],
  [/did not return a certificate|certificate required/i, 'no_certificate'],
  [/wrong version number|unsupported protocol|protocol version|http request/i, 'wrong_version'],
  [/handshake timed? ?out/i, 'timeout'],
  [
    /bad certificate|unsupported certificate|unsuitable certificate|certificate verify failed/i,
    'bad_certificate',
  ],
];

function stringField(value: unknown, field: string): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const text = (value as Record<string, unknown>)[field];
  return typeof text === 'string' && text !== '' ? text : undefined;
}

/**
 * The reason label for a failed handshake. Accepts what the failure arrived
 * as: a Node TLS error (with `code`), an OpenSSL verification code string, a
 * sigil HandshakeFailure (`{ reason, message }`), optionally with the socket,
 * whose `authorizationError` says why verification failed when the error
 * itself says only "socket hang up".
 */
export function handshakeFailureReason(
  failure: unknown,
  socket?: { readonly authorizationError?: unknown },
): HandshakeFailureReason {
  const verification = socket?.authorizationError;
  const candidates = [
    typeof verification === 'string' ? verification : stringField(verification, 'code'),
    typeof failure === 'string' ? failure : undefined,
    stringField(failure, 'reason'),
    stringField(failure, 'code'),
  ].filter((candidate): candidate is string => candidate !== undefined);
  for (const candidate of candidates) {
    const reason = REASON_BY_CODE[candidate];
    if (reason) return reason;
  }
  const texts = [...candidates, stringField(failure, 'message'), stringField(verification, 'message')];
  for (const text of texts) {
    if (text === undefined) continue;
    for (const [pattern, reason] of REASON_BY_TEXT) if (pattern.test(text)) return reason;
  }
  return 'other';
}

export type CertificateRole = 'server' | 'client';

/** The notAfter of the certificate currently in use; undefined/null while there is none. */
export type CertificateExpiryGetter = () => Date | null | undefined;

export interface TransportMetricsOptions {
  /** Where the metrics are registered. Default: a new Registry (never prom-client's global one). */
  readonly registry?: Registry;
  /** Latency histogram buckets, in seconds. */
  readonly latencyBuckets?: readonly number[];
  /** Getters for the current certificates, read at every scrape. */
  readonly certificateExpiry?: Partial<Record<CertificateRole, CertificateExpiryGetter>>;
}

/** In-process gRPC calls take well under a millisecond, so the buckets start lower than prom-client's. */
export const DEFAULT_LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

type MethodLabel = 'grpc_service' | 'grpc_method' | 'grpc_type';
type MethodLabels = Record<MethodLabel, string>;
const METHOD_LABELS: readonly MethodLabel[] = ['grpc_service', 'grpc_method', 'grpc_type'];

interface CallMetrics {
  readonly started: Counter<MethodLabel>;
  readonly handled: Counter<MethodLabel | 'grpc_code'>;
  readonly seconds: Histogram<MethodLabel>;
}

function methodLabels(definition: {
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}): MethodLabels {
  const path = definition.path;
  const slash = path.lastIndexOf('/');
  const service = slash > 0 ? path.slice(path.startsWith('/') ? 1 : 0, slash) : 'unknown';
  const method = slash >= 0 ? path.slice(slash + 1) : path;
  const type = definition.requestStream
    ? definition.responseStream
      ? 'bidi_stream'
      : 'client_stream'
    : definition.responseStream
      ? 'server_stream'
      : 'unary';
  return { grpc_service: service, grpc_method: method, grpc_type: type };
}

/** "OK", "PERMISSION_DENIED", …; anything outside the 17 gRPC codes is "UNKNOWN" (keeps the label set closed). */
export function grpcCodeName(code: number): string {
  const name: unknown = Number.isInteger(code) && code >= 0 && code <= 16 ? grpc.status[code] : undefined;
  return typeof name === 'string' ? name : 'UNKNOWN';
}

function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** All of sigil's transport metrics on one registry, with the interceptors and hooks that feed them. */
export class TransportMetrics {
  readonly registry: Registry;
  /** Put it first in the server's interceptor list (see the file comment). */
  readonly serverInterceptor: grpc.ServerInterceptor;
  readonly clientInterceptor: grpc.Interceptor;
  readonly #handshakeFailures: Counter<'reason'>;
  readonly #expiry = new Map<CertificateRole, CertificateExpiryGetter>();

  constructor(options: TransportMetricsOptions = {}) {
    this.registry = options.registry ?? new Registry();
    const registers = [this.registry];
    const buckets = [...(options.latencyBuckets ?? DEFAULT_LATENCY_BUCKETS)];
    const callMetrics = (side: 'server' | 'client', what: string): CallMetrics => ({
      started: new Counter({
        name: `sigil_grpc_${side}_started_total`,
        help: `gRPC calls started ${what}.`,
        labelNames: METHOD_LABELS,
        registers,
      }),
      handled: new Counter({
        name: `sigil_grpc_${side}_handled_total`,
        help: `gRPC calls completed ${what}, by status code.`,
        labelNames: [...METHOD_LABELS, 'grpc_code'],
        registers,
      }),
      seconds: new Histogram({
        name: `sigil_grpc_${side}_handling_seconds`,
        help: `Time from start to status of gRPC calls ${what}, in seconds.`,
        labelNames: METHOD_LABELS,
        buckets,
        registers,
      }),
    });
    try {
      const server = callMetrics('server', 'on the server');
      const client = callMetrics('client', 'by this process as a client');
      this.#handshakeFailures = new Counter({
        name: 'sigil_tls_handshake_failures_total',
        help: 'TLS handshakes refused, by reason.',
        labelNames: ['reason'],
        registers,
      });
      const expiry = new Gauge({
        name: 'sigil_certificate_expiry_seconds',
        help: 'Seconds until the certificate currently in use expires (negative once expired).',
        labelNames: ['role'],
        registers,
        collect: () => {
          expiry.reset();
          for (const [role, getter] of this.#expiry) {
            let notAfter: Date | null | undefined;
            try {
              notAfter = getter();
            } catch {
              notAfter = undefined; // a failing getter drops its series rather than breaking the scrape
            }
            if (notAfter instanceof Date && !Number.isNaN(notAfter.getTime())) {
              expiry.set({ role }, (notAfter.getTime() - Date.now()) / 1000);
            }
          }
        },
      });
      this.serverInterceptor = serverInterceptor(server);
      this.clientInterceptor = clientInterceptor(client);
    } catch (error) {
      throw new SigilError(
        'failed_precondition',
        `could not register sigil's transport metrics: ${messageOf(error)} ` +
          '(one TransportMetrics per registry)',
        { cause: error },
      );
    }
    // Every reason exists from the start, so a rate() over it never starts from a missing series.
    for (const reason of HANDSHAKE_FAILURE_REASONS) this.#handshakeFailures.inc({ reason }, 0);
    for (const [role, getter] of Object.entries(options.certificateExpiry ?? {})) {
      if (getter) this.setCertificateExpiry(role as CertificateRole, getter);
    }
  }

  /**
   * Count one refused handshake; returns the reason it was counted under.
   * Bound, so it can be passed as a hook: `onHandshakeError: metrics.recordHandshakeFailure`.
   */
  readonly recordHandshakeFailure = (
    failure: unknown,
    socket?: { readonly authorizationError?: unknown },
  ): HandshakeFailureReason => {
    const reason = handshakeFailureReason(failure, socket);
    this.#handshakeFailures.inc({ reason });
    return reason;
  };

  /** Count the refused handshakes of a plain node:tls server; returns a function that stops counting. */
  watchTlsServer(server: tls.Server): () => void {
    const listener = (error: Error, socket: tls.TLSSocket): void => {
      this.recordHandshakeFailure(error, socket);
    };
    server.on('tlsClientError', listener);
    return () => server.off('tlsClientError', listener);
  }

  /** Report the expiry of the `role` certificate from now on (null stops reporting it). */
  setCertificateExpiry(role: CertificateRole, getter: CertificateExpiryGetter | null): void {
    if (role !== 'server' && role !== 'client') {
      throw new SigilError('invalid_argument', `certificate role must be "server" or "client" (got ${role})`);
    }
    if (getter === null) this.#expiry.delete(role);
    else this.#expiry.set(role, getter);
  }

  /** The Prometheus text exposition of every metric in the registry. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function serverInterceptor(metrics: CallMetrics): grpc.ServerInterceptor {
  return (methodDescriptor, call) => {
    const labels = methodLabels(methodDescriptor);
    let startedAt: bigint | null = null;
    let finished = false;
    const finish = (code: number): void => {
      if (finished || startedAt === null) return;
      finished = true;
      metrics.handled.inc({ ...labels, grpc_code: grpcCodeName(code) });
      metrics.seconds.observe(labels, secondsSince(startedAt));
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        startedAt = process.hrtime.bigint();
        metrics.started.inc(labels);
        next({
          // grpc-js reports every ended call as cancelled, after its status.
          // Reaching here first means no status passed this interceptor: the
          // client cancelled, or grpc-js itself ended the call at the deadline.
          onCancel: () => {
            const deadline = call.getDeadline();
            const expired =
              deadline instanceof Date ? deadline.getTime() <= Date.now() : deadline <= Date.now();
            finish(expired ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED);
          },
        });
      },
      sendStatus: (status, next) => {
        finish(status.code);
        next(status);
      },
    });
  };
}

function clientInterceptor(metrics: CallMetrics): grpc.Interceptor {
  return (options, nextCall) => {
    const labels = methodLabels(options.method_definition);
    return new grpc.InterceptingCall(nextCall(options), {
      start: (metadata, _listener, next) => {
        const startedAt = process.hrtime.bigint();
        metrics.started.inc(labels);
        next(metadata, {
          onReceiveStatus: (status, nextStatus) => {
            metrics.handled.inc({ ...labels, grpc_code: grpcCodeName(status.code) });
            metrics.seconds.observe(labels, secondsSince(startedAt));
            nextStatus(status);
          },
        });
      },
    });
  };
}
