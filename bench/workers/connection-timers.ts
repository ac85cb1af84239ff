// For bench/peer-limits.ts, run with --expose-internals --expose-gc: opens and
// closes CONNECTIONS connections to an MtlsServer (one call each, ten at a
// time) and prints, as one JSON line, the TimersLists Node's timer module
// holds, those whose duration is the connection age (grpc-js's
// max-connection-age timer, ±10% jitter), the heap after GC and
// process.getActiveResourcesInfo() counts, before and after.
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { echoImplementation, echoService } from './echo.ts';

const CONNECTIONS = Number(process.argv[2] ?? 2000);
const timers = createRequire(import.meta.url)('internal/timers') as { timerListMap: Record<string, unknown> };
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate: true });
const server = new MtlsServer({ material: ca.serverMaterial() });
server.addService(echoService, echoImplementation);
const port = await server.listen();
const credentials = ca.channelCredentials({ name: 'churn' });
const bytes = (value: Buffer): Buffer => value;

function call(client: grpc.Client): Promise<void> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(echoService.echo.path, bytes, bytes, Buffer.alloc(16), (error) =>
      error ? reject(error) : resolve(),
    ),
  );
}

async function churn(count: number): Promise<void> {
  for (let done = 0; done < count; done += 10) {
    const batch = Array.from(
      { length: Math.min(10, count - done) },
      () => new grpc.Client(`127.0.0.1:${port}`, credentials, { 'grpc.use_local_subchannel_pool': 1 }),
    );
    await Promise.all(batch.map(call));
    for (const client of batch) client.close();
  }
  const deadline = Date.now() + 30_000;
  while (server.connections.size > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function measure() {
  gc();
  const age = server.maxConnectionAgeMs;
  const durations = Object.keys(timers.timerListMap).map(Number);
  const resources: Record<string, number> = {};
  for (const name of process.getActiveResourcesInfo()) resources[name] = (resources[name] ?? 0) + 1;
  return {
    timerLists: durations.length,
    ofConnectionAge: durations.filter((ms) => ms >= age * 0.9 - 1 && ms <= age * 1.1 + 1).length,
    heapUsed: process.memoryUsage().heapUsed,
    activeResources: resources,
  };
}

await churn(20);
const before = measure();
await churn(CONNECTIONS);
const after = measure();
process.stdout.write(
  `${JSON.stringify({ connections: CONNECTIONS, connectionAgeMs: server.maxConnectionAgeMs, before, after, open: server.connections.size })}\n`,
);
await server.close(0);
ca.close();
