// Checking limits before any of them is written (so a refused call changes
// nothing), and the kernel's CPU list format ("0-3,8,10-11") both
// interfaces use for cpusets.
import { invalid, preconditionFailed } from '../../errors.ts';
import type { CgroupLimits } from './cgroup.ts';

/** Below this a process cannot even start; a smaller limit is a mistake, not a tight budget. */
export const MIN_MEMORY_BYTES = 1 << 20;
/** The kernel's PID_MAX_LIMIT: no group can hold more tasks than the system can have. */
export const MAX_PIDS = 4_194_304;
/** The largest CPU id a kernel can have (NR_CPUS is at most 8192); bounds the work a CPU list costs. */
export const MAX_CPU_ID = 8191;

/** `limits` with every field checked for shape and range (not yet against the parent's CPUs). */
export function checkLimits(limits: unknown): CgroupLimits {
  if (typeof limits !== 'object' || limits === null || Array.isArray(limits))
    throw invalid('cgroup limits: must be an object');
  const { memoryBytes, cpus, pidsMax, ...rest } = limits as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw invalid(`cgroup limits: unknown field ${JSON.stringify(unknown[0])}`);
  if (memoryBytes !== undefined) {
    if (!Number.isSafeInteger(memoryBytes) || (memoryBytes as number) < MIN_MEMORY_BYTES)
      throw invalid(
        `cgroup limits: memoryBytes must be a whole number of bytes from ${MIN_MEMORY_BYTES} (1 MiB), got ${String(memoryBytes)}`,
      );
  }
  if (pidsMax !== undefined) {
    if (!Number.isSafeInteger(pidsMax) || (pidsMax as number) < 1 || (pidsMax as number) > MAX_PIDS)
      throw invalid(
        `cgroup limits: pidsMax must be a whole number from 1 to ${MAX_PIDS}, got ${String(pidsMax)}`,
      );
  }
  if (cpus !== undefined) checkCpuIds(cpus);
  return limits as CgroupLimits;
}

function checkCpuIds(cpus: unknown): void {
  if (!Array.isArray(cpus)) throw invalid('cgroup limits: cpus must be a list of CPU ids');
  if (cpus.length === 0) throw invalid('cgroup limits: cpus must name at least one CPU');
  if (cpus.length > MAX_CPU_ID + 1)
    throw invalid(`cgroup limits: cpus names more than ${MAX_CPU_ID + 1} CPUs`);
  const seen = new Set<number>();
  for (const id of cpus) {
    if (!Number.isInteger(id) || id < 0 || id > MAX_CPU_ID)
      throw invalid(`cgroup limits: CPU id ${String(id)} is not a whole number from 0 to ${MAX_CPU_ID}`);
    if (seen.has(id)) throw invalid(`cgroup limits: CPU id ${id} appears twice`);
    seen.add(id);
  }
}

/** Refuses CPUs outside `available` (the parent cgroup's effective CPUs), naming them and what is available. */
export function checkCpusWithin(cpus: readonly number[], available: readonly number[], parent: string): void {
  const allowed = new Set(available);
  const outside = cpus.filter((id) => !allowed.has(id));
  if (outside.length > 0)
    throw preconditionFailed(
      `cgroup limits: CPU ${formatCpuList(outside)} ${outside.length === 1 ? 'is' : 'are'} outside the CPUs available to ${parent} (${formatCpuList(available) || 'none'})`,
    );
}

/** The ids in a kernel CPU list such as "0-3,8" (empty text is no CPUs), ascending. */
export function parseCpuList(text: string): number[] {
  const ids = new Set<number>();
  const trimmed = text.trim();
  if (trimmed === '') return [];
  for (const part of trimmed.split(',')) {
    const match = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!match) throw invalid(`CPU list ${JSON.stringify(text)}: cannot read ${JSON.stringify(part)}`);
    const first = Number(match[1]);
    const last = match[2] === undefined ? first : Number(match[2]);
    if (last < first || last > MAX_CPU_ID)
      throw invalid(`CPU list ${JSON.stringify(text)}: bad range ${part}`);
    for (let id = first; id <= last; id++) ids.add(id);
  }
  return [...ids].sort((a, b) => a - b);
}

/** The kernel's CPU list text for `ids`: runs become ranges ("0-3,8"). */
export function formatCpuList(ids: readonly number[]): string {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}
