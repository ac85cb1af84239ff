// `sigil build --runtime vm` against a real control plane and node daemon:
// each stage is a qemu VM (TCG here) on br0, booted from the stage's base
// with the guest runtime shared over 9p and `sigil vminit` as its command.
// The stage's result is the VM's disk as the guest left it (/init unmounts it
// cleanly when vminit ends), imported into the store. The same build with the
// process runtime runs too, and both wall times are printed (not asserted).
// Refusals store nothing: too little memory asked for, or granted by the
// caller's policy. One VM at a time in this file.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { before, describe, test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import type { BuildImageRequest, WorkloadsClient } from '../../src/gen/sigil/v1/workloads.ts';
import { listImages, openImageStore } from '../../src/workloads/images.ts';
import { ensureVmKernel } from '../../src/workloads/vm-kernel.ts';
import { failInCi } from '../support/ci.ts';
import { run, SIGIL_BIN } from '../support/cli.ts';
import { tempDir } from '../support/temp-dir.ts';
import { workloadsUnavailable } from '../workloads/rootfs-fixture.ts';
import { nodeFile } from './server-fixture.ts';
import { call, type DaemonHarness, IMAGE, startDaemonHarness } from './workload-daemon-fixture.ts';

const QEMU = '/usr/bin/qemu-system-x86_64';
const EBTABLES = '/usr/sbin/ebtables';

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
// Started at the top level, before any test: the fixtures' after() hooks then run when the file ends.
const harness = unavailable
  ? undefined
  : await startDaemonHarness({
      bridges: ['br0=10.82.0.1/24'],
      networkNamespace: { create: `v${process.pid}-${randomBytes(3).toString('hex')}` },
    });

const DOCKERFILE = [
  `FROM ${IMAGE}`,
  'COPY site/ /srv/www/',
  'RUN mkdir -p /app/data && echo built > /app/data/marker',
].join('\n');

function contextWith(dockerfile: string): string {
  const dir = tempDir('sigil-build-vm-context-');
  mkdirSync(join(dir, 'site'));
  writeFileSync(join(dir, 'site', 'index.html'), '<h1>vm</h1>\n');
  writeFileSync(join(dir, 'Dockerfile'), `${dockerfile}\n`);
  return dir;
}

/** A BuildImage call that sends only the header: the status it ends with. */
async function buildHeaderOnly(client: WorkloadsClient, message: BuildImageRequest) {
  const stream = client.buildImage();
  const ended = new Promise<grpc.ServiceError | null>((resolve) => {
    stream.on('data', () => undefined);
    stream.on('end', () => resolve(null));
    stream.on('error', (error: grpc.ServiceError) => resolve(error));
  });
  stream.write(message);
  stream.end();
  return ended;
}

const vmHeader = (tag: string, memoryMib: number): BuildImageRequest => ({
  part: {
    $case: 'header',
    value: {
      tag,
      dockerfile: Buffer.from(DOCKERFILE),
      buildArgs: {},
      runtime: 'vm',
      networks: [],
      memoryMib,
    },
  },
});

describe('sigil build --runtime vm on a node', { skip: unavailable ?? false }, () => {
  const h = harness as DaemonHarness;
  let alice: string;
  let node: string;
  const images = () => listImages(openImageStore(h.nodeDir)).map((image) => image.tag);

  before(async () => {
    alice = await h.delegate('alice', [
      '--permissions',
      'info,create,destroy,console,log',
      '--workloads',
      '2',
      '--memory',
      '1024',
      '--bridges',
      'br0',
      '--issuance-per-hour',
      '20',
    ]);
    node = nodeFile(h.nodeDir).nodeId;
    await h.daemon.settled;
  });

  const build = (tag: string, more: string[]) =>
    // A VM build under TCG takes tens of seconds: more than the CLI helper's default 30 s bound.
    run(
      process.execPath,
      [SIGIL_BIN, 'build', '-t', tag, '--node', node, '--identity', alice, '--json', ...more],
      {
        timeoutMs: 300_000,
      },
    );

  test("a VM build stores the COPY'd file and the RUN's file from the VM's disk; the same build as processes", async () => {
    const context = contextWith(DOCKERFILE);
    const vmStarted = Date.now();
    const result = await build('demo/vm-site:1', ['--runtime', 'vm', '--memory', '512', context]);
    const vmMs = Date.now() - vmStarted;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse(result.stdout).tag, 'demo/vm-site:1');
    const stored = listImages(openImageStore(h.nodeDir)).find((entry) => entry.tag === 'demo/vm-site:1');
    assert.ok(stored, `stored: ${images().join(', ')}`);
    assert.equal(readFileSync(join(stored.rootfs, 'srv/www/index.html'), 'utf8'), '<h1>vm</h1>\n');
    assert.equal(readFileSync(join(stored.rootfs, 'app/data/marker'), 'utf8'), 'built\n');
    assert.equal(existsSync(join(stored.rootfs, '.sigil')), false, 'the guest runtime is not the image');
    assert.equal(existsSync(join(stored.rootfs, 'lost+found')), false, "the disk's lost+found is not either");
    assert.ok(existsSync(join(dirname(stored.rootfs), 'rootfs.ext4')));
    const client = h.client(alice);
    assert.deepEqual((await call(client, client.listWorkloads, {})).workloads, []);

    const processStarted = Date.now();
    const processResult = await build('demo/process-site:1', [context]);
    const processMs = Date.now() - processStarted;
    assert.equal(processResult.code, 0, processResult.stderr);
    console.log(`# the same build: ${vmMs} ms as a VM (TCG), ${processMs} ms as processes`);
    const asProcesses = listImages(openImageStore(h.nodeDir)).find(
      (entry) => entry.tag === 'demo/process-site:1',
    );
    assert.ok(asProcesses);
    assert.equal(readFileSync(join(asProcesses.rootfs, 'app/data/marker'), 'utf8'), 'built\n');
  });

  test('a VM build asking for less than 256 MiB is refused and stores nothing', async () => {
    const client = h.client(alice);
    const error = await buildHeaderOnly(client, vmHeader('demo/vm-small:1', 128));
    assert.ok(error, 'refused');
    assert.match(error.details, /memory 128 MiB: a VM build needs at least 256 MiB/);
    assert.ok(!images().includes('demo/vm-small:1'));
    assert.deepEqual((await call(client, client.listWorkloads, {})).workloads, []);
  });

  test("a VM build whose caller's policy grants less than 256 MiB is refused and stores nothing", async () => {
    const dave = await h.delegate('dave', [
      '--permissions',
      'info,create,destroy',
      '--workloads',
      '1',
      '--memory',
      '128',
      '--bridges',
      'br0',
      '--issuance-per-hour',
      '10',
    ]);
    const client = h.client(dave);
    const error = await buildHeaderOnly(client, vmHeader('demo/vm-policy:1', 0));
    assert.ok(error, 'refused');
    assert.match(error.details, /memory 128 MiB \(your policy's\): a VM build needs at least 256 MiB/);
    assert.ok(!images().includes('demo/vm-policy:1'));
    assert.deepEqual((await call(client, client.listWorkloads, {})).workloads, []);
  });
});
