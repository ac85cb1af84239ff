// The connection a node uses before it has a certificate: server-authenticated
// TLS 1.3 to the control plane, with the CA pinned by the fingerprint from the
// join token. No trust on first use: the node trusts exactly the root whose
// SHA-256 it was given, and nothing else.
//
// A fingerprint alone cannot anchor OpenSSL's path validation, which needs
// the root certificate itself, and a server sends its leaf and intermediates
// but not the root. So enrolment runs in two steps:
//
//   1. fetchPinnedRoot: one Enrolment.GetTrustBundle call over a TLS session
//      whose server is NOT yet verified, sending nothing but the empty
//      request. From the answer exactly one thing is used: the root
//      certificate whose SHA-256 equals the pin. A hash match authenticates
//      those bytes whoever sent them; everything else in the answer is
//      discarded. If no root matches, enrolment stops.
//   2. enrolmentCredentials: every further call (GetTrustBundle again, now
//      authenticated; Register; Rejoin) runs over a grpc-js channel whose
//      server chain OpenSSL validates against that root alone, with the pin
//      and the server's control-plane SPIFFE ID checked on top. The token
//      secret is only ever sent on this channel.
//
// Step 1 is deliberately not a grpc-js channel: it is a single HTTP/2 request
// in this file, so no code path can reuse an unverified connection.

import { X509Certificate } from 'node:crypto';
import http2 from 'node:http2';
import { isIP, type Socket } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import { CallCredentials, ChannelCredentials, type ChannelOptions, experimental } from '@grpc/grpc-js';
import { firstLineOf, invalid, unauthenticated } from '../errors.ts';
import { TrustBundle } from '../gen/sigil/v1/sigil.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import { parseSpiffeId } from '../pki/names.ts';
import { encodePem } from '../pki/pem.ts';
import {
  X509Certificate as LibraryCertificate,
  SubjectAlternativeNameExtension,
} from '../pki/x509-library.ts';
import { connectVerifiedTls } from '../transport/client-credentials.ts';
import {
  type PresentedServer,
  parseFingerprint,
  type ServerVerification,
  verifyAll,
  verifyPinnedFingerprint,
} from '../transport/server-verification.ts';
import { RpcError, STATUS_DEADLINE_EXCEEDED, STATUS_UNAVAILABLE } from './rpc.ts';

/** Largest trust bundle answer step 1 reads. */
const MAX_BUNDLE_BYTES = 4 * 1024 * 1024;
const MIN_TLS_VERSION = 'TLSv1.3';
const DEFAULT_TIMEOUT_MS = 10_000;

/** HOST:PORT → host and port; IPv6 hosts in brackets ("[::1]:7443"). */
export function splitAddress(
  address: string,
  options: { readonly what?: string; readonly listening?: boolean } = {},
): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address.trim());
  const port = match ? Number(match[3]) : Number.NaN;
  // Port 0 is "any free port" to a listener, and no port at all to a caller.
  if (!match || port < (options.listening ? 0 : 1) || port > 65535) {
    throw invalid(
      `${options.what ?? 'invalid server address'} ${JSON.stringify(address)}: expected HOST:PORT`,
    );
  }
  return { host: match[1] ?? match[2], port };
}

/**
 * Step 1: the root certificate (DER) with SHA-256 `fingerprint`, taken from
 * the trust bundle `address` serves. Refuses when no root in it matches.
 */
