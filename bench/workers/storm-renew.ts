// One node's CertificateAuthority.Renew for the storm's load process, on the
// wire exactly as a node sends it (HTTP/2 over TLS 1.3 with the node's own
// certificate, its own connection, a gRPC unary call with a deadline), but
// without grpc-js and sigil's client-side checks on top of OpenSSL's: those
// cost about 17 ms of CPU per new connection here, so 167 new nodes a second
// would need more than the load process's whole core and starve the server
// it shares the machine with. The server is still verified: OpenSSL
// validates its chain against the deployment's root, TLS 1.3 only.
import http2 from 'node:http2';
import tls from 'node:tls';
import { IssuedCertificate } from '../../src/gen/sigil/v1/sigil.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { parseRetryAfter, RETRY_AFTER_TRAILER } from '../../src/protocol/retry-after.ts';

const RENEW_PATH = '/sigil.v1.CertificateAuthority/Renew';
/** An empty RenewRequest (renew for the same key): the 5-byte gRPC frame header and no body. */
const EMPTY_REQUEST = Buffer.from([0, 0, 0, 0, 0]);

const STATUS_NAMES: Readonly<Record<number, string>> = {
  1: 'CANCELLED',
  2: 'UNKNOWN',
  3: 'INVALID_ARGUMENT',
  4: 'DEADLINE_EXCEEDED',
  7: 'PERMISSION_DENIED',
  8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
  16: 'UNAUTHENTICATED',
};

/** A failed attempt: its status name, message and the server's retry-after hint. */
export class RenewFailure extends Error {
  readonly status: string;
  readonly retryAfterMs: number | undefined;
  constructor(status: string, message: string, retryAfterMs?: number) {
    super(message);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/** A node's connection to the control plane, reused across its attempts like an agent's channel. */
export class NodeConnection {
  readonly #address: string;
  readonly #material: TlsMaterial;
  #session: http2.ClientHttp2Session | null = null;

  constructor(address: string, material: TlsMaterial) {
    this.#address = address;
    this.#material = material;
  }

  #connect(): http2.ClientHttp2Session {
    if (this.#session && !this.#session.closed && !this.#session.destroyed) return this.#session;
    const [host, port] = [
      this.#address.slice(0, this.#address.lastIndexOf(':')),
      this.#address.split(':').pop(),
    ];
    const session = http2.connect(`https://${this.#address}`, {
      createConnection: () =>
        tls.connect({
          host,
          port: Number(port),
          cert: this.#material.certificateChain,
          key: this.#material.privateKey,
          ca: this.#material.trustBundle,
          minVersion: 'TLSv1.3',
          ALPNProtocols: ['h2'],
          // The chain is validated against the root; the server's names are sigil's check, skipped here.
          checkServerIdentity: () => undefined,
        }),
    });
    session.on('error', () => {}); // surfaced through the stream of the attempt
    this.#session = session;
    return session;
  }

  /** One Renew attempt; resolves with the new certificate's DER, rejects with a RenewFailure. */
  renew(timeoutMs: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      const fail = (status: string, message: string, hint?: number) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new RenewFailure(status, message, hint));
      };
      let session: http2.ClientHttp2Session;
      try {
        session = this.#connect();
      } catch (error) {
        fail('UNAVAILABLE', (error as Error).message);
        return;
      }
      const stream = session.request({
        ':method': 'POST',
        ':path': RENEW_PATH,
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': `${Math.max(1, Math.round(timeoutMs))}m`,
      });
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        // Tell a deadline spent connecting (TLS handshake) from one spent in the call.
        if (session.connecting)
          fail('DEADLINE_EXCEEDED (connecting)', `not connected within ${timeoutMs} ms`);
        else fail('DEADLINE_EXCEEDED', `no answer within ${timeoutMs} ms`);
      }, timeoutMs);
      const chunks: Buffer[] = [];
      let headers: http2.IncomingHttpHeaders = {};
      stream.on('response', (received) => {
        headers = received;
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', (error) => {
        this.#session?.destroy();
        this.#session = null;
        fail('UNAVAILABLE', error.message);
      });
      const finish = (trailers: http2.IncomingHttpHeaders) => {
        // A trailers-only answer (an error before any message) carries the status in the headers.
        const all = { ...headers, ...trailers };
        const code = Number(all['grpc-status'] ?? Number.NaN);
        if (code !== 0) {
          const name = STATUS_NAMES[code] ?? `status ${all['grpc-status']}`;
          const message = decodeURIComponent(String(all['grpc-message'] ?? ''));
          const hint = all[RETRY_AFTER_TRAILER];
          fail(name, message || name, hint === undefined ? undefined : parseRetryAfter([hint].flat()));
          return;
        }
        const body = Buffer.concat(chunks);
        try {
          const issued = IssuedCertificate.decode(body.subarray(5, 5 + body.readUInt32BE(1)));
          if (issued.certificate.length === 0) throw new Error('no certificate in the answer');
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(issued.certificate);
        } catch (error) {
          fail('CLIENT', `unreadable answer: ${(error as Error).message}`);
        }
      };
      let trailers: http2.IncomingHttpHeaders = {};
      stream.on('trailers', (received) => {
        trailers = received;
      });
      stream.on('end', () => finish(trailers));
      stream.end(EMPTY_REQUEST);
    });
  }

  close(): void {
    this.#session?.close();
    this.#session = null;
  }
}
