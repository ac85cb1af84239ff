// The VM runtime against the real thing: Debian's stock kernel (fetched into
// the kernel cache, $SIGIL_VM_KERNEL_DIR or /var/cache/sigil/vm-kernel, on
// first use), sigil's initramfs, an ext4 root disk made from the busybox
// fixture, and qemu (TCG here). One VM at a time, bounded by timeouts: it
// boots, prints a marker and the kernel release on the serial console, and
// reaches a TCP listener in the bridge's namespace through its tap, the path
// the metadata service will use. Also the pieces on their own (the cpio
// archive as busybox cpio reads it, module order, the image) and every
// refusal. Every VM, tap, namespace and temporary file is removed, even on
// failure.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { detectCgroups } from '../../src/workloads/cgroups/detect.ts';
import { EventLog } from '../../src/workloads/event-log.ts';
import { importImage, openImageStore } from '../../src/workloads/images.ts';
import { macAddressFor } from '../../src/workloads/mac-address.ts';
import { openWorkloadNetworks } from '../../src/workloads/networks.ts';
import { WorkloadSupervisor } from '../../src/workloads/supervisor.ts';
import { chooseAccelerator } from '../../src/workloads/vm-accelerator.ts';
import { cpioArchive } from '../../src/workloads/vm-cpio.ts';
import { buildExt4Image, treeUsage } from '../../src/workloads/vm-image.ts';
import { buildInitramfs, INIT_DONE_MARKER } from '../../src/workloads/vm-initramfs.ts';
import { ensureVmKernel, type VmKernel } from '../../src/workloads/vm-kernel.ts';
import { modulesToLoad } from '../../src/workloads/vm-kernel-modules.ts';
import {
  launchVm,
  qemuArguments,
  type VmLaunchOptions,
  type VmProcess,
} from '../../src/workloads/vm-launcher.ts';
import { createTapOnBridge, removeTap, tapNameFor } from '../../src/workloads/vm-tap.ts';
import { failInCi } from '../support/ci.ts';
import { eventually } from '../support/eventually.ts';
import { refusal } from '../support/refusals.ts';
import { buildBusyboxRootfs, buildRunnableRootfs, tempDirFor } from './rootfs-fixture.ts';

const QEMU = '/usr/bin/qemu-system-x86_64';
const BUSYBOX = '/bin/busybox';
/** A whole boot under TCG takes ≈ 10 s here; the bound only stops a hung VM. */
const BOOT_TIMEOUT_MS = 120_000;
const READY = 'sigil-vm-ready';

