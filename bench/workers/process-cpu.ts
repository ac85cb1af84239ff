// What a process and all its descendants use, read from /proc (Linux): CPU
// time (utime + stime) and resident memory. A server may run several worker
// processes (`sigil server --workers N`), so the bench counts the whole tree;
// threads (worker_threads, Go's runtime) are already inside their process's
// counters. Descendants are found afresh on each reading, so workers that
// start or restart are counted too.
import { readdirSync, readFileSync } from 'node:fs';

/** USER_HZ: /proc reports CPU time in these ticks (100 on every Linux the bench targets). */
const TICKS_PER_SECOND = 100;
const PAGE_BYTES = 4096;

interface ProcessStat {
  readonly pid: number;
  readonly ppid: number;
  /** utime + stime, in ticks. */
  readonly cpuTicks: number;
  /** Resident set, in pages. */
  readonly rssPages: number;
}

/** /proc/<pid>/stat; null when the process is gone. The command name may hold spaces or parentheses. */
function readStat(pid: number): ProcessStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Fields after "(comm)": state is field 3, so field N is at index N - 3.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return {
    pid,
    ppid: Number(fields[4 - 3]),
    cpuTicks: Number(fields[14 - 3]) + Number(fields[15 - 3]),
    rssPages: Number(fields[24 - 3]),
  };
}

/** `root` and every live descendant of it. */
function processTree(root: number): ProcessStat[] {
  const all: ProcessStat[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat !== null) all.push(stat);
  }
  const children = new Map<number, ProcessStat[]>();
  for (const stat of all) {
    const siblings = children.get(stat.ppid) ?? [];
    siblings.push(stat);
    children.set(stat.ppid, siblings);
  }
  const rootStat = all.find((stat) => stat.pid === root);
  if (rootStat === undefined) return [];
  const tree = [rootStat];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i].pid) ?? []));
  return tree;
}

/** CPU time (user + system) of `pid` and its descendants so far, in microseconds; 0 when it is gone. */
export function treeCpuMicros(pid: number): number {
  let ticks = 0;
  for (const stat of processTree(pid)) ticks += stat.cpuTicks;
  return (ticks * 1_000_000) / TICKS_PER_SECOND;
}

/** Resident memory of `pid` and its descendants, in bytes, and how many processes that is. */
export function treeRss(pid: number): { readonly bytes: number; readonly processes: number } {
  const tree = processTree(pid);
  let pages = 0;
  for (const stat of tree) pages += stat.rssPages;
  return { bytes: pages * PAGE_BYTES, processes: tree.length };
}

/**
 * CPU time every core of the machine has spent busy so far (user, nice,
 * system, irq, softirq, steal from /proc/stat), in microseconds: with the
 * trees' own figures it says how much of the box other processes took.
 */
export function machineBusyMicros(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return ((user + nice + system + irq + softirq + (steal ?? 0)) * 1_000_000) / TICKS_PER_SECOND;
}

/**
 * CPU used by several process trees between two readings: `mark()` remembers
 * their counters, `since()` returns what each used since the mark (µs).
 */
export class CpuMeter<Name extends string> {
  readonly #pids: Readonly<Record<Name, number>>;
  #marked: Record<Name, number>;

  constructor(pids: Readonly<Record<Name, number>>) {
    this.#pids = pids;
    this.#marked = this.#read();
  }

  #read(): Record<Name, number> {
    const readings = {} as Record<Name, number>;
    for (const name of Object.keys(this.#pids) as Name[]) readings[name] = treeCpuMicros(this.#pids[name]);
    return readings;
  }

  mark(): void {
    this.#marked = this.#read();
  }

  since(): Record<Name, number> {
    const now = this.#read();
    const used = {} as Record<Name, number>;
    for (const name of Object.keys(now) as Name[]) used[name] = now[name] - this.#marked[name];
    return used;
  }
}
