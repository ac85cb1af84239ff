// Reading and writing cgroupfs files. Control files are tiny and answered from
// kernel memory, so synchronous calls cost microseconds; what they can fail
// with is the kernel's errno, turned here into a SigilError that says which
// file and value were refused.
import { closeSync, constants, openSync, readFileSync, rmdirSync, writeSync } from 'node:fs';
import { notFound, SigilError } from '../../errors.ts';

/** The errno code (ENOENT, EBUSY, …) behind `error`, or behind the SigilError that wraps it. */
export function errnoOf(error: unknown): string | undefined {
  const inner = error instanceof SigilError ? error.cause : error;
  return (inner as NodeJS.ErrnoException | undefined)?.code;
}

/** A control file's text; not_found when the file (or its cgroup) does not exist. */
export function readControl(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw cgroupfsError(`reading ${path}`, error);
  }
}

/** A control file's text, or undefined when the kernel does not offer it (an older kernel, an absent controller). */
export function readControlIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return undefined;
    throw cgroupfsError(`reading ${path}`, error);
  }
}

/** Writes `value` with one write(2), as the kernel expects, without ever creating a file. */
export function writeControl(path: string, value: string): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY);
  } catch (error) {
    throw cgroupfsError(`opening ${path}`, error);
  }
  try {
    writeSync(fd, value);
  } catch (error) {
    throw cgroupfsError(`writing ${JSON.stringify(value)} to ${path}`, error);
  } finally {
    closeSync(fd);
  }
}

/** A number from a control file holding one ("max" reads as Infinity). */
export function readNumber(path: string): number {
  const text = readControl(path).trim();
  if (text === 'max') return Number.POSITIVE_INFINITY;
  const value = Number(text);
  if (!Number.isFinite(value))
    throw new SigilError('internal', `${path} holds ${JSON.stringify(text)}, not a number`);
  return value;
}

/** The PIDs in a cgroup.procs file, ascending; a cgroup that does not exist holds none. */
export function readPids(procsFile: string): number[] {
  const text = readControlIfPresent(procsFile) ?? '';
  const pids = text
    .split('\n')
    .filter((line) => line !== '')
    .map(Number);
  return [...new Set(pids)].sort((a, b) => a - b);
}

/** "key value" lines (cpu.stat, memory.events, memory.oom_control) as a map; lines of another shape are skipped. */
export function parseKeyedCounters(text: string): Map<string, number> {
  const counters = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\S+)\s+(\d+)\s*$/.exec(line);
    if (match) counters.set(match[1], Number(match[2]));
  }
  return counters;
}

/** Removes one cgroup directory; one already gone is fine, one still busy is retried until `timeoutMs`. */
export async function removeCgroupDirectory(directory: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let pause = 1; ; pause = Math.min(pause * 2, 20)) {
    try {
      rmdirSync(directory);
      return;
    } catch (error) {
      const code = errnoOf(error);
      if (code === 'ENOENT') return;
      // A task that was just killed leaves its cgroup a moment after it dies.
      if (code !== 'EBUSY' || Date.now() > deadline) throw cgroupfsError(`removing ${directory}`, error);
    }
    await sleep(pause);
  }
}

/** Polls `probe` with short, growing pauses until it holds; false if it still does not after `timeoutMs`. */
export async function pollUntil(probe: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let pause = 1; ; pause = Math.min(pause * 2, 10)) {
    if (probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(pause);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The SigilError for a failed cgroupfs call: what was being done, the errno, and what it means here. */
export function cgroupfsError(doing: string, error: unknown): SigilError {
  const code = errnoOf(error);
  const reason = `${doing}: ${code ?? (error instanceof Error ? error.message : String(error))}`;
  switch (code) {
    case 'ENOENT':
      return notFound(`${reason} (no such file or cgroup)`, error);
    case 'EINVAL':
    case 'ERANGE':
      return new SigilError('invalid_argument', `${reason} (the kernel refused the value)`, { cause: error });
    case 'EBUSY':
    case 'ENOSPC':
    case 'ENOTEMPTY':
    case 'EOPNOTSUPP':
      return new SigilError('failed_precondition', `${reason} (the cgroup's state forbids it)`, {
        cause: error,
      });
    case 'EACCES':
    case 'EPERM':
      return new SigilError('permission_denied', `${reason} (cgroups need root)`, { cause: error });
    case 'ESRCH':
      return notFound(`${reason} (no such process)`, error);
    default:
      return new SigilError('internal', reason, { cause: error });
  }
}
