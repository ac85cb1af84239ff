// Independent peers for security tests: verifiers and a gRPC server that sigil
// did not write, to ask whether they accept a certificate chain.
//
//   verifyWithOpenssl   the `openssl verify` CLI (the reference checker)
//   startGoVerifier     Go's crypto/x509 (peers/verify.go, built once per process)
//   startPythonVerifier pyca/cryptography (peers/verify.py): always parses, and
//                       verifies when cryptography has x509.verification (42+)
//   startPythonGrpcServer / pythonGrpcCall
//                       a plain grpcio server requiring client certificates, and a
//                       grpcio client (peers/grpc_server.py)
//
// Each throws PeerUnavailableError naming the missing tool (go, python3,
// cryptography, grpcio, openssl); openPeer and needPeer turn it into a skipped
// test with that message as the reason (a failure under CI). Children are killed on close(), when their stdin
// closes (a parent that dies closes it), and at process exit; temporary
// directories are removed. Idle sessions do not keep the test process alive.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { inCi } from './ci.ts';

const peersDir = join(dirname(fileURLToPath(import.meta.url)), 'peers');

export type Usage = 'client' | 'server' | 'any';

/** The question every verifier answers. PEM strings may hold several certificates each. */
export interface ChainRequest {
  readonly roots: readonly string[];
  readonly intermediates?: readonly string[];
  readonly leaf: string;
  readonly usage: Usage;
  /** A DNS name (or IP address) the leaf must be valid for. */
  readonly dnsName?: string;
  /** Verification time; default now. */
  readonly at?: Date | string;
}

export interface OpensslRequest extends ChainRequest {
  /** Add `-x509_strict`. */
  readonly strict?: boolean;
}

export interface Verdict {
  readonly ok: boolean;
  /** Empty when ok. */
  readonly error: string;
}

export interface OpensslVerdict extends Verdict {
  /** Everything openssl printed (stdout then stderr). */
  readonly output: string;
}

/** One parsed certificate, as a peer saw it. */
export interface CertificateInfo {
  readonly role: 'leaf' | 'intermediate' | 'root';
  readonly subject: string;
  readonly extensionOids: readonly string[];
  readonly uris: readonly string[];
}

export interface GoVerdict extends Verdict {
  /** Subjects, leaf first, of every chain Go built. */
  readonly chains: readonly (readonly string[])[];
  readonly leafUris: readonly string[];
  readonly leafExtensionOids: readonly string[];
  /** Every certificate parsed before the first parse failure, leaf first. */
  readonly certificates: readonly CertificateInfo[];
}

export interface PythonVerdict extends GoVerdict {
  /** `pyca-<version>` (parsed and verified) or `parse-only-<version>`. */
  readonly verifier: string;
  readonly parsed: boolean;
  /** null when no verification ran (parse-only, or a parse failure). */
  readonly verified: boolean | null;
}

/** A peer this machine lacks (`tool`: go, python3, cryptography, grpcio, openssl). */
export class PeerUnavailableError extends Error {
  readonly tool: string;
  constructor(tool: string, message: string) {
    super(message);
    this.name = 'PeerUnavailableError';
    this.tool = tool;
  }
}

const REQUEST_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------
// children and temporary directories: cleaned up at exit whatever happens

const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

type Refable = { ref?: () => void; unref?: () => void };

/** Whether the child (and its pipes) keep the event loop alive. */
function setRef(child: ChildProcess, on: boolean): void {
  for (const handle of [child, child.stdin, child.stdout, child.stderr] as Refable[]) {
    if (handle === null) continue;
    if (on) handle.ref?.();
    else handle.unref?.();
  }
}

function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
}

