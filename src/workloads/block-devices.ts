// Block devices on the node: ext4 filesystems in sparse files, one per
// (owner, name), in <node>/workloads/blocks/<owner hash>/<name>.ext4, with
// the owner's key in <owner hash>/owner (so a listing by subtree needs no
// other index). A name is one DNS label, so no name reaches outside its
// directory. Sizes are whole MiB between MIN_BLOCK_MIB and the store's cap;
// usage is what the file takes on disk (allocated blocks), the size is what
// counts against the quota.
//
// Changes are atomic: a create formats a temporary file and links it into
// place (never over another), an upload streams to a temporary file (cut off
// at the device's size) and renames it over the old. While a device is
// attached (mounted into a workload), upload, download and destroy are
// refused: the mounted filesystem owns the file then.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  createWriteStream,
  existsSync,
  ftruncateSync,
  linkSync,
  mkdirSync,
  openSync,
  type ReadStream,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { alreadyExists, firstLineOf, invalid, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { checkDnsLabel, checkOwnerKey, workloadsDirectoryOf } from './desired-state.ts';

const MiB = 1024 * 1024;
/** ext4 needs room for its metadata; smaller is refused. */
export const MIN_BLOCK_MIB = 4;
/** The default largest device: 1 TiB. */
export const DEFAULT_MAX_BLOCK_MIB = 1024 * 1024;
const IMAGE_SUFFIX = '.ext4';
const OWNER_FILE = 'owner';
const TEMPORARY_PREFIX = '.tmp-';
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TOOL_TIMEOUT_MS = 120_000;

export interface BlockInfo {
  /** `${ownerKey}//${name}`, like a workload key. */
  readonly key: string;
  readonly ownerKey: string;
  readonly name: string;
  readonly sizeMiB: number;
  /** Bytes the file takes on disk (its allocated blocks). */
  readonly usedBytes: number;
  readonly attached: boolean;
}

export interface BlockStoreOptions {
  /** The largest device, in MiB. Default 1 TiB. */
  readonly maxSizeMiB?: number;
}

export interface MountedBlock {
  readonly target: string;
  /** Unmounts (which frees the loop device); doing it again does nothing. */
  unmount(): Promise<void>;
}

function run(program: string, args: readonly string[]): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile(program, args, { env: TOOL_ENV, timeout: TOOL_TIMEOUT_MS }, (error, _stdout, stderr) => {
      if (!error) return resolvePromise();
      const reason = String(stderr).trim().split('\n')[0] || firstLineOf(error);
      reject(new SigilError('failed_precondition', `${program} failed: ${reason}`, { cause: error }));
    });
  });
}

const LOOP_RELEASE_WAIT_MS = 10_000;

