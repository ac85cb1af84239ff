// The values of resource flags (--workloads, --memory, --block, --cpus,
// --path-len …) of `sigil delegate` and `sigil delegation reserve`. Light on
// purpose: flag-values.ts checks them while the command line is parsed.
import { invalid } from '../errors.ts';

/** A whole number 0 .. max from a flag, refused with a line naming the flag. */
export function wholeNumber(text: string, flag: string, max = Number.MAX_SAFE_INTEGER): number {
  const trimmed = text.trim();
  if (!/^[0-9]+$/.test(trimmed) || !Number.isSafeInteger(Number(trimmed)) || Number(trimmed) > max) {
    throw invalid(`${flag} must be a whole number from 0 to ${max}, got ${JSON.stringify(text)}`);
  }
  return Number(trimmed);
}

/** CPU ids: "0,1", "0-3,8", or "" (none); sorted, without duplicates. */
/** maxCpu: MAX_CPU_ID of pki/policy-extension.ts, not imported here so the CLI starts without ASN.1. */
export function parseCpuList(text: string, flag = '--cpus', maxCpu = 4095): number[] {
  const cpus = new Set<number>();
  if (text.trim() === '') return [];
  const usage = `use cpu ids from 0 to ${maxCpu}, comma-separated, with ranges like 0-3`;
  for (const raw of text.split(',')) {
    const item = raw.trim();
    const match = /^([0-9]+)(?:-([0-9]+))?$/.exec(item);
    if (match === null) {
      throw invalid(
        `${flag} ${JSON.stringify(text)}: ${JSON.stringify(item)} is not a cpu id or range (${usage})`,
      );
    }
    const first = Number(match[1]);
    const last = match[2] === undefined ? first : Number(match[2]);
    if (first > maxCpu || last > maxCpu || last < first) {
      throw invalid(`${flag} ${JSON.stringify(text)}: ${JSON.stringify(item)} is out of range (${usage})`);
    }
    for (let cpu = first; cpu <= last; cpu++) cpus.add(cpu);
  }
  return [...cpus].sort((a, b) => a - b);
}
