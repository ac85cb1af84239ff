// Image builds and the metadata service, two cases:
//
//   dockerfile-build  wall time of `sigil build` (the real CLI, against a real
//                     control plane and a node daemon in this process, its
//                     bridge in a network namespace of its own) of a Dockerfile
//                     with ENV, WORKDIR, COPY and three RUNs on a busybox base,
//                     against `buildah bud --isolation chroot` of the same
//                     Dockerfile and context (a private --root/--runroot,
//                     removed after). The base is one busybox tree
//                     (test/workloads/rootfs-fixture.ts): imported into the
//                     node's store for sigil, committed with `buildah from
//                     scratch` + `buildah copy` for buildah, under the same
//                     name, so the Dockerfile is byte for byte the same. One
//                     untimed warm-up each, then BUILD_RUNS timed builds each,
//                     alternating who goes first; the median in ms. Needs root.
//                     Without `sigil build` or buildah, the case says so on
//                     stderr and reports what it can.
//   metadata-get      GET /latest/meta-data (Accept: application/json, with a
//                     session token) per second from METADATA_CONCURRENCY
//                     keep-alive connections, against startMetadataService on
//                     127.0.0.1; baseline: a bare node:http server answering
//                     the same JSON bytes. The load comes from a worker thread
//                     (its own event loop, so the server's is the one
//                     measured); runs bounded by SIGIL_BENCH_MS and
//                     SIGIL_BENCH_MAX_OPS, interleaved, the median reported.
//
// Everything made (server, daemon, images, buildah storage, the worker) is
// removed in a finally, whether or not the run succeeded.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { WorkloadDaemon } from '../src/agent/workload-daemon.ts';
import { type MetadataDocument, metadataTree, nodeAt } from '../src/guest/metadata-document.ts';
import { type MetadataService, startMetadataService, TOKEN_PATH } from '../src/guest/metadata-server.ts';
import { startServer } from '../src/server/start-server.ts';
import { importImage, listImages, openImageStore } from '../src/workloads/images.ts';
import { buildBusyboxRootfs } from '../test/workloads/rootfs-fixture.ts';
import { type Limits, median, type Report } from './measure.ts';

export const description =
  'sigil build vs buildah bud --isolation chroot (median wall ms), and metadata GETs/s vs bare node:http';

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

const SIGIL = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'sigil.js');
const BUILDAH = '/usr/bin/buildah';
const BASE_IMAGE = 'bench/busybox:1';
const BUILD_RUNS = 3;
/** One build that takes longer than this is a failure, not a sample. */
const BUILD_TIMEOUT_MS = 5 * 60 * 1000;
/** The build case stops starting builds after this, with however many samples it has. */
const BUILD_BUDGET_MS = 15 * 60 * 1000;
/** The daemon's bridge, in the daemon's own network namespace (no clash with the host's). */
const BRIDGE = 'sbench0';
const BRIDGE_CONFIG = `${BRIDGE}=10.213.7.1/24`;

const DOCKERFILE = `FROM ${BASE_IMAGE}
ENV GREETING=hello APP_DIR=/srv/app
WORKDIR /srv/app
COPY app/ /srv/app/
RUN echo "$GREETING from $APP_DIR" > greeting.txt
RUN mkdir -p data && seq 1 10000 > data/numbers.txt && cat conf/*.txt > data/all.txt
RUN wc -l data/numbers.txt data/all.txt > data/count.txt && cat greeting.txt
`;

/** The build context: the Dockerfile and a small app tree (40 files, 4 KiB each, in two directories). */
function writeContext(dir: string): void {
  mkdirSync(join(dir, 'app', 'conf'), { recursive: true });
  mkdirSync(join(dir, 'app', 'static'), { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), DOCKERFILE);
  for (let i = 0; i < 20; i++) {
    writeFileSync(join(dir, 'app', 'conf', `part${i}.txt`), `${`line ${i}\n`.repeat(512)}`.slice(0, 4096));
    writeFileSync(join(dir, 'app', 'static', `asset${i}.bin`), randomBytes(4096));
  }
}

interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Runs a program to its end (killed after `timeoutMs`), timing it from spawn to exit. */
function timedRun(program: string, args: readonly string[], timeoutMs: number): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr = (stderr + text).slice(-8000);
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - started }));
  });
}

function ok(result: Finished, what: string): Finished {
  if (result.code !== 0) {
    throw new Error(
      `${what} exited ${result.code}: ${result.stderr.trim().split('\n').slice(-5).join(' | ')}`,
    );
  }
  return result;
}

