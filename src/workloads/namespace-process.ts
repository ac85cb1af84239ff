// A workload's process: its own PID, mount, UTS, IPC, network and user
// namespaces, rooted in a root filesystem by pivot_root, started with
// util-linux `unshare` and finished by a static busybox.
//
// The launch is these programs, all exec'd in place except one fork:
//
//   unshare --pid --fork --mount --uts --ipc --net   (the launcher: waits, reports the exit)
//     └─ /bin/bash -c STAGE_1     (PID 1 inside, host root with the host's files): waits for
//        │                        the daemon (fd 3), hostname, lo, binds the root onto itself,
//        │                        mounts its proc (sysctls and sysrq read-only), cd into it
//        └─ exec BUSYBOX sh -c STAGE_2      (static, from the host's path): pivot_root . ., detaches
//           │                                the host's tree (umount -l .)
//           └─ exec unshare -U -m sh -c STAGE_3   (busybox, in a new user namespace): waits while
//              │                                  the daemon maps every id to itself
//              └─ exec env -i VARS [setsid -c] nsenter -F -S UID -G GID -w WORKDIR -- COMMAND
//
// Why this shape:
// - Confinement. The root is changed with pivot_root and the host's tree is
//   then detached, so nothing of the host is reachable from inside, not even
//   by root there, which can escape a chroot. No dynamically linked host
//   program can run once the host is detached, hence the static busybox
//   (static-busybox.ts) for the last steps.
// - Privilege. Root inside is root in a user namespace of its own, which owns
//   none of the other namespaces: it cannot create device nodes, mount
//   anything (sysfs, cgroups, proc, block devices), load modules, set the
//   clock, the hostname or addresses, nor unmount or remount what stage 1 set
//   up (mounts are locked when a less privileged user namespace gets them).
//   Ids map to themselves, so files keep their owners; kernel checks that look
//   at the uid alone (sysctl files, for one) are why /proc/sys and friends are
//   read-only.
// - The init PID. The host's bash tells us it is running (a byte on fd 3) and
//   waits for a reply before anything of the workload runs. Its PID is then
//   the launcher's one child in /proc, it cannot have exited yet, and
//   onSpawned (e.g. joining cgroups) and later the id maps come before the
//   workload's first instruction.
// - The environment. The host-side programs run with a fixed environment;
//   the workload's variables are set only by the last exec (busybox env -i),
//   so no launcher shell adds or reads any. Variables the host's loader and
//   libc act on (LD_*, GLIBC_TUNABLES, …) are still refused.
// - The exit. util-linux 2.38's `unshare --fork` cannot re-raise SIGKILL
//   (it exits 1 and prints "sigprocmask unblock failed"). The workload's
//   stderr therefore goes to fd 4 and the launcher's own stderr stays ours, so
//   that line cannot be forged by the workload and is read as SIGKILL.
//
// Not done here: no seccomp filter (so, e.g., root's kernel keyring is not
// fenced off: keyrings follow the uid); no /dev is mounted (the image's own is
// used: the image store puts the standard character devices there; a pty's
// slave is bound at its /dev/pts path by the supervisor); supplementary groups
// are cleared, not read from /etc/group. With loopbackUp busybox's `ip`
// brings lo up; otherwise it stays down (the network layer brings it up when
// it attaches a veth). The launcher closes every descriptor above 4 before
// the workload runs.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  type Stats,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import { invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { staticBusybox } from './static-busybox.ts';

/** Where an fd of the workload goes: a pipe we hand back, nowhere, or an fd the caller owns (a pty later). */
export type StdioChoice = 'pipe' | 'ignore' | number;

export interface NamespaceProcessOptions {
  /** The root filesystem (an absolute host path); it must hold /proc and the command. */
  readonly rootfs: string;
  /** Absolute program path inside the root filesystem, then its arguments. */
  readonly command: readonly string[];
  /** The workload's whole environment; PATH defaults to DEFAULT_PATH when absent. */
  readonly env?: Readonly<Record<string, string>>;
  /** Absolute directory inside the root filesystem; '/' by default. */
  readonly workdir?: string;
  /** `uid[:gid]` (numeric) or `name[:group]` from the root filesystem's /etc/passwd and /etc/group; root by default. */
  readonly user?: string;
  /** The UTS hostname inside (the workload's name). */
  readonly hostname: string;
  /** stdin is ignored and stdout/stderr are pipes unless told otherwise. */
  readonly stdio?: { stdin?: StdioChoice; stdout?: StdioChoice; stderr?: StdioChoice };
  /** Runs with the init's host PID before the workload's program starts; a throw stops the launch. */
  readonly onSpawned?: (pid: number) => void | Promise<void>;
  /** Brings the loopback interface up inside before the program starts (busybox's ip applet). */
  readonly loopbackUp?: boolean;
  /** Makes stdin (a pty slave) the workload's controlling terminal, in a session of its own (setsid --ctty). */
  readonly controllingTerminal?: boolean;
  /**
   * Host directories bound read-only (nosuid, nodev) at absolute paths inside,
   * the target made if missing: the guest runtime (guest-runtime.ts).
   */
  readonly readOnlyBinds?: readonly ReadOnlyBind[];
}

