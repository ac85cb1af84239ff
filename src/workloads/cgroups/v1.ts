// cgroup v1: one hierarchy per controller (several may share one mount, as
// "cpu,cpuacct" often do), so a workload's cgroup is a directory of the same
// name in each. The cpuset controller refuses tasks until cpuset.cpus and
// cpuset.mems are set, so every cpuset directory this driver makes gets both
// before anything else happens in it.
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { notFound, preconditionFailed } from '../../errors.ts';
import type { CgroupDriver, CgroupLimits, CgroupStats, WorkloadCgroup } from './cgroup.ts';
import {
  cgroupfsError,
  errnoOf,
  parseKeyedCounters,
  readControl,
  readControlIfPresent,
  readNumber,
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
import { DEFAULT_KILL_TIMEOUT_MS, freezeKillThaw, killEveryTask } from './kill-tasks.ts';
import { checkCpusWithin, checkLimits, formatCpuList, parseCpuList } from './limits.ts';
import { checkCgroupName } from './names.ts';

/** The v1 controllers a workload needs: limits (memory, cpuset, pids), accounting (cpuacct), killing (freezer). */
export const V1_CONTROLLERS = ['memory', 'cpuset', 'pids', 'cpuacct', 'freezer'] as const;
export type V1Controller = (typeof V1_CONTROLLERS)[number];

export interface CgroupV1Options {
  /** Per controller, this process's own cgroup directory: the hierarchy's mount point joined with /proc/self/cgroup's path. */
  readonly ownDirectories: Readonly<Record<V1Controller, string>>;
  /** The driver's sub-directory beneath each own directory (a safe cgroup name). */
  readonly base: string;
  /** How long killAll and remove keep killing before they give up. */
  readonly killTimeoutMs?: number;
}

export class CgroupV1Driver implements CgroupDriver {
  readonly version = 1 as const;
  readonly baseDirectories: readonly string[];
  readonly #bases: Readonly<Record<V1Controller, string>>;
  readonly #own: Readonly<Record<V1Controller, string>>;
  readonly #killTimeoutMs: number;

  constructor(options: CgroupV1Options) {
    const base = checkCgroupName(options.base, 'cgroup base');
    this.#own = { ...options.ownDirectories };
    this.#bases = perController((controller) => join(this.#own[controller], base));
    this.baseDirectories = unique(Object.values(this.#bases));
    this.#killTimeoutMs = options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
  }

  create(name: string, limits: CgroupLimits = {}): WorkloadCgroup {
    checkCgroupName(name);
    const checked = checkLimits(limits);
    this.#ensureBase();
    const group = this.#group(name);
    for (const directory of group.directories) refuseExisting(name, directory);
    if (checked.cpus) checkCpusWithin(checked.cpus, availableCpus(this.#bases.cpuset), this.#bases.cpuset);
    const made: string[] = [];
    try {
      for (const directory of group.directories) {
        makeGroupDirectory(name, directory);
        made.push(directory);
      }
      copyCpuset(this.#bases.cpuset, join(this.#bases.cpuset, name));
      group.setLimits(checked);
    } catch (error) {
      removeMadeDirectories(made);
      throw error;
    }
    return group;
  }

  open(name: string): WorkloadCgroup {
    checkCgroupName(name);
    const group = this.#group(name);
    // A group half-made by a process that crashed still opens, so that it can be removed.
    if (!group.directories.some((directory) => existsSync(directory)))
      throw notFound(`cgroup ${name} does not exist under ${this.#bases.memory}`);
    return group;
  }

  list(): string[] {
    return listGroups(this.baseDirectories);
  }

  async removeBase(): Promise<void> {
    const left = this.list();
    if (left.length > 0)
      throw preconditionFailed(
        `cgroup base ${this.#bases.memory} still holds workload cgroups: ${left.join(', ')}`,
      );
    for (const directory of this.baseDirectories) await removeCgroupDirectory(directory, this.#killTimeoutMs);
  }

  #group(name: string): V1WorkloadCgroup {
    return new V1WorkloadCgroup(
      name,
      perController((controller) => join(this.#bases[controller], name)),
      this.#bases.cpuset,
      this.#killTimeoutMs,
    );
  }

  /** Makes the driver's directories; the cpuset one inherits the own cgroup's CPUs and memory nodes. */
  #ensureBase(): void {
    for (const directory of this.baseDirectories) {
      try {
        mkdirSync(directory);
      } catch (error) {
        if (errnoOf(error) === 'ENOENT')
          throw preconditionFailed(
            `cgroup v1: this process's own cgroup ${dirname(directory)} does not exist`,
          );
        if (errnoOf(error) !== 'EEXIST') throw cgroupfsError(`making ${directory}`, error);
      }
    }
    copyCpuset(this.#own.cpuset, this.#bases.cpuset);
  }
}

class V1WorkloadCgroup implements WorkloadCgroup {
  readonly name: string;
  readonly directories: readonly string[];
  readonly #dirs: Readonly<Record<V1Controller, string>>;
  readonly #parentCpuset: string;
  readonly #killTimeoutMs: number;

  constructor(name: string, dirs: Record<V1Controller, string>, parentCpuset: string, killTimeoutMs: number) {
    this.name = name;
    this.#dirs = dirs;
    // cpuset first: of all the joins a process makes, it is the one that can be refused.
    this.directories = unique([dirs.cpuset, ...Object.values(dirs)]);
    this.#parentCpuset = parentCpuset;
    this.#killTimeoutMs = killTimeoutMs;
  }

  setLimits(limits: CgroupLimits): void {
    const checked = checkLimits(limits);
    if (checked.cpus) checkCpusWithin(checked.cpus, availableCpus(this.#parentCpuset), this.#parentCpuset);
    // Memory first: it is the one write the kernel may still refuse (usage it cannot reclaim below the limit).
    if (checked.memoryBytes !== undefined) this.#setMemory(checked.memoryBytes);
    if (checked.cpus) writeControl(join(this.#dirs.cpuset, 'cpuset.cpus'), formatCpuList(checked.cpus));
    if (checked.pidsMax !== undefined)
      writeControl(join(this.#dirs.pids, 'pids.max'), String(checked.pidsMax));
  }

  addProcess(pid: number): void {
    checkPid(pid);
    for (const directory of this.directories) {
      try {
        writeControl(join(directory, 'cgroup.procs'), String(pid));
      } catch (error) {
        if (errnoOf(error) === 'ESRCH') throw notFound(`process ${pid} does not exist`, error);
        throw error;
      }
    }
  }

  processes(): number[] {
    const all = this.directories.flatMap((directory) => readPids(join(directory, 'cgroup.procs')));
    return [...new Set(all)].sort((a, b) => a - b);
  }

  stats(): CgroupStats {
    const memory = (file: string) => join(this.#dirs.memory, file);
    const oomControl = parseKeyedCounters(readControl(memory('memory.oom_control')));
    return {
      cpuNanos: readNumber(join(this.#dirs.cpuacct, 'cpuacct.usage')),
      memoryBytes: readNumber(memory('memory.usage_in_bytes')),
      memoryPeakBytes: readNumber(memory('memory.max_usage_in_bytes')),
      pids: readNumber(join(this.#dirs.pids, 'pids.current')),
      // Kernels before 4.13 have no oom_kill counter; failcnt (times the limit was hit) is the nearest upper bound.
      oomKills: oomControl.get('oom_kill') ?? readNumber(memory('memory.failcnt')),
    };
  }

  async killAll(): Promise<void> {
    const state = join(this.#dirs.freezer, 'freezer.state');
    const pids = () => this.processes();
    const freezer = {
      freeze: () => writeIfPresent(state, 'FROZEN'),
      isFrozen: () => (readControlIfPresent(state)?.trim() ?? 'FROZEN') === 'FROZEN',
      thaw: () => writeIfPresent(state, 'THAWED'),
    };
    await killEveryTask(
      { what: `cgroup ${this.name}`, pids, killRound: () => freezeKillThaw(freezer, pids) },
      this.#killTimeoutMs,
    );
  }

  async remove(): Promise<void> {
    await this.killAll();
    for (const directory of this.directories) await removeCgroupDirectory(directory, this.#killTimeoutMs);
  }

  /** Memory and, where swap is accounted, memory plus swap (so a workload is OOM-killed rather than swapped out). */
  #setMemory(bytes: number): void {
    const limit = join(this.#dirs.memory, 'memory.limit_in_bytes');
    const withSwap = join(this.#dirs.memory, 'memory.memsw.limit_in_bytes');
    // The kernel keeps memory+swap ≥ memory at every step, so raising writes memory+swap first, lowering last.
    const order = !existsSync(withSwap)
      ? [limit]
      : bytes > readNumber(limit)
        ? [withSwap, limit]
        : [limit, withSwap];
    for (const file of order) writeControl(file, String(bytes));
  }
}

/** The CPUs a child of `cpusetDirectory` may use. */
function availableCpus(cpusetDirectory: string): number[] {
  const effective = readControlIfPresent(join(cpusetDirectory, 'cpuset.effective_cpus'));
  return parseCpuList(effective ?? readControl(join(cpusetDirectory, 'cpuset.cpus')));
}

/** Gives `child` its parent's effective CPUs and memory nodes where it has none yet (a new cpuset has neither). */
function copyCpuset(parent: string, child: string): void {
  for (const [own, effective] of [
    ['cpuset.mems', 'cpuset.effective_mems'],
    ['cpuset.cpus', 'cpuset.effective_cpus'],
  ] as const) {
    if (readControl(join(child, own)).trim() !== '') continue;
    const inherited = readControlIfPresent(join(parent, effective)) ?? readControl(join(parent, own));
    writeControl(join(child, own), inherited.trim());
  }
}

function writeIfPresent(path: string, value: string): void {
  if (existsSync(path)) writeControl(path, value);
}

function perController(directoryOf: (controller: V1Controller) => string): Record<V1Controller, string> {
  return Object.fromEntries(
    V1_CONTROLLERS.map((controller) => [controller, directoryOf(controller)]),
  ) as Record<V1Controller, string>;
}

function unique(directories: readonly string[]): string[] {
  return [...new Set(directories)];
}
