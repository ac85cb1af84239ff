// The control plane end to end: the real `sigil server` command in its own
// process, load from another process (bench/workers/server-client.ts), so on
// a two-core machine the server and the client each get a core.
//
//   sign       Sign calls/s over mTLS, durable SQLite (WAL, synchronous=FULL,
//              in a temporary directory on disk), 32 calls in flight on one
//              channel, admin identity; SPKI + proof of possession (the fast
//              path). Baseline: cfssl's `cfssl serve` (Debian golang-cfssl)
//              POST /api/v1/cfssl/sign, the same kind of CSR (P-256, a DNS SAN
//              and a SPIFFE URI SAN), 32 requests in flight on keep-alive
//              connections from the same client process. Targets: ≥ 4,000/s
//              and ≥ 4× cfssl.
//   sign-csr   The same with a PKCS#10 CSR instead of SPKI + proof (the very
//              CSR bytes cfssl gets), against the same cfssl figure.
//   enrol      Enrolment.Register calls/s: an auto-approve join token with N
//              uses, then N Register calls (fresh Ed25519 keys, one proof
//              each; 32 in flight, server-authenticated TLS like a new node),
//              each ending UP with a certificate. Baseline: sigil's own Sign
//              (SPKI) rate from the same run, the cheapest issuance there is.
//   revoke-propagation
//              Two replicas on one PostgreSQL (fsync on): A bootstraps, B
//              joins with a replica token. A client holding a certificate
//              issued by A keeps an mTLS connection to B; Revoke on A; time
//              until the client's socket is closed by B. p50 and p99 of 200
//              revocations (after 10 untimed ones). Target p99 ≤ 200 ms.
//
// Client-side key work (P-256 keys, CSRs, proofs; Ed25519 keys and proofs) is
// done before the timed part, for sigil and cfssl alike. Rates are medians of
// interleaved runs (each run split into slices alternating between subjects).
// Targets are information only, never asserted. SIGIL_BENCH_CASES=sign,enrol
// runs a subset; without cfssl the sign lines have no baseline.

import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
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
import { compareRemote, Failures } from './remote-compare.ts';
import { LoadClient } from './workers/load-client.ts';
import { CFSSL_INSTALL_HINT, type CfsslServer, findCfssl, startCfssl } from './workers/server-cfssl.ts';
import { type SigilServerProcess, startSigilServer } from './workers/server-process.ts';
import type { Sample, SignSubject, ToClient } from './workers/server-protocol.ts';

export const description =
  'control plane end to end: Sign calls/s (SQLite, mTLS) vs cfssl serve, enrolments/s, ' +
  'revocation propagation between two replicas on PostgreSQL';

const CONCURRENCY = 32;
/** Each run of the sign case lasts at least this long, so slices are long enough to amortise their drain. */
const MIN_RUN_MS = 2000;
const MIN_WARMUP_MS = 1000;
const ENROL_BATCH = 400;
const ENROL_WARMUP = 100;
const REVOCATIONS = 200;
const REVOCATION_WARMUP = 10;
/** A revocation whose connection is still open after this long counts as this long (and is reported). */
const REVOCATION_TIMEOUT_MS = 5000;
/** The revocation loop stops early (and says so) after this long. */
const REVOCATION_BUDGET_MS = 90_000;
const CALL_DEADLINE_MS = 10_000;

const progress = (line: string) => process.stderr.write(`${line}\n`);

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const newLoadClient = () =>
  new LoadClient<ToClient, Sample>(new URL('./workers/server-client.ts', import.meta.url));

async function startCfsslBaseline(): Promise<CfsslServer | null> {
  const binary = findCfssl();
  if (binary === null) {
    progress(`  cfssl: skipped, no cfssl binary found; ${CFSSL_INSTALL_HINT}`);
    return null;
  }
  try {
    const cfssl = await startCfssl(binary, tempDir('sigil-bench-cfssl-'));
    progress(
      `  cfssl: ${binary} ${cfssl.version} serve on ${cfssl.url} (default signing policy, -loglevel 2); ` +
        `probe certificate SANs: ${cfssl.probeSans}`,
    );
    if (!cfssl.probeSans.includes('URI:')) {
      progress(
        "  cfssl: note: this cfssl drops the CSR's URI SAN (it predates URI SAN support): it signs a little less",
      );
    }
    return cfssl;
  } catch (error) {
    progress(`  cfssl: skipped, it did not start: ${error instanceof Error ? error.message : String(error)}`);
    return null;
  }
}

async function signAndEnrolCases(report: Report, limits: Limits, cases: Set<string>): Promise<void> {
  const dataDir = tempDir('sigil-bench-server-');
  progress(
    `sigil server: SQLite in ${dataDir} (on disk, synchronous=FULL), the real command in its own process`,
  );
  const server = await startSigilServer(dataDir);
  const wantSign = cases.has('sign') || cases.has('sign-csr') || cases.has('enrol');
  const cfssl = cases.has('sign') || cases.has('sign-csr') ? await startCfsslBaseline() : null;
  const client = newLoadClient();
  try {
    await client.request({
      type: 'setup',
      sigil: { address: server.info.listen, trustDomain: server.info.trustDomain, admin: server.admin() },
      cfsslUrl: cfssl?.url ?? null,
      concurrency: CONCURRENCY,
    });
    let signRate: number | null = null;
    if (wantSign) {
      const subjects: SignSubject[] = ['sigil-spki'];
      if (cases.has('sign-csr')) subjects.push('sigil-csr');
      if (cfssl) subjects.push('cfssl');
      progress(
        `case sign: certificates/s, ${CONCURRENCY} in flight from a separate process: ${subjects.join(', ')} ` +
          `(each run ≥ ${MIN_RUN_MS} ms in ${limits.slices} interleaved slices)`,
      );
      const rates = await compareRemote(client, subjects, limits, {
        minWarmupMs: MIN_WARMUP_MS,
        minRunMs: MIN_RUN_MS,
        progress,
      });
      signRate = rates['sigil-spki'];
      const baselines: Record<string, number> = cfssl ? { 'cfssl-serve': rates.cfssl } : {};
      if (cases.has('sign')) report({ case: 'sign', metric: 'signs_per_s', value: signRate, baselines });
      if (cases.has('sign-csr'))
        report({ case: 'sign-csr', metric: 'signs_per_s', value: rates['sigil-csr'], baselines });
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
        await client.sample({ type: 'enrol', count: ENROL_WARMUP, concurrency: CONCURRENCY }),
      );
      const rates: number[] = [];
      for (let run = 0; run < limits.runs; run++) {
        const sample = await client.sample({ type: 'enrol', count: batch, concurrency: CONCURRENCY });
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
    await cfssl?.stop();
    await server.stop();
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

const ALL_CASES = ['sign', 'sign-csr', 'enrol', 'revoke-propagation'];

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
  if (cases.has('revoke-propagation')) await revokePropagationCase(report, limits);
}
