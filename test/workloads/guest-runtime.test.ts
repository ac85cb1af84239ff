// The guest runtime inside a real workload: a busybox root with no Node and
// no libc runs `sigil --version` through the read-only binds under /.sigil;
// the binds cannot be written from inside, and bad bind paths are refused
// before anything starts.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { prepareGuestRuntime, runtimeLibraries } from '../../src/workloads/guest-runtime.ts';
import { spawnInNamespaces } from '../../src/workloads/namespace-process.ts';
import { refusal } from '../support/refusals.ts';
import { busyboxRootfsFor, tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const unavailable = workloadsUnavailable();

async function textOf(stream: Readable | null): Promise<string> {
  if (!stream) return '';
  let text = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) text += chunk;
  return text;
}

describe('the guest runtime', { skip: unavailable ?? false }, () => {
  test('a busybox workload without Node or libc runs sigil through /.sigil', async (t) => {
    const rootfs = busyboxRootfsFor(t);
    assert.equal(existsSync(join(rootfs, 'lib')), false, 'the image has no libraries of its own');
    const runtime = prepareGuestRuntime(tempDirFor(t, 'sigil-runtime-'));
    const child = await spawnInNamespaces({
      rootfs,
      hostname: 'rt',
      command: runtime.command(['--version']),
      readOnlyBinds: runtime.binds,
      env: { HOME: '/tmp' },
    });
    const [stdout, stderr, exit] = await Promise.all([
      textOf(child.stdout),
      textOf(child.stderr),
      child.exited,
    ]);
    assert.equal(exit.code, 0, stderr);
    const { version } = JSON.parse(
      readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8'),
    );
    assert.match(stdout, new RegExp(version.replaceAll('.', '\\.')));
  });

  test('an empty image (no shell, no busybox, no libc) runs sigil: what FROM scratch builds start from', async (t) => {
    const rootfs = tempDirFor(t, 'sigil-empty-root-');
    chmodSync(rootfs, 0o755);
    for (const sub of ['proc', 'tmp', 'dev']) mkdirSync(join(rootfs, sub));
    const runtime = prepareGuestRuntime(tempDirFor(t, 'sigil-runtime-'));
    const child = await spawnInNamespaces({
      rootfs,
      hostname: 'empty',
      command: runtime.command(['--version']),
      readOnlyBinds: runtime.binds,
    });
    const [stdout, stderr, exit] = await Promise.all([
      textOf(child.stdout),
      textOf(child.stderr),
      child.exited,
    ]);
    assert.equal(exit.code, 0, stderr);
    assert.match(stdout, /\d+\.\d+\.\d+/);
  });

  test('the runtime is read-only inside the workload', async (t) => {
    const dir = tempDirFor(t, 'sigil-runtime-');
    const runtime = prepareGuestRuntime(dir);
    assert.ok(runtimeLibraries(dir).some((name) => name.startsWith('libc.so')));
    const child = await spawnInNamespaces({
      rootfs: busyboxRootfsFor(t),
      hostname: 'rt',
      command: ['/bin/sh', '-c', 'touch /.sigil/app/pwned 2>&1; echo rc=$?'],
      readOnlyBinds: runtime.binds,
    });
    const [stdout] = await Promise.all([textOf(child.stdout), child.exited]);
    assert.match(stdout, /Read-only file system/);
    assert.match(stdout, /rc=1/);
    assert.equal(existsSync(join(runtime.binds[2].source, 'pwned')), false);
  });

  test('refuses a bind with a relative or ".." path, before anything starts', async (t) => {
    const rootfs = busyboxRootfsFor(t);
    for (const bind of [
      { source: 'relative', target: '/x' },
      { source: '/tmp', target: '/../etc' },
      { source: '/tmp', target: '/' },
    ]) {
      await assert.rejects(
        spawnInNamespaces({ rootfs, hostname: 'rt', command: ['/bin/true'], readOnlyBinds: [bind] }),
        refusal('invalid_argument', /bind/),
      );
    }
  });
});
