// A node workload daemon against a real control plane: the server of
// server-fixture.ts, an enrolled node with a busybox image, the daemon in
// this process (its own cgroup base, closed after the file), delegations
// made by the real CLI as the README shows, and Workloads clients for any
// identity directory.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import { WorkloadDaemon, type WorkloadDaemonOptions } from '../../src/agent/workload-daemon.ts';
import { unary } from '../../src/client/rpc.ts';
import { openWorkloadsClient } from '../../src/client/workload-channel.ts';
import type { CreateWorkloadRequest, WorkloadsClient } from '../../src/gen/sigil/v1/workloads.ts';
import { createLogger } from '../../src/logging.ts';
import { importImage, openImageStore } from '../../src/workloads/images.ts';
import { sigil } from '../support/cli.ts';
import { tempDir } from '../support/temp-dir.ts';
import { buildBusyboxRootfs } from '../workloads/rootfs-fixture.ts';
import { nodeFile, startTestServer, type TestServer } from './server-fixture.ts';

export const IMAGE = 'test/busybox:1';

export interface DaemonHarness {
  readonly server: TestServer;
  readonly nodeDir: string;
  /** The running daemon (a new one after restartDaemon). */
  readonly daemon: WorkloadDaemon;
  /** Closes the daemon (its workloads are killed, they stay desired) and starts it again on the same port. */
  restartDaemon(whileDown?: () => Promise<void> | void): Promise<WorkloadDaemon>;
  /** A Workloads client calling as the identity in `dir` (closed after the file). */
  client(dir: string): WorkloadsClient;
  /** The server's bootstrap admin, as a Workloads client. */
  admin(): WorkloadsClient;
  /** `sigil delegate …` (from the server, or --from a parent directory), asserting exit 0; the directory. */
  delegate(name: string, flags: readonly string[]): Promise<string>;
}

/** A daemon log for debugging failures: SIGIL_TEST_LOG=1 prints it. */
function testLogger() {
  return process.env.SIGIL_TEST_LOG ? createLogger({ pretty: false }) : undefined;
}

export async function startDaemonHarness(
  options: Partial<WorkloadDaemonOptions> = {},
): Promise<DaemonHarness> {
  const server = await startTestServer();
  const nodeDir = await server.enrolledNode();
  const source = tempDir('sigil-image-');
  buildBusyboxRootfs(source);
  await importImage(openImageStore(nodeDir), source, IMAGE);
  const logger = testLogger();
  const settings: WorkloadDaemonOptions = {
    dir: nodeDir,
    listen: '127.0.0.1:0',
    cgroupBase: `sigil-test-daemon-${process.pid}-${randomBytes(3).toString('hex')}`,
    reserveTimeoutMs: 3000,
    registerRetryMs: 100,
    ...(logger ? { logger } : {}),
    ...options,
  };
  let daemon = await WorkloadDaemon.start(settings);
  const clients: grpc.Client[] = [];
  // Registered after the server's own after(): runs first (after hooks run in reverse).
  after(async () => {
    for (const client of clients) client.close();
    await daemon.close();
  });
  const node = nodeFile(nodeDir);
  const trustBundle = readFileSync(join(nodeDir, 'bundle.pem'), 'utf8');
  const clientFor = (certificateChain: string, privateKey: string) => {
    const client = openWorkloadsClient({
      material: { certificateChain, privateKey, trustBundle },
      rootFingerprint: node.rootFingerprint,
      endpoint: { nodeId: node.nodeId, name: '', address: daemon.address, spiffeId: node.spiffeId ?? '' },
    });
    clients.push(client);
    return client;
  };
  const delegationsDir = tempDir('sigil-delegations-');
  return {
    server,
    nodeDir,
    get daemon() {
      return daemon;
    },
    async restartDaemon(whileDown) {
      const address = daemon.address;
      await daemon.close();
      await whileDown?.();
      daemon = await WorkloadDaemon.start({ ...settings, listen: address });
      return daemon;
    },
    client: (dir) =>
      clientFor(readFileSync(join(dir, 'cert.pem'), 'utf8'), readFileSync(join(dir, 'key.pem'), 'utf8')),
    admin: () =>
      clientFor(
        readFileSync(join(server.dataDir, 'admin.pem'), 'utf8'),
        readFileSync(join(server.dataDir, 'admin.key'), 'utf8'),
      ),
    async delegate(name, flags) {
      const out = join(delegationsDir, name);
      const offline = flags.includes('--from');
      const args = ['delegate', '--to', name, ...flags, '--out', out];
      const result = offline ? await sigil(args) : await server.cli(args);
      assert.equal(result.code, 0, `sigil ${args.join(' ')}: ${result.stderr}`);
      return out;
    },
  };
}

/** A unary Workloads call as a promise (failures as RpcError, with the status). */
export function call<Request, Response>(
  client: WorkloadsClient,
  method: (
    request: Request,
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (error: grpc.ServiceError | null, response: Response) => void,
  ) => grpc.ClientUnaryCall,
  request: Request,
): Promise<Response> {
  return unary(client, method, request, { target: 'the node daemon', timeoutMs: 20_000 });
}

/** Reads a server stream to its end (or its failure). */
export function collect<T>(
  stream: grpc.ClientReadableStream<T>,
): Promise<{ items: T[]; error?: grpc.ServiceError }> {
  const items: T[] = [];
  return new Promise((resolve) => {
    stream.on('data', (item: T) => items.push(item));
    stream.on('error', (error: grpc.ServiceError) => resolve({ items, error }));
    stream.on('end', () => resolve({ items }));
  });
}

/** A CreateWorkloadRequest with every field at its default, then `more`. */
export function createRequest(
  name: string,
  more: Partial<CreateWorkloadRequest> = {},
): CreateWorkloadRequest {
  return {
    name,
    image: IMAGE,
    command: [],
    env: {},
    workdir: '',
    user: '',
    memoryMib: 0,
    cpus: [],
    networks: [],
    blocks: [],
    restart: '',
    pidsMax: 0,
    runtime: '',
    ...more,
  };
}
