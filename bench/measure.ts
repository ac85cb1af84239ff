// Shared measuring code for the benchmarks: timed loops bounded by a count
// AND a time, medians, and interleaved comparison so that machine noise (other
// processes, thermal throttling, GC) hits the measured code and its baselines
// alike. Interleaving is fine-grained: each run of each subject is split into
// short slices that alternate with the other subjects' slices, so a burst of
// load lasting a fraction of a second is shared rather than landing on one.

/** One benchmark result; run.ts prints one JSON line per baseline. */
export interface Result {
  readonly case: string;
  readonly metric: string;
  /** Median of the runs. */
  readonly value: number;
  /** Baseline name → its median, measured in the same runs. */
  readonly baselines: Readonly<Record<string, number>>;
}

export type Report = (result: Result) => void;

export interface Limits {
  /** Measured runs per subject (the median is reported). */
  readonly runs: number;
  /** Upper bound on one run's duration. */
  readonly maxMs: number;
  /** Upper bound on one run's operation count. */
  readonly maxOps: number;
  /** Untimed warm-up per subject before the first run (JIT, caches). */
  readonly warmupMs: number;
  /** Each run is split into this many slices, alternating between subjects. */
  readonly slices: number;
}

/** A benchmark module: bench/<name>.ts exports these. */
export interface Benchmark {
  readonly description: string;
  run(report: Report, limits: Limits): Promise<void>;
}

/** A positive number from the environment (a bench knob), else `fallback`; anything else is an error. */
export function positiveNumber(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0)
    throw new Error(`${name} must be a positive number, got "${text}"`);
  return value;
}

/**
 * Defaults, overridable with SIGIL_BENCH_RUNS (at least 5), SIGIL_BENCH_MS,
 * SIGIL_BENCH_MAX_OPS, SIGIL_BENCH_WARMUP_MS and SIGIL_BENCH_SLICES.
 */
export function limitsFromEnvironment(): Limits {
  return {
    runs: Math.max(5, Math.round(positiveNumber('SIGIL_BENCH_RUNS', 5))),
    maxMs: positiveNumber('SIGIL_BENCH_MS', 500),
    maxOps: Math.round(positiveNumber('SIGIL_BENCH_MAX_OPS', 1_000_000)),
    warmupMs: positiveNumber('SIGIL_BENCH_WARMUP_MS', 200),
    slices: Math.max(1, Math.round(positiveNumber('SIGIL_BENCH_SLICES', 10))),
  };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** An operation to measure; it may return a promise, which is awaited. */
export type Operation = () => unknown;

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';

export interface Sample {
  readonly ops: number;
  readonly ms: number;
}

/**
 * Calls `op` until `maxOps` calls have completed or `maxMs` has passed
 * (whichever comes first; at least one call) and returns the count and the
 * elapsed time. Synchronous operations run in a tight loop that reads the
 * clock every few calls; asynchronous ones are awaited one at a time.
 */
export async function timed(op: Operation, maxMs: number, maxOps: number): Promise<Sample> {
  const start = performance.now();
  const deadline = start + maxMs;
  let count = 0;
  const first = op();
  if (isThenable(first)) {
    await first;
    count++;
    while (count < maxOps && performance.now() < deadline) {
      await op();
      count++;
    }
  } else {
    count++;
    while (count < maxOps) {
      op();
      count++;
      if ((count & 7) === 0 && performance.now() >= deadline) break;
    }
  }
  return { ops: count, ms: performance.now() - start };
}

/** Operations per second of one timed loop. */
export async function rate(op: Operation, maxMs: number, maxOps: number): Promise<number> {
  const sample = await timed(op, maxMs, maxOps);
  return (sample.ops * 1000) / sample.ms;
}

/**
 * Measures every subject `limits.runs` times and returns each one's median
 * rate (operations per second). Runs are interleaved: run k of every subject
 * is made of `limits.slices` slices taken in turn (A B C A B C …, rotating
 * who goes first), so the subjects see the same machine. `progress`
 * receives one line per run.
 */
export async function compare(
  subjects: Readonly<Record<string, Operation>>,
  limits: Limits,
  progress: (line: string) => void = () => {},
): Promise<Record<string, number>> {
  const names = Object.keys(subjects);
  for (const name of names) await timed(subjects[name], limits.warmupMs, limits.maxOps);
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const sliceMs = limits.maxMs / limits.slices;
  const sliceOps = Math.max(1, Math.ceil(limits.maxOps / limits.slices));
  for (let runIndex = 0; runIndex < limits.runs; runIndex++) {
    const totals = new Map(names.map((n) => [n, { ops: 0, ms: 0 }]));
    for (let slice = 0; slice < limits.slices; slice++) {
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + runIndex + slice) % names.length];
        const sample = await timed(subjects[name], sliceMs, sliceOps);
        const total = totals.get(name)!;
        total.ops += sample.ops;
        total.ms += sample.ms;
      }
    }
    const parts: string[] = [];
    for (const name of names) {
      const total = totals.get(name)!;
      const value = (total.ops * 1000) / total.ms;
      samples[name].push(value);
      parts.push(`${name} ${Math.round(value)}/s`);
    }
    progress(`  run ${runIndex + 1}/${limits.runs}: ${parts.join(', ')}`);
  }
  return Object.fromEntries(names.map((n) => [n, median(samples[n])]));
}
