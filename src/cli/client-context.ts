// How a client command (token, node, cert, status, ca) finds the server and
// the identity it calls with. In order of precedence (flags > SIGIL_*
// environment > files; commander applies the first two):
//
//   --server HOST:PORT        $SIGIL_SERVER          the server's gRPC address
//   --ca-fingerprint HEX      $SIGIL_CA_FINGERPRINT  SHA-256 of the root CA, pinned
//   --identity DIR            $SIGIL_IDENTITY        cert.pem (chain), key.pem, bundle.pem
//                                                    and node.json (as `sigil enrol` writes) or
//                                                    delegation.json (as `sigil delegate` writes)
//   --data DIR                $SIGIL_DATA            a server's data directory (default ./.sigil):
//                                                    server.json (address, fingerprint, trust
//                                                    domain), ca.pem (roots) and the bootstrap
//                                                    admin identity admin.pem / admin.key
//
// Whatever the source, the connection is TLS 1.3 with the client certificate,
// the server's chain must contain the pinned root (its SHA-256 must equal the
// fingerprint), and the server must present a replica SPIFFE ID of the trust
// domain. Without a bundle file holding the pinned root, the root is fetched
// from the server and accepted only if its hash matches the pin
// (client/control-plane-channel.ts): no trust on first use.
//
// A client chain with intermediates (a delegate's: leaf, its delegation CAs,
// the replica intermediate) is also sent as `sigil-chain-bin` metadata on
// every call (protocol/chain-metadata.ts): the server needs the delegation
// certificates to check the chain and Node does not hand it the presented ones.
//
// This module is imported when commands are registered, so it loads nothing
// heavy at the top (gRPC, X.509): those are imported when a command runs.

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { type Command, Option } from 'commander';
import {
  BUNDLE_FILE,
  CERTIFICATE_FILE,
  KEY_FILE,
  NODE_FILE,
  parseNodeInfo,
} from '../agent/identity-files.ts';
import { invalid, notFound } from '../errors.ts';
import {
  ADMIN_CERTIFICATE_FILE,
  ADMIN_KEY_FILE,
  CA_BUNDLE_FILE,
  DEFAULT_DATA_DIR,
  SERVER_INFO_FILE,
} from '../files/data-directory-names.ts';
import { parseJsonObject } from '../files/file-sets.ts';
import type { AdminClient, CertificateAuthorityClient, DelegationClient } from '../gen/sigil/v1/sigil.ts';
import type { TlsMaterial } from '../pki/material.ts';

/** What `sigil delegate` writes beside cert.pem/key.pem/bundle.pem instead of node.json. */
export const DELEGATION_INFO_FILE = 'delegation.json';

/** The connection flags every client command accepts (commander fills them from flags or env). */
export interface ClientFlags {
  readonly data?: string;
  readonly server?: string;
  readonly identity?: string;
  readonly caFingerprint?: string;
  /** Deadline of each call, e.g. from --timeout. */
  readonly timeoutMs?: number;
}

/** What `<data>/server.json` says, as far as clients need it. */
export interface ServerInfo {
  /** gRPC address, HOST:PORT. */
  readonly listen: string;
  readonly rootFingerprint: string;
  readonly trustDomain?: string;
  readonly replicaId?: string;
  readonly httpListen?: string;
  /** File name of the roots in the data directory. */
  readonly caBundle?: string;
}

export interface ClientContext {
  /** The gRPC target, HOST:PORT. */
  readonly address: string;
  /** SHA-256 of the pinned root, lower-case hex. */
  readonly rootFingerprint: string;
  /** Undefined when no file names it: then any trust domain's replica ID is accepted. */
  readonly trustDomain: string | undefined;
  /** The client certificate chain and key (PEM). */
  readonly certificateChain: string;
  readonly privateKey: string;
  /**
   * PEM trust bundle when a file provides one; used only when it holds the
   * pinned root, else the root is fetched from the server and pinned.
   */
  readonly trustBundle: string | undefined;
  /** Where the identity came from, for messages. */
  readonly identitySource: string;
  readonly timeoutMs?: number;
}

