// The operator commands (token, node, cert, status, ca export-root) against a
// real server, authenticated with the bootstrap admin identity from the data
// directory: their JSON, their text, how they find the server (flags >
// SIGIL_* environment > files), and their refusals (one line, exit 1).
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { readPrivateKey } from '../../src/pki/keys.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { startServer } from '../../src/server/start-server.ts';
import { enrol, nodeFile, startTestServer } from '../agent/server-fixture.ts';
import { sigil } from '../support/cli.ts';
import { assertRefused, assertUsageError } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const server = await startTestServer();
const fingerprint = server.running.info.rootFingerprint;

interface TokenOut {
  token: string;
  id: string;
  name: string | null;
  usesTotal: number;
  usesLeft: number;
  autoApprove: boolean;
  replica: boolean;
  createdAt: string;
  expiresAt: string;
  revokedAt: string | null;
  state: string;
}

interface NodeOut {
  id: string;
  name: string | null;
  state: string;
  certificateSerial: string | null;
  spiffeId: string | null;
}

interface CertificateOut {
  serial: string;
  profile: string;
  sans: string[];
  requester: string;
  revoked: boolean;
  revocationReason: string | null;
}

async function enrolledNode(): Promise<{ dir: string; nodeId: string }> {
  const dir = join(tempDir('sigil-node-'), 'node');
  const result = await enrol(await server.token('--auto-approve'), dir);
  assert.equal(result.code, 0, result.stderr);
  return { dir, nodeId: nodeFile(dir).nodeId };
}

async function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

