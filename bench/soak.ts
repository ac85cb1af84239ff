// A Sign soak: the real `sigil server` (SQLite on disk, synchronous=FULL,
// its default worker count) under steady Sign load with proof of possession
// from a separate client process (bench/workers/server-client.ts) for
// SIGIL_BENCH_SOAK_MS (default 10 minutes). The load is bounded twice: at
// most SIGIL_BENCH_SOAK_IN_FLIGHT calls in flight (default 16) and at most
// SIGIL_BENCH_SOAK_RATE calls a second (default 400), in 5-second slices.
// After every slice the bench reads the server's resident memory, summed
// over its process tree (worker processes included; workers/process-cpu.ts),
// and reports it at start (after start-up, before any load), after 1 minute
// of load and at the end, with the rate reached and the failed calls.
// Target: RSS flat from 1 minute to the end, 0 errors.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Limits, positiveNumber, type Report } from './measure.ts';
import { LoadClient } from './workers/load-client.ts';
import { treeRss } from './workers/process-cpu.ts';
import { startSigilServer } from './workers/server-process.ts';
import type { Sample, ToClient } from './workers/server-protocol.ts';

export const description =
  'Sign soak: server RSS (all its processes) at start, 1 min and end of SIGIL_BENCH_SOAK_MS of bounded load';

const SLICE_MS = 5000;
const ONE_MINUTE_MS = 60_000;
const MB = 1024 * 1024;

const progress = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const megabytes = (bytes: number): number => bytes / MB;

export async function run(report: Report, _limits: Limits): Promise<void> {
  const durationMs = positiveNumber('SIGIL_BENCH_SOAK_MS', 600_000);
  const ratePerSecond = positiveNumber('SIGIL_BENCH_SOAK_RATE', 400);
  const inFlight = Math.round(positiveNumber('SIGIL_BENCH_SOAK_IN_FLIGHT', 16));
  const dataDir = mkdtempSync(join(tmpdir(), 'sigil-bench-soak-'));
  const server = await startSigilServer(dataDir).catch((error: unknown) => {
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  });
  const pid = server.child.pid as number;
  const client = new LoadClient<ToClient, Sample>(new URL('./workers/server-client.ts', import.meta.url));
  try {
    await client.request({
      type: 'setup',
      sigil: {
        main: { address: server.info.listen, trustDomain: server.info.trustDomain, admin: server.admin() },
      },
      cfssl: {},
      subjects: { sign: { kind: 'sigil', server: 'main', path: 'possession', connections: 1 } },
      concurrency: inFlight,
    });
    const start = treeRss(pid);
    progress(
      `soak: sigil server (SQLite in ${dataDir}), ${start.processes} process(es), RSS ${megabytes(start.bytes).toFixed(1)} MB ` +
        `at start; Sign with proof of possession for ${(durationMs / 1000).toFixed(0)} s, ≤ ${inFlight} in flight, ` +
        `≤ ${ratePerSecond}/s`,
    );
    let atOneMinute: number | null = null;
    let peak = start.bytes;
    let ops = 0;
    let failures = 0;
    const errors = new Set<string>();
    const began = performance.now();
    for (;;) {
      const elapsed = performance.now() - began;
      if (elapsed >= durationMs) break;
      const sliceMs = Math.min(SLICE_MS, durationMs - elapsed);
      const sliceStarted = performance.now();
      const sample = await client.sample({
        type: 'run',
        subject: 'sign',
        maxMs: sliceMs,
        maxOps: Math.max(1, Math.round((ratePerSecond * sliceMs) / 1000)),
      });
      ops += sample.ops;
      failures += sample.failures;
      for (const error of sample.errors) if (errors.size < 5) errors.add(error);
      const rest = sliceMs - (performance.now() - sliceStarted);
      if (rest > 0) await sleep(rest);
      const rss = treeRss(pid);
      peak = Math.max(peak, rss.bytes);
      const now = performance.now() - began;
      if (atOneMinute === null && now >= ONE_MINUTE_MS) atOneMinute = rss.bytes;
      progress(
        `  ${(now / 1000).toFixed(0)} s: ${ops} signed, ${failures} failed, ` +
          `RSS ${megabytes(rss.bytes).toFixed(1)} MB over ${rss.processes} process(es)`,
      );
    }
    const elapsedMs = performance.now() - began;
    const end = treeRss(pid).bytes;
    const rate = (ops * 1000) / elapsedMs;
    progress(
      `soak: ${ops} certificates in ${(elapsedMs / 1000).toFixed(0)} s (${rate.toFixed(0)}/s), ${failures} failed` +
        (errors.size > 0 ? ` (${[...errors].join('; ')})` : '') +
        `; RSS start ${megabytes(start.bytes).toFixed(1)} MB, ` +
        (atOneMinute === null
          ? 'no 1-minute reading (the soak was shorter)'
          : `1 min ${megabytes(atOneMinute).toFixed(1)} MB`) +
        `, end ${megabytes(end).toFixed(1)} MB, peak ${megabytes(peak).toFixed(1)} MB`,
    );
    const rssBaselines: Record<string, number> = { 'at-start': megabytes(start.bytes) };
    if (atOneMinute !== null) rssBaselines['at-1-min'] = megabytes(atOneMinute);
    report({ case: 'sign', metric: 'server_rss_mb_at_end', value: megabytes(end), baselines: rssBaselines });
    report({ case: 'sign', metric: 'signs_per_s', value: rate, baselines: { 'rate-bound': ratePerSecond } });
    report({ case: 'sign', metric: 'failed_calls', value: failures, baselines: {} });
    await client.request({ type: 'teardown' });
  } catch (error) {
    progress(`sigil server output:\n${server.output()}`);
    throw error;
  } finally {
    await client.close();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
