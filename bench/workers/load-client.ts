// Both sides of a load-generating child process. The bench forks the worker
// and makes one request/reply exchange at a time over IPC (LoadClient); the
// worker answers them in order (serveLoadRequests). Every worker protocol
// answers `ok`, `sample` or `error`, and understands `teardown`.
import { type ChildProcess, fork } from 'node:child_process';

export type WorkerReply<S> =
  | { readonly type: 'ok' }
  | { readonly type: 'sample'; readonly sample: S }
  | { readonly type: 'error'; readonly message: string };

export class LoadClient<To extends { readonly type: string }, S> {
  readonly #child: ChildProcess;
  #pending: { resolve: (reply: WorkerReply<S>) => void; reject: (error: Error) => void } | null = null;

  constructor(worker: URL) {
    this.#child = fork(worker, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', (reply: WorkerReply<S>) => {
      const pending = this.#pending;
      this.#pending = null;
      pending?.resolve(reply);
    });
    this.#child.on('exit', (code, signal) => {
      const pending = this.#pending;
      this.#pending = null;
      pending?.reject(new Error(`the load client exited (${signal ?? code})`));
    });
  }

  /** The worker's process id, to read its CPU time (process-cpu.ts). */
  get pid(): number {
    return this.#child.pid as number;
  }

  async request(message: To): Promise<WorkerReply<S>> {
    if (this.#pending) throw new Error('one request at a time');
    const reply = await new Promise<WorkerReply<S>>((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.#child.send(message);
    });
    if (reply.type === 'error') throw new Error(`load client: ${reply.message}`);
    return reply;
  }

  async sample(message: To): Promise<S> {
    const reply = await this.request(message);
    if (reply.type !== 'sample') throw new Error(`load client answered ${reply.type}, not a sample`);
    return reply.sample;
  }

  /** Lets the worker release what it holds (`teardown`), then ends it; a no-op once it has exited. */
  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.#child.once('exit', resolve));
    await this.request({ type: 'teardown' } as To).catch(() => {});
    this.#child.disconnect();
    await exited;
  }
}

/**
 * The worker side: answer the bench's messages one at a time, in order; a
 * failure becomes an `error` reply. The worker exits when the bench lets go.
 */
export function serveLoadRequests<To, Reply>(handle: (message: To) => Promise<Reply>): void {
  let queue: Promise<void> = Promise.resolve();
  process.on('message', (message: To) => {
    queue = queue.then(async () => {
      let reply: Reply | { type: 'error'; message: string };
      try {
        reply = await handle(message);
      } catch (error) {
        reply = { type: 'error', message: error instanceof Error ? error.message : String(error) };
      }
      process.send?.(reply);
    });
  });
  process.on('disconnect', () => process.exit(0));
}
