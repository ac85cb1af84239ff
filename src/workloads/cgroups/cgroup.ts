// What the workload runtime needs from cgroups, independent of the kernel's
// two interfaces: v1 (one hierarchy per controller, v1.ts) and v2 (one
// unified hierarchy, v2.ts). detect.ts picks the one this machine has and
// roots it beneath the process's own cgroup, never at a hierarchy's root.

/** Limits a workload's cgroup enforces; an absent field is left as it is. */
export interface CgroupLimits {
  /** Memory (and, where swap is accounted, memory plus swap) the group may use before the kernel OOM-kills. */
  readonly memoryBytes?: number;
  /** The CPU ids its tasks may run on (a subset of the parent cgroup's effective CPUs). */
  readonly cpus?: readonly number[];
  /** How many tasks (processes and threads) it may hold; forks beyond fail with EAGAIN. */
  readonly pidsMax?: number;
}

/** What a workload's cgroup has used; a figure the kernel does not offer reads 0. */
export interface CgroupStats {
  /** CPU time of all its tasks, in nanoseconds. */
  readonly cpuNanos: number;
  readonly memoryBytes: number;
  /** The highest memoryBytes since the group was made. */
  readonly memoryPeakBytes: number;
  /** Tasks (processes and threads) now in it. */
  readonly pids: number;
  /** Tasks the kernel killed for exceeding memoryBytes. */
  readonly oomKills: number;
}

/** One workload's cgroup: a directory of the same name in every hierarchy the driver uses. */
export interface WorkloadCgroup {
  readonly name: string;
  /** Its directories (one per mounted hierarchy); a process joins by having its PID written to each cgroup.procs. */
  readonly directories: readonly string[];
  /** Checks every limit before writing any, so a refused call changes nothing. */
  setLimits(limits: CgroupLimits): void;
  addProcess(pid: number): void;
  /** The PIDs (as this process's PID namespace sees them) of every process in the group, ascending. */
  processes(): number[];
  stats(): CgroupStats;
  /** Freezes the group, SIGKILLs every task, thaws it, and waits (bounded) until it is empty. */
  killAll(): Promise<void>;
  /** killAll, then removes every directory; removing a removed group does nothing. */
  remove(): Promise<void>;
}

/** Makes and finds workload cgroups beneath the driver's own directory under this process's cgroup. */
export interface CgroupDriver {
  readonly version: 1 | 2;
  /** The driver's own directories (one per hierarchy), which hold every workload's directories. */
  readonly baseDirectories: readonly string[];
  /** Makes the group with `limits`; refuses a name that exists and leaves nothing behind when refused. */
  create(name: string, limits?: CgroupLimits): WorkloadCgroup;
  /** A group made earlier (by this process or one before it); not_found if there is none. */
  open(name: string): WorkloadCgroup;
  /** The names of the groups beneath the driver's directory, sorted. */
  list(): string[];
  /** Removes the driver's own directories; refuses while any workload group remains. */
  removeBase(): Promise<void>;
}
