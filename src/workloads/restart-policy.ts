// When a workload that ended is started again, and how long the supervisor
// waits first. Policies as Docker names them: 'no', 'always' (whatever the
// exit), or on-failure (a non-zero exit code, or death by a signal, which is
// how the kernel's OOM killer ends a process). With `codes`, on-failure
// restarts only after one of those exit codes; a signal death still counts,
// since a process killed by a signal chose no code.
//
// The wait doubles after each quick failure (100 ms, 200 ms, … up to 10 s)
// so a crash loop costs little, and starts over after a run that lasted
// long enough to count as healthy.
import { invalid } from '../errors.ts';
import type { ProcessExit } from './namespace-process.ts';

export type RestartPolicy = 'no' | 'always' | { readonly onFailure: { readonly codes?: readonly number[] } };

/** The most exit codes an on-failure policy may list (there are only 255 failing ones). */
export const MAX_RESTART_CODES = 255;

export interface BackoffOptions {
  /** The first wait. Default 100 ms. */
  readonly initialMs?: number;
  /** The longest wait. Default 10 s. */
  readonly maxMs?: number;
  /** A run at least this long resets the wait to initialMs. Default 10 s. */
  readonly resetAfterMs?: number;
}

export const DEFAULT_BACKOFF = { initialMs: 100, maxMs: 10_000, resetAfterMs: 10_000 } as const;
const MAX_BACKOFF_MS = 24 * 60 * 60 * 1000;

/** `policy` if it is one of the three shapes (absent means 'no'), else invalid_argument naming the problem. */
export function checkRestartPolicy(policy: unknown): RestartPolicy {
  if (policy === undefined || policy === 'no') return 'no';
  if (policy === 'always') return 'always';
  const shape = "restart policy: expected 'no', 'always' or { onFailure: { codes?: [exit codes] } }";
  if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) throw invalid(shape);
  const { onFailure, ...rest } = policy as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw invalid(`restart policy: unknown field ${JSON.stringify(unknown[0])}`);
  if (typeof onFailure !== 'object' || onFailure === null || Array.isArray(onFailure)) throw invalid(shape);
  const { codes, ...other } = onFailure as Record<string, unknown>;
  const extra = Object.keys(other);
  if (extra.length > 0) throw invalid(`restart policy: unknown onFailure field ${JSON.stringify(extra[0])}`);
  if (codes === undefined) return { onFailure: {} };
  if (!Array.isArray(codes) || codes.length === 0 || codes.length > MAX_RESTART_CODES)
    throw invalid(`restart policy: onFailure.codes must list 1 to ${MAX_RESTART_CODES} exit codes`);
  for (const code of codes)
    if (!Number.isInteger(code) || code < 1 || code > 255)
      throw invalid(`restart policy: exit code ${String(code)} is not a failing exit code (1 to 255)`);
  return { onFailure: { codes: [...new Set(codes as number[])] } };
}

/** Whether a run that ended with `exit` is started again under `policy`. */
export function shouldRestart(policy: RestartPolicy, exit: ProcessExit): boolean {
  if (policy === 'no') return false;
  if (policy === 'always') return true;
  if (exit.signal !== null) return true;
  if (exit.code === 0) return false;
  const codes = policy.onFailure.codes;
  return codes === undefined || codes.includes(exit.code);
}

/** Backoff options with defaults filled in, each a whole number of milliseconds in range. */
export function checkBackoff(options: BackoffOptions = {}): Required<BackoffOptions> {
  const checked = { ...DEFAULT_BACKOFF, ...options };
  for (const [field, value] of Object.entries(checked))
    if (!Number.isInteger(value) || value < 0 || value > MAX_BACKOFF_MS)
      throw invalid(`restart backoff: ${field} must be a whole number of milliseconds up to one day`);
  if (checked.maxMs < checked.initialMs) throw invalid('restart backoff: maxMs must be at least initialMs');
  return checked;
}

/** The waits before one workload's restarts. */
export class RestartBackoff {
  private readonly options: Required<BackoffOptions>;
  private nextMs: number;

  constructor(options: Required<BackoffOptions>) {
    this.options = options;
    this.nextMs = options.initialMs;
  }

  /** The wait before the next start, after a run that lasted `ranMs`. */
  next(ranMs: number): number {
    if (ranMs >= this.options.resetAfterMs) this.nextMs = this.options.initialMs;
    const wait = this.nextMs;
    this.nextMs = Math.min(this.options.maxMs, Math.max(1, this.nextMs * 2));
    return wait;
  }
}
