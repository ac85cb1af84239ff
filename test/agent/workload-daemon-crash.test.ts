// `sigil agent --workloads` killed with SIGKILL, then started again: the
// workload it ran is running again (a `restarted` event), the old run's
// processes, cgroup and mounts are gone, and when the daemon then stops
// nothing is left behind. SIGTERM stops it cleanly (exit 0).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { WorkloadDaemon } from '../../src/agent/workload-daemon.ts';
import { openWorkloadsClient } from '../../src/client/workload-channel.ts';
import type { CreateWorkloadRequest, WorkloadsClient } from '../../src/gen/sigil/v1/workloads.ts';
import { importImage, openImageStore } from '../../src/workloads/images.ts';
import { startSigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { tempDir } from '../support/temp-dir.ts';
import { buildBusyboxRootfs, workloadsUnavailable } from '../workloads/rootfs-fixture.ts';
import { nodeFile, startTestServer } from './server-fixture.ts';
import { call, IMAGE } from './workload-daemon-fixture.ts';

const unavailable = workloadsUnavailable();
if (unavailable) console.log(`# skipped: ${unavailable}`);

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((line) => line.split(' ')[1]?.startsWith(dir));
}

const request: CreateWorkloadRequest = {
  name: 'survivor',
  image: IMAGE,
  command: ['/bin/sh', '-c', 'echo up; exec sleep 1000'],
  runtime: '',
  env: {},
  workdir: '',
  user: '',
  memoryMib: 64,
  cpus: [],
  networks: [],
  blocks: [],
  restart: '',
  pidsMax: 0,
};

// Started at the top level, before any test: the fixtures' after() hooks then run when the file ends.
const server = unavailable ? undefined : await startTestServer();

describe('a node daemon killed with SIGKILL', { skip: unavailable ?? false }, () => {
  test('starts its workloads again and leaves nothing of the old run', async () => {
    if (!server) return;
    const nodeDir = await server.enrolledNode();
    const source = tempDir('sigil-image-');
    buildBusyboxRootfs(source);
    await importImage(openImageStore(nodeDir), source, IMAGE);
    const listen = `127.0.0.1:${await freePort()}`;
    const cgroupBase = `sigil-test-crash-${process.pid}-${randomBytes(3).toString('hex')}`;
    const node = nodeFile(nodeDir);
    const clients: WorkloadsClient[] = [];
    let restarted: WorkloadDaemon | undefined;
    after(async () => {
      for (const client of clients) client.close();
      await restarted?.close();
    });
    const admin = () => {
      const client = openWorkloadsClient({
        material: {
          certificateChain: readFileSync(join(server.dataDir, 'admin.pem'), 'utf8'),
          privateKey: readFileSync(join(server.dataDir, 'admin.key'), 'utf8'),
          trustBundle: readFileSync(join(nodeDir, 'bundle.pem'), 'utf8'),
        },
        rootFingerprint: node.rootFingerprint,
        endpoint: { nodeId: node.nodeId, name: '', address: listen, spiffeId: node.spiffeId ?? '' },
      });
      clients.push(client);
      return client;
    };

    const daemon = startSigil([
      'agent',
      '--dir',
      nodeDir,
      '--workloads',
      '--listen',
      listen,
      '--cgroup-base',
      cgroupBase,
      '--json',
    ]);
    await daemon.printed('workload daemon serving');
    const first = admin();
    const created = await call(first, first.createWorkload, request);
    assert.equal(created.state, 'running');
    daemon.child.kill('SIGKILL');
    assert.equal(await daemon.exited, 'SIGKILL');
    assert.ok(alive(created.pid), 'the workload outlived the daemon');

    restarted = await WorkloadDaemon.start({ dir: nodeDir, listen, cgroupBase });
    await eventually('the old run is gone', () => !alive(created.pid), 5000);
    const second = admin();
    const again = await call(second, second.getWorkload, { name: 'survivor' });
    assert.equal(again.state, 'running');
    assert.notEqual(again.pid, created.pid);
    const kinds = restarted.events.list({ workload: '//survivor' }).map((event) => event.kind);
    assert.ok(kinds.includes('restarted'), kinds.join(', '));

    await restarted.close();
    restarted = undefined;
    assert.ok(!alive(again.pid), 'closing the daemon kills its workloads');
    assert.deepEqual(mountsUnder(join(nodeDir, 'workloads')), []);
  });

  test('SIGTERM stops the daemon cleanly', async () => {
    if (!server) return;
    const nodeDir = await server.enrolledNode();
    const daemon = startSigil([
      'agent',
      '--dir',
      nodeDir,
      '--workloads',
      '--listen',
      '127.0.0.1:0',
      '--cgroup-base',
      `sigil-test-term-${process.pid}-${randomBytes(3).toString('hex')}`,
      '--json',
    ]);
    await daemon.printed('workload daemon serving');
    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.stderr());
  });
});
