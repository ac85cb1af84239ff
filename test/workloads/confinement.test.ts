// What a workload running as root inside can reach of the host, attacked the
// way such a process would: nothing. The root is changed with pivot_root and
// the host's tree detached, so a chroot escape finds only the image; the user
// namespace leaves root inside without power over the host (no device nodes,
// no sysfs or cgroup mounts, no global sysctls or sysrq), while ids map to
// themselves, so what it writes is owned by the ids it used.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { hostname as hostHostname } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { spawnInNamespaces } from '../../src/workloads/namespace-process.ts';
import { isStaticElf } from '../../src/workloads/static-busybox.ts';
import { BUSYBOX, busyboxRootfsFor, tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const unavailable = workloadsUnavailable();

async function textOf(stream: Readable | null): Promise<string> {
  if (!stream) return '';
  let text = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) text += chunk;
  return text;
}

/** Runs `script` with /bin/sh as root in a fresh workload of `rootfs`; its stdout, stderr and exit code. */
async function asRootInside(rootfs: string, script: string) {
  const process = await spawnInNamespaces({
    rootfs,
    hostname: 'attacker',
    command: ['/bin/sh', '-c', script],
  });
  const [stdout, stderr, exit] = await Promise.all([
    textOf(process.stdout),
    textOf(process.stderr),
    process.exited,
  ]);
  return { stdout, stderr, exit };
}

describe('confinement: a root workload against the host', () => {
  test('the launcher finishes with a static busybox (no loader needed once the host is detached)', (t) => {
    if (unavailable) return t.skip(unavailable);
    assert.equal(isStaticElf(BUSYBOX), true);
    assert.equal(isStaticElf('/bin/bash'), false, 'bash is dynamically linked');
    assert.equal(isStaticElf('/etc/passwd'), false, 'not an ELF file');
  });

  test('chroot escape: climbing out of a nested chroot finds the image, never a host file', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const secretDir = tempDirFor(t, 'sigil-secret-');
    const secret = join(secretDir, 'host-secret');
    writeFileSync(secret, 'host secret\n');
    // The classic escape: chroot into a subdirectory while keeping a directory outside it, then walk up.
    mkdirSync(join(rootfs, 'jail', 'bin'), { recursive: true });
    copyFileSync(BUSYBOX, join(rootfs, 'jail', 'bin', 'busybox'));
    const attack = `cd / && chroot /jail /bin/busybox sh -c 'cd ../../../../../../../../..; /bin/busybox ls -a /; /bin/busybox cat ${secret}' ; cut -d' ' -f5 /proc/self/mountinfo | sed 's/^/mount: /'; cat ${secret}; ls /proc/1/root${secretDir}`;
    const { stdout, stderr } = await asRootInside(rootfs, attack);
    assert.doesNotMatch(stdout, /host secret/);
    assert.match(stderr, /No such file or directory/);
    // The root, its proc and what masks proc: nothing else of the host is mounted inside.
    const mounts = [...stdout.matchAll(/^mount: (.*)$/gm)].map((match) => match[1]);
    assert.equal(mounts[0], '/');
    assert.ok(mounts.includes('/proc'));
    assert.deepEqual(
      mounts.filter((path) => path !== '/' && !path.startsWith('/proc')),
      [],
      mounts.join(' '),
    );
  });

  test('no device nodes: mknod of the host disk is refused', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const { stdout, stderr } = await asRootInside(
      rootfs,
      'mknod /tmp/disk b 8 0 && echo MADE-BLOCK; mknod /tmp/mem c 1 1 && echo MADE-MEM; echo done',
    );
    assert.doesNotMatch(stdout, /MADE-/);
    assert.match(stdout, /done/);
    assert.match(stderr, /Operation not permitted/);
  });

  test('no host-wide mounts or writes: sysfs, cgroups, sysrq and sysctls are refused, and the read-only /proc/sys cannot be undone', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const { stdout } = await asRootInside(
      rootfs,
      'mkdir -p /tmp/m; mount -t sysfs sys /tmp/m && echo SYSFS; mount -t cgroup -o memory cg /tmp/m && echo CGROUP; ' +
        // The same value back: were the write allowed, it would change nothing on the host.
        'echo h > /proc/sysrq-trigger && echo SYSRQ; v=$(cat /proc/sys/kernel/panic); echo "$v" > /proc/sys/kernel/panic && echo SYSCTL; ' +
        'umount /proc/sys && echo UNMASKED; mount -o remount,rw /proc/sys && echo REMOUNTED; cat /proc/kcore | head -c 1 | wc -c; echo done',
    );
    assert.doesNotMatch(stdout, /SYSFS|CGROUP|SYSRQ|SYSCTL|UNMASKED|REMOUNTED/);
    assert.match(
      stdout,
      /^0\ndone\n$/m,
      'kcore yields nothing: reading it needs a capability root inside lacks',
    );
  });

  test('its hostname is the workload name; neither it nor the host can be renamed from inside', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const before = hostHostname();
    const { stdout } = await asRootInside(rootfs, 'hostname; hostname changed-inside; hostname');
    assert.deepEqual(stdout.trim().split('\n'), ['attacker', 'attacker']);
    assert.equal(hostHostname(), before);
  });

  test('ids map to themselves: a file root writes inside is owned by uid 0 on the host', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const { stdout } = await asRootInside(
      rootfs,
      'id -u; touch /owned && chown 123:456 /owned && echo chowned',
    );
    assert.deepEqual(stdout.trim().split('\n'), ['0', 'chowned']);
    const stats = statSync(join(rootfs, 'owned'));
    assert.deepEqual([stats.uid, stats.gid], [123, 456]);
  });
});
