// The control plane's HTTP side, on its own port (loopback by default):
//
//   GET /crl                           the issuer IDs whose CRLs this replica serves, JSON:
//                                      {"issuers":[{"id":"root","path":"/crl/root"},…]}
//   GET /crl/<issuer-id>               the issuer's current CRL, DER (application/pkix-crl)
//   GET /crl/<issuer-id>?format=pem    the same, PEM (404 unknown issuer; 503 when this
//                                      replica cannot produce that CRL now)
//   GET /metrics                       Prometheus text exposition
//   GET /healthz                       200 while the process is up
//   GET /readyz                        200 when the store answers and the gRPC side serves, else 503
//   GET /delegations                   admins: every recorded delegation as a JSON tree; needs
//                                      "Authorization: Bearer <token>" (the scheme in any case,
//                                      RFC 7235) with the token from
//                                      <data>/http-admin.token (401 without, 403 when wrong)
//
// HEAD works wherever GET does. Any other path is 404, any other method 405.
// Like the transport's metrics endpoint, this is plain HTTP and therefore
// binds a loopback address only: sigil never opens a plaintext listener to
// the network (CRLs are signed, but metrics and health are nobody else's
// business; put a proxy in front to publish CRLs).
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { invalid, SigilError } from '../errors.ts';
import { encodePem } from '../pki/pem.ts';
import { isLoopbackHost, listenTracked } from './http-listener.ts';

export interface HttpSideSources {
  /** The DER CRL of an issuer; null (or a not_found/invalid_argument SigilError) for unknown issuers. */
  crl(issuerId: string): Promise<Buffer | null>;
  /** The issuer IDs whose CRLs crl() serves (GET /crl); absent: /crl is 404. */
  crlIssuers?(): readonly string[];
  /** The Prometheus registry to expose (prom-client Registry or anything with the same two members). */
  readonly metrics: { metrics(): Promise<string>; readonly contentType: string };
  /** Resolves to null when ready, else to a short reason (sent with the 503). */
  readiness(): Promise<string | null>;
  /** The delegation forest as JSON-ready data; absent: /delegations is 404. */
  delegations?(): Promise<unknown>;
  /** The bearer token /delegations requires (compared in constant time). */
  readonly adminToken?: string;
}

export interface HttpSideOptions {
  /** Default 127.0.0.1; must be a loopback address or "localhost". */
  readonly host?: string;
  /** Default 0: any free port. */
  readonly port?: number;
  /** Unexpected errors while answering (the client gets a bare 500). */
  readonly onError?: (error: Error) => void;
}

