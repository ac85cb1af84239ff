// CPU time and resident memory of a server process and its children (a
// `sigil server --workers N` runs N processes), read from /proc, so the
// storm bench reports what the server spent, whatever the load of the box.
import { readdirSync, readFileSync } from 'node:fs';

/** Linux's USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s. */
const TICKS_PER_SECOND = 100;

interface ProcStat {
  readonly ppid: number;
  readonly cpuMs: number;
}

function readStat(pid: number): ProcStat | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: split after its closing parenthesis.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
    return { ppid: Number(fields[1]), cpuMs: (ticks * 1000) / TICKS_PER_SECOND };
  } catch {
    return null; // gone
  }
}

function readRssBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** `pid` and its direct children. */
function processGroup(pid: number): number[] {
  const pids = [pid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const child = Number(entry);
    if (child !== pid && readStat(child)?.ppid === pid) pids.push(child);
  }
  return pids;
}

export interface ProcessUsage {
  /** User + system CPU time so far, ms. */
  readonly cpuMs: number;
  /** Resident set size now, bytes. */
  readonly rssBytes: number;
}

/** CPU and RSS of `pid` plus its direct children. */
export function processUsage(pid: number): ProcessUsage {
  let cpuMs = 0;
  let rssBytes = 0;
  for (const member of processGroup(pid)) {
    cpuMs += readStat(member)?.cpuMs ?? 0;
    rssBytes += readRssBytes(member);
  }
  return { cpuMs, rssBytes };
}
