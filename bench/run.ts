// The benchmark runner: `npm run bench -- <name>` runs bench/<name>.ts and
// prints one JSON object per line to stdout (one per baseline), e.g.
//   {"bench":"issue","case":"p256","metric":"certs_per_s","value":15234,
//    "baseline":"node-crypto-sign","baselineValue":29100,"ratio":0.52}
// Progress and prose go to stderr, so stdout stays machine-readable.
import { readdirSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Benchmark, limitsFromEnvironment, type Result } from './measure.ts';

const here = dirname(fileURLToPath(import.meta.url));
const NOT_BENCHMARKS = new Set(['run', 'measure']);

function available(): string[] {
  return readdirSync(here)
    .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
    .map((file) => basename(file, '.ts'))
    .filter((name) => !NOT_BENCHMARKS.has(name))
    .sort();
}

/** Integers for big numbers, three significant digits for small ones. */
function round(value: number): number {
  if (!Number.isFinite(value)) return value;
  if (Math.abs(value) >= 100) return Math.round(value);
  return Number(value.toPrecision(3));
}

/** Two decimals, or three significant digits when the ratio is small. */
function roundRatio(ratio: number): number {
  if (!Number.isFinite(ratio)) return ratio;
  return Math.abs(ratio) >= 0.1 ? Math.round(ratio * 100) / 100 : Number(ratio.toPrecision(3));
}

function lines(bench: string, result: Result): string[] {
  const base = { bench, case: result.case, metric: result.metric, value: round(result.value) };
  const baselines = Object.entries(result.baselines);
  if (baselines.length === 0) return [JSON.stringify(base)];
  return baselines.map(([baseline, baselineValue]) =>
    JSON.stringify({
      ...base,
      baseline,
      baselineValue: round(baselineValue),
      ratio: roundRatio(result.value / baselineValue),
    }),
  );
}

async function main(): Promise<number> {
  const name = process.argv[2];
  const names = available();
  if (name === undefined || !names.includes(name)) {
    process.stderr.write(
      `${name === undefined ? 'no benchmark given' : `unknown benchmark "${name}"`}\n` +
        `usage: npm run bench -- <name>\navailable benchmarks:\n${names.map((n) => `  ${n}`).join('\n')}\n`,
    );
    return 2;
  }
  const module = (await import(`./${name}.ts`)) as Benchmark;
  const limits = limitsFromEnvironment();
  process.stderr.write(
    `bench ${name}: ${module.description}\n` +
      `  ${limits.runs} runs of at most ${limits.maxMs} ms / ${limits.maxOps} ops each, interleaved with the baselines\n`,
  );
  const started = performance.now();
  await module.run((result) => {
    for (const line of lines(name, result)) process.stdout.write(`${line}\n`);
  }, limits);
  process.stderr.write(`bench ${name}: done in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return 0;
}

process.exitCode = await main();
