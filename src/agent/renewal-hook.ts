// `sigil agent --exec CMD`: a command run after every renewal or re-join, as
// step's `--exec` is, to make a service pick up its new certificate (a
// reload, a SIGHUP). It runs once the new files are in place, through
// /bin/sh -c (so CMD may use pipes, $VARIABLES and quoting), with the
// agent's environment plus
//
//   SIGIL_EVENT        renewed | rejoined
//   SIGIL_DIR          the identity directory
//   SIGIL_CERT_FILE    SIGIL_KEY_FILE    SIGIL_BUNDLE_FILE    (absolute paths)
//   SIGIL_SERIAL       SIGIL_PREVIOUS_SERIAL    SIGIL_NOT_AFTER (ISO 8601)
//   SIGIL_NODE_ID      SIGIL_SPIFFE_ID
//
// A failure (exit status other than 0, a signal, a command that cannot be
// started, or one still running after the timeout, which is then killed) is
// logged with the end of its output; it never stops the agent, which keeps
// renewing. Runs never overlap: a renewal during a run waits for it. The
// command runs in a process group of its own: a timeout kills the group.
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { Logger } from '../logging.ts';
import type { RenewalOutcome } from './agent.ts';
import { BUNDLE_FILE, CERTIFICATE_FILE, KEY_FILE } from './identity-files.ts';

/** How long a hook may run before it is killed. */
export const DEFAULT_HOOK_TIMEOUT_MS = 5 * 60_000;
/** How much of each output stream is kept for the log. */
const OUTPUT_TAIL_BYTES = 2048;

export interface RenewalHookOptions {
  /** The command line, run with /bin/sh -c. */
  readonly command: string;
  /** The identity directory (for the SIGIL_*_FILE variables). */
  readonly dir: string;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly timeoutMs?: number;
}

export interface HookResult {
  readonly ok: boolean;
  /** Exit status, or null when killed by a signal or never started. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Why it failed, in words (absent when ok). */
  readonly problem?: string;
  readonly stdout: string;
  readonly stderr: string;
}

/** Keeps the last `limit` bytes written to it. */
class Tail {
  #chunks: Buffer[] = [];
  #size = 0;
  readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }
  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    while (this.#size - this.#chunks[0].length >= this.limit) {
      this.#size -= this.#chunks[0].length;
      this.#chunks.shift();
    }
  }
  text(): string {
    const all = Buffer.concat(this.#chunks);
    return all
      .subarray(Math.max(0, all.length - this.limit))
      .toString('utf8')
      .trim();
  }
}

export class RenewalHook {
  readonly #options: RenewalHookOptions;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: RenewalHookOptions) {
    this.#options = options;
  }

  /** Runs the command for `outcome` (after any earlier run finished). Never rejects. */
  run(outcome: RenewalOutcome): Promise<HookResult> {
    const next = this.#queue.then(() => this.#runOnce(outcome));
    this.#queue = next.catch(() => {});
    return next;
  }

  /** Resolves when every run asked for so far has finished. */
  idle(): Promise<void> {
    return this.#queue.then(() => {});
  }

  #environment(outcome: RenewalOutcome): NodeJS.ProcessEnv {
    const dir = resolve(this.#options.dir);
    const certificate = outcome.certificate;
    return {
      ...process.env,
      SIGIL_EVENT: outcome.kind,
      SIGIL_DIR: dir,
      SIGIL_CERT_FILE: join(dir, CERTIFICATE_FILE),
      SIGIL_KEY_FILE: join(dir, KEY_FILE),
      SIGIL_BUNDLE_FILE: join(dir, BUNDLE_FILE),
      SIGIL_SERIAL: certificate.serial,
      SIGIL_PREVIOUS_SERIAL: outcome.kind === 'not-due' ? '' : outcome.previousSerial,
      SIGIL_NOT_AFTER: certificate.notAfter.toISOString(),
      SIGIL_NODE_ID: this.#options.nodeId,
      SIGIL_SPIFFE_ID: certificate.spiffeId ?? '',
    };
  }

  #runOnce(outcome: RenewalOutcome): Promise<HookResult> {
    const { command, logger } = this.#options;
    const timeoutMs = this.#options.timeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS;
    const stdout = new Tail(OUTPUT_TAIL_BYTES);
    const stderr = new Tail(OUTPUT_TAIL_BYTES);
    return new Promise<HookResult>((done) => {
      let settled = false;
      let timedOut = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null, startError?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        let problem: string | undefined;
        if (startError) problem = `could not be started: ${startError.message}`;
        else if (timedOut) problem = `still running after ${timeoutMs} ms; killed`;
        else if (signal) problem = `killed by ${signal}`;
        else if (code !== 0) problem = `exited with status ${code}`;
        const result: HookResult = {
          ok: problem === undefined,
          code,
          signal,
          stdout: stdout.text(),
          stderr: stderr.text(),
          ...(problem ? { problem } : {}),
        };
        const fields = {
          command,
          event: outcome.kind,
          serial: outcome.certificate.serial,
          ...(result.stdout ? { stdout: result.stdout } : {}),
          ...(result.stderr ? { stderr: result.stderr } : {}),
        };
        if (result.ok) logger.info(fields, '--exec command ran after the renewal');
        else logger.warn({ ...fields, problem }, `--exec command failed (${problem}); the agent carries on`);
        done(result);
      };
      // Its own process group, so a timeout kills what the shell started too
      // (a grandchild holding the output pipes would otherwise keep it "running").
      const child = spawn('/bin/sh', ['-c', command], {
        env: this.#environment(outcome),
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }, timeoutMs);
      timer.unref();
      child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
      child.once('error', (error) => finish(null, null, error));
      child.once('close', (code, signal) => finish(code, signal));
    });
  }
}
