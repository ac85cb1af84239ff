// VM workloads on the node's bridges and with the guest runtime, through
// the supervisor, against the real thing (qemu under TCG here, Debian's
// kernel, the busybox image). One VM at a time, each bounded by timeouts.
//
// The network: a VM on br0 gets a guarded tap and an address from the
// bridge's pool (shown in its info like a process's), reaches the metadata
// relay at 169.254.169.254 with it, and, having given itself another
// workload's address (its own kernel lets it), reaches nothing: the relay
// never sees that address from it. Destroy removes qemu, the tap and the
// rules and frees the address.
//
// The guest runtime: the host's Node, its libraries and sigil's package are
// exported read-only over 9p and mounted under /.sigil before the switch to
// the guest, so `sigil --version` runs in a VM whose image has no sigil.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { startMetadataRelay } from '../../src/guest/metadata-relay.ts';
import { detectCgroups } from '../../src/workloads/cgroups/detect.ts';
import { EventLog } from '../../src/workloads/event-log.ts';
import { prepareGuestRuntime } from '../../src/workloads/guest-runtime.ts';
import { importImage, openImageStore } from '../../src/workloads/images.ts';
import { macAddressFor } from '../../src/workloads/mac-address.ts';
import { openWorkloadNetworks, type WorkloadNetworks } from '../../src/workloads/networks.ts';
import { WorkloadSupervisor } from '../../src/workloads/supervisor.ts';
import { buildInitramfs } from '../../src/workloads/vm-initramfs.ts';
import { ensureVmKernel, type VmKernel } from '../../src/workloads/vm-kernel.ts';
import { qemuArguments } from '../../src/workloads/vm-launcher.ts';
import { sharesOf } from '../../src/workloads/vm-run.ts';
import { guardRulesOf } from '../../src/workloads/vm-spoof-guard.ts';
import { tapNameFor } from '../../src/workloads/vm-tap.ts';
import { failInCi } from '../support/ci.ts';
import { eventually } from '../support/eventually.ts';
import { refusal } from '../support/refusals.ts';
import { buildBusyboxRootfs, tempDirFor } from './rootfs-fixture.ts';

const QEMU = '/usr/bin/qemu-system-x86_64';
const BUSYBOX = '/bin/busybox';
const EBTABLES = '/usr/sbin/ebtables';
/** A whole boot under TCG takes ≈ 10 s here (Node in the guest far longer); the bound only stops a hung VM. */
const BOOT_TIMEOUT_MS = 180_000;
const VERSION = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))
  .version as string;

async function kernelOrReason(): Promise<VmKernel | string> {
  if (process.getuid?.() !== 0) return 'VM workloads need root (tap devices, namespaces)';
  for (const [path, apt] of [
    [QEMU, 'qemu-system-x86'],
    [BUSYBOX, 'busybox-static'],
    [EBTABLES, 'iptables'],
  ] as const) {
    if (!existsSync(path)) {
      failInCi(`${path} is missing`);
      return `${path} is missing (apt-get install ${apt})`;
    }
  }
  try {
    return await ensureVmKernel();
  } catch (error) {
    const reason = `no VM kernel: ${(error as Error).message}`;
    failInCi(reason);
    return reason;
  }
}
const kernelOrSkip = await kernelOrReason();
const kernel = typeof kernelOrSkip === 'string' ? null : kernelOrSkip;
const skipReason = typeof kernelOrSkip === 'string' ? kernelOrSkip : '';
if (skipReason) console.log(`# vm-network: skipping VM tests: ${skipReason}`);

/** Bridges in a fresh namespace, closed (namespace removed) when `t` ends. */
async function networksFor(t: TestContext, bridge: string): Promise<WorkloadNetworks> {
  const id = `test-${randomBytes(4).toString('hex')}`;
  let networks: WorkloadNetworks | undefined;
  t.after(async () => {
    try {
      await networks?.close();
    } finally {
      if (existsSync(`/run/netns/sigil-${id}`)) execFileSync('ip', ['netns', 'delete', `sigil-${id}`]);
    }
  });
  networks = await openWorkloadNetworks({ bridges: [bridge], namespace: { create: id } });
  return networks;
}

/** A supervisor with the busybox image (and `networks`), whose cgroups and files are removed when `t` ends. */
async function supervisorFor(t: TestContext, networks?: WorkloadNetworks) {
  const dir = tempDirFor(t, 'sigil-vmnet-');
  const images = openImageStore(join(dir, 'node'));
  const source = tempDirFor(t, 'sigil-vmnet-image-');
  buildBusyboxRootfs(source);
  await importImage(images, source, 'test/busybox:1');
  const events = EventLog.open(join(dir, 'events.db'));
  const driver = detectCgroups({ base: `sigil-test-vmnet-${process.pid}-${randomBytes(3).toString('hex')}` });
  const supervisor = new WorkloadSupervisor({
    cgroups: driver,
    images,
    events,
    stateDir: join(dir, 'node'),
    ...(networks ? { networks } : {}),
  });
  t.after(async () => {
    try {
      await supervisor.close();
      for (const name of driver.list()) await driver.open(name).remove();
      await driver.removeBase();
    } finally {
      events.close();
    }
  });
  return { supervisor, driver, dir, stateDir: join(dir, 'node') };
}