describe('operator commands', { concurrency: 4 }, () => {
  test('sigil status --json as admin describes the control plane', async () => {
    const status = await server.json<{
      server: string;
      trustDomain: string;
      rootFingerprint: string;
      replicaId: string;
      store: string;
      rootKeyOnline: boolean;
      certificates: { issued: number; revoked: number };
      nodes: { new: number; up: number; revoked: number };
      replicas: { replicaId: string; intermediateSerial: string; intermediateNotAfter: string }[];
    }>(['status']);
    assert.equal(status.server, server.running.address);
    assert.equal(status.trustDomain, server.running.info.trustDomain);
    assert.equal(status.rootFingerprint, fingerprint);
    assert.equal(status.replicaId, server.running.info.replicaId);
    assert.equal(status.store, 'sqlite');
    assert.equal(status.rootKeyOnline, true);
    assert.ok(status.certificates.issued >= 3, 'intermediate, server and admin certificates at least');
    assert.equal(typeof status.nodes.up, 'number');
    assert.deepEqual(
      status.replicas.map((replica) => replica.replicaId),
      [server.running.info.replicaId],
    );
    const text = await server.cli(['status']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`root CA: +${fingerprint} \\(key online\\)`));
  });

  test('token create prints exactly one line, the token, and nothing else off a terminal', async () => {
    const result = await server.cli(['token', 'create']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
    assert.match(result.stdout, /^sigil1\.[A-Za-z0-9_-]+\n$/);
    const token = parseJoinToken(result.stdout);
    assert.equal(token.rootFingerprint, fingerprint);
    assert.deepEqual(token.addresses, server.running.info.advertise);
  });

  test('token create --json carries the token and its summary; list and revoke follow it', async () => {
    const created = await server.json<TokenOut>([
      'token',
      'create',
      '--ttl',
      '1h',
      '--uses',
      '3',
      '--auto-approve',
      '--name',
      'rack-4',
    ]);
    assert.equal(parseJoinToken(created.token).id, created.id);
    assert.equal(created.name, 'rack-4');
    assert.equal(created.usesTotal, 3);
    assert.equal(created.usesLeft, 3);
    assert.equal(created.autoApprove, true);
    assert.equal(created.replica, false);
    assert.equal(created.state, 'active');
    assert.equal(Date.parse(created.expiresAt) - Date.parse(created.createdAt), 3_600_000);

    const listed = await server.json<{ tokens: TokenOut[] }>(['token', 'list']);
    const entry = listed.tokens.find((token) => token.id === created.id);
    assert.ok(entry);
    assert.equal('token' in entry, false, 'listings never carry the token string');
    assert.doesNotMatch(JSON.stringify(listed), /sigil1\./);

    const revoked = await server.json<{ id: string; alreadyRevoked: boolean }>([
      'token',
      'revoke',
      created.id,
    ]);
    assert.deepEqual(revoked, { id: created.id, revoked: true, alreadyRevoked: false });
    const again = await server.json<{ alreadyRevoked: boolean }>(['token', 'revoke', created.id]);
    assert.equal(again.alreadyRevoked, true);
    const after = await server.json<{ tokens: TokenOut[] }>(['token', 'list']);
    assert.equal(after.tokens.find((token) => token.id === created.id)?.state, 'revoked');
  });

  test('token create --replica makes a replica token', async () => {
    const created = await server.json<TokenOut>(['token', 'create', '--replica']);
    assert.equal(created.replica, true);
    assert.match(created.id, /^tr[0-9a-f]{16}$/);
  });

  test('node list, show, approve and revoke, with --json', async () => {
    const dir = join(tempDir('sigil-node-'), 'node');
    assert.equal((await enrol(await server.token(), dir, '--name', 'db-1')).code, 0);
    const { nodeId } = nodeFile(dir);

    const pending = await server.json<{ nodes: NodeOut[] }>(['node', 'list', '--state', 'NEW']);
    assert.ok(pending.nodes.some((node) => node.id === nodeId && node.state === 'NEW'));
    const shown = await server.json<NodeOut>(['node', 'show', nodeId]);
    assert.equal(shown.name, 'db-1');
    assert.equal(shown.state, 'NEW');
    assert.equal(shown.certificateSerial, null);

    const approved = await server.json<NodeOut>(['node', 'approve', nodeId]);
    assert.equal(approved.state, 'UP');
    assert.match(approved.certificateSerial ?? '', /^[0-9a-f]+$/);
    assert.equal(approved.spiffeId, `spiffe://${server.running.info.trustDomain}/node/${nodeId}`);
    const up = await server.json<{ nodes: NodeOut[] }>(['node', 'list', '--state', 'UP']);
    assert.ok(up.nodes.some((node) => node.id === nodeId));

    const revoked = await server.json<NodeOut>([
      'node',
      'revoke',
      nodeId,
      '--reason',
      'cessationOfOperation',
    ]);
    assert.equal(revoked.state, 'REVOKED');
    const certificates = await server.json<{ certificates: CertificateOut[] }>([
      'cert',
      'list',
      '--requester',
      nodeId,
      '--all',
    ]);
    assert.ok(certificates.certificates.length > 0);
    for (const certificate of certificates.certificates) {
      assert.equal(certificate.revoked, true);
      assert.equal(certificate.revocationReason, 'cessationOfOperation');
    }
    const text = await server.cli(['node', 'list']);
    assert.match(text.stdout, new RegExp(`${nodeId} +db-1 +REVOKED`));
  });

  test('cert list pages, filters and --all; cert show and cert revoke', async () => {
    const { nodeId } = await enrolledNode();
    const all = await server.json<{ certificates: CertificateOut[]; nextPageToken: string | null }>([
      'cert',
      'list',
      '--all',
    ]);
    assert.equal(all.nextPageToken, null);
    assert.ok(all.certificates.length >= 4);
    const first = await server.json<{ certificates: CertificateOut[]; nextPageToken: string | null }>([
      'cert',
      'list',
      '--page-size',
      '1',
    ]);
    assert.equal(first.certificates.length, 1);
    assert.ok(first.nextPageToken);
    const second = await server.json<{ certificates: CertificateOut[] }>([
      'cert',
      'list',
      '--page-size',
      '1',
      '--page-token',
      first.nextPageToken,
    ]);
    assert.notEqual(second.certificates[0].serial, first.certificates[0].serial);
    const paged = await server.json<{ certificates: CertificateOut[] }>([
      'cert',
      'list',
      '--page-size',
      '1',
      '--all',
    ]);
    assert.ok(paged.certificates.length >= all.certificates.length);

    const nodes = await server.json<{ certificates: CertificateOut[] }>([
      'cert',
      'list',
      '--profile',
      'node',
      '--requester',
      nodeId,
    ]);
    assert.equal(nodes.certificates.length, 1);
    const serial = nodes.certificates[0].serial;
    assert.equal(nodes.certificates[0].profile, 'node');

    const shown = await server.json<CertificateOut>(['cert', 'show', serial.toUpperCase()]);
    assert.equal(shown.serial, serial);
    assert.equal(shown.revoked, false);
    assert.ok(shown.sans.includes(`uri:spiffe://${server.running.info.trustDomain}/node/${nodeId}`));

    const revoked = await server.json<{ serial: string; alreadyRevoked: boolean }>([
      'cert',
      'revoke',
      serial,
      '--reason',
      'keyCompromise',
    ]);
    assert.equal(revoked.alreadyRevoked, false);
    assert.equal(
      (await server.json<{ alreadyRevoked: boolean }>(['cert', 'revoke', serial])).alreadyRevoked,
      true,
    );
    const after = await server.json<CertificateOut>(['cert', 'show', serial]);
    assert.equal(after.revoked, true);
    assert.equal(after.revocationReason, 'keyCompromise');
    const onlyRevoked = await server.json<{ certificates: CertificateOut[] }>([
      'cert',
      'list',
      '--revoked',
      'yes',
      '--all',
    ]);
    assert.ok(onlyRevoked.certificates.every((certificate) => certificate.revoked));
    assert.ok(onlyRevoked.certificates.some((certificate) => certificate.serial === serial));
  });

  test('flags win over SIGIL_* variables, which win over the default data directory', async () => {
    const viaEnv = await sigil(['status', '--json'], { SIGIL_DATA: server.dataDir });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.equal((JSON.parse(viaEnv.stdout) as { rootFingerprint: string }).rootFingerprint, fingerprint);
    const flagWins = await sigil(['status', '--json', '--data', server.dataDir], {
      SIGIL_DATA: '/nonexistent',
    });
    assert.equal(flagWins.code, 0, flagWins.stderr);
    assertRefused(
      await sigil(['status'], { SIGIL_DATA: join(tempDir(), 'nothing') }),
      /server\.json does not exist/,
    );
  });

  test('--server and --ca-fingerprint make server.json unnecessary', async () => {
    const dir = tempDir('sigil-admin-');
    copyFileSync(join(server.dataDir, 'admin.pem'), join(dir, 'admin.pem'));
    copyFileSync(join(server.dataDir, 'admin.key'), join(dir, 'admin.key'));
    const args = ['status', '--json', '--data', dir, '--server', server.running.address];
    const result = await sigil([
      ...args,
      '--ca-fingerprint',
      fingerprint.toUpperCase().match(/../g)?.join(':') ?? '',
    ]);
    assert.equal(result.code, 0, result.stderr);
    const viaEnv = await sigil(args, { SIGIL_CA_FINGERPRINT: fingerprint });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
  });

  test('--identity DIR calls with that identity: a node is not an admin', async () => {
    const { dir } = await enrolledNode();
    assertRefused(await sigil(['node', 'list', '--identity', dir]), /permission|not allowed|admin/i);
  });
});

