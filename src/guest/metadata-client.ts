// The guest's side of the metadata service (metadata-server.ts, or
// Firecracker's MMDS): take a session token (`PUT /latest/api/token` with
// `X-metadata-token-ttl-seconds`), then `GET /latest/meta-data` with
// `Accept: application/json` and the token as `X-metadata-token`, as
// firebuild-mmds mmds/guest.go reads it (plus the token, which sigil requires).
// A service that does not know tokens (MMDS v1 answers the PUT 404 or 405) is
// asked without one.
//
// The document holds the bootstrap key: it is parsed here and never printed;
// neither is the token.
import { request } from 'node:http';
import { isIPv6 } from 'node:net';
import { invalid, messageOf, SigilError, unauthenticated } from '../errors.ts';
import type { BootstrapMetadata, MetadataDocument } from './metadata-document.ts';

export const DEFAULT_METADATA_IP = '169.254.169.254';
export const DEFAULT_METADATA_PORT = 80;
export const DEFAULT_METADATA_PATH = 'latest/meta-data';
/** vminit reads once at boot: a short token is enough. */
export const METADATA_TOKEN_TTL_SECONDS = 60;
const TIMEOUT_MS = 10_000;
const MAX_DOCUMENT_BYTES = 1024 * 1024;

export interface MetadataClientOptions {
  readonly host: string;
  readonly port: number;
  /** The document's path, e.g. "latest/meta-data". */
  readonly path: string;
  readonly timeoutMs?: number;
}

interface Answer {
  readonly status: number;
  readonly body: string;
}

const serviceName = (options: MetadataClientOptions): string =>
  `metadata service at ${isIPv6(options.host) ? `[${options.host}]` : options.host}:${options.port}`;

function ask(
  options: MetadataClientOptions,
  method: 'GET' | 'PUT',
  path: string,
  headers: Record<string, string>,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const call = request(
      {
        host: options.host,
        port: options.port,
        method,
        path,
        headers,
        timeout: options.timeoutMs ?? TIMEOUT_MS,
      },
      (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_DOCUMENT_BYTES) {
            response.destroy();
            reject(invalid(`${serviceName(options)}: the answer is larger than ${MAX_DOCUMENT_BYTES} bytes`));
          } else chunks.push(chunk);
        });
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        response.on('error', reject);
      },
    );
    call.on('timeout', () => call.destroy(new Error('no answer in time')));
    call.on('error', (error) =>
      reject(new SigilError('failed_precondition', `${serviceName(options)}: ${messageOf(error)}`)),
    );
    call.end();
  });
}

/** A session token, or undefined when the service has no token endpoint (MMDS v1). */
async function sessionToken(options: MetadataClientOptions): Promise<string | undefined> {
  const answer = await ask(options, 'PUT', '/latest/api/token', {
    'X-metadata-token-ttl-seconds': String(METADATA_TOKEN_TTL_SECONDS),
  });
  if (answer.status === 404 || answer.status === 405) return undefined;
  if (answer.status !== 200 || answer.body.trim() === '')
    throw new SigilError(
      'failed_precondition',
      `${serviceName(options)}: no session token (HTTP ${answer.status})`,
    );
  return answer.body.trim();
}

/** Reads and checks this guest's metadata document. */
export async function fetchMetadataDocument(options: MetadataClientOptions): Promise<MetadataDocument> {
  const token = await sessionToken(options);
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (token !== undefined) headers['X-metadata-token'] = token;
  const path = `/${options.path.replace(/^\/+/, '')}`;
  const answer = await ask(options, 'GET', path, headers);
  if (answer.status === 401)
    throw unauthenticated(`${serviceName(options)}: the session token was refused (HTTP 401)`);
  if (answer.status !== 200)
    throw new SigilError(
      'failed_precondition',
      `${serviceName(options)}: GET ${path} answered HTTP ${answer.status}`,
    );
  return parseMetadataDocument(answer.body);
}

type JsonObject = Record<string, unknown>;
const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function text(object: JsonObject, key: string, where: string): string {
  const value = object[key];
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw invalid(`metadata: ${where}${key} must be a string`);
  return value;
}

/** An object of strings, or of objects of strings (firebuild's documents hold nothing else). */
function tree<T>(object: JsonObject, key: string, where: string): T {
  const value = object[key];
  if (value === undefined || value === null) return {} as T;
  if (!isObject(value)) throw invalid(`metadata: ${where}${key} must be an object`);
  const check = (node: unknown, path: string): void => {
    if (typeof node === 'string') return;
    if (!isObject(node)) throw invalid(`metadata: ${path} must be a string or an object`);
    for (const [name, child] of Object.entries(node)) check(child, `${path}.${name}`);
  };
  check(value, `${where}${key}`);
  return value as T;
}

/** An object of strings only (Env). */
function strings(object: JsonObject, key: string): Record<string, string> {
  const value = tree<JsonObject>(object, key, '');
  for (const [name, item] of Object.entries(value))
    if (typeof item !== 'string') throw invalid(`metadata: ${key}.${name} must be a string`);
  return value as Record<string, string>;
}

function bootstrapOf(document: JsonObject): BootstrapMetadata | undefined {
  const value = document.Bootstrap;
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) throw invalid('metadata: Bootstrap must be an object');
  const bootstrap: BootstrapMetadata = {
    HostPort: text(value, 'HostPort', 'Bootstrap.'),
    CAChain: text(value, 'CAChain', 'Bootstrap.'),
    Cert: text(value, 'Cert', 'Bootstrap.'),
    Key: text(value, 'Key', 'Bootstrap.'),
    ServerName: text(value, 'ServerName', 'Bootstrap.'),
    PingInterval: text(value, 'PingInterval', 'Bootstrap.'),
  };
  for (const key of ['HostPort', 'CAChain', 'Cert', 'Key'] as const)
    if (bootstrap[key] === '') throw invalid(`metadata: Bootstrap.${key} is empty`);
  return bootstrap;
}

/** The document in `body`; missing fields are empty, as Go's decoder leaves them. */
export function parseMetadataDocument(body: string): MetadataDocument {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw invalid('metadata: the document is not JSON');
  }
  if (!isObject(parsed)) throw invalid('metadata: the document is not a JSON object');
  const network = tree<JsonObject>(parsed, 'Network', '');
  const bootstrap = bootstrapOf(parsed);
  return {
    ...(bootstrap === undefined ? {} : { Bootstrap: bootstrap }),
    VMMID: text(parsed, 'VMMID', ''),
    Drives: tree(parsed, 'Drives', ''),
    EntrypointJSON: text(parsed, 'EntrypointJSON', ''),
    Env: strings(parsed, 'Env'),
    LocalHostname: text(parsed, 'LocalHostname', ''),
    ImageTag: text(parsed, 'ImageTag', ''),
    Machine: tree(parsed, 'Machine', ''),
    Network: {
      CniNetworkName: text(network, 'CniNetworkName', 'Network.'),
      Interfaces: tree(network, 'Interfaces', 'Network.'),
    },
    Users: tree(parsed, 'Users', ''),
  };
}
