import { readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { alreadyExists, invalid, notFound } from '../errors.ts';
import { writeTemporaryBeside } from './durable-write.ts';

export interface PlannedFile {
  readonly path: string;
  readonly contents: string | Buffer;
  /** 0o600 for private keys, 0o644 otherwise. */
  readonly mode: number;
  /** State files (like a CA's metadata) that a command updates in place, with or without --force. */
  readonly replaces?: boolean;
}

export const PRIVATE = 0o600;
export const PUBLIC = 0o644;

export function writeFilesAtomically(files: readonly PlannedFile[], options: { force?: boolean } = {}): void {
  if (!options.force) {
    for (const file of files) {
      if (!file.replaces && exists(file.path))
        throw alreadyExists(`${file.path} already exists (use --force to overwrite)`);
    }
  }
  const written: { temporary: string; target: string }[] = [];
  try {
    for (const file of files) {
      written.push({
        temporary: writeTemporaryBeside(file.path, file.contents, file.mode),
        target: file.path,
      });
    }
    for (const { temporary, target } of written) renameSync(temporary, target);
  } catch (error) {
    for (const { temporary } of written) rmSync(temporary, { force: true });
    throw error;
  }
}

export function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Read a file the user named, with errors that say which file and why. */
export function readInputFile(path: string, what = 'file'): Buffer {
  try {
    const stat = statSync(path);
    if (stat.isDirectory()) throw invalid(`${what} ${path} is a directory`);
    if (stat.size > 16 * 1024 * 1024) throw invalid(`${what} ${path} is larger than 16 MiB`);
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw notFound(`${what} ${path} does not exist`);
    if (code === 'EACCES') throw invalid(`${what} ${path} is not readable (permission denied)`);
    throw error;
  }
}

/** A JSON file's text parsed as an object (not an array or a scalar); invalid() names `path` otherwise. */
export function parseJsonObject(text: string, path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid(`${path} is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(`${path} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}
