// The control plane end to end: the real `sigil server` command in its own
// process, load from another process (bench/workers/server-client.ts), so on
// a two-core machine the server and the client each get a core.
//
//   sign       Sign calls/s over mTLS, durable SQLite (WAL, synchronous=FULL,
//              in a temporary directory on disk), 32 calls in flight on one
//              channel (one HTTP/2 connection), admin identity; SPKI + proof
//              of possession (the fast path). Baseline: cfssl's `cfssl serve`
//              (Debian golang-cfssl) as a user runs it in production: TLS
//              (so HTTP/2, one connection, 32 streams in flight) and its
//              certificate database (SQLite, WAL, synchronous=FULL, one row
//              per certificate, counted after the run), POST
//              /api/v1/cfssl/sign with the same kind of CSR (P-256, a DNS SAN
//              and a SPIFFE URI SAN). Also, labelled as such, cfssl without
//              a database in plaintext HTTP/1.1 (32 keep-alive connections).
//              Targets: ≥ 2× cfssl+DB (per-round median), server CPU per
//              certificate ≤ 350 µs.
//   sign-csr   The same with a PKCS#10 CSR instead of SPKI + proof (the very
//              CSR bytes cfssl gets). Targets: ≥ 1.5× cfssl+DB, ≤ 600 µs.
//   enrol      Enrolment.Register calls/s: an auto-approve join token with N
//              uses, then N Register calls (fresh Ed25519 keys, one proof
//              each; 32 in flight, server-authenticated TLS like a new node),
//              each ending UP with a certificate. Baseline: sigil's own Sign
//              (SPKI) rate from the same run, the cheapest issuance there is.
//   scaling    `sigil server --workers 1` vs `--workers 2`, Sign with proof of
//              possession, the same client (32 in flight over 8 connections,
//              so a server that spreads connections over workers can use
//              them), per-round ratio; with server and client CPU per call,
//              which bound the rate on this machine's cores. Skipped when the
//              server has no --workers flag. Target ≥ 1.2× on 2 cores.
//   revoke-propagation
//              Two replicas on one PostgreSQL (fsync on): A bootstraps, B
//              joins with a replica token. A client holding a certificate
//              issued by A keeps an mTLS connection to B; Revoke on A; time
//              until the client's socket is closed by B. p50 and p99 of 200
//              revocations (after 10 untimed ones). Target p99 ≤ 200 ms.
//
// Rates and CPU come from interleaved rounds (workers/server-rounds.ts):
// each round alternates short slices of every subject, ratios are taken
// round by round and their median printed (a `per_round_ratio_vs_<baseline>`
// line; the rate line's own `ratio` is of the medians). Server CPU per
// certificate is the utime+stime of the server's process tree
// (workers/process-cpu.ts) during its slices over the certificates issued
// in them (/proc counts in 10 ms ticks: the error evens out over the slices);
// it hardly depends on how busy the machine is, so the bench also projects,
// on paper, a 16-core box's rate from it. Each round line also says how many
// cores other processes took meanwhile (/proc/stat): on a shared box that,
// with server + client CPU per call, explains the rates reached.
//
// Client-side key work (P-256 keys, CSRs, proofs; Ed25519 keys and proofs) is
// done before the timed part, for sigil and cfssl alike. Targets are
// information only, never asserted. SIGIL_BENCH_CASES=sign,enrol runs a
// subset; without cfssl the sign lines have no baseline.

import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { type UnaryMethod, unary } from '../src/client/rpc.ts';
import {
  AdminClient,
  CertificateAuthorityClient,
  type IssuedCertificate,
} from '../src/gen/sigil/v1/sigil.ts';
import { generateKeyPair, privateKeyToPem } from '../src/pki/keys.ts';
import type { TlsMaterial } from '../src/pki/material.ts';
import { encodePem } from '../src/pki/pem.ts';
import { possessionFor, signChallenge } from '../src/protocol/challenges.ts';
import { channelCredentials } from '../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../src/transport/static-source.ts';
import { postgresUnavailable, startPostgres } from '../test/support/postgres.ts';
import { type Limits, median, type Report } from './measure.ts';
import { Failures } from './remote-compare.ts';
import { LoadClient } from './workers/load-client.ts';
import { treeRss } from './workers/process-cpu.ts';
import {
  CFSSL_INSTALL_HINT,
  type CfsslOptions,
  type CfsslServer,
  findCfssl,
  startCfssl,
} from './workers/server-cfssl.ts';
import { type SigilServerProcess, serverHasWorkersFlag, startSigilServer } from './workers/server-process.ts';
import type { CfsslTarget, Sample, SigilTarget, SubjectSpec, ToClient } from './workers/server-protocol.ts';
import {
  clientCpuPerCall,
  interleavedRounds,
  medianOf,
  otherCores,
  type RoundsResult,
  rateOf,
  roundRatios,
  serverCpuPerCert,
} from './workers/server-rounds.ts';

