// x509-limbo (C2SP, with Netflix BetterTLS) through sigil's own verification,
// client side and server side, with sigil's defaults ("strict") and with the
// opt-outs that restore what sigil did before ("legacy": strictChain: false
// and verifyServerName's nodeCheckServerIdentity).
//
// What it runs. Path validation is always OpenSSL's (DESIGN.md); sigil's
// checks run on the chain OpenSSL verified:
// - A case with a private key for its peer certificate, whose certificates
//   mean the same now as at its validation_time and that has no CRL, is a
//   real TLS 1.3 handshake on 127.0.0.1: SERVER cases through sigil's
//   channelCredentials (its connector, over a plain Node TLS server presenting
//   the case's chain), CLIENT cases through sigil's MtlsServer (a plain Node
//   TLS client presenting it). Once with the defaults, once with the opt-outs.
//   (Node refuses to load a few peer keys at all; those go to openssl.)
// - Every other case goes to the `openssl verify` CLI with what Node's TLS
//   uses by default (not -x509_strict; -purpose sslserver/sslclient, security
//   level 2 as -auth_level, -attime for validation_time, -untrusted for the
//   intermediates, -CRLfile with -crl_check_all for CRLs) and no name, so
//   OpenSSL validates the path only; -show_chain names the chain it built
//   (subjects printed as Node prints them), and sigil's name and strictness
//   checks run in-process on exactly that chain (its certificates found again
//   by subject, then by signature). BetterTLS's name-constraint cases share a
//   trust anchor and never share an intermediate's name, so they go to
//   openssl in batches of BATCH leaves (one -untrusted file holding the
//   batch's intermediates); every other case is one openssl process. The
//   processes are started by availableParallelism() `sh` scripts.
// - For the server side beyond the 10 CLIENT cases, every SERVER chain
//   OpenSSL accepted is also checked as MtlsServer would see it as a client
//   chain: the leaf and the trusted CAs, no intermediates (a printed figure).
// Every case of the corpus runs (no sampling); nothing is excluded, and the
// diagnostics say how many went which way. About 30 s on 2 idle cores.
//
// What it asserts. The diagnostics print agreement with each case's
// expected_result and with OpenSSL 3.0.19's recorded answers (strict flags),
// for both modes. The test fails when a case in limbo-refused.json is
// accepted again (the non-BetterTLS cases expected to fail that sigil
// refuses, and the BetterTLS ones only the strict checks refuse), or a case
// in limbo-accepted.json (every case expected to succeed that sigil accepts)
// is refused. SIGIL_LIMBO_WRITE_LISTS=1 rewrites both lists from a run;
// SIGIL_LIMBO_DUMP=<file> writes every case's outcome and reason as JSON.
//
// The corpus lives outside the repository, in ../shared/testdata/x509-limbo/
// from the repository root (SIGIL_LIMBO_DIR overrides it); without it (or
// without openssl) the test is skipped and says why.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, test } from 'node:test';
import tls, { type PeerCertificate } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { checkChainStrictness } from '../../src/transport/chain-strictness.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { type ServerVerification, verifyServerName } from '../../src/transport/server-verification.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';

const here = dirname(fileURLToPath(import.meta.url));
const repositoryRoot = resolve(here, '../..');
const LIMBO_DIR = process.env.SIGIL_LIMBO_DIR ?? resolve(repositoryRoot, '../shared/testdata/x509-limbo');
const REFUSED_LIST = join(here, 'limbo-refused.json');
const ACCEPTED_LIST = join(here, 'limbo-accepted.json');
const WRITE_LISTS = process.env.SIGIL_LIMBO_WRITE_LISTS === '1';
/** Leaves per openssl process for the batched BetterTLS cases (each batch is judged in one go: keep it short). */
const BATCH = 100;
/** Handshakes in flight at once. */
const HANDSHAKES_IN_FLIGHT = 4;
/** Node's TLS runs at OpenSSL security level 2 (it refuses a 1024-bit RSA leaf); so does `openssl verify` here. */
const AUTH_LEVEL = '2';
/** How `openssl verify -show_chain` prints names: the format of Node's X509Certificate.subject. */
const NAME_OPTIONS = 'esc_2253,esc_ctrl,utf8,sep_multiline,sname';

