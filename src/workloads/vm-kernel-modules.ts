// Which kernel modules a VM's initramfs loads, and in what order. Debian
// builds virtio, virtio_blk, virtio_net and ext4 as modules, and its
// linux-image package ships no modules.dep (depmod writes it on install), so
// the dependencies are read from each module's own `.modinfo` ELF section
// (`depends=a,b`), the same field depmod reads. Modules built into the kernel
// (modules.builtin) need no loading.
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { join, relative } from 'node:path';
import { notFound, preconditionFailed } from '../errors.ts';

/** One module to load: its name and its path under the modules directory. */
export interface KernelModule {
  readonly name: string;
  readonly path: string;
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const MAX_DEPTH = 32;

/** The module name the kernel uses for a file: `crc32c-intel.ko` is `crc32c_intel`. */
function moduleNameOf(file: string): string {
  return (file.split('/').pop() ?? file).replace(/\.ko$/, '').replaceAll('-', '_');
}

/** Every `.ko` under `modulesDir/kernel`, by module name. */
function moduleIndex(modulesDir: string): Map<string, string> {
  const index = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ko')) index.set(moduleNameOf(entry.name), relative(modulesDir, path));
    }
  };
  walk(join(modulesDir, 'kernel'));
  return index;
}

function builtinModules(modulesDir: string): Set<string> {
  try {
    const lines = readFileSync(join(modulesDir, 'modules.builtin'), 'utf8').split('\n');
    return new Set(lines.filter((line) => line !== '').map(moduleNameOf));
  } catch {
    return new Set();
  }
}

/** The strings of a 64-bit little-endian ELF file's `.modinfo` section (`key=value` each). */
export function modinfoOf(file: string): string[] {
  const fd = openSync(file, 'r');
  try {
    const read = (offset: number, length: number): Buffer => {
      const buffer = Buffer.alloc(length);
      const got = readSync(fd, buffer, 0, length, offset);
      if (got !== length) throw preconditionFailed(`${file}: truncated ELF file`);
      return buffer;
    };
    const header = read(0, 64);
    if (!header.subarray(0, 4).equals(ELF_MAGIC) || header[4] !== 2 || header[5] !== 1) {
      throw preconditionFailed(`${file}: not a 64-bit little-endian ELF module`);
    }
    const tableOffset = Number(header.readBigUInt64LE(0x28));
    const entrySize = header.readUInt16LE(0x3a);
    const entries = header.readUInt16LE(0x3c);
    const namesIndex = header.readUInt16LE(0x3e);
    const table = read(tableOffset, entrySize * entries);
    const section = (i: number) => ({
      name: table.readUInt32LE(i * entrySize),
      offset: Number(table.readBigUInt64LE(i * entrySize + 24)),
      size: Number(table.readBigUInt64LE(i * entrySize + 32)),
    });
    const names = section(namesIndex);
    const nameTable = read(names.offset, names.size);
    for (let i = 0; i < entries; i++) {
      const candidate = section(i);
      const end = nameTable.indexOf(0, candidate.name);
      if (nameTable.toString('latin1', candidate.name, end) !== '.modinfo') continue;
      return read(candidate.offset, candidate.size)
        .toString('utf8')
        .split('\0')
        .filter((text) => text !== '');
    }
    return [];
  } finally {
    closeSync(fd);
  }
}

/**
 * `wanted` and everything they depend on, dependencies first, without the
 * built-in ones. A wanted module that is neither a file nor built in is
 * refused.
 */
export function modulesToLoad(modulesDir: string, wanted: readonly string[]): KernelModule[] {
  const index = moduleIndex(modulesDir);
  const builtin = builtinModules(modulesDir);
  const ordered: KernelModule[] = [];
  const seen = new Set<string>();
  const visit = (name: string, depth: number): void => {
    const normal = name.replaceAll('-', '_');
    if (seen.has(normal) || builtin.has(normal)) return;
    if (depth > MAX_DEPTH) throw preconditionFailed(`kernel module ${normal}: dependencies nest too deeply`);
    const path = index.get(normal);
    if (path === undefined) throw notFound(`kernel module ${normal}: not in ${modulesDir}`);
    seen.add(normal);
    const depends = modinfoOf(join(modulesDir, path)).find((field) => field.startsWith('depends='));
    for (const dependency of depends?.slice('depends='.length).split(',') ?? []) {
      if (dependency !== '') visit(dependency, depth + 1);
    }
    ordered.push({ name: normal, path });
  };
  for (const name of wanted) visit(name, 0);
  return ordered;
}