export const description =
  'control plane end to end: Sign calls/s and server CPU per certificate (SQLite, mTLS) vs cfssl serve ' +
  'with TLS and its certificate DB, enrolments/s, 1 vs 2 workers, revocation propagation between two ' +
  'replicas on PostgreSQL';

const CONCURRENCY = 32;
/** Each subject's share of a round lasts at least this long, so slices are long enough to amortise their drain. */
const MIN_RUN_MS = 2000;
const MIN_WARMUP_MS = 1000;
/** Connections the scaling case spreads its calls over (both worker counts alike). */
const SCALING_CONNECTIONS = 8;
/** The box the per-certificate CPU cost is projected onto. */
const PROJECTED_CORES = 16;
const ENROL_BATCH = 400;
const ENROL_WARMUP = 100;
const REVOCATIONS = 200;
const REVOCATION_WARMUP = 10;
/** A revocation whose connection is still open after this long counts as this long (and is reported). */
const REVOCATION_TIMEOUT_MS = 5000;
/** The revocation loop stops early (and says so) after this long. */
const REVOCATION_BUDGET_MS = 90_000;
const CALL_DEADLINE_MS = 10_000;

/** Baseline names in the output. */
const CFSSL_DB = 'cfssl-tls-db';
const CFSSL_BARE = 'cfssl-no-db-plaintext';

const progress = (line: string) => process.stderr.write(`${line}\n`);

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const newLoadClient = () =>
  new LoadClient<ToClient, Sample>(new URL('./workers/server-client.ts', import.meta.url));

const targetOf = (server: SigilServerProcess): SigilTarget => ({
  address: server.info.listen,
  trustDomain: server.info.trustDomain,
  admin: server.admin(),
});

const micros = (value: number): string => `${Math.round(value).toLocaleString('en')} µs`;
const times = (value: number): string => `${value.toFixed(2)}×`;

async function startCfsslBaseline(name: string, options: CfsslOptions): Promise<CfsslServer | null> {
  const binary = findCfssl();
  if (binary === null) {
    progress(`  ${name}: skipped, no cfssl binary found; ${CFSSL_INSTALL_HINT}`);
    return null;
  }
  try {
    const cfssl = await startCfssl(binary, tempDir('sigil-bench-cfssl-'), options);
    progress(
      `  ${name}: ${binary} ${cfssl.version} serve on ${cfssl.url} (${cfssl.protocol}` +
        `${cfssl.databasePath ? `, certificate DB ${cfssl.databasePath} in WAL, synchronous=FULL` : ', no DB'}; ` +
        `default signing policy, -loglevel 2); probe certificate SANs: ${cfssl.probeSans}`,
    );
    if (!cfssl.probeSans.includes('URI:')) {
      progress(
        `  ${name}: note: this cfssl drops the CSR's URI SAN (it predates URI SAN support): it signs a little less`,
      );
    }
    return cfssl;
  } catch (error) {
    progress(
      `  ${name}: skipped, it did not start: ${error instanceof Error ? error.message : String(error)}`,
    );
    return null;
  }
}

const cfsslTarget = (cfssl: CfsslServer): CfsslTarget => ({
  url: cfssl.url,
  rootPem: cfssl.url.startsWith('https:') ? cfssl.rootPem : null,
});