interface PeerName {
  readonly kind: 'DNS' | 'IP' | 'RFC822';
  readonly value: string;
}

interface LimboCase {
  readonly id: string;
  readonly features: readonly string[];
  readonly validation_kind: 'SERVER' | 'CLIENT';
  readonly trusted_certs: readonly string[];
  readonly untrusted_intermediates: readonly string[];
  readonly peer_certificate: string;
  readonly peer_certificate_key: string | null;
  readonly validation_time: string | null;
  readonly expected_result: 'SUCCESS' | 'FAILURE';
  readonly expected_peer_name: PeerName | null;
  readonly max_chain_depth: number | null;
  readonly crls: readonly string[];
}

type Mode = 'strict' | 'legacy';
const MODES: readonly Mode[] = ['strict', 'legacy'];

interface Outcome {
  readonly accepted: boolean;
  /** Why it was refused: OpenSSL's error, sigil's message, or a handshake error. */
  readonly reason: string;
}

interface CaseResult {
  readonly limbo: LimboCase;
  readonly via: 'handshake' | 'openssl';
  readonly outcomes: Record<Mode, Outcome>;
  /** The peer's leaf, DER, when OpenSSL accepted the path (sigil's checks then decided). */
  readonly verifiedLeaf?: Buffer;
}

function skipReason(): string | undefined {
  if (!existsSync(join(LIMBO_DIR, 'limbo.json.gz'))) {
    return `x509-limbo corpus not found at ${LIMBO_DIR} (../shared/testdata/x509-limbo from the repository root)`;
  }
  if (spawnSync('openssl', ['version']).status !== 0) return 'the openssl CLI is not installed';
  return undefined;
}

const reason = skipReason();
if (reason !== undefined) console.log(`# x509-limbo skipped: ${reason}`);

