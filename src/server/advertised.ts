// What the server tells clients about where it is:
//   - the gRPC addresses they dial, put in the server certificate (hosts) and
//     in join tokens (HOST:PORT): --advertise, else derived from --listen;
//   - the CRL distribution point base of the leaves it issues
//     (crl-distribution.ts): --http-advertise, else derived from the HTTP side.
// With port 0 a port is known only once its side listens, so both are
// updated then; the authority reads them at issuance and token time.
import { defaultCrlBaseUrl } from './crl-distribution.ts';
import { defaultAdvertised, type ListenAddress } from './listen-address.ts';

export class Advertised {
  /** Updated in place: the authority holds this array (AuthorityOptions.serverAddresses). */
  readonly addresses: string[];
  readonly #given: boolean;
  readonly #grpcListen: ListenAddress;
  readonly #httpListen: ListenAddress;
  readonly #httpAdvertise: string | undefined;
  #crlBase: string | undefined;

  constructor(options: {
    readonly grpcListen: ListenAddress;
    readonly httpListen: ListenAddress;
    readonly advertise?: readonly string[];
    readonly httpAdvertise?: string;
  }) {
    this.#given = options.advertise !== undefined;
    this.#grpcListen = options.grpcListen;
    this.#httpListen = options.httpListen;
    this.#httpAdvertise = options.httpAdvertise;
    const { host, port } = options.grpcListen;
    // Port 0 is not a valid address yet: a placeholder port until the gRPC side listens.
    this.addresses = options.advertise
      ? [...options.advertise]
      : defaultAdvertised(host, port === 0 ? 1 : port);
    this.#crlBase = this.#crlBaseFor(options.httpListen.port);
  }

  /** The base URL of the CRL distribution point, or undefined for none. */
  readonly crlBaseUrl = (): string | undefined => this.#crlBase;

  /** The gRPC side listens on `port`: derived addresses get the real port. */
  grpcListening(port: number): void {
    if (!this.#given && this.#grpcListen.port === 0) {
      this.addresses.splice(0, this.addresses.length, ...defaultAdvertised(this.#grpcListen.host, port));
    }
  }

  /** The HTTP side listens on `port`; returns the CRL base URL now in force. */
  httpListening(port: number): string | undefined {
    this.#crlBase = this.#crlBaseFor(port);
    return this.#crlBase;
  }

  #crlBaseFor(httpPort: number): string | undefined {
    return this.#httpAdvertise ?? defaultCrlBaseUrl(this.addresses, this.#httpListen.host, httpPort);
  }
}
