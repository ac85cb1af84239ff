// A VM workload's process: qemu booting the stock kernel (vm-kernel.ts) with
// sigil's initramfs (vm-initramfs.ts) and the workload's ext4 root disk
// (vm-image.ts), its serial console on qemu's stdin/stdout, and, with a
// network, a virtio NIC on a tap in the daemon's network namespace
// (vm-tap.ts, guarded by vm-spoof-guard.ts), and host directories exported
// read-only over 9p (`-virtfs …,readonly=on`; /init mounts them, see
// vm-initramfs.ts). It offers what the supervisor uses of a namespaced process:
// a pid (qemu's, for the cgroup), output, an exit, kill.
//
// The machine: `-M pc` (microvm lacks the PCI the stock kernel's virtio
// drivers probe), KVM when it really works and TCG otherwise
// (vm-accelerator.ts), no default devices, no display, -no-reboot so that
// the guest's end (/init powers off, or a panic with panic=-1 reboots) ends qemu.
//
// The start: qemu begins paused (-S); once onSpawned has run with its pid
// (joining the workload's cgroup, say), a QMP `cont` lets the guest run, so
// nothing of the guest runs outside the cgroup. With a network, qemu is
// exec'd by `nsenter --net=…` into the daemon's namespace (the same pid: no
// fork), where it opens the tap by name.
//
// The end: shutdown() asks qemu to quit over QMP, then kills it after a
// grace period; kill() signals qemu at once.
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';
import type { ProcessExit } from './namespace-process.ts';
import { type Accelerator, chooseAccelerator } from './vm-accelerator.ts';
import type { VmKernel } from './vm-kernel.ts';
import { QmpConnection } from './vm-qmp.ts';

export interface VmNetwork {
  /** The network namespace (`ip netns` name) where the tap lives; qemu runs there. */
  readonly namespace: string;
  readonly tap: string;
  /** The guest NIC's MAC (macAddressFor(key)). */
  readonly mac: string;
  /** The guest's address with prefix, e.g. 10.77.0.5/24. */
  readonly address: string;
  /** The default route (the bridge's address); none when absent. */
  readonly gateway?: string;
}

/** A host directory the guest sees read-only over 9p (virtio), mounted by /init (vm-initramfs.ts). */
export interface VmShare {
  /** An absolute host directory. */
  readonly source: string;
  /** The 9p mount tag the guest mounts it by (letters, digits, '_' and '-'; at most 31). */
  readonly tag: string;
}

export interface VmLaunchOptions {
  readonly kernel: VmKernel;
  /** The initramfs file (buildInitramfs's archive, written to disk). */
  readonly initramfs: string;
  /** The ext4 root disk image (buildExt4Image). */
  readonly rootDisk: string;
  /** A directory of this VM's own for the QMP socket (absolute, existing, short path). */
  readonly runDir: string;
  /** Guest memory; default 256. */
  readonly memoryMiB?: number;
  /** Virtual CPUs; default 1. */
  readonly cpus?: number;
  /** The guest's hostname (sigil.hostname=). */
  readonly hostname?: string;
  readonly network?: VmNetwork;
  /** Host directories exported read-only over 9p; none when absent. */
  readonly shares?: readonly VmShare[];
  /** Default: chooseAccelerator's answer for this kernel. */
  readonly accelerator?: Accelerator;
  /** Kernel log on the console (boot messages); default false (`quiet`). */
  readonly kernelLog?: boolean;
  /** Runs with qemu's pid while the VM is paused; a throw stops the launch (qemu is killed). */
  readonly onSpawned?: (pid: number) => void | Promise<void>;
}

export interface VmProcess {
  /** qemu's pid. */
  readonly pid: number;
  readonly accelerator: Accelerator;
  /** The serial console's input (what is typed). */
  readonly stdin: Writable;
  /** The serial console's output. */
  readonly stdout: Readable;
  /** Always null: qemu's own messages are gathered into the exit's launcherError instead. */
  readonly stderr: null;
  /** Settles once, when qemu has ended and its pipes have closed. */
  readonly exited: Promise<ProcessExit>;
  /** Signals qemu (SIGKILL by default); false once it has exited. */
  kill(signal?: NodeJS.Signals): boolean;
  /** Asks qemu to quit, then kills it if it has not ended within `graceMs`. */
  shutdown(graceMs?: number): Promise<ProcessExit>;
}

