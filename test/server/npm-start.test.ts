// `npm start` runs the server as npm's own child (the start script execs it),
// so a signal to npm reaches the server: SIGTERM drains and stops it, and no
// `node` is left behind. Before, npm's `sh -c` stood in between, npm passed
// the signal to the shell only, and the server kept running as an orphan.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { tempDir } from '../support/temp-dir.ts';

/** npm itself starts slowly on a loaded machine. */
const DEADLINE_MS = 90_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The parent PID of `pid`, from /proc. */
function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

test("npm start: the server is npm's child, and SIGTERM to npm drains and stops it", async (t) => {
  if (spawnSync('npm', ['--version']).error) {
    const reason = 'npm is not on the PATH';
    console.log(`# skipping "${t.name}": ${reason}`);
    t.skip(reason);
    return;
  }
  const dataDir = tempDir();
  const npm = spawn(
    'npm',
    ['start', '--', '--data', dataDir, '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0'],
    {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  npm.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  npm.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<number | null>((resolve) => npm.on('exit', (code) => resolve(code)));
  let serverPid = 0;
  try {
    const info = join(dataDir, 'server.json');
    await eventually('server.json', () => existsSync(info), DEADLINE_MS);
    serverPid = (JSON.parse(readFileSync(info, 'utf8')) as { pid: number }).pid;
    assert.equal(parentOf(serverPid), npm.pid, "the server is npm's own child, no shell in between");
    npm.kill('SIGTERM');
    await exited;
    await eventually('the server to exit', () => !alive(serverPid), DEADLINE_MS);
    assert.match(output, /"msg":"signal received"/);
    assert.match(output, /"msg":"stopped"/);
  } finally {
    npm.kill('SIGKILL');
    if (serverPid !== 0 && alive(serverPid)) process.kill(serverPid, 'SIGKILL');
  }
});
