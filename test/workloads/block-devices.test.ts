// Block devices as real ext4 files: created sparse and formatted, listed by
// subtree, mounted through a loop device (and the loop device freed on
// unmount), copied through download and upload, and every refusal (a
// traversing name, over the size cap, an oversized upload, changes while
// attached) leaves the store as it was.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { type TestContext, test } from 'node:test';
import { BlockStore, MIN_BLOCK_MIB, mountBlockDevice } from '../../src/workloads/block-devices.ts';
import { failInCi } from '../support/ci.ts';
import { refusal } from '../support/refusals.ts';

const TOOLS = ['/usr/sbin/mke2fs', '/usr/sbin/losetup', '/dev/loop-control'];

function unavailable(): string | null {
  if (process.getuid?.() !== 0) return 'block devices need root (loop mounts)';
  const missing = TOOLS.find((path) => !existsSync(path));
  if (missing) {
    failInCi(`${missing} is missing`);
    return `${missing} is missing (e2fsprogs, util-linux, loop devices)`;
  }
  return null;
}

function skipped(t: TestContext): boolean {
  const reason = unavailable();
  if (reason === null) return false;
  t.skip(reason);
  return true;
}

function nodeDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-blocks-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The loop devices backed by files under `dir` (losetup -a). */
function loopsUnder(dir: string): string[] {
  return execFileSync('losetup', ['-a'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes(dir));
}

test('create makes a sparse ext4 file; list by subtree; get; destroy', async (t) => {
  if (skipped(t)) return;
  const dir = nodeDir(t);
  const store = BlockStore.open(dir);
  const data = await store.create('/alice/carol', 'data', 64);
  assert.equal(data.key, '/alice/carol//data');
  assert.equal(data.sizeMiB, 64);
  assert.ok(data.usedBytes > 0 && data.usedBytes < 64 * 1024 * 1024, `used ${data.usedBytes}`);
  const file = join(store.dir, readdirSync(store.dir)[0], 'data.ext4');
  assert.match(
    execFileSync('/usr/sbin/dumpe2fs', ['-h', file], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }),
    /Filesystem features:.*extent/,
  );
  await store.create('/alice/carol/erin', 'logs', MIN_BLOCK_MIB);
  await store.create('/alice/carolyn', 'data', MIN_BLOCK_MIB);
  await store.create('', 'admin', MIN_BLOCK_MIB);
  assert.deepEqual(
    store.list('/alice/carol').map((b) => b.key),
    ['/alice/carol//data', '/alice/carol/erin//logs'],
  );
  assert.equal(store.list().length, 4);
  assert.equal(store.list('').length, 4);
  store.destroy('/alice/carol', 'data');
  assert.throws(() => store.get('/alice/carol', 'data'), refusal('not_found', /no such block device/));
  assert.throws(() => store.destroy('/alice/carol', 'data'), refusal('not_found', /no such block device/));
});

test('refused: a path-traversing or malformed block name, before anything is made', async (t) => {
  if (skipped(t)) return;
  const store = BlockStore.open(nodeDir(t));
  for (const name of ['../x', '..', 'a/b', 'Data', '', '-a', 'a'.repeat(64), '.hidden'])
    await assert.rejects(
      store.create('/alice', name, MIN_BLOCK_MIB),
      refusal('invalid_argument', /block name/),
    );
  await assert.rejects(
    store.create('alice', 'data', MIN_BLOCK_MIB),
    refusal('invalid_argument', /owner key/),
  );
  assert.deepEqual(readdirSync(store.dir), []);
  assert.throws(
    () => BlockStore.open('/proc/1'),
    refusal('failed_precondition', /cannot open the block store/),
  );
});

test('refused: sizes below the minimum and above the cap; a duplicate name', async (t) => {
  if (skipped(t)) return;
  const store = BlockStore.open(nodeDir(t), { maxSizeMiB: 16 });
  await assert.rejects(store.create('/alice', 'data', 1), refusal('invalid_argument', /at least 4/));
  await assert.rejects(store.create('/alice', 'data', 1.5), refusal('invalid_argument', /whole number/));
  await assert.rejects(store.create('/alice', 'data', 17), refusal('resource_exhausted', /16 MiB/));
  assert.deepEqual(store.list(), []);
  await store.create('/alice', 'data', 8);
  await assert.rejects(store.create('/alice', 'data', 8), refusal('already_exists', /already exists/));
});