// One throwaway sigil CA: the client's own certificate for channelCredentials
// (the limbo servers never ask for it) and MtlsServer's certificate.
const sigilCa = reason === undefined ? EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'] }) : null;
// Thousands of small files: on tmpfs when there is one (ten times faster to write here).
const scratch = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const workDir = reason === undefined ? mkdtempSync(join(scratch, 'sigil-limbo-')) : null;
after(() => {
  sigilCa?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

test('x509-limbo through sigil, client and server side', { skip: reason, timeout: 240_000 }, async (t) => {
  const started = Date.now();
  const corpus = JSON.parse(gunzipSync(readFileSync(join(LIMBO_DIR, 'limbo.json.gz'))).toString('utf8')) as {
    testcases: LimboCase[];
  };
  const recorded = new Map<string, string>();
  const recordedPath = join(LIMBO_DIR, 'results-openssl-3.0.19.json.gz');
  if (existsSync(recordedPath)) {
    const results = JSON.parse(gunzipSync(readFileSync(recordedPath)).toString('utf8')) as {
      results: { id: string; actual_result: string }[];
    };
    for (const r of results.results) recorded.set(r.id, r.actual_result);
  }
  const cases = corpus.testcases;

  const handshakeCases = cases.filter(canHandshake);
  const opensslCases = cases.filter((c) => !canHandshake(c));
  const results = new Map<string, CaseResult>();
  const notes = new Map<string, number>();
  const note = (what: string): void => {
    notes.set(what, (notes.get(what) ?? 0) + 1);
  };

  // The handshakes and the openssl processes run at the same time: one is
  // mostly waiting on the event loop, the other on child processes.
  await Promise.all([
    pool(handshakeCases, HANDSHAKES_IN_FLIGHT, async (limbo) => {
      const t0 = Date.now();
      const result = await runHandshakes(limbo, note);
      if (Date.now() - t0 > 300) console.log('SLOW', limbo.id, Date.now() - t0);
      results.set(limbo.id, result);
    }),
    runOpenssl(opensslCases, note).then((batch) => {
      console.log('OPENSSL DONE', Date.now() - started);
      for (const result of batch) results.set(result.limbo.id, result);
    }),
  ]);
  assert.equal(results.size, cases.length, 'every case has a result');

  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const byVia = (via: string) => [...results.values()].filter((r) => r.via === via).length;
  t.diagnostic(
    `x509-limbo: ${cases.length} cases in ${seconds} s: ${byVia('handshake')} as TLS 1.3 handshakes ` +
      `through sigil, ${byVia('openssl')} through openssl verify + sigil's checks in-process; none excluded`,
  );
  for (const [what, count] of [...notes].sort()) t.diagnostic(`  ${count} ${what}`);
  for (const mode of MODES) {
    for (const line of summary(mode, [...results.values()], recorded)) t.diagnostic(line);
  }
  for (const line of serverSide([...results.values()])) t.diagnostic(line);

  if (process.env.SIGIL_LIMBO_DUMP) {
    const rows = [...results.values()].map((r) => ({
      id: r.limbo.id,
      expected: r.limbo.expected_result,
      via: r.via,
      strict: r.outcomes.strict,
      legacy: r.outcomes.legacy,
    }));
    writeFileSync(process.env.SIGIL_LIMBO_DUMP, `${JSON.stringify(rows, null, 1)}\n`);
  }
  const strictOutcome = (id: string): Outcome | undefined => results.get(id)?.outcomes.strict;
  if (WRITE_LISTS) {
    const refused = [...results.values()]
      .filter((r) => r.limbo.expected_result === 'FAILURE' && !r.outcomes.strict.accepted)
      .filter((r) => !r.limbo.id.startsWith('bettertls::') || r.outcomes.legacy.accepted)
      .map((r) => r.limbo.id);
    const accepted = [...results.values()]
      .filter((r) => r.limbo.expected_result === 'SUCCESS' && r.outcomes.strict.accepted)
      .map((r) => r.limbo.id);
    writeFileSync(REFUSED_LIST, `${JSON.stringify(refused.sort(), null, 2)}\n`);
    writeFileSync(ACCEPTED_LIST, `${JSON.stringify(accepted.sort(), null, 2)}\n`);
    t.diagnostic(`wrote ${refused.length} IDs to ${REFUSED_LIST} and ${accepted.length} to ${ACCEPTED_LIST}`);
    return;
  }
  const mustRefuse = JSON.parse(readFileSync(REFUSED_LIST, 'utf8')) as string[];
  const mustAccept = JSON.parse(readFileSync(ACCEPTED_LIST, 'utf8')) as string[];
  assert.ok(mustRefuse.length > 0 && mustAccept.length > 0, 'both lists hold cases');
  const acceptedAgain = mustRefuse.filter((id) => strictOutcome(id)?.accepted !== false);
  const refusedNow = mustAccept
    .filter((id) => strictOutcome(id)?.accepted !== true)
    .map((id) => `${id}: ${strictOutcome(id)?.reason ?? 'not in the corpus'}`);
  assert.deepEqual(acceptedAgain, [], 'cases sigil refused (limbo-refused.json) are accepted again');
  assert.deepEqual(refusedNow, [], 'cases sigil accepted (limbo-accepted.json) are refused now');
});

// ---------------------------------------------------------------------------
// Which route a case takes.

function certificateTimes(pem: string): { from: number; to: number } {
  const x = new X509Certificate(pem);
  return { from: new Date(x.validFrom).getTime(), to: new Date(x.validTo).getTime() };
}

/** A real handshake checks at the current time: only cases whose certificates read the same now qualify. */
function canHandshake(limbo: LimboCase): boolean {
  if (limbo.peer_certificate_key === null || limbo.crls.length > 0) return false;
  if (limbo.validation_time === null) return true;
  const then = new Date(limbo.validation_time).getTime();
  const now = Date.now();
  // One minute of margin either side of "now": the handshake happens a little later.
  const validAt = (times: { from: number; to: number }, at: number, margin: number) =>
    times.from <= at - margin && at + margin <= times.to;
  return [limbo.peer_certificate, ...limbo.untrusted_intermediates, ...limbo.trusted_certs].every((pem) => {
    const times = certificateTimes(pem);
    const nowValid = validAt(times, now, 60_000);
    const nowInvalid = !validAt(times, now, -60_000);
    return (nowValid || nowInvalid) && nowValid === validAt(times, then, 0);
  });
}

// ---------------------------------------------------------------------------
// Route 1: real TLS 1.3 handshakes through sigil.

const anyName: ServerVerification = { description: 'no name (the case names none)', check: () => undefined };

function recordingLeaf(verification: ServerVerification, verified: { leaf?: Buffer }): ServerVerification {
  return {
    description: verification.description,
    check(server) {
      verified.leaf = server.certificate.raw;
      return verification.check(server);
    },
  };
}

async function runHandshakes(limbo: LimboCase, note: (what: string) => void): Promise<CaseResult> {
  const outcomes = {} as Record<Mode, Outcome>;
  const verified: { leaf?: Buffer } = {};
  for (const mode of MODES) {
    const outcome =
      limbo.validation_kind === 'SERVER'
        ? await asClient(limbo, mode, verified)
        : await asServer(limbo, mode);
    if (outcome === undefined) {
      // Node would not load this material at all: let openssl judge the chain instead.
      note('handshake cases went to openssl instead: Node refuses to load the peer certificate or key');
      const [result] = await runOpenssl([limbo], note);
      return result;
    }
    outcomes[mode] = outcome;
  }
  return { limbo, via: 'handshake', outcomes, ...(verified.leaf ? { verifiedLeaf: verified.leaf } : {}) };
}

/** SERVER cases: sigil's channelCredentials connects to a Node TLS server presenting the case's chain. */
async function asClient(
  limbo: LimboCase,
  mode: Mode,
  verified: { leaf?: Buffer },
): Promise<Outcome | undefined> {
  let server: tls.Server;
  try {
    server = tls.createServer({
      key: limbo.peer_certificate_key ?? '',
      cert: [limbo.peer_certificate, ...limbo.untrusted_intermediates].join('\n'),
      minVersion: 'TLSv1.3',
    });
  } catch {
    return undefined;
  }
  server.on('tlsClientError', () => {});
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const port = (server.address() as { port: number }).port;
  try {
    const client = sigilCa?.issueClient('limbo');
    assert.ok(client);
    let material: StaticMaterialSource;
    try {
      material = new StaticMaterialSource({
        certificateChain: client.certificateChain,
        privateKey: client.privateKey,
        trustBundle: limbo.trusted_certs.join('\n'),
      });
    } catch (error) {
      return { accepted: false, reason: `sigil refuses the trust bundle: ${message(error)}` };
    }
    const name = limbo.expected_peer_name;
    const credentials = channelCredentials({
      material,
      serverName: name?.value ?? 'localhost',
      ...(mode === 'legacy'
        ? {
            strictChain: false,
            // Node runs this only once OpenSSL has accepted the path: note the leaf then.
            verify: recordingLeaf(
              name ? verifyServerName(undefined, { nodeCheckServerIdentity: true }) : anyName,
              verified,
            ),
          }
        : {
            ...(name ? {} : { verify: anyName }),
            ...(limbo.max_chain_depth !== null
              ? { strictChain: { maxChainDepth: limbo.max_chain_depth } }
              : {}),
          }),
    });
    const connector = credentials._createSecureConnector({ scheme: 'dns', path: `127.0.0.1:${port}` }, {});
    const socket = netConnect(port, '127.0.0.1');
    await new Promise<void>((done, fail) => {
      socket.once('connect', done);
      socket.once('error', fail);
    });
    try {
      // Generous: a loaded machine, or a pathological case's verification, can hold the event loop for seconds.
      const connected = await withTimeout(connector.connect(socket), 60_000);
      connected.socket.destroy();
      return { accepted: true, reason: '' };
    } catch (error) {
      socket.destroy();
      return { accepted: false, reason: message(error) };
    }
  } finally {
    server.close();
  }
}

/** CLIENT cases: a Node TLS client presents the case's chain to sigil's MtlsServer. */
async function asServer(limbo: LimboCase, mode: Mode): Promise<Outcome | undefined> {
  const serverLeaf = sigilCa?.issueServer();
  assert.ok(serverLeaf && sigilCa);
  let material: StaticMaterialSource;
  try {
    material = new StaticMaterialSource({
      certificateChain: serverLeaf.certificateChain,
      privateKey: serverLeaf.privateKey,
      trustBundle: limbo.trusted_certs.join('\n'),
    });
  } catch (error) {
    return { accepted: false, reason: `sigil refuses the trust bundle: ${message(error)}` };
  }
  const failures: string[] = [];
  const server = new MtlsServer({
    material,
    ...(mode === 'legacy' ? { strictChain: false } : {}),
    onHandshakeError: (failure) => failures.push(`${failure.reason}: ${failure.message}`),
    onError: () => {},
  });
  const port = await server.listen('127.0.0.1', 0);
  try {
    let client: tls.TLSSocket;
    try {
      client = tls.connect({
        host: '127.0.0.1',
        port,
        key: limbo.peer_certificate_key ?? '',
        cert: [limbo.peer_certificate, ...limbo.untrusted_intermediates].join('\n'),
        ca: sigilCa.chainPem(),
        servername: 'localhost',
        minVersion: 'TLSv1.3',
        ALPNProtocols: ['h2'],
      });
    } catch {
      return undefined;
    }
    client.on('error', () => {});
    await new Promise<void>((done) => {
      client.once('secureConnect', done);
      client.once('close', done);
    });
    // The server decides once it has the client's Finished: it either records
    // the connection or reports a handshake failure.
    const localPort = client.localPort;
    for (let waited = 0; waited < 30_000; waited += 5) {
      if (failures.length > 0) break;
      if (server.connections.list().some((c) => c.remotePort === localPort)) break;
      if (client.destroyed && waited > 500) break;
      await new Promise((done) => setTimeout(done, 5));
    }
    const accepted =
      failures.length === 0 && server.connections.list().some((c) => c.remotePort === localPort);
    client.destroy();
    return { accepted, reason: accepted ? '' : (failures[0] ?? 'the server closed the connection') };
  } finally {
    await server.close(0);
  }
}

// ---------------------------------------------------------------------------
// Route 2: `openssl verify` validates the path, sigil's checks run on its chain.

interface OpensslJob {
  readonly cases: readonly LimboCase[];
  /** Its own directory: the input files, and openssl's stdout and stderr. */
  readonly dir: string;
  /** The leaf files, in the order of `cases`. */
  readonly files: readonly string[];
  /** The shell command line that runs openssl there. */
  readonly command: string;
}

interface OpensslVerdict {
  readonly ok: boolean;
  /** The chain openssl printed: subject text and whether it came from the untrusted set. */
  readonly chain: readonly { subject: string; untrusted: boolean }[];
  readonly error: string;
}

/**
 * Every case through `openssl verify`. The openssl processes are started by
 * a few `sh` processes reading a script each (forking this large Node
 * process hundreds of times costs more than the verification); each script
 * line prints its job number when done, and the job is judged then.
 */
async function runOpenssl(cases: readonly LimboCase[], note: (what: string) => void): Promise<CaseResult[]> {
  const single: LimboCase[][] = [];
  const groups = new Map<string, LimboCase[]>();
  for (const limbo of cases) {
    if (limbo.id.startsWith('bettertls::nameconstraints::') && limbo.crls.length === 0) {
      const key = [limbo.validation_kind, limbo.validation_time, ...limbo.trusted_certs].join('\0');
      let group = groups.get(key);
      if (!group) {
        group = [];
        groups.set(key, group);
      }
      group.push(limbo);
    } else {
      single.push([limbo]);
    }
  }
  const batches: LimboCase[][] = [];
  for (const group of groups.values()) {
    for (let i = 0; i < group.length; i += BATCH) batches.push(group.slice(i, i + BATCH));
  }
  const jobs = [...batches, ...single].map(prepareJob);
  const workers = Math.max(1, Math.min(availableParallelism(), jobs.length));
  const results: CaseResult[] = [];
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      // Round-robin, batches first, so the workers finish together.
      const mine = jobs.filter((_, index) => index % workers === worker);
      assert.ok(workDir);
      const script = join(workDir, `worker-${jobCounter++}.sh`);
      writeFileSync(script, mine.map((job, index) => `${job.command}; echo ${index}\n`).join(''));
      await runScript(script, (index) => {
        const job = mine[index];
        const stdout = readFileSync(join(job.dir, 'stdout'), 'utf8');
        const stderr = readFileSync(join(job.dir, 'stderr'), 'utf8');
        for (const [i, limbo] of job.cases.entries()) {
          results.push(judge(limbo, parseVerdict(job.files[i], stdout, stderr), note));
        }
      });
    }),
  );
  return results;
}

