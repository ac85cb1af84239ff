// Run by connection-timers.test.ts in a child process started with
// --expose-internals: opens and closes CONNECTIONS connections to an
// MtlsServer (one call each) and prints how many TimersLists Node's timer
// module holds before and after, and the heap after GC.
import { createRequire } from 'node:module';
import { callUnary, ManualMaterialSource, mtlsClient, startEchoServer, TestCa } from './fixtures.ts';

const CONNECTIONS = Number(process.argv[2] ?? 300);
const timers = createRequire(import.meta.url)('internal/timers') as { timerListMap: Record<string, unknown> };
const timerLists = (): number => Object.keys(timers.timerListMap).length;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

const ca = new TestCa('connection-timers child CA', { intermediate: true });
const running = await startEchoServer({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
const pair = ca.issueClient({ name: 'churn' });

async function churn(count: number): Promise<void> {
  for (let done = 0; done < count; done += 10) {
    const batch = Array.from({ length: Math.min(10, count - done) }, () =>
      mtlsClient(running.port, ca.rootPem, pair, { 'grpc.use_local_subchannel_pool': 1 }),
    );
    await Promise.all(batch.map((client) => callUnary(client)));
    for (const client of batch) client.close();
  }
  const deadline = Date.now() + 10_000;
  while (running.server.connections.size > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const age = running.server.maxConnectionAgeMs;
const measure = () => {
  gc();
  // Lists whose duration is the connection age with grpc-js's ±10% jitter.
  const ofAge = Object.keys(timers.timerListMap)
    .map(Number)
    .filter((ms) => ms >= age * 0.9 - 1 && ms <= age * 1.1 + 1).length;
  return { timerLists: timerLists(), ofConnectionAge: ofAge, heapUsed: process.memoryUsage().heapUsed };
};
await churn(20); // warm-up: the timer lists every process has
const before = measure();
await churn(CONNECTIONS);
const after = measure();
process.stdout.write(
  `${JSON.stringify({ connections: CONNECTIONS, connectionAgeMs: age, before, after, open: running.server.connections.size })}\n`,
);
await running.close();
