// VM workload benchmarks (runtime: 'vm', qemu; TCG unless KVM really works):
//
//   vm-create-to-sigil  ms from WorkloadSupervisor.create(...) of a VM whose
//                       guest runs the guest runtime's `sigil --version`
//                       (Node and sigil over 9p, guest-runtime.ts) until the
//                       version reaches the console: the cgroup, the overlay,
//                       the ext4 disk, the initramfs, the boot, the 9p mounts
//                       and Node starting in the guest, the way `sigil vminit`
//                       starts.
//   vm-create-to-echo   the same with a guest that only echoes a marker
//                       (what the runtime costs without Node).
//   idle-vm-rss         qemu's RSS (MiB) for one idle VM workload (the guest
//                       sleeping, 256 MiB of guest memory).
//
// Baseline, measured in the same run (interleaved): a bare
// `qemu-system-x86_64` of the same kernel and the same kind of initramfs and
// root disk (built once, untimed) booting to a marker on its serial console,
// and for the RSS, that bare qemu idling the same way.
// Medians of at most RUNS samples of each, bounded by TIME_BUDGET_MS; one
// boot longer than START_TIMEOUT_MS is a failure. One VM at a time. Needs
// root. Every VM is destroyed or killed after its sample; the supervisor,
// cgroups, event log, image store and temporary directories are removed in a
// finally, whether or not the run succeeded.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { detectCgroups } from '../src/workloads/cgroups/detect.ts';
import type { ConsoleRing } from '../src/workloads/console-ring.ts';
import { EventLog } from '../src/workloads/event-log.ts';
import { prepareGuestRuntime } from '../src/workloads/guest-runtime.ts';
import { importImage, openImageStore } from '../src/workloads/images.ts';
import { WorkloadSupervisor } from '../src/workloads/supervisor.ts';
import { chooseAccelerator } from '../src/workloads/vm-accelerator.ts';
import { buildExt4Image } from '../src/workloads/vm-image.ts';
import { buildInitramfs } from '../src/workloads/vm-initramfs.ts';
import { ensureVmKernel, type VmKernel } from '../src/workloads/vm-kernel.ts';
import { qemuArguments } from '../src/workloads/vm-launcher.ts';
import { buildBusyboxRootfs } from '../test/workloads/rootfs-fixture.ts';
import { type Limits, median, type Report } from './measure.ts';

export const description =
  'VM workload create → guest sigil --version and → echo (median ms), idle VM RSS, vs a bare qemu boot of the same kernel';

const RUNS = 3;
/** The whole measurement stops after this, with however many samples it has (at least one of each). */
const TIME_BUDGET_MS = 600_000;
/** One boot that takes longer than this is a failure, not a sample. */
const START_TIMEOUT_MS = 180_000;
/** How long a VM idles before its RSS is read. */
const IDLE_MS = 5000;
const QEMU = '/usr/bin/qemu-system-x86_64';
const IMAGE = 'bench/busybox:1';
const MARKER = 'bench-vm-marker';
const GUEST_MiB = 256;

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: not done within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves when the console holds a line equal to `wanted` (already, or when it arrives). */
function consoleLine(ring: ConsoleRing, wanted: string): Promise<void> {
  return new Promise((resolve) => {
    if (ring.history().some((line) => line.bytes.toString('utf8').trim() === wanted)) return resolve();
    const stop = ring.subscribe((line) => {
      if (line.bytes.toString('utf8').trim() === wanted) {
        stop();
        resolve();
      }
    });
  });
}

/** A process's resident set, MiB. */
function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kib) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(kib[1]) / 1024;
}

interface BareQemu {
  /** Boots the bare VM to the marker (ms); `onReady` sees it running (its pid) before it is killed. */
  boot(onReady?: (pid: number) => Promise<void>): Promise<number>;
}

