// `sigil workload console NAME` at run time. Without --interactive it reads
// the workload's console ring (ReadConsole): history by time (--since) or
// the last N lines (--lines), then with --follow live lines until
// interrupted; one line per console line, or one JSON object per line.
//
// With --interactive it attaches (AttachConsole): what the workload writes
// is copied to stdout as it comes, raw, and stdin goes to the workload. On a
// terminal, stdin is put in raw mode (keys go to the workload as typed,
// ctrl-C included) and ctrl-] detaches, as with telnet; the terminal is
// restored however the command ends. Without a terminal stdin is piped
// through; once it ends and the workload has been quiet for a second (so the
// answer to the last line piped in is still shown), the call is half-closed
// and the command ends with the node's end of the stream.
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { AttachConsoleRequest, ConsoleChunk } from '../gen/sigil/v1/workloads.ts';
import { usageError } from './usage.ts';
import { type NodeFlags, received, streamOptions, withWorkloads } from './workload-connection.ts';
import { parseCount, parseResourceName, parseSince, usageChecked } from './workload-flags.ts';
import { consoleJson, jsonLine } from './workload-output.ts';

export interface ConsoleFlags extends NodeFlags {
  since?: string;
  lines?: string;
  follow?: boolean;
  interactive?: boolean;
  json?: boolean;
}

/** ctrl-]: detaches an interactive console. */
export const DETACH_BYTE = 0x1d;
/** With piped input: how long the workload must be quiet after the input ended before the call ends. */
const QUIET_MS = 1000;

export async function runConsole(nameText: string, flags: ConsoleFlags): Promise<void> {
  const name = usageChecked(() => parseResourceName(nameText, 'workload'));
  if (flags.since !== undefined && flags.lines !== undefined) {
    throw usageError('give --since or --lines, not both');
  }
  if (flags.interactive) {
    if (flags.since !== undefined || flags.lines !== undefined) {
      throw usageError(
        '--interactive attaches to the live console; --since and --lines read history without it',
      );
    }
    if (flags.json) throw usageError('--interactive copies the raw console; it has no --json');
    return attach(name, flags);
  }
  const request = usageChecked(() => ({
    name,
    sinceUnixMs: flags.since === undefined ? 0 : parseSince(flags.since),
    lines: flags.lines === undefined ? 0 : parseCount(flags.lines, '--lines'),
    follow: flags.follow ?? false,
  }));
  await withWorkloads(flags, async ({ client, target, context }) => {
    const call = client.readConsole(request, streamOptions(context, request.follow));
    for await (const chunk of received<ConsoleChunk>(call, target)) {
      if (chunk.dropped > 0 && !flags.json) {
        process.stderr.write(
          `sigil: warning: ${chunk.dropped} console line(s) skipped: this reader was too slow\n`,
        );
      }
      if (flags.json) process.stdout.write(jsonLine(consoleJson(chunk)));
      else {
        process.stdout.write(chunk.data);
        process.stdout.write('\n');
      }
    }
  });
}

async function attach(name: string, flags: ConsoleFlags): Promise<void> {
  await withWorkloads(flags, async ({ client, target }) => {
    const { rpcError } = await import('../client/rpc.ts');
    const call: ClientDuplexStream<AttachConsoleRequest, ConsoleChunk> = client.attachConsole();
    const stdin = process.stdin;
    const terminal = stdin.isTTY === true;
    let detached = false;
    const restore = () => {
      if (terminal && stdin.isRaw) stdin.setRawMode(false);
      stdin.off('data', forward);
      stdin.off('end', endInput);
      stdin.pause();
    };
    const forward = (data: Buffer) => {
      if (terminal) {
        const at = data.indexOf(DETACH_BYTE);
        if (at !== -1) {
          if (at > 0) call.write({ name: '', data: data.subarray(0, at) });
          detached = true;
          restore();
          call.cancel();
          return;
        }
      }
      if (!call.write({ name: '', data })) {
        stdin.pause();
        call.once('drain', () => stdin.resume());
      }
    };
    // Piped input: after its end, wait for the workload to go quiet, then half-close.
    let lastOutput = Date.now();
    let quietTimer: NodeJS.Timeout | undefined;
    const endInput = () => {
      quietTimer = setInterval(() => {
        if (Date.now() - lastOutput < QUIET_MS) return;
        clearInterval(quietTimer);
        call.end();
      }, QUIET_MS / 10);
    };
    try {
      call.write({ name, data: Buffer.alloc(0) });
      if (terminal) {
        process.stderr.write(`attached to ${name}; ctrl-] detaches\r\n`);
        stdin.setRawMode(true);
      }
      stdin.on('data', forward);
      stdin.on('end', endInput);
      stdin.resume();
      await new Promise<void>((resolve, reject) => {
        call.on('data', (chunk: ConsoleChunk) => {
          lastOutput = Date.now();
          if (!process.stdout.write(chunk.data)) {
            call.pause();
            process.stdout.once('drain', () => call.resume());
          }
        });
        call.on('end', resolve);
        call.on('error', (error) => (detached ? resolve() : reject(rpcError(error, target))));
      });
    } finally {
      clearInterval(quietTimer);
      restore();
      if (terminal) process.stderr.write(detached ? `\r\ndetached from ${name}\r\n` : '\r\n');
    }
  });
}
