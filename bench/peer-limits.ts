// Issue #10's abuse limits, measured. The control plane runs in a process of
// its own (bench/workers/control-plane-memory.ts, --expose-gc), so its memory
// is its own; the load comes from this process, as the admin, on one channel.
//
//   streams-heap  one client opens SIGIL_BENCH_STREAMS (default 20,000)
//                 WatchRevocations streams on one connection; the server's
//                 heap after GC grows by this much (MiB). Before issue #10 all
//                 20,000 ran. Baseline "allowed-streams": the growth from
//                 just the streams the per-connection limit lets run, so a
//                 ratio near 1 means the refused ones pin nothing.
//   streams-rss   the server's RSS growth (MiB) across the same run.
//                 Baseline "unary-calls": a fresh server's RSS growth across
//                 as many unary calls (GetTrustBundle, 128 in flight, one
//                 connection): the allocator's high-water mark of handling
//                 that many calls at all.
//   connection-timers
//                 TimersLists Node holds per connection after
//                 SIGIL_BENCH_CONNECTIONS (default 2,000) connections to an
//                 MtlsServer were opened and closed
//                 (bench/workers/connection-timers.ts, --expose-internals).
//                 Baseline "zero". Before issue #10: 1 (grpc-js's jittered,
//                 unref'd max-connection-age timer left an empty list behind
//                 until the age would have expired; see
//                 test/transport/connection-timers.test.ts).
// Targets are information only, never asserted. SIGIL_BENCH_CASES=streams
// runs the two streams cases only, SIGIL_BENCH_CASES=connection-timers the last.
import { execFile, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { CertificateAuthorityClient } from '../src/gen/sigil/v1/sigil.ts';
import { channelCredentials } from '../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../src/transport/static-source.ts';
import type { Limits, Report } from './measure.ts';

export const description =
  'per-peer limits: what 20,000 WatchRevocations streams on one connection pin in the control plane ' +
  '(heap after GC, RSS), and the timer lists closed connections leave behind';

const STREAMS = Number(process.env.SIGIL_BENCH_STREAMS ?? 20_000);
const CONNECTIONS = Number(process.env.SIGIL_BENCH_CONNECTIONS ?? 2_000);
const UNARY_IN_FLIGHT = 128;
const MiB = 2 ** 20;
const worker = (name: string) => fileURLToPath(new URL(`./workers/${name}`, import.meta.url));

interface Memory {
  readonly rss: number;
  readonly heapUsed: number;
}

/** The control plane in a child process, with its admin as a client on one channel. */
async function startControlPlane() {
  const dataDir = mkdtempSync(join(tmpdir(), 'sigil-bench-limits-'));
  const child = fork(worker('control-plane-memory.ts'), [dataDir], {
    execArgv: ['--expose-gc'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const replies: { type: string; [key: string]: unknown }[] = [];
  const waiters: (() => void)[] = [];
  child.on('message', (message: { type: string }) => {
    replies.push(message);
    for (const wake of waiters.splice(0)) wake();
  });
  const next = async (type: string) => {
    for (;;) {
      const index = replies.findIndex((reply) => reply.type === type);
      if (index >= 0) return replies.splice(index, 1)[0];
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  const ready = (await next('ready')) as unknown as { address: string };
  const credentials = channelCredentials({
    material: new StaticMaterialSource({
      certificateChain: readFileSync(join(dataDir, 'admin.pem'), 'utf8'),
      privateKey: readFileSync(join(dataDir, 'admin.key'), 'utf8'),
      trustBundle: readFileSync(join(dataDir, 'ca.pem'), 'utf8'),
    }),
  });
  const client = new CertificateAuthorityClient(ready.address, credentials, {
    'grpc.use_local_subchannel_pool': 1,
  });
  return {
    client,
    async memory(): Promise<Memory> {
      child.send({ type: 'memory' });
      const reply = (await next('memory')) as unknown as Memory;
      return { rss: reply.rss, heapUsed: reply.heapUsed };
    },
    async stop(): Promise<void> {
      client.close();
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send({ type: 'stop' });
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function unary(client: CertificateAuthorityClient): Promise<boolean> {
  return new Promise((resolve) => client.getTrustBundle({}, (error) => resolve(error === null)));
}

/** Opens `count` WatchRevocations streams; resolves with the running ones once each has data or failed. */
async function openStreams(client: CertificateAuthorityClient, count: number) {
  const refusals = new Map<string, number>();
  const outcomes = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<grpc.ClientReadableStream<unknown> | null>((resolve) => {
          const stream = client.watchRevocations({});
          stream.once('data', () => resolve(stream));
          stream.on('error', (error: grpc.ServiceError) => {
            if (error.code === grpc.status.CANCELLED) return;
            const key = `${grpc.status[error.code]}: ${error.details.split(';')[0]}`;
            refusals.set(key, (refusals.get(key) ?? 0) + 1);
            resolve(null);
          });
        }),
    ),
  );
  return { running: outcomes.filter((s) => s !== null), refusals };
}

async function streamsCases(report: Report): Promise<void> {
  const plane = await startControlPlane();
  await unary(plane.client); // connected
  const start = await plane.memory();
  // More than any per-connection limit: as many as the server lets run.
  const { running } = await openStreams(plane.client, 1024);
  const atCap = await plane.memory();
  const attempt = await openStreams(plane.client, STREAMS);
  const all = [...running, ...attempt.running];
  const end = await plane.memory();
  process.stderr.write(
    `  ${running.length} streams run at the limit; of ${STREAMS} more, ${attempt.running.length} ran and ` +
      `${STREAMS - attempt.running.length} were refused (${[...attempt.refusals].map(([k, n]) => `${n}× ${k}`).join(', ')})\n` +
      `  server heap after GC ${(start.heapUsed / MiB).toFixed(1)} → ${(atCap.heapUsed / MiB).toFixed(1)} (at the limit) → ` +
      `${(end.heapUsed / MiB).toFixed(1)} MiB; RSS ${(start.rss / MiB).toFixed(1)} → ${(end.rss / MiB).toFixed(1)} MiB\n`,
  );
  for (const stream of all) stream.cancel();
  await plane.stop();

  const fresh = await startControlPlane();
  await unary(fresh.client);
  const before = await fresh.memory();
  let next = 0;
  await Promise.all(
    Array.from({ length: UNARY_IN_FLIGHT }, async () => {
      while (next < STREAMS) {
        next++;
        await unary(fresh.client);
      }
    }),
  );
  const after = await fresh.memory();
  await fresh.stop();
  process.stderr.write(
    `  ${STREAMS} unary calls (${UNARY_IN_FLIGHT} in flight): RSS ${(before.rss / MiB).toFixed(1)} → ${(after.rss / MiB).toFixed(1)} MiB\n`,
  );
  report({
    case: 'streams-heap',
    metric: 'heap_mib_after_gc',
    value: (end.heapUsed - start.heapUsed) / MiB,
    baselines: { 'allowed-streams': (atCap.heapUsed - start.heapUsed) / MiB },
  });
  report({
    case: 'streams-rss',
    metric: 'rss_mib',
    value: (end.rss - start.rss) / MiB,
    baselines: { 'unary-calls': (after.rss - before.rss) / MiB },
  });
}

async function connectionTimersCase(report: Report): Promise<void> {
  const output = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      ['--expose-internals', '--expose-gc', worker('connection-timers.ts'), String(CONNECTIONS)],
      { timeout: 600_000, maxBuffer: 1 << 20 },
      (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  const measured = JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as {
    connectionAgeMs: number;
    before: { timerLists: number; ofConnectionAge: number; heapUsed: number; activeResources: object };
    after: { timerLists: number; ofConnectionAge: number; heapUsed: number; activeResources: object };
  };
  process.stderr.write(
    `  ${CONNECTIONS} connections opened and closed: TimersLists ${measured.before.timerLists} → ${measured.after.timerLists} ` +
      `(of the connection age ${measured.connectionAgeMs} ms ±10%: ${measured.before.ofConnectionAge} → ${measured.after.ofConnectionAge}); ` +
      `heap after GC ${(measured.before.heapUsed / MiB).toFixed(2)} → ${(measured.after.heapUsed / MiB).toFixed(2)} MiB; ` +
      `active resources ${JSON.stringify(measured.before.activeResources)} → ${JSON.stringify(measured.after.activeResources)}\n`,
  );
  report({
    case: 'connection-timers',
    metric: 'timer_lists_per_closed_connection',
    value: (measured.after.timerLists - measured.before.timerLists) / CONNECTIONS,
    baselines: { zero: 0 },
  });
}

export async function run(report: Report, _limits: Limits): Promise<void> {
  const cases = (process.env.SIGIL_BENCH_CASES ?? 'streams,connection-timers').split(',');
  if (cases.includes('streams')) await streamsCases(report);
  if (cases.includes('connection-timers')) await connectionTimersCase(report);
}
