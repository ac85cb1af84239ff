// How the workload and block commands print what a node answers: tables and
// short lines for people; with --json the messages themselves (ts-proto's
// camelCase objects, every field present, times as unix ms), and for
// commands that follow a stream one compact JSON object per line.
import type {
  BlockDevice,
  ConsoleChunk,
  Workload,
  WorkloadEvent,
  WorkloadStats,
} from '../gen/sigil/v1/workloads.ts';
import { instant, relative, table } from './operator-output.ts';

/** One JSON object on one line (streams with --json). */
export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value, (_key, item: unknown) =>
    typeof item === 'bigint'
      ? item.toString()
      : item instanceof Uint8Array
        ? Buffer.from(item).toString('utf8')
        : item,
  )}\n`;
}

/** MiB, KiB or bytes, short. */
export function bytesText(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

/** CPU ids as ranges: [0,1,2,5] → "0-2,5"; none → "-". */
export function cpusText(cpus: readonly number[]): string {
  if (cpus.length === 0) return '-';
  const parts: string[] = [];
  let start = cpus[0];
  let previous = cpus[0];
  for (const cpu of [...cpus.slice(1), Number.NaN]) {
    if (cpu === previous + 1) {
      previous = cpu;
      continue;
    }
    parts.push(start === previous ? `${start}` : `${start}-${previous}`);
    start = cpu;
    previous = cpu;
  }
  return parts.join(',');
}

/** How the last run ended, and when. */
function exitText(workload: Workload): string {
  const exit = workload.lastExit;
  if (exit === undefined || exit.atUnixMs <= 0) return '-';
  const how = exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
  return `${how} ${relative(exit.atUnixMs)}`;
}

export function workloadTable(workloads: readonly Workload[], now = Date.now()): string {
  if (workloads.length === 0) return 'no workloads';
  return table(
    ['NAME', 'OWNER', 'STATE', 'IMAGE', 'RESTARTS', 'MEMORY', 'CPUS', 'CREATED'],
    workloads.map((workload) => [
      workload.name,
      workload.owner || '-',
      workload.state,
      workload.image,
      String(workload.restarts),
      workload.memoryMib > 0 ? `${workload.memoryMib} MiB` : '-',
      cpusText(workload.cpus),
      relative(workload.createdAtUnixMs, now),
    ]),
  );
}

export function workloadLines(workload: Workload): string {
  const addresses = workload.addresses.map((a) => `${a.network} ${a.address} (${a.mac})`);
  return [
    `workload ${workload.name}`,
    `  owner:     ${workload.owner || '(admin)'}`,
    `  state:     ${workload.state}${workload.pid > 0 ? ` (pid ${workload.pid})` : ''}`,
    `  image:     ${workload.image}`,
    `  command:   ${workload.command.length > 0 ? workload.command.map(shellWord).join(' ') : '(the image default)'}`,
    `  restart:   ${workload.restart || 'no'} (${workload.restarts} restart${workload.restarts === 1 ? '' : 's'})`,
    `  memory:    ${workload.memoryMib > 0 ? `${workload.memoryMib} MiB` : '-'}`,
    `  cpus:      ${cpusText(workload.cpus)}`,
    `  networks:  ${addresses.length > 0 ? addresses.join(', ') : '-'}`,
    `  blocks:    ${workload.blocks.length > 0 ? workload.blocks.join(', ') : '-'}`,
    `  created:   ${instant(workload.createdAtUnixMs) ?? '-'}`,
    `  started:   ${instant(workload.startedAtUnixMs) ?? '-'}`,
    `  last exit: ${exitText(workload)}`,
    ...(workload.error ? [`  error:     ${workload.error}`] : []),
  ].join('\n');
}

/** A word as a shell would need it quoted. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

export function eventLine(event: WorkloadEvent): string {
  const parts = [instant(event.atUnixMs) ?? '-', event.workload, event.kind];
  if (event.signal) parts.push(`signal ${event.signal}`);
  else if (event.exitCode >= 0 && (event.kind === 'exited' || event.kind === 'oom-killed')) {
    parts.push(`code ${event.exitCode}`);
  }
  if (event.detail) parts.push(event.detail);
  return parts.join('  ');
}

export function statsLines(stats: WorkloadStats): string {
  return [
    `workload ${stats.name}: ${stats.state} (${stats.restarts} restart${stats.restarts === 1 ? '' : 's'})`,
    `  cpu:       ${(stats.cpuUsec / 1e6).toFixed(3)} s`,
    `  memory:    ${bytesText(stats.memoryBytes)} (peak ${bytesText(stats.memoryPeakBytes)})`,
    `  pids:      ${stats.pids}`,
    `  oom kills: ${stats.oomKills}`,
    `  block:     ${bytesText(stats.blockBytes)}`,
    ...stats.interfaces.map(
      (i) =>
        `  net ${i.name}: rx ${bytesText(i.rxBytes)} (${i.rxPackets} packets), tx ${bytesText(i.txBytes)} (${i.txPackets} packets)`,
    ),
  ].join('\n');
}

/** The header of `stats --watch`, one statsRow per sample beneath it. */
export const STATS_HEADER =
  'TIME                      STATE       CPU(s)      MEMORY      PEAK        PIDS  OOM';

export function statsRow(stats: WorkloadStats): string {
  return [
    (instant(stats.atUnixMs) ?? new Date().toISOString()).padEnd(24),
    stats.state.padEnd(10),
    (stats.cpuUsec / 1e6).toFixed(3).padEnd(10),
    bytesText(stats.memoryBytes).padEnd(10),
    bytesText(stats.memoryPeakBytes).padEnd(10),
    String(stats.pids).padEnd(4),
    String(stats.oomKills),
  ].join('  ');
}

export function blockTable(blocks: readonly BlockDevice[], now = Date.now()): string {
  if (blocks.length === 0) return 'no block devices';
  return table(
    ['NAME', 'OWNER', 'SIZE', 'USED', 'ATTACHED TO', 'CREATED'],
    blocks.map((block) => [
      block.name,
      block.owner || '-',
      `${block.sizeMib} MiB`,
      bytesText(block.usedBytes),
      block.attachedTo || '-',
      relative(block.createdAtUnixMs, now),
    ]),
  );
}

/** A console line as JSON: its text (UTF-8, invalid bytes replaced) and where it sits. */
export function consoleJson(chunk: ConsoleChunk): Record<string, unknown> {
  return {
    data: Buffer.from(chunk.data).toString('utf8'),
    atUnixMs: chunk.atUnixMs,
    sequence: chunk.sequence,
    dropped: chunk.dropped,
  };
}