export interface ReadOnlyBind {
  /** An absolute host directory. */
  readonly source: string;
  /** An absolute path inside the root filesystem. */
  readonly target: string;
}

/** How a workload ended: its exit code, or the signal that killed it. */
export type ProcessExit = (
  | { readonly code: number; readonly signal: null }
  | { readonly code: null; readonly signal: NodeJS.Signals }
) & {
  /** What the launcher itself printed, if anything (never the workload's output). */
  readonly launcherError?: string;
};

export interface NamespacedProcess {
  /** Host PID of the namespace's init (PID 1 inside): the workload's program once it runs. */
  readonly pid: number;
  /** Host PID of the waiting `unshare`: for diagnostics only, never signal it. */
  readonly launcherPid: number;
  /** The PID namespace, as /proc/PID/ns/pid names it (`pid:[4026532…]`). */
  readonly pidNamespace: string;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  /** Settles once, when the launcher has reported the exit and the pipes have closed. */
  readonly exited: Promise<ProcessExit>;
  /**
   * Signals the namespace's init (SIGKILL by default); false once it has exited.
   * SIGKILL ends the whole namespace. Any other signal reaches init only if
   * the program there handles it: the kernel drops unhandled signals to a
   * PID namespace's init.
   */
  kill(signal?: NodeJS.Signals): boolean;
}

/** PATH given to a workload whose environment has none (the usual container default). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const MAX_COMMAND_ARGUMENTS = 4096;
export const MAX_COMMAND_BYTES = 128 * 1024;
export const MAX_ENV_VARIABLES = 1024;
export const MAX_ENV_NAME_LENGTH = 255;
export const MAX_ENV_VALUE_BYTES = 32 * 1024;
export const MAX_PATH_LENGTH = 4096;
/** The kernel's limit for a UTS hostname. */
export const MAX_HOSTNAME_LENGTH = 64;

// bash (Essential on Debian) for closing descriptors above 9, which dash cannot name.
const SHELL = '/bin/bash';
const UNSHARE_CANDIDATES = ['/usr/bin/unshare', '/bin/unshare'];
// The host-side programs' whole environment: nothing of the caller's or ours leaks into a workload.
const LAUNCHER_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const LAUNCHER_FAILED = 125;
const SIGKILL_NOT_RERAISED = 'sigprocmask unblock failed';
const MAX_LAUNCHER_STDERR = 4096;
const MAX_ROOT_FILE_BYTES = 1024 * 1024;
const MAX_SYMLINK_HOPS = 40;
const MAX_ID = 4294967294; // (uid_t)-1 means "unchanged" to the kernel
/** Ids 0 … 2^32 − 2: every id but (uid_t)−1. */
const ALL_IDS = 4294967295;

// Paths of the workload's proc that root inside could still write through:
// kernel checks there look at the uid alone, and ids map to themselves. They
// are read-only (root inside cannot undo it: mounts are locked when it gets its
// own user namespace). What needs a capability (kcore, kmsg, module and
// device files) is closed by the user namespace already.
const PROC_READ_ONLY = ['sys', 'sysrq-trigger', 'irq', 'bus', 'fs'];

