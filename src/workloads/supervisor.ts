// The workload supervisor: composes the runtime's parts into workloads that
// run, are restarted by policy, and are destroyed without a trace.
//
// One workload: a cgroup with its limits (named from a hash of its key, so
// any key makes a safe, fixed-length name), its own writable root (an
// overlay on the image, writable-root.ts), a console ring its stdout and
// stderr go to, and events in the event log. A run: spawn in namespaces,
// join the cgroup before the workload's first instruction (onSpawned), on
// exit record `exited` (and `oom-killed` when the cgroup's OOM-kill count
// rose), then restart by policy after a backoff (restart-policy.ts), each
// restart recorded as `restarted`.
//
// What a run needs besides its process is made before the spawn and undone
// after its exit (prepareRun and endRun): block
// devices mounted into the writable root, a pseudo-terminal (its slave bound
// at /dev/pts/N inside, so `tty` names it), and once the init exists but
// before the workload's first instruction, the cgroup join and the veth on
// the workload's bridge (or just lo up, without a network).
//
// Destroying (or close()) first forbids restarts, waits for a start in
// flight, then kills the cgroup's every task: nothing the supervisor stops
// is ever started again. A refused create leaves no cgroup, directory,
// mount, veth or event. restart() replaces a run on request: the killed run
// is neither a failure nor restarted by policy.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, realpathSync, rmSync, type Stats, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import {
  alreadyExists,
  firstLineOf,
  invalid,
  messageOf,
  notFound,
  preconditionFailed,
  SigilError,
} from '../errors.ts';
import type { CgroupDriver, CgroupLimits, CgroupStats, WorkloadCgroup } from './cgroups/cgroup.ts';
import { checkLimits } from './cgroups/limits.ts';
import { CONSOLE_MAX_SUBSCRIBERS, ConsoleRing } from './console-ring.ts';
import { checkWorkloadKey, type EventLog, type WorkloadEventInput } from './event-log.ts';
import { type ImageStore, resolveImage } from './images.ts';
import { type InterfaceStats, interfaceStatsOf } from './interface-stats.ts';
import {
  checkNamespaceProcessOptions,
  type NamespacedProcess,
  type NamespaceProcessOptions,
  type ProcessExit,
  type ReadOnlyBind,
  resolveInRoot,
  spawnInNamespaces,
} from './namespace-process.ts';
import type { WorkloadNetworks } from './networks.ts';
import { openPseudoTerminal, type PseudoTerminal } from './pseudo-terminal.ts';
import {
  type BackoffOptions,
  checkBackoff,
  checkRestartPolicy,
  RestartBackoff,
  type RestartPolicy,
  shouldRestart,
} from './restart-policy.ts';
import type { VmNetwork, VmProcess } from './vm-launcher.ts';
import {
  checkRuntime,
  checkVmCommand,
  checkVmWorkload,
  lastRunDisk,
  startVmRun,
  VM_DEFAULT_MEMORY_MiB,
  VM_MEMORY_OVERHEAD_MiB,
  type VmRuntimeOptions,
  type WorkloadRuntime,
} from './vm-run.ts';
import { checkOverlayPath, mountWritableRoot, type WritableRoot } from './writable-root.ts';

export interface WorkloadLimits {
  readonly memoryMiB?: number;
  readonly cpus?: readonly number[];
  readonly pidsMax?: number;
}

export interface WorkloadSpec {
  /** The workload's subtree key, e.g. "/alice/carol//web"; opaque except for '/' (see event-log.ts). */
  readonly key: string;
  /** The hostname inside. */
  readonly name: string;
  /** An image tag, `org/name:version`. */
  readonly image: string;
  readonly command: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly workdir?: string;
  readonly user?: string;
  readonly limits?: WorkloadLimits;
  /** 'no' when absent. */
  readonly restart?: RestartPolicy;
  /** Bridges to attach to (at most one for now: it becomes eth0); none keeps only lo. */
  readonly networks?: readonly string[];
  /** Block device images (absolute host files) mounted at absolute paths inside, for every run. */
  readonly blocks?: readonly WorkloadBlock[];
  /** A pseudo-terminal for stdin, stdout and stderr (interactive consoles); pipes when false or absent. */
  readonly tty?: boolean;
  /** Host directories bound read-only inside (the guest runtime, guest-runtime.ts); none when absent. */
  readonly readOnlyBinds?: readonly ReadOnlyBind[];
  /** 'namespaces' (default) or 'vm': the command runs as the init of a qemu VM (vm-run.ts). */
  readonly runtime?: WorkloadRuntime;
}

export interface WorkloadBlock {
  readonly file: string;
  readonly mountPoint: string;
}

/** A workload's place on a bridge. */
export interface WorkloadAddress {
  readonly network: string;
  /** CIDR, e.g. 10.77.0.2/24. */
  readonly address: string;
  readonly mac: string;
}

/** Mounts a block device image at `target` (block-devices.ts's mountBlockDevice). */
export type MountBlock = (imageFile: string, target: string) => Promise<{ unmount(): Promise<void> }>;

export type WorkloadState = 'running' | 'restarting' | 'exited' | 'failed';