export async function fetchPinnedRoot(
  address: string,
  fingerprint: string,
  options: { timeoutMs?: number } = {},
): Promise<Buffer> {
  const pin = parseFingerprint(fingerprint);
  const bundle = await unverifiedTrustBundle(address, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const root = bundle.roots.find((der) => sha256Hex(der) === pin);
  if (root === undefined) {
    throw unauthenticated(
      `the server at ${address} is not the pinned CA: none of its ${bundle.roots.length} root ` +
        `certificate(s) has SHA-256 fingerprint ${pin} (a wrong token, or another server at that address)`,
    );
  }
  return Buffer.from(root);
}

/** One gRPC call, GetTrustBundle, over raw HTTP/2; the answer is unauthenticated. */
function unverifiedTrustBundle(address: string, timeoutMs: number): Promise<TrustBundle> {
  const { host, port } = splitAddress(address);
  return new Promise<TrustBundle>((resolve, reject) => {
    let settled = false;
    const session = http2.connect(`https://${isIP(host) === 6 ? `[${host}]` : host}:${port}`, {
      // Not verified on purpose (see the top of this file): only a root whose
      // hash matches the pin is taken from this answer.
      rejectUnauthorized: false,
      minVersion: MIN_TLS_VERSION,
      servername: isIP(host) === 0 ? host : undefined,
      ALPNProtocols: ['h2'],
    });
    const finish = (error: Error | undefined, bundle?: TrustBundle) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      if (error) reject(error);
      else if (bundle) resolve(bundle);
    };
    const timer = setTimeout(
      () =>
        finish(
          new RpcError(STATUS_DEADLINE_EXCEEDED, `the sigil server at ${address} did not answer in time`),
        ),
      timeoutMs,
    );
    timer.unref();
    session.on('error', (error) =>
      finish(
        new RpcError(
          STATUS_UNAVAILABLE,
          `cannot reach the sigil server at ${address}: ${firstLineOf(error)}`,
        ),
      ),
    );
    const request = session.request({
      ':method': 'POST',
      ':path': '/sigil.v1.Enrolment/GetTrustBundle',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let status: string | undefined;
    let message = '';
    const readStatus = (headers: http2.IncomingHttpHeaders) => {
      const value = headers['grpc-status'];
      if (typeof value === 'string') status = value;
      const text = headers['grpc-message'];
      if (typeof text === 'string') message = decodeURIComponent(text);
    };
    request.on('response', readStatus);
    request.on('trailers', readStatus);
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BUNDLE_BYTES) {
        finish(invalid(`the trust bundle from ${address} is larger than ${MAX_BUNDLE_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    request.on('error', (error) =>
      finish(
        new RpcError(
          STATUS_UNAVAILABLE,
          `cannot reach the sigil server at ${address}: ${firstLineOf(error)}`,
        ),
      ),
    );
    request.on('end', () => {
      if (status !== '0') {
        finish(
          new RpcError(
            status === undefined ? 2 : Number(status),
            `${address} did not serve the trust bundle (gRPC status ${status ?? 'missing'}${message ? `: ${message}` : ''}); is it a sigil server?`,
          ),
        );
        return;
      }
      const body = Buffer.concat(chunks);
      // One gRPC message: flag byte (0: uncompressed), 4-byte big-endian length, message.
      if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) {
        finish(invalid(`the trust bundle answer from ${address} is not one uncompressed gRPC message`));
        return;
      }
      try {
        finish(undefined, TrustBundle.decode(body.subarray(5)));
      } catch (error) {
        finish(invalid(`the trust bundle answer from ${address} does not decode: ${firstLineOf(error)}`));
      }
    });
    // The empty GetTrustBundleRequest as one gRPC message.
    request.end(Buffer.alloc(5));
  });
}

// ------------------------------------------------------------ verification

/** URI SANs of a DER certificate. */
function uriSans(der: Buffer): string[] {
  const sans = new LibraryCertificate(der).getExtension(SubjectAlternativeNameExtension);
  return (sans?.names.items ?? []).filter((name) => name.type === 'url').map((name) => name.value);
}

/** The path prefix of control-plane replicas' SPIFFE IDs: spiffe://<td>/replica/<id>. */
export const REPLICA_PATH_PREFIX = '/replica/';

/**
 * The server must be a control-plane replica: its SPIFFE ID is
 * spiffe://<trustDomain>/replica/<id> (any trust domain when `trustDomain`
 * is undefined, for the first connection of an enrolment, where the pinned
 * root is what decides). A node's or workload's certificate from the same CA
 * is refused, so no enrolled machine can pose as the control plane.
 *
 * A name proves nothing by itself: anyone holding a delegation can sign a
 * leaf that says spiffe://<td>/replica/x. So the leaf must also be issued
 * directly by one of the deployment's own CAs: the verified root, or an
 * intermediate the root signed directly that carries no name constraints
 * (a replica's; every delegation is constrained and sits below one).
 */
export function verifyControlPlane(trustDomain?: string): ServerVerification {
  const wanted =
    trustDomain === undefined
      ? `a sigil replica SPIFFE ID (spiffe://<trust domain>${REPLICA_PATH_PREFIX}…)`
      : `a sigil replica SPIFFE ID (spiffe://${trustDomain}${REPLICA_PATH_PREFIX}…)`;
  return {
    description: `${wanted}, issued by the deployment's own CA`,
    check(server) {
      const uris = uriSans(server.certificate.raw);
      const presented = uris.length === 1 ? uris[0] : undefined;
      let ok = false;
      if (presented !== undefined) {
        try {
          const id = parseSpiffeId(presented);
          ok =
            (trustDomain === undefined || id.trustDomain === trustDomain) &&
            id.path.startsWith(REPLICA_PATH_PREFIX) &&
            id.path.length > REPLICA_PATH_PREFIX.length;
        } catch {
          ok = false;
        }
      }
      if (!ok) {
        return unauthenticated(
          `server identity rejected: expected ${wanted}, the server presented ${
            uris.length === 0 ? 'no URI SAN' : uris.map((uri) => JSON.stringify(uri)).join(', ')
          }`,
        );
      }
      const why = notDeploymentIssued(server);
      if (why === undefined) return undefined;
      return unauthenticated(
        `server identity rejected: ${presented} is not a control-plane certificate: ${why} (a delegate can sign any name; only the deployment's CAs issue replicas)`,
      );
    },
  };
}

const NAME_CONSTRAINTS = '2.5.29.30';

function signs(issuer: X509Certificate, subject: X509Certificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/**
 * Why the server's leaf was not issued directly by the deployment (undefined
 * when it was), decided by signature against the CAs this client trusts —
 * never from Node's issuerCertificate links, which are a guess by name among
 * whatever the server sent (a self-signed twin of a delegation would do).
 */
export function notDeploymentIssued(server: PresentedServer): string | undefined {
  const trusted = server.trusted ?? [];
  const [leaf, ...sent] = server.presented ?? [];
  if (leaf === undefined || trusted.length === 0)
    return 'the client has no trusted roots to check it against';
  if (trusted.some((root) => signs(root, leaf))) return undefined;
  const now = Date.now();
  const issuer = sent.find(
    (candidate) =>
      candidate.ca &&
      Date.parse(candidate.validFrom) <= now &&
      now <= Date.parse(candidate.validTo) &&
      trusted.some((root) => signs(root, candidate)) &&
      signs(candidate, leaf),
  );
  if (issuer === undefined)
    return 'it is not signed by a root or by an intermediate the root signed directly';
  if (new LibraryCertificate(issuer.raw).getExtension(NAME_CONSTRAINTS)) {
    return 'its issuer carries name constraints, as only a delegation does';
  }
  return undefined;
}

/** The checks every sigil client makes on a control-plane server. */
export function controlPlaneVerification(
  rootFingerprints: string | readonly string[],
  trustDomain?: string,
): ServerVerification {
  return verifyAll(verifyPinnedFingerprint(rootFingerprints), verifyControlPlane(trustDomain));
}

// ----------------------------------------------------------- credentials

export interface EnrolmentCredentialsOptions {
  /** PEM or DER roots to trust (only these: no system store). */
  readonly roots: readonly (Buffer | string)[];
  /** Checks after OpenSSL validated the chain; usually controlPlaneVerification(). */
  readonly verify: ServerVerification;
}

class ServerAuthConnector implements experimental.SecureConnector {
  readonly #context: SecureContext;
  readonly #roots: readonly X509Certificate[];
  readonly #serverName: string;
  readonly #verify: ServerVerification;
  readonly #callCredentials: CallCredentials;

  constructor(
    context: SecureContext,
    roots: readonly X509Certificate[],
    serverName: string,
    verify: ServerVerification,
    callCredentials: CallCredentials,
  ) {
    this.#context = context;
    this.#roots = roots;
    this.#serverName = serverName;
    this.#verify = verify;
    this.#callCredentials = callCredentials;
  }

  connect(socket: Socket): Promise<experimental.SecureConnectResult> {
    return connectVerifiedTls(socket, {
      secureContext: this.#context,
      authorities: this.#roots,
      serverName: this.#serverName,
      verification: this.#verify,
    });
  }

  waitForReady(): Promise<void> {
    return Promise.resolve();
  }

  getCallCredentials(): CallCredentials {
    return this.#callCredentials;
  }

  destroy(): void {}
}

class ServerAuthCredentials extends ChannelCredentials {
  readonly #context: SecureContext;
  readonly #roots: readonly X509Certificate[];
  readonly #verify: ServerVerification;

  constructor(context: SecureContext, roots: readonly X509Certificate[], verify: ServerVerification) {
    super();
    this.#context = context;
    this.#roots = roots;
    this.#verify = verify;
  }

  override _isSecure(): boolean {
    return true;
  }

  override _equals(other: ChannelCredentials): boolean {
    return other === this;
  }

  override _createSecureConnector(
    target: experimental.GrpcUri,
    _options: ChannelOptions,
    callCredentials?: CallCredentials,
  ): experimental.SecureConnector {
    const authority = target.path.split(',')[0] ?? target.path;
    const host = experimental.splitHostPort(authority)?.host ?? authority;
    return new ServerAuthConnector(
      this.#context,
      this.#roots,
      host,
      this.#verify,
      callCredentials ?? CallCredentials.createEmpty(),
    );
  }
}

/**
 * grpc-js credentials for the anonymous side of enrolment: TLS 1.3, no client
 * certificate, only `roots` trusted, `verify` checked on top of OpenSSL's
 * chain validation.
 */
export function enrolmentCredentials(options: EnrolmentCredentialsOptions): ChannelCredentials {
  if (options.roots.length === 0) throw invalid('enrolment credentials need at least one trusted root');
  const pems = options.roots.map((root) =>
    typeof root === 'string' ? root : encodePem('CERTIFICATE', root),
  );
  const roots = pems.map((pem) => new X509Certificate(pem)); // fail here, not at the first handshake
  const context = createSecureContext({ ca: pems, minVersion: MIN_TLS_VERSION });
  return new ServerAuthCredentials(context, roots, options.verify);
}
