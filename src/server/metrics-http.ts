// A tiny HTTP endpoint for Prometheus to scrape: GET or HEAD /metrics, the
// text exposition format with its content type; 404 for any other path, 405
// for any other method.
//
// sigil never opens a plaintext listener to the network: without `tls` this
// binds loopback only (127.0.0.1 by default), for a scraper or agent on the
// same host. To serve another interface, give `tls` (HTTPS, TLS 1.3 only; add
// requestCert + ca to require scraper client certificates).
import http from 'node:http';
import https from 'node:https';
import { invalid } from '../errors.ts';
import { isLoopbackHost, listenTracked } from './http-listener.ts';

/** What can be scraped: a prom-client Registry or a TransportMetrics both qualify. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsServerOptions {
  /** Default 127.0.0.1. Without `tls` it must be a loopback address or "localhost". */
  readonly host?: string;
  /** Default 0: any free port (see `port` on the result). */
  readonly port?: number;
  /** Default "/metrics". */
  readonly path?: string;
  /** Serve HTTPS with these options (TLS 1.3 is enforced). */
  readonly tls?: https.ServerOptions;
  /** Errors while collecting metrics (the scraper gets a bare 500). */
  readonly onError?: (error: Error) => void;
}

export interface MetricsServer {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /** Stop listening and drop open connections. */
  close(): Promise<void>;
}

/** Serve `source` on `/metrics`; resolves once listening. */
export async function serveMetrics(
  source: MetricsSource,
  options: MetricsServerOptions = {},
): Promise<MetricsServer> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  const path = options.path ?? '/metrics';
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalid(`metrics port must be an integer from 0 to 65535 (got ${port})`);
  }
  if (!path.startsWith('/') || path.includes('?') || path.includes('#')) {
    throw invalid(
      `metrics path must start with "/" and have no query or fragment (got ${JSON.stringify(path)})`,
    );
  }
  if (!options.tls && !isLoopbackHost(host)) {
    throw invalid(
      `refusing to serve metrics over plaintext HTTP on ${host}: plaintext is for loopback only; ` +
        'give tls options to serve HTTPS on another interface',
    );
  }

  const handler = (request: http.IncomingMessage, response: http.ServerResponse): void => {
    const target = (request.url ?? '/').split('?')[0];
    if (target !== path) {
      response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      response.end(`not found: metrics are at ${path}\n`);
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      response.end('method not allowed: use GET or HEAD\n');
      return;
    }
    Promise.resolve()
      .then(() => source.metrics())
      .then(
        (text) => {
          const body = Buffer.from(text, 'utf8');
          response.writeHead(200, {
            'content-type': source.contentType,
            'content-length': body.length,
            'cache-control': 'no-store',
          });
          response.end(request.method === 'HEAD' ? undefined : body);
        },
        (error: unknown) => {
          try {
            options.onError?.(error instanceof Error ? error : new Error(String(error)));
          } catch {
            // a reporting hook must not keep the scraper waiting
          }
          response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
          response.end('could not collect metrics\n');
        },
      );
  };

  const server = options.tls
    ? https.createServer({ ...options.tls, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' }, handler)
    : http.createServer(handler);
  const listener = await listenTracked(server, host, port);
  return {
    host,
    port: listener.port,
    url: `${options.tls ? 'https' : 'http'}://${listener.authority}${path}`,
    close: listener.close,
  };
}