export interface WorkloadInfo {
  readonly key: string;
  readonly name: string;
  readonly image: string;
  /** The cgroup's name (a hash of the key). */
  readonly cgroup: string;
  readonly state: WorkloadState;
  readonly restartPolicy: RestartPolicy;
  readonly restarts: number;
  /** Host PID of the running workload's init. */
  readonly pid?: number;
  readonly createdAt: Date;
  readonly startedAt?: Date;
  readonly lastExit?: { readonly code: number | null; readonly signal: string | null; readonly at: Date };
  /** Why a restart could not start the workload (state 'failed'). */
  readonly error?: string;
  /** The running workload's addresses on its bridges (none when not running or without a network). */
  readonly addresses: readonly WorkloadAddress[];
  readonly tty: boolean;
  readonly runtime: WorkloadRuntime;
}

export interface WorkloadStats extends CgroupStats {
  readonly state: WorkloadState;
  readonly restarts: number;
  /** Counters of the running workload's interfaces (lo included); empty when not running. */
  readonly interfaces: readonly InterfaceStats[];
}

export type DestroyReason = 'destroyed' | 'destroyed-by-revocation';

export interface SupervisorOptions {
  readonly cgroups: CgroupDriver;
  readonly images: ImageStore;
  readonly events: EventLog;
  /** Where each workload's writable layer lives (an absolute path without ',', ':' or '\'). */
  readonly stateDir: string;
  /** Event times and run lengths. Default: the wall clock. */
  readonly clock?: () => Date;
  readonly backoff?: BackoffOptions;
  /** Lines each workload's console keeps. Default: ConsoleRing's. */
  readonly consoleLines?: number;
  /** The node's bridges; without it a workload naming a network is refused. */
  readonly networks?: WorkloadNetworks;
  /** How block devices are mounted; without it a workload naming a block is refused. */
  readonly mountBlock?: MountBlock;
  /** Bring lo up in workloads without a network (one `ip` exec a run, ≈5 ms here). Default true. */
  readonly loopback?: boolean;
  /** The kernel and accelerator of `runtime: 'vm'` workloads. */
  readonly vm?: VmRuntimeOptions;
}

const MiB = 1 << 20;
const DESTROY_REASONS: ReadonlySet<string> = new Set(['destroyed', 'destroyed-by-revocation']);
const SPEC_FIELDS: ReadonlySet<string> = new Set([
  'key',
  'name',
  'image',
  'command',
  'env',
  'workdir',
  'user',
  'limits',
  'restart',
  'networks',
  'blocks',
  'tty',
  'runtime',
  'readOnlyBinds',
]);
const MAX_BLOCKS = 16;
/** Raw output listeners a workload admits at once, like its console's followers. */
export const MAX_RAW_SUBSCRIBERS = CONSOLE_MAX_SUBSCRIBERS;
/** How long the end of a run waits for its terminal's last output. */
const TERMINAL_DRAIN_MS = 1000;
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

/** One run: its process and what was made for it, undone (in reverse) when it ends. */
interface Run {
  readonly process: NamespacedProcess | VmProcess;
  readonly terminal?: PseudoTerminal;
  readonly addresses: WorkloadAddress[];
  readonly undo: (() => Promise<void> | void)[];
  /** Killed by restart(): not a failure, not restarted by policy. */
  replaced: boolean;
  /** Settles when the terminal's output has ended (or at once without one). */
  readonly outputEnded: Promise<void>;
}

type RawListener = ((chunk: Buffer) => void) & { onEnd?: () => void };

/** One workload's moving parts. */
interface Workload {
  readonly spec: WorkloadSpec;
  /** The command runs start with: the spec's, or the one the last restart() gave. */
  command: readonly string[];
  readonly restartPolicy: RestartPolicy;
  readonly cgroup: WorkloadCgroup;
  readonly root: WritableRoot;
  readonly console: ConsoleRing;
  readonly backoff: RestartBackoff;
  readonly createdAt: Date;
  state: WorkloadState;
  restarts: number;
  /** The cgroup's OOM-kill count at the last exit (a new cgroup starts at 0). */
  oomKillsSeen: number;
  run?: Run;
  /** The last run's undoing (network, mounts, terminal): the next run waits for it. */
  ending?: Promise<void>;
  readonly rawListeners: Set<RawListener>;
  startedAt?: Date;
  lastExit?: { code: number | null; signal: string | null; at: Date };
  error?: string;
  /** A run being started (by a restart timer): destroy waits for it before killing. */
  starting?: Promise<void>;
  restartTimer?: NodeJS.Timeout;
  /** A restart() in progress: destroy waits for it, a second restart() queues behind it. */
  replacing?: Promise<void>;
  /** Set by destroy and close: no run starts after it. */
  stopping: boolean;
  destroying?: Promise<void>;
}