/** A stand-in for the daemon's metadata socket: answers with the source the relay saw, and remembers it. */
async function metadataSocketFor(t: TestContext, dir: string): Promise<{ path: string; sources: string[] }> {
  const path = join(dir, 'metadata.sock');
  const sources: string[] = [];
  const server: Server = createServer((socket) => {
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const line = /^SIGIL-SOURCE (\S+)\n/.exec(text);
      if (line && !socket.writableEnded) {
        sources.push(line[1]);
        socket.end(`document-of ${line[1]}\n`);
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { path, sources };
}

/** A process on the bridge through a veth (the workload whose address the VM takes), killed when `t` ends. */
async function vethWorkloadFor(t: TestContext, networks: WorkloadNetworks, key: string) {
  const child: ChildProcess = spawn('unshare', ['--net', '--', 'sh', '-c', 'echo ready; exec sleep 600'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`unshare exited early (${code})`)));
    child.stdout!.once('data', () => resolve());
  });
  return networks.attach(child.pid!, 'br0', key, ['br0']);
}

function consoleText(supervisor: WorkloadSupervisor, key: string): string {
  return supervisor
    .console(key)
    .history()
    .map((line) => line.bytes.toString('utf8'))
    .join('\n');
}

test('sharesOf tags each read-only bind and mounts it at its target; the initramfs and qemu carry them', (t) => {
  if (!kernel) return t.skip(skipReason);
  const dir = tempDirFor(t, 'sigil-vmshare-');
  mkdirSync(join(dir, 'a'));
  mkdirSync(join(dir, 'b'));
  const { shares, mounts } = sharesOf([
    { source: join(dir, 'a'), target: '/.sigil/node' },
    { source: join(dir, 'b'), target: '/.sigil/lib/' },
  ]);
  assert.deepEqual(shares, [
    { source: join(dir, 'a'), tag: 'sigil0' },
    { source: join(dir, 'b'), tag: 'sigil1' },
  ]);
  assert.deepEqual(mounts, [
    { tag: 'sigil0', target: '/.sigil/node' },
    { tag: 'sigil1', target: '/.sigil/lib' },
  ]);
  const initramfs = buildInitramfs({ kernel, shares: mounts });
  assert.ok(initramfs.includes(Buffer.from('sigil0 /.sigil/node\nsigil1 /.sigil/lib\n')));
  assert.ok(initramfs.includes(Buffer.from('9pnet_virtio.ko')));
  assert.equal(buildInitramfs({ kernel }).includes(Buffer.from('9pnet_virtio.ko')), false);
  for (const target of ['/a b', '/a/../b', 'relative', '/a\nb']) {
    assert.throws(
      () => buildInitramfs({ kernel, shares: [{ tag: 'sigil0', target }] }),
      refusal('invalid_argument', /share mount point/),
    );
  }
  const file = join(dir, 'file');
  execFileSync('touch', [file]);
  const base = {
    kernel,
    initramfs: file,
    rootDisk: file,
    runDir: dir,
  };
  const args = qemuArguments({ ...base, shares }, 'tcg');
  assert.ok(
    args.includes(`local,path=${join(dir, 'a')},mount_tag=sigil0,security_model=none,readonly=on`),
    args.join(' '),
  );
  for (const [share, pattern] of [
    [{ source: join(dir, 'missing'), tag: 'x' }, refusal('not_found', /no such directory/)],
    [{ source: file, tag: 'x' }, refusal('not_found', /no such directory/)],
    [{ source: join(dir, 'a'), tag: 'bad tag' }, refusal('invalid_argument', /share tag/)],
    [{ source: 'relative', tag: 'x' }, refusal('invalid_argument', /absolute path/)],
  ] as const) {
    assert.throws(() => qemuArguments({ ...base, shares: [share] }, 'tcg'), pattern);
  }
  assert.throws(
    () => qemuArguments({ ...base, shares: [shares[0], { ...shares[1], tag: 'sigil0' }] }, 'tcg'),
    refusal('invalid_argument', /given twice/),
  );
});

