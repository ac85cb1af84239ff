// grpc-js channel credentials for sigil clients: TLS 1.3 only, a client
// certificate, and identity and trust bundle that rotate without recreating
// the grpc-js client.
//
// Why a ChannelCredentials subclass. grpc-js's own credentials cannot do both
// things sigil needs: createSsl/createFromSecureContext fix one secure
// context per subchannel (no rotation), and the certificate-provider
// credentials rebuild the context per connection but without a minimum TLS
// version (tls.connect ignores minVersion when a secureContext is given).
// So sigil implements the connector itself, relying on these grpc-js 1.14
// members (abstract in ChannelCredentials' public .d.ts, the connector types
// exported from `experimental`):
//   - ChannelCredentials._isSecure(), _equals(other), _createSecureConnector(target, options, callCredentials)
//   - experimental.SecureConnector { connect(socket), waitForReady(), getCallCredentials(), destroy() }
//     and experimental.SecureConnectResult { socket, secure }
//   - the channel options grpc.ssl_target_name_override, grpc.http_connect_target
//     and grpc-node.tls_enable_trace, honoured as grpc-js's own connector does.
// grpc-js calls connect() once per new connection, so each connection uses the
// material current at that moment; established connections keep theirs.

import { X509Certificate } from 'node:crypto';
import { isIP, type Socket } from 'node:net';
import {
  createSecureContext,
  type DetailedPeerCertificate,
  type PeerCertificate,
  type SecureContext,
  type TLSSocket,
  connect as tlsConnect,
} from 'node:tls';
import { CallCredentials, ChannelCredentials, type ChannelOptions, experimental } from '@grpc/grpc-js';
import { invalid, messageOf, unauthenticated } from '../errors.ts';
import type { MaterialSource, TlsMaterial } from '../pki/material.ts';
import { chainCallCredentials, delegationChainToPresent } from '../protocol/chain-metadata.ts';
import {
  type ChainStrictnessOptions,
  checkChainStrictness,
  checkChainStrictnessOptions,
} from './chain-strictness.ts';
import { CLIENT_CERTIFICATE_UNUSABLE, SERVER_CERTIFICATE_REFUSED } from './connection-failure.ts';
import { retryRefusedStreamsOn } from './refused-stream-retry.ts';
import { type PresentedServer, type ServerVerification, verifyServerName } from './server-verification.ts';
import { validateMaterial } from './validate-material.ts';

export interface ChannelCredentialsOptions {
  /** Client certificate, key and trust bundle; read again for every new connection. */
  readonly material: MaterialSource;
  /**
   * The name the server must be valid for, also sent as SNI (unless it is an
   * IP address). Default: the `grpc.ssl_target_name_override` channel option,
   * else the host of the channel target.
   */
  readonly serverName?: string;
  /**
   * Checks on the server certificate after OpenSSL has validated its chain.
   * Default: verifyServerName() (the server name above: DNS/IP SANs only, no
   * common-name fallback, no partial wildcards). Passing a check replaces the
   * name check; combine them with verifyAll to keep both. For a server whose
   * certificate is only valid by its common name, pass
   * `verifyServerName(undefined, { nodeCheckServerIdentity: true })`.
   */
  readonly verify?: ServerVerification;
  /**
   * The strict structural checks on the server's verified chain
   * (chain-strictness.ts: the RFC 5280 rules OpenSSL applies only with
   * X509_V_FLAG_X509_STRICT, which Node never sets), with an optional
   * `maxChainDepth`. They run in addition to `verify`, whatever it is.
   * Default: on, without a depth limit. `false` turns them off, for a server
   * whose chain does not conform and cannot be fixed.
   */
  readonly strictChain?: boolean | ChainStrictnessOptions;
}

/** `strictChain` as connectVerifiedTls takes it: the options, or false when off. */
function strictChainOptions(
  value: boolean | ChainStrictnessOptions | undefined,
): ChainStrictnessOptions | false {
  if (value === false) return false;
  const options = value === undefined || value === true ? {} : value;
  checkChainStrictnessOptions(options);
  return options;
}

/** The TLS floor for every sigil connection. */
const MIN_TLS_VERSION = 'TLSv1.3';

/** What a connection needs of the material: its TLS context and the trusted CAs. */
interface ConnectionMaterial {
  readonly secureContext: SecureContext;
  /** The trust bundle, to find the trust anchor of a verified chain. */
  readonly authorities: readonly X509Certificate[];
  /** The delegation chain a delegate presents with every call; empty for anyone else. */
  readonly presented: readonly Buffer[];
}