/** The rate line, the per-round ratio line of each baseline, and the ratios' spread on stderr. */
function reportRates(
  report: Report,
  result: RoundsResult,
  caseName: string,
  metric: string,
  subject: string,
  baselines: readonly string[],
): void {
  report({
    case: caseName,
    metric,
    value: medianOf(result, subject, rateOf),
    baselines: Object.fromEntries(baselines.map((name) => [name, medianOf(result, name, rateOf)])),
  });
  for (const baseline of baselines) {
    const ratios = roundRatios(result, subject, baseline);
    progress(
      `  ${caseName}: ${subject} / ${baseline} per round: median ${times(ratios.median)} ` +
        `(${times(ratios.min)}–${times(ratios.max)}; ${ratios.all.map((r) => r.toFixed(2)).join(', ')})`,
    );
    report({ case: caseName, metric: `per_round_ratio_vs_${baseline}`, value: ratios.median, baselines: {} });
  }
}

/** Server CPU per certificate (median of rounds) of `subject` next to its baselines'. */
function reportServerCpu(
  report: Report,
  result: RoundsResult,
  caseName: string,
  subject: string,
  baselines: readonly string[],
): void {
  const value = medianOf(result, subject, serverCpuPerCert);
  const baselineValues = Object.fromEntries(
    baselines.map((name) => [name, medianOf(result, name, serverCpuPerCert)]),
  );
  progress(
    `  ${caseName}: server CPU per certificate ${subject} ${micros(value)}` +
      baselines.map((name) => `, ${name} ${micros(baselineValues[name])}`).join(''),
  );
  report({ case: caseName, metric: 'server_cpu_us_per_cert', value, baselines: baselineValues });
}

/** On paper: PROJECTED_CORES cores, all given to the server, divided by its CPU per certificate. */
function reportProjection(
  report: Report,
  result: RoundsResult,
  caseName: string,
  subject: string,
  baselines: readonly string[],
): void {
  const projected = (name: string): number =>
    (PROJECTED_CORES * 1_000_000) / medianOf(result, name, serverCpuPerCert);
  progress(
    `  ${caseName}: projection, not a measurement: ${PROJECTED_CORES} cores / server CPU per certificate = ` +
      `${Math.round(projected(subject))}/s for ${subject}` +
      baselines.map((name) => `, ${Math.round(projected(name))}/s for ${name}`).join('') +
      ' (assumes the load comes from elsewhere and the server scales linearly over its cores)',
  );
  report({
    case: caseName,
    metric: `projected_${PROJECTED_CORES}_core_signs_per_s`,
    value: projected(subject),
    baselines: Object.fromEntries(baselines.map((name) => [name, projected(name)])),
  });
}

/** cfssl wrote one row per certificate it signed (probe and warm-up included), or the bench says so. */
function checkCfsslRows(cfssl: CfsslServer, signed: number): void {
  const rows = cfssl.certificateRows();
  const expected = signed + 1; // the start-up probe
  const verdict = rows === expected ? 'every one recorded' : `MISMATCH: expected ${expected}`;
  progress(
    `  ${CFSSL_DB}: ${rows} rows in its certificates table after ${expected} certificates; ${verdict}`,
  );
}