export const DEFAULT_MEMORY_MiB = 256;
export const MIN_MEMORY_MiB = 64;
export const MAX_MEMORY_MiB = 256 * 1024;
export const MAX_CPUS = 64;
const QEMU_CANDIDATES = ['/usr/bin/qemu-system-x86_64', '/usr/local/bin/qemu-system-x86_64'];
const NSENTER_CANDIDATES = ['/usr/bin/nsenter', '/bin/nsenter', '/usr/sbin/nsenter'];
const QEMU_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const QMP_SOCKET = 'qmp.sock';
const QMP_WAIT_MS = 10_000;
const DEFAULT_GRACE_MS = 5000;
const MAX_QEMU_STDERR = 4096;
/** sun_path holds 108 bytes. */
const MAX_SOCKET_PATH = 107;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const SHARE_TAG = /^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$/;
const MAX_SHARES = 16;

function quoted(value: unknown): string {
  const text = String(value);
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}

function checkedFile(field: string, path: unknown): string {
  if (typeof path !== 'string' || !path.startsWith('/'))
    throw invalid(`${field} ${quoted(path)}: must be an absolute path`);
  // qemu's option syntax splits on ','; a path with one would be read as more options.
  if (path.includes(',')) throw invalid(`${field} ${quoted(path)}: must not contain ','`);
  if (!existsSync(path) || !statSync(path).isFile()) throw notFound(`${field} ${path}: no such file`);
  return path;
}

function checkedWhole(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(`${field} ${quoted(value)}: a whole number from ${min} to ${max}`);
  }
  return value;
}

function octetsValid(match: RegExpExecArray): boolean {
  return match.slice(1, 5).every((octet) => Number(octet) <= 255);
}

function checkedNetwork(network: VmNetwork): VmNetwork {
  if (!NAME.test(network.namespace))
    throw invalid(`network namespace ${quoted(network.namespace)}: not a valid name`);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/.test(network.tap))
    throw invalid(`tap ${quoted(network.tap)}: not a valid interface name`);
  if (!MAC.test(network.mac)) throw invalid(`MAC ${quoted(network.mac)}: expected six lowercase hex octets`);
  const cidr = CIDR.exec(network.address);
  if (!cidr || !octetsValid(cidr) || Number(cidr[5]) > 32) {
    throw invalid(`guest address ${quoted(network.address)}: expected IPv4 with a prefix, e.g. 10.77.0.5/24`);
  }
  if (network.gateway !== undefined) {
    const gateway = IPV4.exec(network.gateway);
    if (!gateway || !octetsValid(gateway))
      throw invalid(`gateway ${quoted(network.gateway)}: expected an IPv4 address`);
  }
  return network;
}

function checkedShares(shares: readonly VmShare[] | undefined): readonly VmShare[] {
  if (shares === undefined) return [];
  if (!Array.isArray(shares) || shares.length > MAX_SHARES)
    throw invalid(`shares: a list of at most ${MAX_SHARES} directories`);
  const tags = new Set<string>();
  for (const share of shares) {
    if (typeof share?.tag !== 'string' || !SHARE_TAG.test(share.tag))
      throw invalid(`share tag ${quoted(share?.tag)}: 1–31 letters, digits, '_' or '-'`);
    if (tags.has(share.tag)) throw invalid(`share tag ${share.tag}: given twice`);
    tags.add(share.tag);
    const source = share.source;
    if (typeof source !== 'string' || !source.startsWith('/') || source.split('/').includes('..'))
      throw invalid(`share ${share.tag} ${quoted(source)}: must be an absolute path without '..'`);
    // qemu's option syntax splits on ','.
    if (source.includes(',')) throw invalid(`share ${share.tag} ${quoted(source)}: must not contain ','`);
    if (!existsSync(source) || !statSync(source).isDirectory())
      throw notFound(`share ${share.tag} ${source}: no such directory`);
  }
  return shares;
}

