// `sigil image base debian:SUITE`: a real Debian base made with mmdebstrap
// (the essential variant, the quickest here: about 25 s, against 35 s for the
// default minbase), stored as `sigil image import` stores a tar, whose /bin/sh
// then runs in a real workload namespace; and every refusal before anything
// runs (a bad suite, a taken tag, no mmdebstrap, not root), each leaving the
// node directory as it was. Without Debian's mirror (no network) the real base
// is skipped with the reason, except under SIGIL_CI=1.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import {
  buildBaseImage,
  DEBIAN_SUITES,
  MMDEBSTRAP,
  parseBaseSource,
} from '../../src/workloads/image-base.ts';
import { importImage, listImages, openImageStore, STANDARD_DEVICES } from '../../src/workloads/images.ts';
import { spawnInNamespaces } from '../../src/workloads/namespace-process.ts';
import { failInCi } from '../support/ci.ts';
import { run, SIGIL_BIN } from '../support/cli.ts';
import { assertRefused, assertUsageError, refusal } from '../support/refusals.ts';
import { tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const asRoot = process.getuid?.() === 0;
/** How long the real base may take (under a minute here) before the command is killed. */
const BASE_TIMEOUT_MS = 10 * 60 * 1000;
/** What a failure to reach Debian's mirror looks like in mmdebstrap's first error line. */
const UNREACHABLE =
  /apt-get update|Failed to fetch|Could not resolve|Temporary failure|Release file|Unable to connect|download/i;

/** Every path under `dir`, relative and sorted: what a refused command must leave as it was. */
function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/** `sigil ARGS…` as a real process, given longer than the helpers' default 30 s. */
function sigil(args: readonly string[], timeoutMs = 60_000) {
  return run(process.execPath, [SIGIL_BIN, ...args], { timeoutMs });
}

async function textOf(stream: Readable | null): Promise<string> {
  if (!stream) return '';
  let text = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) text += chunk;
  return text;
}

/** A stand-in mmdebstrap in `dir` that prints progress and an error, then fails, making nothing. */
function failingMmdebstrap(dir: string): string {
  const path = join(dir, 'mmdebstrap');
  writeFileSync(
    path,
    '#!/bin/sh\necho "I: downloading packages with apt..." >&2\necho "E: boom: no mirror" >&2\necho "E: mmdebstrap failed to run" >&2\nexit 1\n',
  );
  chmodSync(path, 0o755);
  return path;
}

describe('sigil image base: a real Debian base', () => {
  test('debian:bookworm (essential) is made, stored as import stores it, and its /bin/sh runs in a workload', async (t) => {
    const unavailable = workloadsUnavailable(); // root, and the launcher's static busybox
    if (unavailable) return t.skip(unavailable);
    if (!existsSync(MMDEBSTRAP)) {
      failInCi(`${MMDEBSTRAP} is missing`);
      return t.skip(`${MMDEBSTRAP} is missing (apt-get install mmdebstrap)`);
    }
    const node = tempDirFor(t, 'sigil-base-node-');
    const tag = 'test/bookworm:1';
    const result = await sigil(
      ['image', 'base', 'debian:bookworm', '--variant', 'essential', '--tag', tag, '--dir', node, '--json'],
      BASE_TIMEOUT_MS,
    );
    if (
      result.code !== 0 &&
      UNREACHABLE.test(result.stderr.split('\n').findLast((line) => line.startsWith('sigil: ')) ?? '')
    ) {
      const reason = `Debian's mirror is unreachable: ${result.stderr.trim().split('\n').at(-1)}`;
      failInCi(reason);
      return t.skip(reason);
    }
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /^I: /m, 'mmdebstrap progress on stderr');
    const made = JSON.parse(result.stdout) as Record<string, unknown>;
    assert.equal(made.tag, tag);
    assert.equal(made.suite, 'bookworm');
    assert.equal(made.variant, 'essential');
    assert.equal(typeof made.durationMs, 'number');
    assert.ok((made.entries as number) > 1000 && (made.bytes as number) > 10 * 1024 ** 2, result.stdout);
    t.diagnostic(`made ${tag}: ${made.entries} entries, ${made.bytes} bytes in ${made.durationMs} ms`);

    const store = openImageStore(node);
    const [record] = listImages(store);
    assert.deepEqual(
      listImages(store).map((image) => [image.tag, image.source]),
      [[tag, 'tar']],
    );
    assert.deepEqual(readdirSync(store.dir).sort(), [record.id, 'images.json'].sort(), 'no staging left');
    assert.deepEqual(
      readdirSync(join(record.rootfs, 'dev')).sort(),
      STANDARD_DEVICES.map(([name]) => name).sort(),
      "/dev holds the store's devices, none of mmdebstrap's",
    );
    assert.match(readFileSync(join(record.rootfs, 'etc', 'debian_version'), 'utf8'), /^12\./);
    assert.equal(existsSync(join(record.rootfs, 'usr', 'bin', 'apt-get')), false, 'essential has no apt');
    for (const hostFile of ['hostname', 'resolv.conf'])
      assert.equal(
        existsSync(join(record.rootfs, 'etc', hostFile)),
        false,
        `the host's /etc/${hostFile} is not kept`,
      );

    const workload = await spawnInNamespaces({
      rootfs: record.rootfs,
      hostname: 'base',
      command: ['/bin/sh', '-c', 'echo "$$ $(hostname)"; cat /etc/debian_version; readlink -f /bin/sh'],
    });
    t.after(async () => {
      workload.kill('SIGKILL');
      await workload.exited;
    });
    const [stdout, stderr, exit] = await Promise.all([
      textOf(workload.stdout),
      textOf(workload.stderr),
      workload.exited,
    ]);
    assert.deepEqual(exit, { code: 0, signal: null }, stderr);
    const [pidAndHost, version, shell] = stdout.trim().split('\n');
    assert.equal(pidAndHost, '1 base');
    assert.match(version, /^12\./);
    assert.equal(shell, '/usr/bin/dash');
  });
});