/** One secure context per material object, built the first time a connection needs it. */
class ContextCache {
  #material: TlsMaterial | undefined;
  #context: ConnectionMaterial | undefined;

  get(material: TlsMaterial): ConnectionMaterial {
    if (material !== this.#material || this.#context === undefined) {
      // Sources validate before publishing; this catches hand-written sources
      // early with sigil's error instead of a failed handshake.
      const validated = validateMaterial(material);
      const secureContext = createSecureContext({
        cert: material.certificateChain,
        key: material.privateKey,
        ca: material.trustBundle,
        crl: material.crls && material.crls.length > 0 ? [...material.crls] : undefined,
        minVersion: MIN_TLS_VERSION,
      });
      const authorities = validated.trusted.map((ca) => new X509Certificate(ca.der));
      const presented = delegationChainToPresent(material.certificateChain);
      this.#context = { secureContext, authorities, presented };
      this.#material = material;
    }
    return this.#context;
  }
}

/** The host grpc-js would verify for this target (its resolvers' default authority). */
function targetHost(target: experimental.GrpcUri, options: ChannelOptions): string {
  let path = target.path;
  let scheme = target.scheme;
  const proxied = options['grpc.http_connect_target'];
  if (typeof proxied === 'string') {
    // Behind an HTTP CONNECT proxy, verify the real target, not the proxy.
    const match = /^(?:([A-Za-z][A-Za-z0-9+.-]*):)?(?:\/\/[^/]*\/)?(.*)$/.exec(proxied);
    scheme = match?.[1];
    path = match?.[2] ?? proxied;
  }
  const authority = scheme === 'unix' ? 'localhost' : (path.split(',')[0] ?? path);
  return experimental.splitHostPort(authority)?.host ?? authority;
}

class SigilSecureConnector implements experimental.SecureConnector {
  readonly #owner: SigilChannelCredentials;
  readonly #serverName: string;
  readonly #callCredentials: CallCredentials;
  readonly #trace: boolean;
  /** The delegation chain of the material the current connection presented (sigil-chain-bin). */
  #presented: readonly Buffer[] = [];

  constructor(
    owner: SigilChannelCredentials,
    serverName: string,
    callCredentials: CallCredentials,
    trace: boolean,
  ) {
    this.#owner = owner;
    this.#serverName = serverName;
    // A delegate's calls carry its chain, which the server cannot see in the handshake (chain-metadata.ts).
    this.#callCredentials = callCredentials.compose(chainCallCredentials(() => this.#presented));
    this.#trace = trace;
  }

  connect(socket: Socket): Promise<experimental.SecureConnectResult> {
    let material: ConnectionMaterial;
    try {
      material = this.#material();
    } catch (error) {
      return Promise.reject(error);
    }
    this.#presented = material.presented;
    return connectVerifiedTls(socket, {
      secureContext: material.secureContext,
      authorities: material.authorities,
      serverName: this.#serverName,
      verification: this.#owner.verification,
      strictChain: this.#owner.strictChain,
      trace: this.#trace,
    }).then((connected) => {
      // Calls a server's GOAWAY refused are retried, whatever Node reports first (refused-stream-retry.ts).
      retryRefusedStreamsOn(connected.socket);
      return connected;
    });
  }

  // grpc-js asks before it opens the TCP connection: unusable material opens none.
  waitForReady(): Promise<void> {
    try {
      this.#material();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The current material; said as this client's own problem when unusable (grpc-js reports it as "unreachable"). */
  #material(): ConnectionMaterial {
    try {
      return this.#owner.connectionMaterial();
    } catch (error) {
      throw invalid(`${CLIENT_CERTIFICATE_UNUSABLE}: ${messageOf(error)}`, error);
    }
  }

  getCallCredentials(): CallCredentials {
    return this.#callCredentials;
  }

  destroy(): void {}
}

class SigilChannelCredentials extends ChannelCredentials {
  readonly verification: ServerVerification;
  readonly strictChain: ChainStrictnessOptions | false;
  readonly #source: MaterialSource;
  readonly #serverName: string | undefined;
  readonly #contexts = new ContextCache();

