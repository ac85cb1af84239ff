// The node's image store: importing a busybox root filesystem from a
// directory and from tar files made by the system's tar, listing and removing
// images, and every refusal (bad tags, traversing or escaping tar members,
// devices, limits) leaving nothing behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, type TestContext, test } from 'node:test';
import { parseImageReference } from '../../src/protocol/image-names.ts';
import {
  type ImageStore,
  importImage,
  listImages,
  openImageStore,
  removeImage,
  resolveImage,
  STANDARD_DEVICES,
} from '../../src/workloads/images.ts';
import { spawnInNamespaces } from '../../src/workloads/namespace-process.ts';
import { refusal } from '../support/refusals.ts';
import { buildBusyboxRootfs, tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const unavailable = workloadsUnavailable();

/** A fresh node directory's image store. */
function storeFor(t: TestContext): ImageStore {
  return openImageStore(tempDirFor(t, 'sigil-node-'));
}

/** A busybox tree to import (no /dev: the store adds it). */
function sourceFor(t: TestContext): string {
  const dir = tempDirFor(t, 'sigil-image-source-');
  buildBusyboxRootfs(dir);
  return dir;
}

/** `tar ARGS` with the system's GNU tar. */
function tar(...args: string[]): void {
  execFileSync('tar', args, { stdio: ['ignore', 'ignore', 'ignore'] });
}

/** What is left in the store directory: nothing but the index, if one was written. */
function leftovers(store: ImageStore): string[] {
  return readdirSync(store.dir).filter((entry) => entry !== 'images.json');
}

async function textOf(stream: Readable | null): Promise<string> {
  let text = '';
  if (!stream) return text;
  stream.setEncoding('utf8');
  for await (const chunk of stream) text += chunk;
  return text;
}

describe('importing images', { concurrency: true }, () => {
  test('from a directory: modes, owners, times, symlinks and hard links are kept, and /dev is added', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    writeFileSync(join(source, 'bin', 'tool'), '#!/bin/sh\necho tool\n');
    chmodSync(join(source, 'bin', 'tool'), 0o4751);
    execFileSync('chown', ['1234:5678', join(source, 'bin', 'tool')]);
    chmodSync(join(source, 'bin', 'tool'), 0o4751); // chown cleared the set-uid bit
    utimesSync(
      join(source, 'bin', 'tool'),
      new Date('2020-01-02T03:04:05Z'),
      new Date('2020-01-02T03:04:05Z'),
    );
    linkSync(join(source, 'bin', 'tool'), join(source, 'bin', 'tool-again'));
    symlinkSync('/bin/busybox', join(source, 'bin', 'absolute-link'));
    mkdirSync(join(source, 'srv', 'sealed'));
    chmodSync(join(source, 'srv', 'sealed'), 0o555);

    const record = await importImage(store, source, 'acme/busybox:1.36');
    assert.equal(record.tag, 'acme/busybox:1.36');
    assert.equal(record.source, 'directory');
    assert.match(record.id, /^[0-9a-f]{32}$/);
    assert.equal(resolveImage(store, 'acme/busybox:1.36'), record.rootfs);
    assert.equal(record.rootfs, join(store.dir, record.id, 'rootfs'));
    assert.ok(record.entries > 100, `${record.entries} entries`);

    const tool = statSync(join(record.rootfs, 'bin', 'tool'));
    assert.equal(tool.mode & 0o7777, 0o4751);
    assert.equal(`${tool.uid}:${tool.gid}`, '1234:5678');
    assert.equal(tool.mtime.toISOString(), '2020-01-02T03:04:05.000Z');
    assert.equal(statSync(join(record.rootfs, 'bin', 'tool-again')).ino, tool.ino, 'still one file');
    assert.equal(readlinkSync(join(record.rootfs, 'bin', 'sh')), 'busybox');
    assert.equal(readlinkSync(join(record.rootfs, 'bin', 'absolute-link')), '/bin/busybox');
    assert.equal(statSync(join(record.rootfs, 'srv', 'sealed')).mode & 0o7777, 0o555);
    assert.equal(statSync(record.rootfs).mode & 0o777, 0o755);
    for (const [name, major, minor] of STANDARD_DEVICES) {
      const device = lstatSync(join(record.rootfs, 'dev', name));
      assert.ok(device.isCharacterDevice(), `/dev/${name}`);
      assert.equal(device.rdev, (major << 8) | minor, `/dev/${name}`);
    }
    assert.deepEqual(leftovers(store), [record.id]);
  });

  test('from a tar made by the system tar, and from a gzipped one; a workload runs from it', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    const archives = tempDirFor(t, 'sigil-tars-');
    tar('-cf', join(archives, 'busybox.tar'), '-C', source, '.');
    tar('-czf', join(archives, 'busybox.tar.gz'), '-C', source, '.');

    const plain = await importImage(store, join(archives, 'busybox.tar'), 'acme/busybox:tar');
    const gzipped = await importImage(store, join(archives, 'busybox.tar.gz'), 'acme/busybox:tgz');
    for (const record of [plain, gzipped]) {
      assert.equal(record.source, 'tar');
      assert.equal(readlinkSync(join(record.rootfs, 'bin', 'sh')), 'busybox');
      assert.equal(statSync(join(record.rootfs, 'bin', 'busybox')).mode & 0o7777, 0o755);
      assert.equal(statSync(join(record.rootfs, 'tmp')).mode & 0o7777, 0o1777);
      assert.ok(lstatSync(join(record.rootfs, 'dev', 'null')).isCharacterDevice());
    }

    const workload = await spawnInNamespaces({
      rootfs: resolveImage(store, 'acme/busybox:tar'),
      hostname: 'from-tar',
      command: ['/bin/sh', '-c', 'echo $$ $(hostname) > /dev/null; echo $$ $(hostname)'],
    });
    const [stdout, exit] = await Promise.all([textOf(workload.stdout), workload.exited]);
    assert.equal(stdout, '1 from-tar\n');
    assert.deepEqual(exit, { code: 0, signal: null });
  });

  test('from an ext4 image file (mke2fs -d): the same tree, mounted only for the import; a workload runs from it', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    const file = join(tempDirFor(t, 'sigil-ext4-'), 'busybox.ext4');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', source, file, '16M']);
    const record = await importImage(store, file, 'acme/busybox:ext4');
    assert.equal(record.source, 'ext4');
    assert.equal(readlinkSync(join(record.rootfs, 'bin', 'sh')), 'busybox');
    assert.equal(statSync(join(record.rootfs, 'tmp')).mode & 0o7777, 0o1777);
    assert.ok(lstatSync(join(record.rootfs, 'dev', 'null')).isCharacterDevice());
    // Nothing of the import stays mounted, and its loop device is gone with the mount.
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(store.dir), 'no mount under the store');
    assert.ok(!execFileSync('losetup', ['-a'], { encoding: 'utf8' }).includes(file), 'no loop device left');
    const workload = await spawnInNamespaces({
      rootfs: resolveImage(store, 'acme/busybox:ext4'),
      hostname: 'from-ext4',
      command: ['/bin/sh', '-c', 'echo $(hostname)'],
    });
    const [stdout, exit] = await Promise.all([textOf(workload.stdout), workload.exited]);
    assert.equal(stdout, 'from-ext4\n');
    assert.deepEqual(exit, { code: 0, signal: null });
  });

  test('a tag that exists is refused and the first image stays', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    const first = await importImage(store, source, 'acme/busybox:1');
    await assert.rejects(
      importImage(store, source, 'acme/busybox:1'),
      refusal('already_exists', /already on/),
    );
    assert.deepEqual(
      listImages(store).map((record) => record.id),
      [first.id],
    );
    assert.deepEqual(leftovers(store), [first.id]);
  });
});