/** The real `sigil` command; its stdout, or a failure with its stderr. */
function sigil(args: readonly string[], what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [SIGIL, ...args], (error, stdout, stderr) => {
      if (error) reject(new Error(`${what}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

/** Whether this checkout's CLI has `sigil build`. */
function sigilBuildAvailable(): boolean {
  return spawnSync(process.execPath, [SIGIL, 'build', '--help'], { stdio: 'ignore' }).status === 0;
}

/** buildah with a private storage under `dir` (removed by removeBuildahStorage). */
function buildahIn(dir: string) {
  const storage = ['--root', join(dir, 'root'), '--runroot', join(dir, 'run')];
  return (args: readonly string[], timeoutMs = BUILD_TIMEOUT_MS) =>
    timedRun(BUILDAH, [...storage, ...args], timeoutMs);
}

/** Removes buildah's containers and images (so no layer stays mounted), then whatever is still mounted beneath. */
async function removeBuildahStorage(dir: string): Promise<void> {
  const buildah = buildahIn(dir);
  await buildah(['rm', '--all'], 60_000).catch(() => undefined);
  await buildah(['rmi', '--all', '--force'], 60_000).catch(() => undefined);
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((target) => target?.startsWith(`${dir}/`))
    .reverse();
  for (const target of mounts) spawnSync('umount', ['-l', target], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true });
}

async function buildCase(report: Report): Promise<void> {
  if (process.getuid?.() !== 0) {
    log('  dockerfile-build: needs root (workloads, buildah storage); not run');
    return;
  }
  const withSigil = sigilBuildAvailable();
  const withBuildah = existsSync(BUILDAH);
  if (!withSigil) log('  dockerfile-build: this checkout has no `sigil build`; buildah only');
  if (!withBuildah) log(`  dockerfile-build: ${BUILDAH} is missing (apt-get install buildah); sigil only`);
  if (!withSigil && !withBuildah) return;

  const scratch = mkdtempSync(join(tmpdir(), 'sigil-bench-build-'));
  const dataDir = join(scratch, 'data');
  const nodeDir = join(scratch, 'node');
  const context = join(scratch, 'context');
  const rootfs = join(scratch, 'rootfs');
  const buildahDir = join(scratch, 'buildah');
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  let daemon: WorkloadDaemon | undefined;
  const failures: unknown[] = [];
  try {
    mkdirSync(context);
    writeContext(context);
    mkdirSync(rootfs);
    buildBusyboxRootfs(rootfs);
    const builds = { sigil: [] as number[], buildah: [] as number[] };
    let made = 0;

    let sigilBuild: (() => Promise<number>) | undefined;
    if (withSigil) {
      server = await startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' });
      const token = (
        await sigil(['token', 'create', '--auto-approve', '--data', dataDir], 'token create')
      ).trim();
      await sigil(['enrol', token, '--dir', nodeDir], 'enrol');
      const store = openImageStore(nodeDir);
      await importImage(store, rootfs, BASE_IMAGE);
      daemon = await WorkloadDaemon.start({
        dir: nodeDir,
        listen: '127.0.0.1:0',
        bridges: [BRIDGE_CONFIG],
        cgroupBase: `sigil-bench-build-${process.pid}-${randomBytes(3).toString('hex')}`,
        registerRetryMs: 100,
      });
      const { nodeId } = JSON.parse(readFileSync(join(nodeDir, 'node.json'), 'utf8')) as { nodeId: string };
      sigilBuild = async () => {
        const tag = `bench/built-sigil:${++made}`;
        const result = ok(
          await timedRun(
            process.execPath,
            [
              SIGIL,
              'build',
              '-f',
              join(context, 'Dockerfile'),
              '-t',
              tag,
              '--net',
              BRIDGE,
              '--node',
              nodeId,
              '--data',
              dataDir,
              '--json',
              context,
            ],
            BUILD_TIMEOUT_MS,
          ),
          `sigil build ${tag}`,
        );
        const built = JSON.parse(result.stdout) as { tag: string; durationMs: number | string };
        // The build did the work: the image holds what the last RUN wrote.
        const image = listImages(store).find((record) => record.tag === built.tag);
        const count = image
          ? readFileSync(join(image.rootfs, 'srv', 'app', 'data', 'count.txt'), 'utf8')
          : '';
        if (!/10000 data\/numbers\.txt/.test(count))
          throw new Error(`sigil build ${tag}: data/count.txt is ${JSON.stringify(count)}`);
        log(
          `  sigil build ${tag}: ${result.ms.toFixed(0)} ms wall, ${Number(built.durationMs)} ms on the node`,
        );
        return result.ms;
      };
    }

    let buildahBuild: (() => Promise<number>) | undefined;
    if (withBuildah) {
      const buildah = buildahIn(buildahDir);
      // The same tree as the node's base, under the same name (buildah stores it as localhost/bench/busybox:1).
      const container = ok(await buildah(['from', 'scratch']), 'buildah from scratch').stdout.trim();
      ok(await buildah(['copy', container, rootfs, '/']), 'buildah copy');
      ok(await buildah(['commit', '--quiet', container, BASE_IMAGE]), 'buildah commit');
      ok(await buildah(['rm', container]), 'buildah rm');
      buildahBuild = async () => {
        const tag = `bench/built-buildah:${++made}`;
        const result = ok(
          await buildah([
            'bud',
            '--isolation',
            'chroot',
            '--pull=never',
            '-f',
            join(context, 'Dockerfile'),
            '-t',
            tag,
            context,
          ]),
          `buildah bud ${tag}`,
        );
        if (!result.stdout.includes('hello from /srv/app'))
          throw new Error(`buildah bud ${tag}: the last RUN's output is missing`);
        log(`  buildah bud ${tag}: ${result.ms.toFixed(0)} ms wall`);
        return result.ms;
      };
    }

    log(`  dockerfile-build: one warm-up each, then ${BUILD_RUNS} builds each, alternating`);
    await sigilBuild?.();
    await buildahBuild?.();
    const deadline = performance.now() + BUILD_BUDGET_MS;
    for (let i = 0; i < BUILD_RUNS && performance.now() < deadline; i++) {
      const order = i % 2 === 0 ? [sigilBuild, buildahBuild] : [buildahBuild, sigilBuild];
      for (const build of order) {
        if (build === undefined) continue;
        const ms = await build();
        (build === sigilBuild ? builds.sigil : builds.buildah).push(ms);
      }
    }
    if (builds.sigil.length > 0) {
      report({
        case: 'dockerfile-build',
        metric: 'wall_ms',
        value: median(builds.sigil),
        baselines: builds.buildah.length > 0 ? { 'buildah-bud-chroot': median(builds.buildah) } : {},
      });
    } else if (builds.buildah.length > 0) {
      report({
        case: 'dockerfile-build-buildah-only',
        metric: 'wall_ms',
        value: median(builds.buildah),
        baselines: {},
      });
    }
  } finally {
    const attempt = async (step: () => unknown): Promise<void> => {
      try {
        await step();
      } catch (error) {
        failures.push(error);
      }
    };
    await attempt(() => daemon?.close());
    await attempt(() => server?.close(0));
    if (withBuildah) await attempt(() => removeBuildahStorage(buildahDir));
    await attempt(() => rmSync(scratch, { recursive: true, force: true }));
    for (const error of failures) log(`  dockerfile-build: cleanup failed: ${String(error)}`);
  }
  // run.ts sets the exit code from main(): a failed cleanup after a good run surfaces as a throw.
  if (failures.length > 0) throw new Error('bench build: cleanup failed (see above)');
}

