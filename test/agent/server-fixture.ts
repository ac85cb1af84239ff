// A real control plane for the agent and operator tests: `startServer` in
// this process on free ports with a throwaway data directory (SQLite), and
// the real `sigil` CLI run as subprocesses against it (--data DIR).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { type RunningServer, startServer } from '../../src/server/start-server.ts';
import { type RunResult, sigil, snapshot, tempDir } from '../cli/pki-helpers.ts';

export { openssl, type RunResult, sigil, snapshot, tempDir } from '../cli/pki-helpers.ts';

export interface TestServer {
  readonly dataDir: string;
  readonly running: RunningServer;
  /** `sigil ARGS --data DATA`. */
  cli(args: readonly string[], env?: Record<string, string>): Promise<RunResult>;
  /** `sigil ARGS --data DATA --json`, asserting exit 0 and parsing stdout. */
  json<T = Record<string, unknown>>(args: readonly string[]): Promise<T>;
  /** A join token from `sigil token create`. */
  token(...flags: string[]): Promise<string>;
  close(): Promise<void>;
}

export async function startTestServer(dataDir = tempDir('sigil-server-')): Promise<TestServer> {
  const running = await startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await running.close(0);
  };
  after(close);
  const cli = (args: readonly string[], env: Record<string, string> = {}) =>
    sigil([...args, '--data', dataDir], env);
  return {
    dataDir,
    running,
    cli,
    async json<T>(args: readonly string[]): Promise<T> {
      const result = await cli([...args, '--json']);
      assert.equal(result.code, 0, `sigil ${args.join(' ')}: ${result.stderr}`);
      return JSON.parse(result.stdout) as T;
    },
    async token(...flags: string[]): Promise<string> {
      const result = await cli(['token', 'create', ...flags]);
      assert.equal(result.code, 0, result.stderr);
      const lines = result.stdout.split('\n').filter((line) => line !== '');
      assert.equal(lines.length, 1, `token create printed ${JSON.stringify(result.stdout)}`);
      parseJoinToken(lines[0]);
      return lines[0];
    },
    close,
  };
}

/** The refusal contract: exit 1, nothing on stdout, one `sigil: …` line naming the problem. */
export function assertRefused(result: RunResult, problem: RegExp): void {
  assert.equal(
    result.code,
    1,
    `exit code ${result.code}; stdout: ${result.stdout}; stderr: ${result.stderr}`,
  );
  assert.equal(result.stdout, '');
  assert.match(result.stderr, /^sigil: [^\n]+\n$/, `not one line: ${JSON.stringify(result.stderr)}`);
  assert.match(result.stderr, problem);
  assert.doesNotMatch(result.stderr, /PRIVATE KEY|unexpected error|sigil1\.[A-Za-z0-9_-]{16,}/);
}

export interface NodeFile {
  nodeId: string;
  state: string;
  name: string | null;
  addresses: string[];
  rootFingerprint: string;
  trustDomain: string;
  spiffeId: string | null;
}

export function nodeFile(dir: string): NodeFile {
  return JSON.parse(readFileSync(join(dir, 'node.json'), 'utf8')) as NodeFile;
}

/** Runs `sigil enrol TOKEN --dir DIR …` (enrol needs no --data). */
export function enrol(token: string, dir: string, ...flags: string[]): Promise<RunResult> {
  return sigil(['enrol', token, '--dir', dir, ...flags]);
}

/** Snapshot of a directory, or null when it does not exist. */
export function snapshotOrNull(dir: string): Record<string, string> | null {
  try {
    return snapshot(dir);
  } catch {
    return null;
  }
}
