// The directories of workload groups beneath a driver's base, shared by both
// interfaces: which exist, making one without taking over another's, and
// undoing a half-made group.
import { type Dirent, existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { alreadyExists, invalid, notFound } from '../../errors.ts';
import { cgroupfsError, errnoOf } from './cgroupfs.ts';
import { MAX_PIDS } from './limits.ts';
import { checkCgroupName } from './names.ts';

/** The names of the workload directories under `bases` (anything not a valid name is not ours), sorted. */
export function listGroups(bases: readonly string[]): string[] {
  const names = new Set<string>();
  for (const base of bases) {
    let entries: Dirent[];
    try {
      entries = readdirSync(base, { withFileTypes: true });
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') continue;
      throw cgroupfsError(`listing ${base}`, error);
    }
    for (const entry of entries) if (entry.isDirectory() && isCgroupName(entry.name)) names.add(entry.name);
  }
  return [...names].sort();
}

/** Refuses a name whose directory exists: another workload's group, or a control file of the same name. */
export function refuseExisting(name: string, directory: string): void {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(directory).isDirectory();
  } catch {
    return;
  }
  if (!isDirectory)
    throw invalid(`cgroup name ${JSON.stringify(name)}: is the name of a cgroup control file`);
  throw alreadyExists(`cgroup ${name} already exists (${directory})`);
}

/** mkdir, where a directory made meanwhile by someone else is already_exists rather than ours. */
export function makeGroupDirectory(name: string, directory: string): void {
  try {
    mkdirSync(directory);
  } catch (error) {
    if (errnoOf(error) === 'EEXIST') throw alreadyExists(`cgroup ${name} already exists (${directory})`);
    throw cgroupfsError(`making ${directory}`, error);
  }
}

/** Undoes the directories a refused create made (they hold no task yet); the refusal is what the caller sees. */
export function removeMadeDirectories(directories: readonly string[]): void {
  for (const directory of [...directories].reverse()) {
    try {
      rmdirSync(directory);
    } catch {
      // Nothing better to do: the create's own error is the one to report.
    }
  }
}

/** Refuses what cannot be a PID, and a PID no process has. */
export function checkPid(pid: unknown): void {
  if (!Number.isSafeInteger(pid) || (pid as number) < 1 || (pid as number) > MAX_PIDS)
    throw invalid(`process id: must be a whole number from 1 to ${MAX_PIDS}, got ${String(pid)}`);
  if (!existsSync(`/proc/${pid}`)) throw notFound(`process ${pid} does not exist`);
}

function isCgroupName(name: string): boolean {
  try {
    checkCgroupName(name);
    return true;
  } catch {
    return false;
  }
}