/** The cgroup name of a key: fixed length, safe whatever the key holds, the same on every daemon start. */
export function cgroupNameOf(key: string): string {
  return `w-${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
}

function cgroupLimitsOf(limits: unknown): CgroupLimits {
  if (limits === undefined) return {};
  if (typeof limits !== 'object' || limits === null || Array.isArray(limits))
    throw invalid('limits: must be an object of memoryMiB, cpus and pidsMax');
  const { memoryMiB, cpus, pidsMax, ...rest } = limits as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw invalid(`limits: unknown field ${JSON.stringify(unknown[0])}`);
  if (memoryMiB !== undefined && (!Number.isSafeInteger(memoryMiB) || (memoryMiB as number) < 1))
    throw invalid(`limits: memoryMiB must be a whole number of MiB, 1 or more, got ${String(memoryMiB)}`);
  return checkLimits({
    ...(memoryMiB === undefined ? {} : { memoryBytes: (memoryMiB as number) * MiB }),
    ...(cpus === undefined ? {} : { cpus }),
    ...(pidsMax === undefined ? {} : { pidsMax }),
  });
}

function checkedNetworks(networks: unknown, configured: WorkloadNetworks | undefined): string[] {
  if (networks === undefined) return [];
  if (!Array.isArray(networks) || networks.some((name) => typeof name !== 'string'))
    throw invalid('networks: must be a list of bridge names');
  if (networks.length === 0) return [];
  // networks.ts attaches one veth per workload key (eth0).
  if (networks.length > 1) throw invalid(`networks: at most one bridge per workload, got ${networks.length}`);
  const [bridge] = networks as string[];
  if (!configured?.bridges.some((candidate) => candidate.name === bridge))
    throw notFound(`bridge ${JSON.stringify(bridge.slice(0, 60))}: not configured on this node`);
  return [bridge];
}

/** An absolute path inside the root without '..', normalized; never the root itself. */
function checkedMountPoint(path: unknown, field: string): string {
  if (typeof path !== 'string' || !path.startsWith('/') || path.includes('\0') || path.length > 4096)
    throw invalid(`${field} ${JSON.stringify(String(path).slice(0, 60))}: must be an absolute path`);
  if (path.split('/').includes('..'))
    throw invalid(`${field} ${JSON.stringify(path)}: must not contain '..'`);
  const normalized = posix.normalize(path).replace(/\/+$/, '');
  if (normalized === '') throw invalid(`${field} ${JSON.stringify(path)}: cannot be the root itself`);
  return normalized;
}

function checkedBlocks(blocks: unknown, mountBlock: MountBlock | undefined): WorkloadBlock[] {
  if (blocks === undefined) return [];
  if (!Array.isArray(blocks)) throw invalid('blocks: must be a list of {file, mountPoint}');
  if (blocks.length > MAX_BLOCKS) throw invalid(`blocks: more than ${MAX_BLOCKS}`);
  if (blocks.length > 0 && !mountBlock)
    throw preconditionFailed('block devices are not available on this node');
  const seen = new Set<string>();
  return blocks.map((block: unknown, index) => {
    if (typeof block !== 'object' || block === null)
      throw invalid(`blocks[${index}]: must be {file, mountPoint}`);
    const { file, mountPoint, ...rest } = block as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length > 0) throw invalid(`blocks[${index}]: unknown field ${JSON.stringify(unknown[0])}`);
    if (typeof file !== 'string' || !file.startsWith('/') || file.includes('\0'))
      throw invalid(`blocks[${index}].file: must be an absolute path`);
    const checked = checkedMountPoint(mountPoint, `blocks[${index}].mountPoint`);
    if (seen.has(checked)) throw invalid(`blocks: ${checked} is mounted twice`);
    seen.add(checked);
    return { file, mountPoint: checked };
  });
}

/**
 * Makes `path` (checked) inside `root` as a directory, or an empty file when
 * `file`, following symlinks only as the workload would (resolveInRoot), and
 * returns its host path, which never leaves the root.
 */
function makeInsideRoot(root: string, path: string, kind: 'directory' | 'file'): string {
  const parts = path.split('/').filter((part) => part !== '');
  let host = realpathSync(root);
  for (const [index, part] of parts.entries()) {
    const found = resolveInRoot(root, `/${parts.slice(0, index + 1).join('/')}`);
    const last = index === parts.length - 1;
    if (found) {
      const wanted = last && kind === 'file' ? found.stats.isFile() : found.stats.isDirectory();
      if (!wanted)
        throw invalid(
          `${path}: ${found.hostPath.slice(root.length) || '/'} is not a ${last ? kind : 'directory'}`,
        );
      host = found.hostPath;
      continue;
    }
    host = join(host, part);
    // A dangling link: making its target would mean following it as the host does; refused instead.
    if (lstatOrNull(host)?.isSymbolicLink())
      throw invalid(`${path}: /${parts.slice(0, index + 1).join('/')} is a symbolic link to nothing`);
    if (last && kind === 'file') writeFileSync(host, '', { flag: 'wx', mode: 0o600 });
    else mkdirSync(host, { mode: 0o755 });
  }
  const real = realpathSync(host);
  const rootReal = realpathSync(root);
  if (real !== rootReal && !real.startsWith(`${rootReal}/`))
    throw invalid(`${path}: leads outside the workload's root`);
  return real;
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

function runTool(program: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { env: TOOL_ENV, timeout: 10_000 }, (error, _stdout, stderr) => {
      if (!error) return resolve();
      const reason = String(stderr).trim().split('\n')[0] || messageOf(error);
      reject(new SigilError('internal', `${program} ${args.join(' ')}: ${reason}`, { cause: error }));
    });
  });
}

