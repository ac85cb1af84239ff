// firebuild's bootstrap service and its guest client over real mutual TLS on
// 127.0.0.1, with a real build context (a temporary directory) behind a small
// resolver: the whole conversation of a build, then every refusal — a wrong
// or missing first call, calls after the end, unknown and escaping paths, a
// corrupted chunk, and client certificates that are foreign, expired or absent.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, writeFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { invalid } from '../../src/errors.ts';
import {
  type CommandsResponse,
  type ResourceChunk,
  RootfsServerClient,
  RootfsServerService,
} from '../../src/gen/firebuild/proto/rootfs_server.ts';
import { BootstrapClient } from '../../src/guest/bootstrap-client.ts';
import {
  type BootstrapCredentials,
  bootstrapMetadata,
  createBootstrapCredentials,
} from '../../src/guest/bootstrap-credentials.ts';
import {
  type BootstrapEvents,
  type BootstrapService,
  type BootstrapServiceOptions,
  startBootstrapService,
} from '../../src/guest/bootstrap-service.ts';
import {
  type BuildCommand,
  type ResourceEntry,
  type ResourceResolver,
  serializeBuildCommand,
} from '../../src/guest/build-commands.ts';
import { chunkSizeFor, ResourceAssembler } from '../../src/guest/resource-chunks.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { eventually } from '../support/eventually.ts';
import { findPythonInterpreters, needPeer, openPeer, PeerUnavailableError } from '../support/peers.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SERVER_NAME = 'vmm-bootstrap-test';
/** Small messages, so a modest file needs several chunks. */
const MAX_MESSAGE_BYTES = 64 * 1024;
const CHUNK_BYTES = chunkSizeFor(MAX_MESSAGE_BYTES);
const LONG_WAIT_MS = 120_000;

const workdir = { OriginalCommand: '', Value: '/' };
const root = { OriginalCommand: '', Value: '0:0' };
const COMMANDS: BuildCommand[] = [
  {
    kind: 'run',
    command: {
      OriginalCommand: 'RUN echo "$GREETING"',
      Args: {},
      Command: 'echo "$GREETING"',
      Env: { GREETING: 'hello' },
      Shell: { OriginalCommand: '', Commands: ['/bin/sh', '-c'] },
      Workdir: workdir,
      User: root,
    },
  },
  {
    kind: 'copy',
    command: {
      OriginalCommand: 'COPY site /app/site',
      OriginalSource: 'site',
      Source: 'site',
      Target: '/app/site',
      Workdir: workdir,
      User: root,
      UserFromLocalChown: null,
      Stage: '',
    },
  },
];

// ---------------------------------------------------------------------------
// a build context on disk and a resolver for it

interface BuildContext {
  readonly dir: string;
  readonly big: Buffer;
}

function makeBuildContext(): BuildContext {
  const dir = tempDir('sigil-bootstrap-');
  const big = randomBytes(2 * CHUNK_BYTES + 1234);
  writeFileSync(join(dir, 'big.bin'), big, { mode: 0o640 });
  mkdirSync(join(dir, 'site', 'css'), { recursive: true, mode: 0o755 });
  writeFileSync(join(dir, 'site', 'index.html'), '<h1>hi</h1>\n', { mode: 0o644 });
  writeFileSync(join(dir, 'site', 'css', 'a.css'), 'h1 { color: red }\n', { mode: 0o600 });
  return { dir, big };
}

/** The build context at `dir`: a file is one entry, a directory itself then everything under it, sorted. */
function contextResolver(dir: string): ResourceResolver {
  return async (path, stage) => {
    if (stage !== '') return null;
    const relative = posix.normalize(path).replace(/^\/+/, '');
    if (relative === '..' || relative.startsWith('../'))
      throw invalid(`resource path '${path}' leaves the build context`);
    const entryOf = async (name: string): Promise<ResourceEntry> => {
      const info = await stat(join(dir, name));
      return {
        sourcePath: name,
        targetPath: posix.join('/app', name),
        fileMode: info.mode & 0o777,
        isDir: info.isDirectory(),
        targetUser: '0:0',
        targetWorkdir: '/',
        ...(info.isDirectory() ? {} : { read: () => createReadStream(join(dir, name)) }),
      };
    };
    let top: ResourceEntry;
    try {
      top = await entryOf(relative);
    } catch {
      return null;
    }
    if (!top.isDir) return [top];
    const below = (await readdir(join(dir, relative), { recursive: true })).sort();
    return [top, ...(await Promise.all(below.map((name) => entryOf(posix.join(relative, name)))))];
  };
}

