// AttachConsole: an interactive console over one bidirectional stream. The
// first message names the workload; every later message's bytes go to the
// workload's terminal, and the workload's output comes back as it is
// written. The stream ends when the caller ends it, the workload is
// destroyed, or the connection is cut (a revoked chain).
import type * as grpc from '@grpc/grpc-js';
import { invalid } from '../errors.ts';
import type { AttachConsoleRequest, ConsoleChunk } from '../gen/sigil/v1/workloads.ts';
import { written } from './workload-grpc.ts';

/** A workload's terminal as an attached caller sees it. */
export interface AttachedTerminal {
  /** Follows output from now on; onEnd when there is no more. Returns the function that stops. */
  follow(onData: (data: Buffer, at: Date) => Promise<void>, onEnd: () => void): () => void;
  /** Sends the caller's bytes to the workload. */
  input(data: Buffer): void;
}

type AttachCall = grpc.ServerDuplexStream<AttachConsoleRequest, ConsoleChunk>;

/** The first message (which must name a workload), or null when the caller went away first. */
function firstMessage(call: AttachCall): Promise<AttachConsoleRequest | null> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      call.off('data', onData);
      call.off('end', onEnd);
      call.off('cancelled', onEnd);
    };
    const onData = (message: AttachConsoleRequest) => {
      cleanup();
      call.pause();
      if (message.name === '') reject(invalid('the first message of AttachConsole must name the workload'));
      else resolve(message);
    };
    const onEnd = () => {
      cleanup();
      resolve(null);
    };
    call.on('data', onData);
    call.on('end', onEnd);
    call.on('cancelled', onEnd);
  });
}

export async function attachConsole(
  call: AttachCall,
  open: (name: string) => AttachedTerminal,
): Promise<void> {
  const first = await firstMessage(call);
  if (first === null) return;
  const terminal = open(first.name);
  let sequence = 0;
  await new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (error?: unknown) => {
      if (done) return;
      done = true;
      stop();
      call.off('data', onData);
      if (error === undefined) resolve();
      else reject(error);
    };
    const stop = terminal.follow(
      (data, at) =>
        written(call, call.write({ data, atUnixMs: at.getTime(), sequence: sequence++, dropped: 0 })),
      () => finish(),
    );
    const onData = (message: AttachConsoleRequest) => {
      if (message.data.length === 0) return;
      try {
        terminal.input(Buffer.from(message.data));
      } catch (error) {
        finish(error);
      }
    };
    call.on('data', onData);
    call.on('end', () => finish());
    call.on('cancelled', () => finish());
    call.on('error', () => finish());
    if (first.data.length > 0) onData(first);
    call.resume();
  });
  if (!call.cancelled) call.end();
}
