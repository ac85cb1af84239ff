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
// Destroying (or close()) first forbids restarts, waits for a start in
// flight, then kills the cgroup's every task: nothing the supervisor stops
// is ever started again. A refused create leaves no cgroup, directory,
// mount or event.
import { createHash } from 'node:crypto';
import { alreadyExists, firstLineOf, invalid, notFound, preconditionFailed } from '../errors.ts';
import type { CgroupDriver, CgroupLimits, CgroupStats, WorkloadCgroup } from './cgroups/cgroup.ts';
import { checkLimits } from './cgroups/limits.ts';
import { ConsoleRing } from './console-ring.ts';
import { checkWorkloadKey, type EventLog, type WorkloadEventInput } from './event-log.ts';
import { type ImageStore, resolveImage } from './images.ts';
import { type NamespacedProcess, type ProcessExit, spawnInNamespaces } from './namespace-process.ts';
import {
  type BackoffOptions,
  checkBackoff,
  checkRestartPolicy,
  RestartBackoff,
  type RestartPolicy,
  shouldRestart,
} from './restart-policy.ts';
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
}

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
}

export interface WorkloadStats extends CgroupStats {
  readonly state: WorkloadState;
  readonly restarts: number;
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
]);

/** One workload's moving parts. */
interface Workload {
  readonly spec: WorkloadSpec;
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
  process?: NamespacedProcess;
  startedAt?: Date;
  lastExit?: { code: number | null; signal: string | null; at: Date };
  error?: string;
  /** A run being started (by a restart timer): destroy waits for it before killing. */
  starting?: Promise<void>;
  restartTimer?: NodeJS.Timeout;
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

export class WorkloadSupervisor {
  private readonly cgroups: CgroupDriver;
  private readonly images: ImageStore;
  private readonly events: EventLog;
  private readonly stateDir: string;
  private readonly clock: () => Date;
  private readonly backoff: Required<BackoffOptions>;
  private readonly consoleLines: number | undefined;
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
    const limits = cgroupLimitsOf(spec.limits);
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
      const ring = new ConsoleRing(this.consoleLines === undefined ? {} : { capacity: this.consoleLines });
      undo.push(() => ring.close());
      const workload: Workload = {
        spec: { ...spec, key, restart: restartPolicy },
        restartPolicy,
        cgroup,
        root,
        console: ring,
        backoff: new RestartBackoff(this.backoff),
        createdAt: this.clock(),
        state: 'running',
        restarts: 0,
        oomKillsSeen: 0,
        stopping: false,
      };
      // The first run's refusals (command, user, workdir, hostname) are the caller's to see.
      const spawned = await this.spawn(workload);
      undo.push(async () => {
        await cgroup.killAll();
        await spawned.exited.catch(() => undefined);
      });
      if (this.closed) throw preconditionFailed('the workload supervisor closed while the workload started');
      this.workloads.set(key, workload);
      this.record({ workload: key, kind: 'created', detail: `image ${spec.image}` });
      this.began(workload, spawned, 'started');
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
    await workload.process?.exited.catch(() => undefined);
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

  /** The cgroup's figures, with the workload's state and restart count. */
  stats(key: string): WorkloadStats {
    const workload = this.get(key);
    return { ...workload.cgroup.stats(), state: workload.state, restarts: workload.restarts };
  }

  /** The workload's console: its output across restarts, until it is destroyed. */
  console(key: string): ConsoleRing {
    return this.get(key).console;
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

  private spawn(workload: Workload): Promise<NamespacedProcess> {
    const { spec, cgroup, root } = workload;
    return spawnInNamespaces({
      rootfs: root.root,
      command: spec.command,
      env: spec.env,
      workdir: spec.workdir,
      user: spec.user,
      hostname: spec.name,
      onSpawned: (pid) => cgroup.addProcess(pid),
    });
  }

  /** A run has started: its output goes to the console, its end to onExit. */
  private began(workload: Workload, run: NamespacedProcess, kind: 'started' | 'restarted'): void {
    workload.process = run;
    workload.state = 'running';
    workload.startedAt = this.clock();
    workload.error = undefined;
    const detail = kind === 'restarted' ? `restart ${workload.restarts}` : undefined;
    this.record({ workload: workload.spec.key, kind, ...(detail ? { detail } : {}) });
    for (const stream of [run.stdout, run.stderr])
      stream?.on('data', (chunk: Buffer) => {
        if (!workload.console.stats().closed) workload.console.write(chunk);
      });
    run.exited.then(
      (exit) => this.onExit(workload, exit),
      (error: unknown) =>
        this.onExit(workload, { code: 125, signal: null, launcherError: firstLineOf(error) }),
    );
  }

  private onExit(workload: Workload, exit: ProcessExit): void {
    const key = workload.spec.key;
    if (!workload.console.stats().closed) workload.console.flush();
    workload.process = undefined;
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
    if (workload.stopping || !shouldRestart(workload.restartPolicy, exit)) return;
    const ranMs = at.getTime() - (workload.startedAt?.getTime() ?? at.getTime());
    workload.state = 'restarting';
    workload.restartTimer = setTimeout(() => {
      workload.restartTimer = undefined;
      workload.starting = this.restart(workload).finally(() => {
        workload.starting = undefined;
      });
    }, workload.backoff.next(ranMs));
  }

  private async restart(workload: Workload): Promise<void> {
    if (workload.stopping) return;
    let spawned: NamespacedProcess;
    try {
      spawned = await this.spawn(workload);
    } catch (error) {
      // Nothing to wait for that would change (the image or the command went away): stay down, say why.
      workload.state = 'failed';
      workload.error = firstLineOf(error);
      return;
    }
    workload.restarts += 1;
    this.began(workload, spawned, 'restarted');
  }

  /** Forbids restarts, waits for a start in flight, kills every task, removes the cgroup and the root. */
  private async tearDown(workload: Workload): Promise<void> {
    workload.stopping = true;
    clearTimeout(workload.restartTimer);
    workload.restartTimer = undefined;
    await workload.starting;
    await workload.cgroup.killAll();
    // The exit handler runs (recording `exited`) before this resumes: it was attached first.
    await workload.process?.exited.catch(() => undefined);
    await workload.cgroup.remove();
    workload.console.close();
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
    const { spec } = workload;
    return {
      key: spec.key,
      name: spec.name,
      image: spec.image,
      cgroup: workload.cgroup.name,
      state: workload.state,
      restartPolicy: workload.restartPolicy,
      restarts: workload.restarts,
      ...(workload.process ? { pid: workload.process.pid } : {}),
      createdAt: workload.createdAt,
      ...(workload.startedAt ? { startedAt: workload.startedAt } : {}),
      ...(workload.lastExit ? { lastExit: { ...workload.lastExit } } : {}),
      ...(workload.error ? { error: workload.error } : {}),
    };
  }
}