// ---------------------------------------------------------------------------
// Metadata requests per second

const METADATA_CONCURRENCY = 16;
const METADATA_PATH = '/latest/meta-data';

/** A workload's document as a guest sees it during a build: identity and bootstrap PEMs at their usual sizes. */
function benchDocument(): MetadataDocument {
  const pem = (label: string, bytes: number) =>
    `-----BEGIN ${label}-----\n${randomBytes(bytes)
      .toString('base64')
      .replace(/.{64}/g, '$&\n')}\n-----END ${label}-----\n`;
  return {
    VMMID: 'vmm-bench',
    Drives: {
      '1': {
        DriveID: '1',
        IsReadOnly: 'false',
        IsRootDevice: 'true',
        PartUUID: '',
        PathOnHost: '/srv/bench.ext4',
      },
    },
    EntrypointJSON: JSON.stringify({
      Cmd: ['serve'],
      EntryPoint: [],
      Env: {},
      Shell: ['/bin/sh', '-c'],
      User: '0:0',
      Workdir: '/',
    }),
    Env: { GREETING: 'hello', APP_DIR: '/srv/app' },
    LocalHostname: 'bench',
    ImageTag: 'bench/web:1',
    Machine: { CPU: '1', CPUTemplate: '', HTEnabled: 'false', KernelArgs: '', Mem: '128', VMLinux: '' },
    Network: { CniNetworkName: BRIDGE, Interfaces: {} },
    Users: { root: { SSHKeys: '' } },
    Identity: {
      SpiffeID: 'spiffe://bench.example/ns/default/sa/web',
      Cert: pem('CERTIFICATE', 540),
      Key: pem('PRIVATE KEY', 90),
      CAChain: pem('CERTIFICATE', 420),
      NotAfter: '2030-01-01T00:00:00Z',
    },
  };
}

