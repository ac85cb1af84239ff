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
//   aging     the rotation case's load for 6 s (about as long as its 1,000
//             rotations take) without rotations: failed RPCs from connection
//             aging alone. Target 0, baseline "zero".
//   embedded-ca-cold-start
//             in fresh processes (median of 9): the first EmbeddedCA.create
//             (root + intermediate, P-256) + issueServer() + issueClient() of
//             the process, against the floor: a fresh process's first four
//             P-256 key pairs and signatures with node:crypto. Target ≤ 10 ms.
//             Reported with it: embedded-ca-import, the import of
//             embedded-ca.ts, against importing grpc-js.
// Targets are information only, never asserted. Rates are medians of
// interleaved runs (each run split into slices that alternate between
// subjects, like measure.ts's compare()), after at least a second of warm-up
// per subject. SIGIL_BENCH_CASES=unary,connect runs a subset.
import { execFileSync } from 'node:child_process';
import { constants } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { TlsMaterial } from '../src/pki/material.ts';
import { EmbeddedCA, type IssuedLeaf } from '../src/transport/embedded-ca.ts';
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
const MIN_WARMUP_MS = 1000;
/** How long the aging case (rotation off) keeps its load running. */
const AGING_LOAD_MS = 6000;
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

/** Distinct server HTTP/2 sessions that carried a call, in this process (bench instrumentation). */
function countServerConnections(): { count: () => number; stop: () => void } {
  const seen = new WeakSet<object>();
  let count = 0;
  const onStream = (message: unknown) => {
    const session = (message as { stream?: { session?: object } }).stream?.session;
    if (session && !seen.has(session)) {
      seen.add(session);
      count++;
    }
  };
  subscribe('http2.server.stream.created', onStream);
  return { count: () => count, stop: () => unsubscribe('http2.server.stream.created', onStream) };
}