/** End stdin, wait up to `graceMs` for the child to leave, then SIGKILL it. */
async function stopChild(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin?.on('error', () => {});
  child.stdin?.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command to completion (never rejects on a non-zero exit); ENOENT rejects. */
function run(
  file: string,
  args: readonly string[],
  options: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        env: options.env,
        cwd: options.cwd,
        timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
      },
      (error, stdout, stderr) => {
        if (error && isMissing(error)) return reject(error);
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    track(child);
    // A child that exits before reading its input makes the write fail with EPIPE; its exit status tells.
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.input ?? '');
  });
}

function timeString(at: Date | string | undefined): string | undefined {
  if (at === undefined) return undefined;
  const date = typeof at === 'string' ? new Date(at) : at;
  if (Number.isNaN(date.getTime())) throw new Error(`not a time: ${String(at)}`);
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function wireRequest(request: ChainRequest): string {
  return JSON.stringify({
    roots: request.roots,
    intermediates: request.intermediates ?? [],
    leaf: request.leaf,
    usage: request.usage,
    dnsName: request.dnsName,
    at: timeString(request.at),
  });
}

// ---------------------------------------------------------------------------
// a test whose peer is missing: skipped with the reason, or failed under CI

/** Under SIGIL_CI=1 (.ci/run installs every peer) a missing peer is a failure, not a skip. */
export { inCi };

/** A peer that started, or why it did not. */
export interface Opened<T> {
  value?: T;
  reason?: string;
}

/** Starts a peer: a PeerUnavailableError becomes the reason, any other error is thrown. */
export async function openPeer<T>(start: () => Promise<T>): Promise<Opened<T>> {
  try {
    return { value: await start() };
  } catch (error) {
    if (error instanceof PeerUnavailableError) return { reason: error.message };
    throw error;
  }
}

/** The peer, or undefined after skipping `t` with the reason printed (failing instead under CI). */
export function needPeer<T>(t: TestContext, opened: Opened<T>): T | undefined {
  if (opened.value !== undefined) return opened.value;
  const reason = opened.reason ?? 'the peer did not start';
  if (inCi) throw new Error(`${reason} (.ci/run installs it)`);
  console.log(`# skipping "${t.name}": ${reason}`);
  t.skip(reason);
  return undefined;
}

// ---------------------------------------------------------------------------
// openssl verify

/**
 * `openssl verify` with only `roots` trusted (no system store), `intermediates`
 * as untrusted, `-purpose sslclient|sslserver|any`, optionally `-x509_strict`,
 * `-attime` and `-verify_hostname`/`-verify_ip`.
 */
export async function verifyWithOpenssl(request: OpensslRequest): Promise<OpensslVerdict> {
  const dir = makeTempDir('sigil-peers-openssl-');
  try {
    const purpose = { client: 'sslclient', server: 'sslserver', any: 'any' }[request.usage];
    if (purpose === undefined) throw new Error(`usage must be client, server or any, not ${request.usage}`);
    const args = ['verify', '-no-CApath', '-no-CAstore', '-purpose', purpose];
    if (request.roots.length > 0) {
      writeFileSync(join(dir, 'roots.pem'), request.roots.join('\n'));
      args.push('-CAfile', join(dir, 'roots.pem'));
    } else {
      args.push('-no-CAfile');
    }
    if ((request.intermediates ?? []).length > 0) {
      writeFileSync(join(dir, 'intermediates.pem'), (request.intermediates ?? []).join('\n'));
      args.push('-untrusted', join(dir, 'intermediates.pem'));
    }
    if (request.strict) args.push('-x509_strict');
    const at = timeString(request.at);
    if (at !== undefined) args.push('-attime', String(Math.floor(new Date(at).getTime() / 1000)));
    if (request.dnsName !== undefined) {
      args.push(isIP(request.dnsName) ? '-verify_ip' : '-verify_hostname', request.dnsName);
    }
    writeFileSync(join(dir, 'leaf.pem'), request.leaf);
    args.push(join(dir, 'leaf.pem'));
    let result: RunResult;
    try {
      result = await run('openssl', args);
    } catch (error) {
      if (isMissing(error))
        throw new PeerUnavailableError('openssl', 'openssl not found: install the openssl package');
      throw error;
    }
    const output = (result.stdout + result.stderr).replaceAll(dir + '/', '');
    const ok = result.code === 0 && /: OK\s*$/.test(result.stdout);
    // "error 47 at 0 depth lookup: permitted subtree violation", then "error leaf.pem: verification failed"
    const errors = output
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => /^error /.test(line) && !/: verification failed$/.test(line));
    return { ok, error: ok ? '' : errors.join('; ') || output.trim(), output };
  } finally {
    removeTempDir(dir);
  }
}

