// Where relying parties fetch sigil's CRLs, as leaves advertise it in their
// CRL distribution point (<base>/crl/<issuer id>, crl-cache.ts crlUrl).
//
// The HTTP side binds loopback only (it is plain HTTP), so its own URL is a
// good distribution point only for peers on the same host. The base URL is:
//   - `--http-advertise URL` (SIGIL_HTTP_ADVERTISE) when given: the address
//     a proxy publishes the HTTP side at, e.g. https://ca.example.com;
//   - otherwise the HTTP side's own URL when every address clients dial the
//     gRPC side by is a loopback address too (a deployment on one host: the
//     default `sigil server`), since then every client can fetch it;
//   - otherwise none: certificates carry no distribution point rather than
//     one nobody else can reach.
import { hostOf } from '../authority/server-material.ts';
import { invalid } from '../errors.ts';
import { isLoopbackHost } from './http-listener.ts';

/** An --http-advertise URL, checked and without a trailing slash. */
export function parseHttpAdvertise(text: string): string {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw invalid(
      `--http-advertise must be an http:// or https:// URL, got ${JSON.stringify(text.slice(0, 100))}`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw invalid(
      `--http-advertise must be an http:// or https:// URL, got ${JSON.stringify(text.slice(0, 100))}`,
    );
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw invalid('--http-advertise must not carry credentials, a query or a fragment');
  }
  return url.toString().replace(/\/+$/, '');
}

/** The host of a HOST:PORT address (IPv6 in brackets). */
/**
 * The distribution point base when no --http-advertise is given: the HTTP
 * side's URL if every advertised gRPC address is loopback and the HTTP port
 * is known (not 0 before listening), else undefined.
 */
export function defaultCrlBaseUrl(
  advertised: readonly string[],
  httpHost: string,
  httpPort: number,
): string | undefined {
  if (httpPort === 0 || advertised.length === 0) return undefined;
  if (!advertised.every((address) => isLoopbackHost(hostOf(address.trim())))) return undefined;
  const host = httpHost.includes(':') ? `[${httpHost}]` : httpHost;
  return `http://${host}:${httpPort}`;
}