describe('operator command refusals', { concurrency: 4 }, () => {
  test('a pinned fingerprint that is not the server CA', async () => {
    assertRefused(
      await server.cli(['status', '--server', server.running.address, '--ca-fingerprint', 'ab'.repeat(32)]),
      /is not the pinned CA/,
    );
  });

  test('no server at the address', async () => {
    const port = await freePort();
    assertRefused(
      await server.cli(['status', '--server', `127.0.0.1:${port}`, '--ca-fingerprint', fingerprint]),
      new RegExp(`cannot reach the sigil server at 127\\.0\\.0\\.1:${port}`),
    );
  });

  test('an unknown node', async () => {
    const id = `n${'0'.repeat(32)}`;
    assertRefused(await server.cli(['node', 'show', id]), new RegExp(`node ${id} not found`));
    assertRefused(await server.cli(['node', 'approve', id]), new RegExp(`node ${id} not found`));
  });

  test('a malformed node ID', async () => {
    assertRefused(await server.cli(['node', 'show', 'web-1']), /"web-1" is not a node ID/);
  });

  test('approving a revoked node', async () => {
    const { nodeId } = await enrolledNode();
    await server.json(['node', 'revoke', nodeId]);
    assertRefused(await server.cli(['node', 'approve', nodeId]), /REVOKED and cannot be approved/);
  });

  test('an unknown or malformed serial', async () => {
    assertRefused(await server.cli(['cert', 'show', 'abcdef0123']), /no certificate with serial abcdef0123/);
    assertRefused(await server.cli(['cert', 'revoke', 'abcdef0123']), /certificate abcdef0123 not found/);
  });

  test('an unknown revocation reason', async () => {
    const { nodeId } = await enrolledNode();
    const { certificates } = await server.json<{ certificates: CertificateOut[] }>([
      'cert',
      'list',
      '--requester',
      nodeId,
    ]);
    assertUsageError(
      await server.cli(['cert', 'revoke', certificates[0].serial, '--reason', 'bored']),
      /option '--reason <reason>' argument 'bored' is invalid\. unknown revocation reason "bored"/,
    );
  });

  test('bad token flags', async () => {
    assertRefused(
      await server.cli(['token', 'revoke', 'tn0000000000000000']),
      /join token tn0000000000000000 not found/,
    );
  });

  test('usage errors exit 2', async () => {
    const result = await server.cli(['node', 'list', '--state', 'SLEEPING']);
    assert.equal(result.code, 2);
    const missing = await sigil(['node', 'show']);
    assert.equal(missing.code, 2);
    // Malformed flag values and arguments are bad usage too (see test/cli/usage-errors.test.ts).
    for (const [args, problem] of [
      [['cert', 'show', 'xyz'], /invalid serial "xyz"/],
      [['token', 'create', '--ttl', 'soon'], /invalid duration "soon"/],
      [['token', 'create', '--uses', '0'], /--uses must be a whole number/],
    ] as const) {
      const bad = await server.cli([...args]);
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, problem);
    }
  });
});

