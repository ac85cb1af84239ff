// Per-interface byte and packet counters of a workload's network namespace,
// read from /proc/<pid>/net/dev of a process inside it (its init): the file
// shows the namespace of the process it belongs to. Bounded work: the read
// stops at a fixed size and at a fixed number of interfaces.
import { closeSync, openSync, readSync } from 'node:fs';

export interface InterfaceStats {
  readonly name: string;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly rxPackets: number;
  readonly txPackets: number;
}

const MAX_READ_BYTES = 64 * 1024;
export const MAX_INTERFACES = 64;

/**
 * Parses /proc/net/dev: two header lines, then `name: rx bytes, packets,
 * errs, drop, fifo, frame, compressed, multicast, tx bytes, packets, …`.
 * Malformed lines are skipped.
 */
export function parseNetDev(text: string): InterfaceStats[] {
  const interfaces: InterfaceStats[] = [];
  for (const line of text.split('\n').slice(2)) {
    if (interfaces.length >= MAX_INTERFACES) break;
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim();
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    if (name === '' || fields.length < 10 || fields.some((field) => !Number.isSafeInteger(field))) continue;
    interfaces.push({
      name,
      rxBytes: fields[0],
      rxPackets: fields[1],
      txBytes: fields[8],
      txPackets: fields[9],
    });
  }
  return interfaces;
}

/** The interfaces of the network namespace `pid` is in; empty when the process is gone. */
export function interfaceStatsOf(pid: number): InterfaceStats[] {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/net/dev`, 'r');
  } catch {
    return [];
  }
  try {
    const buffer = Buffer.alloc(MAX_READ_BYTES);
    let length = 0;
    while (length < buffer.length) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
    }
    return parseNetDev(buffer.toString('utf8', 0, length));
  } catch {
    return [];
  } finally {
    closeSync(fd);
  }
}