async function signAndEnrolCases(report: Report, limits: Limits, cases: Set<string>): Promise<void> {
  const dataDir = tempDir('sigil-bench-server-');
  progress(
    `sigil server: SQLite in ${dataDir} (on disk, synchronous=FULL), the real command in its own process`,
  );
  const server = await startSigilServer(dataDir);
  progress(
    `  sigil server: ${treeRss(server.child.pid as number).processes} process(es) (its default --workers); ` +
      'the one connection lands on one of them',
  );
  const wantSign = cases.has('sign') || cases.has('sign-csr');
  const cfsslDb = wantSign ? await startCfsslBaseline(CFSSL_DB, { tls: true, database: true }) : null;
  const cfsslBare = wantSign ? await startCfsslBaseline(CFSSL_BARE, { tls: false, database: false }) : null;
  const client = newLoadClient();
  try {
    const subjects: Record<string, SubjectSpec> = {};
    const pids: Record<string, number> = {};
    const pid = server.child.pid as number;
    if (cases.has('sign') || cases.has('enrol')) {
      subjects['sigil-possession'] = { kind: 'sigil', server: 'main', path: 'possession', connections: 1 };
      pids['sigil-possession'] = pid;
    }
    if (cases.has('sign-csr')) {
      subjects['sigil-csr'] = { kind: 'sigil', server: 'main', path: 'csr', connections: 1 };
      pids['sigil-csr'] = pid;
    }
    const cfssl: Record<string, CfsslTarget> = {};
    for (const [name, baseline] of [
      [CFSSL_DB, cfsslDb],
      [CFSSL_BARE, cfsslBare],
    ] as const) {
      if (baseline === null) continue;
      cfssl[name] = cfsslTarget(baseline);
      subjects[name] = { kind: 'cfssl', server: name };
      pids[name] = baseline.pid;
    }
    await client.request({
      type: 'setup',
      sigil: { main: targetOf(server) },
      cfssl,
      subjects,
      concurrency: CONCURRENCY,
    });
    let signRate: number | null = null;
    if (Object.keys(pids).length > 0 && (wantSign || cases.has('enrol'))) {
      progress(
        `case sign: certificates/s and server CPU per certificate, ${CONCURRENCY} in flight from a separate ` +
          `process: ${Object.keys(pids).join(', ')} (each ≥ ${MIN_RUN_MS} ms a round in ${limits.slices} ` +
          `interleaved slices, ${limits.runs} rounds)`,
      );
      const result = await interleavedRounds(client, pids, limits, {
        minWarmupMs: MIN_WARMUP_MS,
        minRunMs: MIN_RUN_MS,
        progress,
      });
      if (cfsslDb) checkCfsslRows(cfsslDb, result.totalOps[CFSSL_DB]);
      const baselines = Object.keys(cfssl);
      const paths: [string, string][] = [];
      if (cases.has('sign')) paths.push(['sign', 'sigil-possession']);
      if (cases.has('sign-csr')) paths.push(['sign-csr', 'sigil-csr']);
      for (const [caseName, subject] of paths) {
        reportRates(report, result, caseName, 'signs_per_s', subject, baselines);
        reportServerCpu(report, result, caseName, subject, baselines);
        reportProjection(report, result, caseName, subject, baselines);
        const clientCpu = medianOf(result, subject, clientCpuPerCall);
        progress(
          `  ${caseName}: load client CPU per call ${micros(clientCpu)} ` +
            baselines
              .map((name) => `(${name}: ${micros(medianOf(result, name, clientCpuPerCall))})`)
              .join(' '),
        );
        report({
          case: caseName,
          metric: 'client_cpu_us_per_call',
          value: clientCpu,
          baselines: Object.fromEntries(
            baselines.map((name) => [name, medianOf(result, name, clientCpuPerCall)]),
          ),
        });
      }
      if (pids['sigil-possession'] !== undefined) signRate = medianOf(result, 'sigil-possession', rateOf);
    }
    if (cases.has('enrol')) {
      const batch = Math.max(1, Math.min(ENROL_BATCH, limits.maxOps));
      progress(
        `case enrol: auto-approve token with ${batch} uses, then ${batch} Register calls ` +
          `(fresh Ed25519 keys), ${CONCURRENCY} in flight; ${limits.runs} batches after a warm-up batch`,
      );
      const failures = new Failures();
      failures.note(
        'enrol',
        await client.sample({ type: 'enrol', server: 'main', count: ENROL_WARMUP, concurrency: CONCURRENCY }),
      );
      const rates: number[] = [];
      for (let run = 0; run < limits.runs; run++) {
        const sample = await client.sample({
          type: 'enrol',
          server: 'main',
          count: batch,
          concurrency: CONCURRENCY,
        });
        failures.note('enrol', sample);
        const rate = (sample.ops * 1000) / sample.ms;
        rates.push(rate);
        progress(
          `  run ${run + 1}/${limits.runs}: ${sample.ops} enrolled in ${sample.ms.toFixed(0)} ms, ${Math.round(rate)}/s`,
        );
      }
      failures.print(progress);
      report({
        case: 'enrol',
        metric: 'enrolments_per_s',
        value: median(rates),
        baselines: signRate === null ? {} : { 'sigil-sign': signRate },
      });
    }
    await client.request({ type: 'teardown' });
  } catch (error) {
    progress(`sigil server output:\n${server.output()}`);
    throw error;
  } finally {
    await client.close();
    await cfsslDb?.stop();
    await cfsslBare?.stop();
    await server.stop();
  }
}

// ------------------------------------------------------------ scaling