/** The load generator, in a worker thread: N keep-alive loops of GETs, bounded in count and time. */
const LOAD_WORKER = `
const { parentPort } = require('node:worker_threads');
const http = require('node:http');
const agents = new Map();
function get(task, agent) {
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port: task.port, path: task.path, agent, headers: task.headers },
      (res) => {
        let bytes = 0;
        res.on('data', (chunk) => { bytes += chunk.length; });
        res.on('end', () => resolve(res.statusCode === 200 && bytes === task.expectBytes));
        res.on('error', () => resolve(false));
      },
    );
    req.on('error', () => resolve(false));
    req.end();
  });
}
parentPort.on('message', async (task) => {
  if (task.type === 'stop') {
    for (const agent of agents.values()) agent.destroy();
    parentPort.close();
    return;
  }
  let agent = agents.get(task.port);
  if (!agent) {
    agent = new http.Agent({ keepAlive: true, maxSockets: task.concurrency });
    agents.set(task.port, agent);
  }
  let issued = 0;
  let ops = 0;
  let failures = 0;
  const started = performance.now();
  const deadline = started + task.maxMs;
  const loop = async () => {
    while (issued < task.maxOps && performance.now() < deadline && failures < 10) {
      issued++;
      if (await get(task, agent)) ops++;
      else failures++;
    }
  };
  await Promise.all(Array.from({ length: task.concurrency }, loop));
  parentPort.postMessage({ ops, failures, ms: performance.now() - started });
});
`;

interface LoadTask {
  readonly port: number;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly expectBytes: number;
  readonly maxMs: number;
  readonly maxOps: number;
  readonly concurrency: number;
}

interface LoadSample {
  readonly ops: number;
  readonly failures: number;
  readonly ms: number;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

/** One request from this thread: status and body. */
function ask(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        body += text;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function metadataCase(report: Report, limits: Limits): Promise<void> {
  const document = benchDocument();
  const body = JSON.stringify(nodeAt(metadataTree(document), METADATA_PATH));
  let service: MetadataService | undefined;
  const bare = createServer((_request, response) => {
    response.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    });
    response.end(body);
  });
  bare.keepAliveTimeout = 60_000;
  const worker = new Worker(LOAD_WORKER, { eval: true });
  try {
    service = await startMetadataService('127.0.0.1', 0, { documentFor: () => document });
    const barePort = await listen(bare);
    const token = await ask(service.port, 'PUT', TOKEN_PATH, { 'x-metadata-token-ttl-seconds': '21600' });
    if (token.status !== 200) throw new Error(`metadata token: ${token.status} ${token.body}`);
    const headers = { accept: 'application/json', 'x-metadata-token': token.body };
    // Both answer the same bytes before anything is measured.
    for (const port of [service.port, barePort]) {
      const answer = await ask(port, 'GET', METADATA_PATH, headers);
      if (answer.status !== 200 || answer.body !== body)
        throw new Error(`metadata GET on port ${port}: ${answer.status}, not the expected JSON`);
    }
    // One task at a time: the worker answers each with one message.
    let pending: { resolve: (sample: LoadSample) => void; reject: (error: Error) => void } | undefined;
    worker.on('message', (sample: LoadSample) => pending?.resolve(sample));
    worker.on('error', (error) => pending?.reject(error));
    const run = async (port: number, maxMs: number): Promise<LoadSample> => {
      const task: LoadTask = {
        port,
        path: METADATA_PATH,
        headers,
        expectBytes: Buffer.byteLength(body),
        maxMs,
        maxOps: limits.maxOps,
        concurrency: METADATA_CONCURRENCY,
      };
      const sample = await new Promise<LoadSample>((resolve, reject) => {
        pending = { resolve, reject };
        worker.postMessage(task);
      });
      pending = undefined;
      if (sample.failures > 0)
        throw new Error(`metadata load on port ${port}: ${sample.failures} failed requests`);
      return sample;
    };
    const subjects = { sigil: service.port, bare: barePort };
    for (const port of Object.values(subjects)) await run(port, limits.warmupMs);
    const rates = { sigil: [] as number[], bare: [] as number[] };
    for (let i = 0; i < limits.runs; i++) {
      const order = i % 2 === 0 ? (['sigil', 'bare'] as const) : (['bare', 'sigil'] as const);
      for (const name of order) {
        const sample = await run(subjects[name], limits.maxMs);
        rates[name].push((sample.ops * 1000) / sample.ms);
      }
      log(
        `  metadata run ${i + 1}/${limits.runs}: sigil ${Math.round(rates.sigil.at(-1)!)}/s, bare ${Math.round(rates.bare.at(-1)!)}/s`,
      );
    }
    report({
      case: `metadata-get-c${METADATA_CONCURRENCY}`,
      metric: 'requests_per_s',
      value: median(rates.sigil),
      baselines: { 'bare-node-http': median(rates.bare) },
    });
  } finally {
    worker.postMessage({ type: 'stop' });
    await worker.terminate();
    await service?.close();
    bare.closeAllConnections();
    await new Promise<void>((resolve) => bare.close(() => resolve()));
  }
}

export async function run(report: Report, limits: Limits): Promise<void> {
  await metadataCase(report, limits);
  await buildCase(report);
}
