// `sigil enrol` against a real server: the happy paths (auto-approve, NEW →
// approve, --wait, re-running), the files and their modes, `openssl verify`
// as the reference checker, and every refusal as a named test: one line,
// exit 1, and the identity directory exactly as it was (or never created).
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  encodeJoinToken,
  hashTokenSecret,
  newTokenId,
  newTokenSecret,
  parseJoinToken,
} from '../../src/protocol/join-tokens.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { openssl, startSigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { assertRefused } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { enrol, nodeFile, snapshotOrNull, startTestServer } from './server-fixture.ts';

const HOUR = 3_600_000;

const server = await startTestServer();

async function enrolRefused(token: string, problem: RegExp, dir = join(tempDir('sigil-node-'), 'node')) {
  const before = snapshotOrNull(dir);
  const result = await enrol(token, dir);
  assertRefused(result, problem);
  assert.deepEqual(snapshotOrNull(dir), before, 'the identity directory changed');
}

function certificateOf(dir: string): X509Certificate {
  return new X509Certificate(readFileSync(join(dir, 'cert.pem')));
}

describe('sigil enrol', { concurrency: 4 }, () => {
  test('an auto-approve token enrols at once: files written, the certificate verifies against bundle.pem', async () => {
    const token = await server.token('--auto-approve', '--name', 'rack-1');
    const dir = join(tempDir('sigil-node-'), 'node');
    const result = await enrol(token, dir, '--name', 'web-1', '--json');
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as {
      nodeId: string;
      state: string;
      keyType: string;
      certificate: { spiffeId: string; serial: string };
    };
    assert.equal(out.state, 'UP');
    assert.equal(out.keyType, 'ed25519');
    assert.match(out.nodeId, /^n[0-9a-f]{32}$/);

    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
    const verified = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'cert.pem')]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /cert\.pem: OK/);

    const certificate = certificateOf(dir);
    const spiffeId = `spiffe://${server.running.info.trustDomain}/node/${out.nodeId}`;
    assert.equal(certificate.subjectAltName?.includes(`URI:${spiffeId}`), true, certificate.subjectAltName);
    assert.equal(out.certificate.spiffeId, spiffeId);
    assert.equal(certificate.publicKey.asymmetricKeyType, 'ed25519');

    const info = nodeFile(dir);
    assert.deepEqual(info, {
      nodeId: out.nodeId,
      state: 'UP',
      name: 'web-1',
      addresses: [server.running.address],
      rootFingerprint: server.running.info.rootFingerprint,
      trustDomain: server.running.info.trustDomain,
      spiffeId,
    });
  });

  test('re-running enrol in the same directory is idempotent: same node, same key, no token use', async () => {
    const token = await server.token('--auto-approve');
    const dir = join(tempDir('sigil-node-'), 'node');
    assert.equal((await enrol(token, dir)).code, 0);
    const key = readFileSync(join(dir, 'key.pem'), 'utf8');
    const first = nodeFile(dir);
    const again = await enrol(token, dir, '--json');
    assert.equal(again.code, 0, again.stderr);
    const out = JSON.parse(again.stdout) as { nodeId: string; state: string; reusedKey: boolean };
    assert.equal(out.nodeId, first.nodeId);
    assert.equal(out.state, 'UP');
    assert.equal(out.reusedKey, true);
    assert.equal(readFileSync(join(dir, 'key.pem'), 'utf8'), key);
    assert.equal(nodeFile(dir).nodeId, first.nodeId);
  });

  test('without auto-approve the node is NEW until `sigil node approve`, then enrol again makes it UP', async () => {
    const token = await server.token();
    const dir = join(tempDir('sigil-node-'), 'node');
    const pending = await enrol(token, dir);
    assert.equal(pending.code, 0, pending.stderr);
    const nodeId = /registered node (n[0-9a-f]{32})/.exec(pending.stdout)?.[1];
    assert.ok(nodeId, pending.stdout);
    assert.match(pending.stdout, new RegExp(`waiting for approval \\(sigil node approve ${nodeId}\\)`));
    assert.equal(nodeFile(dir).state, 'NEW');
    assert.throws(() => statSync(join(dir, 'cert.pem')), /ENOENT/);

    const listed = await server.json<{ nodes: { id: string; state: string }[] }>([
      'node',
      'list',
      '--state',
      'NEW',
    ]);
    assert.ok(listed.nodes.some((node) => node.id === nodeId));
    const approved = await server.json<{ id: string; state: string }>(['node', 'approve', nodeId]);
    assert.equal(approved.state, 'UP');

    const up = await enrol(token, dir);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, new RegExp(`enrolled node ${nodeId} .*: UP`));
    assert.equal(nodeFile(dir).state, 'UP');
    const verified = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'cert.pem')]);
    assert.equal(verified.code, 0, verified.stderr);
  });

  test('--wait polls until an operator approves the node', async () => {
    const token = await server.token();
    const dir = join(tempDir('sigil-node-'), 'node');
    const enrolling = startSigil(['enrol', token, '--dir', dir, '--wait', '--json'], { timeoutMs: 60_000 });
    // The node appears as NEW once enrol has registered; approve it then.
    const nodeId = await eventually('enrol --wait to register the node', () => {
      try {
        return nodeFile(dir).nodeId;
      } catch {
        return undefined; // not written yet
      }
    });
    await server.json(['node', 'approve', nodeId]);
    const { code, stdout, stderr } = await enrolling.result;
    assert.equal(code, 0, stderr);
    const out = JSON.parse(stdout) as { nodeId: string; state: string };
    assert.equal(out.nodeId, nodeId);
    assert.equal(out.state, 'UP');
    assert.equal(nodeFile(dir).state, 'UP');
  });

  test('--key-type p256 gives an ECDSA node key', async () => {
    const token = await server.token('--auto-approve');
    const dir = join(tempDir('sigil-node-'), 'node');
    const result = await enrol(token, dir, '--key-type', 'p256');
    assert.equal(result.code, 0, result.stderr);
    assert.equal(certificateOf(dir).publicKey.asymmetricKeyType, 'ec');
  });
});

