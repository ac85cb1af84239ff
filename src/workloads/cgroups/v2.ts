// cgroup v2: one unified hierarchy, so a workload's cgroup is one directory.
// Controllers work only where the parent enables them in
// cgroup.subtree_control, and a cgroup that holds processes cannot enable any
// for its children (the "no internal processes" rule), so the driver enables
// them in its own cgroup and in its base and refuses clearly when it cannot.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { notFound, preconditionFailed } from '../../errors.ts';
import type { CgroupDriver, CgroupLimits, CgroupStats, WorkloadCgroup } from './cgroup.ts';
import {
  cgroupfsError,
  errnoOf,
  parseKeyedCounters,
  readControl,
  readControlIfPresent,
  readPids,
  removeCgroupDirectory,
  writeControl,
} from './cgroupfs.ts';
import {
  checkPid,
  listGroups,
  makeGroupDirectory,
  refuseExisting,
  removeMadeDirectories,
} from './group-directories.ts';
import { DEFAULT_KILL_TIMEOUT_MS, type Freezer, freezeKillThaw, killEveryTask } from './kill-tasks.ts';
import { checkCpusWithin, checkLimits, formatCpuList, parseCpuList } from './limits.ts';
import { checkCgroupName } from './names.ts';

/** The controllers a workload's limits use; CPU time (cpu.stat usage_usec) is there without any. */
export const V2_CONTROLLERS = ['memory', 'cpuset', 'pids'] as const;
export type V2Controller = (typeof V2_CONTROLLERS)[number];

export interface CgroupV2Options {
  /** This process's own cgroup directory: the cgroup2 mount point joined with /proc/self/cgroup's "0::" path. */
  readonly ownDirectory: string;
  /** The driver's sub-directory beneath it (a safe cgroup name). */
  readonly base: string;
  readonly killTimeoutMs?: number;
}

export class CgroupV2Driver implements CgroupDriver {
  readonly version = 2 as const;
  readonly baseDirectories: readonly string[];
  readonly #own: string;
  readonly #base: string;
  readonly #killTimeoutMs: number;

