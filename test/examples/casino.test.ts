// The mTLS-for-gRPC tutorial, working: the Casino example run as a user would
// run it, in both variants. Servers and clients are real processes on
// 127.0.0.1; the files variant runs once with a PKI made by the openssl CLI
// (interop with outside tools) and once with `sigil pki quickstart`.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { type RunResult, repoRoot, run, sigil, start } from '../support/cli.ts';
import { tempDir } from '../support/temp-dir.ts';

const example = (file: string) => join(repoRoot, 'examples', 'casino', file);

/** The example's own environment variables (CASINO_*) and sigil's are not inherited. */
const CLEAN = { dropPrefixes: ['CASINO_', 'SIGIL_'] };

function runExample(command: string, args: readonly string[]): Promise<RunResult> {
  return run(command, args, { ...CLEAN, timeoutMs: 60_000 });
}

/** One JSON line per payment, as the example clients print them. */
interface Payment {
  readonly client: string;
  readonly amount: number;
  readonly total: number;
}

function payments(result: RunResult): Payment[] {
  assert.equal(result.code, 0, `the client failed: ${result.stderr}`);
  return result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Payment);
}

interface RunningServer {
  readonly port: number;
  /** SIGTERM, then what the server printed and its exit code. */
  stop(): Promise<RunResult>;
}

/** Starts examples/casino/server.ts on a free port and waits until it is listening. */
async function startServer(files: { ca: string; cert: string; key: string }): Promise<RunningServer> {
  const server = start(
    process.execPath,
    [example('server.ts'), '--ca', files.ca, '--cert', files.cert, '--key', files.key, '--port', '0'],
    CLEAN,
  );
  await server.printed('casino listening on 127.0.0.1:', 'stdout');
  const port = Number(/casino listening on 127\.0\.0\.1:(\d+)/.exec(server.stdout())?.[1]);
  return {
    port,
    stop: () => {
      server.child.kill('SIGTERM');
      return server.result;
    },
  };
}

function pay(
  port: number,
  files: { ca: string; cert: string; key: string },
  amounts: readonly number[],
): Promise<RunResult> {
  return runExample(process.execPath, [
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
  const result = await runExample(process.execPath, [example('embedded.ts')]);
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
  const made = await runExample('sh', [example('openssl-pki.sh'), dir]);
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