describe('sigil enrol refusals', { concurrency: 4 }, () => {
  test('a reused single-use token is refused', async () => {
    const token = await server.token('--auto-approve');
    assert.equal((await enrol(token, join(tempDir('sigil-node-'), 'first'))).code, 0);
    await enrolRefused(token, /join token tn[0-9a-f]{16} has already been used \(1 of 1 uses\)/);
  });

  test('an expired token is refused', async () => {
    // A token that expired an hour ago, put straight into the server's store
    // (the Store API, as a second connection): no waiting for a clock.
    const { addresses, rootFingerprint } = parseJoinToken(await server.token('--auto-approve'));
    const id = newTokenId('node');
    const secret = newTokenSecret();
    const store = await openSqliteStore(join(server.dataDir, 'sigil.db'));
    try {
      await store.insertToken({
        id,
        secretHash: hashTokenSecret(secret),
        name: null,
        usesTotal: 1,
        usesLeft: 1,
        autoApprove: true,
        createdAt: new Date(Date.now() - 2 * HOUR),
        expiresAt: new Date(Date.now() - HOUR),
        revokedAt: null,
        createdBy: 'spiffe://sigil.internal/admin/admin',
      });
    } finally {
      await store.close();
    }
    const token = encodeJoinToken({ addresses, rootFingerprint, id, secret });
    await enrolRefused(token, new RegExp(`join token ${id} expired at `));
  });

  test('a revoked token is refused', async () => {
    const token = await server.token('--auto-approve');
    const { id } = parseJoinToken(token);
    const revoked = await server.json<{ alreadyRevoked: boolean }>(['token', 'revoke', id]);
    assert.equal(revoked.alreadyRevoked, false);
    await enrolRefused(token, new RegExp(`join token ${id} has been revoked`));
  });

  test('a garbage token is refused before anything is contacted or created', async () => {
    await enrolRefused('not-a-token', /malformed join token: it must start with "sigil1\."/);
    await enrolRefused('sigil1.!!!', /malformed join token: not base64url/);
    await enrolRefused('sigil2.AAAA', /join token version 2 is not supported/);
  });

  test('a token with a wrong secret is refused', async () => {
    const parsed = parseJoinToken(await server.token('--auto-approve'));
    const forged = encodeJoinToken({ ...parsed, secret: Buffer.alloc(32, 7) });
    await enrolRefused(forged, /^sigil: invalid join token\n$/);
  });

  test('a token pinning another CA is refused: the server is not trusted', async () => {
    const parsed = parseJoinToken(await server.token('--auto-approve'));
    const wrong = encodeJoinToken({ ...parsed, rootFingerprint: 'ab'.repeat(32) });
    await enrolRefused(
      wrong,
      /is not the pinned CA: none of its 1 root certificate\(s\) has SHA-256 fingerprint abab/,
    );
  });

  test('a replica join token is refused by enrol', async () => {
    const token = await server.token('--replica');
    await enrolRefused(token, /this is a replica join token/);
  });

  test('a token whose server cannot be reached is refused naming the address', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    const parsed = parseJoinToken(await server.token('--auto-approve'));
    const dead = encodeJoinToken({ ...parsed, addresses: [`127.0.0.1:${port}`] });
    await enrolRefused(dead, new RegExp(`cannot reach the sigil server at 127\\.0\\.0\\.1:${port}`));
  });

  test('a directory holding another CA identity is refused', async () => {
    const dir = join(tempDir('sigil-node-'), 'node');
    assert.equal((await enrol(await server.token('--auto-approve'), dir)).code, 0);
    const other = await startTestServer();
    await enrolRefused(
      await other.token('--auto-approve'),
      /already holds the identity of node n[0-9a-f]{32} under another CA/,
      dir,
    );
  });
});