/** The kernel command line: the console, the end of init ending the VM, and the guest's settings for /init. */
export function kernelCommandLine(
  options: Pick<VmLaunchOptions, 'hostname' | 'network' | 'kernelLog'>,
): string {
  const words = ['console=ttyS0', 'panic=-1', options.kernelLog ? 'loglevel=6' : 'quiet'];
  if (options.hostname !== undefined) words.push(`sigil.hostname=${options.hostname}`);
  if (options.network) {
    words.push(`sigil.ip=${options.network.address}`);
    if (options.network.gateway) words.push(`sigil.gw=${options.network.gateway}`);
  }
  return words.join(' ');
}

/** Every refusal launchVm makes before anything starts, and qemu's arguments. */
export function qemuArguments(options: VmLaunchOptions, accelerator: Accelerator): string[] {
  const kernelImage = checkedFile('kernel', options.kernel?.bootImage);
  const initramfs = checkedFile('initramfs', options.initramfs);
  const rootDisk = checkedFile('root disk', options.rootDisk);
  const memory = checkedWhole(
    'memoryMiB',
    options.memoryMiB ?? DEFAULT_MEMORY_MiB,
    MIN_MEMORY_MiB,
    MAX_MEMORY_MiB,
  );
  const cpus = checkedWhole('cpus', options.cpus ?? 1, 1, MAX_CPUS);
  if (options.hostname !== undefined && (options.hostname.length > 64 || !HOSTNAME.test(options.hostname))) {
    throw invalid(`hostname ${quoted(options.hostname)}: 1–64 letters, digits, '-' and '.' (RFC 1123)`);
  }
  const network = options.network ? checkedNetwork(options.network) : undefined;
  const shares = checkedShares(options.shares);
  if (typeof options.runDir !== 'string' || !options.runDir.startsWith('/') || options.runDir.includes(',')) {
    throw invalid(`run directory ${quoted(options.runDir)}: must be an absolute path without ','`);
  }
  const qmpSocket = join(options.runDir, QMP_SOCKET);
  if (Buffer.byteLength(qmpSocket) > MAX_SOCKET_PATH) {
    throw invalid(`run directory ${quoted(options.runDir)}: too long for a unix socket path`);
  }
  return [
    '-M',
    'pc',
    '-accel',
    accelerator,
    ...(accelerator === 'kvm' ? ['-cpu', 'host'] : []),
    '-m',
    String(memory),
    '-smp',
    String(cpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-S',
    '-kernel',
    kernelImage,
    '-initrd',
    initramfs,
    '-append',
    kernelCommandLine({ ...options, network }),
    // The serial console on qemu's stdin/stdout; signal=off: a ^C typed is the guest's.
    '-chardev',
    'stdio,id=console,signal=off',
    '-serial',
    'chardev:console',
    '-drive',
    `file=${rootDisk},format=raw,if=none,id=root,cache=writeback`,
    '-device',
    'virtio-blk-pci,drive=root',
    ...(network
      ? [
          '-netdev',
          `tap,id=net0,ifname=${network.tap},script=no,downscript=no`,
          '-device',
          `virtio-net-pci,netdev=net0,mac=${network.mac}`,
        ]
      : []),
    ...shares.flatMap((share) => [
      '-virtfs',
      `local,path=${share.source},mount_tag=${share.tag},security_model=none,readonly=on`,
    ]),
    '-qmp',
    `unix:${qmpSocket},server=on,wait=off`,
  ];
}

/** Starts the VM; resolves once the guest runs (after onSpawned). A failure kills qemu. */
export async function launchVm(options: VmLaunchOptions): Promise<VmProcess> {
  const qemu = QEMU_CANDIDATES.find((path) => existsSync(path));
  if (!qemu)
    throw preconditionFailed(
      'qemu-system-x86_64 is not installed: VM workloads need it (apt-get install qemu-system-x86)',
    );
  // Checked before any probe starts.
  qemuArguments(options, options.accelerator ?? 'tcg');
  if (options.network && !existsSync(`/run/netns/${options.network.namespace}`)) {
    throw notFound(`network namespace ${options.network.namespace}: no such namespace`);
  }
  const accelerator =
    options.accelerator ?? (await chooseAccelerator(qemu, options.kernel.bootImage)).accelerator;
  const args = qemuArguments(options, accelerator);
  const qmpSocket = join(options.runDir, QMP_SOCKET);
  let program = qemu;
  let argv = args;
  if (options.network) {
    const nsenter = NSENTER_CANDIDATES.find((path) => existsSync(path));
    if (!nsenter) throw preconditionFailed('util-linux `nsenter` is not installed: VM networking needs it');
    program = nsenter;
    argv = [`--net=/run/netns/${options.network.namespace}`, '--', qemu, ...args];
  }
  const child = spawn(program, argv, { env: QEMU_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
  const pid = child.pid;
  // Console input typed after qemu has ended must not become an unhandled EPIPE.
  child.stdin.on('error', () => undefined);
  let qemuStderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    if (qemuStderr.length < MAX_QEMU_STDERR) qemuStderr += text;
  });
  let done = false;
  const exited = new Promise<ProcessExit>((resolve) => {
    child.once('error', (error) => {
      if (!done) qemuStderr += `\n${error.message}`;
    });
    child.once('close', (code, signal) => {
      done = true;
      const launcherError = qemuStderr
        .trim()
        .split('\n')
        .filter((line) => line.trim() !== '')
        .join('; ');
      const extra = launcherError ? { launcherError } : {};
      resolve(signal ? { code: null, signal, ...extra } : { code: code ?? 125, signal: null, ...extra });
    });
  });
  const kill = (signal: NodeJS.Signals = 'SIGKILL'): boolean => {
    if (done || pid === undefined) return false;
    try {
      return process.kill(pid, signal);
    } catch {
      return false;
    }
  };
  if (pid === undefined) {
    const exit = await exited;
    throw new SigilError('internal', `qemu did not start: ${exit.launcherError ?? 'no pid'}`);
  }
  let qmp: QmpConnection | undefined;
  try {
    qmp = await connectQmp(qmpSocket, exited, () => done);
    await options.onSpawned?.(pid);
    await qmp.execute('cont');
  } catch (error) {
    qmp?.close();
    kill();
    const exit = await exited;
    if (exit.launcherError) throw new SigilError('internal', `qemu: ${exit.launcherError}`, { cause: error });
    throw error;
  }
  qmp.close();
  const shutdown = async (graceMs = DEFAULT_GRACE_MS): Promise<ProcessExit> => {
    if (!done) {
      try {
        const connection = await QmpConnection.open(qmpSocket, graceMs);
        await connection.execute('quit').catch(() => undefined); // qemu may close before it replies
        connection.close();
      } catch {
        kill();
      }
      const timer = setTimeout(() => kill(), graceMs);
      await exited;
      clearTimeout(timer);
    }
    return exited;
  };
  return { pid, accelerator, stdin: child.stdin, stdout: child.stdout, stderr: null, exited, kill, shutdown };
}

/** Connects once qemu has made its QMP socket; refused when qemu ends first. */
async function connectQmp(
  path: string,
  exited: Promise<ProcessExit>,
  ended: () => boolean,
): Promise<QmpConnection> {
  const deadline = Date.now() + QMP_WAIT_MS;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (ended()) {
      const exit = await exited;
      throw new SigilError(
        'internal',
        `qemu ended at start: ${exit.launcherError ?? `exit code ${exit.code}`}`,
      );
    }
    if (existsSync(path)) {
      try {
        return await QmpConnection.open(path, QMP_WAIT_MS);
      } catch (error) {
        lastError = error;
      }
    }
    await sleep(20);
  }
  throw new SigilError(
    'internal',
    `qemu's QMP socket did not answer within ${QMP_WAIT_MS} ms: ${messageOf(lastError)}`,
  );
}