async function scalingCase(report: Report, limits: Limits): Promise<void> {
  if (!serverHasWorkersFlag()) {
    progress('case scaling: skipped: `sigil server --help` has no --workers flag in this tree');
    return;
  }
  const cores = availableParallelism();
  progress(
    `case scaling: sigil server --workers 1 vs --workers 2, Sign with proof of possession, ${CONCURRENCY} in ` +
      `flight over ${SCALING_CONNECTIONS} connections from one client process, on ${cores} cores`,
  );
  const servers: SigilServerProcess[] = [];
  const client = newLoadClient();
  try {
    const one = await startSigilServer(tempDir('sigil-bench-workers-1-'), ['--workers', '1']);
    servers.push(one);
    const two = await startSigilServer(tempDir('sigil-bench-workers-2-'), ['--workers', '2']);
    servers.push(two);
    const spec = (server: string): SubjectSpec => ({
      kind: 'sigil',
      server,
      path: 'possession',
      connections: SCALING_CONNECTIONS,
    });
    await client.request({
      type: 'setup',
      sigil: { one: targetOf(one), two: targetOf(two) },
      cfssl: {},
      subjects: { 'workers-1': spec('one'), 'workers-2': spec('two') },
      concurrency: CONCURRENCY,
    });
    const result = await interleavedRounds(
      client,
      { 'workers-1': one.child.pid as number, 'workers-2': two.child.pid as number },
      limits,
      { minWarmupMs: MIN_WARMUP_MS, minRunMs: MIN_RUN_MS, progress },
    );
    reportRates(report, result, 'scaling', 'signs_per_s', 'workers-2', ['workers-1']);
    reportServerCpu(report, result, 'scaling', 'workers-2', ['workers-1']);
    for (const subject of ['workers-1', 'workers-2']) {
      const server = medianOf(result, subject, serverCpuPerCert);
      const clientCpu = medianOf(result, subject, clientCpuPerCall);
      const ceiling = (cores * 1_000_000) / (server + clientCpu);
      const others = medianOf(result, subject, otherCores);
      const left = Math.max(0, cores - others);
      progress(
        `  scaling: ${subject}: server ${micros(server)} + client ${micros(clientCpu)} CPU per call: ` +
          `${cores} idle cores could carry at most ${Math.round(ceiling)}/s; other processes took ` +
          `${others.toFixed(2)} cores meanwhile, so the ${left.toFixed(2)} left carry at most ` +
          `${Math.round((left * 1_000_000) / (server + clientCpu))}/s; measured ` +
          `${Math.round(medianOf(result, subject, rateOf))}/s`,
      );
    }
    report({
      case: 'scaling',
      metric: 'client_cpu_us_per_call',
      value: medianOf(result, 'workers-2', clientCpuPerCall),
      baselines: { 'workers-1': medianOf(result, 'workers-1', clientCpuPerCall) },
    });
    const ceilingOf = (subject: string): number =>
      (cores * 1_000_000) /
      (medianOf(result, subject, serverCpuPerCert) + medianOf(result, subject, clientCpuPerCall));
    report({
      case: 'scaling',
      metric: 'cpu_ceiling_signs_per_s',
      value: ceilingOf('workers-2'),
      baselines: { 'workers-1': ceilingOf('workers-1') },
    });
    await client.request({ type: 'teardown' });
  } catch (error) {
    for (const server of servers) progress(`sigil server (${server.dataDir}) output:\n${server.output()}`);
    throw error;
  } finally {
    await client.close();
    for (const server of servers.reverse()) await server.stop();
  }
}

// ------------------------------------------------------------ revocation

/** One call with the bench's deadline (sigil's own client helper). */
const call = <Request, Response>(
  client: object,
  method: UnaryMethod<Request, Response>,
  request: Request,
): Promise<Response> =>
  unary(client, method, request, { target: 'the bench server', timeoutMs: CALL_DEADLINE_MS });

function fingerprintOf(certificatePem: string): string {
  return createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex');
}

interface Victim {
  readonly serial: string;
  readonly material: TlsMaterial;
}