// ---------------------------------------------------------------------------
// line-protocol sessions (verify.go, verify.py)

interface Pending {
  readonly resolve: (line: string) => void;
  readonly reject: (error: Error) => void;
}

/** A child that answers one JSON line per request line, in order. */
class LineSession {
  readonly #child: ChildProcess;
  readonly #name: string;
  readonly #pending: Pending[] = [];
  #stderr = '';
  #failure: Error | null = null;

  constructor(name: string, file: string, args: readonly string[], env?: NodeJS.ProcessEnv) {
    this.#name = name;
    this.#child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
    track(this.#child);
    this.#child.stderr!.setEncoding('utf8');
    this.#child.stderr!.on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-4000);
    });
    createInterface({ input: this.#child.stdout! }).on('line', (line) => {
      const next = this.#pending.shift();
      if (next) next.resolve(line);
      this.#updateRef();
    });
    this.#child.stdin!.on('error', () => {}); // EPIPE when the child died: reported through 'exit'
    this.#child.on('error', (error) => this.#fail(error));
    this.#child.on('exit', (code, signal) => {
      this.#fail(
        new Error(`${this.#name} exited (${signal ?? code}): ${this.#stderr.trim() || 'no stderr'}`),
      );
    });
    this.#updateRef();
  }

  /** Resolves when the child has started (rejects with ENOENT and the like). */
  started(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      this.#child.once('spawn', () => resolve());
      this.#child.once('error', reject);
    });
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.splice(0)) pending.reject(this.#failure);
    this.#updateRef();
  }

  #updateRef(): void {
    setRef(this.#child, this.#pending.length > 0);
  }

  request(line: string): Promise<string> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#child.kill('SIGKILL');
        this.#fail(new Error(`${this.#name}: no answer within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      timer.unref();
      this.#pending.push({
        resolve: (answer) => {
          clearTimeout(timer);
          resolve(answer);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#updateRef();
      this.#child.stdin!.write(line + '\n');
    });
  }

  async close(): Promise<void> {
    this.#failure ??= new Error(`${this.#name} is closed`);
    await stopChild(this.#child);
  }
}

// ---------------------------------------------------------------------------
// Go

export interface GoVerifier {
  /** `go version` of the toolchain that built the verifier. */
  readonly goVersion: string;
  verify(request: ChainRequest): Promise<GoVerdict>;
  close(): Promise<void>;
}

let goBuild: Promise<{ binary: string; goVersion: string }> | null = null;

/** Builds peers/verify.go once per process (GOCACHE/GOPATH in a temporary directory). */
function buildGoVerifier(): Promise<{ binary: string; goVersion: string }> {
  goBuild ??= (async () => {
    const dir = makeTempDir('sigil-peers-go-');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GOCACHE: join(dir, 'cache'),
      GOPATH: join(dir, 'gopath'),
      GOTMPDIR: '',
      GOENV: 'off',
      GOFLAGS: '',
      GO111MODULE: 'off',
      GOPROXY: 'off',
      GOTOOLCHAIN: 'local',
      CGO_ENABLED: '0',
    };
    let version: RunResult;
    try {
      version = await run('go', ['version'], { env, cwd: dir });
    } catch (error) {
      if (isMissing(error))
        throw new PeerUnavailableError(
          'go',
          'Go toolchain not found (go on PATH): install the golang-go package',
        );
      throw error;
    }
    const binary = join(dir, 'verify');
    const built = await run('go', ['build', '-o', binary, join(peersDir, 'verify.go')], {
      env,
      cwd: dir,
      timeoutMs: 300_000,
    });
    if (built.code !== 0) throw new Error(`go build of peers/verify.go failed: ${built.stderr.trim()}`);
    return { binary, goVersion: version.stdout.trim() };
  })();
  goBuild.catch(() => {
    goBuild = null; // a later call may try again
  });
  return goBuild;
}

