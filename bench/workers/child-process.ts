// A server the bench spawned (sigil server, cfssl serve): the tail of its
// output for error messages, whether it has exited, and a stop that asks
// politely first. The child is killed if the bench itself exits.
import type { ChildProcess } from 'node:child_process';

/** How much of a child's output is kept for error messages. */
const KEEP_OUTPUT_CHARS = 4000;

export interface WatchedChild {
  /** The last few KB of stdout and stderr. */
  output(): string;
  readonly exited: boolean;
  /** Resolves when the child has exited. */
  readonly exit: Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs: number): Promise<void>;
}

export function watchChild(child: ChildProcess): WatchedChild {
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-KEEP_OUTPUT_CHARS);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      process.removeListener('exit', killOnExit);
      resolve();
    });
  });
  return {
    output: () => output,
    get exited() {
      return exited;
    },
    exit,
    async stop(graceMs) {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(timer);
    },
  };
}
