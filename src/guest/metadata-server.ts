// The metadata service (HTTP, Firecracker MMDS-compatible): each workload
// reads its own document, chosen by the source address its request comes
// from — never another's. A workload first takes a session token
// (metadata-tokens.ts); without a valid one of its own every read is 401
// (`requireToken`, on by default). A request that carries X-Forwarded-For is
// refused, as Firecracker refuses it: it came through a proxy inside the
// guest, and the token exists to stop exactly such relayed requests.
//
// Answers: `Accept: application/json` gets the JSON of the node at the path;
// anything else Firecracker's plain text (metadata-document.ts). Only GET and
// PUT /latest/api/token; bodies are not read beyond a small bound.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SigilError } from '../errors.ts';
import { type MetadataDocument, metadataTree, nodeAt, plainText } from './metadata-document.ts';
import { MetadataTokens, parseTokenTtl } from './metadata-tokens.ts';

export const TOKEN_PATH = '/latest/api/token';
const MAX_BODY_BYTES = 4096;
const MAX_PATH_LENGTH = 1024;

export interface MetadataServiceOptions {
  /** The document of the workload whose address asks; null for an address that is no workload's. */
  readonly documentFor: (sourceAddress: string) => MetadataDocument | null;
  /** Default true: every read needs a session token (Firecracker's MMDS v2). */
  readonly requireToken?: boolean;
  /** Milliseconds since the epoch; a test's clock. */
  readonly now?: () => number;
}

export interface MetadataService {
  readonly address: string;
  readonly port: number;
  readonly tokens: MetadataTokens;
  close(): Promise<void>;
}

/** The request's source address, IPv4-mapped IPv6 written as IPv4. */
function sourceOf(request: IncomingMessage): string {
  const address = request.socket.remoteAddress ?? '';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

interface Reply {
  readonly status: number;
  readonly body: string;
  readonly type: string;
}

const reply = (status: number, body: string, type = 'text/plain'): Reply => ({ status, body, type });

function answer(response: ServerResponse, { status, body, type }: Reply): void {
  response.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

/** The one value of a header (a repeated header is refused as ambiguous). */
function single(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  if (Array.isArray(value)) throw new SigilError('invalid_argument', `${name} is given more than once`);
  return value;
}

function handle(
  request: IncomingMessage,
  options: Required<MetadataServiceOptions>,
  tokens: MetadataTokens,
): Reply {
  const source = sourceOf(request);
  if (request.headers['x-forwarded-for'] !== undefined) return reply(400, 'X-Forwarded-For is not accepted');
  const document = options.documentFor(source);
  if (document === null) return reply(403, 'this address is no workload of this node');
  const url = request.url ?? '/';
  if (url.length > MAX_PATH_LENGTH) return reply(414, 'the path is too long');
  const path = url.split('?')[0];
  if (request.method === 'PUT' && path === TOKEN_PATH) {
    const ttl = parseTokenTtl(single(request, 'x-metadata-token-ttl-seconds'));
    return reply(200, tokens.issue(source, ttl));
  }
  if (request.method !== 'GET') return reply(405, 'only GET, and PUT /latest/api/token');
  if (options.requireToken && !tokens.valid(source, single(request, 'x-metadata-token')))
    return reply(401, 'a valid X-metadata-token is required (PUT /latest/api/token first)');
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return reply(400, 'the path is not valid percent-encoding');
  }
  const node = nodeAt(metadataTree(document), decoded);
  if (node === undefined) return reply(404, 'no such metadata');
  if ((request.headers.accept ?? '').includes('application/json'))
    return reply(200, JSON.stringify(node), 'application/json');
  return reply(200, plainText(node));
}

/** Starts the metadata service on host:port (127.0.0.1 and 0 in tests; 169.254.169.254:80 on a workload network). */
export function startMetadataService(
  host: string,
  port: number,
  options: MetadataServiceOptions,
): Promise<MetadataService> {
  const settings: Required<MetadataServiceOptions> = {
    documentFor: options.documentFor,
    requireToken: options.requireToken ?? true,
    now: options.now ?? Date.now,
  };
  const tokens = new MetadataTokens(settings.now);
  const server: Server = createServer((request, response) => {
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) request.destroy();
    });
    let result: Reply;
    try {
      result = handle(request, settings, tokens);
    } catch (error) {
      result =
        error instanceof SigilError && error.code === 'resource_exhausted'
          ? reply(429, error.message)
          : error instanceof SigilError && error.code !== 'internal'
            ? reply(400, error.message)
            : reply(500, 'internal error');
    }
    answer(response, result);
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const bound = server.address() as AddressInfo;
      resolve({
        address: bound.address,
        port: bound.port,
        tokens,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