test('a VM that takes another workload address cannot reach the metadata relay with it', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const networks = await networksFor(t, 'br0=10.213.14.1/24');
  const { supervisor, driver, dir, stateDir } = await supervisorFor(t, networks);
  const socket = await metadataSocketFor(t, dir);
  const relay = await startMetadataRelay({ namespace: networks.namespace, socketPath: socket.path });
  t.after(() => relay.close());
  const victim = await vethWorkloadFor(t, networks, '/alice//victim');
  const bridgeMac = execFileSync(
    'ip',
    ['netns', 'exec', networks.namespace, 'cat', '/sys/class/net/br0/address'],
    { encoding: 'utf8' },
  ).trim();
  const ask = "printf 'GET /\\n' | nc -w 5 169.254.169.254 80";
  const script = [
    `echo "own: $(${ask})"`,
    // The guest's kernel is its own: it takes the victim's address, with no ARP needed for the gateway.
    'ip address flush dev eth0',
    `ip address add ${victim.address}/24 dev eth0`,
    `ip route replace default via ${victim.gateway} dev eth0`,
    `ip neigh replace ${victim.gateway} lladdr ${bridgeMac} dev eth0`,
    `arping -c 1 -w 2 -I eth0 -s ${victim.address} ${victim.gateway} >/dev/null 2>&1`,
    `echo "spoofed: $(${ask})"`,
    'echo attack-done',
    'exec sleep 600',
  ].join('\n');

  const key = '/mallory//vm';
  const info = await supervisor.create({
    key,
    name: 'vm-net',
    image: 'test/busybox:1',
    command: ['/bin/sh', '-c', script],
    runtime: 'vm',
    networks: ['br0'],
    limits: { memoryMiB: 192 },
  });
  const tap = networks.tapOf(key);
  assert.ok(tap);
  assert.equal(tap.tap, tapNameFor(key));
  assert.deepEqual(info.addresses, [
    { network: 'br0', address: `${tap.address}/24`, mac: macAddressFor(key) },
  ]);
  assert.notEqual(tap.address, victim.address);
  assert.equal((await guardRulesOf(networks.namespace, tap.tap)).length, 5);
  assert.match(
    execFileSync('ip', ['-netns', networks.namespace, 'link', 'show', tap.tap], { encoding: 'utf8' }),
    /master br0/,
  );

  await eventually(
    'the attack to finish',
    () => consoleText(supervisor, key).includes('attack-done'),
    BOOT_TIMEOUT_MS,
  );
  const text = consoleText(supervisor, key);
  assert.match(text, new RegExp(`own: document-of ${tap.address.replaceAll('.', '\\.')}`));
  assert.match(text, /spoofed: *$/m);
  assert.deepEqual(socket.sources, [tap.address], 'the relay only ever saw the VM with its own address');

  await supervisor.destroy(key);
  assert.equal(existsSync(`/proc/${info.pid}`), false);
  assert.equal(networks.tapOf(key), undefined);
  assert.throws(() =>
    execFileSync('ip', ['-netns', networks.namespace, 'link', 'show', tap.tap], { stdio: 'ignore' }),
  );
  assert.deepEqual(await guardRulesOf(networks.namespace, tap.tap), []);
  assert.deepEqual(driver.list(), []);
  assert.deepEqual(
    readdirSync(stateDir).filter((name) => name.startsWith('w-')),
    [],
  );
  // Its address is free again.
  const again = await networks.attachTap('br0', key, ['br0']);
  assert.equal(again.address, tap.address);
  await networks.detach(key);
});

test('a VM runs sigil from the guest runtime shared over 9p, though its image has no sigil', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const { supervisor, dir } = await supervisorFor(t);
  const runtimeDir = join(dir, 'guest-runtime');
  const runtime = prepareGuestRuntime(runtimeDir);
  t.after(() => rmSync(runtimeDir, { recursive: true, force: true }));
  const command = runtime.command(['--version']);
  assert.equal(command[0], '/.sigil/lib/ld-linux-x86-64.so.2');
  const key = '/t//vm-runtime';
  const info = await supervisor.create({
    key,
    name: 'vm-runtime',
    image: 'test/busybox:1',
    command: [
      '/bin/sh',
      '-c',
      `echo runtime-start; "$@"; echo "runtime-exit $?"; exec sleep 600`,
      'sh',
      ...command,
    ],
    runtime: 'vm',
    readOnlyBinds: runtime.binds,
    limits: { memoryMiB: 512 },
  });
  assert.equal(info.runtime, 'vm');
  await eventually(
    'sigil --version in the VM',
    () => /runtime-exit \d+/.test(consoleText(supervisor, key)),
    BOOT_TIMEOUT_MS,
  );
  const text = consoleText(supervisor, key);
  assert.match(text, new RegExp(`^${VERSION.replaceAll('.', '\\.')}$`, 'm'), text);
  assert.match(text, /runtime-exit 0/);
  await supervisor.destroy(key);
  assert.equal(existsSync(`/proc/${info.pid}`), false);
});