let jobCounter = 0;

const quote = (text: string): string => `'${text.replaceAll("'", "'\\''")}'`;

/** Writes a job's files and builds its command line. */
function prepareJob(cases: readonly LimboCase[]): OpensslJob {
  assert.ok(workDir);
  const dir = join(workDir, `job-${jobCounter++}`);
  mkdirSync(dir);
  const first = cases[0];
  const write = (name: string, pems: readonly string[]): string => {
    writeFileSync(join(dir, name), pems.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join(''));
    return name;
  };
  const args = [
    'verify',
    '-nameopt',
    NAME_OPTIONS,
    '-purpose',
    first.validation_kind === 'SERVER' ? 'sslserver' : 'sslclient',
    '-auth_level',
    AUTH_LEVEL,
    '-show_chain',
    '-CAfile',
    write('trusted.pem', first.trusted_certs),
  ];
  const untrusted = cases.flatMap((c) => c.untrusted_intermediates);
  if (untrusted.length > 0) args.push('-untrusted', write('untrusted.pem', untrusted));
  if (first.crls.length > 0) args.push('-CRLfile', write('crls.pem', first.crls), '-crl_check_all');
  if (first.validation_time !== null) {
    args.push('-attime', String(Math.floor(new Date(first.validation_time).getTime() / 1000)));
  }
  const files = cases.map((c, index) => write(`c${index}.pem`, [c.peer_certificate]));
  const command = `cd ${quote(dir)} && openssl ${[...args, ...files].map(quote).join(' ')} >stdout 2>stderr`;
  return { cases, dir, files, command };
}