/** A session with Go's crypto/x509 (one process, many requests). */
export async function startGoVerifier(): Promise<GoVerifier> {
  const { binary, goVersion } = await buildGoVerifier();
  const session = new LineSession('go verifier', binary, []);
  await session.started();
  return {
    goVersion,
    async verify(request) {
      return JSON.parse(await session.request(wireRequest(request))) as GoVerdict;
    },
    close: () => session.close(),
  };
}

// ---------------------------------------------------------------------------
// Python

export interface PythonInterpreter {
  /** sys.executable: the interpreter itself, not a shim. */
  readonly executable: string;
  readonly python: string;
  /** cryptography's version, or null when it is not importable. */
  readonly cryptography: string | null;
  /** Whether cryptography.x509.verification (PolicyBuilder, Store) exists. */
  readonly canVerify: boolean;
  /** grpcio's version, or null. */
  readonly grpcio: string | null;
  /** The TLS library grpcio uses: `openssl <path>: <version>` or `boringssl (bundled)`; null without grpcio. */
  readonly grpcTls: string | null;
}

const PROBE = `
import json, sys
info = {"executable": sys.executable, "python": sys.version.split()[0], "cryptography": None,
        "canVerify": False, "grpcio": None, "grpcTls": None}
try:
    import cryptography
    info["cryptography"] = cryptography.__version__
    try:
        from cryptography.x509 import verification
        info["canVerify"] = hasattr(verification, "PolicyBuilder") and hasattr(verification, "Store")
    except ImportError:
        pass
except ImportError:
    pass
try:
    import grpc
    info["grpcio"] = grpc.__version__
    tls = "boringssl (bundled)"
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({l.split()[-1] for l in maps if "libssl.so" in l})
        if paths:
            import ctypes
            lib = ctypes.CDLL(paths[0])
            lib.OpenSSL_version.restype = ctypes.c_char_p
            tls = "openssl %s: %s" % (paths[0], lib.OpenSSL_version(0).decode())
    except Exception as e:
        tls += " (%s)" % e
    info["grpcTls"] = tls
except ImportError:
    pass
print(json.dumps(info))
`;

let pythonProbe: Promise<PythonInterpreter[]> | null = null;

/** What one interpreter can do, or null when it does not run. */
async function probePython(candidate: string): Promise<PythonInterpreter | null> {
  let result: RunResult;
  try {
    result = await run(candidate, ['-c', PROBE]);
  } catch {
    return null;
  }
  if (result.code !== 0) return null;
  return JSON.parse(result.stdout.trim().split('\n').pop()!) as PythonInterpreter;
}

/**
 * The Python interpreters here (SIGIL_TEST_PYTHON, `python3` on PATH, /usr/bin/python3),
 * one per real executable, with what each can do. Empty when there is none.
 */
export function findPythonInterpreters(): Promise<PythonInterpreter[]> {
  pythonProbe ??= (async () => {
    const candidates = [process.env.SIGIL_TEST_PYTHON, 'python3', '/usr/bin/python3'].filter(
      (c): c is string => typeof c === 'string' && c !== '',
    );
    const found: PythonInterpreter[] = [];
    for (const info of await Promise.all(candidates.map(probePython))) {
      if (info !== null && !found.some((f) => f.executable === info.executable)) found.push(info);
    }
    return found;
  })();
  return pythonProbe;
}

