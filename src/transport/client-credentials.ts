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

import { isIP, type Socket } from 'node:net';
import { createSecureContext, type SecureContext, connect as tlsConnect } from 'node:tls';
import { CallCredentials, ChannelCredentials, type ChannelOptions, experimental } from '@grpc/grpc-js';
import { invalid, unauthenticated } from '../errors.ts';
import type { MaterialSource, TlsMaterial } from './material.ts';
import { type ServerVerification, verifyServerName } from './server-verification.ts';
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
   * Default: verifyServerName() (the server name above). Passing a check
   * replaces the name check; combine them with verifyAll to keep both.
   */
  readonly verify?: ServerVerification;
}

/** The TLS floor for every sigil connection. */
const MIN_TLS_VERSION = 'TLSv1.3';

/** One secure context per material object, built the first time a connection needs it. */
class ContextCache {
  #material: TlsMaterial | undefined;
  #context: SecureContext | undefined;

  get(material: TlsMaterial): SecureContext {
    if (material !== this.#material || this.#context === undefined) {
      // Sources validate before publishing; this catches hand-written sources
      // early with sigil's error instead of a failed handshake.
      validateMaterial(material);
      this.#context = createSecureContext({
        cert: material.certificateChain,
        key: material.privateKey,
        ca: material.trustBundle,
        crl: material.crls && material.crls.length > 0 ? [...material.crls] : undefined,
        minVersion: MIN_TLS_VERSION,
      });
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

  constructor(
    owner: SigilChannelCredentials,
    serverName: string,
    callCredentials: CallCredentials,
    trace: boolean,
  ) {
    this.#owner = owner;
    this.#serverName = serverName;
    this.#callCredentials = callCredentials;
    this.#trace = trace;
  }

  connect(socket: Socket): Promise<experimental.SecureConnectResult> {
    let secureContext: SecureContext;
    try {
      secureContext = this.#owner.secureContext();
    } catch (error) {
      return Promise.reject(error);
    }
    return connectVerifiedTls(socket, {
      secureContext,
      serverName: this.#serverName,
      verification: this.#owner.verification,
      trace: this.#trace,
    });
  }

  waitForReady(): Promise<void> {
    return Promise.resolve(); // material is always at hand: sources hold validated material from the start
  }

  getCallCredentials(): CallCredentials {
    return this.#callCredentials;
  }

  destroy(): void {}
}

class SigilChannelCredentials extends ChannelCredentials {
  readonly verification: ServerVerification;
  readonly #source: MaterialSource;
  readonly #serverName: string | undefined;
  readonly #contexts = new ContextCache();

  constructor(options: ChannelCredentialsOptions) {
    super();
    this.#source = options.material;
    this.#serverName = options.serverName;
    this.verification = options.verify ?? verifyServerName();
  }

  secureContext(): SecureContext {
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
 * certificate from `material`, only `material.trustBundle` trusted, and
 * `verify` (default: the server name) checked on top of chain validation.
 * New connections use the newest material; existing ones are left alone.
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
 */
export function connectVerifiedTls(
  socket: Socket,
  options: {
    readonly secureContext: SecureContext;
    readonly serverName: string;
    readonly verification: ServerVerification;
    readonly trace?: boolean;
  },
): Promise<experimental.SecureConnectResult> {
  const { serverName, verification } = options;
  return new Promise((resolve, reject) => {
    const tlsSocket = tlsConnect(
      {
        socket,
        secureContext: options.secureContext,
        // SNI carries host names only (RFC 6066); Node warns when given an IP.
        servername: isIP(serverName) === 0 ? serverName : undefined,
        ALPNProtocols: ['h2'],
        enableTrace: options.trace ?? false,
        checkServerIdentity: (_host, certificate) => verification.check({ serverName, certificate }),
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
    const onError = (error: Error) => reject(error);
    tlsSocket.once('close', onClose);
    tlsSocket.once('error', onError);
  });
}
