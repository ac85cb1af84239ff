// Comparing subjects driven by a load-generating child process (LoadClient):
// warm each up, then runs of interleaved slices so that machine noise hits
// every subject alike. Shared by the transport and server benches.
import { type Limits, median } from './measure.ts';
import type { LoadClient } from './workers/load-client.ts';

/** What a worker reports for one slice of load. */
export interface RunSample {
  /** Operations that succeeded. */
  readonly ops: number;
  readonly failures: number;
  readonly ms: number;
  /** Up to a few distinct error messages. */
  readonly errors: readonly string[];
}

/** The run request every load worker understands. */
export interface RunMessage<Name extends string> {
  readonly type: 'run';
  readonly subject: Name;
  readonly maxMs: number;
  readonly maxOps: number;
}

export interface CompareOptions {
  /** JIT warm-up on both sides of the socket takes a while on a small machine. */
  readonly minWarmupMs: number;
  /** A run lasts at least this long, so slices amortise their drain (default: limits.maxMs). */
  readonly minRunMs?: number;
  readonly progress: (line: string) => void;
}

/** Failed operations per subject, printed at the end of a case. */
export class Failures {
  readonly #bySubject = new Map<string, { count: number; errors: Set<string> }>();

  note(subject: string, sample: RunSample): void {
    if (sample.failures === 0) return;
    const entry = this.#bySubject.get(subject) ?? { count: 0, errors: new Set<string>() };
    entry.count += sample.failures;
    for (const error of sample.errors) entry.errors.add(error);
    this.#bySubject.set(subject, entry);
  }

  print(progress: (line: string) => void): void {
    for (const [subject, { count, errors }] of this.#bySubject) {
      progress(`  ${subject}: ${count} failed operations (${[...errors].join('; ')})`);
    }
  }
}

/**
 * Each subject's median rate (successful operations per second) over
 * `limits.runs` runs, every run made of `limits.slices` slices alternating
 * between the subjects (rotating who goes first). Failed operations are
 * reported through `progress` and do not count.
 */
export async function compareRemote<Name extends string, S extends RunSample>(
  client: LoadClient<RunMessage<Name> | { readonly type: string }, S>,
  names: readonly Name[],
  limits: Limits,
  options: CompareOptions,
): Promise<Record<string, number>> {
  const failures = new Failures();
  const run = async (subject: Name, maxMs: number, maxOps: number): Promise<S> => {
    const sample = await client.sample({ type: 'run', subject, maxMs, maxOps });
    failures.note(subject, sample);
    return sample;
  };
  const warmupMs = Math.max(limits.warmupMs, options.minWarmupMs);
  for (const name of names) await run(name, warmupMs, limits.maxOps);
  const rates: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const sliceMs = Math.max(limits.maxMs, options.minRunMs ?? 0) / limits.slices;
  const sliceOps = Math.max(1, Math.ceil(limits.maxOps / limits.slices));
  for (let round = 0; round < limits.runs; round++) {
    const totals = new Map(names.map((n) => [n, { ops: 0, ms: 0 }]));
    for (let slice = 0; slice < limits.slices; slice++) {
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + round + slice) % names.length];
        const sample = await run(name, sliceMs, sliceOps);
        const total = totals.get(name) as { ops: number; ms: number };
        total.ops += sample.ops;
        total.ms += sample.ms;
      }
    }
    const parts = names.map((name) => {
      const total = totals.get(name) as { ops: number; ms: number };
      const rate = (total.ops * 1000) / total.ms;
      rates[name].push(rate);
      return `${name} ${Math.round(rate)}/s`;
    });
    options.progress(`  run ${round + 1}/${limits.runs}: ${parts.join(', ')}`);
  }
  failures.print(options.progress);
  return Object.fromEntries(names.map((n) => [n, median(rates[n])]));
}