async function pickPython(
  python: string | undefined,
  wants: { readonly cryptography?: boolean; readonly grpcio?: boolean },
  rank: (i: PythonInterpreter) => number = () => 0,
): Promise<PythonInterpreter> {
  const forced = python === undefined ? null : await probePython(python);
  if (python !== undefined && forced === null)
    throw new PeerUnavailableError('python3', `Python interpreter ${python} does not run`);
  const all = forced === null ? await findPythonInterpreters() : [forced];
  if (all.length === 0)
    throw new PeerUnavailableError(
      'python3',
      'no Python interpreter found (python3 on PATH or /usr/bin/python3)',
    );
  const usable = all
    .filter((i) => (!wants.cryptography || i.cryptography !== null) && (!wants.grpcio || i.grpcio !== null))
    .sort((a, b) => rank(b) - rank(a));
  if (usable[0]) return usable[0];
  const seen = all
    .map((i) => `${i.executable} (cryptography ${i.cryptography}, grpcio ${i.grpcio})`)
    .join(', ');
  if (wants.grpcio)
    throw new PeerUnavailableError('grpcio', `no Python with grpcio: install python3-grpcio; found ${seen}`);
  throw new PeerUnavailableError(
    'cryptography',
    `no Python with cryptography: install python3-cryptography; found ${seen}`,
  );
}

export interface PythonVerifier {
  readonly interpreter: PythonInterpreter;
  /** `pyca-<version>` or `parse-only-<version>`. */
  readonly verifier: string;
  /** Whether verdicts include path validation (else they only say whether everything parsed). */
  readonly canVerify: boolean;
  verify(request: ChainRequest): Promise<PythonVerdict>;
  close(): Promise<void>;
}

/**
 * A session with pyca/cryptography. Picks the interpreter whose cryptography can
 * verify, else any with cryptography (parse-only); `python` (an executable from
 * findPythonInterpreters) forces one.
 */
export async function startPythonVerifier(
  options: { readonly python?: string } = {},
): Promise<PythonVerifier> {
  const interpreter = await pickPython(options.python, { cryptography: true }, (i) => (i.canVerify ? 1 : 0));
  const session = new LineSession('python verifier', interpreter.executable, [join(peersDir, 'verify.py')]);
  await session.started();
  const hello = JSON.parse(await session.request(JSON.stringify({ op: 'hello' }))) as {
    verifier: string;
    canVerify: boolean;
  };
  return {
    interpreter,
    verifier: hello.verifier,
    canVerify: hello.canVerify,
    async verify(request) {
      return JSON.parse(await session.request(wireRequest(request))) as PythonVerdict;
    },
    close: () => session.close(),
  };
}

// ---------------------------------------------------------------------------
// Python grpcio

export interface PythonGrpcServer {
  readonly port: number;
  /** The server's certificate chain (the throwaway self-signed one when none was given). */
  readonly serverCertificate: string;
  readonly interpreter: PythonInterpreter;
  close(): Promise<void>;
}

export interface PythonGrpcServerOptions {
  /** The CA certificates client certificates must chain to. */
  readonly roots: string | readonly string[];
  /** The server's certificate chain and key; default a throwaway self-signed one for localhost/127.0.0.1. */
  readonly cert?: string | readonly string[];
  readonly key?: string;
  /** Default: a free port. */
  readonly port?: number;
  readonly python?: string;
}

const pems = (value: string | readonly string[]): string =>
  typeof value === 'string' ? value : value.join('\n');

/**
 * A grpcio server on 127.0.0.1 that requires and verifies client certificates
 * against `roots` and answers `/peer.Echo/Who` with the verified client (JSON).
 */