/** Runs a script with sh, calling `done` with each number it prints. */
function runScript(script: string, done: (index: number) => void): Promise<void> {
  return new Promise((finish, fail) => {
    const child = spawn('sh', [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let pending = '';
    let failure: unknown;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        try {
          done(Number(line));
        } catch (error) {
          failure ??= error;
        }
      }
    });
    child.on('error', fail);
    child.on('close', () => (failure === undefined ? finish() : fail(failure)));
  });
}

/** The verdict for one file from `openssl verify -show_chain` output. */
function parseVerdict(file: string, stdout: string, stderr: string): OpensslVerdict {
  const lines = stdout.split('\n');
  const start = lines.indexOf(`${file}: OK`);
  if (start >= 0) {
    const chain: { subject: string; untrusted: boolean }[] = [];
    for (let i = start + 1; i < lines.length; i++) {
      const line = lines[i];
      if (line === 'Chain:') continue;
      if (/^c\d+\.pem: OK$/.test(line) || line === '') break;
      const depth = /^depth=\d+: (.*)$/.exec(line);
      if (depth) chain.push({ subject: depth[1], untrusted: false });
      else if (chain.length > 0) chain[chain.length - 1].subject += `\n${line}`;
    }
    for (const entry of chain) {
      if (entry.subject.endsWith(' (untrusted)')) {
        entry.subject = entry.subject.slice(0, -' (untrusted)'.length);
        entry.untrusted = true;
      }
    }
    return { ok: true, chain, error: '' };
  }
  const errorLines = stderr.split('\n');
  const failed = errorLines.indexOf(`error ${file}: verification failed`);
  let error = 'openssl gave no verdict';
  if (failed >= 0) {
    error = 'verification failed';
    for (let i = failed - 1; i >= 0; i--) {
      if (/^error c\d+\.pem: verification failed$/.test(errorLines[i])) break;
      const detail = /^error \d+ at \d+ depth lookup: (.*)$/.exec(errorLines[i]);
      if (detail) {
        error = detail[1];
        break;
      }
    }
  }
  return { ok: false, chain: [], error: `openssl: ${error}` };
}