  constructor(options: ChannelCredentialsOptions) {
    super();
    this.#source = options.material;
    this.#serverName = options.serverName;
    this.verification = options.verify ?? verifyServerName();
    this.strictChain = strictChainOptions(options.strictChain);
  }

  connectionMaterial(): ConnectionMaterial {
    return this.#contexts.get(this.#source.current());
  }

  override _isSecure(): boolean {
    return true;
  }

  // Identity, not structure: two credentials over one source still differ in
  // verification, and grpc-js shares subchannels only between equal credentials.
  override _equals(other: ChannelCredentials): boolean {
    return other === this;
  }

  override _createSecureConnector(
    target: experimental.GrpcUri,
    options: ChannelOptions,
    callCredentials?: CallCredentials,
  ): experimental.SecureConnector {
    const override = options['grpc.ssl_target_name_override'];
    const serverName =
      this.#serverName ??
      (typeof override === 'string' && override !== '' ? override : targetHost(target, options));
    return new SigilSecureConnector(
      this,
      serverName,
      callCredentials ?? CallCredentials.createEmpty(),
      Boolean(options['grpc-node.tls_enable_trace']),
    );
  }
}

/**
 * Channel credentials for a grpc-js client: TLS 1.3 minimum, the client
 * certificate from `material`, only `material.trustBundle` trusted, and on
 * top of OpenSSL's chain validation the strict chain checks (`strictChain`)
 * and `verify` (default: the server name). New connections use the newest
 * material; existing ones are left alone.
 */
export function channelCredentials(options: ChannelCredentialsOptions): ChannelCredentials {
  if (options.serverName !== undefined && options.serverName.trim() === '') {
    throw invalid('serverName is empty; leave it out to use the channel target host');
  }
  return new SigilChannelCredentials(options);
}

/**
 * The TLS handshake of every sigil client connection (grpc-js hands us the
 * TCP socket): SNI for host names only, ALPN h2, sigil's checks on top of
 * OpenSSL's chain validation, and no connection unless OpenSSL authorized it.
 * `strictChain` (default: on, no depth limit) runs the strict structural
 * checks on the verified chain before `verification`; false skips them.
 */
export function connectVerifiedTls(
  socket: Socket,
  options: {
    readonly secureContext: SecureContext;
    readonly serverName: string;
    readonly verification: ServerVerification;
    readonly strictChain?: ChainStrictnessOptions | false;
    /** The trusted CAs, to put the verified chain back together up to its anchor (see verifiedChain). */
    readonly authorities?: readonly X509Certificate[];
    readonly trace?: boolean;
  },
): Promise<experimental.SecureConnectResult> {
  const { serverName, verification } = options;
  const strictChain = options.strictChain ?? {};
  return new Promise((resolve, reject) => {
    // What checkServerIdentity refused: Node destroys the socket with it.
    let refused: Error | undefined;
    const tlsSocket = tlsConnect(
      {
        socket,
        secureContext: options.secureContext,
        // SNI carries host names only (RFC 6066); Node warns when given an IP.
        servername: isIP(serverName) === 0 ? serverName : undefined,
        ALPNProtocols: ['h2'],
        enableTrace: options.trace ?? false,
        // Node calls this only after OpenSSL verified the chain.
        checkServerIdentity: (_host, certificate) => {
          if (strictChain !== false) {
            let chain: Buffer[];
            try {
              chain = verifiedChain(tlsSocket, certificate, options.authorities ?? []);
            } catch (error) {
              return unauthenticated(
                `the server's certificate chain could not be read for the strict checks: ${String(error)}`,
              );
            }
            refused = checkChainStrictness(chain, strictChain);
            if (refused !== undefined) return refused;
          }
          let presented: X509Certificate[] | undefined;
          const server: PresentedServer = {
            serverName,
            certificate,
            // Parsed only for a check that asks (the control plane's does).
            get presented() {
              presented ??= presentedCertificates(certificate);
              return presented;
            },
            trusted: options.authorities ?? [],
          };
          refused = verification.check(server);
          return refused;
        },
      },
      () => {
        tlsSocket.removeListener('close', onClose);
        tlsSocket.removeListener('error', onError);
        if (!tlsSocket.authorized) {
          // Unreachable with rejectUnauthorized left at its default; kept so a
          // change elsewhere can never turn into an unverified connection.
          tlsSocket.destroy();
          reject(unauthenticated(`server certificate not verified: ${String(tlsSocket.authorizationError)}`));
          return;
        }
        resolve({ socket: tlsSocket, secure: true });
      },
    );
    const onClose = () => reject(new Error('the connection closed during the TLS handshake'));
    const onError = (error: Error) => {
      // This side's verdict on the server (OpenSSL's on its chain, or sigil's checks), said as such.
      const verdict: unknown = tlsSocket.authorizationError;
      if (error === refused || (verdict !== undefined && verdict !== null)) {
        const code = (error as NodeJS.ErrnoException).code;
        const what = error === refused || code === undefined ? error.message : `${code}: ${error.message}`;
        reject(unauthenticated(`${SERVER_CERTIFICATE_REFUSED}: ${what}`));
        return;
      }
      reject(error);
    };
    tlsSocket.once('close', onClose);
    tlsSocket.once('error', onError);
  });
}

/**
 * The chain OpenSSL verified, DER, leaf first. Node does not expose it
 * (SSL_get0_verified_chain), and the issuer links of getPeerCertificate(true)
 * can stop early (its walk over the presented certificates misses an issuer
 * sent last), so it is put back together here: from the leaf, each issuer is
 * looked up as OpenSSL looks it up (name and key identifiers, through
 * X509Certificate.checkIssued; the signature decides between look-alikes),
 * in the trusted CAs first (OpenSSL's trusted-first order), then among the
 * certificates the server presented, ending at a self-issued certificate.
 * Not a validation: OpenSSL has validated the path; this only names the
 * certificates it used.
 */
function verifiedChain(
  socket: TLSSocket,
  certificate: PeerCertificate,
  authorities: readonly X509Certificate[],
): Buffer[] {
  const presented: X509Certificate[] = [];
  const seen = new Set<string>();
  const add = (x: X509Certificate | undefined): void => {
    if (x === undefined || seen.has(x.fingerprint256)) return;
    seen.add(x.fingerprint256);
    presented.push(x);
  };
  // A peer certificate's issuerCertificate links follow the order the server sent.
  for (let x = socket.getPeerX509Certificate(); x !== undefined && !seen.has(x.fingerprint256); ) {
    add(x);
    x = x.issuerCertificate;
  }
  // Node's own links, which may reach into the trust store.
  const linked: (PeerCertificate | DetailedPeerCertificate)[] = [];
  for (let current: PeerCertificate | undefined = certificate; current?.raw !== undefined; ) {
    if (linked.includes(current)) break;
    linked.push(current);
    current =
      'issuerCertificate' in current ? (current as DetailedPeerCertificate).issuerCertificate : undefined;
  }
  for (const { raw } of linked) {
    if (!presented.some((x) => x.raw.equals(raw))) add(new X509Certificate(raw));
  }
  const leaf = presented[0];
  if (leaf === undefined) return [certificate.raw];
  const candidates = [...authorities, ...presented.slice(1)];
  const chain = [leaf];
  const inChain = new Set([leaf.fingerprint256]);
  for (let current = leaf; chain.length <= MAX_CHAIN && !current.checkIssued(current); ) {
    const issuers = candidates.filter((ca) => !inChain.has(ca.fingerprint256) && current.checkIssued(ca));
    const issuer =
      issuers.length > 1 ? (issuers.find((ca) => signedBy(current, ca)) ?? issuers[0]) : issuers[0];
    if (issuer === undefined) break;
    chain.push(issuer);
    inChain.add(issuer.fingerprint256);
    current = issuer;
  }
  return chain.map((x) => x.raw);
}

/**
 * The leaf and the certificates Node linked to it (what the server sent and
 * trust-store CAs, matched by name): candidates to check by signature, never
 * a verified chain by themselves.
 */
function presentedCertificates(certificate: PeerCertificate): X509Certificate[] {
  const out: X509Certificate[] = [];
  for (let current: PeerCertificate | undefined = certificate; current?.raw !== undefined; ) {
    const der = current.raw;
    if (out.some((seen) => seen.raw.equals(der))) break;
    out.push(new X509Certificate(der));
    current =
      'issuerCertificate' in current ? (current as DetailedPeerCertificate).issuerCertificate : undefined;
  }
  return out;
}

/** OpenSSL's default verify depth bounds the walk as it bounds the path. */
const MAX_CHAIN = 100;

function signedBy(certificate: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return certificate.verify(issuer.publicKey);
  } catch {
    return false;
  }
}