describe('listing and removing images', () => {
  test('list is by tag; remove is refused while in use, then removes the tree', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    const web = await importImage(store, source, 'acme/web:2');
    const base = await importImage(store, source, 'acme/base:1');
    assert.deepEqual(
      listImages(store).map((record) => record.tag),
      ['acme/base:1', 'acme/web:2'],
    );

    const asked: string[] = [];
    await assert.rejects(
      removeImage(store, 'acme/web:2', (tag) => {
        asked.push(tag);
        return true;
      }),
      refusal('failed_precondition', /acme\/web:2: a workload uses it/),
    );
    assert.deepEqual(asked, ['acme/web:2']);
    assert.equal(resolveImage(store, 'acme/web:2'), web.rootfs);
    assert.ok(existsSync(web.rootfs));

    await removeImage(store, 'acme/web:2', async () => false);
    assert.deepEqual(
      listImages(store).map((record) => record.tag),
      ['acme/base:1'],
    );
    assert.equal(existsSync(join(store.dir, web.id)), false);
    assert.deepEqual(leftovers(store), [base.id]);
    assert.throws(
      () => resolveImage(store, 'acme/web:2'),
      refusal('not_found', /acme\/web:2: not on this node/),
    );
    await assert.rejects(removeImage(store, 'acme/web:2'), refusal('not_found', /not on this node/));
  });

  test('a reopened store keeps its images and drops what an interrupted change left', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const nodeDir = tempDirFor(t, 'sigil-node-');
    const store = openImageStore(nodeDir);
    const kept = await importImage(store, sourceFor(t), 'acme/kept:1');
    mkdirSync(join(store.dir, '.import-crashed', 'rootfs'), { recursive: true });
    mkdirSync(join(store.dir, '.remove-0123'), { recursive: true });
    mkdirSync(join(store.dir, 'ffffffffffffffffffffffffffffffff', 'rootfs'), { recursive: true }); // never recorded

    const reopened = openImageStore(nodeDir);
    assert.deepEqual(leftovers(reopened), [kept.id]);
    assert.equal(resolveImage(reopened, 'acme/kept:1'), kept.rootfs);
  });
});

