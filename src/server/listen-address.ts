// The addresses `sigil server` listens on (--listen, --http-listen) and the
// ones it tells clients to dial when none are given (--advertise).
import { hostname } from 'node:os';
import { invalid } from '../errors.ts';
import { dnsName } from '../pki/names.ts';

/** The gRPC side's address when --listen is not given. */
export const DEFAULT_LISTEN = '127.0.0.1:7443';
/** The HTTP side's address when --http-listen is not given. */
export const DEFAULT_HTTP_LISTEN = '127.0.0.1:7080';

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
export function defaultAdvertised(host: string, port: number): string[] {
  if (!WILDCARDS.has(host)) return [formatAddress(host, port)];
  const out = [formatAddress(host === '::' ? '::1' : '127.0.0.1', port)];
  try {
    out.unshift(formatAddress(dnsName(hostname()).value, port));
  } catch {
    // a host name that is not a valid DNS name is simply not advertised
  }
  return out;
}
