// `sigil server` checks that it can listen before it touches its data
// directory (issue #10: a busy port used to leave a bootstrapped directory
// behind, and the admin banner was never shown again). A refused start
// exits 1 with one line naming the address and the flag, and leaves the data
// directory as it was (or not created); the next start bootstraps and shows
// the banner.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { startServer } from '../../src/server/start-server.ts';
import { snapshot } from '../cli/pki-helpers.ts';
import { tempDir } from '../support/temp-dir.ts';
import { FREE_PORTS, spawnServer, waitForServer } from './helpers.ts';

/** A TCP listener holding a port, as another program would. */
async function busyPort(host = '127.0.0.1'): Promise<number> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen({ host, port: 0 }, resolve));
  after(() => holder.close());
  return (holder.address() as net.AddressInfo).port;
}

describe('sigil server start-up order', { concurrency: 3 }, () => {
  test('a busy --listen port: exit 1, one line, no data directory created; the next start shows the banner', async () => {
    const port = await busyPort();
    const dataDir = join(tempDir(), 'data');
    const refused = await spawnServer([
      '--data',
      dataDir,
      '--listen',
      `127.0.0.1:${port}`,
      '--http-listen',
      '127.0.0.1:0',
    ]).result;
    assert.equal(refused.code, 1, refused.stderr);
    assert.equal(refused.stdout, '');
    assert.equal(
      refused.stderr,
      `sigil: cannot listen on 127.0.0.1:${port} (--listen): the address is already in use (EADDRINUSE: another sigil server, or another program)\n`,
    );
    assert.equal(existsSync(dataDir), false, 'the data directory was not created');

    const server = spawnServer(['--data', dataDir, ...FREE_PORTS]);
    try {
      await waitForServer(server, dataDir);
      assert.match(server.stdout(), /^sigil: bootstrapped trust domain sigil\.internal$/m);
      assert.match(server.stdout(), /admin identity: .*admin\.pem/);
      assert.ok(existsSync(join(dataDir, 'admin.pem')));
    } finally {
      server.child.kill('SIGTERM');
      assert.equal(await server.exited, 0, server.stderr());
    }
  });

  test('a busy --http-listen port: an existing empty data directory is left exactly as it was', async () => {
    const port = await busyPort();
    const dataDir = join(tempDir(), 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const mode = statSync(dataDir).mode;
    const refused = await spawnServer([
      '--data',
      dataDir,
      '--listen',
      '127.0.0.1:0',
      '--http-listen',
      `127.0.0.1:${port}`,
    ]).result;
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(
      refused.stderr,
      new RegExp(`^sigil: cannot listen on 127\\.0\\.0\\.1:${port} \\(--http-listen\\): `),
    );
    assert.equal(refused.stderr.split('\n').length, 2, 'one line');
    assert.deepEqual(snapshot(dataDir), {}, 'nothing was written');
    assert.equal(statSync(dataDir).mode, mode);
  });

  test('a bootstrapped data directory is not touched by a start refused for a busy port', async () => {
    const dataDir = join(tempDir(), 'data');
    const first = await startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' });
    assert.ok(first.bootstrapped);
    await first.close(0);
    const before = snapshot(dataDir);
    const port = await busyPort();
    await assert.rejects(
      startServer({ dataDir, listen: `127.0.0.1:${port}`, httpListen: '127.0.0.1:0' }),
      (error: Error) => {
        assert.equal(
          error.message,
          `cannot listen on 127.0.0.1:${port} (--listen): the address is already in use (EADDRINUSE: another sigil server, or another program)`,
        );
        return true;
      },
    );
    assert.deepEqual(snapshot(dataDir), before);
    // And the next start serves the same deployment, with no new admin identity.
    const again = await startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0' });
    try {
      assert.equal(again.bootstrapped, null);
      assert.equal(again.info.rootFingerprint, first.info.rootFingerprint);
    } finally {
      await again.close(0);
    }
  });

  test('an address this host does not have is refused the same way, naming it', async () => {
    const dataDir = join(tempDir(), 'data');
    await assert.rejects(
      startServer({ dataDir, listen: '192.0.2.1:7443', httpListen: '127.0.0.1:0' }),
      /^SigilError: cannot listen on 192\.0\.2\.1:7443 \(--listen\): this host has no such address \(EADDRNOTAVAIL\)$/,
    );
    assert.equal(existsSync(dataDir), false, 'the data directory was not created');
  });
});