// ---------------------------------------------------------------------------
// starting things, always stopped after the test

interface Started {
  readonly service: BootstrapService;
  readonly credentials: BootstrapCredentials;
  readonly context: BuildContext;
  readonly seen: { [K in keyof BootstrapEvents]: BootstrapEvents[K][0][] };
  /** True once `done` settled. */
  settled(): boolean;
}

async function startService(
  t: TestContext,
  overrides: Partial<BootstrapServiceOptions> & { credentials?: BootstrapCredentials } = {},
): Promise<Started> {
  const context = makeBuildContext();
  const credentials = overrides.credentials ?? createBootstrapCredentials({ serverName: SERVER_NAME });
  const service = await startBootstrapService({
    commands: COMMANDS,
    resources: contextResolver(context.dir),
    maxMessageBytes: MAX_MESSAGE_BYTES,
    firstCallTimeoutMs: LONG_WAIT_MS,
    gracefulStopMs: 1000,
    ...overrides,
    credentials,
  });
  t.after(() => service.stop());
  const seen = {
    'commands-requested': [],
    ping: [],
    stdout: [],
    stderr: [],
    aborted: [],
    success: [],
    'handshake-refused': [],
    'call-failed': [],
  } as unknown as Started['seen'];
  for (const name of Object.keys(seen) as (keyof BootstrapEvents)[]) {
    service.events.on(name, (...args: unknown[]) => (seen[name] as unknown[]).push(args[0] ?? {}));
  }
  let settled = false;
  void service.done.then(() => {
    settled = true;
  });
  return { service, credentials, context, seen, settled: () => settled };
}

function guestClient(t: TestContext, started: Started, credentials = started.credentials): BootstrapClient {
  const metadata = bootstrapMetadata(credentials, started.service.address);
  const client = BootstrapClient.connect({
    hostPort: metadata.HostPort,
    caChainPem: metadata.CAChain,
    certPem: metadata.Cert,
    keyPem: metadata.Key,
    serverName: metadata.ServerName,
  });
  t.after(() => client.close());
  return client;
}

/** A plain grpc-js client (not sigil's connector), to present whatever certificate a test needs. */
function rawClient(
  t: TestContext,
  address: string,
  presented: { roots: string; cert?: string; key?: string },
): RootfsServerClient {
  const credentials =
    presented.cert && presented.key
      ? grpc.credentials.createSsl(
          Buffer.from(presented.roots),
          Buffer.from(presented.key),
          Buffer.from(presented.cert),
        )
      : grpc.credentials.createSsl(Buffer.from(presented.roots));
  const client = new RootfsServerClient(address, credentials, {
    'grpc.ssl_target_name_override': SERVER_NAME,
  });
  t.after(() => client.close());
  return client;
}