/** Unmounts, lazily when still busy (a process we could not kill holds it). */
async function unmount(target: string): Promise<void> {
  try {
    await runTool('umount', [target]);
  } catch {
    await runTool('umount', ['--lazy', target]);
  }
}

export class WorkloadSupervisor {
  private readonly cgroups: CgroupDriver;
  private readonly images: ImageStore;
  private readonly events: EventLog;
  private readonly stateDir: string;
  private readonly clock: () => Date;
  private readonly backoff: Required<BackoffOptions>;
  private readonly consoleLines: number | undefined;
  private readonly networks: WorkloadNetworks | undefined;
  private readonly mountBlock: MountBlock | undefined;
  private readonly loopback: boolean;
  private readonly vm: VmRuntimeOptions;
  private readonly workloads = new Map<string, Workload>();
  /** Keys being created: taken, but not yet listed. */
  private readonly creating = new Set<string>();
  private closed = false;

  constructor(options: SupervisorOptions) {
    this.cgroups = options.cgroups;
    this.images = options.images;
    this.events = options.events;
    this.stateDir = checkOverlayPath(options.stateDir, 'state directory');
    this.clock = options.clock ?? (() => new Date());
    this.backoff = checkBackoff(options.backoff);
    this.consoleLines = options.consoleLines;
    this.networks = options.networks;
    this.mountBlock = options.mountBlock;
    this.loopback = options.loopback !== false;
    this.vm = options.vm ?? {};
  }

