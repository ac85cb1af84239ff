// Server CPU per certificate on the Sign hot path (issue 14): the real
// `sigil server` (SQLite on disk, synchronous=FULL) in its own process, load
// from another process (bench/workers/server-client.ts, one HTTP/2 connection,
// 32 calls in flight), and the server's CPU time (utime + stime of every
// thread, /proc/<pid>/stat) divided by the certificates it issued in the
// round. CPU per certificate hardly depends on how busy the box is, so it is
// the figure to compare on a shared 2-core machine; the rate is shown too.
//
// A/B in the same run: SIGIL_HOTPATH_B_ENV="NAME=VALUE,…" starts a second
// server with that environment, and rounds alternate between the two (who goes
// first rotates); each round prints both and their ratio, and the medians of
// the per-round ratios are reported. Without it only server A runs.
//
//   SIGIL_HOTPATH_SUBJECT  sigil-spki (proof of possession, default), sigil-csr, or enrol
//                          (Enrolment.Register batches of ENROL_BATCH: node and token
//                          writes on the main connection between certificate inserts)
//   SIGIL_HOTPATH_MS       length of one measured round per server (default 2000)
//   SIGIL_HOTPATH_A_ENV    environment of server A (same syntax; default none)
//   SIGIL_HOTPATH_A_ROOT   a copy of the repository whose `sigil server` is server A
//                          (before/after a code change in one run; B is this tree)
//   SIGIL_HOTPATH_SERVER_ARGS  extra `sigil server` arguments for both, e.g. "--workers 1"
//   SIGIL_BENCH_RUNS       rounds (at least 5); SIGIL_BENCH_PROFILE=DIR: CPU profiles
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type Limits, median, type Report } from './measure.ts';
import { LoadClient } from './workers/load-client.ts';
import { treeCpuMicros } from './workers/process-cpu.ts';
import { type SigilServerProcess, startSigilServer } from './workers/server-process.ts';
import type { Sample, SigilTarget, SubjectSpec, ToClient } from './workers/server-protocol.ts';

export const description =
  'server CPU per certificate on the Sign hot path (µs, /proc utime+stime), A/B between two server environments';

const CONCURRENCY = 32;
const WARMUP_MS = 3000;
const ENROL_BATCH = 300;

const progress = (line: string) => process.stderr.write(`${line}\n`);

function parseEnv(name: string): Record<string, string> | null {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return null;
  const env: Record<string, string> = {};
  for (const pair of text.split(',')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`${name}: expected NAME=VALUE pairs separated by commas, got "${pair}"`);
    env[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return env;
}

interface Subject {
  readonly label: string;
  readonly server: SigilServerProcess;
  readonly dataDir: string;
}

interface Round {
  readonly rate: number;
  readonly cpuUsPerCert: number;
  /** The server's main thread alone (the event loop): what offloading to threads takes off it. */
  readonly mainThreadUsPerCert: number;
}

/** utime + stime of one thread (the main thread's id is the process id), µs. */
function threadCpuMicros(pid: number, tid: number): number {
  const text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[14 - 3]) + Number(fields[15 - 3])) * 1_000_000) / 100;
}

/** `sigil server` of another copy of the repository: its own server-process.ts runs its own bin/sigil.js. */
async function starterIn(root: string): Promise<typeof startSigilServer> {
  const module = (await import(
    pathToFileURL(join(resolve(root), 'bench/workers/server-process.ts')).href
  )) as { startSigilServer: typeof startSigilServer };
  return module.startSigilServer;
}

async function startSubject(
  label: string,
  env: Record<string, string>,
  start: typeof startSigilServer = startSigilServer,
): Promise<Subject> {
  const dataDir = mkdtempSync(join(tmpdir(), `sigil-bench-hotpath-${label}-`));
  process.once('exit', () => rmSync(dataDir, { recursive: true, force: true }));
  const args = (process.env.SIGIL_HOTPATH_SERVER_ARGS ?? '').split(' ').filter((arg) => arg !== '');
  const server = await start(dataDir, args, env);
  return { label, server, dataDir };
}

async function measure(
  client: LoadClient<ToClient, Sample>,
  subject: Subject,
  ms: number,
  kind: string,
): Promise<Round> {
  const pid = subject.server.child.pid;
  if (pid === undefined) throw new Error('the server has no pid');
  const before = treeCpuMicros(pid);
  const mainBefore = threadCpuMicros(pid, pid);
  const sample = await client.sample(
    kind === 'enrol'
      ? { type: 'enrol', server: subject.label, count: ENROL_BATCH, concurrency: CONCURRENCY }
      : { type: 'run', subject: subject.label, maxMs: ms, maxOps: 1_000_000 },
  );
  const cpuUs = treeCpuMicros(pid) - before;
  const mainUs = threadCpuMicros(pid, pid) - mainBefore;
  if (sample.failures > 0) {
    progress(`  ${subject.label}: ${sample.failures} failed calls (${sample.errors.join('; ')})`);
  }
  if (sample.ops === 0) throw new Error(`${subject.label}: no certificate issued in a round`);
  return {
    rate: (sample.ops * 1000) / sample.ms,
    cpuUsPerCert: cpuUs / sample.ops,
    mainThreadUsPerCert: mainUs / sample.ops,
  };
}

async function stop(subject: Subject): Promise<void> {
  await subject.server.stop();
  rmSync(subject.dataDir, { recursive: true, force: true });
}

