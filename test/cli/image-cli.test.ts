// `sigil image import|list|remove` on a node directory, end to end with the
// real command and a busybox root filesystem: an import from a directory and
// from a tar, listing, removal, and the refusals (a path-traversing tar, a
// missing source or node directory, a tag already there, a non-root caller),
// each leaving the store as it was.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { DesiredState } from '../../src/workloads/desired-state.ts';
import { run, SIGIL_BIN, sigil } from '../support/cli.ts';
import { assertRefused, assertUsageError } from '../support/refusals.ts';
import { buildBusyboxRootfs, tempDirFor, workloadsUnavailable } from '../workloads/rootfs-fixture.ts';

const unavailable = workloadsUnavailable();
if (unavailable) process.stderr.write(`image CLI tests skipped: ${unavailable}\n`);

/** A node directory and a busybox root filesystem beside it. */
function fixture(t: TestContext): { node: string; rootfs: string; base: string } {
  const base = tempDirFor(t, 'sigil-image-cli-');
  const node = join(base, 'node');
  const rootfs = join(base, 'rootfs');
  mkdirSync(node);
  mkdirSync(rootfs);
  buildBusyboxRootfs(rootfs);
  return { node, rootfs, base };
}

/** What the image store holds on disk (entries of <node>/images). */
function storeEntries(node: string): string[] {
  const dir = join(node, 'images');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

async function listedTags(node: string): Promise<string[]> {
  const result = await sigil(['image', 'list', '--dir', node, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { images: { tag: string }[] }).images.map((image) => image.tag);
}

describe('sigil image on a node directory', { skip: unavailable ?? false }, () => {
  test('import a directory, list it, remove it', async (t) => {
    const { node, rootfs } = fixture(t);
    const imported = await sigil([
      'image',
      'import',
      rootfs,
      '--tag',
      'demo/busybox:1',
      '--dir',
      node,
      '--json',
    ]);
    assert.equal(imported.code, 0, imported.stderr);
    const record = JSON.parse(imported.stdout) as { tag: string; id: string; entries: number; bytes: number };
    assert.equal(record.tag, 'demo/busybox:1');
    assert.match(record.id, /^[0-9a-f]{32}$/);
    assert.ok(record.entries > 10 && record.bytes > 100_000, JSON.stringify(record));
    assert.ok(existsSync(join(node, 'images', record.id, 'rootfs', 'bin', 'busybox')));

    const table = await sigil(['image', 'list', '--dir', node]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^TAG\s+SIZE\s+IMPORTED\ndemo\/busybox:1\s+\d/);

    const removed = await sigil(['image', 'remove', 'demo/busybox:1', '--dir', node]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(removed.stdout, 'removed image demo/busybox:1\n');
    assert.deepEqual(await listedTags(node), []);
    assert.deepEqual(storeEntries(node), ['images.json']);
    assert.equal((await sigil(['image', 'list', '--dir', node])).stdout, 'no images\n');
  });

  test('import a tar file', async (t) => {
    const { node, rootfs, base } = fixture(t);
    const tar = join(base, 'rootfs.tar.gz');
    execFileSync('tar', ['-czf', tar, '-C', rootfs, '.']);
    const imported = await sigil(['image', 'import', tar, '--tag', 'demo/busybox:tar', '--dir', node]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /^imported demo\/busybox:tar from the tar file .*: \d+ entries, /);
    assert.deepEqual(await listedTags(node), ['demo/busybox:tar']);
  });

  test('refused: a tar with a member that climbs out, and nothing is left behind', async (t) => {
    const { node, base } = fixture(t);
    const tar = join(base, 'evil.tar');
    execFileSync('python3', [
      '-c',
      `import tarfile, io
with tarfile.open(${JSON.stringify(tar)}, 'w') as archive:
    data = b'owned'
    info = tarfile.TarInfo('../escaped')
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))`,
    ]);
    const before = storeEntries(node);
    assertRefused(
      await sigil(['image', 'import', tar, '--tag', 'demo/evil:1', '--dir', node]),
      /climbs out with '\.\.'/,
    );
    assert.equal(existsSync(join(base, 'escaped')), false);
    assert.equal(existsSync(join(node, 'escaped')), false);
    assert.deepEqual(
      storeEntries(node).filter((entry) => !before.includes(entry) && entry !== 'images.json'),
      [],
    );
    assert.deepEqual(await listedTags(node), []);
  });

  test('refused: a missing source, a missing node directory, a tag already there, a bad tag', async (t) => {
    const { node, rootfs, base } = fixture(t);
    assertRefused(
      await sigil(['image', 'import', join(base, 'nowhere'), '--tag', 'demo/x:1', '--dir', node]),
      /image source ".*nowhere": no such file or directory/,
    );
    assertRefused(
      await sigil(['image', 'import', rootfs, '--tag', 'demo/x:1', '--dir', join(base, 'no-node')]),
      /node directory .*no-node does not exist/,
    );
    assert.equal(existsSync(join(base, 'no-node')), false);

    assert.equal((await sigil(['image', 'import', rootfs, '--tag', 'demo/x:1', '--dir', node])).code, 0);
    const entries = storeEntries(node);
    assertRefused(
      await sigil(['image', 'import', rootfs, '--tag', 'demo/x:1', '--dir', node]),
      /image demo\/x:1: already on this node; remove it first/,
    );
    assert.deepEqual(storeEntries(node), entries);
    assertUsageError(
      await sigil(['image', 'import', rootfs, '--tag', '../x:1', '--dir', node]),
      /image "\.\.\/x:1": name component "\.\." must be/,
    );
    assertRefused(
      await sigil(['image', 'remove', 'demo/missing:1', '--dir', node]),
      /image demo\/missing:1: not on this node/,
    );
    assert.deepEqual(await listedTags(node), ['demo/x:1']);
  });

  test('refused: removing an image a kept workload uses, and nothing changes', async (t) => {
    const { node, rootfs } = fixture(t);
    assert.equal((await sigil(['image', 'import', rootfs, '--tag', 'demo/used:1', '--dir', node])).code, 0);
    const desired = DesiredState.open(node);
    try {
      desired.put({
        key: '//web',
        spec: { name: 'web', image: 'demo/used:1', command: ['/bin/sh'] },
        ownerKey: '',
        revocationIds: [],
        reservation: { subtree: '', name: 'web' },
        createdAt: new Date(),
      });
    } finally {
      desired.close();
    }
    const entries = storeEntries(node);
    assertRefused(
      await sigil(['image', 'remove', 'demo/used:1', '--dir', node]),
      /image demo\/used:1: a workload uses it; destroy the workload first/,
    );
    assert.deepEqual(storeEntries(node), entries);
    assert.deepEqual(await listedTags(node), ['demo/used:1']);
  });

  test('refused: import and remove as a user other than root', async (t) => {
    const { node, rootfs } = fixture(t);
    const asNobody = (args: string[]) =>
      run(
        'setpriv',
        ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, SIGIL_BIN, ...args],
        {
          env: { NODE_COMPILE_CACHE: '' },
        },
      );
    assertRefused(
      await asNobody(['image', 'import', rootfs, '--tag', 'demo/x:1', '--dir', node]),
      /sigil image import must run as root on the node/,
    );
    assertRefused(
      await asNobody(['image', 'remove', 'demo/x:1', '--dir', node]),
      /sigil image remove must run as root on the node/,
    );
    assert.deepEqual(storeEntries(node), []);
  });

  test('image list needs --dir or --node, not both', async () => {
    assertUsageError(await sigil(['image', 'list']), /give --dir NODE .* or --node N/);
    assertUsageError(await sigil(['image', 'list', '--dir', '.', '--node', 'web-1']), /one of them/);
  });
});
