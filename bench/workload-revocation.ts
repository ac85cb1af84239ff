// Destroy on revocation: how long after `sigil delegation revoke` returns the
// node has destroyed the revoked delegate's workload. A real control plane
// (startServer, SQLite, in this process), a node enrolled with the real CLI,
// the node daemon in this process with a busybox image; per sample a fresh
// delegation (1 workload) creates a workload as itself over mTLS, the admin
// revokes the delegation (Delegation.RevokeDelegated, from this process), and
// the clock runs from the call until the daemon records
// destroyed-by-revocation. The path measured: the control plane's
// WatchRevocations push, the daemon's revocation set, the supervisor's kill
// and cleanup.
// Baseline, in the same run: destroying the same kind of workload by a
// direct Destroy call from the delegate (a round trip plus the same cleanup).
// Reported: p50 and p99 in ms (nearest rank) over SAMPLES samples, bounded by
// TIME_BUDGET_MS. Needs root. Everything is removed in a finally.
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WorkloadDaemon } from '../src/agent/workload-daemon.ts';
import { connectClients } from '../src/cli/client-context.ts';
import { unary } from '../src/client/rpc.ts';
import { openWorkloadsClient } from '../src/client/workload-channel.ts';
import { CreateWorkloadRequest, type WorkloadsClient } from '../src/gen/sigil/v1/workloads.ts';
import { startServer } from '../src/server/start-server.ts';
import { importImage, openImageStore } from '../src/workloads/images.ts';
import { BUSYBOX, buildBusyboxRootfs } from '../test/workloads/rootfs-fixture.ts';
import type { Limits, Report } from './measure.ts';

export const description =
  'destroy on revocation: revoke returned → workload destroyed on the node (p50, p99 ms)';

const SAMPLES = 20;
const TIME_BUDGET_MS = 240_000;
const IMAGE = 'bench/busybox:1';
const TIMEOUT_MS = 10_000;

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const SIGIL = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'sigil.js');

/** The real `sigil` command; its stdout, or a failure with its stderr. */
function ok(args: readonly string[], what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [SIGIL, ...args], (error, stdout, stderr) => {
      if (error) reject(new Error(`${what}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

export async function run(report: Report, _limits: Limits): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench workload-revocation needs root (namespaces, cgroups)');
  const scratch = mkdtempSync(join(tmpdir(), 'sigil-bench-revocation-'));
  const dataDir = join(scratch, 'data');
  const nodeDir = join(scratch, 'node');
  const server = await startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' });
  let daemon: WorkloadDaemon | undefined;
  const clients: WorkloadsClient[] = [];
  let adminClients: { close(): void } | undefined;
  try {
    const token = (await ok(['token', 'create', '--auto-approve', '--data', dataDir], 'token create')).trim();
    await ok(['enrol', token, '--dir', nodeDir], 'enrol');
    const source = join(scratch, 'rootfs');
    mkdirSync(source);
    buildBusyboxRootfs(source);
    await importImage(openImageStore(nodeDir), source, IMAGE);
    const started = await WorkloadDaemon.start({
      dir: nodeDir,
      listen: '127.0.0.1:0',
      cgroupBase: `sigil-bench-revocation-${process.pid}-${randomBytes(3).toString('hex')}`,
    });
    daemon = started;
    const node = JSON.parse(readFileSync(join(nodeDir, 'node.json'), 'utf8')) as {
      nodeId: string;
      rootFingerprint: string;
      spiffeId: string;
    };
    const trustBundle = readFileSync(join(nodeDir, 'bundle.pem'), 'utf8');
    const clientOf = (dir: string): WorkloadsClient => {
      const client = openWorkloadsClient({
        material: {
          certificateChain: readFileSync(join(dir, 'cert.pem'), 'utf8'),
          privateKey: readFileSync(join(dir, 'key.pem'), 'utf8'),
          trustBundle,
        },
        rootFingerprint: node.rootFingerprint,
        endpoint: { nodeId: node.nodeId, name: '', address: started.address, spiffeId: node.spiffeId },
      });
      clients.push(client);
      return client;
    };
    const destroyedByRevocation = (key: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${key}: not destroyed within ${TIMEOUT_MS} ms`)),
          TIMEOUT_MS,
        );
        const stop = started.events.follow({ workload: key }, (event) => {
          if (event.kind === 'destroyed-by-revocation') {
            clearTimeout(timer);
            stop();
            resolve();
          }
        });
      });

    let made = 0;
    /** A fresh delegation with one running workload, as a client of its own. */
    const delegateWithWorkload = async () => {
      const name = `rev${++made}`;
      const dir = join(scratch, name);
      await ok(
        [
          'delegate',
          '--to',
          name,
          '--permissions',
          'info,create,destroy',
          '--workloads',
          '1',
          '--memory',
          '64',
          '--out',
          dir,
          '--data',
          dataDir,
        ],
        'delegate',
      );
      const client = clientOf(dir);
      await unary(
        client,
        client.createWorkload,
        CreateWorkloadRequest.fromPartial({
          name: 'web',
          image: IMAGE,
          command: [BUSYBOX, 'sleep', '3600'],
          memoryMib: 64,
        }),
        { target: 'the node daemon', timeoutMs: 20_000 },
      );
      return { name, dir, client, key: `/${name}//web` };
    };

    // The admin revokes over the control plane's Delegation service, from this process: the clock starts
    // as the call goes out (a CLI's own start-up is not the control plane's or the node's time).
    const admin = await connectClients({ data: dataDir });
    adminClients = admin;
    const revocation = async (): Promise<number> => {
      const { dir, key } = await delegateWithWorkload();
      const certificate = Buffer.from(new X509Certificate(readFileSync(join(dir, 'delegation.pem'))).raw);
      const destroyed = destroyedByRevocation(key);
      const from = performance.now();
      await unary(
        admin.delegation,
        admin.delegation.revokeDelegated,
        { certificate, chain: [], reason: 'keyCompromise' },
        { target: 'the control plane', timeoutMs: 20_000 },
      );
      await destroyed;
      return performance.now() - from;
    };
    const directDestroy = async (): Promise<number> => {
      const { client } = await delegateWithWorkload();
      const from = performance.now();
      await unary(
        client,
        client.destroyWorkload,
        { name: 'web' },
        { target: 'the node daemon', timeoutMs: 20_000 },
      );
      return performance.now() - from;
    };

    log(
      `  (this bench ignores those limits: ${SAMPLES} samples of each, at most ${TIME_BUDGET_MS / 1000} s)`,
    );
    await revocation(); // warm-up: first connections, JIT
    const samples = { revocation: [] as number[], destroy: [] as number[] };
    const deadline = performance.now() + TIME_BUDGET_MS;
    for (let i = 0; i < SAMPLES && performance.now() < deadline; i++) {
      samples.revocation.push(await revocation());
      samples.destroy.push(await directDestroy());
      if ((i + 1) % 5 === 0)
        log(
          `  ${i + 1}/${SAMPLES}: revocation p50 ${percentile(samples.revocation, 50).toFixed(1)} ms, ` +
            `destroy p50 ${percentile(samples.destroy, 50).toFixed(1)} ms`,
        );
    }
    for (const p of [50, 99])
      report({
        case: 'destroy-on-revocation',
        metric: `p${p}_ms`,
        value: percentile(samples.revocation, p),
        baselines: { 'destroy-call': percentile(samples.destroy, p) },
      });
  } finally {
    adminClients?.close();
    for (const client of clients) client.close();
    await daemon?.close();
    await server.close(0);
    rmSync(scratch, { recursive: true, force: true });
  }
}
