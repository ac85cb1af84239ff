// A VM workload's root disk: an ext4 image made from a root directory with
// `mke2fs -d` (e2fsprogs copies the tree, owners, modes and device nodes
// included, into the new filesystem: no loop mount, no privilege beyond
// reading the tree). The image is sized from the tree plus free room for
// the guest's writes, and is sparse, so the unused part costs no disk.
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';

export interface Ext4ImageOptions {
  /** The directory whose tree becomes the filesystem's root. */
  readonly rootDir: string;
  /** The image file to write (must not exist). */
  readonly imageFile: string;
  /** Free room beyond the tree, in MiB; default 64. */
  readonly freeMiB?: number;
  /** The filesystem label; default "sigil-root". */
  readonly label?: string;
}

export interface TreeUsage {
  readonly bytes: number;
  readonly inodes: number;
}

const MiB = 1024 * 1024;
const BLOCK = 4096;
const DEFAULT_FREE_MiB = 64;
const MAX_FREE_MiB = 1024 * 1024;
/** Journal, group descriptors, inode tables and bitmaps on a small ext4, with headroom. */
const METADATA_MiB = 24;
const SPARE_INODES = 4096;
const LABEL = /^[A-Za-z0-9_.-]{1,16}$/;
const MKE2FS_CANDIDATES = ['/usr/sbin/mke2fs', '/sbin/mke2fs'];
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const MKE2FS_TIMEOUT_MS = 300_000;

/** What a tree takes on an ext4 with 4 KiB blocks: each file rounded up to a block, one inode each. */
export function treeUsage(rootDir: string): TreeUsage {
  let bytes = 0;
  let inodes = 0;
  const walk = (path: string): void => {
    const stats = lstatSync(path);
    inodes += 1;
    // Directories and symlinks take at least a block (short symlinks none, but rounding up is safe).
    bytes += Math.max(BLOCK, Math.ceil(stats.size / BLOCK) * BLOCK);
    if (stats.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
  };
  walk(rootDir);
  return { bytes, inodes };
}

/** Writes an ext4 image of `rootDir`; returns its size in bytes. A failure leaves no image behind. */
export async function buildExt4Image(options: Ext4ImageOptions): Promise<number> {
  const { rootDir, imageFile } = options;
  const freeMiB = options.freeMiB ?? DEFAULT_FREE_MiB;
  const label = options.label ?? 'sigil-root';
  if (typeof rootDir !== 'string' || !rootDir.startsWith('/')) {
    throw invalid(`root directory ${JSON.stringify(String(rootDir))}: must be an absolute path`);
  }
  if (!existsSync(rootDir) || !statSync(rootDir).isDirectory()) {
    throw notFound(`root directory ${rootDir}: no such directory`);
  }
  if (typeof imageFile !== 'string' || !imageFile.startsWith('/')) {
    throw invalid(`image file ${JSON.stringify(String(imageFile))}: must be an absolute path`);
  }
  if (existsSync(imageFile)) throw invalid(`image file ${imageFile}: already exists`);
  if (!Number.isSafeInteger(freeMiB) || freeMiB < 0 || freeMiB > MAX_FREE_MiB) {
    throw invalid(`free room ${String(freeMiB)} MiB: a whole number from 0 to ${MAX_FREE_MiB}`);
  }
  if (!LABEL.test(label))
    throw invalid(`label ${JSON.stringify(label)}: 1–16 letters, digits, '_', '.', '-'`);
  const mke2fs = MKE2FS_CANDIDATES.find((path) => existsSync(path));
  if (!mke2fs) throw preconditionFailed('mke2fs is not installed: VM root disks need e2fsprogs');

  const usage = treeUsage(rootDir);
  const sizeMiB = Math.ceil((usage.bytes * 1.1) / MiB) + METADATA_MiB + freeMiB;
  const inodes = usage.inodes + SPARE_INODES;
  try {
    await new Promise<void>((resolve, reject) => {
      execFile(
        mke2fs,
        [
          '-q',
          '-F',
          '-t',
          'ext4',
          '-b',
          String(BLOCK),
          '-N',
          String(inodes),
          '-m',
          '0',
          '-L',
          label,
          // Initialised here, not by the guest's ext4lazyinit thread (slow under emulation).
          '-E',
          'lazy_itable_init=0,lazy_journal_init=0',
          '-d',
          rootDir,
          imageFile,
          `${sizeMiB}M`,
        ],
        { env: TOOL_ENV, timeout: MKE2FS_TIMEOUT_MS },
        (error, _stdout, stderr) => {
          if (!error) return resolve();
          const reason = String(stderr).trim().split('\n')[0] || messageOf(error).split('\n')[0];
          reject(new SigilError('internal', `mke2fs ${imageFile}: ${reason}`, { cause: error }));
        },
      );
    });
  } catch (error) {
    rmSync(imageFile, { force: true });
    throw error;
  }
  return sizeMiB * MiB;
}