/** A path as an fstab field (fstab(5): octal escapes for blanks and backslashes). */
function fstabField(path: string): string {
  return path.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/**
 * Every mount stage 1 makes, as one fstab for one `mount -a` (one program
 * instead of one per mount: a launch costs milliseconds per exec). The root
 * bound onto itself with its own mounts (a pty slave, block devices), its
 * proc, and the read-only parts of that proc.
 */
function stageOneMounts(rootfs: string, binds: readonly ReadOnlyBind[]): string {
  const root = fstabField(rootfs);
  const lines = [`${root} ${root} none rbind 0 0`, `proc ${root}/proc proc nosuid,nodev,noexec 0 0`];
  for (const path of PROC_READ_ONLY) {
    // The same kernel: what the host's /proc lacks, the workload's lacks too.
    if (existsSync(`/proc/${path}`)) lines.push(`${root}/proc/${path} ${root}/proc/${path} none bind,ro 0 0`);
  }
  for (const { source, target } of binds) {
    lines.push(
      `${fstabField(source)} ${root}${fstabField(target)} none bind,ro,nosuid,nodev,X-mount.mkdir 0 0`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Binds checked: absolute, normalized, no '..', existing host directories. */
function checkedBinds(binds: readonly ReadOnlyBind[] | undefined): readonly ReadOnlyBind[] {
  for (const { source, target } of binds ?? []) {
    for (const path of [source, target]) {
      if (
        typeof path !== 'string' ||
        !path.startsWith('/') ||
        path.split('/').includes('..') ||
        CONTROL_OR_NUL.test(path)
      )
        throw invalid(`bind ${quoted(String(path))}: must be an absolute path without '..'`);
    }
    if (target === '/') throw invalid('bind: the root cannot be a bind target');
    if (!existsSync(source)) throw notFound(`bind source ${quoted(source)}: no such directory`);
  }
  return binds ?? [];
}

/** An unlinked file holding `text`, open for reading: handed to the launcher as a descriptor. */
function anonymousFile(text: string): number {
  const path = join(tmpdir(), `sigil-launch-${randomBytes(12).toString('hex')}`);
  const fd = openSync(path, 'wx+', 0o600);
  try {
    unlinkSync(path);
    writeSync(fd, text);
    return fd;
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

// Stage 1, the host's bash as PID 1, still host root: $1 hostname, $2 'up'
// (bring lo up) or '-' (it stays down), $3 the root filesystem, $4 the
// static busybox, $5 stage 2, $6 stage 3, then the workload's NAME=VALUE… and
// the last programs' arguments ([setsid -c] nsenter … -- COMMAND), which
// busybox env takes as they are (a name never holds '=', so the first word
// without one ends the variables). Arguments only, never evaluated.
const STAGE_1 = [
  'printf r >&3 && read -r go <&3 && [ "$go" = g ] || exit 125',
  'printf %s "$1" > /proc/sys/kernel/hostname || exit 125',
  // busybox's applets where one will do: a static program starts in a third of the time.
  '[ "$2" = - ] || "$4" ip link set lo up || exit 125',
  // Unprivileged ICMP sockets for ping: root inside holds no CAP_NET_RAW in this network namespace.
  'printf "0 4294967294" > /proc/sys/net/ipv4/ping_group_range || exit 125',
  // The root's own mounts (a pty slave, block devices) come along with --rbind.
  // The mounts, as an fstab on fd 5 (stageOneMounts).
  'mount -a -T /dev/fd/5 || exit 125',
  // The pivot happens in stage 2: the static busybox must start from the host's path, not the image's.
  'cd "$3" || exit 125',
  // Descriptors the daemon holds without close-on-exec (a pty master) never reach the workload.
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a template
  'for fd in /proc/self/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 4 ]; then { exec {fd}>&-; } 2>/dev/null; fi; done',
  'busybox=$4 stage2=$5',
  'shift 5',
  'exec "$busybox" sh -c "$stage2" "$@"',
].join('\n');

// Stage 2, busybox as host root, started from the host (so an image needs no
// busybox of its own): change the root (pivot_root . .) and detach the host
// (the old root, stacked on the new one), then give up host root: a user
// namespace of its own, whose new mount namespace locks every mount above in
// place. $0 stage 3.
const STAGE_2 =
  'pivot_root . . && umount -l . && cd / || exit 125; exec unshare -U -m sh -c "$0" sigil-init "$@"';

// Stage 3, busybox in the new user namespace: the daemon maps its ids, then the
// workload starts with exactly its own environment.
const STAGE_3 =
  'printf r >&3 && read -r go <&3 && [ "$go" = g ] || exit 125; exec env -i "$@" 2>&4 3>&- 4>&-';

// Read by the host's dynamic loader or libc while the inner unshare starts, before the root changes.
const HOST_LOADER_VARIABLES = new Set(['GLIBC_TUNABLES', 'GCONV_PATH', 'LOCPATH', 'NLSPATH', 'MALLOC_TRACE']);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const USER_SPEC = /^[A-Za-z0-9_][A-Za-z0-9._-]*(:[A-Za-z0-9_][A-Za-z0-9._-]*)?$/;
const NUMERIC_ID = /^[0-9]{1,10}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses
const CONTROL_OR_NUL = /[\u0000-\u001f\u007f]/;

/** A value quoted for a one-line message, cut when long. */
function quoted(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

/**
 * Starts `command` in fresh namespaces rooted at `rootfs`. Resolves once the
 * init is known and onSpawned has run; everything refused is refused before
 * any process starts.
 */
export async function spawnInNamespaces(options: NamespaceProcessOptions): Promise<NamespacedProcess> {
  const launch = checkedLaunch(options);
  if (process.getuid?.() !== 0) throw preconditionFailed('workloads need root (namespaces, chroot, set-uid)');
  const unshare = UNSHARE_CANDIDATES.find((path) => existsSync(path));
  if (!unshare) throw preconditionFailed('unshare (util-linux) is not installed: workloads need it');
  if (!existsSync(SHELL))
    throw preconditionFailed(`${SHELL} is not installed: the workload launcher needs it`);
  const busybox = staticBusybox();
  const loopback = options.loopbackUp ? 'up' : '-';

  const stdio = options.stdio ?? {};
  const mounts = anonymousFile(stageOneMounts(launch.rootfs, launch.binds));
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(
      unshare,
      [
        '--pid',
        '--fork',
        '--mount',
        '--propagation',
        'private',
        '--uts',
        '--ipc',
        '--net',
        '--',
        SHELL,
        // No startup file, whatever bash guesses from a socket on stdin.
        '--norc',
        '--noprofile',
        '-c',
        STAGE_1,
        'sigil-init',
        launch.hostname,
        loopback,
        launch.rootfs,
        busybox,
        STAGE_2,
        STAGE_3,
        ...launch.env,
        // busybox applets from here on: the host's files are gone.
        ...(options.controllingTerminal ? ['setsid', '-c'] : []),
        'nsenter',
        '-F',
        '-S',
        String(launch.uid),
        '-G',
        String(launch.gid),
        `-w${launch.workdir}`,
        '--',
        ...launch.command,
      ],
      {
        env: LAUNCHER_ENV,
        stdio: [
          stdio.stdin ?? 'ignore',
          stdio.stdout ?? 'pipe',
          'pipe',
          'pipe',
          stdio.stderr ?? 'pipe',
          mounts,
        ],
      },
    );
  } finally {
    closeSync(mounts); // the launcher holds its own copy
  }

  let launcherStderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (text: string) => {
    if (launcherStderr.length < MAX_LAUNCHER_STDERR) launcherStderr += text;
  });
  let done = false;
  const exited = new Promise<ProcessExit>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      done = true;
      resolve(exitOf(code, signal, launcherStderr));
    });
  });
  const gate = child.stdio[3] as Duplex;
  // The init closes its end once released; a reset after that says nothing about the workload.
  gate.on('error', () => undefined);

  let pid: number;
  try {
    await initIsWaiting(gate, exited);
    pid = onlyChildOf(child.pid!);
  } catch (error) {
    // Nothing of the workload runs yet. End the init if there is one (never the launcher: it would
    // orphan the init); without a gate a waiting init exits by itself, and the launcher with it.
    for (const orphan of childrenOf(child.pid)) signalQuietly(orphan, 'SIGKILL');
    gate.destroy();
    await exited.catch(() => undefined);
    if (error instanceof SigilError) throw error;
    throw new SigilError('internal', `could not start the workload: ${messageOf(error)}`, { cause: error });
  }
  const pidNamespace = readlinkSync(`/proc/${pid}/ns/pid`);
  const kill = (signal: NodeJS.Signals = 'SIGKILL'): boolean => {
    if (done) return false;
    try {
      // The PID could only be reused after the launcher reaped it; checking the namespace narrows even that.
      if (readlinkSync(`/proc/${pid}/ns/pid`) !== pidNamespace) return false;
      process.kill(pid, signal);
      return true;
    } catch {
      return false;
    }
  };

  try {
    await options.onSpawned?.(pid);
  } catch (error) {
    kill('SIGKILL');
    await exited.catch(() => undefined);
    throw error;
  }
  try {
    // Stage 1 sets up and detaches the host; stage 3 waits again, in its new user namespace.
    gate.write('g\n');
    await initIsWaiting(gate, exited);
    mapIdsToThemselves(pid);
  } catch (error) {
    kill('SIGKILL');
    await exited.catch(() => undefined);
    if (error instanceof SigilError) throw error;
    throw new SigilError('internal', `could not start the workload: ${messageOf(error)}`, { cause: error });
  }
  gate.end('g\n');

  return {
    pid,
    launcherPid: child.pid!,
    pidNamespace,
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: (child.stdio[4] as Readable | null) ?? null,
    exited,
    kill,
  };
}

/**
 * Every uid and gid of the workload's user namespace is the same id outside
 * (files keep their owners); its capabilities hold only in its namespaces.
 */
function mapIdsToThemselves(pid: number): void {
  writeFileSync(`/proc/${pid}/uid_map`, `0 0 ${ALL_IDS}\n`);
  writeFileSync(`/proc/${pid}/gid_map`, `0 0 ${ALL_IDS}\n`);
}

/** Waits for the init's byte on fd 3; fails if the launcher ends first. */
function initIsWaiting(gate: Duplex, exited: Promise<ProcessExit>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      if (chunk.includes(0x72)) {
        gate.off('data', onData);
        gate.resume(); // keep draining, so the gate's end (and the launcher's 'close') is seen
        resolve();
      }
    };
    gate.on('data', onData);
    exited.then(
      (exit) =>
        reject(
          new SigilError(
            'internal',
            `the workload launcher ended before the workload started: ${describeExit(exit)}`,
          ),
        ),
      reject,
    );
  });
}

