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
//
// Two ways in: a TCP listener (tests, or a host that owns 169.254.169.254
// itself), and a unix socket fed by metadata-relay.ts, which listens inside the
// network namespace of the workloads' bridges and writes one line naming the
// TCP peer's address before the request. The socket is the daemon's own
// (root-only directory); workloads never see it.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import { SigilError } from '../errors.ts';
import { type MetadataDocument, metadataTree, nodeAt, plainText } from './metadata-document.ts';
import { MetadataTokens, parseTokenTtl } from './metadata-tokens.ts';
import { plainAddress, readRelayPreamble } from './relay-preamble.ts';

export const TOKEN_PATH = '/latest/api/token';
const MAX_BODY_BYTES = 4096;
const MAX_PATH_LENGTH = 1024;

export interface MetadataServiceOptions {
  /**
   * The document of the workload whose address asks; null for an address that
   * is no workload's. May wait (a workload's first identity is being issued).
   */
  readonly documentFor: (sourceAddress: string) => MetadataDocument | null | Promise<MetadataDocument | null>;
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

/** Sockets that came through the relay, with the address the relay saw. */
const relayedSources = new WeakMap<Socket, string>();

/** The request's source address: the relay's word for a relayed socket, else the TCP peer. */
function sourceOf(request: IncomingMessage): string {
  return relayedSources.get(request.socket) ?? plainAddress(request.socket.remoteAddress ?? '');
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

async function handle(
  request: IncomingMessage,
  options: Required<MetadataServiceOptions>,
  tokens: MetadataTokens,
): Promise<Reply> {
  const source = sourceOf(request);
  if (request.headers['x-forwarded-for'] !== undefined) return reply(400, 'X-Forwarded-For is not accepted');
  const document = await options.documentFor(source);
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

function metadataHttpServer(options: MetadataServiceOptions): { server: Server; tokens: MetadataTokens } {
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
    handle(request, settings, tokens).then(
      (result) => answer(response, result),
      (error: unknown) =>
        answer(
          response,
          error instanceof SigilError && error.code === 'resource_exhausted'
            ? reply(429, error.message)
            : error instanceof SigilError && error.code !== 'internal'
              ? reply(400, error.message)
              : reply(500, 'internal error'),
        ),
    );
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;
  // Answer a client that closes its side after the request (nc, HTTP/1.0).
  (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  return { server, tokens };
}

/** Starts the metadata service on host:port (127.0.0.1 and 0 in tests). */
export function startMetadataService(
  host: string,
  port: number,
  options: MetadataServiceOptions,
): Promise<MetadataService> {
  const { server, tokens } = metadataHttpServer(options);
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

/** A relayed connection: its preamble read, then the rest handed to `server`. */
function acceptRelayed(socket: Socket, server: Server): void {
  readRelayPreamble(socket, (source) => {
    relayedSources.set(socket, source);
    server.emit('connection', socket);
    socket.resume();
  });
}

/** Starts the metadata service on a unix socket fed by metadata-relay.ts. */
export function startRelayedMetadataService(
  socketPath: string,
  options: MetadataServiceOptions,
): Promise<MetadataService> {
  const { server, tokens } = metadataHttpServer(options);
  const sockets = new Set<Socket>();
  const listener = createNetServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    acceptRelayed(socket, server);
  });
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(socketPath, () => {
      listener.off('error', reject);
      resolve({
        address: socketPath,
        port: 0,
        tokens,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            listener.close(() => done());
          }),
      });
    });
  });
}