/** Resolves once no loop device is backed by `imageFile` (bounded; a stuck one is left to the kernel). */
async function loopReleased(imageFile: string): Promise<void> {
  const deadline = Date.now() + LOOP_RELEASE_WAIT_MS;
  while (Date.now() < deadline) {
    const backing = await new Promise<string>((resolvePromise) =>
      execFile('losetup', ['-j', imageFile], { env: TOOL_ENV, timeout: TOOL_TIMEOUT_MS }, (error, stdout) =>
        resolvePromise(error ? '' : String(stdout)),
      ),
    );
    if (backing.trim() === '') return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Mounts the ext4 image `imageFile` at `target` through a loop device, with
 * no device files and no set-uid programs honoured.
 */
export async function mountBlockDevice(
  imageFile: string,
  target: string,
  options: { readonly readOnly?: boolean } = {},
): Promise<MountedBlock> {
  if (!imageFile.startsWith('/') || !target.startsWith('/'))
    throw invalid('block mount: the image and the target must be absolute paths');
  if (!existsSync(imageFile)) throw notFound(`block image ${imageFile} does not exist`);
  // -t ext4: the kernel never probes an uploaded image as another filesystem type.
  const flags = options.readOnly ? 'loop,nodev,nosuid,noexec,ro' : 'loop,nodev,nosuid';
  await run('mount', ['-t', 'ext4', '-o', flags, imageFile, target]);
  let mounted = true;
  return {
    target,
    unmount: async () => {
      if (!mounted) return;
      // util-linux marks a loop device set up by `-o loop` autoclear: it is detached with the last
      // reference to the mount. A workload's namespace may still hold one for a moment after it ended,
      // and the filesystem is written back only then: wait for the detach, so that whoever reads the
      // image next (a download, the next run) sees every write.
      await run('umount', [target]);
      mounted = false;
      await loopReleased(imageFile);
    },
  };
}

export class BlockStore {
  /** `<node>/workloads/blocks` */
  readonly dir: string;
  readonly maxSizeMiB: number;
  /** Keys of devices that are mounted, or being changed: one thing at a time each. */
  readonly #attached = new Set<string>();
  readonly #busy = new Set<string>();

  private constructor(dir: string, maxSizeMiB: number) {
    this.dir = dir;
    this.maxSizeMiB = maxSizeMiB;
  }

  /** The block store of a node directory (created if missing), without temporary files of interrupted changes. */
  static open(nodeDir: string, options: BlockStoreOptions = {}): BlockStore {
    const maxSizeMiB = options.maxSizeMiB ?? DEFAULT_MAX_BLOCK_MIB;
    if (!Number.isSafeInteger(maxSizeMiB) || maxSizeMiB < MIN_BLOCK_MIB)
      throw invalid(`block store maxSizeMiB must be a whole number of MiB, at least ${MIN_BLOCK_MIB}`);
    if (typeof nodeDir !== 'string' || nodeDir === '' || nodeDir.includes('\0'))
      throw invalid('the node directory must be a non-empty path');
    let dir: string;
    try {
      dir = join(workloadsDirectoryOf(nodeDir), 'blocks');
      if (!existsSync(dir)) mkdirSync(dir, { mode: 0o700 });
    } catch (error) {
      throw new SigilError(
        'failed_precondition',
        `cannot open the block store in ${nodeDir}: ${firstLineOf(error)}`,
        {
          cause: error,
        },
      );
    }
    for (const owner of readdirSync(dir))
      for (const entry of safeReaddir(join(dir, owner)))
        if (entry.startsWith(TEMPORARY_PREFIX)) rmSync(join(dir, owner, entry), { force: true });
    return new BlockStore(dir, maxSizeMiB);
  }

  /** Makes an empty ext4 device of `sizeMiB` (a sparse file: it takes almost nothing until written). */
  async create(ownerKey: string, name: string, sizeMiB: number): Promise<BlockInfo> {
    const { key, file, ownerDir } = this.#locate(ownerKey, name);
    if (!Number.isSafeInteger(sizeMiB) || sizeMiB < MIN_BLOCK_MIB)
      throw invalid(
        `block size must be a whole number of MiB, at least ${MIN_BLOCK_MIB}, got ${String(sizeMiB)}`,
      );
    if (sizeMiB > this.maxSizeMiB)
      throw new SigilError(
        'resource_exhausted',
        `block size ${sizeMiB} MiB is more than this node allows for one device (${this.maxSizeMiB} MiB)`,
      );
    if (existsSync(file)) throw alreadyExists(`block device ${key} already exists`);
    this.#claim(key);
    try {
      if (!existsSync(ownerDir)) mkdirSync(ownerDir, { mode: 0o700 });
      const ownerFile = join(ownerDir, OWNER_FILE);
      if (!existsSync(ownerFile)) writeFileSync(ownerFile, ownerKey, { mode: 0o600 });
      const temporary = join(ownerDir, `${TEMPORARY_PREFIX}${randomBytes(8).toString('hex')}`);
      try {
        const fd = openSync(temporary, 'wx', 0o600);
        try {
          ftruncateSync(fd, sizeMiB * MiB);
        } finally {
          closeSync(fd);
        }
        await run('mke2fs', ['-t', 'ext4', '-q', '-F', temporary]);
        // link, not rename: a device of the same name made meanwhile is refused, never replaced.
        linkSync(temporary, file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST')
          throw alreadyExists(`block device ${key} already exists`);
        throw error;
      } finally {
        rmSync(temporary, { force: true });
      }
    } finally {
      this.#busy.delete(key);
    }
    return this.get(ownerKey, name);
  }

  /** The device `name` of `ownerKey`; not_found when there is none. */
  get(ownerKey: string, name: string): BlockInfo {
    const { key, file } = this.#locate(ownerKey, name);
    let stats: ReturnType<typeof statSync>;
    try {
      stats = statSync(file);
    } catch {
      throw notFound(`block device ${key}: no such block device`);
    }
    return {
      key,
      ownerKey,
      name,
      sizeMiB: Math.ceil(Number(stats.size) / MiB),
      usedBytes: Number(stats.blocks) * 512,
      attached: this.#attached.has(key),
    };
  }

  /** The devices whose owner is `under` or beneath it (every device without it), by key. */
  list(under?: string): BlockInfo[] {
    const subtree = under === undefined ? undefined : checkOwnerKey(under, 'owner key');
    const devices: BlockInfo[] = [];
    for (const owner of readdirSync(this.dir)) {
      let ownerKey: string;
      try {
        ownerKey = checkOwnerKey(readFileSync(join(this.dir, owner, OWNER_FILE), 'utf8'), 'owner key');
      } catch {
        continue; // not a directory of ours, or damaged: nothing to list
      }
      if (owner !== ownerHash(ownerKey)) continue;
      if (
        subtree !== undefined &&
        subtree !== '' &&
        ownerKey !== subtree &&
        !ownerKey.startsWith(`${subtree}/`)
      )
        continue;
      for (const entry of safeReaddir(join(this.dir, owner))) {
        if (!entry.endsWith(IMAGE_SUFFIX)) continue;
        const name = entry.slice(0, -IMAGE_SUFFIX.length);
        try {
          devices.push(this.get(ownerKey, checkDnsLabel(name, 'block name')));
        } catch {
          // Removed meanwhile, or not a name we make.
        }
      }
    }
    return devices.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Removes a device; refused while it is attached. */
  destroy(ownerKey: string, name: string): void {
    const { key, file } = this.#locate(ownerKey, name);
    this.#refuseAttached(key, 'destroyed');
    if (!existsSync(file)) throw notFound(`block device ${key}: no such block device`);
    this.#claim(key);
    try {
      unlinkSync(file);
    } finally {
      this.#busy.delete(key);
    }
  }

  /**
   * Replaces the device's contents with `source` (a filesystem image), cut
   * off with resource_exhausted beyond the device's size; the device keeps
   * its size. Nothing changes unless the whole stream arrived.
   */
  async upload(ownerKey: string, name: string, source: Readable): Promise<BlockInfo> {
    const { key, file, ownerDir } = this.#locate(ownerKey, name);
    this.#refuseAttached(key, 'uploaded to');
    const { sizeMiB } = this.get(ownerKey, name);
    const limit = sizeMiB * MiB;
    this.#claim(key);
    const temporary = join(ownerDir, `${TEMPORARY_PREFIX}${randomBytes(8).toString('hex')}`);
    try {
      let received = 0;
      const capped = async function* (input: AsyncIterable<Buffer | string>) {
        for await (const chunk of input) {
          const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
          received += bytes.length;
          if (received > limit)
            throw new SigilError(
              'resource_exhausted',
              `the upload to ${key} is larger than the device (${sizeMiB} MiB)`,
            );
          yield bytes;
        }
      };
      await pipeline(source, capped, createWriteStream(temporary, { flags: 'wx', mode: 0o600, flush: true }));
      truncateSync(temporary, limit);
      renameSync(temporary, file);
    } catch (error) {
      rmSync(temporary, { force: true });
      if (error instanceof SigilError) throw error;
      throw new SigilError('internal', `uploading to ${key}: ${firstLineOf(error)}`, { cause: error });
    } finally {
      this.#busy.delete(key);
    }
    return this.get(ownerKey, name);
  }

  /** The device's contents as a stream; refused while it is attached (its filesystem is live then). */
  download(ownerKey: string, name: string): ReadStream {
    const { key, file } = this.#locate(ownerKey, name);
    this.#refuseAttached(key, 'downloaded');
    this.get(ownerKey, name);
    return createReadStream(file);
  }

  /** Mounts the device at `target` (a directory inside a workload's root); refused if it is attached already. */
  async attach(ownerKey: string, name: string, target: string): Promise<MountedBlock> {
    const { key, file } = this.#locate(ownerKey, name);
    this.#refuseAttached(key, 'attached again');
    this.get(ownerKey, name);
    this.#claim(key);
    let mounted: MountedBlock;
    try {
      mounted = await mountBlockDevice(file, target);
    } finally {
      this.#busy.delete(key);
    }
    this.#attached.add(key);
    let attached = true;
    return {
      target,
      unmount: async () => {
        if (!attached) return;
        await mounted.unmount();
        attached = false;
        this.#attached.delete(key);
      },
    };
  }

  #locate(ownerKey: string, name: string): { key: string; file: string; ownerDir: string } {
    const owner = checkOwnerKey(ownerKey, 'owner key');
    checkDnsLabel(name, 'block name');
    const ownerDir = join(this.dir, ownerHash(owner));
    return { key: `${owner}//${name}`, file: join(ownerDir, `${name}${IMAGE_SUFFIX}`), ownerDir };
  }

  #refuseAttached(key: string, doing: string): void {
    if (this.#attached.has(key))
      throw preconditionFailed(`block device ${key} is attached to a workload and cannot be ${doing}`);
  }

  #claim(key: string): void {
    if (this.#busy.has(key))
      throw preconditionFailed(`block device ${key} is being changed; try again when that is done`);
    this.#busy.add(key);
  }
}

/** The directory name of an owner's devices: fixed length, safe whatever the key holds. */
function ownerHash(ownerKey: string): string {
  return `o-${createHash('sha256').update(`sigil-block-owner:${ownerKey}`).digest('hex').slice(0, 32)}`;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Opens the block store of a node directory (see BlockStore). */
export function openBlockStore(nodeDir: string, options?: BlockStoreOptions): BlockStore {
  return BlockStore.open(nodeDir, options);
}