  constructor(options: CgroupV2Options) {
    this.#own = options.ownDirectory;
    this.#base = join(options.ownDirectory, checkCgroupName(options.base, 'cgroup base'));
    this.baseDirectories = [this.#base];
    this.#killTimeoutMs = options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
  }

  /** Which of the limit controllers this process's cgroup has been given (the rest refuse their limits). */
  availableControllers(): V2Controller[] {
    return controllersIn(readControl(join(this.#own, 'cgroup.controllers')));
  }

  create(name: string, limits: CgroupLimits = {}): WorkloadCgroup {
    checkCgroupName(name);
    const checked = checkLimits(limits);
    this.#ensureBase();
    const group = new V2WorkloadCgroup(name, join(this.#base, name), this.#base, this.#killTimeoutMs);
    refuseExisting(name, group.directory);
    group.checkLimitsFit(checked);
    makeGroupDirectory(name, group.directory);
    try {
      group.setLimits(checked);
    } catch (error) {
      removeMadeDirectories([group.directory]);
      throw error;
    }
    return group;
  }

  open(name: string): WorkloadCgroup {
    checkCgroupName(name);
    const directory = join(this.#base, name);
    if (!existsSync(directory)) throw notFound(`cgroup ${name} does not exist under ${this.#base}`);
    return new V2WorkloadCgroup(name, directory, this.#base, this.#killTimeoutMs);
  }

  list(): string[] {
    return listGroups(this.baseDirectories);
  }

  async removeBase(): Promise<void> {
    const left = this.list();
    if (left.length > 0)
      throw preconditionFailed(`cgroup base ${this.#base} still holds workload cgroups: ${left.join(', ')}`);
    await removeCgroupDirectory(this.#base, this.#killTimeoutMs);
  }

  /** Makes the base and passes every available limit controller down through the own cgroup and the base. */
  #ensureBase(): void {
    try {
      mkdirSync(this.#base);
    } catch (error) {
      if (errnoOf(error) === 'ENOENT')
        throw preconditionFailed(`cgroup v2: this process's own cgroup ${this.#own} does not exist`);
      if (errnoOf(error) !== 'EEXIST') throw cgroupfsError(`making ${this.#base}`, error);
    }
    const wanted = this.availableControllers();
    for (const directory of [this.#own, this.#base]) {
      try {
        enableControllers(directory, wanted);
      } catch (error) {
        if (errnoOf(error) !== 'EBUSY') throw error;
        throw preconditionFailed(
          `cgroup v2: cannot enable ${wanted.join(', ')} below ${directory} while it holds processes (the no-internal-processes rule); run sigil in a leaf cgroup of a delegated subtree (e.g. systemd Delegate=yes)`,
        );
      }
    }
  }
}

class V2WorkloadCgroup implements WorkloadCgroup {
  readonly name: string;
  readonly directory: string;
  readonly directories: readonly string[];
  readonly #parent: string;
  readonly #killTimeoutMs: number;

  constructor(name: string, directory: string, parent: string, killTimeoutMs: number) {
    this.name = name;
    this.directory = directory;
    this.directories = [directory];
    this.#parent = parent;
    this.#killTimeoutMs = killTimeoutMs;
  }

  /** Refuses limits whose controller the parent does not pass down, and CPUs outside the parent's. */
  checkLimitsFit(limits: CgroupLimits): void {
    const available = new Set(controllersIn(readControl(join(this.#parent, 'cgroup.subtree_control'))));
    const needs: [V2Controller, unknown][] = [
      ['memory', limits.memoryBytes],
      ['cpuset', limits.cpus],
      ['pids', limits.pidsMax],
    ];
    for (const [controller, limit] of needs) {
      if (limit !== undefined && !available.has(controller))
        throw preconditionFailed(
          `cgroup v2: the ${controller} controller is not enabled for ${this.#parent} (not delegated to this process's cgroup), so its limit cannot be set`,
        );
    }
    if (limits.cpus) {
      const effective = readControl(join(this.#parent, 'cpuset.cpus.effective'));
      checkCpusWithin(limits.cpus, parseCpuList(effective), this.#parent);
    }
  }

  setLimits(limits: CgroupLimits): void {
    const checked = checkLimits(limits);
    this.checkLimitsFit(checked);
    const file = (name: string) => join(this.directory, name);
    if (checked.memoryBytes !== undefined) {
      writeControl(file('memory.max'), String(checked.memoryBytes));
      // Like v1's memory+swap limit: over the limit a workload is OOM-killed, not swapped out.
      if (existsSync(file('memory.swap.max'))) writeControl(file('memory.swap.max'), '0');
    }
    if (checked.cpus) writeControl(file('cpuset.cpus'), formatCpuList(checked.cpus));
    if (checked.pidsMax !== undefined) writeControl(file('pids.max'), String(checked.pidsMax));
  }

  addProcess(pid: number): void {
    checkPid(pid);
    try {
      writeControl(join(this.directory, 'cgroup.procs'), String(pid));
    } catch (error) {
      if (errnoOf(error) === 'ESRCH') throw notFound(`process ${pid} does not exist`, error);
      throw error;
    }
  }

  processes(): number[] {
    return readPids(join(this.directory, 'cgroup.procs'));
  }

  stats(): CgroupStats {
    const read = (name: string) => readControlIfPresent(join(this.directory, name));
    const cpuStat = read('cpu.stat');
    if (cpuStat === undefined) throw notFound(`cgroup ${this.name} does not exist (${this.directory})`);
    return v2Stats({
      cpuStat,
      memoryCurrent: read('memory.current'),
      memoryPeak: read('memory.peak'),
      memoryEvents: read('memory.events'),
      pidsCurrent: read('pids.current'),
    });
  }

  async killAll(): Promise<void> {
    const pids = () => this.processes();
    const killFile = join(this.directory, 'cgroup.kill');
    // cgroup.kill (Linux 5.14) kills the whole group in one write; before it, the portable freeze-kill-thaw.
    const killRound = existsSync(killFile)
      ? async () => writeControl(killFile, '1')
      : () => freezeKillThaw(v2Freezer(this.directory), pids);
    await killEveryTask({ what: `cgroup ${this.name}`, pids, killRound }, this.#killTimeoutMs);
  }

  async remove(): Promise<void> {
    await this.killAll();
    await removeCgroupDirectory(this.directory, this.#killTimeoutMs);
  }
}

/** The texts of a v2 group's statistics files (absent where the kernel or a missing controller has none). */
export interface V2StatFiles {
  readonly cpuStat: string;
  readonly memoryCurrent?: string;
  readonly memoryPeak?: string;
  readonly memoryEvents?: string;
  readonly pidsCurrent?: string;
}

/** Statistics from v2's files: cpu.stat's usage_usec, memory.current/.peak, memory.events' oom_kill, pids.current. */
export function v2Stats(files: V2StatFiles): CgroupStats {
  const number = (text: string | undefined) => (text === undefined ? 0 : Number(text.trim()) || 0);
  const memoryBytes = number(files.memoryCurrent);
  const events = parseKeyedCounters(files.memoryEvents ?? '');
  return {
    cpuNanos: (parseKeyedCounters(files.cpuStat).get('usage_usec') ?? 0) * 1000,
    memoryBytes,
    // memory.peak arrived in Linux 5.19; before it the current figure is the best known peak.
    memoryPeakBytes: files.memoryPeak === undefined ? memoryBytes : number(files.memoryPeak),
    pids: number(files.pidsCurrent),
    oomKills: events.get('oom_kill') ?? 0,
  };
}

/** cgroup.freeze, with cgroup.events telling when every task has stopped. */
export function v2Freezer(directory: string): Freezer {
  const freezeFile = join(directory, 'cgroup.freeze');
  return {
    freeze: () => writeControl(freezeFile, '1'),
    isFrozen: () => parseKeyedCounters(readControl(join(directory, 'cgroup.events'))).get('frozen') === 1,
    thaw: () => writeControl(freezeFile, '0'),
  };
}

/** The limit controllers named in a cgroup.controllers or cgroup.subtree_control text. */
export function controllersIn(text: string): V2Controller[] {
  const named = new Set(text.trim().split(/\s+/));
  return V2_CONTROLLERS.filter((controller) => named.has(controller));
}

function enableControllers(directory: string, controllers: readonly V2Controller[]): void {
  const enabled = new Set(controllersIn(readControl(join(directory, 'cgroup.subtree_control'))));
  const missing = controllers.filter((controller) => !enabled.has(controller));
  if (missing.length > 0)
    writeControl(join(directory, 'cgroup.subtree_control'), missing.map((c) => `+${c}`).join(' '));
}
