// The admin identity renews (issue #10): the server renews admin.pem in its
// data directory once it is in its renewal window (same key, same SPIFFE
// ID, a new year), and `sigil status` shows how long the identity it called
// with has left, with a warning once it is in that window. The renewal
// window is judged by an injected clock; the certificates are real.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { identityExpiry } from '../../src/cli/identity-expiry.ts';
import { readPrivateKey } from '../../src/pki/keys.ts';
import { AdminRenewal } from '../../src/server/admin-renewal.ts';
import { type RunningServer, startServer } from '../../src/server/start-server.ts';
import { callerFromPem, DAY } from '../authority/helpers.ts';
import { snapshot } from '../cli/pki-helpers.ts';
import { openssl, sigil } from '../support/cli.ts';
import { capturingLogger } from '../support/log-lines.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';

async function running(): Promise<RunningServer> {
  const server = await startServer({
    dataDir: join(tempDir(), 'data'),
    listen: '127.0.0.1:0',
    httpListen: '127.0.0.1:0',
    timers: false,
  });
  after(() => server.close(0));
  return server;
}

const adminPem = (server: RunningServer) => readFileSync(join(server.dataDir, 'admin.pem'), 'utf8');
const leafOf = (pem: string) => new X509Certificate(pem);

describe('the admin identity renews', { concurrency: 2 }, () => {
  test('in its renewal window the server renews admin.pem in place: same key and SPIFFE ID, a new year', async () => {
    const server = await running();
    const before = leafOf(adminPem(server));
    const key = readFileSync(join(server.dataDir, 'admin.key'), 'utf8');
    const lines: Record<string, unknown>[] = [];
    // 300 days on, a one-year certificate is past 2/3 of its life.
    const renewal = new AdminRenewal({
      dataDir: server.dataDir,
      authority: server.authority,
      logger: capturingLogger(lines),
      now: () => new Date(Date.now() + 300 * DAY),
    });
    assert.equal(await renewal.check(), 'renewed');
    const after = leafOf(adminPem(server));
    assert.notEqual(serialOf(after), serialOf(before));
    assert.equal(after.subjectAltName, before.subjectAltName, 'the same SPIFFE ID');
    // A year from now (the original was issued moments ago, so not later by much).
    assert.ok(new Date(after.validTo) >= new Date(before.validTo));
    assert.ok(new Date(after.validTo).getTime() - Date.now() > 360 * DAY);
    assert.equal(readFileSync(join(server.dataDir, 'admin.key'), 'utf8'), key, 'admin.key is not touched');
    assert.ok(after.checkPrivateKey(readPrivateKey(key)), 'admin.key still matches');
    assert.equal(statSync(join(server.dataDir, 'admin.pem')).mode & 0o777, 0o600);
    const verified = await openssl([
      'verify',
      '-CAfile',
      join(server.dataDir, 'ca.pem'),
      '-untrusted',
      join(server.dataDir, 'admin.pem'),
      join(server.dataDir, 'admin.pem'),
    ]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.ok(
      lines.some((line) => line.msg === 'renewed the admin identity in the data directory (same key)'),
    );
    // The renewed identity works: sigil status as the admin, and it reports the new expiry.
    const status = await sigil(['status', '--data', server.dataDir, '--json']);
    assert.equal(status.code, 0, status.stderr);
    const identity = (JSON.parse(status.stdout) as { identity: { notAfter: string; warning: string | null } })
      .identity;
    assert.equal(identity.notAfter, new Date(after.validTo).toISOString());
    assert.equal(identity.warning, null);
  });

  test('outside its renewal window nothing changes', async () => {
    const server = await running();
    const before = snapshot(server.dataDir);
    const renewal = new AdminRenewal({
      dataDir: server.dataDir,
      authority: server.authority,
      logger: capturingLogger([]),
    });
    assert.equal(await renewal.check(), 'not-due');
    assert.deepEqual(snapshot(server.dataDir), before);
  });

  test('a revoked admin certificate is not renewed, and says so in the log', async () => {
    const server = await running();
    const pem = adminPem(server);
    const admin = callerFromPem(pem, server.authority);
    await server.authority.revoke(admin, serialOf(leafOf(pem)), 'superseded');
    const lines: Record<string, unknown>[] = [];
    const renewal = new AdminRenewal({
      dataDir: server.dataDir,
      authority: server.authority,
      logger: capturingLogger(lines),
      now: () => new Date(Date.now() + 300 * DAY),
    });
    assert.equal(await renewal.check(), 'refused');
    assert.equal(adminPem(server), pem);
    assert.ok(
      lines.some((line) => /was not renewed: admin certificate [0-9a-f]+ is revoked/.test(String(line.msg))),
      JSON.stringify(lines),
    );
  });

  test('a replica without admin.pem has nothing to renew', async () => {
    const server = await running();
    rmSync(join(server.dataDir, 'admin.pem'));
    const renewal = new AdminRenewal({
      dataDir: server.dataDir,
      authority: server.authority,
      logger: capturingLogger([]),
      now: () => new Date(Date.now() + 300 * DAY),
    });
    assert.equal(await renewal.check(), 'absent');
  });

  test('a certificate that is not an admin identity of this deployment is refused', async () => {
    const server = await running();
    const other = await running();
    await assert.rejects(
      server.authority.renewAdminIdentity(leafOf(adminPem(other)).raw),
      /is not an admin identity issued by this deployment/,
    );
  });
});

describe('sigil status and the expiry of the identity it calls with', () => {
  test('a fresh admin identity: when it ends and when renewal starts, no warning', async () => {
    const server = await running();
    const result = await sigil(['status', '--data', server.dataDir]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /called as: +spiffe:\/\/sigil\.internal\/admin\/\S+, valid until \S+ \(renewal from \S+\)/,
    );
    assert.doesNotMatch(result.stdout, /warning/);
  });

  test('in its renewal window, a warning that says what renews it; past its end, that it expired', async () => {
    const server = await running();
    const pem = adminPem(server);
    const notAfter = new Date(leafOf(pem).validTo);
    const fresh = identityExpiry(pem, server.dataDir, { fromDataDirectory: true });
    assert.equal(fresh.warning, null);
    assert.equal(fresh.notAfter, notAfter.toISOString());
    assert.match(fresh.spiffeId ?? '', /^spiffe:\/\/sigil\.internal\/admin\//);

    const late = identityExpiry(pem, server.dataDir, {
      fromDataDirectory: true,
      now: new Date(notAfter.getTime() - 20 * DAY),
    });
    assert.equal(late.daysLeft, 20);
    assert.match(late.warning ?? '', /expires on .* \(in 20 days\): `sigil server` renews this admin\.pem/);
    const copied = identityExpiry(pem, '/elsewhere', {
      fromDataDirectory: false,
      now: new Date(notAfter.getTime() - DAY / 2),
    });
    assert.match(
      copied.warning ?? '',
      /from \/elsewhere\) expires on .* \(in less than a day\): renew it before then/,
    );
    const gone = identityExpiry(pem, server.dataDir, {
      fromDataDirectory: true,
      now: new Date(notAfter.getTime() + DAY),
    });
    assert.match(gone.warning ?? '', /expired on /);
    // Exactly at two thirds of its life the window opens.
    const start = new Date(leafOf(pem).validFrom).getTime();
    const opens = start + ((notAfter.getTime() - start) * 2) / 3;
    assert.equal(
      identityExpiry(pem, 'x', { fromDataDirectory: true, now: new Date(opens - 1000) }).warning,
      null,
    );
    assert.notEqual(
      identityExpiry(pem, 'x', { fromDataDirectory: true, now: new Date(opens + 1000) }).warning,
      null,
    );
  });
});
