// The uncompressed kernel a VM boots fastest. A bzImage decompresses itself
// at every boot, which under TCG emulation costs seconds (about 40% of a
// boot here); Debian's kernel is built with CONFIG_PVH, so its uncompressed
// ELF (vmlinux) carries the Xen PVH entry note qemu needs to boot it with
// -kernel directly. So the payload is decompressed once, when the kernel is
// cached: its place is in the bzImage header (setup_sects, payload_offset),
// it must be xz (Debian's choice; any other leaves the bzImage in use), and
// the result is kept only if it has the PVH note.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, renameSync, rmSync } from 'node:fs';

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
const BZIMAGE_SIGNATURE = 'HdrS';
const PT_NOTE = 4;
/** XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point. */
const XEN_PVH_ENTRY_NOTE = 18;
const XZ_CANDIDATES = ['/usr/bin/xz', '/bin/xz'];
const XZ_TIMEOUT_MS = 120_000;

/** The xz payload of a bzImage, or null when it is not one or not xz-compressed. */
export function xzPayloadOf(bzImage: Buffer): Buffer | null {
  if (bzImage.length < 0x250 || bzImage.toString('latin1', 0x202, 0x206) !== BZIMAGE_SIGNATURE) return null;
  const setupSectors = bzImage[0x1f1] || 4;
  const start = (setupSectors + 1) * 512 + bzImage.readUInt32LE(0x248);
  const length = bzImage.readUInt32LE(0x24c);
  const payload = bzImage.subarray(start, start + length);
  return payload.length === length && payload.subarray(0, 6).equals(XZ_MAGIC) ? payload : null;
}

/** Whether an ELF64 file has the Xen PVH entry note (what qemu boots an uncompressed kernel by). */
export function hasPvhNote(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const read = (offset: number, length: number): Buffer => {
      const buffer = Buffer.alloc(length);
      return buffer.subarray(0, readSync(fd, buffer, 0, length, offset));
    };
    const header = read(0, 64);
    if (header.length < 64 || header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2) return false;
    const tableOffset = Number(header.readBigUInt64LE(0x20));
    const entrySize = header.readUInt16LE(0x36);
    const entries = header.readUInt16LE(0x38);
    const table = read(tableOffset, entrySize * entries);
    for (let i = 0; i < entries && (i + 1) * entrySize <= table.length; i++) {
      if (table.readUInt32LE(i * entrySize) !== PT_NOTE) continue;
      const notes = read(
        Number(table.readBigUInt64LE(i * entrySize + 8)),
        Number(table.readBigUInt64LE(i * entrySize + 32)),
      );
      for (let at = 0; at + 12 <= notes.length; ) {
        const nameSize = notes.readUInt32LE(at);
        const descSize = notes.readUInt32LE(at + 4);
        const type = notes.readUInt32LE(at + 8);
        const name = notes.toString('latin1', at + 12, at + 12 + Math.max(0, nameSize - 1));
        if (name === 'Xen' && type === XEN_PVH_ENTRY_NOTE) return true;
        at += 12 + Math.ceil(nameSize / 4) * 4 + Math.ceil(descSize / 4) * 4;
      }
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the uncompressed, PVH-bootable kernel of `bzImagePath` to `target`;
 * false (and nothing written) when the image cannot give one.
 */
export async function extractPvhKernel(bzImagePath: string, target: string): Promise<boolean> {
  const payload = xzPayloadOf(readFileSync(bzImagePath));
  const xz = XZ_CANDIDATES.find((path) => {
    try {
      closeSync(openSync(path, 'r'));
      return true;
    } catch {
      return false;
    }
  });
  if (!payload || !xz) return false;
  const staging = `${target}.partial`;
  const output = openSync(staging, 'w', 0o644);
  try {
    await new Promise<void>((resolve, reject) => {
      // --single-stream: the bzImage's trailing bytes after the xz stream are not more input.
      const child = spawn(xz, ['-dc', '--single-stream'], { stdio: ['pipe', output, 'ignore'] });
      const timer = setTimeout(() => child.kill('SIGKILL'), XZ_TIMEOUT_MS);
      child.once('error', reject);
      child.once('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`xz exited with ${code}`));
      });
      child.stdin?.end(payload);
    });
  } catch {
    rmSync(staging, { force: true });
    return false;
  } finally {
    closeSync(output);
  }
  if (!hasPvhNote(staging)) {
    rmSync(staging, { force: true });
    return false;
  }
  renameSync(staging, target);
  return true;
}
