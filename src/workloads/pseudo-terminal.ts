// A pseudo-terminal for a workload's console, from @lydell/node-pty's
// prebuilt openpty (no compiler on the node). Only its `open` is used: the
// workload is still spawned by namespace-process.ts (which keeps the
// cgroup-join gate), with the terminal's slave as its stdin, stdout and
// stderr; the daemon keeps the master to read output and write input.
//
// openpty's descriptors are not close-on-exec. The slave is therefore
// reopened by path (Node opens with O_CLOEXEC) and the original closed at
// once; the master cannot be reopened (that would allocate a new terminal),
// so the workload launcher closes every descriptor above its own before the
// workload runs (namespace-process.ts), and no other workload can hold it.
import { closeSync, constants, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import tty from 'node:tty';
import { messageOf, preconditionFailed, SigilError } from '../errors.ts';

export const DEFAULT_COLUMNS = 80;
export const DEFAULT_ROWS = 24;

interface NativePty {
  open(columns: number, rows: number): { master: number; slave: number; pty: string };
  resize(fd: number, columns: number, rows: number): void;
}

let native: NativePty | undefined;

function nativePty(): NativePty {
  if (native) return native;
  try {
    const require = createRequire(import.meta.url);
    const { requireBinary } = require('@lydell/node-pty/requireBinary.js') as {
      requireBinary(file: string): NativePty;
    };
    native = requireBinary('pty.node');
    return native;
  } catch (error) {
    throw preconditionFailed(
      `pseudo-terminals need @lydell/node-pty's prebuilt binary for ${process.platform}-${process.arch}: ${messageOf(error).split('\n')[0]}`,
    );
  }
}

export interface PseudoTerminal {
  /** The slave's path, e.g. /dev/pts/3 (what `tty` prints inside). */
  readonly path: string;
  /** The slave, close-on-exec: give it to the workload's spawn, then closeSlave(). */
  readonly slaveFd: number;
  /** Output of the workload, raw bytes; ends when the last slave holder is gone. */
  readonly output: tty.ReadStream;
  /** Input for the workload (bytes, as typed). */
  write(data: Uint8Array): void;
  resize(columns: number, rows: number): void;
  /** Drops the daemon's own slave (after the spawn), so output ends when the workload does. */
  closeSlave(): void;
  /** Closes the master (and the slave, if still open). Idempotent. */
  close(): void;
}

/** Opens a terminal of `columns`×`rows`. */
export function openPseudoTerminal(columns = DEFAULT_COLUMNS, rows = DEFAULT_ROWS): PseudoTerminal {
  const pty = nativePty();
  let opened: { master: number; slave: number; pty: string };
  try {
    opened = pty.open(columns, rows);
  } catch (error) {
    throw new SigilError('internal', `cannot open a pseudo-terminal: ${messageOf(error)}`, { cause: error });
  }
  let slaveFd: number;
  try {
    slaveFd = openSync(opened.pty, constants.O_RDWR | constants.O_NOCTTY);
  } catch (error) {
    closeSync(opened.slave);
    closeSync(opened.master);
    throw new SigilError('internal', `cannot reopen ${opened.pty}: ${messageOf(error)}`, { cause: error });
  }
  // This copy would leak into every later child of the daemon.
  closeSync(opened.slave);
  const output = new tty.ReadStream(opened.master);
  // EIO is how a master reads "every slave is closed": the end, not a failure.
  output.on('error', () => output.destroy());
  let slaveOpen = true;
  let closed = false;
  const closeSlave = (): void => {
    if (!slaveOpen) return;
    slaveOpen = false;
    closeSync(slaveFd);
  };
  return {
    path: opened.pty,
    slaveFd,
    output,
    write(data) {
      if (closed || output.destroyed) throw preconditionFailed('the console terminal is closed');
      output.write(data);
    },
    resize(cols, lines) {
      if (!closed) pty.resize(opened.master, cols, lines);
    },
    closeSlave,
    close() {
      closeSlave();
      if (closed) return;
      closed = true;
      output.destroy();
    },
  };
}