function rawCommands(client: RootfsServerClient): Promise<grpc.ServiceError | CommandsResponse> {
  return new Promise((resolve) => {
    client.commands({}, new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (error, response) =>
      resolve(error ?? response),
    );
  });
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

const isServiceError = (value: unknown): value is grpc.ServiceError =>
  value instanceof Error && typeof (value as grpc.ServiceError).code === 'number';

/** A refused handshake: the call fails UNAVAILABLE, the service names why, and the build goes on untouched. */
async function assertHandshakeRefused(
  t: TestContext,
  started: Started,
  client: RootfsServerClient,
  reason: RegExp,
) {
  const result = await rawCommands(client);
  assert.ok(isServiceError(result), 'the call went through');
  assert.equal(result.code, grpc.status.UNAVAILABLE, result.details);
  const refused = await eventually('the handshake refusal', () => started.seen['handshake-refused'][0]);
  assert.match(refused.reason, reason);
  assert.equal(started.seen['commands-requested'].length, 0);
  assert.equal(started.settled(), false);
  // The build's own guest still gets in afterwards.
  assert.equal((await guestClient(t, started).commands()).length, COMMANDS.length);
}

// ---------------------------------------------------------------------------
// the conversation of a build

test('a build: commands, ping, a file of several chunks, a directory, output, success', async (t) => {
  const started = await startService(t);
  const { service, context, seen } = started;
  const client = guestClient(t, started);

  assert.deepEqual(await client.commands(), COMMANDS);
  assert.equal(seen['commands-requested'].length, 1);
  await client.ping();
  assert.equal(seen.ping.length, 1);

  assert.ok(context.big.length > CHUNK_BYTES);
  const [file, ...more] = await collect(client.resource('big.bin', ''));
  assert.equal(more.length, 0);
  assert.equal(file.header.sourcePath, 'big.bin');
  assert.equal(file.header.targetPath, '/app/big.bin');
  assert.equal(file.header.fileMode, 0o640);
  assert.equal(file.header.isDir, false);
  assert.equal(file.header.targetUser, '0:0');
  assert.equal(file.header.targetWorkdir, '/');
  assert.match(file.header.id, /^[0-9a-f-]{36}$/);
  assert.ok(file.data.equals(context.big), 'the file arrived changed');

  const site = await collect(client.resource('site', ''));
  assert.deepEqual(
    site.map((entry) => [
      entry.header.sourcePath,
      entry.header.isDir,
      entry.header.fileMode,
      entry.data.toString(),
    ]),
    [
      ['site', true, 0o755, ''],
      ['site/css', true, 0o755, ''],
      ['site/css/a.css', false, 0o600, 'h1 { color: red }\n'],
      ['site/index.html', false, 0o644, '<h1>hi</h1>\n'],
    ],
  );
  assert.equal(
    new Set(site.map((entry) => entry.header.id)).size,
    site.length,
    'ids are not fresh per entry',
  );

  await client.stdout(['step 1/2', 'hello']);
  await client.stderr(['warning: none']);
  assert.deepEqual(seen.stdout, [{ lines: ['step 1/2', 'hello'] }]);
  assert.deepEqual(seen.stderr, [{ lines: ['warning: none'] }]);

  await client.success();
  assert.deepEqual(await service.done, { ok: true });
  assert.equal(seen.success.length, 1);
  // The build is over: nothing more is served.
  await assert.rejects(client.ping(), refusal('failed_precondition', /stopped/));
  assert.equal(seen.ping.length, 1);
});

test('a file is sent in chunks of at most 90 % of the largest message, each with its SHA-256', async (t) => {
  const started = await startService(t);
  const { credentials, context } = started;
  assert.equal((await guestClient(t, started).commands()).length, COMMANDS.length);
  const client = rawClient(t, started.service.address, {
    roots: credentials.caChainPem,
    cert: credentials.client.certificateChain,
    key: credentials.client.privateKey,
  });
  const messages: ResourceChunk[] = await collect(client.resource({ path: 'big.bin', stage: '' }));
  const cases = messages.map((message) => message.payload?.$case);
  assert.deepEqual(cases, ['header', 'chunk', 'chunk', 'chunk', 'eof']);
  const chunks = messages.flatMap((m) => (m.payload?.$case === 'chunk' ? [m.payload.value] : []));
  for (const chunk of chunks) {
    assert.ok(chunk.chunk.length <= CHUNK_BYTES);
    assert.ok(createHash('sha256').update(chunk.chunk).digest().equals(chunk.checksum));
  }
  assert.ok(Buffer.concat(chunks.map((c) => c.chunk)).equals(context.big));
});

test('a guest that aborts fails the build with its reason, and is served no more', async (t) => {
  const started = await startService(t);
  const client = guestClient(t, started);
  await client.commands();
  await client.abort('RUN exited with 2\nmore detail');
  const outcome = await started.service.done;
  assert.equal(outcome.ok, false);
  assert.match(outcome.ok ? '' : outcome.error.message, /^the guest aborted the build: RUN exited with 2$/);
  assert.deepEqual(started.seen.aborted, [{ error: 'RUN exited with 2\nmore detail' }]);
  await assert.rejects(client.stdout(['late']), refusal('failed_precondition', /stopped/));
  assert.deepEqual(started.seen.stdout, []);
});

// ---------------------------------------------------------------------------
// refusals of the build's own guest

test('refused: a first call other than Commands fails the build', async (t) => {
  const started = await startService(t);
  const client = guestClient(t, started);
  await assert.rejects(
    client.ping(),
    refusal('failed_precondition', /first call must be Commands, not Ping/),
  );
  const outcome = await started.service.done;
  assert.equal(outcome.ok, false);
  assert.match(outcome.ok ? '' : outcome.error.message, /first call was Ping, not Commands/);
  // Nothing is served after that, Commands included.
  await assert.rejects(client.commands(), refusal('failed_precondition', /stopped/));
  assert.equal(started.seen['commands-requested'].length, 0);
  assert.equal(started.seen.ping.length, 0);
});

test('refused: no call within the first-call timeout fails the build', async (t) => {
  const started = await startService(t, { firstCallTimeoutMs: 200 });
  const outcome = await started.service.done;
  assert.equal(outcome.ok, false);
  assert.match(outcome.ok ? '' : outcome.error.message, /no Commands call within 200 ms/);
  await assert.rejects(guestClient(t, started).commands(), refusal('failed_precondition', /stopped/));
  assert.equal(started.seen['commands-requested'].length, 0);
});

test('refused: every call after stop()', async (t) => {
  const started = await startService(t);
  const client = guestClient(t, started);
  await client.commands();
  await started.service.stop();
  const outcome = await started.service.done;
  assert.equal(outcome.ok, false);
  assert.match(outcome.ok ? '' : outcome.error.message, /stopped before the build finished/);
  const calls: [string, () => Promise<unknown>][] = [
    ['Commands', () => client.commands()],
    ['Ping', () => client.ping()],
    ['Resource', () => collect(client.resource('big.bin', ''))],
    ['StdOut', () => client.stdout(['x'])],
    ['StdErr', () => client.stderr(['x'])],
    ['Abort', () => client.abort('x')],
    ['Success', () => client.success()],
  ];
  for (const [name, call] of calls) {
    await assert.rejects(call(), (error: unknown) => {
      assert.ok(error instanceof Error);
      const { status } = error as { status?: number };
      assert.ok(
        status === grpc.status.UNAVAILABLE || status === grpc.status.FAILED_PRECONDITION,
        `${name}: ${error.message}`,
      );
      return true;
    });
  }
  assert.equal(started.seen['commands-requested'].length, 1);
  assert.deepEqual([started.seen.ping, started.seen.stdout, started.seen.success], [[], [], []]);
});

test('refused: an unknown resource is NOT_FOUND and a path leaving the context INVALID_ARGUMENT', async (t) => {
  const started = await startService(t);
  const client = guestClient(t, started);
  await client.commands();
  await assert.rejects(
    collect(client.resource('missing.txt', 'builder')),
    refusal('not_found', /^not found: 'builder\/missing\.txt'$/),
  );
  await assert.rejects(collect(client.resource('nope', '')), refusal('not_found', /^not found: '\/nope'$/));
  await assert.rejects(
    collect(client.resource('../etc/passwd', '')),
    refusal('invalid_argument', /'\.\.\/etc\/passwd' leaves the build context/),
  );
  // The build goes on.
  await client.ping();
  assert.equal(started.settled(), false);
});

test('refused: a message larger than maxMessageBytes, and commands that do not fit in one', async (t) => {
  const started = await startService(t);
  const client = guestClient(t, started);
  await client.commands();
  await assert.rejects(client.stdout(['x'.repeat(MAX_MESSAGE_BYTES + 1)]), (error: unknown) => {
    assert.equal((error as { status?: number }).status, grpc.status.RESOURCE_EXHAUSTED, String(error));
    return true;
  });
  assert.deepEqual(started.seen.stdout, []);
  await client.stdout(['fits']);
  assert.deepEqual(started.seen.stdout, [{ lines: ['fits'] }]);

  const context = makeBuildContext();
  await assert.rejects(
    startBootstrapService({
      commands: COMMANDS,
      resources: contextResolver(context.dir),
      credentials: started.credentials,
      maxMessageBytes: 64,
    }),
    refusal(
      'invalid_argument',
      /the build's 2 commands take \d+ bytes, more than one message may hold \(64\)/,
    ),
  );
});

/** A grpc-js server of this proto that sigil did not write, for answers the real service never gives. */
async function misbehavingServer(
  t: TestContext,
  credentials: BootstrapCredentials,
  implementation: Record<string, unknown>,
): Promise<BootstrapClient> {
  const server = new grpc.Server();
  server.addService(RootfsServerService, implementation as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(
        Buffer.from(credentials.caChainPem),
        [
          {
            cert_chain: Buffer.from(credentials.server.certificateChain),
            private_key: Buffer.from(credentials.server.privateKey),
          },
        ],
        true,
      ),
      (error, bound) => (error ? reject(error) : resolve(bound)),
    ),
  );
  t.after(() => server.forceShutdown());
  const client = BootstrapClient.connect({
    hostPort: `127.0.0.1:${port}`,
    caChainPem: credentials.caChainPem,
    certPem: credentials.client.certificateChain,
    keyPem: credentials.client.privateKey,
    serverName: credentials.serverName,
  });
  t.after(() => client.close());
  return client;
}

