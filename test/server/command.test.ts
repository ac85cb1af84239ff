// The real `sigil server` command as a subprocess: bootstrap output and
// files, serving, SIGTERM/SIGINT → graceful exit 0, restart on the same data
// directory, SIGIL_* environment, and one-line refusals of bad flags.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import type { ServerInfoFile } from '../../src/server/data-directory.ts';
import { repoRoot } from '../support/cli.ts';
import { failureOf } from '../support/failure.ts';
import { tempDir } from '../support/temp-dir.ts';
import {
  adminIdentity,
  call,
  clients,
  credentialsFor,
  FREE_PORTS,
  serverFlags,
  spawnServer,
  waitForServer,
} from './helpers.ts';

describe('sigil server (subprocess)', () => {
  const dataDir = join(tempDir(), 'state');

  test('bootstraps an empty data directory, prints the CA fingerprint, serves, and exits 0 on SIGTERM', async () => {
    const server = spawnServer(serverFlags(dataDir, 'trace'));
    const info = await waitForServer(server, dataDir);

    const out = server.stdout();
    assert.match(out, new RegExp(`CA fingerprint \\(SHA-256\\): ${info.rootFingerprint}`));
    assert.match(out, /sigil token create --data /);
    assert.match(out, new RegExp(`serving sigil\\.internal as replica ${info.replicaId} on ${info.listen}`));
    for (const name of ['admin.pem', 'admin.key', 'store.key']) {
      assert.equal(statSync(join(dataDir, name)).mode & 0o777, 0o600, name);
    }
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
    // Logs are JSON lines on stderr (not a TTY), without secrets.
    const firstLog = JSON.parse(server.stderr().split('\n')[0]) as { level: string };
    assert.equal(typeof firstLog.level, 'string');
    assert.doesNotMatch(server.stderr(), /PRIVATE KEY/);

    assert.equal((await fetch(`${info.httpUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${info.httpUrl}/readyz`)).status, 200);
    const admin = clients(info.listen, credentialsFor(dataDir, adminIdentity(dataDir)));
    let token: string;
    try {
      const status = await call(admin.admin, admin.admin.getStatus, {});
      assert.equal(status.rootFingerprint, info.rootFingerprint);
      const created = await call(admin.admin, admin.admin.createToken, {
        ttlSeconds: 0,
        uses: 0,
        autoApprove: false,
        name: 'log check',
        replica: false,
      });
      token = created.token;
      // A refused Register carrying the token's secret: logged (trace level), the secret is not.
      const parsed = parseJoinToken(token);
      await failureOf(
        call(admin.enrolment, admin.enrolment.register, {
          tokenId: parsed.id,
          tokenSecret: parsed.secret,
          possession: { spki: Buffer.from('x'), challenge: Buffer.alloc(32), signature: Buffer.alloc(8) },
          name: '',
        }),
      );
    } finally {
      admin.close();
    }

    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.stderr());
    assert.match(server.stderr(), /"msg":"stopped"/);
    assert.match(server.stderr(), /"msg":"call refused"/, 'trace logging was on');
    const secret = parseJoinToken(token);
    for (const text of [server.stdout(), server.stderr()]) {
      assert.ok(!text.includes(token), 'the token is not in the output');
      assert.ok(!text.includes(secret.secret.toString('base64')), 'the token secret is not in the output');
      assert.ok(!text.includes(secret.secret.toString('hex')), 'the token secret is not in the output');
    }
  });

  test('a restart on the same data directory serves the same CA without bootstrapping; SIGINT exits 0', async () => {
    const before = JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8')) as ServerInfoFile;
    const adminBefore = readFileSync(join(dataDir, 'admin.pem'), 'utf8');
    // The data directory comes from $SIGIL_DATA this time.
    const server = spawnServer(FREE_PORTS, { SIGIL_DATA: dataDir });
    const info = await waitForServer(server, dataDir);
    assert.equal(info.rootFingerprint, before.rootFingerprint);
    assert.equal(info.replicaId, before.replicaId);
    assert.doesNotMatch(server.stdout(), /bootstrapped/);
    assert.equal(readFileSync(join(dataDir, 'admin.pem'), 'utf8'), adminBefore, 'admin.pem untouched');
    server.child.kill('SIGINT');
    assert.equal(await server.exited, 0, server.stderr());
  });

  test('bad flags are refused with one line, changing nothing: exit 2 for a malformed value, 1 for one the server refuses', async () => {
    const fresh = join(tempDir(), 'never-created');
    const listen = spawnServer(['--data', fresh, '--listen', 'nonsense']);
    assert.equal(await listen.exited, 2);
    assert.match(
      listen.stderr(),
      /option '--listen <host:port>' argument 'nonsense' is invalid\. --listen must be HOST:PORT \(IPv6 in brackets, e\.g\. \[::1\]:7443\), got "nonsense"/,
    );
    assert.equal(existsSync(fresh), false);

    const http = spawnServer(['--data', fresh, '--http-listen', '0.0.0.0:0']);
    assert.equal(await http.exited, 1);
    assert.match(http.stderr(), /^sigil: --http-listen .*loopback only/m);

    const store = spawnServer(['--data', fresh, '--store', 'mysql://root:hunter2@db/sigil']);
    assert.equal(await store.exited, 1);
    assert.match(store.stderr(), /^sigil: --store must be 'sqlite' or a postgres:\/\//m);
    assert.doesNotMatch(store.stderr(), /hunter2/);
  });

  test('npm start runs `sigil server` as the process that gets signals', () => {
    // `exec` replaces npm's shell with node, so Ctrl-C/kill reach the server itself.
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    assert.equal(pkg.scripts.start, 'exec node bin/sigil.js server');
  });
});