test('attach mounts with nodev,nosuid through a loop device that unmount frees; changes refused meanwhile', async (t) => {
  if (skipped(t)) return;
  const dir = nodeDir(t);
  const store = BlockStore.open(dir);
  await store.create('/alice', 'data', 16);
  await store.create('/alice', 'copy', 16);
  const target = join(dir, 'mnt');
  mkdirSync(target);
  const mounted = await store.attach('/alice', 'data', target);
  t.after(() => mounted.unmount().catch(() => undefined));
  const options = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((line) => line.split(' ')[4] === target);
  assert.ok(options, 'mounted');
  assert.match(options, /nosuid/);
  assert.match(options, /nodev/);
  assert.equal(loopsUnder(dir).length, 1);
  assert.equal(store.get('/alice', 'data').attached, true);
  writeFileSync(join(target, 'hello.txt'), 'kept');

  assert.throws(() => store.destroy('/alice', 'data'), refusal('failed_precondition', /attached/));
  assert.throws(() => store.download('/alice', 'data'), refusal('failed_precondition', /attached/));
  await assert.rejects(
    store.upload('/alice', 'data', Readable.from([Buffer.alloc(10)])),
    refusal('failed_precondition', /attached/),
  );
  await assert.rejects(store.attach('/alice', 'data', target), refusal('failed_precondition', /attached/));

  await mounted.unmount();
  await mounted.unmount(); // again: nothing
  assert.deepEqual(loopsUnder(dir), []);
  assert.equal(store.get('/alice', 'data').attached, false);

  // download → upload copies the filesystem, file and all.
  const image = await buffer(store.download('/alice', 'data'));
  assert.equal(image.length, 16 * 1024 * 1024);
  const copied = await store.upload('/alice', 'copy', Readable.from([image]));
  assert.equal(copied.sizeMiB, 16);
  const again = await store.attach('/alice', 'copy', target);
  try {
    assert.equal(readFileSync(join(target, 'hello.txt'), 'utf8'), 'kept');
  } finally {
    await again.unmount();
  }
  assert.deepEqual(loopsUnder(dir), []);
});

test('refused: an upload larger than the device; the old contents stay, no temporary file', async (t) => {
  if (skipped(t)) return;
  const store = BlockStore.open(nodeDir(t));
  await store.create('/alice', 'data', MIN_BLOCK_MIB);
  const before = await buffer(store.download('/alice', 'data'));
  const chunk = Buffer.alloc(1024 * 1024, 1);
  await assert.rejects(
    store.upload('/alice', 'data', Readable.from([chunk, chunk, chunk, chunk, chunk])),
    refusal('resource_exhausted', /larger than the device \(4 MiB\)/),
  );
  assert.ok((await buffer(store.download('/alice', 'data'))).equals(before));
  const ownerDir = join(store.dir, readdirSync(store.dir)[0]);
  assert.deepEqual(readdirSync(ownerDir).sort(), ['data.ext4', 'owner']);
});

test('mountBlockDevice: refused for a missing image; unmount leaves no loop device', async (t) => {
  if (skipped(t)) return;
  const dir = nodeDir(t);
  await assert.rejects(
    mountBlockDevice(join(dir, 'missing.ext4'), dir),
    refusal('not_found', /does not exist/),
  );
  await assert.rejects(mountBlockDevice('relative.ext4', dir), refusal('invalid_argument', /absolute/));
  const file = join(dir, 'fs.ext4');
  writeFileSync(file, Buffer.alloc(0));
  execFileSync('truncate', ['-s', '8M', file]);
  execFileSync('/usr/sbin/mke2fs', ['-t', 'ext4', '-q', '-F', file]);
  const target = join(dir, 'mnt');
  mkdirSync(target);
  const mounted = await mountBlockDevice(file, target);
  assert.equal(loopsUnder(dir).length, 1);
  await mounted.unmount();
  assert.deepEqual(loopsUnder(dir), []);
});
