// A real control plane for the agent and operator tests: `startServer` in
// this process on free ports with a throwaway data directory (SQLite), and
// the real `sigil` CLI run as subprocesses against it (--data DIR); enrolled
// node directories, and an expired certificate to make one re-join.
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, readPrivateKey } from '../../src/pki/keys.ts';
import { uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { type RunningServer, startServer } from '../../src/server/start-server.ts';
import { snapshot } from '../cli/pki-helpers.ts';
import { type RunResult, sigil } from '../support/cli.ts';
import { tempDir } from '../support/temp-dir.ts';

export interface TestServer {
  readonly dataDir: string;
  readonly running: RunningServer;
  /** `sigil ARGS --data DATA`. */
  cli(args: readonly string[], env?: Record<string, string>): Promise<RunResult>;
  /** `sigil ARGS --data DATA --json`, asserting exit 0 and parsing stdout. */
  json<T = Record<string, unknown>>(args: readonly string[]): Promise<T>;
  /** A join token from `sigil token create`. */
  token(...flags: string[]): Promise<string>;
  /** A freshly enrolled, UP node directory (`sigil enrol` with an auto-approve token). */
  enrolledNode(): Promise<string>;
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
  const token = async (...flags: string[]): Promise<string> => {
    const result = await cli(['token', 'create', ...flags]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.split('\n').filter((line) => line !== '');
    assert.equal(lines.length, 1, `token create printed ${JSON.stringify(result.stdout)}`);
    parseJoinToken(lines[0]);
    return lines[0];
  };
  return {
    dataDir,
    running,
    cli,
    async json<T>(args: readonly string[]): Promise<T> {
      const result = await cli([...args, '--json']);
      assert.equal(result.code, 0, `sigil ${args.join(' ')}: ${result.stderr}`);
      return JSON.parse(result.stdout) as T;
    },
    token,
    async enrolledNode(): Promise<string> {
      const dir = join(tempDir('sigil-node-'), 'node');
      const result = await enrol(await token('--auto-approve'), dir);
      assert.equal(result.code, 0, result.stderr);
      return dir;
    },
    close,
  };
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

/** Replaces cert.pem with a certificate for the node's key that expired two hours ago. */
export function expireCertificate(dir: string): void {
  const nodeKey = readPrivateKey(readFileSync(join(dir, 'key.pem')), { source: 'key.pem' });
  const past = new Date(Date.now() - 3 * 3_600_000);
  const ca = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey: ca.privateKey,
    subject: { commonName: 'old' },
    now: past,
  });
  const spiffeId = nodeFile(dir).spiffeId ?? '';
  const expired = Issuer.fromCertificate(root.der, ca.privateKey).issue({
    publicKey: createPublicKey(nodeKey),
    profile: 'server+client',
    subject: { commonName: nodeFile(dir).nodeId },
    sans: [uriName(spiffeId)],
    ttlMs: 3_600_000,
    now: past,
  });
  writeFileSync(join(dir, 'cert.pem'), encodePem('CERTIFICATE', expired.der));
}