/** The baseline: qemu with the same kernel, an initramfs of the same /init and an ext4 disk of the image. */
async function bareQemuFor(dir: string, kernel: VmKernel, rootfs: string): Promise<BareQemu> {
  const accelerator = (await chooseAccelerator(QEMU, kernel.bootImage)).accelerator;
  const rootDisk = join(dir, 'root.img');
  await buildExt4Image({ rootDir: rootfs, imageFile: rootDisk });
  const initramfs = join(dir, 'initramfs');
  writeFileSync(
    initramfs,
    buildInitramfs({ kernel, command: ['/bin/sh', '-c', `echo ${MARKER}; exec sleep 3600`] }),
  );
  let boots = 0;
  return {
    async boot(onReady) {
      const runDir = join(dir, `run${++boots}`);
      mkdirSync(runDir);
      // The supervisor's own arguments, without the pause for the cgroup join (-S).
      const args = qemuArguments(
        { kernel, initramfs, rootDisk, runDir, memoryMiB: GUEST_MiB },
        accelerator,
      ).filter((arg) => arg !== '-S');
      const child = spawn(QEMU, args, { stdio: ['pipe', 'pipe', 'ignore'] });
      const started = performance.now();
      try {
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            let out = '';
            child.stdout.setEncoding('utf8');
            child.stdout.on('data', (text: string) => {
              out = (out + text).slice(-4096);
              if (out.includes(MARKER)) resolve();
            });
            child.on('error', reject);
            child.on('close', (code) => reject(new Error(`bare qemu exited ${code} before the marker`)));
          }),
          'bare qemu boot',
        );
        const ms = performance.now() - started;
        if (onReady && child.pid !== undefined) await onReady(child.pid);
        return ms;
      } finally {
        const closed = new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('close', () => resolve());
        });
        child.kill('SIGKILL');
        await closed;
        rmSync(runDir, { recursive: true, force: true });
      }
    },
  };
}

