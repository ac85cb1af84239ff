// A revoked node's agent stops and says so (issue #10): `sigil agent --once`
// and `sigil agent` exit 1 with "this node's certificate has been revoked"
// instead of "cannot reach the sigil server" or running forever; a node whose
// certificate alone was revoked (the key is still good) gets a new one; a
// server that is down is still reported as unreachable, never as a
// revocation. The agent learns it from the control plane's anonymous answer
// (Rejoin), see src/agent/node-revoked.ts. Nothing here asserts on time: the
// deadlines only keep a broken build from hanging.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { NodeAgent } from '../../src/agent/agent.ts';
import { NodeRevokedError } from '../../src/agent/node-revoked.ts';
import { repoRoot } from '../cli/pki-helpers.ts';
import {
  assertRefused,
  enrol,
  nodeFile,
  sigil,
  snapshot,
  startTestServer,
  tempDir,
} from './server-fixture.ts';

const server = await startTestServer();

async function enrolledNode(): Promise<string> {
  const dir = join(tempDir('sigil-node-'), 'node');
  const result = await enrol(await server.token('--auto-approve'), dir);
  assert.equal(result.code, 0, result.stderr);
  return dir;
}

function serialOf(dir: string): string {
  return new X509Certificate(readFileSync(join(dir, 'cert.pem'))).serialNumber
    .toLowerCase()
    .replace(/^0+(?=.)/, '');
}

/** Runs the long-lived `sigil agent`; resolves with its exit code and stderr once it exits. */
function runAgent(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'sigil.js'), 'agent', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Generous: a broken agent that never exits fails the test instead of hanging it.
      timeout: 90_000,
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const REVOKED = /this node's certificate has been revoked/;

describe("a revoked node's agent", { concurrency: 4 }, () => {
  test('sigil agent --once (nothing due) exits 1 with "this node\'s certificate has been revoked"', async () => {
    const dir = await enrolledNode();
    const { nodeId } = nodeFile(dir);
    await server.json(['node', 'revoke', nodeId]);
    const before = snapshot(dir);
    const result = await sigil(['agent', '--dir', dir, '--once']);
    assertRefused(result, REVOKED);
    assert.match(result.stderr, new RegExp(`node ${nodeId} has been revoked`));
    assert.doesNotMatch(result.stderr, /cannot reach/);
    assert.deepEqual(snapshot(dir), before, 'nothing in the identity directory changed');
  });

  test('sigil agent (long-running) on a revoked node exits 1 at start', async () => {
    const dir = await enrolledNode();
    const { nodeId } = nodeFile(dir);
    await server.json(['node', 'revoke', nodeId]);
    const { code, stderr } = await runAgent(['--dir', dir, '--json']);
    assert.equal(code, 1, stderr);
    const lines = stderr.split('\n').filter((line) => line !== '');
    assert.match(lines[lines.length - 1], /^sigil: this node's certificate has been revoked: /);
    assert.match(lines[lines.length - 1], new RegExp(`node ${nodeId} has been revoked`));
    assert.doesNotMatch(stderr, /ECONNRESET/);
  });

  test('a running agent stops with exit 1 when its node is revoked while it runs', async () => {
    const dir = await enrolledNode();
    const { nodeId } = nodeFile(dir);
    // A stale bundle.pem (the root alone): the agent's first refresh replaces
    // it and logs "trust bundle updated", so the revocation below happens
    // while the agent runs with a working connection.
    const bundle = readFileSync(join(dir, 'bundle.pem'), 'utf8');
    const rootOnly =
      bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/)?.[0] ?? '';
    assert.notEqual(rootOnly, bundle);
    writeFileSync(join(dir, 'bundle.pem'), rootOnly);
    const child = spawn(
      process.execPath,
      [join(repoRoot, 'bin', 'sigil.js'), 'agent', '--dir', dir, '--json', '--bundle-refresh', '1s'],
      { stdio: ['ignore', 'pipe', 'pipe'], timeout: 90_000 },
    );
    let stderr = '';
    let refreshed!: () => void;
    const firstRefresh = new Promise<void>((resolve) => {
      refreshed = resolve;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (stderr.includes('trust bundle updated')) refreshed();
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await firstRefresh;
    await server.json(['node', 'revoke', nodeId]);
    assert.equal(await exited, 1, stderr);
    const lines = stderr.split('\n').filter((line) => line !== '');
    assert.match(lines[lines.length - 1], /^sigil: this node's certificate has been revoked: /);
  });

  test('a certificate revoked for keyCompromise ends the node: --once exits 1', async () => {
    const dir = await enrolledNode();
    await server.json(['cert', 'revoke', serialOf(dir), '--reason', 'keyCompromise']);
    const before = snapshot(dir);
    assertRefused(await sigil(['agent', '--dir', dir, '--once']), REVOKED);
    assert.deepEqual(snapshot(dir), before);
  });

  test('a certificate revoked as superseded (the key is still good): --once gets a new one by re-joining', async () => {
    const dir = await enrolledNode();
    const old = serialOf(dir);
    await server.json(['cert', 'revoke', old, '--reason', 'superseded']);
    const result = await sigil(['agent', '--dir', dir, '--once', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { action: string; serial: string; previousSerial: string };
    assert.equal(out.action, 'rejoined');
    assert.equal(out.previousSerial, old);
    assert.equal(out.serial, serialOf(dir));
    assert.notEqual(out.serial, old);
  });

  test('NodeAgent emits "revoked" and throws NodeRevokedError, naming the node', async () => {
    const dir = await enrolledNode();
    const { nodeId } = nodeFile(dir);
    const agent = await NodeAgent.open({ dir });
    try {
      await server.json(['node', 'revoke', nodeId]);
      await assert.rejects(agent.refreshTrustBundle(), (error: unknown) => {
        assert.ok(error instanceof NodeRevokedError, String(error));
        assert.equal(error.nodeId, nodeId);
        assert.equal(error.code, 'permission_denied');
        return true;
      });
      const revoked = new Promise<NodeRevokedError>((resolve) => agent.once('revoked', resolve));
      agent.start();
      assert.ok((await revoked) instanceof NodeRevokedError);
      assert.throws(() => agent.start(), NodeRevokedError, 'a stopped agent does not start again');
    } finally {
      await agent.close();
    }
  });
});

describe('an unreachable server is not a revocation', () => {
  test('--once against a stopped server says "cannot reach the sigil server"', async () => {
    const own = await startTestServer();
    const dir = join(tempDir('sigil-node-'), 'node');
    assert.equal((await enrol(await own.token('--auto-approve'), dir)).code, 0);
    await own.close();
    const before = snapshot(dir);
    const result = await sigil(['agent', '--dir', dir, '--once']);
    assertRefused(result, /cannot reach the sigil server/);
    assert.doesNotMatch(result.stderr, REVOKED);
    assert.deepEqual(snapshot(dir), before);
  });
});
