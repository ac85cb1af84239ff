// Interleaved rounds for the server benches, with CPU accounting: every
// round gives each subject `slices` turns in rotation (A B C, B C A, …) and
// records, per subject, the certificates issued, the time taken and the CPU
// its server (process tree) and the load client used meanwhile. Ratios are
// then taken round by round (the rounds share the machine's noise) and their
// median reported, never a ratio of separate medians.

import { type Limits, median } from '../measure.ts';
import { Failures } from '../remote-compare.ts';
import type { LoadClient } from './load-client.ts';
import { CpuMeter, machineBusyMicros } from './process-cpu.ts';
import type { Sample, ToClient } from './server-protocol.ts';

/** One subject's share of one round. */
export interface SubjectRound {
  /** Certificates issued (successful calls). */
  readonly ops: number;
  readonly ms: number;
  /** CPU of the subject's server process tree during its slices, µs. */
  readonly serverCpuMicros: number;
  /** CPU of the load client during those slices, µs. */
  readonly clientCpuMicros: number;
  /** CPU every process of the machine used during those slices (these two included), µs. */
  readonly machineCpuMicros: number;
}

export type Round = Readonly<Record<string, SubjectRound>>;

/** A subject's round while it is being added up. */
type Totals = { -readonly [K in keyof SubjectRound]: number };

export interface RoundsOptions {
  /** JIT warm-up on both sides of the socket takes a while on a small machine. */
  readonly minWarmupMs: number;
  /** A subject's share of a round lasts at least this long, so slices amortise their drain. */
  readonly minRunMs: number;
  readonly progress: (line: string) => void;
}

export interface RoundsResult {
  readonly rounds: readonly Round[];
  /** Successful calls per subject, warm-up included (what a server's database must hold). */
  readonly totalOps: Readonly<Record<string, number>>;
}

export const rateOf = (round: SubjectRound): number => (round.ops * 1000) / round.ms;
export const serverCpuPerCert = (round: SubjectRound): number => round.serverCpuMicros / round.ops;
export const clientCpuPerCall = (round: SubjectRound): number => round.clientCpuMicros / round.ops;
/** Cores' worth of CPU that processes other than the server and the client took during the slices. */
export const otherCores = (round: SubjectRound): number =>
  (round.machineCpuMicros - round.serverCpuMicros - round.clientCpuMicros) / (round.ms * 1000);

/** Median over the rounds of `measure` for `subject`. */
export function medianOf(
  result: RoundsResult,
  subject: string,
  measure: (round: SubjectRound) => number,
): number {
  return median(result.rounds.map((round) => measure(round[subject])));
}

/** Per-round ratios of `subject` over `baseline` (rates), with their median and range. */
export function roundRatios(
  result: RoundsResult,
  subject: string,
  baseline: string,
): { readonly median: number; readonly min: number; readonly max: number; readonly all: number[] } {
  const all = result.rounds.map((round) => rateOf(round[subject]) / rateOf(round[baseline]));
  return { median: median(all), min: Math.min(...all), max: Math.max(...all), all };
}

/**
 * Runs `limits.runs` rounds over `subjects` (name → pid of the server that
 * serves it) after a warm-up of each, measuring CPU around every slice.
 */
export async function interleavedRounds(
  client: LoadClient<ToClient, Sample>,
  subjects: Readonly<Record<string, number>>,
  limits: Limits,
  options: RoundsOptions,
): Promise<RoundsResult> {
  const names = Object.keys(subjects);
  const failures = new Failures();
  const totalOps: Record<string, number> = Object.fromEntries(names.map((name) => [name, 0]));
  const run = async (subject: string, maxMs: number, maxOps: number): Promise<Sample> => {
    const sample = await client.sample({ type: 'run', subject, maxMs, maxOps });
    failures.note(subject, sample);
    totalOps[subject] += sample.ops;
    return sample;
  };
  const warmupMs = Math.max(limits.warmupMs, options.minWarmupMs);
  for (const name of names) await run(name, warmupMs, limits.maxOps);

  const sliceMs = Math.max(limits.maxMs, options.minRunMs) / limits.slices;
  const sliceOps = Math.max(1, Math.ceil(limits.maxOps / limits.slices));
  const rounds: Round[] = [];
  for (let index = 0; index < limits.runs; index++) {
    const totals: Record<string, Totals> = Object.fromEntries(
      names.map((name) => [
        name,
        { ops: 0, ms: 0, serverCpuMicros: 0, clientCpuMicros: 0, machineCpuMicros: 0 },
      ]),
    );
    for (let slice = 0; slice < limits.slices; slice++) {
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + index + slice) % names.length];
        const meter = new CpuMeter({ server: subjects[name], client: client.pid });
        const machineBefore = machineBusyMicros();
        const sample = await run(name, sliceMs, sliceOps);
        const machineUsed = machineBusyMicros() - machineBefore;
        const used = meter.since();
        const total = totals[name];
        total.ops += sample.ops;
        total.ms += sample.ms;
        total.serverCpuMicros += used.server;
        total.clientCpuMicros += used.client;
        total.machineCpuMicros += machineUsed;
      }
    }
    rounds.push(totals);
    const parts = names.map((name) => {
      const total = totals[name];
      return `${name} ${Math.round(rateOf(total))}/s ${Math.round(serverCpuPerCert(total))} µs/cert`;
    });
    const others = median(names.map((name) => otherCores(totals[name])));
    options.progress(
      `  round ${index + 1}/${limits.runs}: ${parts.join(', ')} (other processes: ${others.toFixed(2)} cores)`,
    );
  }
  failures.print(options.progress);
  return { rounds, totalOps };
}