test('refused by the client: a chunk whose checksum does not match', async (t) => {
  const credentials = createBootstrapCredentials({ serverName: SERVER_NAME });
  // A server that flips a byte after checksumming.
  const client = await misbehavingServer(t, credentials, {
    resource: (call: grpc.ServerWritableStream<unknown, ResourceChunk>) => {
      const chunk = Buffer.from('the real contents');
      const checksum = createHash('sha256').update(chunk).digest();
      chunk[0] ^= 1;
      const id = 'f0e1d2c3-0000-4000-8000-000000000001';
      const header = {
        sourcePath: 'app.conf',
        targetPath: '/etc/app.conf',
        fileMode: 0o644,
        isDir: false,
        targetUser: '0:0',
        targetWorkdir: '/',
        id,
      };
      call.write({ payload: { $case: 'header', value: header } });
      call.write({ payload: { $case: 'chunk', value: { chunk, checksum, id } } });
      call.write({ payload: { $case: 'eof', value: { id } } });
      call.end();
    },
  });
  const received: unknown[] = [];
  await assert.rejects(
    (async () => {
      for await (const entry of client.resource('app.conf', '')) received.push(entry);
    })(),
    refusal('invalid_argument', /resource 'app\.conf': a chunk of 'app\.conf' does not match its SHA-256/),
  );
  assert.deepEqual(received, []);
});

