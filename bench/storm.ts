// A renewal storm: after a CA rotation or an outage, thousands of nodes renew
// at once. One real `sigil server` process (SQLite on disk, synchronous=FULL)
// and one load process (bench/workers/storm-client.ts) on loopback:
//
//   setup   (untimed) an auto-approve join token and one Enrolment.Register
//           per node (fresh P-256 key each), so every node is UP with its own
//           node certificate, as a fleet is before its renewals.
//   storm   every node becomes due at a random instant within the window
//           (uniform; default 10,000 nodes in 60 s) and renews once through
//           CertificateAuthority.Renew over its own mutual-TLS connection,
//           retrying failures as the agent does (renewal-schedule.ts:
//           backoff, or the server's retry-after hint with jitter). The load
//           process bounds how many nodes are in flight and the total time.
//
// Reported (one storm, so no median of runs): latency from a node's first
// attempt to its success (retries included) p50/p99, also from its due time;
// renewals/s; attempts by status; errors (failed attempts that were not an
// admission refusal with a retry-after hint, plus nodes never renewed);
// server CPU per renewal and peak RSS (the server process and its children).
// The p99 line's baseline is the goal (2 s), so its ratio ≤ 1 passes.
//
// Knobs: SIGIL_BENCH_STORM_NODES (10000, at most 10000: one join token),
// SIGIL_BENCH_STORM_WINDOW_MS (60000), SIGIL_BENCH_STORM_IN_FLIGHT (1000),
// SIGIL_BENCH_STORM_BUDGET_MS (window + 120000), SIGIL_BENCH_STORM_CALL_TIMEOUT_MS
// (15000, the agent's), SIGIL_BENCH_STORM_WORKERS (1: `sigil server --workers`),
// SIGIL_BENCH_STORM_CLIENT (lean: storm-renew.ts, the same wire bytes for a
// fraction of the client CPU; sigil: grpc-js with sigil's client checks).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Limits, positiveNumber, type Report } from './measure.ts';
import { LoadClient } from './workers/load-client.ts';
import { startSigilServer } from './workers/server-process.ts';
import { processUsage } from './workers/storm-process-stats.ts';
import type { SetupReport, StormReport, ToStormClient } from './workers/storm-protocol.ts';

export const description =
  'renewal storm: N nodes (default 10,000) each renew once within a minute over their own mTLS ' +
  'connection against one sigil server; latency first attempt → success, errors by code, server CPU and RSS';

const P99_GOAL_MS = 2000;
const SETUP_CONCURRENCY = 64;
/** The storm: 10,000 nodes (also the most one join token enrols). */
const MAX_NODES = 10_000;
const RSS_SAMPLE_MS = 250;

const progress = (line: string) => process.stderr.write(`${line}\n`);

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Failed attempts that are not an orderly admission refusal, plus the nodes that never renewed. */
function errorCount(storm: StormReport): number {
  const failed = Object.entries(storm.attempts)
    .filter(([status]) => status !== 'OK')
    .reduce((sum, [, n]) => sum + n, 0);
  return failed - storm.hinted + storm.unfinished;
}