describe('sigil ca export-root', () => {
  test('writes root.pem and root.key (0600), takes the key offline, and the server keeps issuing', async () => {
    const dataDir = tempDir('sigil-server-');
    let running = await startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' });
    try {
      const rootFingerprint = running.info.rootFingerprint;
      const out = join(tempDir('sigil-offline-'), 'root');
      // Refused while the server runs: it would keep the key in memory.
      assertRefused(
        await sigil(['ca', 'export-root', '--data', dataDir, '--out', out]),
        /is running on .*; stop it first/,
      );
      await running.close(0);

      const result = await sigil(['ca', 'export-root', '--data', dataDir, '--out', out, '--json']);
      assert.equal(result.code, 0, result.stderr);
      const exported = JSON.parse(result.stdout) as { rootFingerprint: string; removedFromStore: boolean };
      assert.equal(exported.rootFingerprint, rootFingerprint);
      assert.equal(exported.removedFromStore, true);
      for (const file of ['root.pem', 'root.key'])
        assert.equal(statSync(join(out, file)).mode & 0o777, 0o600);
      const root = new X509Certificate(readFileSync(join(out, 'root.pem')));
      assert.equal(createHash('sha256').update(root.raw).digest('hex'), rootFingerprint);
      assert.equal(root.checkPrivateKey(readPrivateKey(readFileSync(join(out, 'root.key')))), true);

      running = await startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' });
      const status = await sigil(['status', '--json', '--data', dataDir]);
      assert.equal(status.code, 0, status.stderr);
      assert.equal((JSON.parse(status.stdout) as { rootKeyOnline: boolean }).rootKeyOnline, false);
      // The intermediate still issues: a node enrols.
      const token = await sigil(['token', 'create', '--auto-approve', '--data', dataDir]);
      const node = join(tempDir('sigil-node-'), 'node');
      assert.equal((await enrol(token.stdout.trim(), node)).code, 0);
      await running.close(0);

      assertRefused(
        await sigil([
          'ca',
          'export-root',
          '--data',
          dataDir,
          '--out',
          join(tempDir('sigil-offline-'), 'again'),
        ]),
        /the root key is already offline/,
      );
    } finally {
      await running.close(0);
    }
  });
});
