// A build context as it arrives over BuildImage: entries (directories, files
// in one or more pieces, symlinks), written beneath a fresh directory of the
// daemon's. Every path is checked before anything is written: relative,
// '/'-separated, no '.', '..' or empty parts, no NUL, bounded in length. A
// symlink is created as a link and never followed: a later entry beneath it
// (the write-through-a-link escape) is refused, since each parent must be a
// real directory made by this upload. The whole upload is bounded in entries
// and bytes. The build context resolver (guest/build-context.ts) checks again
// when it serves, so a link pointing out is never read through either.
import { chmodSync, closeSync, lstatSync, mkdirSync, openSync, symlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { invalid, SigilError } from '../errors.ts';

export const MAX_CONTEXT_BYTES = 1024 ** 3;
export const MAX_CONTEXT_ENTRIES = 100_000;
const MAX_PATH_LENGTH = 4096;
const MAX_PART_LENGTH = 255;

export interface ContextEntry {
  readonly path: string;
  readonly mode: number;
  readonly isDir: boolean;
  readonly data: Uint8Array;
  readonly symlink: string;
}

const quoted = (value: string) => JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);

function checkedPath(path: string): string[] {
  if (typeof path !== 'string' || path.length === 0 || path.length > MAX_PATH_LENGTH)
    throw invalid(`build context entry ${quoted(String(path))}: not a usable path`);
  if (path.includes('\0')) throw invalid(`build context entry ${quoted(path)}: contains a NUL byte`);
  if (path.startsWith('/')) throw invalid(`build context entry ${quoted(path)}: absolute paths are refused`);
  const parts = path.split('/');
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..')
      throw invalid(`build context entry ${quoted(path)}: '.', '..' and empty parts are refused`);
    if (part.length > MAX_PART_LENGTH)
      throw invalid(`build context entry ${quoted(path)}: a part is too long`);
  }
  return parts;
}

export class ContextUpload {
  readonly root: string;
  #entries = 0;
  #bytes = 0;
  /** The file the last entry opened, continued by entries with an empty path. */
  #open: { fd: number; path: string } | null = null;
  readonly #directories = new Set<string>(['']);

  constructor(root: string) {
    this.root = root;
    mkdirSync(root, { recursive: true, mode: 0o700 });
  }

  /** Writes one entry; throws invalid (nothing more is accepted) on a bad one. */
  add(entry: ContextEntry): void {
    if (entry.path === '') {
      this.#append(entry.data);
      return;
    }
    this.#closeFile();
    if (++this.#entries > MAX_CONTEXT_ENTRIES)
      throw new SigilError(
        'resource_exhausted',
        `the build context has more than ${MAX_CONTEXT_ENTRIES} entries`,
      );
    const parts = checkedPath(entry.path);
    const parent = parts.slice(0, -1).join('/');
    this.#ensureDirectory(parent, entry.path);
    const target = join(this.root, ...parts);
    const mode = entry.mode & 0o777;
    if (entry.isDir) {
      if (this.#directories.has(parts.join('/'))) return;
      mkdirSync(target, { mode: 0o700 });
      chmodSync(target, mode | 0o700);
      this.#directories.add(parts.join('/'));
      return;
    }
    if (entry.symlink !== '') {
      symlinkSync(entry.symlink, target);
      return;
    }
    const fd = openSync(target, 'wx', mode | 0o600);
    this.#open = { fd, path: entry.path };
    this.#append(entry.data);
  }

  /** Closes the last file. */
  finish(): void {
    this.#closeFile();
  }

  #append(data: Uint8Array): void {
    if (data.length === 0) return;
    if (this.#open === null) throw invalid('build context: data without a file entry before it');
    this.#bytes += data.length;
    if (this.#bytes > MAX_CONTEXT_BYTES)
      throw new SigilError(
        'resource_exhausted',
        `the build context is larger than ${MAX_CONTEXT_BYTES} bytes`,
      );
    writeSync(this.#open.fd, data);
  }

  #closeFile(): void {
    if (this.#open !== null) closeSync(this.#open.fd);
    this.#open = null;
  }

  /** Makes the parents of an entry as real directories; refuses a parent that is anything else. */
  #ensureDirectory(relative: string, forPath: string): void {
    if (this.#directories.has(relative)) return;
    const parts = relative.split('/');
    for (let index = 1; index <= parts.length; index++) {
      const prefix = parts.slice(0, index).join('/');
      if (this.#directories.has(prefix)) continue;
      const path = join(this.root, ...parts.slice(0, index));
      let stats: ReturnType<typeof lstatSync> | undefined;
      try {
        stats = lstatSync(path);
      } catch {
        stats = undefined;
      }
      if (stats !== undefined)
        throw invalid(
          `build context entry ${quoted(forPath)}: ${quoted(prefix)} is not a directory of the upload`,
        );
      mkdirSync(path, { mode: 0o755 });
      this.#directories.add(prefix);
    }
  }
}
