// The mTLS-for-gRPC tutorial, working: the Casino example run as a user would
// run it, in both variants. Servers and clients are real processes on
// 127.0.0.1; the files variant runs once with a PKI made by the openssl CLI
// (interop with outside tools) and once with `sigil pki quickstart`.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { repoRoot, sigil, tempDir } from '../cli/pki-helpers.ts';

const example = (file: string) => join(repoRoot, 'examples', 'casino', file);

interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NODE_COMPILE_CACHE: join(tmpdir(), 'sigil-test-node-compile-cache') };
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('CASINO_') && !name.startsWith('SIGIL_')) env[name] = value;
  }
  return env;
}

function collect(child: ChildProcess): Promise<Finished> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function run(command: string, args: readonly string[]): Promise<Finished> {
  return collect(
    spawn(command, args, {
      cwd: repoRoot,
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    }),
  );
}

/** One JSON line per payment, as the example clients print them. */
interface Payment {
  readonly client: string;
  readonly amount: number;
  readonly total: number;
}

function payments(result: Finished): Payment[] {
  assert.equal(result.code, 0, `the client failed: ${result.stderr}`);
  return result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Payment);
}

interface RunningServer {
  readonly port: number;
  /** SIGTERM, then what the server printed and its exit code. */
  stop(): Promise<Finished>;
}

/** Starts examples/casino/server.ts on a free port and waits until it is listening. */
async function startServer(files: { ca: string; cert: string; key: string }): Promise<RunningServer> {
  const child = spawn(
    process.execPath,
    [example('server.ts'), '--ca', files.ca, '--cert', files.cert, '--key', files.key, '--port', '0'],
    { cwd: repoRoot, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const finished = collect(child);
  const port = await new Promise<number>((resolve, reject) => {
    let seen = '';
    child.stdout?.on('data', (chunk: string) => {
      seen += chunk;
      const match = /casino listening on 127\.0\.0\.1:(\d+)/.exec(seen);
      if (match) resolve(Number(match[1]));
    });
    void finished.then((result) => reject(new Error(`the server exited (${result.code}): ${result.stderr}`)));
  });
  return {
    port,
    stop: () => {
      child.kill('SIGTERM');
      return finished;
    },
  };
}

function pay(
  port: number,
  files: { ca: string; cert: string; key: string },
  amounts: readonly number[],
): Promise<Finished> {
  return run(process.execPath, [
    example('client.ts'),
    '--ca',
    files.ca,
    '--cert',
    files.cert,
    '--key',
    files.key,
    '--target',
    `127.0.0.1:${port}`,
    ...amounts.map(String),
  ]);
}

test('casino, embedded CA: two clients of an in-memory CA keep separate running totals, no files', async () => {
  const result = await run(process.execPath, [example('embedded.ts')]);
  assert.deepEqual(payments(result), [
    { client: 'spiffe://sigil.internal/client/alice', amount: 10, total: 10 },
    { client: 'spiffe://sigil.internal/client/bob', amount: 5, total: 5 },
    { client: 'spiffe://sigil.internal/client/alice', amount: 20, total: 30 },
    { client: 'spiffe://sigil.internal/client/bob', amount: 7, total: 12 },
    { client: 'spiffe://sigil.internal/client/alice', amount: 1, total: 31 },
  ]);
});

test('casino, files from the openssl CLI: server and clients as processes, a running total per client certificate', async () => {
  const dir = tempDir('sigil-casino-openssl-');
  const made = await run('sh', [example('openssl-pki.sh'), dir]);
  assert.equal(made.code, 0, `openssl-pki.sh failed: ${made.stderr}`);
  const ca = join(dir, 'ca.pem');
  const client = (name: string) => ({ ca, cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) });
  const server = await startServer(client('server'));

  assert.deepEqual(payments(await pay(server.port, client('alice'), [10, 20])), [
    { client: 'spiffe://casino.example/client/alice', amount: 10, total: 10 },
    { client: 'spiffe://casino.example/client/alice', amount: 20, total: 30 },
  ]);
  assert.deepEqual(payments(await pay(server.port, client('bob'), [5])), [
    { client: 'spiffe://casino.example/client/bob', amount: 5, total: 5 },
  ]);
  // A new process, a new connection: the total follows the certificate, not the connection.
  assert.deepEqual(payments(await pay(server.port, client('alice'), [1])), [
    { client: 'spiffe://casino.example/client/alice', amount: 1, total: 31 },
  ]);
  // The server certificate (serverAuth only) is no client certificate: refused at the handshake.
  const refused = await pay(server.port, client('server'), [100]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^casino client: UNAVAILABLE/m);

  const stopped = await server.stop();
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.match(stopped.stderr, /refused a connection from .*: INVALID_PURPOSE/);
  assert.match(stopped.stderr, /spiffe:\/\/casino\.example\/client\/alice paid 31/);
  assert.match(stopped.stderr, /spiffe:\/\/casino\.example\/client\/bob paid 5/);
});

test('casino, files from sigil pki quickstart: the quickstart client and a second issued client keep separate totals', async () => {
  const dir = tempDir('sigil-casino-quickstart-');
  const certs = join(dir, 'certs');
  const quickstart = await sigil([
    'pki',
    'quickstart',
    '--out',
    certs,
    '--dns',
    'localhost',
    '--ip',
    '127.0.0.1',
  ]);
  assert.equal(quickstart.code, 0, quickstart.stderr);
  const issued = await sigil([
    'pki',
    'issue',
    '--dir',
    join(certs, 'ca'),
    '--client',
    '--name',
    'bob',
    '--out',
    join(certs, 'bob'),
  ]);
  assert.equal(issued.code, 0, issued.stderr);
  const ca = join(certs, 'ca.pem');
  const files = (name: string) => ({ ca, cert: join(certs, `${name}.pem`), key: join(certs, `${name}.key`) });
  const server = await startServer(files('server'));

  assert.deepEqual(payments(await pay(server.port, files('client'), [3, 4])), [
    { client: 'spiffe://sigil.internal/client/client', amount: 3, total: 3 },
    { client: 'spiffe://sigil.internal/client/client', amount: 4, total: 7 },
  ]);
  assert.deepEqual(payments(await pay(server.port, files('bob'), [50])), [
    { client: 'spiffe://sigil.internal/client/bob', amount: 50, total: 50 },
  ]);
  assert.deepEqual(payments(await pay(server.port, files('client'), [1])), [
    { client: 'spiffe://sigil.internal/client/client', amount: 1, total: 8 },
  ]);
  const stopped = await server.stop();
  assert.equal(stopped.code, 0, stopped.stderr);
});

test("casino README: its page of openssl commands is openssl-pki.sh's, the script the test above runs", () => {
  const script = readFileSync(example('openssl-pki.sh'), 'utf8');
  const commands = script.slice(script.indexOf('# 1. The root CA')).trimEnd();
  assert.ok(commands.length > 0);
  assert.ok(
    readFileSync(example('README.md'), 'utf8').includes(commands),
    'README.md and openssl-pki.sh differ',
  );
});