const x509Cache = new WeakMap<LimboCase, { trusted: X509Certificate[]; untrusted: X509Certificate[] }>();

/** The DER chain openssl built, found again among the case's certificates. */
function chainOf(limbo: LimboCase, verdict: OpensslVerdict): Buffer[] | undefined {
  let pools = x509Cache.get(limbo);
  if (!pools) {
    pools = {
      trusted: limbo.trusted_certs.map((p) => new X509Certificate(p)),
      untrusted: limbo.untrusted_intermediates.map((p) => new X509Certificate(p)),
    };
    x509Cache.set(limbo, pools);
  }
  let previous = new X509Certificate(limbo.peer_certificate);
  const chain = [previous.raw];
  for (const entry of verdict.chain.slice(1)) {
    const candidates = entry.untrusted ? pools.untrusted : pools.trusted;
    let found = candidates.filter((c) => c.subject === entry.subject);
    if (found.length !== 1) {
      const base = found.length > 1 ? found : candidates;
      found = base.filter((c) => safely(() => previous.verify(c.publicKey)));
      if (found.length > 1) found = found.filter((c) => previous.checkIssued(c));
    }
    if (found.length === 0) return undefined;
    previous = found[0];
    chain.push(previous.raw);
  }
  return chain;
}

function safely(check: () => boolean): boolean {
  try {
    return check();
  } catch {
    return false;
  }
}