/** Host PIDs of a process's children (none when it is gone). */
function childrenOf(pid: number | undefined): number[] {
  const children: number[] = [];
  if (pid === undefined) return children;
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (text) children.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // exited meanwhile
  }
  return children;
}

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** The one child of the launcher: the namespace's init. */
function onlyChildOf(launcherPid: number): number {
  const children = childrenOf(launcherPid);
  if (children.length !== 1) {
    throw new SigilError('internal', `the launcher has ${children.length} children, expected the init alone`);
  }
  return children[0];
}

function exitOf(code: number | null, signal: NodeJS.Signals | null, launcherStderr: string): ProcessExit {
  const lines = launcherStderr.split('\n').filter((line) => line.trim() !== '');
  const killed = code === 1 && lines.some((line) => line.includes(SIGKILL_NOT_RERAISED));
  const other = lines.filter((line) => !line.includes(SIGKILL_NOT_RERAISED)).join('; ');
  const launcherError = other ? { launcherError: other } : {};
  if (killed) return { code: null, signal: 'SIGKILL', ...launcherError };
  if (signal) return { code: null, signal, ...launcherError };
  return { code: code ?? LAUNCHER_FAILED, signal: null, ...launcherError };
}

function describeExit(exit: ProcessExit): string {
  const how = exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
  return exit.launcherError ? `${how} (${exit.launcherError})` : how;
}