describe('sigil image base: refusals before anything runs', () => {
  test('an unknown suite: exit 2 naming it, and the node directory is untouched', async (t) => {
    const node = tempDirFor(t, 'sigil-base-node-');
    assertUsageError(
      await sigil(['image', 'base', 'debian:bookwurm', '--dir', node]),
      /unknown Debian suite "bookwurm" \(known: bullseye, bookworm/,
    );
    assert.deepEqual(listing(node), []);
  });

  test('not debian:SUITE (another distribution, no suite, no colon) is refused by the parser', () => {
    assert.throws(() => parseBaseSource('ubuntu:jammy'), refusal('invalid_argument', /only debian:SUITE/));
    assert.throws(() => parseBaseSource('debian:'), refusal('invalid_argument', /unknown Debian suite ""/));
    assert.throws(() => parseBaseSource('bookworm'), refusal('invalid_argument', /expected debian:SUITE/));
    assert.deepEqual(parseBaseSource('debian:bookworm'), { distribution: 'debian', suite: 'bookworm' });
    for (const suite of DEBIAN_SUITES) assert.equal(parseBaseSource(`debian:${suite}`).suite, suite);
  });

  test('an unknown suite from the library: invalid_argument before mmdebstrap, the store unchanged', async (t) => {
    const store = openImageStore(tempDirFor(t, 'sigil-base-node-'));
    await assert.rejects(
      buildBaseImage(store, { source: 'debian:nosuch', mmdebstrap: '/nonexistent/mmdebstrap' }),
      refusal('invalid_argument', /unknown Debian suite "nosuch"/),
    );
    assert.deepEqual(listing(store.dir), []);
  });

  test('a tag the node already has: already_exists, before mmdebstrap runs', async (t) => {
    if (!asRoot) return t.skip('importing an image needs root');
    const store = openImageStore(tempDirFor(t, 'sigil-base-node-'));
    const tree = tempDirFor(t, 'sigil-base-tree-');
    mkdirSync(join(tree, 'etc'));
    await importImage(store, tree, 'test/bookworm:1');
    const before = listing(store.dir);
    await assert.rejects(
      buildBaseImage(store, {
        source: 'debian:bookworm',
        tag: 'test/bookworm:1',
        mmdebstrap: '/nonexistent/mmdebstrap',
      }),
      refusal('already_exists', /image test\/bookworm:1: already on this node/),
    );
    assert.deepEqual(listing(store.dir), before);
  });

  test('mmdebstrap missing: says apt-get install mmdebstrap, the store unchanged', async (t) => {
    if (!asRoot) return t.skip('the root check comes first');
    const store = openImageStore(tempDirFor(t, 'sigil-base-node-'));
    await assert.rejects(
      buildBaseImage(store, { source: 'debian:bookworm', mmdebstrap: '/nonexistent/mmdebstrap' }),
      refusal('failed_precondition', /\/nonexistent\/mmdebstrap is missing: apt-get install mmdebstrap/),
    );
    assert.deepEqual(listing(store.dir), []);
  });

  test('not root: the command refuses in one line, the node directory untouched', async (t) => {
    if (!asRoot) {
      const node = tempDirFor(t, 'sigil-base-node-');
      assertRefused(await sigil(['image', 'base', 'debian:bookworm', '--dir', node]), /must run as root/);
      assert.deepEqual(listing(node), []);
      return;
    }
    if (!existsSync('/usr/bin/setpriv')) return t.skip('setpriv (util-linux) is missing');
    const node = tempDirFor(t, 'sigil-base-node-');
    chmodSync(node, 0o755);
    const result = await run('/usr/bin/setpriv', [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      process.execPath,
      SIGIL_BIN,
      'image',
      'base',
      'debian:bookworm',
      '--dir',
      node,
    ]);
    assertRefused(result, /sigil image base must run as root/);
    assert.deepEqual(listing(node), []);
  });

  test('mmdebstrap failing: its first error line is the one-line error, progress was passed on, nothing stored', async (t) => {
    if (!asRoot) return t.skip('the root check comes first');
    const store = openImageStore(tempDirFor(t, 'sigil-base-node-'));
    const fake = failingMmdebstrap(tempDirFor(t, 'sigil-base-bin-'));
    const progress: string[] = [];
    await assert.rejects(
      buildBaseImage(store, {
        source: 'debian:bookworm',
        mmdebstrap: fake,
        onProgress: (line) => progress.push(line),
      }),
      refusal('failed_precondition', /^mmdebstrap could not make debian:bookworm: boom: no mirror$/),
    );
    assert.deepEqual(progress, [
      'I: downloading packages with apt...',
      'E: boom: no mirror',
      'E: mmdebstrap failed to run',
    ]);
    assert.deepEqual(listing(store.dir), [], 'the staging directory is gone');
  });
});