export async function run(report: Report, _limits: Limits): Promise<void> {
  if (process.getuid?.() !== 0) {
    log('bench vm: needs root (cgroups, overlay mounts, qemu); not run');
    throw new Error('bench vm needs root');
  }
  if (!existsSync(QEMU)) throw new Error(`bench vm: ${QEMU} is missing (apt-get install qemu-system-x86)`);
  const kernel = await ensureVmKernel();
  const driver = detectCgroups({ base: `sigil-bench-vm-${process.pid}-${randomBytes(3).toString('hex')}` });
  const dir = mkdtempSync(join(tmpdir(), 'sigil-bench-vm-'));
  const source = mkdtempSync(join(tmpdir(), 'sigil-bench-vm-image-'));
  let events: EventLog | undefined;
  let supervisor: WorkloadSupervisor | undefined;
  const failures: unknown[] = [];
  try {
    const stateDir = join(dir, 'node');
    const images = openImageStore(stateDir);
    buildBusyboxRootfs(source);
    const image = await importImage(images, source, IMAGE);
    events = EventLog.open(join(dir, 'events.db'));
    const sup = new WorkloadSupervisor({ cgroups: driver, images, events, stateDir });
    supervisor = sup;
    const runtime = prepareGuestRuntime(join(dir, 'guest-runtime'));
    const version = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
      .version as string;
    const bareDir = join(dir, 'bare');
    mkdirSync(bareDir);
    const bare = await bareQemuFor(bareDir, kernel, image.rootfs);

    let created = 0;
    /** One VM workload until `wanted` is on its console; `onReady` sees it running before it is destroyed. */
    const vm = async (
      command: string[],
      wanted: string,
      binds: boolean,
      onReady?: (pid: number) => Promise<void>,
    ): Promise<number> => {
      const key = `/bench//vm${++created}`;
      const started = performance.now();
      try {
        const info = await withTimeout(
          sup
            .create({
              key,
              name: 'bench-vm',
              image: IMAGE,
              command,
              runtime: 'vm',
              limits: { memoryMiB: GUEST_MiB },
              ...(binds ? { readOnlyBinds: runtime.binds } : {}),
            })
            .then(async (info) => {
              await consoleLine(sup.console(key), wanted);
              return info;
            }),
          `VM ${key}`,
        );
        const ms = performance.now() - started;
        if (onReady && info.pid !== undefined) await onReady(info.pid);
        return ms;
      } finally {
        if (sup.list().some((info) => info.key === key)) await sup.destroy(key);
      }
    };
    const sigilVm = () =>
      vm(['/bin/sh', '-c', '"$@"; exec sleep 3600', 'sh', ...runtime.command(['--version'])], version, true);
    const echoVm = () => vm(['/bin/sh', '-c', `echo ${MARKER}; exec sleep 3600`], MARKER, false);

    log(
      `  (this bench ignores those limits: ${RUNS} interleaved boots of each, at most ${TIME_BUDGET_MS / 1000} s)`,
    );
    const samples = { sigil: [] as number[], echo: [] as number[], bare: [] as number[] };
    const deadline = performance.now() + TIME_BUDGET_MS;
    for (let i = 0; i < RUNS && performance.now() < deadline; i++) {
      // Alternate who goes first so a slow stretch of the machine hits all.
      const order = i % 2 === 0 ? ['bare', 'echo', 'sigil'] : ['sigil', 'echo', 'bare'];
      for (const subject of order) {
        if (subject === 'bare') samples.bare.push(await bare.boot());
        else if (subject === 'echo') samples.echo.push(await echoVm());
        else samples.sigil.push(await sigilVm());
      }
      log(
        `  ${i + 1}/${RUNS}: sigil ${samples.sigil.at(-1)?.toFixed(0)} ms, echo ${samples.echo.at(-1)?.toFixed(0)} ms, bare qemu ${samples.bare.at(-1)?.toFixed(0)} ms`,
      );
    }
    if (samples.sigil.length < RUNS) log(`  time budget reached after ${samples.sigil.length} samples`);
    report({
      case: 'vm-create-to-sigil',
      metric: 'median_ms',
      value: median(samples.sigil),
      baselines: { 'bare-qemu-boot': median(samples.bare) },
    });
    report({
      case: 'vm-create-to-echo',
      metric: 'median_ms',
      value: median(samples.echo),
      baselines: { 'bare-qemu-boot': median(samples.bare) },
    });

    // Idle RSS: one VM workload, then one bare qemu, each idling IDLE_MS after its marker.
    let vmRss = 0;
    let bareRss = 0;
    await vm(['/bin/sh', '-c', `echo ${MARKER}; exec sleep 3600`], MARKER, false, async (pid) => {
      await sleep(IDLE_MS);
      vmRss = rssMiB(pid);
    });
    await bare.boot(async (pid) => {
      await sleep(IDLE_MS);
      bareRss = rssMiB(pid);
    });
    log(`  idle RSS: VM workload ${vmRss.toFixed(0)} MiB, bare qemu ${bareRss.toFixed(0)} MiB`);
    report({
      case: 'idle-vm-rss',
      metric: 'qemu_rss_mib',
      value: vmRss,
      baselines: { 'bare-qemu-idle': bareRss },
    });
  } finally {
    const attempt = async (step: () => unknown): Promise<void> => {
      try {
        await step();
      } catch (error) {
        failures.push(error);
      }
    };
    if (supervisor) await attempt(() => supervisor?.close());
    await attempt(async () => {
      for (const name of driver.list()) await driver.open(name).remove();
      await driver.removeBase();
    });
    await attempt(() => events?.close());
    await attempt(() => rmSync(dir, { recursive: true, force: true }));
    await attempt(() => rmSync(source, { recursive: true, force: true }));
    for (const error of failures) log(`bench vm: cleanup failed: ${String(error)}`);
  }
  if (failures.length > 0) throw new Error('bench vm: cleanup failed (see above)');
}