export async function run(report: Report, limits: Limits): Promise<void> {
  const kind = process.env.SIGIL_HOTPATH_SUBJECT ?? 'sigil-spki';
  if (kind !== 'sigil-spki' && kind !== 'sigil-csr' && kind !== 'enrol') {
    throw new Error(`SIGIL_HOTPATH_SUBJECT must be sigil-spki, sigil-csr or enrol, got "${kind}"`);
  }
  const roundMs = Number(process.env.SIGIL_HOTPATH_MS ?? 2000);
  const envA = parseEnv('SIGIL_HOTPATH_A_ENV') ?? {};
  const rootA = process.env.SIGIL_HOTPATH_A_ROOT;
  const envB = parseEnv('SIGIL_HOTPATH_B_ENV') ?? (rootA ? {} : null);
  const subjects: Subject[] = [];
  const client = new LoadClient<ToClient, Sample>(new URL('./workers/server-client.ts', import.meta.url));
  try {
    subjects.push(await startSubject('A', envA, rootA ? await starterIn(rootA) : undefined));
    if (envB) subjects.push(await startSubject('B', envB));
    const targets: Record<string, SigilTarget> = {};
    const specs: Record<string, SubjectSpec> = {};
    for (const { label, server } of subjects) {
      targets[label] = {
        address: server.info.listen,
        trustDomain: server.info.trustDomain,
        admin: server.admin(),
      };
      specs[label] = {
        kind: 'sigil',
        server: label,
        path: kind === 'sigil-csr' ? 'csr' : 'possession',
        connections: 1,
      };
    }
    await client.request({
      type: 'setup',
      sigil: targets,
      cfssl: {},
      subjects: specs,
      concurrency: CONCURRENCY,
    });
    progress(
      `hotpath: ${kind}, ${CONCURRENCY} in flight, ${limits.runs} rounds of ${roundMs} ms per server; ` +
        `${rootA ? `A is the sigil in ${rootA}; ` : ''}A env ${JSON.stringify(envA)}${envB ? `, B env ${JSON.stringify(envB)}` : ''}`,
    );
    for (const subject of subjects) await measure(client, subject, WARMUP_MS, kind);
    const rounds = new Map<string, Round[]>(subjects.map((s) => [s.label, []]));
    const cpuRatios: number[] = [];
    const mainRatios: number[] = [];
    const rateRatios: number[] = [];
    for (let round = 0; round < limits.runs; round++) {
      const order = round % 2 === 0 ? subjects : [...subjects].reverse();
      const results = new Map<string, Round>();
      for (const subject of order) results.set(subject.label, await measure(client, subject, roundMs, kind));
      const parts = subjects.map((s) => {
        const r = results.get(s.label)!;
        rounds.get(s.label)!.push(r);
        return (
          `${s.label} ${Math.round(r.rate)}/s ${Math.round(r.cpuUsPerCert)} µs/cert ` +
          `(main thread ${Math.round(r.mainThreadUsPerCert)})`
        );
      });
      if (envB) {
        const a = results.get('A')!;
        const b = results.get('B')!;
        cpuRatios.push(b.cpuUsPerCert / a.cpuUsPerCert);
        mainRatios.push(b.mainThreadUsPerCert / a.mainThreadUsPerCert);
        rateRatios.push(b.rate / a.rate);
        parts.push(
          `B/A cpu ${(b.cpuUsPerCert / a.cpuUsPerCert).toFixed(3)} rate ${(b.rate / a.rate).toFixed(3)}`,
        );
      }
      progress(`  round ${round + 1}/${limits.runs}: ${parts.join(', ')}`);
    }
    for (const subject of subjects) {
      const r = rounds.get(subject.label)!;
      const cpu = median(r.map((x) => x.cpuUsPerCert));
      const rate = median(r.map((x) => x.rate));
      const main = median(r.map((x) => x.mainThreadUsPerCert));
      progress(
        `  ${subject.label}: median ${Math.round(cpu)} µs/cert (main thread ${Math.round(main)}), ${Math.round(rate)} certs/s`,
      );
      report({
        case: `${kind}-${subject.label}`,
        metric: 'server_cpu_us_per_cert',
        value: cpu,
        baselines: { target: 350 },
      });
      report({
        case: `${kind}-${subject.label}`,
        metric: 'main_thread_cpu_us_per_cert',
        value: main,
        baselines: {},
      });
      report({ case: `${kind}-${subject.label}`, metric: 'certs_per_s', value: rate, baselines: {} });
    }
    if (envB) {
      progress(
        `  B/A per-round median: cpu ${median(cpuRatios).toFixed(3)}, ` +
          `main thread ${median(mainRatios).toFixed(3)}, rate ${median(rateRatios).toFixed(3)}`,
      );
      report({ case: `${kind}-B/A`, metric: 'cpu_ratio', value: median(cpuRatios), baselines: {} });
      report({ case: `${kind}-B/A`, metric: 'main_thread_ratio', value: median(mainRatios), baselines: {} });
      report({ case: `${kind}-B/A`, metric: 'rate_ratio', value: median(rateRatios), baselines: {} });
    }
  } catch (error) {
    for (const subject of subjects) progress(`server ${subject.label} output:\n${subject.server.output()}`);
    throw error;
  } finally {
    await client.close();
    for (const subject of subjects) await stop(subject);
  }
}