interface CheckedLaunch {
  rootfs: string;
  command: readonly string[];
  env: string[];
  workdir: string;
  uid: number;
  gid: number;
  hostname: string;
  binds: readonly ReadOnlyBind[];
}

/** Every refusal spawnInNamespaces would make, without starting anything (e.g. before replacing a run). */
export function checkNamespaceProcessOptions(options: NamespaceProcessOptions): void {
  checkedLaunch(options);
}

/** Every refusal, before anything starts. */
function checkedLaunch(options: NamespaceProcessOptions): CheckedLaunch {
  const rootfs = checkedRootfs(options.rootfs);
  return {
    rootfs,
    hostname: checkedHostname(options.hostname),
    command: checkedCommand(rootfs, options.command, checkedBinds(options.readOnlyBinds)),
    env: checkedEnv(options.env ?? {}),
    workdir: checkedWorkdir(rootfs, options.workdir ?? '/'),
    ...resolveUser(rootfs, options.user),
    binds: checkedBinds(options.readOnlyBinds),
  };
}

function checkedRootfs(rootfs: string): string {
  if (typeof rootfs !== 'string' || !rootfs.startsWith('/') || rootfs.includes('\0')) {
    throw invalid(`rootfs ${quoted(String(rootfs))}: must be an absolute path`);
  }
  const stats = statOrNull(rootfs);
  if (!stats) throw notFound(`rootfs ${quoted(rootfs)}: no such directory`);
  if (!stats.isDirectory()) throw invalid(`rootfs ${quoted(rootfs)}: not a directory`);
  const proc = lstatOrNull(join(rootfs, 'proc'));
  if (!proc?.isDirectory()) {
    throw preconditionFailed(
      `rootfs ${quoted(rootfs)}: has no /proc directory (the workload's proc is mounted there)`,
    );
  }
  return rootfs;
}

