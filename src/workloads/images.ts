// The images on a node: root filesystems a workload starts from, kept in the
// node directory as
//
//   <node>/images/images.json        tag → image ID, written atomically
//   <node>/images/<ID>/rootfs/       the root filesystem (ID: 32 random hex digits)
//
// An import builds the whole tree in `<node>/images/.import-<random>/`
// beside its final place, then renames it into place and records the tag:
// a failed import leaves nothing, and one cut short by a crash leaves a
// dot-directory the next openImageStore removes.
//
// What an image may hold, from a directory or a tar alike: directories,
// regular files (modes, set-id bits, owners and times kept; hard links kept
// as links), and symlinks whose target is absolute (it means a path inside
// the image when the workload runs) or relative without climbing above the
// image's root. Device nodes, FIFOs and sockets are refused: /dev is the
// runtime's, and the store itself gives every image the standard character
// devices (null, zero, full, random, urandom, tty) in /dev.
//
// A tar is listed with the system's GNU tar before anything is extracted,
// and refused (nothing extracted) for a member that is absolute, climbs with
// '..', lies beneath a symlink member (the classic write-through-a-link
// escape), is a hard link to anything but an earlier regular file of the
// archive, or is any other type; the extracted tree is then checked again by
// the same rules as a directory. GNU tar reads gzip, xz and bzip2 archives too.
//
// An ext4 image file (`mke2fs -t ext4 -d ROOTFS FILE` builds one without
// loop mounts; told from a tar by its superblock's magic) is mounted
// read-only, nodev, nosuid and noexec on a loop device for the import and
// copied like a directory, under the same rules. Workloads run on an overlay
// of the stored tree (writable-root.ts), never on the image itself.
//
// Not yet: locking across processes (one daemon owns a node directory;
// within a process, changes to the index are serialized).
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
} from 'node:fs';
import {
  chmod,
  copyFile,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  readlink,
  rename,
  rm,
  stat,
  symlink,
} from 'node:fs/promises';
import { join, posix, resolve, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { alreadyExists, firstLineOf, invalid, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { writeTemporaryBeside } from '../files/durable-write.ts';
import { parseImageReference } from '../protocol/image-names.ts';
import { type MountedBlock, mountBlockDevice } from './block-devices.ts';

export interface ImageStore {
  /** `<node>/images` */
  readonly dir: string;
}

export interface ImageRecord {
  /** `org/name:version` */
  readonly tag: string;
  readonly id: string;
  /** The root filesystem's host path. */
  readonly rootfs: string;
  readonly importedAt: string;
  readonly source: 'directory' | 'tar' | 'ext4';
  /** Files, directories and links in the image (its root not counted). */
  readonly entries: number;
  /** Bytes of regular files (each hard-linked file once). */
  readonly bytes: number;
}

/** Bounds an import: more entries or bytes than these is refused (resource_exhausted). */
export interface ImportLimits {
  readonly maxEntries?: number;
  readonly maxBytes?: number;
}

export const DEFAULT_MAX_IMAGE_ENTRIES = 1_000_000;
export const DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 ** 3;
export const MAX_MEMBER_PATH_LENGTH = 4096;
export const MAX_MEMBER_NAME_LENGTH = 255;

/** The character devices every image gets in /dev: [name, major, minor]. */
export const STANDARD_DEVICES: readonly (readonly [string, number, number])[] = [
  ['null', 1, 3],
  ['zero', 1, 5],
  ['full', 1, 7],
  ['random', 1, 8],
  ['urandom', 1, 9],
  ['tty', 5, 0],
];

const INDEX_FILE = 'images.json';
const IMPORT_PREFIX = '.import-';
const REMOVE_PREFIX = '.remove-';
const IMAGE_ID = /^[0-9a-f]{32}$/;
const TAR = 'tar';
// GNU tar's listing of one member: type and mode, uid/gid, size (major,minor for a device), date, time, "name"…
const TAR_LISTING = /^(\S)\S{9}\s+\d+\/\d+\s+(\d+|\d+,\s*\d+)\s+\S+\s+\S+\s+(".*)$/;
// Not the daemon's environment: TAR_OPTIONS there could turn off the very protections relied on here.
const TAR_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin', LC_ALL: 'C' };
const run = promisify(execFile);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A value quoted for a one-line message, cut when long. */
function quoted(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}

/** The first non-empty line of a tool's output. */
function firstLine(text: string): string {
  return text.split('\n').find((line) => line.trim() !== '') ?? '';
}

/** The image store of a node directory (created if missing), with leftovers of interrupted changes removed. */
export function openImageStore(nodeDir: string): ImageStore {
  const dir = join(resolve(nodeDir), 'images');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const store: ImageStore = { dir };
  const indexed = existsSync(join(dir, INDEX_FILE));
  const referenced = new Set(readIndex(store).map((record) => record.id));
  for (const entry of readdirSync(dir)) {
    const interrupted = entry.startsWith(IMPORT_PREFIX) || entry.startsWith(REMOVE_PREFIX);
    // Renamed into place but never recorded. Without any index, trust nothing enough to delete.
    const orphaned = indexed && IMAGE_ID.test(entry) && !referenced.has(entry);
    const staleIndex = entry.startsWith(`.${INDEX_FILE}.`) && entry.endsWith('.tmp');
    if (interrupted || orphaned || staleIndex) rmSync(join(dir, entry), { recursive: true, force: true });
  }
  return store;
}

/** Every image, by tag. */
export function listImages(store: ImageStore): ImageRecord[] {
  return readIndex(store).sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
}

/** The root filesystem of `tag`; not_found when the node has no such image. */
export function resolveImage(store: ImageStore, tag: string): string {
  const { reference } = parseImageReference(tag);
  const record = readIndex(store).find((candidate) => candidate.tag === reference);
  if (!record) throw notFound(`image ${reference}: not on this node`);
  return record.rootfs;
}

/**
 * Imports a directory tree or a tar file as `tag`. Refuses, leaving nothing
 * behind, a bad tag, a tag that exists, a missing source, and any content an
 * image may not hold (see the top of this file).
 */
export interface ImportOptions {
  /**
   * The source directory is a stopped workload's root that nothing changes
   * meanwhile (a build's): copied whole with `cp -a` (links as links, never
   * followed), then checked by the same rules as an extracted tar, instead of
   * walked and copied file by file.
   */
  readonly snapshot?: boolean;
}

export async function importImage(
  store: ImageStore,
  source: string,
  tag: string,
  limits: ImportLimits = {},
  options: ImportOptions = {},
): Promise<ImageRecord> {
  const { reference } = parseImageReference(tag);
  refuseExistingTag(store, reference);
  const from = resolve(source);
  let kind: 'directory' | 'tar' | 'ext4';
  try {
    const stats = statSync(from);
    if (stats.isDirectory()) kind = 'directory';
    else if (stats.isFile()) kind = isExtFilesystem(from) ? 'ext4' : 'tar';
    else throw invalid(`image source ${quoted(source)}: neither a directory, a tar file nor an ext4 image`);
  } catch (error) {
    if (error instanceof SigilError) throw error;
    throw notFound(`image source ${quoted(source)}: no such file or directory`);
  }
  if (kind === 'directory' && isWithin(realpathSync(store.dir), realpathSync(from))) {
    throw invalid(`image source ${quoted(source)}: contains the image store itself`);
  }

  const budget = new Budget(limits);
  const staging = await mkdtemp(join(store.dir, IMPORT_PREFIX));
  const rootfs = join(staging, 'rootfs');
  try {
    if (kind === 'directory' && options.snapshot) {
      await mkdir(rootfs, { mode: 0o755 });
      await run('cp', ['-a', '--', `${from}/.`, rootfs], { env: TAR_ENV });
      await checkTree(rootfs, '', budget, new Set());
    } else if (kind === 'directory') {
      await copyTree(from, rootfs, '', budget, new Map());
    } else if (kind === 'ext4') {
      await copyExtFilesystem(from, staging, rootfs, budget);
    } else {
      await checkTarListing(from, new Budget(limits)); // bounds the archive before a byte is extracted
      await mkdir(rootfs, { mode: 0o755 });
      await extractTar(from, rootfs);
      await checkTree(rootfs, '', budget, new Set());
    }
    addStandardDevices(rootfs);
    return await serialized(store, async () => {
      refuseExistingTag(store, reference);
      const id = randomBytes(16).toString('hex');
      const record: ImageRecord = {
        tag: reference,
        id,
        rootfs: join(store.dir, id, 'rootfs'),
        importedAt: new Date().toISOString(),
        source: kind,
        entries: budget.entries,
        bytes: budget.bytes,
      };
      await rename(staging, join(store.dir, id));
      try {
        writeIndex(store, [...readIndex(store), record]);
      } catch (error) {
        await rm(join(store.dir, id), { recursive: true, force: true });
        throw error;
      }
      return record;
    });
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
}

/** Offset and value of the ext2/3/4 superblock's magic number. */
const EXT_MAGIC_OFFSET = 1024 + 0x38;
const EXT_MAGIC = 0xef53;

/** Whether `file` holds an ext2/3/4 filesystem (its superblock's magic), as `mke2fs -d` makes. */
function isExtFilesystem(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const magic = Buffer.alloc(2);
    return readSync(fd, magic, 0, 2, EXT_MAGIC_OFFSET) === 2 && magic.readUInt16LE(0) === EXT_MAGIC;
  } finally {
    closeSync(fd);
  }
}

/**
 * An ext4 image's files, copied like a directory's (the same checks and
 * bounds): the image is mounted read-only (nodev, nosuid, noexec) on a
 * directory inside the staging area only for the copy.
 */
async function copyExtFilesystem(
  file: string,
  staging: string,
  rootfs: string,
  budget: Budget,
): Promise<void> {
  const mountPoint = join(staging, 'ext4');
  await mkdir(mountPoint, { mode: 0o700 });
  let mounted: MountedBlock;
  try {
    mounted = await mountBlockDevice(file, mountPoint, { readOnly: true });
  } catch (error) {
    throw invalid(`image source ${quoted(file)}: cannot mount it as ext4: ${firstLineOf(error)}`);
  }
  try {
    await copyTree(mountPoint, rootfs, '', budget, new Map());
  } finally {
    await mounted.unmount();
    await rm(mountPoint, { recursive: true, force: true });
  }
}

/**
 * Removes the image `tag`. Refused (failed_precondition, nothing changed)
 * while `inUse(tag)` says a workload still uses it.
 */
export async function removeImage(
  store: ImageStore,
  tag: string,
  inUse: (tag: string) => boolean | Promise<boolean> = () => false,
): Promise<void> {
  const { reference } = parseImageReference(tag);
  await serialized(store, async () => {
    const records = readIndex(store);
    const record = records.find((candidate) => candidate.tag === reference);
    if (!record) throw notFound(`image ${reference}: not on this node`);
    if (await inUse(reference)) {
      throw preconditionFailed(`image ${reference}: a workload uses it; destroy the workload first`);
    }
    writeIndex(
      store,
      records.filter((candidate) => candidate !== record),
    );
    // Out of the way first, so an interrupted delete leaves a dot-directory the next open removes.
    const doomed = join(store.dir, `${REMOVE_PREFIX}${record.id}`);
    await rename(join(store.dir, record.id), doomed);
    await rm(doomed, { recursive: true, force: true });
  });
}

/**
 * Gives `rootfs` the standard character devices in /dev, replacing files of
 * those names. Refuses a /dev that is not a real directory: a symlink there
 * would put the devices wherever it points on the host.
 */
export function addStandardDevices(rootfs: string): void {
  const dev = join(rootfs, 'dev');
  let stats = lstatOrNull(dev);
  if (!stats) {
    mkdirSync(dev, { mode: 0o755 });
    stats = lstatOrNull(dev);
  }
  if (!stats?.isDirectory()) throw invalid('image: /dev must be a directory');
  for (const [name, major, minor] of STANDARD_DEVICES) {
    const path = join(dev, name);
    const existing = lstatOrNull(path);
    if (existing?.isDirectory()) throw invalid(`image: /dev/${name} is a directory`);
    if (existing) rmSync(path);
    try {
      execFileSync('mknod', ['-m', '666', path, 'c', String(major), String(minor)], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    } catch (error) {
      throw preconditionFailed(`image: cannot create /dev/${name} (images need root): ${firstLineOf(error)}`);
    }
  }
}

// ---------------------------------------------------------------------------
// The index

interface IndexFile {
  version: 1;
  images: Omit<ImageRecord, 'rootfs'>[];
}

function readIndex(store: ImageStore): ImageRecord[] {
  const path = join(store.dir, INDEX_FILE);
  if (!existsSync(path)) return [];
  let parsed: IndexFile;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as IndexFile;
    if (parsed.version !== 1 || !Array.isArray(parsed.images)) throw new Error('unknown layout');
    for (const record of parsed.images) {
      parseImageReference(record.tag);
      if (!IMAGE_ID.test(record.id)) throw new Error(`bad image ID ${quoted(String(record.id))}`);
    }
  } catch (error) {
    throw new SigilError('internal', `image index ${path} is damaged: ${firstLineOf(error)}`, {
      cause: error,
    });
  }
  return parsed.images.map((record) => ({ ...record, rootfs: join(store.dir, record.id, 'rootfs') }));
}

function writeIndex(store: ImageStore, records: readonly ImageRecord[]): void {
  const path = join(store.dir, INDEX_FILE);
  const file: IndexFile = { version: 1, images: records.map(({ rootfs: _rootfs, ...record }) => record) };
  renameSync(writeTemporaryBeside(path, `${JSON.stringify(file, null, 2)}\n`, 0o600), path);
}

function refuseExistingTag(store: ImageStore, reference: string): void {
  if (readIndex(store).some((record) => record.tag === reference)) {
    throw alreadyExists(`image ${reference}: already on this node; remove it first`);
  }
}

const queues = new Map<string, Promise<unknown>>();

/** Runs `work` after every earlier change to the same store in this process. */
function serialized<T>(store: ImageStore, work: () => Promise<T>): Promise<T> {
  const next = (queues.get(store.dir) ?? Promise.resolve()).catch(() => undefined).then(work);
  queues.set(store.dir, next);
  return next;
}

// ---------------------------------------------------------------------------
// What an image may hold

class Budget {
  entries = 0;
  bytes = 0;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  constructor(limits: ImportLimits) {
    this.#maxEntries = limits.maxEntries ?? DEFAULT_MAX_IMAGE_ENTRIES;
    this.#maxBytes = limits.maxBytes ?? DEFAULT_MAX_IMAGE_BYTES;
  }
  add(bytes: number): void {
    this.entries += 1;
    this.bytes += bytes;
    if (this.entries > this.#maxEntries) {
      throw new SigilError('resource_exhausted', `image: more than ${this.#maxEntries} entries`);
    }
    if (this.bytes > this.#maxBytes) {
      throw new SigilError('resource_exhausted', `image: more than ${this.#maxBytes} bytes`);
    }
  }
}

/** A member path relative to the image root: no '..', not absolute, within length limits. */
function checkMemberPath(path: string): void {
  if (path.length > MAX_MEMBER_PATH_LENGTH) {
    throw invalid(`image: a path is longer than ${MAX_MEMBER_PATH_LENGTH}`);
  }
  if (path.startsWith('/')) throw invalid(`image member ${quoted(path)}: an absolute path`);
  for (const part of path.split('/')) {
    if (part === '..') throw invalid(`image member ${quoted(path)}: climbs out with '..'`);
    if (part.length > MAX_MEMBER_NAME_LENGTH) {
      throw invalid(`image member ${quoted(path)}: a name is too long`);
    }
  }
}

/** A symlink at `path` (relative to the image root) may point anywhere inside the image, never above it. */
function checkSymlinkTarget(path: string, target: string): void {
  if (target === '' || target.length > MAX_MEMBER_PATH_LENGTH) {
    throw invalid(`image symlink ${quoted(path)}: an empty or over-long target`);
  }
  if (target.startsWith('/')) return; // absolute: resolved inside the image's root when the workload runs
  let depth = path.split('/').length - 1;
  for (const part of target.split('/')) {
    if (part === '..') depth -= 1;
    else if (part !== '' && part !== '.') depth += 1;
    if (depth < 0) throw invalid(`image symlink ${quoted(path)} → ${quoted(target)}: leaves the image`);
  }
}

function refuseKind(path: string, kind: string): never {
  throw invalid(
    `image member ${quoted(path || '/')}: ${kind} not allowed (images hold files, directories and links; /dev comes from the store)`,
  );
}

function kindOf(stats: {
  isBlockDevice(): boolean;
  isCharacterDevice(): boolean;
  isFIFO(): boolean;
}): string {
  if (stats.isBlockDevice() || stats.isCharacterDevice()) return 'a device node';
  if (stats.isFIFO()) return 'a FIFO';
  return 'a socket';
}

function isWithin(path: string, ancestor: string): boolean {
  return path === ancestor || path.startsWith(ancestor.endsWith(sep) ? ancestor : ancestor + sep);
}

function nameOf(raw: Buffer, parent: string): string {
  try {
    return utf8.decode(raw);
  } catch {
    throw invalid(`image: a name in ${quoted(parent || '/')} is not UTF-8`);
  }
}

// ---------------------------------------------------------------------------
// From a directory

const asRoot = process.getuid?.() === 0;

/** Copies `from` to `to` (which must not exist), entry by entry, refusing what an image may not hold. */
async function copyTree(
  from: string,
  to: string,
  relative: string,
  budget: Budget,
  links: Map<string, string>,
): Promise<void> {
  const stats = await stat(from); // the source's root may be a symlink to it; below it, nothing is followed
  await mkdir(to, { mode: 0o700 });
  for (const raw of await readdir(from, { encoding: 'buffer' })) {
    const name = nameOf(raw, relative);
    const source = join(from, name);
    const target = join(to, name);
    const path = relative ? `${relative}/${name}` : name;
    checkMemberPath(path);
    const entry = await lstat(source);
    if (entry.isDirectory()) {
      budget.add(0);
      await copyTree(source, target, path, budget, links);
    } else if (entry.isSymbolicLink()) {
      budget.add(0);
      const pointsTo = await readlink(source);
      checkSymlinkTarget(path, pointsTo);
      await symlink(pointsTo, target);
      if (asRoot) await lchown(target, entry.uid, entry.gid);
      await lutimes(target, entry.atime, entry.mtime);
    } else if (entry.isFile()) {
      const inode = `${entry.dev}:${entry.ino}`;
      const first = entry.nlink > 1 ? links.get(inode) : undefined;
      if (first) {
        budget.add(0);
        await link(first, target);
        continue;
      }
      budget.add(entry.size);
      await copyFile(source, target);
      await keepMetadata(target, entry);
      if (entry.nlink > 1) links.set(inode, target);
    } else {
      refuseKind(path, kindOf(entry));
    }
  }
  await keepMetadata(to, stats); // last: a read-only directory is only made so once filled
}

async function keepMetadata(
  path: string,
  stats: { uid: number; gid: number; mode: number; atime: Date; mtime: Date },
): Promise<void> {
  if (asRoot) await lchown(path, stats.uid, stats.gid); // before chmod: chown clears set-id bits
  await chmod(path, stats.mode & 0o7777);
  await lutimes(path, stats.atime, stats.mtime);
}

/** Checks an extracted tree by the same rules as a directory source, and counts it. */
async function checkTree(dir: string, relative: string, budget: Budget, linked: Set<string>): Promise<void> {
  for (const raw of await readdir(dir, { encoding: 'buffer' })) {
    const name = nameOf(raw, relative);
    const path = relative ? `${relative}/${name}` : name;
    checkMemberPath(path);
    const entry = await lstat(join(dir, name));
    if (entry.isDirectory()) {
      budget.add(0);
      await checkTree(join(dir, name), path, budget, linked);
    } else if (entry.isSymbolicLink()) {
      budget.add(0);
      checkSymlinkTarget(path, await readlink(join(dir, name)));
    } else if (entry.isFile()) {
      const inode = `${entry.dev}:${entry.ino}`;
      budget.add(entry.nlink > 1 && linked.has(inode) ? 0 : entry.size);
      if (entry.nlink > 1) linked.add(inode);
    } else {
      refuseKind(path, kindOf(entry));
    }
  }
}

// ---------------------------------------------------------------------------
// From a tar file

interface TarMember {
  type: string;
  path: string;
  linkTarget?: string;
  size: number;
}

/** Lists `file` with GNU tar and refuses it if any member could not go into an image safely. */
async function checkTarListing(file: string, budget: Budget): Promise<void> {
  const members = await listTar(file, budget);
  const symlinks = new Set<string>();
  const files = new Set<string>();
  for (const member of members) {
    if (member.path === '' && member.type !== 'd')
      throw invalid("image tar: the archive's root is not a directory");
    switch (member.type) {
      case 'd':
        break;
      case '-':
        files.add(member.path);
        break;
      case 'l':
        checkSymlinkTarget(member.path, member.linkTarget!);
        symlinks.add(member.path);
        break;
      case 'h': {
        const refused = invalid(
          `image tar: hard link ${quoted(member.path)} → ${quoted(member.linkTarget!)} is not to an earlier file of the archive`,
        );
        let target: string;
        try {
          target = normalMemberPath(member.linkTarget!);
        } catch {
          throw refused; // absolute or climbing: never a member of this archive
        }
        if (!files.has(target)) throw refused;
        break;
      }
      case 'c':
      case 'b':
        refuseKind(member.path, 'a device node');
        break;
      case 'p':
        refuseKind(member.path, 'a FIFO');
        break;
      default:
        refuseKind(member.path, `a member of tar type '${member.type}'`);
    }
  }
  // Extracting through a symlink member writes wherever it points, on the host.
  for (const member of members) {
    for (const path of member.type === 'h'
      ? [member.path, normalMemberPath(member.linkTarget!)]
      : [member.path]) {
      const parts = path.split('/');
      for (let end = 1; end < parts.length; end++) {
        const ancestor = parts.slice(0, end).join('/');
        if (symlinks.has(ancestor)) {
          throw invalid(`image tar: member ${quoted(path)} lies beneath the symlink ${quoted(ancestor)}`);
        }
      }
    }
  }
}

/** `./a//b/` → `a/b`, after refusing absolute and '..' paths. */
function normalMemberPath(name: string): string {
  const path = name.replace(/^(\.\/+)+/, '');
  checkMemberPath(path);
  const normal = posix.normalize(path).replace(/\/+$/, '');
  return normal === '.' ? '' : normal;
}

/**
 * Every member of the archive, as GNU tar lists it: C-quoted names, numeric
 * owners, and names as stored (without --absolute-names the listing would
 * quietly strip a leading '/' from link targets, hiding what we refuse).
 */
async function listTar(file: string, budget: Budget): Promise<TarMember[]> {
  const tar = spawn(TAR, ['--quoting-style=c', '--numeric-owner', '--absolute-names', '-tv', '-f', file], {
    env: TAR_ENV,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  tar.stderr.setEncoding('utf8');
  tar.stderr.on('data', (text: string) => {
    if (stderr.length < 4096) stderr += text;
  });
  const ended = new Promise<number | null>((resolveEnd, rejectEnd) => {
    tar.once('error', rejectEnd);
    tar.once('close', resolveEnd);
  });
  const members: TarMember[] = [];
  try {
    for await (const line of createInterface({ input: tar.stdout, crlfDelay: Number.POSITIVE_INFINITY })) {
      if (line === '') continue;
      const member = parseTarLine(line);
      budget.add(member.type === '-' ? member.size : 0);
      members.push(member);
    }
  } catch (error) {
    tar.kill('SIGKILL');
    await ended.catch(() => undefined);
    throw error;
  }
  const code = await ended.catch((error: unknown) => {
    throw preconditionFailed(`image tar: cannot run ${TAR}: ${firstLineOf(error)}`);
  });
  if (code !== 0) {
    throw invalid(`image tar ${quoted(file)}: not a readable tar archive (${firstLine(stderr)})`);
  }
  return members;
}

function parseTarLine(line: string): TarMember {
  const match = TAR_LISTING.exec(line);
  if (!match) throw invalid(`image tar: cannot read the listing line ${quoted(line)}`);
  const [, type, size, rest] = match;
  const name = decodeCQuoted(rest, 0);
  const member: TarMember = {
    type,
    path: normalMemberPath(name.value),
    size: size.includes(',') ? 0 : Number(size),
  };
  const tail = rest.slice(name.end);
  if (tail === '') return member;
  const arrow = tail.startsWith(' -> ') ? 4 : tail.startsWith(' link to ') ? 9 : -1;
  if (arrow === -1) throw invalid(`image tar: cannot read the listing line ${quoted(line)}`);
  const target = decodeCQuoted(tail, arrow);
  if (target.end !== tail.length) throw invalid(`image tar: cannot read the listing line ${quoted(line)}`);
  return { ...member, linkTarget: target.value };
}

const C_ESCAPES: Record<string, number> = {
  a: 7,
  b: 8,
  f: 12,
  n: 10,
  r: 13,
  t: 9,
  v: 11,
  '\\': 92,
  '"': 34,
  '?': 63,
};

/** The C-quoted string starting at `start` (tar --quoting-style=c), and where it ends. */
function decodeCQuoted(text: string, start: number): { value: string; end: number } {
  if (text[start] !== '"') throw invalid('image tar: a listed name is not quoted');
  const bytes: number[] = [];
  let index = start + 1;
  while (index < text.length) {
    const char = text[index];
    if (char === '"') {
      try {
        return { value: utf8.decode(Uint8Array.from(bytes)), end: index + 1 };
      } catch {
        throw invalid('image tar: a member name is not UTF-8');
      }
    }
    if (char === '\\') {
      const next = text[index + 1] ?? '';
      const octal = /^[0-7]{1,3}/.exec(text.slice(index + 1, index + 4));
      if (octal) {
        bytes.push(Number.parseInt(octal[0], 8) & 0xff);
        index += 1 + octal[0].length;
        continue;
      }
      if (!(next in C_ESCAPES)) throw invalid('image tar: a listed name has an unknown escape');
      bytes.push(C_ESCAPES[next]);
      index += 2;
      continue;
    }
    bytes.push(...Buffer.from(char, 'utf8'));
    index += 1;
  }
  throw invalid('image tar: a listed name is not terminated');
}

/** Extracts `file` into `dir` with numeric owners (the image's IDs, not the host's names for them). */
async function extractTar(file: string, dir: string): Promise<void> {
  try {
    await run(
      TAR,
      ['-x', '-f', file, '-C', dir, '--numeric-owner', '--delay-directory-restore', '--warning=no-timestamp'],
      { env: TAR_ENV, maxBuffer: 1024 * 1024 },
    );
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw invalid(
      `image tar ${quoted(file)}: extraction failed (${firstLine(stderr) || firstLineOf(error)})`,
    );
  }
}

// ---------------------------------------------------------------------------

function lstatOrNull(path: string): Stats | null {
  return lstatSync(path, { throwIfNoEntry: false }) ?? null;
}
