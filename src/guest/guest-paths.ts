// Paths inside a guest, as the guest sees them, mapped onto a directory that
// holds the guest's root ("/" inside a VM or a workload; an image directory or
// a test's temp dir otherwise). vminit writes only through these: a path whose
// `..` climbs above the guest's "/", or a symlink inside the guest whose
// target does, is refused, and an absolute symlink target means the guest's
// own "/" (as it would after chroot), never the host's.
import { lstat, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { SigilError } from '../errors.ts';

/** Linux's own limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;

export const leavesGuest = (path: string): SigilError =>
  new SigilError('permission_denied', `${JSON.stringify(path)} leaves the guest's root directory`);

/**
 * The segments of `path` (absolute, or relative to the guest directory `base`),
 * with `.` and `..` applied lexically; refuses a `..` above the guest's "/".
 */
export function guestSegments(path: string, base = '/'): string[] {
  const start = posix.isAbsolute(path) ? [] : guestSegments(base);
  const segments = [...start];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (segments.length === 0) throw leavesGuest(path);
      segments.pop();
    } else segments.push(part);
  }
  return segments;
}

/** The guest path (absolute, normalised) `path` names, relative to `base`; refuses leaving the guest's "/". */
export function guestPath(path: string, base = '/'): string {
  return `/${guestSegments(path, base).join('/')}`;
}

const isMissing = (error: unknown): boolean =>
  (error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR';

/**
 * Where the guest path `path` lives on this machine: under `root`, every
 * symlink of the existing part followed inside the guest. The part that does
 * not exist yet is appended as named, so creating it cannot leave the guest.
 */
export async function resolveInGuest(root: string, path: string): Promise<string> {
  const pending = guestSegments(path);
  const resolved: string[] = [];
  let followed = 0;
  let missing = false;
  while (pending.length > 0) {
    const segment = pending.shift() as string;
    if (segment === '.' || segment === '') continue;
    if (segment === '..') {
      // Only a symlink's target puts `..` here: it may not climb above the guest's "/".
      if (resolved.length === 0) throw leavesGuest(path);
      resolved.pop();
      continue;
    }
    resolved.push(segment);
    if (missing) continue;
    const onHost = join(root, ...resolved);
    let isLink: boolean;
    try {
      isLink = (await lstat(onHost)).isSymbolicLink();
    } catch (error) {
      if (!isMissing(error)) throw error;
      missing = true;
      continue;
    }
    if (!isLink) continue;
    followed += 1;
    if (followed > MAX_SYMLINKS)
      throw new SigilError('invalid_argument', `${JSON.stringify(path)}: too many symlinks`);
    const target = await readlink(onHost);
    resolved.pop();
    if (posix.isAbsolute(target)) resolved.length = 0;
    pending.unshift(...target.split('/'));
  }
  return join(root, ...resolved);
}
