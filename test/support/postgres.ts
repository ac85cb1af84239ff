// A real, throwaway PostgreSQL for tests: Debian's binaries, a fresh initdb
// in a temporary directory, a free port on 127.0.0.1, trust authentication
// for the `postgres` role. When the tests run as root the server runs as the
// `postgres` OS user (PostgreSQL refuses to run as root; Node's spawn with
// uid/gid does what `runuser -u postgres --` would). fsync is off, and the
// cluster in /dev/shm, unless a test asks for durability. Nothing outside the
// temporary directory is touched; stop() removes it, and so does process exit.
//
// When the binaries are missing, postgresUnavailable() says why, and tests
// skip with that reason; under SIGIL_CI=1 (.ci/run installs the `postgresql`
// package) it throws instead, so the test file fails rather than skips.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { accessSync, chownSync, constants, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { failInCi } from './ci.ts';

export interface TestPostgres {
  /** A database created at start, for tests that need only one. */
  readonly url: string;
  readonly port: number;
  /** A new empty database; returns its URL. */
  createDatabase(): Promise<string>;
  /** Stop the server (`crash`: immediate shutdown, like a kill — recovery runs on start) and start it again. */
  restart(options?: { readonly crash?: boolean }): Promise<void>;
  /** Stop the server and remove its files. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Keep fsync (and synchronous_commit, full_page_writes) on, for durability tests. Default false. */
  readonly fsync?: boolean;
}

interface Binaries {
  readonly initdb: string;
  readonly postgres: string;
  readonly version: number;
}

/** The newest /usr/lib/postgresql/<version>/bin with initdb and postgres, or null. */
export function findPostgresBinaries(): Binaries | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const found = readdirSync(root)
    .filter((name) => /^\d+(\.\d+)?$/.test(name))
    .map((name) => ({
      initdb: join(root, name, 'bin', 'initdb'),
      postgres: join(root, name, 'bin', 'postgres'),
      version: Number(name),
    }))
    .filter((b) => existsSync(b.initdb) && existsSync(b.postgres))
    .sort((a, b) => b.version - a.version);
  return found[0] ?? null;
}

/** Why PostgreSQL tests cannot run here (they skip), or null when they can; under SIGIL_CI=1 the reason is thrown. */
export function postgresUnavailable(): string | null {
  const reason = whyNoPostgres();
  if (reason !== null) failInCi(reason);
  return reason;
}

function whyNoPostgres(): string | null {
  if (findPostgresBinaries() === null)
    return 'PostgreSQL binaries not found: install the postgresql package (/usr/lib/postgresql/*/bin/initdb)';
  if (isRoot() && serverUser() === null)
    return 'running as root but there is no postgres OS user to run PostgreSQL as';
  return null;
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** uid/gid of the `postgres` OS user (needed only as root). */
function serverUser(): { uid: number; gid: number } | null {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : null;
  } catch {
    return null;
  }
}

/**
 * Where the cluster lives. Without fsync, in memory when /dev/shm is there:
 * CREATE DATABASE (one per contract test) takes ~30 ms there and ~240 ms on
 * this machine's disk. With fsync, on disk, where fsync means something.
 */
function scratchRoot(fsync: boolean): string {
  if (!fsync) {
    try {
      accessSync('/dev/shm', constants.W_OK);
      return '/dev/shm';
    } catch {
      // No tmpfs: the ordinary temporary directory will do.
    }
  }
  return tmpdir();
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startPostgres(options: StartOptions = {}): Promise<TestPostgres> {
  const unavailable = postgresUnavailable();
  if (unavailable !== null) throw new Error(unavailable);
  const binaries = findPostgresBinaries()!;
  const user = isRoot() ? serverUser() : null;
  const owner = user ? { uid: user.uid, gid: user.gid } : {};

  const dir = mkdtempSync(join(scratchRoot(options.fsync ?? false), 'sigil-pg-'));
  if (user) chownSync(dir, user.uid, user.gid);
  const data = join(dir, 'data');
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, LANG: 'C', LC_ALL: 'C' };

  let server: ChildProcess | null = null;
  let log = '';
  let port = 0;

  const removeOnExit = () => {
    server?.kill('SIGQUIT');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', removeOnExit);

  try {
    execFileSync(
      binaries.initdb,
      ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
      { ...owner, env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (error) {
    removeOnExit();
    process.removeListener('exit', removeOnExit);
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`initdb failed: ${stderr || String(error)}`);
  }

  const launch = async (): Promise<void> => {
    const settings = [
      'listen_addresses=127.0.0.1',
      `port=${port}`,
      `unix_socket_directories=${dir}`,
      'max_connections=200',
      ...(options.fsync ? [] : ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off']),
    ];
    log = '';
    const child = spawn(binaries.postgres, ['-D', data, ...settings.flatMap((s) => ['-c', s])], {
      ...owner,
      env,
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server = child;
    child.stdout?.on('data', (chunk: Buffer) => {
      log += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      log += chunk.toString();
    });
    let exited = false;
    child.once('exit', () => {
      exited = true;
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited) throw new Error(`postgres exited during start-up:\n${log}`);
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
      client.on('error', () => {});
      try {
        await client.connect();
        await client.end();
        return;
      } catch {
        await client.end().catch(() => {});
        if (Date.now() > deadline)
          throw new Error(`postgres did not accept connections within 30 s:\n${log}`);
        await sleep(50);
      }
    }
  };

  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const child = server;
    server = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  };

  // Another process may take the port between freePort() and bind: try a few.
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (error) {
      await halt('SIGQUIT');
      if (attempt >= 4) {
        removeOnExit();
        process.removeListener('exit', removeOnExit);
        throw error;
      }
    }
  }

  let databases = 0;
  const createDatabase = async (): Promise<string> => {
    const name = `sigil_test_${++databases}`;
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${name} TEMPLATE template0`);
    } finally {
      await client.end();
    }
    return `postgres://postgres@127.0.0.1:${port}/${name}`;
  };

  const url = await createDatabase();
  return {
    url,
    get port() {
      return port;
    },
    createDatabase,
    async restart(restartOptions = {}) {
      // SIGQUIT: immediate shutdown, no checkpoint (crash recovery on start); SIGINT: fast, clean shutdown.
      await halt(restartOptions.crash ? 'SIGQUIT' : 'SIGINT');
      await launch();
    },
    async stop() {
      await halt('SIGINT');
      rmSync(dir, { recursive: true, force: true });
      process.removeListener('exit', removeOnExit);
    },
  };
}
