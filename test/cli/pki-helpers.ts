// Helpers for the `sigil pki` tests (and the other tests that run the CLI):
// run the real CLI and the real openssl as subprocesses, read what a command
// printed as JSON, build `sigil delegate` arguments, build CA directories
// in-process for refusal fixtures, and snapshot directories to prove a failed
// command changed nothing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { caDirectoryFiles, createCa } from '../../src/cli/ca-directory.ts';
import { writeFilesAtomically } from '../../src/files/file-sets.ts';
import type { KeyType } from '../../src/pki/keys.ts';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * The environment without any SIGIL_* variable from the developer's shell.
 * Node's compile cache (keyed by source hash) halves the start-up time of the
 * many short `sigil` processes these tests run.
 */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NODE_COMPILE_CACHE: join(tmpdir(), 'sigil-test-node-compile-cache') };
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('SIGIL_')) env[name] = value;
  return { ...env, ...extra };
}

function runProcess(
  command: string,
  args: readonly string[],
  options: { env?: Record<string, string>; input?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? repoRoot,
      env: cleanEnv(options.env ?? {}),
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 30_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    if (child.stdin) {
      child.stdin.on('error', () => {}); // a child that exits without reading its input
      child.stdin.end(options.input);
    }
  });
}

/** `sigil …` through bin/sigil.js with this Node (24 under `npx node --test`). */
export function sigil(args: readonly string[], env: Record<string, string> = {}): Promise<RunResult> {
  return runProcess(process.execPath, [join(repoRoot, 'bin', 'sigil.js'), ...args], { env });
}

export function openssl(args: readonly string[], input?: string): Promise<RunResult> {
  return runProcess('openssl', args, { input });
}

/** `openssl req` options for a new P-256 key, unencrypted. */
export const NEW_P256_KEY: readonly string[] = [
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:P-256',
  '-nodes',
];

/** The JSON a command printed, once it exited 0 (`what` names it in the failure). */
export function jsonOf<T>(result: RunResult, what: string): T {
  assert.equal(result.code, 0, `${what}: exit ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

/**
 * `sigil delegate --to NAME --permissions PERMISSIONS FLAGS… --out DIR`, FLAGS
 * being the rest (--from or --data, grants, limits, --command, --json).
 */
export function delegateArgs(to: string, permissions: string, out: string, ...flags: string[]): string[] {
  return ['delegate', '--to', to, '--permissions', permissions, ...flags, '--out', out];
}

/** A fresh temporary directory, removed when the test file ends. */
export function tempDir(prefix = 'sigil-pki-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file and directory under `root`: relative path → mode and content hash. */
export function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      const mode = (statSync(path).mode & 0o7777).toString(8);
      if (entry.isDirectory()) {
        out[`${relative(root, path)}/`] = mode;
        walk(path);
      } else {
        out[relative(root, path)] =
          `${mode} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
      }
    }
  };
  walk(root);
  return out;
}

/** Writes a CA directory in-process (faster than running `sigil pki init` for fixtures). */
export function makeCa(
  dir: string,
  options: { keyType?: KeyType; intermediate?: boolean; passphrase?: string; trustDomain?: string } = {},
): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = createCa({
    keyType: options.keyType ?? 'p256',
    trustDomain: options.trustDomain ?? 'sigil.internal',
    rootName: 'test root CA',
    intermediateName: options.intermediate ? 'test intermediate CA' : undefined,
    ttlMs: 365 * 24 * 3_600_000,
  });
  writeFilesAtomically(caDirectoryFiles(dir, ca, options.passphrase), { force: true });
}

/** PEM certificates in a file, in order. */
export function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
}

/** DER of a PEM certificate. */
export function derOf(pem: string): Buffer {
  return Buffer.from(new X509Certificate(pem).raw);
}
