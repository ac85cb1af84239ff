// The initramfs a VM workload boots with: the host's static busybox, the
// kernel modules the stock Debian kernel needs for a virtio disk, a virtio NIC
// and ext4 (vm-kernel-modules.ts), and an /init that
//
//   1. mounts proc, sys and devtmpfs, loads the modules (dependencies first),
//   2. sets the hostname and configures eth0 from the kernel command line
//      (`sigil.hostname=web sigil.ip=10.77.0.5/24 sigil.gw=10.77.0.1`),
//   3. mounts the ext4 root from /dev/vda, the host's read-only 9p shares
//      inside it (the guest runtime under /.sigil, see guest-runtime.ts),
//      moves /dev into it, and
//   4. runs the guest command chrooted into it (a shell on the console by
//      default) and, when it ends, ends what is left, unmounts the disk and
//      powers the VM off: the guest's writes are on the disk, its journal
//      clean, when qemu exits (a build imports its stage from the disk).
//
// The guest command is baked into the archive (/etc/sigil/command, a `set --`
// line of single-quoted words) rather than the kernel command line, which is
// short and splits on blanks. Any failure before the guest command prints one
// `sigil-init: …` line on the console and powers the VM off, so qemu exits
// (-no-reboot) instead of hanging. The guest command is not PID 1: had it
// been (switch_root), its end would panic the kernel with its last writes
// still in the page cache.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { invalid } from '../errors.ts';
import { staticBusybox } from './static-busybox.ts';
import { type CpioEntry, cpioArchive } from './vm-cpio.ts';
import type { VmKernel } from './vm-kernel.ts';
import { type KernelModule, modulesToLoad } from './vm-kernel-modules.ts';

/** What the root disk, the NIC and ext4 need under Debian's kernel (metadata checksums want crc32c). */
export const VM_MODULES: readonly string[] = [
  'virtio_pci',
  'virtio_blk',
  'virtio_net',
  'crc32c_generic',
  'ext4',
];
/** What a 9p share (vm-launcher.ts's -virtfs) needs. */
export const VM_SHARE_MODULES: readonly string[] = ['9pnet_virtio', '9p'];
/** A shell on the serial console. */
export const DEFAULT_GUEST_COMMAND: readonly string[] = ['/bin/sh'];
/** The line /init prints just before it runs the guest command. */
export const INIT_DONE_MARKER = 'sigil-init: starting the guest';
const MAX_COMMAND_BYTES = 64 * 1024;
const TTY_MAJOR = 5;
const CONSOLE_MINOR = 1;
const SHARE_TAG = /^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$/;
// Mount points are read by `read -r tag target`: no blanks, no control characters.
const MOUNT_POINT = /^(\/[A-Za-z0-9._+@-]+)+$/;

/** A 9p share mounted read-only at `target` (absolute, inside the root disk) before the guest command. */
export interface InitramfsShareMount {
  readonly tag: string;
  readonly target: string;
}