/** Adds --data, --server, --identity, --ca-fingerprint and --timeout to a client command. */
export function addClientOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--data <dir>', "a server's data directory: server.json and the admin identity").env(
        'SIGIL_DATA',
      ),
    )
    .addOption(
      new Option(
        '--server <host:port>',
        'the server address (default: from server.json, node.json or delegation.json)',
      ).env('SIGIL_SERVER'),
    )
    .addOption(
      new Option(
        '--identity <dir>',
        'call with the identity in DIR (cert.pem, key.pem, bundle.pem) instead of the admin identity',
      ).env('SIGIL_IDENTITY'),
    )
    .addOption(
      new Option('--ca-fingerprint <hex>', 'SHA-256 of the root CA to pin (default: from the files)').env(
        'SIGIL_CA_FINGERPRINT',
      ),
    )
    .addOption(new Option('--timeout <duration>', 'deadline of each call to the server').default('15s'));
}

/** The connection flags as commander hands them over, with --timeout still text. */
export interface ClientOptionValues {
  readonly data?: string;
  readonly server?: string;
  readonly identity?: string;
  readonly caFingerprint?: string;
  readonly timeout?: string;
}

export async function clientFlags(values: ClientOptionValues): Promise<ClientFlags> {
  const { parseDuration } = await import('../pki/duration.ts');
  return {
    data: values.data,
    server: values.server,
    identity: values.identity,
    caFingerprint: values.caFingerprint,
    timeoutMs: values.timeout === undefined ? undefined : parseDuration(values.timeout),
  };
}

function readFile(path: string, what: string, hint: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw notFound(`${what} ${path} does not exist${hint}`, error);
    if (code === 'EACCES') throw invalid(`${what} ${path} is not readable (permission denied)`, error);
    if (code === 'EISDIR') throw invalid(`${what} ${path} is a directory`, error);
    throw error;
  }
}

function readOptionalFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function firstString(record: Record<string, unknown>, ...names: string[]): string | undefined {
  for (const name of names) {
    const value = record[name];
    if (typeof value === 'string' && value !== '') return value;
  }
  return undefined;
}

/** A SHA-256 fingerprint as lower-case hex (plain or colon-separated input). */
export function fingerprintFrom(text: string, where: string): string {
  const trimmed = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed) || /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}$/.test(trimmed)) {
    return trimmed.replaceAll(':', '').toLowerCase();
  }
  throw invalid(
    `invalid CA fingerprint in ${where}: expected 64 hex digits (SHA-256), optionally colon-separated`,
  );
}

/** HOST:PORT → host and port; IPv6 hosts in brackets ("[::1]:7443"). */
export function splitHostPort(address: string, where: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address.trim());
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || port < 1 || port > 65535) {
    throw invalid(`invalid server address ${JSON.stringify(address)} in ${where}: expected HOST:PORT`);
  }
  return { host: match[1] ?? match[2], port };
}

/** Parses server.json, accepting the field spellings the server has used. */
export function parseServerInfo(text: string, path: string): ServerInfo {
  const record = parseJsonObject(text, path);
  const listen = firstString(record, 'listen', 'address', 'grpcListen');
  if (listen === undefined) throw invalid(`${path} names no server address ("listen")`);
  const fingerprint = firstString(record, 'rootFingerprint', 'caFingerprint', 'fingerprint');
  if (fingerprint === undefined) throw invalid(`${path} names no CA fingerprint ("rootFingerprint")`);
  return {
    listen: connectableAddress(listen, path),
    rootFingerprint: fingerprintFrom(fingerprint, path),
    trustDomain: firstString(record, 'trustDomain'),
    replicaId: firstString(record, 'replicaId'),
    httpListen: firstString(record, 'httpListen'),
    caBundle: firstString(record, 'caBundle'),
  };
}