function checkedHostname(hostname: string): string {
  if (
    typeof hostname !== 'string' ||
    hostname.length === 0 ||
    hostname.length > MAX_HOSTNAME_LENGTH ||
    !HOSTNAME.test(hostname)
  ) {
    throw invalid(
      `hostname ${quoted(String(hostname))}: must be 1–${MAX_HOSTNAME_LENGTH} letters, digits, '-' and '.' (RFC 1123)`,
    );
  }
  return hostname;
}

/** An absolute path without '..' (which could only mean leaving the root) or NUL. */
function checkedInsidePath(field: string, path: unknown): string {
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw invalid(`${field} ${quoted(String(path))}: must be an absolute path inside the root filesystem`);
  }
  if (path.length > MAX_PATH_LENGTH) throw invalid(`${field}: longer than ${MAX_PATH_LENGTH} characters`);
  if (path.includes('\0')) throw invalid(`${field} ${quoted(path)}: contains a NUL byte`);
  if (path.split('/').includes('..')) throw invalid(`${field} ${quoted(path)}: must not contain '..'`);
  return posix.normalize(path);
}

function checkedCommand(
  rootfs: string,
  command: readonly string[],
  binds: readonly ReadOnlyBind[],
): readonly string[] {
  if (!Array.isArray(command) || command.length === 0) throw invalid('command: must name a program');
  if (command.length > MAX_COMMAND_ARGUMENTS) {
    throw invalid(`command: more than ${MAX_COMMAND_ARGUMENTS} arguments`);
  }
  let bytes = 0;
  for (const argument of command) {
    if (typeof argument !== 'string') throw invalid('command: every argument must be a string');
    if (argument.includes('\0')) throw invalid(`command: argument ${quoted(argument)} contains a NUL byte`);
    bytes += Buffer.byteLength(argument) + 1;
  }
  if (bytes > MAX_COMMAND_BYTES) throw invalid(`command: longer than ${MAX_COMMAND_BYTES} bytes`);
  const program = checkedInsidePath('command', command[0]);
  // A program under a bind (the guest runtime) is looked for in the bind's source.
  const bind = binds.find(({ target }) => program.startsWith(`${target}/`));
  const found = bind
    ? resolveInRoot(bind.source, program.slice(bind.target.length))
    : resolveInRoot(rootfs, program);
  if (!found) throw notFound(`command ${quoted(program)}: not found in the root filesystem`);
  if (!found.stats.isFile() || (found.stats.mode & 0o111) === 0) {
    throw invalid(`command ${quoted(program)}: not an executable file in the root filesystem`);
  }
  return command;
}

function checkedEnv(env: Readonly<Record<string, string>>): string[] {
  if (typeof env !== 'object' || env === null) throw invalid('env: must be an object of names to values');
  const entries = Object.entries(env);
  if (entries.length > MAX_ENV_VARIABLES) throw invalid(`env: more than ${MAX_ENV_VARIABLES} variables`);
  const pairs: string[] = [];
  for (const [name, value] of entries) {
    if (name.length > MAX_ENV_NAME_LENGTH || !ENV_NAME.test(name)) {
      throw invalid(`env ${quoted(name)}: a name is a letter or '_' then letters, digits and '_'`);
    }
    if (name.startsWith('LD_') || HOST_LOADER_VARIABLES.has(name)) {
      throw invalid(
        `env ${name}: the host's dynamic loader would act on it before the root changes; set it inside the image (e.g. in an entrypoint script)`,
      );
    }
    if (typeof value !== 'string') throw invalid(`env ${name}: the value must be a string`);
    if (value.includes('\0')) throw invalid(`env ${name}: the value contains a NUL byte`);
    if (Buffer.byteLength(value) > MAX_ENV_VALUE_BYTES) {
      throw invalid(`env ${name}: the value is longer than ${MAX_ENV_VALUE_BYTES} bytes`);
    }
    pairs.push(`${name}=${value}`);
  }
  if (!Object.hasOwn(env, 'PATH')) pairs.unshift(`PATH=${DEFAULT_PATH}`);
  return pairs;
}