export async function run(report: Report, _limits: Limits): Promise<void> {
  const nodes = Math.min(MAX_NODES, Math.round(positiveNumber('SIGIL_BENCH_STORM_NODES', MAX_NODES)));
  const windowMs = positiveNumber('SIGIL_BENCH_STORM_WINDOW_MS', 60_000);
  const maxInFlight = Math.round(positiveNumber('SIGIL_BENCH_STORM_IN_FLIGHT', 1000));
  const budgetMs = positiveNumber('SIGIL_BENCH_STORM_BUDGET_MS', windowMs + 120_000);
  const callTimeoutMs = positiveNumber('SIGIL_BENCH_STORM_CALL_TIMEOUT_MS', 15_000);
  const workers = String(Math.round(positiveNumber('SIGIL_BENCH_STORM_WORKERS', 1)));
  const stormClient = process.env.SIGIL_BENCH_STORM_CLIENT === 'sigil' ? 'sigil' : 'lean';
  const caseName = `renew-${nodes}-in-${Math.round(windowMs / 1000)}s`;

  const dataDir = tempDir('sigil-bench-storm-');
  progress(
    `sigil server: SQLite in ${dataDir} (on disk, synchronous=FULL), its own process, workers ${workers}`,
  );
  const server = await startSigilServer(dataDir, [], { SIGIL_SERVER_WORKERS: workers });
  const pid = server.child.pid;
  if (pid === undefined) throw new Error('sigil server has no pid');
  const client = new LoadClient<ToStormClient, SetupReport | StormReport>(
    new URL('./workers/storm-client.ts', import.meta.url),
  );
  try {
    progress(`setup: enrolling ${nodes} nodes (Register, ${SETUP_CONCURRENCY} in flight; untimed)`);
    const setup = (await client.sample({
      type: 'setup',
      address: server.info.listen,
      trustDomain: server.info.trustDomain,
      admin: server.admin(),
      nodes,
      concurrency: SETUP_CONCURRENCY,
    })) as SetupReport;
    progress(`setup: ${setup.nodes} nodes UP in ${(setup.ms / 1000).toFixed(1)} s`);

    progress(
      `storm: ${nodes} renewals due uniformly within ${windowMs} ms, each over its own connection; ` +
        `at most ${maxInFlight} nodes in flight, ${budgetMs} ms budget, ${callTimeoutMs} ms call deadline, ${stormClient} client`,
    );
    const before = processUsage(pid);
    let peakRss = before.rssBytes;
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, processUsage(pid).rssBytes);
    }, RSS_SAMPLE_MS);
    const storm = (await client.sample({
      type: 'storm',
      windowMs,
      budgetMs,
      maxInFlight,
      callTimeoutMs,
      client: stormClient,
    })) as StormReport;
    clearInterval(sampler);
    const after = processUsage(pid);
    peakRss = Math.max(peakRss, after.rssBytes);

    const serverCpuMs = after.cpuMs - before.cpuMs;
    const errors = errorCount(storm);
    const rate = storm.ms > 0 ? (storm.renewed * 1000) / storm.ms : 0;
    progress(
      `storm: ${storm.renewed}/${storm.nodes} renewed, ${storm.unfinished} unfinished, ${errors} errors; ` +
        `attempts ${JSON.stringify(storm.attempts)}, ${storm.hinted} refusals with retry-after; ` +
        `${storm.heldBack} nodes held back by the load process's bound`,
    );
    for (const message of storm.messages) progress(`  ${message}`);
    progress(
      `  latency first attempt → success: p50 ${storm.latency.p50.toFixed(0)} ms, p90 ${storm.latency.p90.toFixed(0)} ms, ` +
        `p99 ${storm.latency.p99.toFixed(0)} ms, max ${storm.latency.max.toFixed(0)} ms; from due time p99 ` +
        `${storm.fromDue.p99.toFixed(0)} ms`,
    );
    progress(
      `  ${rate.toFixed(0)} renewals/s over ${(storm.ms / 1000).toFixed(1)} s; server CPU ${(serverCpuMs / 1000).toFixed(1)} s ` +
        `(${(serverCpuMs / Math.max(1, storm.renewed)).toFixed(2)} ms per renewal), RSS ${(before.rssBytes / 2 ** 20).toFixed(0)} MB ` +
        `before, peak ${(peakRss / 2 ** 20).toFixed(0)} MB; client CPU ${(storm.clientCpuMs / 1000).toFixed(1)} s`,
    );

    const line = (metric: string, value: number, baselines: Record<string, number> = {}) =>
      report({ case: caseName, metric, value, baselines });
    line('p50_ms', storm.latency.p50);
    line('p99_ms', storm.latency.p99, { goal: P99_GOAL_MS });
    line('p99_from_due_ms', storm.fromDue.p99);
    line('renewals_per_s', rate);
    line('errors', errors);
    line('unfinished', storm.unfinished);
    line('refused_with_retry_after', storm.hinted);
    line('server_cpu_ms_per_renewal', serverCpuMs / Math.max(1, storm.renewed));
    line('server_rss_peak_mb', peakRss / 2 ** 20);
    line('client_cpu_ms_per_renewal', storm.clientCpuMs / Math.max(1, storm.renewed));
  } catch (error) {
    progress(`sigil server output:\n${server.output()}`);
    throw error;
  } finally {
    await client.close();
    await server.stop();
  }
}