/** Both modes' outcome for a case openssl judged. */
function judge(limbo: LimboCase, verdict: OpensslVerdict, note: (what: string) => void): CaseResult {
  if (!verdict.ok) {
    const refused = { accepted: false, reason: verdict.error };
    return { limbo, via: 'openssl', outcomes: { strict: refused, legacy: refused } };
  }
  const chain = chainOf(limbo, verdict);
  if (chain === undefined) {
    note('chains openssl built that could not be found again (counted as refused)');
    const lost = { accepted: false, reason: 'the verified chain could not be found again' };
    return { limbo, via: 'openssl', outcomes: { strict: lost, legacy: lost } };
  }
  const leaf = new X509Certificate(chain[0]).toLegacyObject() as PeerCertificate;
  const name = limbo.expected_peer_name;
  const outcome = (mode: Mode): Outcome => {
    if (limbo.validation_kind === 'CLIENT') {
      // What MtlsServer sees: the leaf and the CAs it knows (the trust bundle), never the intermediates.
      if (mode === 'legacy') return { accepted: true, reason: '' };
      const refused = checkChainStrictness(serverView(limbo, chain[0]));
      return refused ? { accepted: false, reason: refused.message } : { accepted: true, reason: '' };
    }
    if (mode === 'strict') {
      const depth = limbo.max_chain_depth;
      const refused = checkChainStrictness(chain, depth === null ? {} : { maxChainDepth: depth });
      if (refused) return { accepted: false, reason: refused.message };
    }
    if (name === null) return { accepted: true, reason: '' };
    const verification = verifyServerName(
      name.value,
      mode === 'legacy' ? { nodeCheckServerIdentity: true } : {},
    );
    const error = verification.check({ serverName: name.value, certificate: leaf });
    return error ? { accepted: false, reason: error.message } : { accepted: true, reason: '' };
  };
  return {
    limbo,
    via: 'openssl',
    outcomes: { strict: outcome('strict'), legacy: outcome('legacy') },
    verifiedLeaf: chain[0],
  };
}

/**
 * The chain as MtlsServer sees it (readPeerChain): Node shows it only the
 * client's leaf, completed from the CAs it knows, here the case's trusted
 * certificates, by X509Certificate.checkIssued.
 */
function serverView(limbo: LimboCase, leafDer: Buffer): Buffer[] {
  const trusted = limbo.trusted_certs.map((p) => new X509Certificate(p));
  const view = [leafDer];
  const seen = new Set<string>();
  for (let current = new X509Certificate(leafDer); !current.checkIssued(current) && view.length < 10; ) {
    seen.add(current.fingerprint256);
    const issuer = trusted.find((ca) => !seen.has(ca.fingerprint256) && current.checkIssued(ca));
    if (issuer === undefined) break;
    view.push(issuer.raw);
    current = issuer;
  }
  return view;
}

// ---------------------------------------------------------------------------
// Figures.

