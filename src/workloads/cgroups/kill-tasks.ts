// Emptying a cgroup for good. Killing PIDs one by one races with the tasks
// themselves (a fork between reading cgroup.procs and the kill escapes it),
// so a round freezes the group first, kills every task while nothing in it
// can run, and thaws it so the kills take effect; v2's cgroup.kill does the
// same in one write. Rounds repeat until the group is empty or time is up.
import { SigilError } from '../../errors.ts';
import { pollUntil } from './cgroupfs.ts';

/** How long killAll and remove keep killing before they give up, unless a driver is told otherwise. */
export const DEFAULT_KILL_TIMEOUT_MS = 5_000;
/** How long one round waits for its kills to empty the group before trying again. */
const ROUND_MS = 500;
/** How long a round waits for the freeze to take before it kills anyway (a task in an uninterruptible wait delays it). */
const FREEZE_WAIT_MS = 1_000;

export interface KillableGroup {
  /** Names the group in a refusal. */
  readonly what: string;
  pids(): number[];
  /** One attempt to kill every task. */
  killRound(): Promise<void>;
}

/** Kills rounds of tasks until `group` is empty; an internal error naming what is left after `timeoutMs`. */
export async function killEveryTask(group: KillableGroup, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = group.pids();
    if (left.length === 0) return;
    if (Date.now() > deadline)
      throw new SigilError(
        'internal',
        `${group.what} still holds ${left.length} process(es) after ${timeoutMs} ms of killing (PIDs ${left.slice(0, 10).join(', ')})`,
      );
    await group.killRound();
    await pollUntil(() => group.pids().length === 0, Math.max(0, Math.min(ROUND_MS, deadline - Date.now())));
  }
}

export interface Freezer {
  freeze(): void;
  isFrozen(): boolean;
  thaw(): void;
}

/** One round the portable way: freeze, SIGKILL every task, thaw (always, even if killing failed). */
export async function freezeKillThaw(freezer: Freezer, pids: () => number[]): Promise<void> {
  freezer.freeze();
  try {
    await pollUntil(() => freezer.isFrozen(), FREEZE_WAIT_MS);
    for (const pid of pids()) killQuietly(pid);
  } finally {
    freezer.thaw();
  }
}

/** SIGKILL, where a task that is already gone is what we wanted anyway. */
function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}