function checkedWorkdir(rootfs: string, workdir: string): string {
  const path = checkedInsidePath('workdir', workdir);
  const found = resolveInRoot(rootfs, path);
  if (!found) throw notFound(`workdir ${quoted(path)}: no such directory in the root filesystem`);
  if (!found.stats.isDirectory()) throw invalid(`workdir ${quoted(path)}: not a directory`);
  return path;
}

/** `uid[:gid]` or `name[:group]`; a uid without a group gets its /etc/passwd group, else 0 (as Docker does). */
function resolveUser(rootfs: string, spec: string | undefined): { uid: number; gid: number } {
  if (spec === undefined) return { uid: 0, gid: 0 };
  if (typeof spec !== 'string' || spec.length > 256 || !USER_SPEC.test(spec)) {
    throw invalid(`user ${quoted(String(spec))}: expected uid[:gid] or name[:group]`);
  }
  const [userPart, groupPart] = spec.split(':');
  const passwd = databaseOf(rootfs, '/etc/passwd');
  let uid: number;
  let passwdGid: number | undefined;
  if (NUMERIC_ID.test(userPart)) {
    uid = checkedId('user', userPart);
    passwdGid = passwd.find((entry) => entry.id === uid)?.gid;
  } else {
    const entry = passwd.find((candidate) => candidate.name === userPart);
    if (!entry) throw notFound(`user ${quoted(userPart)}: not in the root filesystem's /etc/passwd`);
    uid = entry.id;
    passwdGid = entry.gid;
  }
  if (groupPart === undefined) return { uid, gid: passwdGid ?? 0 };
  if (NUMERIC_ID.test(groupPart)) return { uid, gid: checkedId('group', groupPart) };
  const group = databaseOf(rootfs, '/etc/group').find((entry) => entry.name === groupPart);
  if (!group) throw notFound(`group ${quoted(groupPart)}: not in the root filesystem's /etc/group`);
  return { uid, gid: group.id };
}

function checkedId(field: string, digits: string): number {
  const id = Number(digits);
  if (id > MAX_ID) throw invalid(`${field} ${digits}: above ${MAX_ID}`);
  return id;
}

interface DatabaseEntry {
  name: string;
  id: number;
  gid?: number;
}

/** /etc/passwd or /etc/group of the image (`name:x:id[:gid]…` lines); missing means empty. */
function databaseOf(rootfs: string, path: string): DatabaseEntry[] {
  const found = resolveInRoot(rootfs, path);
  if (!found?.stats.isFile()) return [];
  if (found.stats.size > MAX_ROOT_FILE_BYTES)
    throw invalid(`${path}: larger than ${MAX_ROOT_FILE_BYTES} bytes`);
  const entries: DatabaseEntry[] = [];
  for (const line of readFileSync(found.hostPath, 'utf8').split('\n')) {
    const fields = line.split(':');
    if (fields.length < 3 || !NUMERIC_ID.test(fields[2])) continue;
    const gid = fields[3] !== undefined && NUMERIC_ID.test(fields[3]) ? Number(fields[3]) : undefined;
    entries.push({ name: fields[0], id: Number(fields[2]), gid });
  }
  return entries;
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/**
 * Where `path` leads inside `rootfs`, following symlinks as the workload will
 * see them (absolute targets and '..' stay inside the root), never onto the
 * host's own files. Null when it does not exist.
 */
export function resolveInRoot(rootfs: string, path: string): { hostPath: string; stats: Stats } | null {
  const pending = path.split('/').filter((part) => part !== '' && part !== '.');
  const resolved: string[] = [];
  let hops = 0;
  let stats = statOrNull(rootfs);
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (!stats?.isDirectory()) return null;
    if (part === '..') {
      resolved.pop();
      stats = statOrNull(join(rootfs, ...resolved));
      continue;
    }
    const hostPath = join(rootfs, ...resolved, part);
    stats = lstatOrNull(hostPath);
    if (!stats) return null;
    if (stats.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) throw invalid(`${quoted(path)}: too many levels of symbolic links`);
      const target = readlinkSync(hostPath);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((segment) => segment !== '' && segment !== '.'));
      stats = statOrNull(join(rootfs, ...resolved));
      continue;
    }
    resolved.push(part);
  }
  if (!stats) return null;
  return { hostPath: join(rootfs, ...resolved), stats };
}