test('refused by the client: a ping answered with another id', async (t) => {
  const credentials = createBootstrapCredentials({ serverName: SERVER_NAME });
  const asked: string[] = [];
  const client = await misbehavingServer(t, credentials, {
    ping: (call: grpc.ServerUnaryCall<{ id: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      asked.push(call.request.id);
      callback(null, { id: 'someone-else' });
    },
  });
  await assert.rejects(
    client.ping(),
    refusal('invalid_argument', /answered ping [0-9a-f-]{36} with id 'someone-else'/),
  );
  assert.equal(asked.length, 1);
});

test('refused by the client: a server that is not of the guest’s build CA', async (t) => {
  const started = await startService(t);
  const other = createBootstrapCredentials({ serverName: SERVER_NAME });
  const client = guestClient(t, started, other);
  await assert.rejects(
    client.commands(),
    refusal('internal', /refused the certificate of the server at 127\.0\.0\.1:\d+/),
  );
  assert.equal(started.seen['commands-requested'].length, 0);
  assert.equal(started.settled(), false);
});

// ---------------------------------------------------------------------------
// refusals at the handshake

test('refused at the handshake: a client certificate of another build’s CA', async (t) => {
  const started = await startService(t);
  const other = createBootstrapCredentials({ serverName: SERVER_NAME });
  const client = rawClient(t, started.service.address, {
    roots: started.credentials.caChainPem,
    cert: other.client.certificateChain,
    key: other.client.privateKey,
  });
  await assertHandshakeRefused(
    t,
    started,
    client,
    /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/,
  );
});

test('refused at the handshake: an expired client certificate', async (t) => {
  // A build CA that started a day ago, so it can have issued a client certificate that has since expired.
  const hour = 3_600_000;
  const dayAgo = new Date(Date.now() - 24 * hour);
  const rootKeys = generateKeyPair('p256');
  const rootCertificate = createRootCertificate({
    privateKey: rootKeys.privateKey,
    subject: { commonName: 'expired-test build CA' },
    ttlMs: 48 * hour,
    now: dayAgo,
  });
  const rootPem = encodePem('CERTIFICATE', rootCertificate.der);
  const ca = EmbeddedCA.create({
    addresses: [SERVER_NAME],
    ca: { certificate: rootPem, privateKey: privateKeyToPem(rootKeys.privateKey) },
    leafTtl: '5m',
  });
  t.after(() => ca.close());
  const server = ca.issueServer();
  const fresh = ca.issueClient('vminit');
  const credentials: BootstrapCredentials = {
    serverName: SERVER_NAME,
    caChainPem: ca.chainPem(),
    server: server,
    client: fresh,
    notAfter: server.notAfter,
  };
  const clientKeys = generateKeyPair('p256');
  const expired = Issuer.fromIssued(rootCertificate, rootKeys.privateKey).issue({
    publicKey: clientKeys.publicKey,
    profile: 'client',
    subject: { commonName: 'vminit' },
    sans: [uriName('spiffe://sigil.internal/client/vminit')],
    ttlMs: hour,
    now: new Date(Date.now() - 2 * hour),
  });
  assert.ok(expired.notAfter.getTime() < Date.now());
  const expiredPem = encodePem('CERTIFICATE', expired.der);
  const expiredKey = privateKeyToPem(clientKeys.privateKey);

  const started = await startService(t, { credentials });
  // sigil's own client will not even present it.
  assert.throws(
    () =>
      BootstrapClient.connect({
        hostPort: started.service.address,
        caChainPem: credentials.caChainPem,
        certPem: expiredPem,
        keyPem: expiredKey,
        serverName: SERVER_NAME,
      }),
    refusal(null, /expired/),
  );
  const client = rawClient(t, started.service.address, {
    roots: credentials.caChainPem,
    cert: expiredPem,
    key: expiredKey,
  });
  await assertHandshakeRefused(t, started, client, /^CERT_HAS_EXPIRED$/);
});

test('refused at the handshake: a client without a certificate', async (t) => {
  const started = await startService(t);
  const client = rawClient(t, started.service.address, { roots: started.credentials.caChainPem });
  await assertHandshakeRefused(t, started, client, /^ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE$/);
});

// ---------------------------------------------------------------------------
// a peer sigil did not write

test('peer: a Python grpcio client calls Commands and Ping over mutual TLS', async (t) => {
  const opened = await openPeer(async () => {
    const found = (await findPythonInterpreters()).find((python) => python.grpcio !== null);
    if (!found)
      throw new PeerUnavailableError(
        'grpcio',
        'no Python with grpcio: install python3-grpcio (and python3-grpc-tools for stubs generated from the proto)',
      );
    return found;
  });
  const python = needPeer(t, opened);
  if (!python) return;
  const started = await startService(t);
  const { credentials } = started;
  const child: ChildProcess = spawn(
    python.executable,
    [join(repoRoot, 'test/guest/peers/rootfs_client.py')],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
  });
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  child.stdin?.end(
    JSON.stringify({
      target: started.service.address,
      serverName: credentials.serverName,
      roots: credentials.caChainPem,
      cert: credentials.client.certificateChain,
      key: credentials.client.privateKey,
      proto: join(repoRoot, 'proto-firebuild'),
      pingId: 'python-ping-1',
    }),
  );
  assert.equal(await exited, 0, stderr);
  const answer = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
    mode?: string;
    modeReason?: string;
    commands?: string[];
    pingId?: string;
    error?: unknown;
  };
  t.diagnostic(
    `python ${python.python}, grpcio ${python.grpcio}, stubs: ${answer.mode} ${answer.modeReason ?? ''}`,
  );
  assert.equal(answer.error, undefined, JSON.stringify(answer.error));
  assert.deepEqual(answer.commands, COMMANDS.map(serializeBuildCommand));
  assert.equal(answer.pingId, 'python-ping-1');
  assert.equal(started.seen['commands-requested'].length, 1);
  assert.deepEqual(started.seen.ping, [{ id: 'python-ping-1' }]);
});

