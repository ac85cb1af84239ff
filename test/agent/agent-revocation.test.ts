// A revoked node's agent stops and says so (issue #10): `sigil agent --once`
// and `sigil agent` exit 1 with "this node's certificate has been revoked"
// instead of "cannot reach the sigil server" or running forever; a node whose
// certificate alone was revoked (the key is still good) gets a new one; a
// server that is down is still reported as unreachable, never as a
// revocation. The agent learns it from the control plane's anonymous answer
// (Rejoin), see src/agent/node-revoked.ts. Nothing here asserts on time: the
// deadlines only keep a broken build from hanging.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { NodeAgent } from '../../src/agent/agent.ts';
import { NodeRevokedError } from '../../src/agent/node-revoked.ts';
import { snapshot } from '../cli/pki-helpers.ts';
import { type RunResult, sigil, startSigil } from '../support/cli.ts';
import { assertRefused } from '../support/refusals.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';
import { enrol, nodeFile, startTestServer } from './server-fixture.ts';

const server = await startTestServer();

/** The serial of the node's cert.pem. */
function certificateSerial(dir: string): string {
  return serialOf(readFileSync(join(dir, 'cert.pem')));
}

/** Runs the long-lived `sigil agent` to its exit. */
function runAgent(args: readonly string[]): Promise<RunResult> {
  // Generous: a broken agent that never exits fails the test instead of hanging it.
  return startSigil(['agent', ...args], { timeoutMs: 90_000 }).result;
}

const REVOKED = /this node's certificate has been revoked/;

describe("a revoked node's agent", { concurrency: 4 }, () => {
  test('sigil agent --once (nothing due) exits 1 with "this node\'s certificate has been revoked"', async () => {
    const dir = await server.enrolledNode();
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
    const dir = await server.enrolledNode();
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
    const dir = await server.enrolledNode();
    const { nodeId } = nodeFile(dir);
    // A stale bundle.pem (the root alone): the agent's first refresh replaces
    // it and logs "trust bundle updated", so the revocation below happens
    // while the agent runs with a working connection.
    const bundle = readFileSync(join(dir, 'bundle.pem'), 'utf8');
    const rootOnly =
      bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/)?.[0] ?? '';
    assert.notEqual(rootOnly, bundle);
    writeFileSync(join(dir, 'bundle.pem'), rootOnly);
    const agent = startSigil(['agent', '--dir', dir, '--json', '--bundle-refresh', '1s'], {
      timeoutMs: 90_000,
    });
    await agent.printed('trust bundle updated');
    await server.json(['node', 'revoke', nodeId]);
    assert.equal(await agent.exited, 1, agent.stderr());
    const stderr = agent.stderr();
    const lines = stderr.split('\n').filter((line) => line !== '');
    assert.match(lines[lines.length - 1], /^sigil: this node's certificate has been revoked: /);
  });

  test('a certificate revoked for keyCompromise ends the node: --once exits 1', async () => {
    const dir = await server.enrolledNode();
    await server.json(['cert', 'revoke', certificateSerial(dir), '--reason', 'keyCompromise']);
    const before = snapshot(dir);
    assertRefused(await sigil(['agent', '--dir', dir, '--once']), REVOKED);
    assert.deepEqual(snapshot(dir), before);
  });

  test('a certificate revoked as superseded (the key is still good): --once gets a new one by re-joining', async () => {
    const dir = await server.enrolledNode();
    const old = certificateSerial(dir);
    await server.json(['cert', 'revoke', old, '--reason', 'superseded']);
    const result = await sigil(['agent', '--dir', dir, '--once', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { action: string; serial: string; previousSerial: string };
    assert.equal(out.action, 'rejoined');
    assert.equal(out.previousSerial, old);
    assert.equal(out.serial, certificateSerial(dir));
    assert.notEqual(out.serial, old);
  });

  test('NodeAgent emits "revoked" and throws NodeRevokedError, naming the node', async () => {
    const dir = await server.enrolledNode();
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
