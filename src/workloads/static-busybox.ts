// The workload launcher's last host program: a statically linked busybox.
//
// After pivot_root the host's filesystem must be detached before the
// workload runs, and no dynamically linked host program can run at that
// point (its loader would be looked up in the image). A static busybox,
// already running, detaches the old root and then sets the workload's
// uid/gid, working directory and session with its own applets (umount,
// nsenter, setsid). Debian's `busybox-static` installs one at /bin/busybox.
import { closeSync, openSync, readSync } from 'node:fs';
import { preconditionFailed } from '../errors.ts';

const CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];
const PT_INTERP = 3;
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
/** The program header table of any sane binary fits in this much of the file. */
const HEADER_BYTES = 64 * 1024;

/** Whether `path` is a 64-bit little-endian ELF executable without a program interpreter (a static binary). */
export function isStaticElf(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return false;
  }
  try {
    const head = Buffer.alloc(HEADER_BYTES);
    const length = readSync(fd, head, 0, HEADER_BYTES, 0);
    // 64-bit (EI_CLASS 2), little-endian (EI_DATA 1): the only kind sigil's hosts run.
    if (length < 64 || !head.subarray(0, 4).equals(ELF_MAGIC) || head[4] !== 2 || head[5] !== 1) return false;
    const tableOffset = Number(head.readBigUInt64LE(0x20));
    const entrySize = head.readUInt16LE(0x36);
    const entries = head.readUInt16LE(0x38);
    if (entrySize < 4 || tableOffset + entrySize * entries > length) return false;
    for (let i = 0; i < entries; i++) {
      if (head.readUInt32LE(tableOffset + i * entrySize) === PT_INTERP) return false;
    }
    return true;
  } finally {
    closeSync(fd);
  }
}

let found: string | undefined;

/** The host's static busybox, or a refusal saying how to get one. */
export function staticBusybox(): string {
  if (found !== undefined) return found;
  const path = CANDIDATES.find(isStaticElf);
  if (path === undefined) {
    throw preconditionFailed(
      'workloads need a statically linked busybox on the host at /bin/busybox (Debian: apt-get install busybox-static): the launcher runs it after the host filesystem is detached',
    );
  }
  found = path;
  return path;
}
