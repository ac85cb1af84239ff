// Output directories for commands that create them (pki init, pki quickstart):
// created owner-only (0700) because they hold private keys, and removed again
// when the command fails after creating them, so a failure leaves nothing
// behind. Directories that already existed are never removed.
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { invalid, notFound } from '../errors.ts';

export const PRIVATE_DIRECTORY = 0o700;

function createDirectory(path: string): string | undefined {
  try {
    return mkdirSync(path, { recursive: true, mode: PRIVATE_DIRECTORY });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') throw invalid(`${path} exists and is not a directory`);
    if (code === 'EACCES' || code === 'EPERM')
      throw invalid(`cannot create directory ${path} (permission denied)`);
    throw error;
  }
}

/**
 * Creates `directories` (recursively, 0700) if missing, runs `write`, and when
 * `write` throws removes every directory this call created before rethrowing.
 */
export function withDirectories<T>(directories: readonly string[], write: () => T): T {
  const created: string[] = [];
  try {
    for (const directory of directories) {
      const first = createDirectory(directory);
      if (first !== undefined) created.push(first);
    }
    return write();
  } catch (error) {
    for (const first of created.reverse()) rmSync(first, { recursive: true, force: true });
    throw error;
  }
}

/** True when `path` is a directory that group or others may read or enter. */
export function isGroupOrWorldAccessible(path: string): boolean {
  try {
    return (statSync(path).mode & 0o077) !== 0;
  } catch {
    return false;
  }
}

/** Refuses an output path whose directory does not exist (we do not create it for single files). */
export function requireParentDirectory(path: string): void {
  const parent = dirname(resolve(path));
  let isDirectory: boolean;
  try {
    isDirectory = statSync(parent).isDirectory();
  } catch {
    throw notFound(`output directory ${dirname(path)} does not exist`);
  }
  if (!isDirectory) throw invalid(`output directory ${dirname(path)} is not a directory`);
}
