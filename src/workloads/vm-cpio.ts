// A cpio archive in the "newc" format, the one the Linux kernel unpacks as an
// initramfs. Written here rather than by cpio(1) so that the archive can hold
// what an unprivileged build could not create on disk (the /dev/console node
// the kernel opens for init) and every entry is owned by root whoever builds
// it. Only what an initramfs needs: directories, regular files, symlinks and
// character devices.

/** One entry; paths are relative ("bin/busybox"), parents listed before children. */
export type CpioEntry =
  | { readonly kind: 'directory'; readonly path: string; readonly mode?: number }
  | { readonly kind: 'file'; readonly path: string; readonly data: Buffer; readonly mode?: number }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string }
  | {
      readonly kind: 'char-device';
      readonly path: string;
      readonly major: number;
      readonly minor: number;
      readonly mode?: number;
    };

const MAGIC = '070701';
const TRAILER = 'TRAILER!!!';
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(value: number): string {
  return value.toString(16).padStart(8, '0');
}

function padding(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function record(
  inode: number,
  mode: number,
  nlink: number,
  name: string,
  data: Buffer,
  rdev: { major: number; minor: number } = { major: 0, minor: 0 },
): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`);
  const header = Buffer.from(
    MAGIC +
      [
        inode,
        mode,
        0, // uid: root
        0, // gid: root
        nlink,
        0, // mtime: fixed, so the same inputs give the same archive
        data.length,
        0,
        0,
        rdev.major,
        rdev.minor,
        nameBytes.length,
        0, // check: unused by newc
      ]
        .map(hex8)
        .join(''),
  );
  // The name is padded so that header + name ends on a 4-byte boundary; then the data likewise.
  return [header, nameBytes, padding(header.length + nameBytes.length), data, padding(data.length)];
}

/** The archive for `entries`, ending with the trailer. */
export function cpioArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let inode = 1;
  for (const entry of entries) {
    if (entry.path === '' || entry.path.startsWith('/') || entry.path.split('/').includes('..')) {
      throw new Error(`cpio entry ${JSON.stringify(entry.path)}: must be a relative path inside the archive`);
    }
    switch (entry.kind) {
      case 'directory':
        parts.push(...record(inode++, S_IFDIR | (entry.mode ?? 0o755), 2, entry.path, Buffer.alloc(0)));
        break;
      case 'file':
        parts.push(...record(inode++, S_IFREG | (entry.mode ?? 0o644), 1, entry.path, entry.data));
        break;
      case 'symlink':
        parts.push(...record(inode++, S_IFLNK | 0o777, 1, entry.path, Buffer.from(entry.target)));
        break;
      case 'char-device':
        parts.push(
          ...record(inode++, S_IFCHR | (entry.mode ?? 0o600), 1, entry.path, Buffer.alloc(0), {
            major: entry.major,
            minor: entry.minor,
          }),
        );
        break;
    }
  }
  parts.push(...record(0, 0, 1, TRAILER, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