test('refused by the client: chunks under another entry’s id, data for a directory, a stream ending inside an entry', () => {
  const id = 'a0000000-0000-4000-8000-000000000001';
  const header = (isDir: boolean): ResourceChunk => ({
    payload: {
      $case: 'header',
      value: {
        sourcePath: 'x',
        targetPath: '/x',
        fileMode: 0o644,
        isDir,
        targetUser: '',
        targetWorkdir: '/',
        id,
      },
    },
  });
  const chunk = (chunkId: string): ResourceChunk => {
    const bytes = Buffer.from('data');
    return {
      payload: {
        $case: 'chunk',
        value: { chunk: bytes, checksum: createHash('sha256').update(bytes).digest(), id: chunkId },
      },
    };
  };
  const foreign = new ResourceAssembler('x');
  foreign.accept(header(false));
  assert.throws(
    () => foreign.accept(chunk('b0000000-0000-4000-8000-000000000002')),
    refusal('invalid_argument', /a chunk with id 'b0000000/),
  );
  const directory = new ResourceAssembler('x');
  directory.accept(header(true));
  assert.throws(() => directory.accept(chunk(id)), refusal('invalid_argument', /data for directory 'x'/));
  const cut = new ResourceAssembler('x');
  cut.accept(header(false));
  assert.equal(cut.accept(chunk(id)), null);
  assert.throws(() => cut.finish(), refusal('invalid_argument', /resource 'x': the stream ended inside 'x'/));
  const orphan = new ResourceAssembler('x');
  assert.throws(
    () => orphan.accept({ payload: { $case: 'eof', value: { id } } }),
    refusal('invalid_argument', /an eof before any header/),
  );
});
