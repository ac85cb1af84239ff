// RUN inside the guest, as firebuild's vminit runs it
// (firebuild-mmds bootstrap/command_runner.go): the environment is vminit's
// own plus the build's ARG and ENV values; the command, with those values
// expanded, goes into an executable temp script of `export` lines followed by
// the command, which the build's SHELL sources (`/bin/sh -c ". script"`) in
// the WORKDIR, as the build's USER. Output goes to the bootstrap service line
// by line as it comes; a non-zero exit is the error
// "command exited with code: N".
//
// Unlike firebuild, values are quoted in the script (a value with a space or
// a quote survives), a WORKDIR that does not exist yet is created (Docker does),
// the script is readable only by the user it runs as, and the command runs in
// its own process group, which is stopped when it exits (what it left in the
// background) or when its output can no longer be sent.
import { spawn } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { messageOf, preconditionFailed } from '../errors.ts';
import type { RunCommand } from './build-commands.ts';
import { expandBuildEnv } from './build-env-expand.ts';
import { resolveGuestUser } from './guest-users.ts';
import { checkVariableName, shellQuote } from './shell-quote.ts';

/** Where RUN output goes: the bootstrap service's StdOut and StdErr. */
export interface OutputSink {
  stdout(lines: string[]): Promise<void>;
  stderr(lines: string[]): Promise<void>;
}

export interface CommandRunnerOptions {
  /** Where /etc/passwd and /etc/group are read for USER names (default "/": the guest itself). */
  readonly root?: string;
  /** Where the temp script goes (default the system's temp directory). */
  readonly scriptDirectory?: string;
  /** The environment RUN starts from (default vminit's own). */
  readonly baseEnv?: Readonly<NodeJS.ProcessEnv>;
}

/** A line longer than this is sent in pieces, so output without newlines cannot grow without bound. */
export const MAX_LINE_CHARS = 64 * 1024;

/** Splits a byte stream into lines (without their newline), UTF-8 safe across chunks. */
export class LineSplitter {
  readonly #decoder = new StringDecoder('utf8');
  #partial = '';

  push(chunk: Buffer): string[] {
    const lines = (this.#partial + this.#decoder.write(chunk)).split('\n');
    this.#partial = lines.pop() as string;
    while (this.#partial.length > MAX_LINE_CHARS) {
      lines.push(this.#partial.slice(0, MAX_LINE_CHARS));
      this.#partial = this.#partial.slice(MAX_LINE_CHARS);
    }
    return lines;
  }

  /** What is left once the stream has ended: the last line, if it had no newline. */
  end(): string[] {
    const rest = this.#partial + this.#decoder.end();
    this.#partial = '';
    return rest === '' ? [] : [rest];
  }
}

/** The build's variables: ARG values, then ENV values (ENV wins, as in Docker). */
export function buildVariables(command: RunCommand): Record<string, string> {
  return { ...command.Args, ...command.Env };
}

/** The script RUN sources: one `export` a build variable, then the expanded command. */
export function runScript(command: RunCommand): string {
  const variables = buildVariables(command);
  const exports = Object.entries(variables).map(
    ([name, value]) => `export ${checkVariableName(name, 'RUN environment')}=${shellQuote(value)}`,
  );
  return `${[...exports, expandBuildEnv(command.Command, variables)].join('\n')}\n`;
}

/** Runs one RUN; resolves when it exited 0 and all its output was sent. */
export async function runBuildCommand(
  command: RunCommand,
  sink: OutputSink,
  options: CommandRunnerOptions = {},
): Promise<void> {
  const user = await resolveGuestUser(options.root ?? '/', command.User.Value);
  const script = runScript(command);
  const workdir = command.Workdir.Value || '/';
  await mkdir(workdir, { recursive: true, mode: 0o755 });
  const directory = await mkdtemp(join(options.scriptDirectory ?? tmpdir(), 'vminit-run-'));
  try {
    // The directory only lets its owner list it; the script is the RUN user's alone.
    await chmod(directory, 0o711);
    const scriptPath = join(directory, 'run.sh');
    await writeFile(scriptPath, script, { mode: 0o700 });
    await chown(scriptPath, user.uid, user.gid);
    const env: NodeJS.ProcessEnv = { ...(options.baseEnv ?? process.env) };
    // Docker's HOME is the USER's home, unless the build sets one.
    if (user.home !== undefined) env.HOME = user.home;
    Object.assign(env, buildVariables(command));
    const [shell, ...shellArgs] = command.Shell.Commands;
    await spawnStreaming(shell, [...shellArgs, `. ${shellQuote(scriptPath)}`], {
      cwd: workdir,
      env,
      uid: user.uid,
      gid: user.gid,
      sink,
    });
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

interface SpawnOptions {
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
  readonly uid: number;
  readonly gid: number;
  readonly sink: OutputSink;
}

function spawnStreaming(file: string, args: string[], options: SpawnOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env,
      uid: options.uid,
      gid: options.gid,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so stopping it stops what it started too.
      detached: true,
    });
    const stop = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    let sendFailure: unknown;
    const forward = (stream: NodeJS.ReadableStream, send: (lines: string[]) => Promise<void>) => {
      const splitter = new LineSplitter();
      let sent = Promise.resolve();
      const deliver = (lines: string[]): void => {
        if (lines.length === 0 || sendFailure !== undefined) return;
        // One message in flight per stream: the child waits on its pipe meanwhile.
        stream.pause();
        sent = sent
          .then(() => send(lines))
          .then(
            () => void stream.resume(),
            (error: unknown) => {
              sendFailure ??= error;
              stop();
              stream.resume();
            },
          );
      };
      stream.on('data', (chunk: Buffer) => deliver(splitter.push(chunk)));
      return new Promise<void>((done) => {
        stream.once('end', () => {
          deliver(splitter.end());
          void sent.then(done);
        });
      });
    };
    const stdout = forward(child.stdout, (lines) => options.sink.stdout(lines));
    const stderr = forward(child.stderr, (lines) => options.sink.stderr(lines));
    // What the command left running in the background ends with it, as when a
    // Docker build step's container goes: it would otherwise hold the pipes open.
    child.once('exit', stop);
    let failedToStart = false;
    child.once('error', (error) => {
      failedToStart = true;
      reject(preconditionFailed(`cannot start ${file}: ${messageOf(error)}`));
    });
    child.once('close', (code, signal) => {
      if (failedToStart) return;
      void Promise.all([stdout, stderr]).then(() => {
        if (sendFailure !== undefined)
          reject(preconditionFailed(`sending the command's output failed: ${messageOf(sendFailure)}`));
        else if (code === 0) resolve();
        else if (code !== null) reject(preconditionFailed(`command exited with code: ${code}`));
        else reject(preconditionFailed(`command was killed by signal ${signal}`));
      });
    });
  });
}