export interface InitramfsOptions {
  readonly kernel: VmKernel;
  /** The program (absolute, inside the root disk) and its arguments; default DEFAULT_GUEST_COMMAND. */
  readonly command?: readonly string[];
  /** Extra modules to load after VM_MODULES (names, e.g. "vsock"). */
  readonly extraModules?: readonly string[];
  /** 9p shares to mount inside the root disk; their modules are added when there are any. */
  readonly shares?: readonly InitramfsShareMount[];
}

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
fail() { echo "sigil-init: $*"; poweroff -f; exit 1; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fail "mounting proc, sys or dev"
while read -r module; do
  insmod "/lib/modules/$module" || fail "loading $module"
done < /etc/sigil/modules
hostname=; address=; gateway=
for word in $(cat /proc/cmdline); do
  case "$word" in
    sigil.hostname=*) hostname=\${word#sigil.hostname=} ;;
    sigil.ip=*) address=\${word#sigil.ip=} ;;
    sigil.gw=*) gateway=\${word#sigil.gw=} ;;
  esac
done
[ -z "$hostname" ] || hostname "$hostname" || fail "setting the hostname"
ip link set lo up || fail "bringing lo up"
if [ -n "$address" ]; then
  tries=0
  until [ -e /sys/class/net/eth0 ]; do
    tries=$((tries + 1)); [ $tries -le 100 ] || fail "no eth0"; sleep 0.1
  done
  ip address add "$address" dev eth0 && ip link set eth0 up || fail "configuring eth0 as $address"
  [ -z "$gateway" ] || ip route add default via "$gateway" dev eth0 || fail "routing via $gateway"
fi
tries=0
until [ -b /dev/vda ]; do
  tries=$((tries + 1)); [ $tries -le 100 ] || fail "no root disk /dev/vda"; sleep 0.1
done
mount -t ext4 /dev/vda /newroot || fail "mounting the root disk"
while read -r tag target; do
  mkdir -p "/newroot$target" || fail "making $target for share $tag"
  mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=262144 "$tag" "/newroot$target" || fail "mounting share $tag at $target"
done < /etc/sigil/shares
if [ -d /newroot/dev ]; then mount --move /dev /newroot/dev || fail "moving /dev"; else umount /dev; fi
umount /sys; umount /proc
. /etc/sigil/command
[ -x "/newroot$1" ] || [ -L "/newroot$1" ] || fail "guest command $1 is not in the root disk"
echo "${INIT_DONE_MARKER}"
chroot /newroot "$@"
kill -KILL -1 2>/dev/null; sleep 0.1
mount -t proc proc /proc
mounted=$(while read -r _ target _; do case "$target" in /newroot/*) echo "$target" ;; esac; done < /proc/mounts)
for target in $(echo "$mounted" | sort -r); do umount "$target" 2>/dev/null || umount -l "$target"; done
umount /newroot 2>/dev/null || mount -o remount,ro /newroot
sync
poweroff -f
`;

/** A word quoted for sh: single quotes, each inner quote as '\\''. */
function shellQuoted(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

function checkedShares(shares: readonly InitramfsShareMount[]): readonly InitramfsShareMount[] {
  const targets = new Set<string>();
  for (const { tag, target } of shares) {
    if (typeof tag !== 'string' || !SHARE_TAG.test(tag))
      throw invalid(`share tag ${JSON.stringify(String(tag))}: 1–31 letters, digits, '_' or '-'`);
    if (
      typeof target !== 'string' ||
      !MOUNT_POINT.test(target) ||
      target.split('/').some((part) => part === '.' || part === '..')
    )
      throw invalid(
        `share mount point ${JSON.stringify(String(target).slice(0, 80))}: an absolute path of letters, digits and ._+@- without '.' or '..' parts`,
      );
    if (targets.has(target)) throw invalid(`share mount point ${target}: given twice`);
    targets.add(target);
  }
  return shares;
}

function checkedCommand(command: readonly string[]): readonly string[] {
  if (!Array.isArray(command) || command.length === 0) throw invalid('guest command: must name a program');
  let bytes = 0;
  for (const word of command) {
    if (typeof word !== 'string') throw invalid('guest command: every argument must be a string');
    if (word.includes('\0')) throw invalid('guest command: an argument contains a NUL byte');
    bytes += Buffer.byteLength(word) + 3;
  }
  if (bytes > MAX_COMMAND_BYTES) throw invalid(`guest command: longer than ${MAX_COMMAND_BYTES} bytes`);
  if (!command[0].startsWith('/') || command[0].split('/').includes('..')) {
    throw invalid(`guest command ${JSON.stringify(command[0])}: must be an absolute path without '..'`);
  }
  return command;
}

/** The initramfs (an uncompressed newc cpio archive) for `options`. */
export function buildInitramfs(options: InitramfsOptions): Buffer {
  const command = checkedCommand(options.command ?? DEFAULT_GUEST_COMMAND);
  const shares = checkedShares(options.shares ?? []);
  const modules: KernelModule[] = modulesToLoad(options.kernel.modulesDir, [
    ...VM_MODULES,
    ...(shares.length > 0 ? VM_SHARE_MODULES : []),
    ...(options.extraModules ?? []),
  ]);
  const directories = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'newroot', 'etc'];
  const entries: CpioEntry[] = [
    ...directories.map((path): CpioEntry => ({ kind: 'directory', path })),
    { kind: 'directory', path: 'etc/sigil' },
    { kind: 'directory', path: 'lib' },
    { kind: 'directory', path: 'lib/modules' },
    // The kernel opens it for init's stdin, stdout and stderr before /init runs.
    { kind: 'char-device', path: 'dev/console', major: TTY_MAJOR, minor: CONSOLE_MINOR },
    { kind: 'file', path: 'bin/busybox', data: readFileSync(staticBusybox()), mode: 0o755 },
    { kind: 'file', path: 'init', data: Buffer.from(INIT), mode: 0o755 },
    {
      kind: 'file',
      path: 'etc/sigil/modules',
      data: Buffer.from(modules.map((module) => `${module.name}.ko\n`).join('')),
    },
    {
      kind: 'file',
      path: 'etc/sigil/shares',
      data: Buffer.from(shares.map(({ tag, target }) => `${tag} ${target}\n`).join('')),
    },
    {
      kind: 'file',
      path: 'etc/sigil/command',
      data: Buffer.from(`set -- ${command.map(shellQuoted).join(' ')}\n`),
    },
  ];
  for (const module of modules) {
    const file = join(options.kernel.modulesDir, module.path);
    if (!statSync(file).isFile()) throw invalid(`kernel module ${module.name}: ${file} is not a file`);
    entries.push({ kind: 'file', path: `lib/modules/${module.name}.ko`, data: readFileSync(file) });
  }
  return cpioArchive(entries);
}
