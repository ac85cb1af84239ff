// A busybox root filesystem for the workload tests, built from the host's
// /bin/busybox (Debian's busybox-static, which .ci/run installs): the static
// binary, a symlink in /bin for every applet, /etc/passwd and /etc/group with
// root and nobody, the standard /dev nodes an image gets from the store, and
// the empty directories a workload needs (/proc for its proc mount). Every
// one is removed when its test ends.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { addStandardDevices } from '../../src/workloads/images.ts';
import { failInCi } from '../support/ci.ts';

export const BUSYBOX = '/bin/busybox';
/** The uid and gid of `nobody` in the fixture's /etc/passwd. */
export const NOBODY = 65534;

/**
 * Why the namespace tests cannot run here, or null when they can. Under
 * SIGIL_CI=1 a missing busybox fails instead (.ci/run installs it).
 */
export function workloadsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'workloads need root (namespaces, chroot, ownership)';
  if (!existsSync(BUSYBOX)) {
    failInCi(`${BUSYBOX} is missing`);
    return `${BUSYBOX} is missing (apt-get install busybox-static)`;
  }
  return null;
}

/** A fresh temporary directory removed when `t` ends. */
export function tempDirFor(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Builds the busybox root filesystem in `dir` (which must exist and be empty). */
export function buildBusyboxRootfs(dir: string): void {
  chmodSync(dir, 0o755); // mkdtemp makes 0700: a workload running as nobody could not enter its own root
  for (const sub of ['bin', 'etc', 'proc', 'srv', 'root']) mkdirSync(join(dir, sub), { mode: 0o755 });
  mkdirSync(join(dir, 'tmp'));
  chmodSync(join(dir, 'tmp'), 0o1777);
  chmodSync(join(dir, 'root'), 0o700);
  copyFileSync(BUSYBOX, join(dir, 'bin', 'busybox'));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n');
  for (const applet of applets) {
    if (applet && applet !== 'busybox' && !applet.includes('/'))
      symlinkSync('busybox', join(dir, 'bin', applet));
  }
  writeFileSync(
    join(dir, 'etc', 'passwd'),
    `root:x:0:0:root:/root:/bin/sh\nnobody:x:${NOBODY}:${NOBODY}:nobody:/nonexistent:/bin/false\n`,
  );
  writeFileSync(join(dir, 'etc', 'group'), `root:x:0:\nnogroup:x:${NOBODY}:\n`);
}

/** buildBusyboxRootfs plus /dev's standard nodes, as an imported image has them. */
export function buildRunnableRootfs(dir: string): void {
  buildBusyboxRootfs(dir);
  addStandardDevices(dir);
}

/** A runnable busybox root filesystem in a temporary directory removed when `t` ends. */
export function busyboxRootfsFor(t: TestContext): string {
  const dir = tempDirFor(t, 'sigil-rootfs-');
  buildRunnableRootfs(dir);
  return dir;
}

/**
 * A shell condition, inside a busybox workload, that holds when `address`
 * answers: a TCP connection to a closed port (9) that the peer's kernel
 * refuses. Ping cannot tell: root inside holds no CAP_NET_RAW in its network
 * namespace, and busybox ping knows no unprivileged ICMP socket. Lines show
 * the bytes either way (a SYN and a RST).
 */
export function answersFrom(address: string): string {
  return `nc -w 2 ${address} 9 </dev/null 2>&1 | grep -q refused`;
}
