// The one way sigil writes a file it must not lose or half-write: contents go
// to a temporary file beside the target (created exclusively, with the final
// mode, fsynced), which the caller then renames over the target.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Writes and fsyncs a temporary file next to `target`; returns its path (rename it into place). */
export function writeTemporaryBeside(target: string, contents: string | Buffer, mode: number): string {
  const temporary = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temporary, 'wx', mode);
  try {
    writeSync(fd, typeof contents === 'string' ? Buffer.from(contents) : contents);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return temporary;
}