/** A listen address as a client dials it: a wildcard bind address becomes loopback. */
export function connectableAddress(address: string, where = '--server'): string {
  const { host, port } = splitHostPort(address, where);
  if (host === '0.0.0.0') return `127.0.0.1:${port}`;
  if (host === '::') return `[::1]:${port}`;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The data directory: --data / $SIGIL_DATA (commander), else ./.sigil. */
export function dataDirectory(flags: ClientFlags): string {
  return resolve(flags.data ?? DEFAULT_DATA_DIR);
}

export function readServerInfo(dataDir: string): ServerInfo {
  const path = join(dataDir, SERVER_INFO_FILE);
  return parseServerInfo(
    readFile(
      path,
      'server file',
      ' (is a sigil server using this data directory? give --data DIR, or --server and --ca-fingerprint)',
    ),
    path,
  );
}

/** Reads the flags' sources into a context; refuses with one line naming what is missing. */
export async function resolveClientContext(flags: ClientFlags): Promise<ClientContext> {
  if (flags.identity !== undefined) return identityContext(flags, resolve(flags.identity));
  return dataContext(flags, dataDirectory(flags));
}

/** What an identity directory's node.json or delegation.json says about the server. */
interface IdentityDirectoryInfo {
  readonly addresses: readonly string[];
  readonly rootFingerprint: string | undefined;
  readonly trustDomain: string | undefined;
}

/** The server facts of a delegation.json (`sigil delegate` owns the whole format). */
export function parseDelegationServerInfo(text: string, path: string): IdentityDirectoryInfo {
  const record = parseJsonObject(text, path);
  const addresses = record.addresses ?? [];
  if (!Array.isArray(addresses) || !addresses.every((a): a is string => typeof a === 'string' && a !== '')) {
    throw invalid(`${path}: "addresses" must be a list of HOST:PORT strings`);
  }
  const fingerprint = firstString(record, 'rootFingerprint');
  return {
    addresses,
    rootFingerprint: fingerprint === undefined ? undefined : fingerprintFrom(fingerprint, path),
    trustDomain: firstString(record, 'trustDomain'),
  };
}

function identityDirectoryInfo(dir: string): IdentityDirectoryInfo | undefined {
  const nodePath = join(dir, NODE_FILE);
  const nodeText = readOptionalFile(nodePath);
  if (nodeText !== undefined) return parseNodeInfo(nodeText, nodePath);
  const delegationPath = join(dir, DELEGATION_INFO_FILE);
  const delegationText = readOptionalFile(delegationPath);
  if (delegationText !== undefined) return parseDelegationServerInfo(delegationText, delegationPath);
  return undefined;
}

async function identityContext(flags: ClientFlags, dir: string): Promise<ClientContext> {
  const { rootFingerprints } = await import('../client/trust-bundle.ts');
  const hint =
    ' (an identity directory holds cert.pem, key.pem and bundle.pem, as sigil enrol and sigil delegate write them)';
  const certificateChain = readFile(join(dir, CERTIFICATE_FILE), 'certificate file', hint);
  const privateKey = readFile(join(dir, KEY_FILE), 'key file', hint);
  const bundlePath = join(dir, BUNDLE_FILE);
  const trustBundle = readFile(bundlePath, 'trust bundle file', hint);
  const info = identityDirectoryInfo(dir);
  const address = flags.server ?? info?.addresses[0];
  if (address === undefined) {
    throw invalid(
      `${dir} has no node.json naming the server: give --server HOST:PORT (or a directory with a delegation.json naming it)`,
    );
  }
  const roots = rootFingerprints(trustBundle, bundlePath);
  const fingerprint =
    flags.caFingerprint !== undefined
      ? fingerprintFrom(flags.caFingerprint, '--ca-fingerprint')
      : (info?.rootFingerprint ?? roots[0]);
  if (fingerprint === undefined) throw invalid(`${bundlePath} holds no root certificate`);
  if (!roots.includes(fingerprint)) {
    throw invalid(
      `the pinned CA fingerprint ${fingerprint} is not the fingerprint of any root in ${bundlePath}`,
    );
  }
  return {
    address: connectableAddress(address),
    rootFingerprint: fingerprint,
    trustDomain: info?.trustDomain,
    certificateChain,
    privateKey,
    trustBundle,
    identitySource: dir,
    timeoutMs: flags.timeoutMs,
  };
}

async function dataContext(flags: ClientFlags, dataDir: string): Promise<ClientContext> {
  // Explicit --server and --ca-fingerprint make server.json optional.
  const info =
    flags.server !== undefined && flags.caFingerprint !== undefined ? undefined : readServerInfo(dataDir);
  const hint = " (the bootstrap admin identity: give the server's --data directory, or --identity DIR)";
  const certificateChain = readFile(join(dataDir, ADMIN_CERTIFICATE_FILE), 'admin certificate', hint);
  const privateKey = readFile(join(dataDir, ADMIN_KEY_FILE), 'admin key', hint);
  const address = flags.server ?? info?.listen;
  const fingerprint = flags.caFingerprint ?? info?.rootFingerprint;
  if (address === undefined || fingerprint === undefined) {
    throw invalid('give --server HOST:PORT and --ca-fingerprint HEX, or a --data directory with server.json');
  }
  return {
    address: connectableAddress(address),
    rootFingerprint: fingerprintFrom(fingerprint, '--ca-fingerprint'),
    trustDomain: info?.trustDomain,
    certificateChain,
    privateKey,
    // The server writes its roots beside server.json; used only if it holds the pinned root.
    trustBundle: readOptionalFile(join(dataDir, info?.caBundle ?? CA_BUNDLE_FILE)),
    identitySource: dataDir,
    timeoutMs: flags.timeoutMs,
  };
}

/** Channel credentials for the context: client certificate, pinned root, replica check. */
export async function clientCredentials(context: ClientContext): Promise<ChannelCredentials> {
  const { controlPlaneVerification, fetchPinnedRoot } = await import('../client/control-plane-channel.ts');
  const { encodePem } = await import('../pki/pem.ts');
  const { channelCredentials } = await import('../transport/client-credentials.ts');
  const { StaticMaterialSource } = await import('../transport/static-source.ts');
  const { rootFingerprints } = await import('../client/trust-bundle.ts');
  const bundled =
    context.trustBundle !== undefined &&
    rootFingerprints(context.trustBundle).includes(context.rootFingerprint)
      ? context.trustBundle
      : undefined;
  const trustBundle =
    bundled ??
    encodePem(
      'CERTIFICATE',
      await fetchPinnedRoot(context.address, context.rootFingerprint, { timeoutMs: context.timeoutMs }).catch(
        async (error: unknown) => {
          throw await refusalOf(error, context.address);
        },
      ),
    );
  const material: TlsMaterial = {
    certificateChain: context.certificateChain,
    privateKey: context.privateKey,
    trustBundle,
  };
  let source: InstanceType<typeof StaticMaterialSource>;
  try {
    source = new StaticMaterialSource(material);
  } catch (error) {
    throw invalid(
      `the identity in ${context.identitySource} cannot be used: ${error instanceof Error ? error.message : String(error)}`,
      error,
    );
  }
  return channelCredentials({
    material: source,
    verify: controlPlaneVerification(context.rootFingerprint, context.trustDomain),
  });
}

/**
 * A failed connection as who refused whom, when the TLS handshake says so
 * (a server's alert about this client: "the server at … refused this
 * client's certificate: it has been revoked"); anything else unchanged.
 */
async function refusalOf(error: unknown, address: string): Promise<unknown> {
  const { RpcError, STATUS_UNAVAILABLE } = await import('../client/rpc.ts');
  const { connectionRefusal } = await import('../transport/connection-failure.ts');
  if (!(error instanceof RpcError) || error.status !== STATUS_UNAVAILABLE) return error;
  const cause = error.cause instanceof Error ? error.cause.message : error.message;
  const refusal = connectionRefusal(cause.split('\n')[0], address);
  return refusal ? new RpcError(STATUS_UNAVAILABLE, refusal.message, error, refusal) : error;
}

export interface Clients {
  readonly target: string;
  readonly admin: AdminClient;
  readonly ca: CertificateAuthorityClient;
  readonly delegation: DelegationClient;
  readonly context: ClientContext;
  close(): void;
}

/**
 * Resolves the context and opens Admin, CertificateAuthority and Delegation
 * clients; the credentials send the identity's intermediates as `sigil-chain-bin`.
 */
export async function connectClients(flags: ClientFlags): Promise<Clients> {
  const context = await resolveClientContext(flags);
  const credentials = await clientCredentials(context);
  const { AdminClient, CertificateAuthorityClient, DelegationClient } = await import(
    '../gen/sigil/v1/sigil.ts'
  );
  // The credentials send the identity's intermediates as sigil-chain-bin on every call (client-credentials.ts).
  const admin = new AdminClient(context.address, credentials);
  const ca = new CertificateAuthorityClient(context.address, credentials);
  const delegation = new DelegationClient(context.address, credentials);
  return {
    target: context.address,
    admin,
    ca,
    delegation,
    context,
    close() {
      admin.close();
      ca.close();
      delegation.close();
    },
  };
}

/** Runs `work` with connected clients and closes them afterwards. */
export async function withClients<T>(flags: ClientFlags, work: (clients: Clients) => Promise<T>): Promise<T> {
  const clients = await connectClients(flags);
  try {
    return await work(clients);
  } finally {
    clients.close();
  }
}
