// Workload benchmarks, three cases on one supervisor:
//   create-to-running  (below)
//   console-throughput lines/s through the console ring (consoleThroughput)
//   concurrent-100     100 running workloads: RSS and create latency (concurrentWorkloads)
// Destroy-on-revocation needs a control plane and a node daemon: bench/workload-revocation.ts.
//
// Workload start latency: the time from WorkloadSupervisor.create(...) until
// the workload's first output line ("ready") reaches its console, i.e. cgroup
// creation, the overlay mount, the namespaced launch and the process running.
// Baseline, measured in the same run (interleaved, alternating who goes
// first): a bare `unshare -pfmnu --root=<the same image rootfs> --mount-proc
// /bin/busybox echo ready` until "ready" arrives on its stdout.
// Reported: p50 and p99 (nearest rank; with 30 samples p99 is the maximum) in
// milliseconds over at most RUNS samples per subject, bounded by TIME_BUDGET_MS.
// Needs root (namespaces, cgroups, mounts). Every workload is destroyed after
// its sample; the supervisor, cgroups, event log, image store and temporary
// directories are removed in a finally, whether or not the run succeeded.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectCgroups } from '../src/workloads/cgroups/detect.ts';
import type { ConsoleRing } from '../src/workloads/console-ring.ts';
import { EventLog } from '../src/workloads/event-log.ts';
import { importImage, openImageStore } from '../src/workloads/images.ts';
import { WorkloadSupervisor } from '../src/workloads/supervisor.ts';
import { BUSYBOX, buildBusyboxRootfs } from '../test/workloads/rootfs-fixture.ts';
import type { Limits, Report } from './measure.ts';

export const description =
  'workload create-to-running latency (p50, p99 ms) vs a bare unshare of the same rootfs';

const RUNS = 30;
const WARMUP = 2;
/** The whole measurement stops after this, with however many samples it has (at least one of each). */
const TIME_BUDGET_MS = 120_000;
/** One start that takes longer than this is a failure, not a sample. */
const START_TIMEOUT_MS = 10_000;
const IMAGE = 'bench/busybox:1';
const READY = 'ready';

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

/** Nearest-rank percentile. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no "${READY}" within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves when the console holds a line "ready" (already, or when it arrives). */
function consoleReady(ring: ConsoleRing): Promise<void> {
  return new Promise((resolve) => {
    // history() and subscribe() in the same tick: no line falls between them.
    if (ring.history().some((line) => line.bytes.toString('utf8') === READY)) return resolve();
    const stop = ring.subscribe((line) => {
      if (line.bytes.toString('utf8') === READY) {
        stop();
        resolve();
      }
    });
  });
}

/** The baseline: a bare unshare of the rootfs, until its stdout holds "ready" (and it exited cleanly). */
function bareUnshare(rootfs: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'unshare',
      ['-pfmnu', `--root=${rootfs}`, '--mount-proc', '/bin/busybox', 'echo', READY],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    let done = false;
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
      if (!done && out.includes(`${READY}\n`)) {
        done = true;
        resolve();
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
    });
    child.on('error', (error) => {
      done = true;
      reject(error);
    });
    child.on('close', (code, signal) => {
      if (!done) reject(new Error(`unshare exited ${code ?? signal} without "${READY}": ${err.trim()}`));
    });
  });
}

/** Lines a workload prints for the console case: enough to overwrite the ring many times. */
const CONSOLE_LINES = 200_000;
const CONSOLE_RUNS = 5;

/** Lines until the last one ("200000") arrives, from the process's output, counted by `onLine`. */
function countLinesUntil(
  last: string,
  subscribe: (onLine: (line: string) => void) => () => void,
): Promise<void> {
  return new Promise((resolve) => {
    const stop = subscribe((line) => {
      if (line === last) {
        stop();
        resolve();
      }
    });
  });
}

/**
 * Console throughput: a workload prints CONSOLE_LINES numbered lines; lines
 * per second from create until the last reaches a ring subscriber. Baseline:
 * the same busybox seq under a bare unshare, its stdout split into lines by
 * Node (what any supervisor must at least do).
 */
async function consoleThroughput(sup: WorkloadSupervisor, rootfs: string, report: Report): Promise<void> {
  const last = String(CONSOLE_LINES);
  const command = [BUSYBOX, 'seq', '1', last];
  const throughWorkload = async (n: number): Promise<number> => {
    const key = `/bench//console${n}`;
    const started = performance.now();
    let done: Promise<void> = Promise.resolve();
    try {
      await sup.create({ key, name: 'bench', image: IMAGE, command });
      const ring = sup.console(key);
      done = countLinesUntil(last, (onLine) => ring.subscribe((line) => onLine(line.bytes.toString('utf8'))));
      if (ring.history().some((line) => line.bytes.toString('utf8') === last)) done = Promise.resolve();
      await withTimeout(done, `console workload ${key}`);
      return (CONSOLE_LINES * 1000) / (performance.now() - started);
    } finally {
      if (sup.list().some((info) => info.key === key)) await sup.destroy(key);
    }
  };
  const throughPipe = async (): Promise<number> => {
    const started = performance.now();
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        const child = spawn('unshare', ['-pfmnu', `--root=${rootfs}`, '--mount-proc', ...command], {
          stdio: ['ignore', 'pipe', 'ignore'],
        });
        let partial = '';
        child.stdout.setEncoding('utf8');
        child.stdout.on('data', (text: string) => {
          const lines = (partial + text).split('\n');
          partial = lines.pop() ?? '';
          if (lines.at(-1) === last) resolve();
        });
        child.on('error', reject);
        child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`seq exited ${code}`))));
      }),
      'bare unshare seq',
    );
    return (CONSOLE_LINES * 1000) / (performance.now() - started);
  };
  const rates = { workload: [] as number[], baseline: [] as number[] };
  for (let i = 0; i < CONSOLE_RUNS; i++) {
    rates.workload.push(await throughWorkload(i));
    rates.baseline.push(await throughPipe());
  }
  log(`  console: workload p50 ${percentile(rates.workload, 50).toFixed(0)} lines/s`);
  report({
    case: 'console-throughput',
    metric: 'lines_per_s',
    value: percentile(rates.workload, 50),
    baselines: { 'bare-unshare-pipe': percentile(rates.baseline, 50) },
  });
}

