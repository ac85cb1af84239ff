// VM workloads through the node daemon's Workloads API, against a real
// control plane and a real VM (qemu, TCG here): Carol creates a workload with
// runtime "vm" on br0; it is qemu (in the daemon's bridge namespace, on a
// guarded tap), its console shows the guest's output, the guest reads its
// own metadata document at 169.254.169.254 with busybox nc, and destroying
// it removes qemu, the tap and the anti-spoofing rules. Revoking Carol's
// delegation destroys her VM the same way. One VM at a time in this file.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readlinkSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import type { CreateWorkloadRequest, WorkloadsClient } from '../../src/gen/sigil/v1/workloads.ts';
import { ensureVmKernel } from '../../src/workloads/vm-kernel.ts';
import { guardRulesOf } from '../../src/workloads/vm-spoof-guard.ts';
import { tapNameFor } from '../../src/workloads/vm-tap.ts';
import { failInCi } from '../support/ci.ts';
import { sigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { workloadsUnavailable } from '../workloads/rootfs-fixture.ts';
import { call, collect, type DaemonHarness, IMAGE, startDaemonHarness } from './workload-daemon-fixture.ts';

const QEMU = '/usr/bin/qemu-system-x86_64';
const EBTABLES = '/usr/sbin/ebtables';
/** A boot under TCG takes ≈ 10 s here; the bound only stops a hung VM. */
const BOOT_TIMEOUT_MS = 180_000;

async function vmUnavailable(): Promise<string | null> {
  const workloads = workloadsUnavailable();
  if (workloads) return workloads;
  for (const [path, apt] of [
    [QEMU, 'qemu-system-x86'],
    [EBTABLES, 'iptables'],
  ] as const) {
    if (!existsSync(path)) {
      failInCi(`${path} is missing`);
      return `${path} is missing (apt-get install ${apt})`;
    }
  }
  try {
    await ensureVmKernel();
  } catch (error) {
    failInCi(`no VM kernel: ${(error as Error).message}`);
    return `no VM kernel: ${(error as Error).message}`;
  }
  return null;
}

const unavailable = await vmUnavailable();
if (unavailable) console.log(`# skipped: ${unavailable}`);
const namespaceId = `t${process.pid}-${randomBytes(3).toString('hex')}`;
const NAMESPACE = `sigil-${namespaceId}`;
// Started at the top level, before any test: the fixtures' after() hooks then run when the file ends.
const harness = unavailable
  ? undefined
  : await startDaemonHarness({
      bridges: ['br0=10.81.0.1/24'],
      networkNamespace: { create: namespaceId },
    });

function request(
  name: string,
  command: string[],
  more: Partial<CreateWorkloadRequest> = {},
): CreateWorkloadRequest {
  return {
    name,
    image: IMAGE,
    command,
    env: {},
    workdir: '',
    user: '',
    memoryMib: 192,
    cpus: [],
    networks: ['br0'],
    blocks: [],
    restart: '',
    pidsMax: 0,
    runtime: 'vm',
    ...more,
  };
}

/** The console's lines so far. */
async function consoleLines(client: WorkloadsClient, name: string): Promise<string[]> {
  const chunks = await collect(client.readConsole({ name, sinceUnixMs: 0, lines: 0, follow: false }));
  return chunks.items.map((chunk) => Buffer.from(chunk.data).toString());
}

function tapExists(tap: string): boolean {
  try {
    execFileSync('ip', ['-netns', NAMESPACE, 'link', 'show', tap], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function qemuRunning(pid: number): boolean {
  try {
    return readlinkSync(`/proc/${pid}/exe`).endsWith('qemu-system-x86_64');
  } catch {
    return false;
  }
}

describe('the node workload daemon: VM workloads', { skip: unavailable ?? false }, () => {
  const h = harness as DaemonHarness;
  let alice: string;
  let carol: string;

  before(async () => {
    alice = await h.delegate('alice', [
      '--permissions',
      'info,create,destroy,console,log,delegate,revoke,issue',
      '--workloads',
      '2',
      '--memory',
      '1024',
      '--bridges',
      'br0',
    ]);
    carol = await h.delegate('carol', [
      '--from',
      alice,
      '--permissions',
      'info,create,destroy,console,log',
      '--workloads',
      '1',
      '--memory',
      '256',
      '--bridges',
      'br0',
    ]);
    await h.daemon.settled;
  });

  test('a VM on br0 shows its guest on the console, reads its own metadata, and destroy leaves nothing', async () => {
    const client = h.client(carol);
    // busybox nc speaks raw HTTP/1.0: a token, then the JSON document split at its commas and braces.
    const script = [
      'echo guest-up',
      'T=$(printf "PUT /latest/api/token HTTP/1.0\\r\\nX-metadata-token-ttl-seconds: 60\\r\\n\\r\\n" | nc 169.254.169.254 80 | tail -n 1)',
      "printf \"GET /latest/meta-data HTTP/1.0\\r\\nAccept: application/json\\r\\nX-metadata-token: $T\\r\\n\\r\\n\" | nc 169.254.169.254 80 | tail -n 1 | tr ',{}' '\\n\\n\\n'",
      'echo',
      'echo metadata-done',
      'exec sleep 1000',
    ].join('; ');
    const created = await call(client, client.createWorkload, request('vm1', ['/bin/sh', '-c', script]));
    assert.equal(created.runtime, 'vm');
    assert.equal(created.state, 'running');
    assert.equal(created.addresses.length, 1);
    assert.equal(created.addresses[0].network, 'br0');
    assert.match(created.addresses[0].address, /^10\.81\.0\.\d+\/24$/);
    assert.ok(qemuRunning(created.pid), 'the workload is qemu');
    const tap = tapNameFor('/alice/carol//vm1');
    assert.ok(tapExists(tap), 'its tap is on the bridge');
    assert.equal((await guardRulesOf(NAMESPACE, tap)).length, 5, 'its tap is guarded');

    let lines: string[] = [];
    await eventually(
      'the guest read its metadata',
      async () => {
        lines = await consoleLines(client, 'vm1');
        return lines.includes('metadata-done');
      },
      BOOT_TIMEOUT_MS,
    );
    assert.ok(lines.includes('guest-up'), lines.join('\n'));
    for (const field of ['"VMMID":"vm1"', `"ImageTag":"${IMAGE}"`, '"Gateway":"10.81.0.1"'])
      assert.ok(lines.includes(field), `${field} in the VM's document:\n${lines.join('\n')}`);
    const ip = created.addresses[0].address.split('/')[0];
    assert.ok(
      lines.some((line) => line.includes(`"${ip}"`)),
      `its own address ${ip} in the document`,
    );

    await call(client, client.destroyWorkload, { name: 'vm1' });
    assert.equal(qemuRunning(created.pid), false, 'qemu is gone');
    assert.equal(tapExists(tap), false, 'the tap is gone');
    assert.deepEqual(await guardRulesOf(NAMESPACE, tap), [], 'the rules are gone');
  });

  test("revoking Carol's delegation destroys her VM: qemu, tap and rules", async () => {
    const client = h.client(carol);
    const created = await call(
      client,
      client.createWorkload,
      request('vm2', ['/bin/sh', '-c', 'echo vm2-up; exec sleep 1000']),
    );
    const tap = tapNameFor('/alice/carol//vm2');
    assert.ok(qemuRunning(created.pid));
    assert.ok(tapExists(tap));
    await eventually(
      'the guest is up',
      async () => (await consoleLines(client, 'vm2')).includes('vm2-up'),
      BOOT_TIMEOUT_MS,
    );
    const revoked = await sigil(['delegation', 'revoke', `${carol}/delegation.pem`, '--identity', alice]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const admin = h.admin();
    // Destroyed once no longer listed: the tap goes first, then its rules.
    await eventually(
      'the VM is destroyed',
      async () =>
        !(await call(admin, admin.listWorkloads, {})).workloads.some((workload) => workload.name === 'vm2'),
      60_000,
    );
    await eventually(
      'its rules are gone',
      async () => (await guardRulesOf(NAMESPACE, tap)).length === 0,
      10_000,
    );
    assert.equal(qemuRunning(created.pid), false, 'qemu is gone');
    assert.equal(tapExists(tap), false, 'the tap is gone');
  });
});