/** The rotation case, or with `rotate` false the same load for AGING_LOAD_MS without rotations (case aging). */
async function rotationCase(
  client: LoadClient<ToClient, Sample>,
  report: Report,
  ca: EmbeddedCA,
  rotate = true,
): Promise<void> {
  progress(
    rotate
      ? `case rotation: ${ROTATIONS} server-certificate rotations under load ` +
          `(${UNARY_CONCURRENCY} calls in flight on connections aged out every ${ROTATION_AGE_MS} ms, ` +
          `plus ${CONNECT_CONCURRENCY} new connections at a time)`
      : `case aging: the rotation case's load for ${AGING_LOAD_MS / 1000} s without rotations ` +
          `(${UNARY_CONCURRENCY} calls in flight on connections aged out every ${ROTATION_AGE_MS} ms, ` +
          `plus ${CONNECT_CONCURRENCY} new connections at a time)`,
  );
  const serverConnections = countServerConnections();
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
  for (let i = 1; rotate ? i <= ROTATIONS : performance.now() - started < AGING_LOAD_MS; i++) {
    if (performance.now() - started > ROTATION_BUDGET_MS) {
      progress(`  stopped after ${i - 1} rotations: the ${ROTATION_BUDGET_MS / 1000} s budget is spent`);
      break;
    }
    const before = performance.now();
    if (rotate) provider.set(leaves[i]);
    rotationMs += performance.now() - before;
    await delay(1); // let handshakes and calls run between rotations
  }
  const elapsed = performance.now() - started;
  await delay(200);
  const load = await client.sample({ type: 'stop' });
  await client.request({ type: 'teardown' });
  await server.close(1000);
  serverConnections.stop();
  const connections = load.bySubject?.['rotation-connect'];
  progress(
    `  ${rotate ? `${rotated} rotations` : 'no rotation'} in ${(elapsed / 1000).toFixed(1)} s` +
      `${rotate ? ` (${(rotationMs / Math.max(rotated, 1)).toFixed(2)} ms each, in the server's event loop), ${refusals.length} refused` : ''}; ` +
      `${load.ops + load.failures} RPCs ` +
      `(${connections ? connections.ops + connections.failures : '?'} of them first calls on new connections) ` +
      `on ${serverConnections.count()} connections, ` +
      `${load.failures} failed${load.errors.length > 0 ? ` (${load.errors.join('; ')})` : ''}`,
  );
  for (const refusal of refusals.slice(0, 3)) progress(`  refused: ${refusal}`);
  report({
    case: rotate ? 'rotation' : 'aging',
    metric: 'failed_rpcs',
    value: load.failures,
    baselines: { zero: 0 },
  });
}

const COLD_START_PROCESSES = 9;

interface ColdStartSample {
  readonly importMs: number;
  readonly firstMs: number;
}

/** One fresh process of bench/workers/cold-start.ts (no compile cache, nothing warmed up). */
function coldStartProcess(mode: 'sigil' | 'floor'): ColdStartSample {
  const env = { ...process.env };
  delete env.NODE_COMPILE_CACHE;
  const output = execFileSync(
    process.execPath,
    [fileURLToPath(new URL('./workers/cold-start.ts', import.meta.url)), mode],
    { env, encoding: 'utf8', timeout: 60_000 },
  );
  return JSON.parse(output.trim().split('\n').pop() ?? '') as ColdStartSample;
}

/**
 * In fresh processes, as a service meets it on its first start: the import of
 * embedded-ca.ts and the process's first EmbeddedCA.create with two leaves,
 * reported apart, each against its floor in processes of its own (importing
 * grpc-js; four P-256 keys and signatures with node:crypto). Processes
 * alternate between the two, so machine noise hits both.
 */
function coldStartCase(report: Report, limits: Limits): void {
  const processes = Math.max(COLD_START_PROCESSES, limits.runs);
  progress(
    `case embedded-ca-cold-start: ${processes} fresh processes each: import embedded-ca.ts, then the first ` +
      'EmbeddedCA.create (root + intermediate, P-256) + issueServer + issueClient; floor: import grpc-js, ' +
      'then four P-256 keys and signatures',
  );
  const sigil: ColdStartSample[] = [];
  const floor: ColdStartSample[] = [];
  for (let i = 0; i < processes; i++) {
    if (i % 2 === 0) {
      sigil.push(coldStartProcess('sigil'));
      floor.push(coldStartProcess('floor'));
    } else {
      floor.push(coldStartProcess('floor'));
      sigil.push(coldStartProcess('sigil'));
    }
  }
  const first = sigil.map((sample) => sample.firstMs);
  const imports = sigil.map((sample) => sample.importMs);
  progress(
    `  sigil: import ${imports.map((ms) => ms.toFixed(0)).join(' ')} ms; first create ${first.map((ms) => ms.toFixed(1)).join(' ')} ms`,
  );
  progress(
    `  floor: import grpc-js ${floor.map((s) => s.importMs.toFixed(0)).join(' ')} ms; ` +
      `first keys + signatures ${floor.map((s) => s.firstMs.toFixed(1)).join(' ')} ms`,
  );
  report({
    case: 'embedded-ca-cold-start',
    metric: 'ms',
    value: median(first),
    baselines: { 'node-crypto-4-keys-4-signatures-fresh-process': median(floor.map((s) => s.firstMs)) },
  });
  report({
    case: 'embedded-ca-import',
    metric: 'ms',
    value: median(imports),
    baselines: { 'grpc-js-import': median(floor.map((s) => s.importMs)) },
  });
}

/** SIGIL_BENCH_CASES=unary,connect runs only those cases (all by default). */
function selectedCases(): Set<string> {
  const all = ['unary', 'connect', 'rotation', 'aging', 'embedded-ca-cold-start'];
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
  if (cases.has('unary') || cases.has('connect') || cases.has('rotation') || cases.has('aging')) {
    const ca = EmbeddedCA.create({ addresses: ADDRESSES, intermediate: true });
    const client = newLoadClient();
    try {
      if (cases.has('unary')) await unaryCase(client, report, limits, ca);
      if (cases.has('connect')) await connectCase(client, report, limits, ca);
      if (cases.has('rotation')) await rotationCase(client, report, ca);
      if (cases.has('aging')) await rotationCase(client, report, ca, false);
    } finally {
      await client.close();
      ca.close();
    }
  }
  if (cases.has('embedded-ca-cold-start')) coldStartCase(report, limits);
}