describe('refused imports leave nothing behind', { concurrency: true }, () => {
  test('bad tags', async (t) => {
    const store = storeFor(t);
    const source = tempDirFor(t, 'sigil-empty-');
    const bad: [string, RegExp][] = [
      ['', /expected a reference/],
      ['acme/busybox', /needs a :version/],
      ['Acme/busybox:1', /name component "Acme"/],
      ['acme//busybox:1', /name component ""/],
      ['../busybox:1', /name component "\.\."/],
      ['acme/../etc:1', /name component "\.\."/],
      ['/acme/busybox:1', /name component ""/],
      ['acme/busybox:', /the version must be/],
      ['acme/busybox:.hidden', /the version must be/],
      ['acme/busybox:-x', /the version must be/],
      ['acme/busybox:1:2', /the version must be/],
      ['acme/busybox:a/b', /the version must be/],
      ['acme/busy box:1', /name component "busy box"/],
      ['acme/busybox:1\n', /the version must be/],
      [`acme/${'a'.repeat(260)}:1`, /the name is longer than 255/],
      [`acme/busybox:${'v'.repeat(129)}`, /the version is longer than 128/],
      ['x'.repeat(100_000), /longer than 384 characters/],
    ];
    for (const [tag, problem] of bad) {
      await assert.rejects(importImage(store, source, tag), refusal('invalid_argument', problem), tag);
      assert.throws(() => resolveImage(store, tag), refusal('invalid_argument', problem), tag);
    }
    assert.deepEqual(readdirSync(store.dir), []);
    assert.deepEqual(parseImageReference('acme/web-ui_2.x/app__1:v1.2.3-rc_1'), {
      name: 'acme/web-ui_2.x/app__1',
      tag: 'v1.2.3-rc_1',
      reference: 'acme/web-ui_2.x/app__1:v1.2.3-rc_1',
    });
  });

  test('a missing source, or one that holds the store itself', async (t) => {
    const parent = tempDirFor(t, 'sigil-parent-');
    const store = openImageStore(join(parent, 'node'));
    await assert.rejects(
      importImage(store, join(parent, 'nope'), 'acme/x:1'),
      refusal('not_found', /no such file or directory/),
    );
    await assert.rejects(
      importImage(store, parent, 'acme/x:1'),
      refusal('invalid_argument', /contains the image store/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('a tar member that climbs out with ..', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const work = tempDirFor(t, 'sigil-tar-');
    mkdirSync(join(work, 'src'));
    writeFileSync(join(work, 'src', 'evil'), 'escaped\n');
    tar('-cPf', join(work, 'climb.tar'), '--transform=s,^,../,', '-C', join(work, 'src'), 'evil');
    tar('-cPf', join(work, 'inner.tar'), '--transform=s,^,bin/../../,', '-C', join(work, 'src'), 'evil');
    for (const archive of ['climb.tar', 'inner.tar']) {
      await assert.rejects(
        importImage(store, join(work, archive), 'acme/evil:1'),
        refusal('invalid_argument', /climbs out with '\.\.'/),
      );
    }
    assert.equal(existsSync(join(store.dir, 'evil')), false);
    assert.equal(existsSync(join(store.dir, '..', 'evil')), false);
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('an absolute tar member', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const work = tempDirFor(t, 'sigil-tar-');
    writeFileSync(join(work, 'evil'), 'escaped\n');
    tar('-cPf', join(work, 'absolute.tar'), join(work, 'evil'));
    await assert.rejects(
      importImage(store, join(work, 'absolute.tar'), 'acme/evil:1'),
      refusal('invalid_argument', /an absolute path/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('a tar member beneath a symlink member (writing through the link)', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const work = tempDirFor(t, 'sigil-tar-');
    const outside = join(work, 'outside');
    mkdirSync(outside);
    mkdirSync(join(work, 'first'));
    symlinkSync(outside, join(work, 'first', 'link'));
    mkdirSync(join(work, 'second', 'link'), { recursive: true });
    writeFileSync(join(work, 'second', 'link', 'planted'), 'escaped\n');
    tar('-cf', join(work, 'through.tar'), '-C', join(work, 'first'), 'link');
    tar('-rf', join(work, 'through.tar'), '-C', join(work, 'second'), 'link/planted');
    await assert.rejects(
      importImage(store, join(work, 'through.tar'), 'acme/evil:1'),
      refusal('invalid_argument', /"link\/planted" lies beneath the symlink "link"/),
    );
    assert.deepEqual(readdirSync(outside), [], 'nothing written through the link');
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('a tar hard link to a path outside the archive', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const work = tempDirFor(t, 'sigil-tar-');
    writeFileSync(join(work, 'file'), 'x\n');
    linkSync(join(work, 'file'), join(work, 'hard'));
    // Member names made relative, the hard link's target left absolute (H: not applied to link targets).
    tar('-cPf', join(work, 'hard.tar'), `--transform=s,^${work}/,,H`, join(work, 'file'), join(work, 'hard'));
    await assert.rejects(
      importImage(store, join(work, 'hard.tar'), 'acme/evil:1'),
      refusal('invalid_argument', /hard link "hard" → "\/.*\/file" is not to an earlier file of the archive/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('a symlink that climbs above the image root, in a tar or a directory', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    symlinkSync('../../../etc', join(source, 'bin', 'up'));
    await assert.rejects(
      importImage(store, source, 'acme/evil:1'),
      refusal('invalid_argument', /symlink "bin\/up" → "\.\.\/\.\.\/\.\.\/etc": leaves the image/),
    );
    const work = tempDirFor(t, 'sigil-tar-');
    tar('-cf', join(work, 'up.tar'), '-C', source, '.');
    await assert.rejects(
      importImage(store, join(work, 'up.tar'), 'acme/evil:1'),
      refusal('invalid_argument', /leaves the image/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('device nodes and FIFOs, in a directory or a tar', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const withDevice = sourceFor(t);
    execFileSync('mknod', [join(withDevice, 'etc', 'disk'), 'b', '7', '0']);
    await assert.rejects(
      importImage(store, withDevice, 'acme/evil:1'),
      refusal('invalid_argument', /"etc\/disk": a device node not allowed/),
    );
    const withFifo = sourceFor(t);
    execFileSync('mkfifo', [join(withFifo, 'tmp', 'pipe')]);
    await assert.rejects(
      importImage(store, withFifo, 'acme/evil:1'),
      refusal('invalid_argument', /"tmp\/pipe": a FIFO not allowed/),
    );
    const work = tempDirFor(t, 'sigil-tar-');
    tar('-cf', join(work, 'device.tar'), '-C', withDevice, '.');
    tar('-cf', join(work, 'fifo.tar'), '-C', withFifo, '.');
    await assert.rejects(
      importImage(store, join(work, 'device.tar'), 'acme/evil:1'),
      refusal('invalid_argument', /"etc\/disk": a device node not allowed/),
    );
    await assert.rejects(
      importImage(store, join(work, 'fifo.tar'), 'acme/evil:1'),
      refusal('invalid_argument', /"tmp\/pipe": a FIFO not allowed/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('a /dev that is a symlink (the store would make its devices wherever it points)', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    const elsewhere = tempDirFor(t, 'sigil-elsewhere-');
    symlinkSync(elsewhere, join(source, 'dev'));
    await assert.rejects(
      importImage(store, source, 'acme/evil:1'),
      refusal('invalid_argument', /\/dev must be a directory/),
    );
    assert.deepEqual(readdirSync(elsewhere), []);
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('an ext4 image holding a device node is refused like a directory, and nothing stays mounted', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const withDevice = sourceFor(t);
    execFileSync('mknod', [join(withDevice, 'etc', 'disk'), 'b', '7', '0']);
    const file = join(tempDirFor(t, 'sigil-ext4-'), 'evil.ext4');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', withDevice, file, '16M']);
    await assert.rejects(
      importImage(store, file, 'acme/evil:1'),
      refusal('invalid_argument', /"etc\/disk": a device node not allowed/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(store.dir), 'no mount under the store');
  });

  test('a damaged ext4 image (right magic, nothing else) is refused, naming the file', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const file = join(tempDirFor(t, 'sigil-ext4-'), 'broken.ext4');
    const bytes = Buffer.alloc(64 * 1024);
    bytes.writeUInt16LE(0xef53, 1024 + 0x38);
    writeFileSync(file, bytes);
    await assert.rejects(
      importImage(store, file, 'acme/broken:1'),
      refusal('invalid_argument', /broken\.ext4.*cannot mount it as ext4/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('a file that is not a tar archive', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const work = tempDirFor(t, 'sigil-tar-');
    writeFileSync(join(work, 'not.tar'), 'this is not a tar archive\n'.repeat(40));
    await assert.rejects(
      importImage(store, join(work, 'not.tar'), 'acme/evil:1'),
      refusal('invalid_argument', /not a readable tar archive/),
    );
    assert.deepEqual(readdirSync(store.dir), []);
  });

  test('more entries or bytes than the limits', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = storeFor(t);
    const source = sourceFor(t);
    const work = tempDirFor(t, 'sigil-tar-');
    tar('-cf', join(work, 'busybox.tar'), '-C', source, '.');
    for (const from of [source, join(work, 'busybox.tar')]) {
      await assert.rejects(
        importImage(store, from, 'acme/big:1', { maxEntries: 10 }),
        refusal('resource_exhausted', /more than 10 entries/),
      );
      await assert.rejects(
        importImage(store, from, 'acme/big:1', { maxBytes: 1000 }),
        refusal('resource_exhausted', /more than 1000 bytes/),
      );
    }
    assert.deepEqual(readdirSync(store.dir), []);
  });
});