  /**
   * Creates and starts a workload. Everything is checked (and the first run
   * started) before any event is recorded; a refusal leaves nothing behind.
   */
  async create(spec: WorkloadSpec): Promise<WorkloadInfo> {
    if (this.closed) throw preconditionFailed('the workload supervisor is closed');
    if (typeof spec !== 'object' || spec === null) throw invalid('workload: must be an object');
    const extra = Object.keys(spec).filter((field) => !SPEC_FIELDS.has(field));
    if (extra.length > 0) throw invalid(`workload: unknown field ${JSON.stringify(extra[0])}`);
    const key = checkWorkloadKey(spec.key, 'workload key');
    const restartPolicy = checkRestartPolicy(spec.restart);
    const runtime = checkRuntime(spec.runtime);
    if (runtime === 'vm') checkVmWorkload(spec);
    let limits = cgroupLimitsOf(spec.limits);
    // qemu needs room of its own beyond the guest's memory.
    if (runtime === 'vm')
      limits = {
        ...limits,
        memoryBytes: (spec.limits?.memoryMiB ?? VM_DEFAULT_MEMORY_MiB) * MiB + VM_MEMORY_OVERHEAD_MiB * MiB,
      };
    const networks = checkedNetworks(spec.networks, this.networks);
    const blocks = checkedBlocks(spec.blocks, this.mountBlock);
    if (spec.tty !== undefined && typeof spec.tty !== 'boolean') throw invalid('tty: must be true or false');
    if (this.workloads.has(key) || this.creating.has(key))
      throw alreadyExists(`workload ${key} already exists`);
    const lower = resolveImage(this.images, spec.image);

    this.creating.add(key);
    const undo: (() => Promise<void> | void)[] = [];
    try {
      const name = cgroupNameOf(key);
      const cgroup = this.cgroups.create(name, limits);
      undo.push(() => cgroup.remove());
      const root = mountWritableRoot(this.stateDir, name, lower);
      undo.push(() => root.remove());
      const ring = new ConsoleRing({
        ...(this.consoleLines === undefined ? {} : { capacity: this.consoleLines }),
        // A VM's serial console ends its lines with CR LF, like a terminal.
        stripCarriageReturns: spec.tty === true || runtime === 'vm',
      });
      undo.push(() => ring.close());
      const workload: Workload = {
        spec: {
          ...spec,
          key,
          restart: restartPolicy,
          networks,
          blocks,
          tty: spec.tty === true,
          // Only a VM says so: the spec of every other workload stays as it was.
          ...(runtime === 'vm' ? { runtime } : {}),
        },
        command: spec.command,
        restartPolicy,
        cgroup,
        root,
        console: ring,
        backoff: new RestartBackoff(this.backoff),
        createdAt: this.clock(),
        state: 'running',
        restarts: 0,
        oomKillsSeen: 0,
        rawListeners: new Set(),
        stopping: false,
      };
      // The first run's refusals (command, user, workdir, hostname, mounts, network) are the caller's to see.
      const run = await this.prepareRun(workload);
      undo.push(async () => {
        await cgroup.killAll();
        await run.process.exited.catch(() => undefined);
        await this.undoRun(workload, run);
      });
      if (this.closed) throw preconditionFailed('the workload supervisor closed while the workload started');
      this.workloads.set(key, workload);
      this.record({ workload: key, kind: 'created', detail: `image ${spec.image}` });
      this.began(workload, run, 'started');
      return this.infoOf(workload);
    } catch (error) {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch {
          // Keep undoing: the refusal is what the caller needs to see.
        }
      }
      throw error;
    } finally {
      this.creating.delete(key);
    }
  }

  /** Stops restarts, kills every process, removes the cgroup and the writable root, and records `reason`. */
  async destroy(key: string, options: { reason?: DestroyReason } = {}): Promise<void> {
    const reason = options.reason ?? 'destroyed';
    if (!DESTROY_REASONS.has(reason))
      throw invalid(
        `destroy reason ${JSON.stringify(reason)}: expected destroyed or destroyed-by-revocation`,
      );
    const workload = this.get(key);
    workload.destroying ??= this.tearDown(workload).then(
      () => {
        this.workloads.delete(workload.spec.key);
        this.record({ workload: workload.spec.key, kind: reason });
      },
      (error: unknown) => {
        workload.destroying = undefined; // a later destroy tries again
        throw error;
      },
    );
    await workload.destroying;
  }

  /**
   * Kills the running workload and never restarts it (a supervisor-initiated
   * kill); the workload stays listed, with its cgroup and console, until
   * destroyed.
   */
  async stop(key: string): Promise<void> {
    const workload = this.get(key);
    workload.stopping = true;
    clearTimeout(workload.restartTimer);
    workload.restartTimer = undefined;
    if (workload.state === 'restarting') workload.state = 'exited';
    await workload.starting;
    await workload.cgroup.killAll();
    await workload.run?.process.exited.catch(() => undefined);
    await workload.ending;
  }

  /**
   * Replaces the current run (if any) with a new one, with `command` when
   * given (kept for later restarts). The new command is checked before
   * anything is killed; the killed run is neither a failure nor restarted by
   * policy. Records `restarted`.
   */
  async restart(key: string, command?: readonly string[]): Promise<WorkloadInfo> {
    if (this.closed) throw preconditionFailed('the workload supervisor is closed');
    const workload = this.get(key);
    if (workload.destroying) throw notFound(`workload ${workload.spec.key}: being destroyed`);
    const next = command ?? workload.command;
    if (workload.spec.runtime === 'vm') checkVmCommand(workload.root.root, next, workload.spec.readOnlyBinds);
    else checkNamespaceProcessOptions(this.launchOptionsOf(workload, next));
    // One replacement at a time: a second waits for the first, then replaces its run.
    const previous = workload.replacing ?? Promise.resolve();
    const replacing = previous
      .catch(() => undefined)
      .then(() => this.replaceRun(workload, next, command !== undefined));
    workload.replacing = replacing;
    try {
      await replacing;
    } finally {
      if (workload.replacing === replacing) workload.replacing = undefined;
    }
    return this.infoOf(workload);
  }

  /** Destroys every workload under `subtreeKey` (itself and keys starting with it and '/'); returns their keys. */
  async destroyUnder(subtreeKey: string): Promise<string[]> {
    const keys = this.list(subtreeKey).map((info) => info.key);
    for (const key of keys) await this.destroy(key, { reason: 'destroyed-by-revocation' });
    return keys;
  }

  /** The workloads, by key; only those under `under` when given. */
  list(under?: string): WorkloadInfo[] {
    const subtree = under === undefined ? undefined : checkWorkloadKey(under, 'subtree key');
    return [...this.workloads.values()]
      .filter(
        ({ spec }) => subtree === undefined || spec.key === subtree || spec.key.startsWith(`${subtree}/`),
      )
      .sort((a, b) => (a.spec.key < b.spec.key ? -1 : a.spec.key > b.spec.key ? 1 : 0))
      .map((workload) => this.infoOf(workload));
  }

  info(key: string): WorkloadInfo {
    return this.infoOf(this.get(key));
  }

  /** The spec runs start from (the command as the last restart() set it): what a daemon persists. */
  /** The host path of the workload's root filesystem (its writable layer, mounted while it exists). */
  rootOf(key: string): string {
    return this.get(key).root.root;
  }

  /** A VM workload's disk as its last run left it (vm-run.ts); null for a process or before a run ended. */
  vmDiskOf(key: string): string | null {
    const workload = this.get(key);
    if (workload.spec.runtime !== 'vm' || workload.run) return null;
    return lastRunDisk(this.vmRunDirOf(workload));
  }

  private vmRunDirOf(workload: Workload): string {
    return join(this.stateDir, workload.cgroup.name, 'vm');
  }

  specOf(key: string): WorkloadSpec {
    const workload = this.get(key);
    return { ...workload.spec, command: [...workload.command] };
  }

  /** The cgroup's figures, with the workload's state, restart count and interface counters. */
  stats(key: string): WorkloadStats {
    const workload = this.get(key);
    // qemu runs in the daemon's network namespace: its interfaces are not the guest's.
    const pid = workload.spec.runtime === 'vm' ? undefined : workload.run?.process.pid;
    return {
      ...workload.cgroup.stats(),
      state: workload.state,
      restarts: workload.restarts,
      interfaces: pid === undefined ? [] : interfaceStatsOf(pid),
    };
  }

  /** The workload's console: its output across restarts, until it is destroyed. */
  console(key: string): ConsoleRing {
    return this.get(key).console;
  }

  /** Writes to the running workload's terminal (as typed); refused without a tty or a running run. */
  writeInput(key: string, data: Uint8Array): void {
    const workload = this.get(key);
    if (!(data instanceof Uint8Array)) throw invalid('console input must be bytes');
    const run = workload.run;
    // A VM always has its serial console: input goes to qemu's stdin.
    if (run && 'shutdown' in run.process && workload.state === 'running') {
      run.process.stdin.write(data);
      return;
    }
    if (!workload.spec.tty)
      throw preconditionFailed(`workload ${workload.spec.key}: has no terminal (created without tty)`);
    const terminal = workload.run?.terminal;
    if (!terminal || workload.state !== 'running')
      throw preconditionFailed(`workload ${workload.spec.key}: is not running`);
    terminal.write(data);
  }

  /** Resizes the running workload's terminal (an interactive attach's window). */
  resizeTerminal(key: string, columns: number, rows: number): void {
    const workload = this.get(key);
    for (const [field, value] of [
      ['columns', columns],
      ['rows', rows],
    ] as const)
      if (!Number.isInteger(value) || value < 1 || value > 1000)
        throw invalid(`terminal ${field}: a whole number from 1 to 1000, got ${String(value)}`);
    if (!workload.spec.tty)
      throw preconditionFailed(`workload ${workload.spec.key}: has no terminal (created without tty)`);
    workload.run?.terminal?.resize(columns, rows);
  }

  /**
   * Raw output bytes as they come (stdout, stderr or the terminal), for an
   * interactive attach; `onEnd` when the workload is destroyed. At most
   * MAX_RAW_SUBSCRIBERS at once. Returns the function that unsubscribes.
   */
  subscribeRaw(key: string, listener: (chunk: Buffer) => void, onEnd?: () => void): () => void {
    const workload = this.get(key);
    if (typeof listener !== 'function') throw invalid('listener: must be a function');
    if (workload.rawListeners.size >= MAX_RAW_SUBSCRIBERS)
      throw new SigilError(
        'resource_exhausted',
        `workload ${workload.spec.key}: already ${MAX_RAW_SUBSCRIBERS} raw console subscribers`,
      );
    const entry: RawListener = Object.assign((chunk: Buffer) => listener(chunk), { onEnd });
    workload.rawListeners.add(entry);
    return () => {
      workload.rawListeners.delete(entry);
    };
  }

  /**
   * Kills everything this supervisor started and removes every cgroup and
   * writable root it made (daemon shutdown; no events, the workloads were
   * not destroyed). create is refused afterwards.
   */
  async close(): Promise<void> {
    this.closed = true;
    const failures: unknown[] = [];
    for (const workload of [...this.workloads.values()]) {
      try {
        workload.destroying ??= this.tearDown(workload);
        await workload.destroying;
        this.workloads.delete(workload.spec.key);
      } catch (error) {
        workload.destroying = undefined;
        failures.push(error);
      }
    }
    if (failures.length > 0) throw failures[0];
  }

  private get(key: string): Workload {
    const checked = checkWorkloadKey(key, 'workload key');
    const workload = this.workloads.get(checked);
    if (!workload) throw notFound(`workload ${checked}: no such workload`);
    return workload;
  }

  private launchOptionsOf(workload: Workload, command: readonly string[]): NamespaceProcessOptions {
    const { spec, root } = workload;
    return {
      rootfs: root.root,
      command,
      env: spec.env,
      workdir: spec.workdir,
      user: spec.user,
      hostname: spec.name,
      ...(spec.readOnlyBinds ? { readOnlyBinds: spec.readOnlyBinds } : {}),
    };
  }

  /**
   * Starts a run: blocks mounted, a terminal bound inside, then the spawn,
   * whose onSpawned joins the cgroup and attaches the network before the
   * workload's first instruction. A failure undoes what it made.
   */
  private async prepareRun(workload: Workload): Promise<Run> {
    const { spec, cgroup, root } = workload;
    if (spec.runtime === 'vm') return this.prepareVmRun(workload);
    const undo: (() => Promise<void> | void)[] = [];
    const addresses: WorkloadAddress[] = [];
    let terminal: PseudoTerminal | undefined;
    try {
      for (const block of spec.blocks ?? []) {
        const target = makeInsideRoot(root.root, block.mountPoint, 'directory');
        const mounted = await this.mountBlock!(block.file, target);
        undo.push(() => mounted.unmount());
      }
      if (spec.tty) {
        const opened = openPseudoTerminal();
        terminal = opened;
        undo.push(() => opened.close());
        // The slave is visible inside at its own path, so ttyname(3) finds it.
        const inside = makeInsideRoot(root.root, opened.path, 'file');
        await runTool('mount', ['--bind', opened.path, inside]);
        undo.push(async () => {
          await unmount(inside);
          rmSync(inside, { force: true });
        });
      }
      const networks = spec.networks ?? [];
      const process = await spawnInNamespaces({
        ...this.launchOptionsOf(workload, workload.command),
        ...(terminal
          ? {
              stdio: { stdin: terminal.slaveFd, stdout: terminal.slaveFd, stderr: terminal.slaveFd },
              controllingTerminal: true,
            }
          : {}),
        loopbackUp: this.loopback && networks.length === 0,
        onSpawned: async (pid) => {
          cgroup.addProcess(pid);
          for (const bridge of networks) {
            const attachment = await this.networks!.attach(pid, bridge, spec.key, networks);
            undo.push(() => this.networks?.detach(spec.key));
            addresses.push({
              network: bridge,
              address: `${attachment.address}/${attachment.prefixLength}`,
              mac: attachment.mac,
            });
          }
        },
      });
      terminal?.closeSlave();
      const output = terminal?.output;
      const outputEnded = output
        ? new Promise<void>((resolve) => {
            if (output.destroyed) return resolve();
            output.once('close', () => resolve());
          })
        : Promise.resolve();
      return { process, terminal, addresses, undo, replaced: false, outputEnded };
    } catch (error) {
      await this.undoSteps(workload, undo).catch(() => undefined);
      throw error;
    }
  }

  /**
   * A VM run: its disk and initramfs in the workload's own directory (so a
   * dead daemon's leftovers go with it), qemu joining the cgroup while paused.
   */
  private async prepareVmRun(workload: Workload): Promise<Run> {
    const { spec, cgroup, root } = workload;
    const limits = spec.limits ?? {};
    const undo: (() => Promise<void> | void)[] = [];
    const addresses: WorkloadAddress[] = [];
    try {
      // The tap and its anti-spoofing guard exist before qemu opens it (vm-spoof-guard.ts).
      let network: VmNetwork | undefined;
      for (const bridge of spec.networks ?? []) {
        const tap = await this.networks!.attachTap(bridge, spec.key, spec.networks ?? []);
        undo.push(() => this.networks?.detach(spec.key));
        network = {
          namespace: tap.namespace,
          tap: tap.tap,
          mac: tap.mac,
          address: `${tap.address}/${tap.prefixLength}`,
          gateway: tap.gateway,
        };
        addresses.push({ network: bridge, address: network.address, mac: tap.mac });
      }
      const { process, cleanup } = await startVmRun({
        runtime: this.vm,
        rootfs: root.root,
        runDir: this.vmRunDirOf(workload),
        command: workload.command,
        hostname: spec.name,
        ...(limits.memoryMiB === undefined ? {} : { memoryMiB: limits.memoryMiB }),
        // One virtual CPU per pinned host CPU (at least one).
        ...(limits.cpus && limits.cpus.length > 0 ? { cpus: limits.cpus.length } : {}),
        ...(network ? { network } : {}),
        ...(spec.readOnlyBinds && spec.readOnlyBinds.length > 0 ? { readOnlyBinds: spec.readOnlyBinds } : {}),
        onSpawned: (pid) => cgroup.addProcess(pid),
      });
      undo.push(cleanup);
      return { process, addresses, undo, replaced: false, outputEnded: Promise.resolve() };
    } catch (error) {
      await this.undoSteps(workload, undo).catch(() => undefined);
      throw error;
    }
  }

  private undoRun(workload: Workload, run: Run): Promise<void> {
    return this.undoSteps(workload, run.undo);
  }

  /** Undoes what a run made, last first; every step is tried, and each only once. */
  private async undoSteps(workload: Workload, undo: (() => Promise<void> | void)[]): Promise<void> {
    const failures: string[] = [];
    for (const step of undo.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        failures.push(firstLineOf(error));
      }
    }
    if (failures.length > 0)
      throw new SigilError('internal', `workload ${workload.spec.key}: ending a run: ${failures.join('; ')}`);
  }

  /** A run has started: its output goes to the console, its end to onExit. */
  private began(
    workload: Workload,
    run: Run,
    kind: 'started' | 'restarted',
    detail: string | undefined = kind === 'restarted' ? `restart ${workload.restarts}` : undefined,
  ): void {
    workload.run = run;
    workload.state = 'running';
    workload.startedAt = this.clock();
    workload.error = undefined;
    this.record({ workload: workload.spec.key, kind, ...(detail ? { detail } : {}) });
    const streams = run.terminal ? [run.terminal.output] : [run.process.stdout, run.process.stderr];
    for (const stream of streams)
      stream?.on('data', (chunk: Buffer) => {
        if (!workload.console.stats().closed) workload.console.write(chunk);
        for (const listener of workload.rawListeners) {
          try {
            listener(chunk);
          } catch {
            workload.rawListeners.delete(listener);
          }
        }
      });
    run.process.exited.then(
      (exit) => this.onExit(workload, run, exit),
      (error: unknown) =>
        this.onExit(workload, run, { code: 125, signal: null, launcherError: firstLineOf(error) }),
    );
  }

  private onExit(workload: Workload, run: Run, exit: ProcessExit): void {
    const key = workload.spec.key;
    workload.ending = this.endRun(workload, run);
    if (workload.run === run) workload.run = undefined;
    const at = this.clock();
    workload.lastExit = { code: exit.code, signal: exit.signal, at };
    this.record(
      exit.signal === null
        ? { workload: key, kind: 'exited', exitCode: exit.code }
        : { workload: key, kind: 'exited', signal: exit.signal },
    );
    const oomKills = this.oomKillsOf(workload);
    if (oomKills > workload.oomKillsSeen) this.record({ workload: key, kind: 'oom-killed' });
    workload.oomKillsSeen = oomKills;
    workload.state = 'exited';
    if (run.replaced || workload.stopping || !shouldRestart(workload.restartPolicy, exit)) return;
    const ranMs = at.getTime() - (workload.startedAt?.getTime() ?? at.getTime());
    workload.state = 'restarting';
    workload.restartTimer = setTimeout(() => {
      workload.restartTimer = undefined;
      workload.starting = this.restartByPolicy(workload).finally(() => {
        workload.starting = undefined;
      });
    }, workload.backoff.next(ranMs));
  }

  /** After an exit: the terminal's last output into the console, then the run's resources undone. */
  private async endRun(workload: Workload, run: Run): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      run.outputEnded,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, TERMINAL_DRAIN_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!workload.console.stats().closed) workload.console.flush();
    try {
      await this.undoRun(workload, run);
    } catch (error) {
      process.emitWarning(firstLineOf(error));
    }
  }

  private async restartByPolicy(workload: Workload): Promise<void> {
    if (workload.stopping) return;
    await workload.ending;
    let run: Run;
    try {
      run = await this.prepareRun(workload);
    } catch (error) {
      // Nothing to wait for that would change (the image or the command went away): stay down, say why.
      workload.state = 'failed';
      workload.error = firstLineOf(error);
      return;
    }
    workload.restarts += 1;
    this.began(workload, run, 'restarted');
  }

  /** restart()'s work: end the current run (not a failure), then start one with `command`. */
  private async replaceRun(
    workload: Workload,
    command: readonly string[],
    newCommand: boolean,
  ): Promise<void> {
    clearTimeout(workload.restartTimer);
    workload.restartTimer = undefined;
    await workload.starting;
    const current = workload.run;
    if (current) {
      current.replaced = true;
      await workload.cgroup.killAll();
      await current.process.exited.catch(() => undefined);
    }
    await workload.ending;
    if (workload.destroying || this.closed)
      throw preconditionFailed(`workload ${workload.spec.key}: destroyed while restarting`);
    workload.command = command;
    workload.stopping = false;
    let run: Run;
    try {
      run = await this.prepareRun(workload);
    } catch (error) {
      workload.state = 'failed';
      workload.error = firstLineOf(error);
      throw error;
    }
    workload.restarts += 1;
    this.began(
      workload,
      run,
      'restarted',
      `restart ${workload.restarts} by request${newCommand ? ': new command' : ''}`,
    );
  }

  /** Forbids restarts, waits for a start in flight, kills every task, removes the cgroup and the root. */
  private async tearDown(workload: Workload): Promise<void> {
    workload.stopping = true;
    clearTimeout(workload.restartTimer);
    workload.restartTimer = undefined;
    await workload.replacing?.catch(() => undefined);
    await workload.starting;
    await workload.cgroup.killAll();
    // The exit handler runs (recording `exited`) before this resumes: it was attached first.
    await workload.run?.process.exited.catch(() => undefined);
    await workload.ending;
    await workload.cgroup.remove();
    workload.console.close();
    for (const listener of workload.rawListeners) {
      workload.rawListeners.delete(listener);
      try {
        listener.onEnd?.();
      } catch {
        // a listener's failure is its own
      }
    }
    workload.root.remove();
  }

  private oomKillsOf(workload: Workload): number {
    try {
      return workload.cgroup.stats().oomKills;
    } catch {
      return 0;
    }
  }

  /** Appends an event; a log that refuses (closed, disk full) is warned about, never stops the supervision. */
  private record(event: WorkloadEventInput): void {
    try {
      this.events.append({ ...event, at: this.clock() });
    } catch (error) {
      process.emitWarning(
        `workload ${event.workload}: could not record ${event.kind}: ${firstLineOf(error)}`,
      );
    }
  }

  private infoOf(workload: Workload): WorkloadInfo {
    const { spec, run } = workload;
    return {
      key: spec.key,
      name: spec.name,
      image: spec.image,
      cgroup: workload.cgroup.name,
      state: workload.state,
      restartPolicy: workload.restartPolicy,
      restarts: workload.restarts,
      ...(run ? { pid: run.process.pid } : {}),
      createdAt: workload.createdAt,
      ...(workload.startedAt ? { startedAt: workload.startedAt } : {}),
      ...(workload.lastExit ? { lastExit: { ...workload.lastExit } } : {}),
      ...(workload.error ? { error: workload.error } : {}),
      addresses: run ? run.addresses.map((address) => ({ ...address })) : [],
      tty: spec.tty === true,
      runtime: spec.runtime ?? 'namespaces',
    };
  }
}