export interface HttpSide {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

const CRL_PREFIX = '/crl/';

/** Constant-time comparison of a presented secret with the expected one (by their SHA-256). */
function sameSecret(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
const READINESS_TIMEOUT_MS = 5_000;

function send(
  response: http.ServerResponse,
  head: boolean,
  status: number,
  contentType: string,
  body: string | Buffer,
  extraHeaders: Record<string, string> = {},
): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  response.writeHead(status, {
    'content-type': contentType,
    'content-length': String(bytes.length),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...extraHeaders,
  });
  response.end(head ? undefined : bytes);
}

const text = (response: http.ServerResponse, head: boolean, status: number, body: string): void =>
  send(response, head, status, 'text/plain; charset=utf-8', `${body}\n`);

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function answer(
  sources: HttpSideSources,
  request: http.IncomingMessage,
  response: http.ServerResponse,
): Promise<void> {
  const method = request.method ?? 'GET';
  const head = method === 'HEAD';
  let url: URL;
  try {
    url = new URL(request.url ?? '/', 'http://sigil.invalid');
  } catch {
    text(response, head, 400, 'bad request');
    return;
  }
  const path = url.pathname;
  const known =
    path === '/metrics' ||
    path === '/healthz' ||
    path === '/readyz' ||
    path.startsWith(CRL_PREFIX) ||
    (path === '/crl' && sources.crlIssuers !== undefined) ||
    (path === '/delegations' && sources.delegations !== undefined);
  if (!known) {
    text(response, head, 404, 'not found');
    return;
  }
  if (method !== 'GET' && method !== 'HEAD') {
    send(response, false, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
    return;
  }
  if (path === '/healthz') {
    text(response, head, 200, 'ok');
    return;
  }
  if (path === '/readyz') {
    let reason: string | null;
    try {
      reason = await withTimeout(sources.readiness(), READINESS_TIMEOUT_MS, 'the readiness check');
    } catch (error) {
      reason = error instanceof SigilError ? error.message : 'the readiness check failed';
    }
    if (reason === null) text(response, head, 200, 'ready');
    else text(response, head, 503, `not ready: ${reason}`);
    return;
  }
  if (path === '/delegations') {
    const presented = bearerCredentials(request.headers.authorization);
    if (presented === undefined) {
      send(response, head, 401, 'text/plain; charset=utf-8', 'admin token required\n', {
        'www-authenticate': 'Bearer',
      });
      return;
    }
    if (!sources.adminToken || !sameSecret(presented, sources.adminToken)) {
      text(response, head, 403, 'wrong admin token');
      return;
    }
    const tree = await (sources.delegations as () => Promise<unknown>)();
    send(response, head, 200, 'application/json', `${JSON.stringify({ delegations: tree }, null, 2)}\n`);
    return;
  }
  if (path === '/metrics') {
    const body = await sources.metrics.metrics();
    send(response, head, 200, sources.metrics.contentType, body);
    return;
  }
  if (path === '/crl') {
    if (!sources.crlIssuers) {
      text(response, head, 404, 'not found');
      return;
    }
    const issuers = sources
      .crlIssuers()
      .map((id) => ({ id, path: `${CRL_PREFIX}${encodeURIComponent(id)}` }));
    send(response, head, 200, 'application/json', `${JSON.stringify({ issuers }, null, 2)}\n`);
    return;
  }
  // /crl/<issuer-id>
  let issuerId: string;
  try {
    issuerId = decodeURIComponent(path.slice(CRL_PREFIX.length));
  } catch {
    text(response, head, 404, 'unknown issuer');
    return;
  }
  const format = url.searchParams.get('format') ?? 'der';
  if (format !== 'der' && format !== 'pem') {
    text(response, head, 400, `unknown format ${JSON.stringify(format.slice(0, 40))}: use "der" or "pem"`);
    return;
  }
  if (issuerId === '' || issuerId.includes('/')) {
    text(response, head, 404, 'unknown issuer');
    return;
  }
  let der: Buffer | null;
  try {
    der = await sources.crl(issuerId);
  } catch (error) {
    if (error instanceof SigilError && (error.code === 'not_found' || error.code === 'invalid_argument')) {
      der = null;
    } else if (error instanceof SigilError && error.code === 'failed_precondition') {
      // A known issuer whose CRL this replica cannot produce right now: say why.
      text(response, head, 503, `CRL not available here: ${error.message}`);
      return;
    } else {
      throw error;
    }
  }
  if (!der) {
    text(response, head, 404, 'unknown issuer');
    return;
  }
  if (format === 'pem') {
    send(response, head, 200, 'application/x-pem-file', encodePem('X509 CRL', der));
  } else {
    send(response, head, 200, 'application/pkix-crl', der);
  }
}

/** Start the HTTP side; resolves once listening. */
export async function startHttpSide(
  sources: HttpSideSources,
  options: HttpSideOptions = {},
): Promise<HttpSide> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalid(`HTTP port must be an integer from 0 to 65535 (got ${port})`);
  }
  if (!isLoopbackHost(host)) {
    throw invalid(
      `the HTTP side (CRLs, metrics, health) is plain HTTP and binds loopback only; ${JSON.stringify(host)} is not a loopback address (put a proxy in front to publish it)`,
    );
  }
  const server = http.createServer((request, response) => {
    answer(sources, request, response).catch((error: unknown) => {
      options.onError?.(error instanceof Error ? error : new Error(String(error)));
      if (!response.headersSent) text(response, request.method === 'HEAD', 500, 'internal error');
      else response.destroy();
    });
  });
  const listener = await listenTracked(server, host, port);
  server.on('error', (error) => options.onError?.(error));
  return { host, port: listener.port, url: `http://${listener.authority}`, close: listener.close };
}

/**
 * The token68 of an "Authorization: Bearer <token>" header, or undefined.
 * The scheme is case-insensitive and may be followed by several spaces (RFC
 * 7235 §2.1: auth-scheme 1*SP token68; RFC 6750 §2.1).
 */
export function bearerCredentials(header: string | undefined): string | undefined {
  return /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header ?? '')?.[1];
}