/** Client certificates issued by A (Sign, admin): leaf + A's intermediate, trusting the root. */
async function issueVictims(
  ca: CertificateAuthorityClient,
  admin: TlsMaterial,
  count: number,
): Promise<Victim[]> {
  const adminFingerprint = fingerprintOf(admin.certificateChain);
  const issueOne = async (i: number): Promise<Victim> => {
    const keys = generateKeyPair('p256');
    const issued: IssuedCertificate = await call(ca, ca.sign, {
      key: { $case: 'possession', value: possessionFor(keys.privateKey, signChallenge(adminFingerprint)) },
      profile: 'client',
      commonName: `victim-${i}`,
      dnsNames: [],
      ipAddresses: [],
      uris: [],
      ttlSeconds: 0,
    });
    return {
      serial: issued.serial,
      material: {
        certificateChain: [issued.certificate, ...issued.chain]
          .map((der) => encodePem('CERTIFICATE', der))
          .join(''),
        privateKey: privateKeyToPem(keys.privateKey),
        trustBundle: admin.trustBundle,
      },
    };
  };
  const victims: Victim[] = [];
  for (let start = 0; start < count; start += 16) {
    const batch = Array.from({ length: Math.min(16, count - start) }, (_, k) => issueOne(start + k));
    victims.push(...(await Promise.all(batch)));
  }
  return victims;
}

interface OpenConnection {
  /** Resolves with performance.now() when the client's socket closes. */
  readonly closed: Promise<number>;
  destroy(): void;
}

/**
 * An mTLS HTTP/2 connection to `address` with the victim's certificate, and
 * one gRPC call (CertificateAuthority/GetTrustBundle, empty request) that
 * must succeed: the server has accepted and authorized this certificate.
 */