export async function startPythonGrpcServer(options: PythonGrpcServerOptions): Promise<PythonGrpcServer> {
  const needsOwnCert = options.cert === undefined || options.key === undefined;
  const interpreter = await pickPython(options.python, { grpcio: true, cryptography: needsOwnCert });
  const child = spawn(interpreter.executable, [join(peersDir, 'grpc_server.py'), 'server'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  track(child);
  child.stdin.on('error', () => {});
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-8000);
  });
  const ready = new Promise<{ port: number; serverCertificate: string }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`python grpc server: not ready within ${REQUEST_TIMEOUT_MS} ms: ${stderr.trim()}`));
    }, REQUEST_TIMEOUT_MS);
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`python grpc server: unexpected output ${JSON.stringify(line)}: ${stderr.trim()}`));
      }
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(`python grpc server exited (${signal ?? code}) before it was ready: ${stderr.trim()}`),
      );
    });
  });
  child.stdin.write(
    JSON.stringify({
      roots: pems(options.roots),
      cert: options.cert === undefined ? undefined : pems(options.cert),
      key: options.key,
      port: options.port ?? 0,
    }) + '\n',
  );
  let started: { port: number; serverCertificate: string };
  try {
    started = await ready;
  } catch (error) {
    await stopChild(child, 0);
    throw error;
  }
  setRef(child, false); // serving does not keep the test process alive; close() or exit ends it
  return {
    port: started.port,
    serverCertificate: started.serverCertificate,
    interpreter,
    close: () => stopChild(child),
  };
}

/** What /peer.Echo/Who answers: the client as the grpcio server verified it. */
export interface PythonGrpcPeer {
  readonly peer: string;
  readonly transportSecurityType: string | null;
  readonly commonName: string | null;
  readonly subjectAlternativeNames: readonly string[];
  readonly pemCert: string | null;
  readonly peerIdentities: readonly string[];
  readonly peerIdentityKey: string | null;
  readonly authContextKeys: readonly string[];
}

export interface PythonGrpcCallResult {
  readonly ok: boolean;
  /** The gRPC status name when the call failed (UNAVAILABLE for a refused handshake). */
  readonly code?: string;
  readonly details?: string;
  /** The reply, parsed as JSON (a PythonGrpcPeer from the peer server), or {base64} when it is not JSON. */
  readonly response?: unknown;
}

export interface PythonGrpcCallOptions {
  readonly port: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** The CA certificates the server must chain to. */
  readonly roots: string | readonly string[];
  /** The client's certificate chain (leaf first, then intermediates) and key. */
  readonly cert: string | readonly string[];
  readonly key: string;
  /** The name the server certificate must carry (grpc.ssl_target_name_override). */
  readonly serverName?: string;
  /** Default `/peer.Echo/Who`. */
  readonly method?: string;
  readonly request?: Uint8Array;
  readonly timeoutMs?: number;
  readonly python?: string;
}

/** One unary call from a grpcio client with mutual TLS. */
export async function pythonGrpcCall(options: PythonGrpcCallOptions): Promise<PythonGrpcCallResult> {
  const interpreter = await pickPython(options.python, { grpcio: true });
  const timeoutMs = options.timeoutMs ?? 10_000;
  const result = await run(interpreter.executable, [join(peersDir, 'grpc_server.py'), 'client'], {
    input: JSON.stringify({
      target: `${options.host ?? '127.0.0.1'}:${options.port}`,
      roots: pems(options.roots),
      cert: pems(options.cert),
      key: options.key,
      serverName: options.serverName,
      method: options.method,
      request: options.request ? Buffer.from(options.request).toString('base64') : undefined,
      timeout: timeoutMs / 1000,
    }),
    timeoutMs: timeoutMs + 15_000,
  });
  const line = result.stdout.trim().split('\n').pop() ?? '';
  if (result.code !== 0 || line === '')
    throw new Error(`python grpc client failed (${result.code}): ${result.stderr.trim().slice(-2000)}`);
  return JSON.parse(line) as PythonGrpcCallResult;
}
