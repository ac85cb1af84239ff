// mTLS for grpc-js, measured side by side in one run. Servers live in this
// process; the load comes from a child process (bench/workers/transport-
// client.ts), so on a two-core machine server and client each get a core and
// both sides of every comparison are driven by the same client code.
//
//   unary     echo calls/s on one persistent channel, 32 calls in flight:
//             sigil's MtlsServer + channelCredentials vs plaintext grpc-js
//             (baseline grpc-js-plaintext). Target ≥ 0.85.
//   connect   new connection + first echo call per second, 4 at a time, same
//             certificates and the same sigil client credentials: sigil's
//             server vs grpc-js's own ServerCredentials.createSsl server
//             (baseline grpc-js-createSsl, target ≥ 0.95), and a bare Node
//             TLS 1.3 mutual handshake as the ceiling (node-tls13-handshake).
//   rotation  failed RPCs during 1,000 server-certificate rotations under
//             continuous load (echo calls on persistent channels whose
//             connections are aged out every 250 ms, plus new connections
//             all along). Target 0. Baseline "zero" (the ratio is null).
//   embedded-ca-cold-start
//             median ms of EmbeddedCA.create (root + intermediate, P-256) +
//             issueServer() + issueClient(), against the floor: four P-256
//             key pairs and four signatures with node:crypto. Target ≤ 10 ms.
// Targets are information only, never asserted. Rates are medians of
// interleaved runs (each run split into slices that alternate between
// subjects, like measure.ts's compare()), after at least a second of warm-up
// per subject. SIGIL_BENCH_CASES=unary,connect runs a subset.
import { constants, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { EmbeddedCA, type IssuedLeaf } from '../src/transport/embedded-ca.ts';
import type { TlsMaterial } from '../src/transport/material.ts';
import { MaterialProvider } from '../src/transport/material-provider.ts';
import { MtlsServer } from '../src/transport/mtls-server.ts';
import { StaticMaterialSource } from '../src/transport/static-source.ts';
import { type Limits, median, type Report } from './measure.ts';
import { compareRemote } from './remote-compare.ts';
import {
  echoImplementation,
  echoService,
  type LoadSpec,
  type Sample,
  type ToClient,
} from './workers/echo.ts';
import { LoadClient } from './workers/load-client.ts';

export const description =
  'mTLS for grpc-js: unary calls/s vs plaintext, connections/s vs grpc-js createSsl and bare TLS 1.3, ' +
  'failed RPCs across 1,000 rotations, embedded CA cold start';

const ADDRESSES = ['localhost', '127.0.0.1'];
const SERVER_NAME = 'localhost';
const UNARY_CONCURRENCY = 32;
const CONNECT_CONCURRENCY = 4;
const ROTATIONS = 1000;
const ROTATION_AGE_MS = 250;
const COLD_START_MAX_ITERATIONS = 200;
const MIN_WARMUP_MS = 1000;
/** The rotation loop stops early (and says so) after this long. */
const ROTATION_BUDGET_MS = 90_000;

const progress = (line: string) => process.stderr.write(`${line}\n`);

const newLoadClient = () =>
  new LoadClient<ToClient, Sample>(new URL('./workers/transport-client.ts', import.meta.url));

function materialOf(leaf: IssuedLeaf, ca: EmbeddedCA): TlsMaterial {
  return { certificateChain: leaf.certificateChain, privateKey: leaf.privateKey, trustBundle: ca.chainPem() };
}

function bindGrpc(server: grpc.Server, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', credentials, (error, port) => (error ? reject(error) : resolve(port)));
  });
}

function shutdownGrpc(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 2000);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function sigilServer(material: TlsMaterial): Promise<{ server: MtlsServer; port: number }> {
  const server = new MtlsServer({ material: new StaticMaterialSource(material) });
  server.addService(echoService, echoImplementation);
  return { server, port: await server.listen('127.0.0.1', 0) };
}

async function unaryCase(
  client: LoadClient<ToClient, Sample>,
  report: Report,
  limits: Limits,
  ca: EmbeddedCA,
): Promise<void> {
  progress(`case unary: echo calls/s, one persistent channel, ${UNARY_CONCURRENCY} calls in flight`);
  const sigil = await sigilServer(materialOf(ca.issueServer(), ca));
  const plaintext = new grpc.Server();
  plaintext.addService(echoService, echoImplementation);
  const plaintextPort = await bindGrpc(plaintext, grpc.ServerCredentials.createInsecure());
  const clientMaterial = materialOf(ca.issueClient('bench'), ca);
  const subjects: Record<string, LoadSpec> = {
    sigil: {
      kind: 'unary',
      port: sigil.port,
      credentials: { kind: 'sigil', material: clientMaterial, serverName: SERVER_NAME },
      concurrency: UNARY_CONCURRENCY,
    },
    'grpc-js-plaintext': {
      kind: 'unary',
      port: plaintextPort,
      credentials: { kind: 'insecure' },
      concurrency: UNARY_CONCURRENCY,
    },
  };
  await client.request({ type: 'setup', subjects });
  const rates = await compareRemote(client, Object.keys(subjects), limits, {
    minWarmupMs: MIN_WARMUP_MS,
    progress,
  });
  await client.request({ type: 'teardown' });
  await Promise.all([sigil.server.close(1000), shutdownGrpc(plaintext)]);
  report({
    case: 'unary',
    metric: 'calls_per_s',
    value: rates.sigil,
    baselines: { 'grpc-js-plaintext': rates['grpc-js-plaintext'] },
  });
}