const CONCURRENT = 100;

/**
 * 100 workloads at once on one supervisor: the process's RSS growth and the
 * create-to-running latency of each create while the others run, against
 * the create latency on an idle supervisor (the first one).
 */
async function concurrentWorkloads(sup: WorkloadSupervisor, report: Report): Promise<void> {
  const keys: string[] = [];
  globalThis.gc?.();
  const rssBefore = process.memoryUsage().rss;
  const latencies: number[] = [];
  try {
    for (let i = 0; i < CONCURRENT; i++) {
      const key = `/bench//many${i}`;
      const started = performance.now();
      await sup.create({
        key,
        name: `many${i}`,
        image: IMAGE,
        command: [BUSYBOX, 'sh', '-c', `echo ${READY}; exec sleep 3600`],
      });
      keys.push(key);
      await withTimeout(consoleReady(sup.console(key)), `workload ${key}`);
      latencies.push(performance.now() - started);
      if ((i + 1) % 25 === 0) log(`  ${i + 1}/${CONCURRENT} workloads running`);
    }
    const running = sup
      .list()
      .filter((info) => info.key.startsWith('/bench//many') && info.state === 'running');
    if (running.length !== CONCURRENT)
      throw new Error(`${running.length} of ${CONCURRENT} workloads running`);
    globalThis.gc?.();
    const rssAfter = process.memoryUsage().rss;
    report({
      case: 'concurrent-100',
      metric: 'supervisor_rss_mib',
      value: rssAfter / 2 ** 20,
      baselines: { 'before-the-100': rssBefore / 2 ** 20 },
    });
    report({
      case: 'concurrent-100',
      metric: 'create_p50_ms',
      value: percentile(latencies.slice(-CONCURRENT / 2), 50),
      baselines: { 'first-10-creates': percentile(latencies.slice(0, 10), 50) },
    });
  } finally {
    for (const key of keys) await sup.destroy(key);
  }
}

export async function run(report: Report, _limits: Limits): Promise<void> {
  if (process.getuid?.() !== 0) {
    log('bench workloads: needs root (namespaces, cgroups, overlay mounts); not run');
    throw new Error('bench workloads needs root');
  }
  const driver = detectCgroups({
    base: `sigil-bench-workloads-${process.pid}-${randomBytes(3).toString('hex')}`,
  });
  const dir = mkdtempSync(join(tmpdir(), 'sigil-bench-workloads-'));
  const source = mkdtempSync(join(tmpdir(), 'sigil-bench-image-'));
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

    let created = 0;
    const workload = async (): Promise<number> => {
      const key = `/bench//w${++created}`;
      const started = performance.now();
      try {
        await withTimeout(
          sup
            .create({ key, name: 'bench', image: IMAGE, command: [BUSYBOX, 'echo', READY] })
            .then(() => consoleReady(sup.console(key))),
          `workload ${key}`,
        );
        return performance.now() - started;
      } finally {
        // Not timed; a create that failed left nothing to destroy.
        if (sup.list().some((info) => info.key === key)) await sup.destroy(key);
      }
    };
    const baseline = async (): Promise<number> => {
      const started = performance.now();
      await withTimeout(bareUnshare(image.rootfs), 'bare unshare');
      return performance.now() - started;
    };

    log(
      `  (this bench ignores those limits: ${RUNS} interleaved starts of each, at most ${TIME_BUDGET_MS / 1000} s)`,
    );
    for (let i = 0; i < WARMUP; i++) {
      await workload();
      await baseline();
    }
    const samples = { workload: [] as number[], baseline: [] as number[] };
    const deadline = performance.now() + TIME_BUDGET_MS;
    for (let i = 0; i < RUNS && performance.now() < deadline; i++) {
      // Alternate who goes first so a slow stretch of the machine hits both.
      if (i % 2 === 0) {
        samples.workload.push(await workload());
        samples.baseline.push(await baseline());
      } else {
        samples.baseline.push(await baseline());
        samples.workload.push(await workload());
      }
      if ((i + 1) % 10 === 0)
        log(
          `  ${i + 1}/${RUNS}: workload p50 ${percentile(samples.workload, 50).toFixed(1)} ms, ` +
            `unshare p50 ${percentile(samples.baseline, 50).toFixed(1)} ms`,
        );
    }
    if (samples.workload.length < RUNS) log(`  time budget reached after ${samples.workload.length} samples`);
    for (const p of [50, 99])
      report({
        case: 'create-to-running',
        metric: `p${p}_ms`,
        value: percentile(samples.workload, p),
        baselines: { 'bare-unshare': percentile(samples.baseline, p) },
      });

    await consoleThroughput(sup, image.rootfs, report);
    await concurrentWorkloads(sup, report);
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
    for (const error of failures) log(`bench workloads: cleanup failed: ${String(error)}`);
  }
  // run.ts sets the exit code from main(): a failed cleanup after a good run surfaces as a throw.
  if (failures.length > 0) throw new Error('bench workloads: cleanup failed (see above)');
}
