// `sigil server` as a subprocess for bench/server.ts: the real command (same
// Node as the bench), free ports, and the bound addresses read back from
// <data>/server.json once this process has written it (its pid in the file).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TlsMaterial } from '../../src/pki/material.ts';
import type { ServerInfoFile } from '../../src/server/data-directory.ts';
import { watchChild } from './child-process.ts';

const SIGIL = fileURLToPath(new URL('../../bin/sigil.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

export interface SigilServerProcess {
  readonly child: ChildProcess;
  readonly dataDir: string;
  readonly info: ServerInfoFile;
  /** The admin identity (bootstrap replicas only), trusting ca.pem. */
  admin(): TlsMaterial;
  /** ca.pem of the data directory (the trust bundle's roots). */
  trustBundle(): string;
  /** The last few KB of stdout and stderr. */
  output(): string;
  /** SIGTERM and wait for a graceful exit (SIGKILL after 15 s). */
  stop(): Promise<void>;
}

/** Whether this `sigil server` takes --workers N (several processes or threads serving one listener). */
export function serverHasWorkersFlag(): boolean {
  const help = execFileSync(process.execPath, [SIGIL, 'server', '--help'], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return help.includes('--workers');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function readInfo(dataDir: string): ServerInfoFile | null {
  try {
    return JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8')) as ServerInfoFile;
  } catch {
    return null; // not there yet
  }
}

/**
 * `sigil server --data DIR --listen 127.0.0.1:0 --http-listen 127.0.0.1:0
 * --log-level warn ARGS…`; resolves once it serves.
 */
export async function startSigilServer(
  dataDir: string,
  args: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<SigilServerProcess> {
  // SIGIL_BENCH_PROFILE=DIR writes a V8 CPU profile of each server to DIR.
  const profile = process.env.SIGIL_BENCH_PROFILE;
  const nodeArgs = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [];
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      SIGIL,
      'server',
      '--data',
      dataDir,
      '--listen',
      '127.0.0.1:0',
      '--http-listen',
      '127.0.0.1:0',
      '--log-level',
      'warn',
      ...args,
    ],
    { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const watched = watchChild(child);

  const deadline = Date.now() + START_TIMEOUT_MS;
  let info: ServerInfoFile | null = null;
  while (info === null) {
    if (watched.exited) throw new Error(`sigil server exited during start-up:\n${watched.output()}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`sigil server did not start within ${START_TIMEOUT_MS / 1000} s:\n${watched.output()}`);
    }
    const found = readInfo(dataDir);
    if (found?.pid === child.pid) info = found;
    else await sleep(25);
  }
  const served = info;

  return {
    child,
    dataDir,
    info: served,
    admin: () => ({
      certificateChain: readFileSync(join(dataDir, served.adminCertificate), 'utf8'),
      privateKey: readFileSync(join(dataDir, served.adminKey), 'utf8'),
      trustBundle: readFileSync(join(dataDir, served.caBundle), 'utf8'),
    }),
    trustBundle: () => readFileSync(join(dataDir, served.caBundle), 'utf8'),
    output: watched.output,
    stop: () => watched.stop(STOP_TIMEOUT_MS),
  };
}
