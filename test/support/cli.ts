// The one way tests run the real `sigil` command (bin/sigil.js with the Node
// that runs the tests) and other programs (openssl, the examples) as
// subprocesses: run() to completion with code, stdout and stderr collected,
// or start() a long-running one whose output can be awaited while it runs.
// Children get the environment without the developer's SIGIL_* variables.
import { type ChildProcess, spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** bin/sigil.js, the command users run. */
export const SIGIL_BIN = join(repoRoot, 'bin', 'sigil.js');

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ProcessOptions {
  /** Added to the cleaned environment. */
  readonly env?: Record<string, string>;
  /** Variables with these prefixes are left out of the child's environment. Default SIGIL_. */
  readonly dropPrefixes?: readonly string[];
  readonly cwd?: string;
  /** The child is killed (SIGTERM) after this long; 0: never. */
  readonly timeoutMs?: number;
}

/**
 * The environment without the dropped variables. Node's compile cache (keyed
 * by source hash) halves the start-up time of the many short `sigil`
 * processes the tests run.
 */
function cleanEnv(options: ProcessOptions): NodeJS.ProcessEnv {
  const drop = options.dropPrefixes ?? ['SIGIL_'];
  const env: NodeJS.ProcessEnv = { NODE_COMPILE_CACHE: join(tmpdir(), 'sigil-test-node-compile-cache') };
  for (const [name, value] of Object.entries(process.env)) {
    if (!drop.some((prefix) => name.startsWith(prefix))) env[name] = value;
  }
  return { ...env, ...options.env };
}

/** What a child printed so far, read as UTF-8. */
function collect(child: ChildProcess): { stdout(): string; stderr(): string } {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  return { stdout: () => stdout, stderr: () => stderr };
}

/** Runs `command ARGS…` to its end (30 s at most by default), feeding it `input` when given. */
export function run(
  command: string,
  args: readonly string[],
  options: ProcessOptions & { input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? repoRoot,
      env: cleanEnv(options),
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 30_000,
    });
    const output = collect(child);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: output.stdout(), stderr: output.stderr() }));
    if (child.stdin) {
      child.stdin.on('error', () => {}); // a child that exits without reading its input
      child.stdin.end(options.input);
    }
  });
}

/** `sigil ARGS…` to its end. */
export function sigil(args: readonly string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run(process.execPath, [SIGIL_BIN, ...args], { env });
}

/** The openssl CLI to its end. */
export function openssl(args: readonly string[], input?: string): Promise<RunResult> {
  return run('openssl', args, { input });
}

export interface RunningProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves once `text` was printed on `stream` (default stderr); rejects when the process ends first. */
  printed(text: string, stream?: 'stdout' | 'stderr'): Promise<void>;
  /** Resolves, once its output is complete, with the exit code (or the signal's name). */
  readonly exited: Promise<number | string>;
  /** Resolves, once its output is complete, with all of it and the exit code (null: a signal). */
  readonly result: Promise<RunResult>;
}

// A test that fails before stopping its process must not leave it running:
// its pipes would keep the test file's process alive for ever.
const started = new Set<ChildProcess>();
after(() => {
  for (const child of started) child.kill('SIGKILL');
});

/** Starts `command ARGS…` without waiting for it (killed when the test file ends, at the latest). */
export function start(
  command: string,
  args: readonly string[],
  options: ProcessOptions = {},
): RunningProcess {
  const child = spawn(command, args, {
    cwd: options.cwd ?? repoRoot,
    env: cleanEnv(options),
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: options.timeoutMs ?? 0,
  });
  started.add(child);
  const output = collect(child);
  const result = new Promise<RunResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      started.delete(child);
      resolve({ code, stdout: output.stdout(), stderr: output.stderr() });
    });
  });
  const exited = result.then(({ code }) => code ?? child.signalCode ?? 'unknown');
  exited.catch(() => {}); // awaiting it still throws
  const printed = (text: string, stream: 'stdout' | 'stderr' = 'stderr') =>
    new Promise<void>((resolve, reject) => {
      const seen = () => (stream === 'stdout' ? output.stdout() : output.stderr()).includes(text);
      if (seen()) return resolve();
      const check = () => {
        if (!seen()) return;
        child[stream]?.off('data', check);
        resolve();
      };
      child[stream]?.on('data', check);
      void exited.then((code) => {
        if (!seen())
          reject(new Error(`exited (${code}) before printing ${JSON.stringify(text)}: ${output.stderr()}`));
      });
    });
  return { child, stdout: output.stdout, stderr: output.stderr, printed, exited, result };
}

/** Starts `sigil ARGS…` (see start()). */
export function startSigil(args: readonly string[], options: ProcessOptions = {}): RunningProcess {
  return start(process.execPath, [SIGIL_BIN, ...args], options);
}