/** A bare Node TLS 1.3 server with sigil's settings: mutual auth, no tickets; it writes one byte per verified client. */
async function bareTlsServer(material: TlsMaterial): Promise<{ server: tls.Server; port: number }> {
  const server = tls.createServer({
    cert: material.certificateChain,
    key: material.privateKey,
    ca: material.trustBundle,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    secureOptions: constants.SSL_OP_NO_TICKET,
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ['h2'],
  });
  server.on('secureConnection', (socket) => {
    socket.on('error', () => {});
    socket.end('k');
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

async function connectCase(
  client: LoadClient<ToClient, Sample>,
  report: Report,
  limits: Limits,
  ca: EmbeddedCA,
): Promise<void> {
  progress(
    `case connect: new connection + first call/s, ${CONNECT_CONCURRENCY} at a time, same certificates (root → intermediate → P-256 leaves)`,
  );
  const serverMaterial = materialOf(ca.issueServer(), ca);
  const sigil = await sigilServer(serverMaterial);
  const grpcSsl = new grpc.Server();
  grpcSsl.addService(echoService, echoImplementation);
  const grpcSslPort = await bindGrpc(
    grpcSsl,
    grpc.ServerCredentials.createSsl(
      Buffer.from(serverMaterial.trustBundle),
      [
        {
          cert_chain: Buffer.from(serverMaterial.certificateChain),
          private_key: Buffer.from(serverMaterial.privateKey),
        },
      ],
      true,
    ),
  );
  const bare = await bareTlsServer(serverMaterial);
  const clientMaterial = materialOf(ca.issueClient('bench'), ca);
  const credentials = { kind: 'sigil', material: clientMaterial, serverName: SERVER_NAME } as const;
  const subjects: Record<string, LoadSpec> = {
    sigil: { kind: 'connect', port: sigil.port, credentials, concurrency: CONNECT_CONCURRENCY },
    'grpc-js-createSsl': {
      kind: 'connect',
      port: grpcSslPort,
      credentials,
      concurrency: CONNECT_CONCURRENCY,
    },
    'node-tls13-handshake': {
      kind: 'tls',
      port: bare.port,
      material: clientMaterial,
      serverName: SERVER_NAME,
      concurrency: CONNECT_CONCURRENCY,
    },
  };
  await client.request({ type: 'setup', subjects });
  const rates = await compareRemote(client, Object.keys(subjects), limits, {
    minWarmupMs: MIN_WARMUP_MS,
    progress,
  });
  await client.request({ type: 'teardown' });
  await Promise.all([
    sigil.server.close(1000),
    shutdownGrpc(grpcSsl),
    new Promise((resolve) => bare.server.close(resolve)),
  ]);
  report({
    case: 'connect',
    metric: 'connections_per_s',
    value: rates.sigil,
    baselines: {
      'grpc-js-createSsl': rates['grpc-js-createSsl'],
      'node-tls13-handshake': rates['node-tls13-handshake'],
    },
  });
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function rotationCase(
  client: LoadClient<ToClient, Sample>,
  report: Report,
  ca: EmbeddedCA,
): Promise<void> {
  progress(
    `case rotation: ${ROTATIONS} server-certificate rotations under load ` +
      `(${UNARY_CONCURRENCY} calls in flight on connections aged out every ${ROTATION_AGE_MS} ms, ` +
      `plus ${CONNECT_CONCURRENCY} new connections at a time)`,
  );
  // Every rotation installs a new leaf with a new key; issued up front so the loop times only the rotation.
  const leaves = Array.from({ length: ROTATIONS + 1 }, () => materialOf(ca.issueServer(), ca));
  const provider = new MaterialProvider(leaves[0]);
  let rotated = 0;
  const refusals: string[] = [];
  const server = new MtlsServer({
    material: provider,
    maxConnectionAgeMs: ROTATION_AGE_MS,
    maxConnectionAgeGraceMs: 5000,
    onRotated: () => {
      rotated++;
    },
    onError: (error) => refusals.push(error.message),
  });
  server.addService(echoService, echoImplementation);
  const port = await server.listen('127.0.0.1', 0);
  const credentials = {
    kind: 'sigil',
    material: materialOf(ca.issueClient('bench'), ca),
    serverName: SERVER_NAME,
  } as const;
  await client.request({
    type: 'setup',
    subjects: {
      'rotation-unary': { kind: 'unary', port, credentials, concurrency: UNARY_CONCURRENCY },
      'rotation-connect': { kind: 'connect', port, credentials, concurrency: CONNECT_CONCURRENCY },
    },
  });
  await client.request({ type: 'start', subjects: ['rotation-unary', 'rotation-connect'] });
  await delay(200);
  let rotationMs = 0;
  const started = performance.now();
  for (let i = 1; i <= ROTATIONS; i++) {
    if (performance.now() - started > ROTATION_BUDGET_MS) {
      progress(`  stopped after ${i - 1} rotations: the ${ROTATION_BUDGET_MS / 1000} s budget is spent`);
      break;
    }
    const before = performance.now();
    provider.set(leaves[i]);
    rotationMs += performance.now() - before;
    await delay(1); // let handshakes and calls run between rotations
  }
  const elapsed = performance.now() - started;
  await delay(200);
  const load = await client.sample({ type: 'stop' });
  await client.request({ type: 'teardown' });
  await server.close(1000);
  const connections = load.bySubject?.['rotation-connect'];
  progress(
    `  ${rotated} rotations in ${(elapsed / 1000).toFixed(1)} s (${(rotationMs / Math.max(rotated, 1)).toFixed(2)} ms each, ` +
      `in the server's event loop), ${refusals.length} refused; ${load.ops + load.failures} RPCs ` +
      `(${connections ? connections.ops + connections.failures : '?'} of them first calls on new connections), ` +
      `${load.failures} failed${load.errors.length > 0 ? ` (${load.errors.join('; ')})` : ''}`,
  );
  for (const refusal of refusals.slice(0, 3)) progress(`  refused: ${refusal}`);
  report({ case: 'rotation', metric: 'failed_rpcs', value: load.failures, baselines: { zero: 0 } });
}

function coldStartCase(report: Report, limits: Limits): void {
  const budgetMs = limits.runs * limits.maxMs;
  progress(
    `case embedded-ca-cold-start: EmbeddedCA.create (root + intermediate, P-256) + issueServer + issueClient, ` +
      `interleaved with its floor, up to ${COLD_START_MAX_ITERATIONS} times or ${budgetMs} ms`,
  );
  const message = randomBytes(500);
  const ours = () => {
    const ca = EmbeddedCA.create({ addresses: ADDRESSES, intermediate: true });
    ca.issueServer();
    ca.issueClient();
    return ca;
  };
  const floor = () => {
    for (let i = 0; i < 4; i++) {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      sign('sha256', message, privateKey);
    }
  };
  const time = (op: () => unknown): number => {
    const start = performance.now();
    op();
    return performance.now() - start;
  };
  const first = time(ours);
  progress(`  first in this process: ${first.toFixed(2)} ms`);
  const samples = { sigil: [] as number[], floor: [] as number[] };
  const deadline = performance.now() + budgetMs;
  for (let i = 0; i < COLD_START_MAX_ITERATIONS && performance.now() < deadline; i++) {
    if (i % 2 === 0) {
      samples.sigil.push(time(ours));
      samples.floor.push(time(floor));
    } else {
      samples.floor.push(time(floor));
      samples.sigil.push(time(ours));
    }
  }
  progress(
    `  ${samples.sigil.length} each: sigil median ${median(samples.sigil).toFixed(2)} ms, ` +
      `floor median ${median(samples.floor).toFixed(2)} ms`,
  );
  report({
    case: 'embedded-ca-cold-start',
    metric: 'ms',
    value: median(samples.sigil),
    baselines: { 'node-crypto-4-keys-4-signatures': median(samples.floor) },
  });
}

/** SIGIL_BENCH_CASES=unary,connect runs only those cases (all by default). */
function selectedCases(): Set<string> {
  const all = ['unary', 'connect', 'rotation', 'embedded-ca-cold-start'];
  const text = process.env.SIGIL_BENCH_CASES;
  if (text === undefined || text.trim() === '') return new Set(all);
  const chosen = text.split(',').map((name) => name.trim());
  const unknown = chosen.filter((name) => !all.includes(name));
  if (unknown.length > 0) {
    throw new Error(`SIGIL_BENCH_CASES: unknown case ${unknown.join(', ')} (cases: ${all.join(', ')})`);
  }
  return new Set(chosen);
}

export async function run(report: Report, limits: Limits): Promise<void> {
  const cases = selectedCases();
  if (cases.has('unary') || cases.has('connect') || cases.has('rotation')) {
    const ca = EmbeddedCA.create({ addresses: ADDRESSES, intermediate: true });
    const client = newLoadClient();
    try {
      if (cases.has('unary')) await unaryCase(client, report, limits, ca);
      if (cases.has('connect')) await connectCase(client, report, limits, ca);
      if (cases.has('rotation')) await rotationCase(client, report, ca);
    } finally {
      await client.close();
      ca.close();
    }
  }
  if (cases.has('embedded-ca-cold-start')) coldStartCase(report, limits);
}