async function kernelOrReason(): Promise<VmKernel | string> {
  if (process.getuid?.() !== 0) return 'VM workloads need root (tap devices, namespaces)';
  if (!existsSync(QEMU)) {
    failInCi(`${QEMU} is missing`);
    return `${QEMU} is missing (apt-get install qemu-system-x86)`;
  }
  if (!existsSync(BUSYBOX)) {
    failInCi(`${BUSYBOX} is missing`);
    return `${BUSYBOX} is missing (apt-get install busybox-static)`;
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
if (skipReason) console.log(`# vm-runtime: skipping VM tests: ${skipReason}`);

/** Every interface name in a namespace. */
function interfacesIn(namespace: string): string[] {
  return execFileSync('ip', ['-netns', namespace, '-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split(': ')[1].split('@')[0]);
}

/** A busybox rootfs turned into an ext4 image, plus an initramfs for `command`, in a temp dir. */
async function diskAndInitramfs(
  t: TestContext,
  command: readonly string[],
): Promise<Pick<VmLaunchOptions, 'rootDisk' | 'initramfs' | 'runDir'>> {
  assert.ok(kernel);
  const dir = tempDirFor(t, 'sigil-vm-');
  const root = join(dir, 'root');
  mkdirSync(root);
  buildRunnableRootfs(root);
  const rootDisk = join(dir, 'root.img');
  await buildExt4Image({ rootDir: root, imageFile: rootDisk, freeMiB: 16 });
  const initramfs = join(dir, 'initramfs');
  writeFileSync(initramfs, buildInitramfs({ kernel, command }));
  return { rootDisk, initramfs, runDir: dir };
}

/** The VM's console text so far, and a wait for a pattern in it (bounded). */
function consoleOf(vm: VmProcess): { text(): string; waitFor(pattern: RegExp): Promise<RegExpExecArray> } {
  let text = '';
  const waiters = new Set<() => void>();
  vm.stdout.setEncoding('utf8');
  vm.stdout.on('data', (chunk: string) => {
    text += chunk.replaceAll('\r', '');
    for (const waiter of waiters) waiter();
  });
  return {
    text: () => text,
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const match = pattern.exec(text);
          if (!match) return;
          cleanup();
          resolve(match);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${pattern} on the console within ${BOOT_TIMEOUT_MS} ms; console: ${text}`));
        }, BOOT_TIMEOUT_MS);
        const ended = (): void => {
          // Let the last output arrive before deciding.
          setImmediate(() => {
            if (!waiters.has(check)) return;
            cleanup();
            reject(new Error(`qemu ended before ${pattern}; console: ${text}`));
          });
        };
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        vm.exited.then(ended, ended);
        check();
      }),
  };
}

/** Kills the VM when the test ends, whatever happened. */
function killedAfter(t: TestContext, vm: VmProcess): void {
  t.after(async () => {
    vm.kill();
    await vm.exited;
  });
}

function rssKiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('VmRSS:'));
  return Number(line?.replace(/\D+/g, '') ?? 0);
}

test('cpioArchive writes a newc archive busybox cpio extracts: directories, files, symlinks, a device node', (t) => {
  if (process.getuid?.() !== 0 || !existsSync(BUSYBOX)) return t.skip('needs root and busybox');
  const dir = tempDirFor(t, 'sigil-cpio-');
  const archive = cpioArchive([
    { kind: 'directory', path: 'etc' },
    { kind: 'file', path: 'etc/hello', data: Buffer.from('hi there\n'), mode: 0o640 },
    { kind: 'file', path: 'odd', data: Buffer.from('abc') },
    { kind: 'symlink', path: 'link', target: 'etc/hello' },
    { kind: 'char-device', path: 'console', major: 5, minor: 1 },
  ]);
  execFileSync(BUSYBOX, ['cpio', '-i', '-d', '-m'], {
    cwd: dir,
    input: archive,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  assert.equal(readFileSync(join(dir, 'etc/hello'), 'utf8'), 'hi there\n');
  assert.equal(statSync(join(dir, 'etc/hello')).mode & 0o777, 0o640);
  assert.equal(readFileSync(join(dir, 'odd'), 'utf8'), 'abc');
  assert.equal(readlinkSync(join(dir, 'link')), 'etc/hello');
  const device = statSync(join(dir, 'console'));
  assert.ok(device.isCharacterDevice());
  assert.equal(device.rdev, (5 << 8) | 1);
});

test('cpioArchive refuses a path leaving the archive', () => {
  assert.throws(
    () => cpioArchive([{ kind: 'directory', path: '../up' }]),
    /relative path inside the archive/,
  );
  assert.throws(() => cpioArchive([{ kind: 'directory', path: '/abs' }]), /relative path inside the archive/);
});

test('modulesToLoad puts dependencies first and finds what ext4 and virtio need', (t) => {
  if (!kernel) return t.skip(skipReason);
  const modules = modulesToLoad(kernel.modulesDir, ['virtio_blk', 'ext4']).map((module) => module.name);
  for (const name of ['virtio', 'virtio_ring', 'virtio_blk', 'jbd2', 'mbcache', 'ext4']) {
    assert.ok(modules.includes(name), `${name} missing from ${modules.join(',')}`);
  }
  assert.ok(modules.indexOf('virtio_ring') < modules.indexOf('virtio_blk'));
  assert.ok(modules.indexOf('jbd2') < modules.indexOf('ext4'));
  assert.equal(new Set(modules).size, modules.length);
});

test('modulesToLoad refuses a module the kernel does not have', (t) => {
  if (!kernel) return t.skip(skipReason);
  assert.throws(
    () => modulesToLoad(kernel.modulesDir, ['no_such_module_x']),
    refusal('not_found', /no_such_module_x/),
  );
});

test('buildExt4Image sizes the image from the tree and refuses to overwrite a file', async (t) => {
  if (process.getuid?.() !== 0 || !existsSync('/usr/sbin/mke2fs')) return t.skip('needs root and mke2fs');
  const dir = tempDirFor(t, 'sigil-ext4-');
  const root = join(dir, 'root');
  mkdirSync(root);
  buildRunnableRootfs(root);
  const image = join(dir, 'root.img');
  const size = await buildExt4Image({ rootDir: root, imageFile: image, freeMiB: 8 });
  assert.equal(statSync(image).size, size);
  assert.ok(size > treeUsage(root).bytes);
  // The busybox binary is in the filesystem (debugfs reads it without mounting).
  const listing = execFileSync('/usr/sbin/debugfs', ['-R', 'ls -l /bin', image], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  assert.match(listing, /busybox/);
  const before = readFileSync(image);
  await assert.rejects(
    buildExt4Image({ rootDir: root, imageFile: image }),
    refusal('invalid_argument', /already exists/),
  );
  assert.ok(readFileSync(image).equals(before));
  await assert.rejects(
    buildExt4Image({ rootDir: join(dir, 'missing'), imageFile: join(dir, 'other.img') }),
    refusal('not_found', /no such directory/),
  );
  assert.equal(existsSync(join(dir, 'other.img')), false);
});

test('qemuArguments builds a pc machine with the console, the disk and the NIC, and refuses bad options', (t) => {
  if (!kernel) return t.skip(skipReason);
  const dir = tempDirFor(t, 'sigil-vmargs-');
  const file = join(dir, 'f');
  writeFileSync(file, 'x');
  const options: VmLaunchOptions = {
    kernel,
    initramfs: file,
    rootDisk: file,
    runDir: dir,
    memoryMiB: 192,
    cpus: 2,
    hostname: 'web',
    network: {
      namespace: 'ns',
      tap: 'sgt0',
      mac: '02:00:00:00:00:01',
      address: '10.9.0.5/24',
      gateway: '10.9.0.1',
    },
  };
  const args = qemuArguments(options, 'tcg');
  const after = (flag: string) => args[args.indexOf(flag) + 1];
  assert.equal(after('-M'), 'pc');
  assert.equal(after('-accel'), 'tcg');
  assert.equal(after('-m'), '192');
  assert.equal(after('-smp'), '2');
  assert.match(
    after('-append'),
    /console=ttyS0 .*sigil\.hostname=web sigil\.ip=10\.9\.0\.5\/24 sigil\.gw=10\.9\.0\.1/,
  );
  assert.ok(args.includes('virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01'));
  assert.ok(args.includes('-no-reboot'));
  const refused: [Partial<VmLaunchOptions>, RegExp][] = [
    [{ memoryMiB: 1 }, /memoryMiB/],
    [{ cpus: 0 }, /cpus/],
    [{ rootDisk: 'relative.img' }, /root disk .*absolute/],
    [{ rootDisk: join(dir, 'missing') }, /no such file/],
    [{ rootDisk: `${dir}/a,b` }, /must not contain ','/],
    [{ hostname: 'bad host' }, /hostname/],
    [{ network: { ...options.network!, mac: 'zz' } }, /MAC/],
    [{ network: { ...options.network!, address: '10.9.0.300/24' } }, /guest address/],
    [{ network: { ...options.network!, gateway: 'gw' } }, /gateway/],
  ];
  for (const [change, pattern] of refused) {
    assert.throws(() => qemuArguments({ ...options, ...change }, 'tcg'), refusal(null, pattern));
  }
});

test('chooseAccelerator takes SIGIL_VM_ACCEL, refuses another value, and probes /dev/kvm otherwise', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const saved = process.env.SIGIL_VM_ACCEL;
  t.after(() => {
    if (saved === undefined) delete process.env.SIGIL_VM_ACCEL;
    else process.env.SIGIL_VM_ACCEL = saved;
  });
  process.env.SIGIL_VM_ACCEL = 'tcg';
  assert.deepEqual(await chooseAccelerator(QEMU, kernel.bootImage), {
    accelerator: 'tcg',
    reason: 'SIGIL_VM_ACCEL',
  });
  process.env.SIGIL_VM_ACCEL = 'hvf';
  await assert.rejects(
    chooseAccelerator(QEMU, kernel.bootImage),
    refusal('invalid_argument', /SIGIL_VM_ACCEL="hvf"/),
  );
  delete process.env.SIGIL_VM_ACCEL;
  const probe = await chooseAccelerator(QEMU, kernel.bootImage);
  if (!existsSync('/dev/kvm')) assert.equal(probe.accelerator, 'tcg');
  assert.ok(probe.reason.length > 0);
  t.diagnostic(`accelerator ${probe.accelerator}: ${probe.reason}`);
});

test('launchVm refuses a missing network namespace before starting qemu', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const dir = tempDirFor(t, 'sigil-vmns-');
  const file = join(dir, 'f');
  writeFileSync(file, 'x');
  await assert.rejects(
    launchVm({
      kernel,
      initramfs: file,
      rootDisk: file,
      runDir: dir,
      accelerator: 'tcg',
      network: {
        namespace: `sigil-missing-${randomBytes(3).toString('hex')}`,
        tap: 't0',
        mac: macAddressFor('k'),
        address: '10.9.0.5/24',
      },
    }),
    refusal('not_found', /no such namespace/),
  );
  assert.deepEqual(readdirSync(dir), ['f']); // no QMP socket: qemu never started
});

test('createTapOnBridge refuses a bridge that is not there and leaves nothing', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const networks = await openWorkloadNetworks({ bridges: ['br0=10.213.7.1/24'] });
  t.after(() => networks.close());
  const before = interfacesIn(networks.namespace);
  await assert.rejects(
    createTapOnBridge(networks.namespace, 'br9', tapNameFor('w')),
    refusal('not_found', /bridge br9/),
  );
  await assert.rejects(
    createTapOnBridge(networks.namespace, 'br0', 'bad name'),
    refusal('invalid_argument', /tap/),
  );
  assert.deepEqual(interfacesIn(networks.namespace), before);
});

test('a VM boots the Debian kernel to its guest command and reaches the bridge through its tap', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const key = '/test/vm-runtime';
  const networks = await openWorkloadNetworks({ bridges: ['br0=10.213.7.1/24'] });
  t.after(() => networks.close());
  const tap = tapNameFor(key);
  await createTapOnBridge(networks.namespace, 'br0', tap);
  t.after(() => removeTap(networks.namespace, tap));
  assert.ok(interfacesIn(networks.namespace).includes(tap));

  // The listener in the bridge's namespace: what the metadata service will be.
  const listener = spawn('ip', ['netns', 'exec', networks.namespace, BUSYBOX, 'nc', '-l', '-p', '7777'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  t.after(() => {
    listener.kill('SIGKILL');
  });
  let received = '';
  listener.stdout.setEncoding('utf8');
  listener.stdout.on('data', (text: string) => {
    received += text;
  });

  const guest = [
    '/bin/sh',
    '-c',
    `echo ${READY}; uname -r; echo sigil-guest-hello | nc -w 10 10.213.7.1 7777 && echo sigil-net-ok; ` +
      'ip -o -4 address show dev eth0; exec sleep 600',
  ];
  const files = await diskAndInitramfs(t, guest);
  const started = process.hrtime.bigint();
  const vm = await launchVm({
    kernel,
    ...files,
    hostname: 'vm-test',
    memoryMiB: 256,
    network: {
      namespace: networks.namespace,
      tap,
      mac: macAddressFor(key),
      address: '10.213.7.5/24',
      gateway: '10.213.7.1',
    },
  });
  killedAfter(t, vm);
  const console = consoleOf(vm);
  const release = await console.waitFor(new RegExp(`${READY}\\n([^\\n]+)\\n`));
  const bootMs = Number(process.hrtime.bigint() - started) / 1e6;
  assert.equal(release[1], kernel.version);
  assert.ok(console.text().includes(INIT_DONE_MARKER));
  await console.waitFor(/sigil-net-ok/);
  await console.waitFor(/inet 10\.213\.7\.5\/24/);
  assert.match(received, /sigil-guest-hello/);
  const rss = rssKiB(vm.pid);
  assert.ok(rss > 0);
  t.diagnostic(
    `accelerator ${vm.accelerator}; boot to marker ${Math.round(bootMs)} ms; qemu RSS ${Math.round(rss / 1024)} MiB`,
  );

  const exit = await vm.shutdown(5000);
  assert.equal(exit.signal, null);
  assert.equal(existsSync(`/proc/${vm.pid}`), false);
  await removeTap(networks.namespace, tap);
  assert.equal(interfacesIn(networks.namespace).includes(tap), false);
});

test('a VM ends when its guest command ends', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const files = await diskAndInitramfs(t, ['/bin/sh', '-c', `echo ${READY}; poweroff -f`]);
  let spawnedPid = 0;
  const vm = await launchVm({
    kernel,
    ...files,
    onSpawned: (pid) => {
      spawnedPid = pid;
    },
  });
  killedAfter(t, vm);
  assert.equal(spawnedPid, vm.pid);
  const console = consoleOf(vm);
  await console.waitFor(new RegExp(READY));
  const exit = await vm.exited;
  assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
});

test('a VM whose guest command is not on its disk says so on the console and ends', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const files = await diskAndInitramfs(t, ['/no/such/program']);
  const vm = await launchVm({ kernel, ...files });
  killedAfter(t, vm);
  const console = consoleOf(vm);
  await console.waitFor(/sigil-init: guest command \/no\/such\/program is not in the root disk/);
  const exit = await vm.exited;
  assert.equal(exit.signal, null);
});

/** A supervisor with the busybox image, whose cgroups and files are removed when `t` ends. */
async function supervisorFor(t: TestContext) {
  const dir = tempDirFor(t, 'sigil-vmsup-');
  const images = openImageStore(join(dir, 'node'));
  const source = tempDirFor(t, 'sigil-vmimage-');
  buildBusyboxRootfs(source);
  await importImage(images, source, 'test/busybox:1');
  const events = EventLog.open(join(dir, 'events.db'));
  const driver = detectCgroups({ base: `sigil-test-vm-${process.pid}-${randomBytes(3).toString('hex')}` });
  const supervisor = new WorkloadSupervisor({ cgroups: driver, images, events, stateDir: join(dir, 'node') });
  t.after(async () => {
    try {
      await supervisor.close();
      for (const name of driver.list()) await driver.open(name).remove();
      await driver.removeBase();
    } finally {
      events.close();
    }
  });
  return { supervisor, driver, events, stateDir: join(dir, 'node') };
}

test('the supervisor refuses what the vm runtime cannot do yet, and creates nothing', async (t) => {
  if (!kernel) return t.skip(skipReason);
  const { supervisor, driver, stateDir } = await supervisorFor(t);
  const base = {
    key: '/t/vm',
    name: 'vm',
    image: 'test/busybox:1',
    command: ['/bin/sh'],
    runtime: 'vm' as const,
  };
  await assert.rejects(
    supervisor.create({ ...base, env: { A: 'b' } }),
    refusal('invalid_argument', /env: not supported by the vm runtime/),
  );
  await assert.rejects(
    supervisor.create({ ...base, user: 'nobody' }),
    refusal('invalid_argument', /user: not supported/),
  );
  await assert.rejects(
    supervisor.create({ ...base, runtime: 'xen' as unknown as 'vm' }),
    refusal('invalid_argument', /runtime "xen": expected namespaces or vm/),
  );
  await assert.rejects(
    supervisor.create({ ...base, command: ['/no/such'] }),
    refusal('not_found', /\/no\/such/),
  );
  assert.deepEqual(supervisor.list(), []);
  assert.deepEqual(driver.list(), []);
  assert.deepEqual(
    readdirSync(stateDir).filter((name) => name.startsWith('w-')),
    [],
  );
});

test("the supervisor runs a runtime: 'vm' workload: console, cgroup, input, destroy", async (t) => {
  if (!kernel) return t.skip(skipReason);
  const { supervisor, driver, stateDir } = await supervisorFor(t);
  const info = await supervisor.create({
    key: '/t/vm',
    name: 'vm-sup',
    image: 'test/busybox:1',
    command: ['/bin/sh', '-c', `echo ${READY}; hostname; read line; echo "got $line"; exec sleep 600`],
    runtime: 'vm',
    limits: { memoryMiB: 192 },
  });
  assert.equal(info.state, 'running');
  assert.ok(info.pid);
  const text = () =>
    supervisor
      .console('/t/vm')
      .history()
      .map((line) => line.bytes.toString('utf8'))
      .join('\n');
  await eventually('the marker on the console', () => text().includes(READY), BOOT_TIMEOUT_MS);
  await eventually('the hostname on the console', () => text().includes('vm-sup'), BOOT_TIMEOUT_MS);
  // qemu is in the workload's cgroup: its memory is counted there.
  assert.ok(supervisor.stats('/t/vm').memoryBytes > 32 * 1024 * 1024);
  supervisor.writeInput('/t/vm', Buffer.from('hello-vm\n'));
  await eventually('the input echoed back', () => text().includes('got hello-vm'), BOOT_TIMEOUT_MS);
  assert.ok(existsSync(join(stateDir, info.cgroup, 'vm', 'root.img')));
  await supervisor.destroy('/t/vm');
  assert.equal(existsSync(`/proc/${info.pid}`), false);
  assert.deepEqual(driver.list(), []);
  assert.deepEqual(
    readdirSync(stateDir).filter((name) => name.startsWith('w-')),
    [],
  );
});
