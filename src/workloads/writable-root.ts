// Each workload's own writable root: an overlayfs mount whose lower layer is
// the image's tree (never written) and whose upper layer is the workload's
// directory, so writes stay the workload's and the image stays shared.
//
//   <stateDir>/<cgroup name>/upper   what the workload changed
//   <stateDir>/<cgroup name>/work    overlayfs's scratch directory
//   <stateDir>/<cgroup name>/root    the mount: the workload's rootfs
//
// The directory survives restarts (like a container's layer) and is removed
// with the workload. Paths go into mount options, where ',' ':' and '\'
// separate or escape, so such paths are refused.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { firstLineOf, invalid, preconditionFailed, SigilError } from '../errors.ts';

const MOUNT_OPTION_SEPARATORS = /[,:\\\n]/;
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

export interface WritableRoot {
  /** The mounted root filesystem the workload runs in. */
  readonly root: string;
  /** Unmounts and removes the whole directory; doing it again does nothing. */
  remove(): void;
}

/** Refuses a path overlayfs's mount options cannot carry. */
export function checkOverlayPath(path: string, what: string): string {
  if (!path.startsWith('/') || MOUNT_OPTION_SEPARATORS.test(path))
    throw invalid(`${what} ${JSON.stringify(path)}: must be an absolute path without ',', ':' or '\\'`);
  return path;
}

/** Mounts `lower` (read-only to it) with a fresh upper layer in `<stateDir>/<name>`, which must not exist. */
export function mountWritableRoot(stateDir: string, name: string, lower: string): WritableRoot {
  checkOverlayPath(lower, 'image rootfs');
  const dir = join(checkOverlayPath(stateDir, 'state directory'), name);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST')
      throw preconditionFailed(`workload directory ${dir} already exists (left by an earlier run?)`);
    throw new SigilError('internal', `cannot make ${dir}: ${firstLineOf(error)}`, { cause: error });
  }
  const upper = join(dir, 'upper');
  const work = join(dir, 'work');
  const root = join(dir, 'root');
  let mounted = false;
  const remove = (): void => {
    if (mounted) {
      try {
        execFileSync('umount', [root], { env: TOOL_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
      } catch {
        // Still busy (a process we could not kill holds it): detach it now, the kernel frees it later.
        execFileSync('umount', ['--lazy', root], { env: TOOL_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
      }
      mounted = false;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const sub of [upper, work, root]) mkdirSync(sub, { mode: 0o755 });
    execFileSync(
      'mount',
      ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, root],
      { env: TOOL_ENV, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    mounted = true;
  } catch (error) {
    remove();
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
    throw preconditionFailed(`cannot mount the workload's overlay root: ${stderr || firstLineOf(error)}`);
  }
  return { root, remove };
}