function summary(
  mode: Mode,
  results: readonly CaseResult[],
  recorded: ReadonlyMap<string, string>,
): string[] {
  const count = (predicate: (r: CaseResult) => boolean) => results.filter(predicate).length;
  const accepted = (r: CaseResult) => r.outcomes[mode].accepted;
  const expected = (r: CaseResult) => r.limbo.expected_result === 'SUCCESS';
  const agreeExpected = count((r) => accepted(r) === expected(r));
  const falseAccepts = results.filter((r) => accepted(r) && !expected(r));
  const falseRefusals = results.filter((r) => !accepted(r) && expected(r));
  const withRecord = results.filter((r) => ['SUCCESS', 'FAILURE'].includes(recorded.get(r.limbo.id) ?? ''));
  const agreeOpenssl = withRecord.filter((r) => accepted(r) === (recorded.get(r.limbo.id) === 'SUCCESS'));
  const opensslRight = withRecord.filter(
    (r) => (recorded.get(r.limbo.id) === 'SUCCESS') === expected(r),
  ).length;
  const title =
    mode === 'strict'
      ? 'sigil defaults (strict chain checks, no CN fallback)'
      : "opt-outs (strictChain: false, Node's checkServerIdentity) = sigil before";
  const lines = [
    `${title}:`,
    `  accepted ${count(accepted)}, refused ${count((r) => !accepted(r))}; ` +
      `agrees with expected_result on ${agreeExpected}/${results.length}: ` +
      `${falseAccepts.length} accepted that should be refused, ${falseRefusals.length} refused that should be accepted`,
    `  agrees with OpenSSL 3.0.19 strict (recorded) on ${agreeOpenssl.length}/${withRecord.length} ` +
      `(OpenSSL itself matches expected_result on ${opensslRight}/${withRecord.length}; ` +
      `${results.length - withRecord.length} cases it skipped)`,
  ];
  const groups = (list: readonly CaseResult[]) => {
    const byGroup = new Map<string, number>();
    for (const r of list) {
      const group = r.limbo.id.split('::').slice(0, 2).join('::');
      byGroup.set(group, (byGroup.get(group) ?? 0) + 1);
    }
    return [...byGroup].map(([group, n]) => `${group} ${n}`).join(', ');
  };
  if (falseAccepts.length > 0)
    lines.push(`  accepted but expected FAILURE, by group: ${groups(falseAccepts)}`);
  if (falseRefusals.length > 0)
    lines.push(`  refused but expected SUCCESS, by group: ${groups(falseRefusals)}`);
  return lines;
}

/**
 * The server side: the CLIENT cases were real handshakes into MtlsServer; and
 * for every SERVER chain OpenSSL accepted, what MtlsServer's strict checks
 * make of it when it sees only the leaf and its trusted CAs.
 */
function serverSide(results: readonly CaseResult[]): string[] {
  const clients = results.filter((r) => r.limbo.validation_kind === 'CLIENT');
  const lines = ['server side (MtlsServer):'];
  for (const mode of MODES) {
    const accepted = clients.filter((r) => r.outcomes[mode].accepted);
    const agree = clients.filter(
      (r) => r.outcomes[mode].accepted === (r.limbo.expected_result === 'SUCCESS'),
    );
    lines.push(
      `  ${clients.length} CLIENT cases as handshakes, ${mode === 'strict' ? 'strictChain on' : 'strictChain: false'}: ` +
        `accepted ${accepted.length}, refused ${clients.length - accepted.length}; agrees with expected_result on ${agree.length}/${clients.length}`,
    );
  }
  const strictRule = (o: Outcome) =>
    !o.accepted && o.reason.startsWith('certificate chain refused by strict check');
  const servers = results.filter((r) => r.limbo.validation_kind === 'SERVER' && r.verifiedLeaf !== undefined);
  const refusedByView = servers.filter(
    (r) => checkChainStrictness(serverView(r.limbo, r.verifiedLeaf as Buffer)) !== undefined,
  );
  const clientRefused = servers.filter((r) => strictRule(r.outcomes.strict));
  const bothExpectFailure = refusedByView.filter((r) => r.limbo.expected_result === 'FAILURE');
  lines.push(
    `  the ${servers.length} SERVER chains OpenSSL accepted, seen as MtlsServer sees a client's (leaf + trusted CAs, ` +
      `no intermediates): the strict checks refuse ${refusedByView.length} (${bothExpectFailure.length} expected FAILURE); ` +
      `on the whole chain the client side refuses ${clientRefused.length}`,
  );
  return lines;
}

// ---------------------------------------------------------------------------
// Plumbing.

async function pool<T>(
  items: readonly T[],
  width: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      await work(items[index], index);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(width, items.length)) }, worker));
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, fail) => {
      timer = setTimeout(() => fail(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function message(error: unknown): string {
  return error instanceof Error ? error.message.split('\n')[0] : String(error);
}
