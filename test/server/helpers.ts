// Shared set-up for the control-plane tests: the real server (in process via
// startServer, or the real `sigil server` command as a subprocess), clients
// built the way operators' and nodes' are (sigil channel credentials from the
// admin identity and the trust bundle in the data directory), and promise
// wrappers that keep the raw gRPC status for assertions.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  AdminClient,
  CertificateAuthorityClient,
  DelegationClient,
  EnrolmentClient,
} from '../../src/gen/sigil/v1/sigil.ts';
import type { ServerInfoFile } from '../../src/server/data-directory.ts';
import { type RunningServer, type ServerOptions, startServer } from '../../src/server/start-server.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { type RunningProcess, startSigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { pemOf } from '../support/pem.ts';

/** startServer on free ports, without the maintenance timer. */
export function startTestServer(
  options: Partial<ServerOptions> & { dataDir: string },
): Promise<RunningServer> {
  return startServer({ listen: '127.0.0.1:0', httpListen: '127.0.0.1:0', timers: false, ...options });
}

export interface Identity {
  readonly certificateChain: string;
  readonly privateKey: string;
}

/** An issued certificate (leaf, then its chain) and its private key, as an Identity. */
export function identityOf(
  issued: { readonly certificate: Buffer; readonly chain: readonly Buffer[] },
  privateKeyPem: string,
): Identity {
  return {
    certificateChain: pemOf(issued.certificate, ...issued.chain),
    privateKey: privateKeyPem,
  };
}

export function adminIdentity(dataDir: string): Identity {
  return {
    certificateChain: readFileSync(join(dataDir, 'admin.pem'), 'utf8'),
    privateKey: readFileSync(join(dataDir, 'admin.key'), 'utf8'),
  };
}

/** sigil client credentials: this identity, trusting the data directory's ca.pem. */
export function credentialsFor(dataDir: string, identity: Identity): grpc.ChannelCredentials {
  const material = new StaticMaterialSource({
    certificateChain: identity.certificateChain,
    privateKey: identity.privateKey,
    trustBundle: readFileSync(join(dataDir, 'ca.pem'), 'utf8'),
  });
  return channelCredentials({ material });
}

/** Server-authenticated TLS only: no client certificate. */
export function anonymousCredentials(dataDir: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(readFileSync(join(dataDir, 'ca.pem')));
}

export interface Clients {
  readonly ca: CertificateAuthorityClient;
  readonly admin: AdminClient;
  readonly delegation: DelegationClient;
  readonly enrolment: EnrolmentClient;
  close(): void;
}

export function clients(
  address: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ChannelOptions = {},
): Clients {
  const ca = new CertificateAuthorityClient(address, credentials, options);
  const admin = new AdminClient(address, credentials, options);
  const delegation = new DelegationClient(address, credentials, options);
  const enrolment = new EnrolmentClient(address, credentials, options);
  return {
    ca,
    admin,
    delegation,
    enrolment,
    close() {
      for (const client of [ca, admin, delegation, enrolment]) client.close();
    },
  };
}

/** A single-use join token the admin of `dataDir` creates through `address` (auto-approved unless a replica's). */
export async function adminJoinToken(
  address: string,
  dataDir: string,
  name: string,
  replica: boolean,
): Promise<string> {
  const admin = clients(address, credentialsFor(dataDir, adminIdentity(dataDir)));
  try {
    const created = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: !replica,
      name,
      replica,
    });
    return created.token;
  } finally {
    admin.close();
  }
}

export type Unary<Request, Response> = (
  request: Request,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Response) => void,
) => grpc.ClientUnaryCall;

/** One unary call with a 10 s deadline. */
export function call<Request, Response>(
  client: grpc.Client,
  method: Unary<Request, Response>,
  request: Request,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    method.call(
      client,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (error, response) => {
        if (error) reject(error);
        else resolve(response);
      },
    );
  });
}

export function statusName(code: number): string {
  return grpc.status[code] ?? String(code);
}

/** The error has this status code (and details matching `details`). */
export function assertStatus(error: grpc.ServiceError, code: grpc.status, details?: RegExp): void {
  assert.equal(
    error.code,
    code,
    `expected ${statusName(code)}, got ${statusName(error.code)}: ${error.details}`,
  );
  if (details) assert.match(error.details, details);
}

// --- the real command ----------------------------------------------------------

/** `--listen` and `--http-listen` on free ports. */
export const FREE_PORTS: readonly string[] = ['--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0'];

/** `sigil server` flags: the data directory, free ports and a log level. */
export function serverFlags(dataDir: string, logLevel: string): string[] {
  return ['--data', dataDir, ...FREE_PORTS, '--log-level', logLevel];
}

/** A `sigil server` subprocess (see support/cli.ts). */
export type ServerProcess = RunningProcess;

/**
 * `node bin/sigil.js server ARGS…` with the same Node that runs the tests.
 * One process unless ARGS (or `env`) ask for more: a worker process per core
 * would add its start-up to every server a test starts (server-workers.test.ts
 * tests --workers).
 */
export function spawnServer(args: readonly string[], env: Record<string, string> = {}): ServerProcess {
  return startSigil(['server', ...args], { env: { SIGIL_SERVER_WORKERS: '1', ...env } });
}

function serverInfo(dataDir: string, pid: number): ServerInfoFile | undefined {
  const path = join(dataDir, 'server.json');
  if (!existsSync(path)) return undefined;
  try {
    const info = JSON.parse(readFileSync(path, 'utf8')) as ServerInfoFile;
    return info.pid === pid ? info : undefined;
  } catch {
    return undefined; // being written
  }
}

/** The server.json this process wrote, once it announces that it serves; fails fast if the process exits first. */
export function waitForServer(
  server: ServerProcess,
  dataDir: string,
  timeoutMs?: number,
): Promise<ServerInfoFile> {
  // server.json is written during start-up; the announcement on stdout comes just after it.
  return eventually(
    'server.json and the serving announcement',
    () => {
      if (server.child.exitCode !== null) throw new Error(`the server exited early: ${server.stderr()}`);
      return server.stdout().includes('sigil: serving') && serverInfo(dataDir, server.child.pid ?? 0);
    },
    timeoutMs,
  );
}