async function connectVictim(address: string, victim: Victim): Promise<OpenConnection> {
  const [host, portText] = [
    address.slice(0, address.lastIndexOf(':')),
    address.slice(address.lastIndexOf(':') + 1),
  ];
  const socket = tls.connect({
    host,
    port: Number(portText),
    cert: victim.material.certificateChain,
    key: victim.material.privateKey,
    ca: victim.material.trustBundle,
    minVersion: 'TLSv1.3',
    ALPNProtocols: ['h2'],
  });
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())));
  const session = http2.connect(`https://${address}`, { createConnection: () => socket });
  session.on('error', () => {}); // the server closing the connection is the point
  socket.on('error', () => {});
  const status = await new Promise<string>((resolve, reject) => {
    const stream = session.request({
      ':method': 'POST',
      ':path': '/sigil.v1.CertificateAuthority/GetTrustBundle',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    let grpcStatus: string | undefined;
    stream.on('response', (headers) => {
      if (headers['grpc-status'] !== undefined) grpcStatus = String(headers['grpc-status']);
    });
    stream.on('trailers', (trailers) => {
      grpcStatus = String(trailers['grpc-status']);
    });
    stream.on('data', () => {});
    stream.on('end', () => resolve(grpcStatus ?? 'none'));
    stream.on('error', reject);
    stream.setTimeout(CALL_DEADLINE_MS, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.end(Buffer.alloc(5)); // a gRPC frame: not compressed, length 0
  });
  if (status !== '0') {
    session.destroy();
    throw new Error(`the victim's probe call on the other replica failed with gRPC status ${status}`);
  }
  return { closed, destroy: () => session.destroy() };
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

async function revokePropagationCase(report: Report, limits: Limits): Promise<void> {
  const unavailable = postgresUnavailable();
  if (unavailable !== null) {
    progress(`case revoke-propagation: skipped: ${unavailable}`);
    return;
  }
  const count = Math.max(1, Math.min(REVOCATIONS, limits.maxOps));
  progress(
    `case revoke-propagation: two replicas on PostgreSQL (fsync on); Revoke on A → the client's connection to B closes; ` +
      `${count} revocations after ${REVOCATION_WARMUP} untimed ones`,
  );
  const postgres = await startPostgres({ fsync: true });
  const servers: SigilServerProcess[] = [];
  const grpcClients: grpc.Client[] = [];
  try {
    const a = await startSigilServer(tempDir('sigil-bench-replica-a-'), ['--store', postgres.url]);
    servers.push(a);
    const admin = a.admin();
    const credentials = channelCredentials({ material: new StaticMaterialSource(admin) });
    const adminClient = new AdminClient(a.info.listen, credentials);
    const ca = new CertificateAuthorityClient(a.info.listen, credentials);
    grpcClients.push(adminClient, ca);
    const { token } = await call(adminClient, adminClient.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: false,
      name: 'bench replica b',
      replica: true,
    });
    const b = await startSigilServer(tempDir('sigil-bench-replica-b-'), [
      '--store',
      postgres.url,
      '--join',
      token,
    ]);
    servers.push(b);
    progress(
      `  replica A ${a.info.replicaId} on ${a.info.listen}, replica B ${b.info.replicaId} on ${b.info.listen}`,
    );

    const victims = await issueVictims(ca, admin, REVOCATION_WARMUP + count);
    const propagation: number[] = [];
    const rpc: number[] = [];
    let timeouts = 0;
    const started = performance.now();
    for (let i = 0; i < victims.length; i++) {
      if (performance.now() - started > REVOCATION_BUDGET_MS) {
        progress(
          `  stopped after ${propagation.length} timed revocations: the ${REVOCATION_BUDGET_MS / 1000} s budget is spent`,
        );
        break;
      }
      const victim = victims[i];
      const connection = await connectVictim(b.info.listen, victim);
      const t0 = performance.now();
      let rpcDone = Number.NaN;
      const revoked = call(ca, ca.revoke, { serial: victim.serial, reason: 'keyCompromise' }).then(() => {
        rpcDone = performance.now();
      });
      let timer: NodeJS.Timeout | undefined;
      const closedAt = await Promise.race([
        connection.closed,
        new Promise<null>((resolve) => {
          timer = setTimeout(() => resolve(null), REVOCATION_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
      await revoked;
      connection.destroy();
      if (i < REVOCATION_WARMUP) continue;
      if (closedAt === null) {
        timeouts++;
        propagation.push(REVOCATION_TIMEOUT_MS);
      } else propagation.push(closedAt - t0);
      rpc.push(rpcDone - t0);
    }
    const sorted = [...propagation].sort((x, y) => x - y);
    const rpcSorted = [...rpc].sort((x, y) => x - y);
    const p50 = percentile(sorted, 0.5);
    const p99 = percentile(sorted, 0.99);
    progress(
      `  ${sorted.length} revocations: connection closed on B after p50 ${p50.toFixed(1)} ms, ` +
        `p99 ${p99.toFixed(1)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms; ` +
        `the Revoke call on A itself took p50 ${percentile(rpcSorted, 0.5).toFixed(1)} ms, ` +
        `p99 ${percentile(rpcSorted, 0.99).toFixed(1)} ms` +
        (timeouts > 0
          ? `; ${timeouts} connections still open after ${REVOCATION_TIMEOUT_MS} ms (counted as that)`
          : ''),
    );
    report({ case: 'revoke-propagation', metric: 'p99_ms', value: p99, baselines: { target: 200 } });
    report({ case: 'revoke-propagation', metric: 'p50_ms', value: p50, baselines: { target: 200 } });
  } catch (error) {
    for (const server of servers) progress(`sigil server (${server.dataDir}) output:\n${server.output()}`);
    throw error;
  } finally {
    for (const client of grpcClients) client.close();
    for (const server of servers.reverse()) await server.stop();
    await postgres.stop();
  }
}

const ALL_CASES = ['sign', 'sign-csr', 'enrol', 'scaling', 'revoke-propagation'];

/** SIGIL_BENCH_CASES=sign,enrol runs only those cases (all by default). */
function selectedCases(): Set<string> {
  const text = process.env.SIGIL_BENCH_CASES;
  if (text === undefined || text.trim() === '') return new Set(ALL_CASES);
  const chosen = text.split(',').map((name) => name.trim());
  const unknown = chosen.filter((name) => !ALL_CASES.includes(name));
  if (unknown.length > 0) {
    throw new Error(`SIGIL_BENCH_CASES: unknown case ${unknown.join(', ')} (cases: ${ALL_CASES.join(', ')})`);
  }
  return new Set(chosen);
}

export async function run(report: Report, limits: Limits): Promise<void> {
  const cases = selectedCases();
  if (cases.has('sign') || cases.has('sign-csr') || cases.has('enrol'))
    await signAndEnrolCases(report, limits, cases);
  if (cases.has('scaling')) await scalingCase(report, limits);
  if (cases.has('revoke-propagation')) await revokePropagationCase(report, limits);
}
