// vminit end to end against the real metadata service on 127.0.0.1 (session
// tokens required), with an in-process peer standing in for the bootstrap
// service's client: firebuild's exit codes 0 (a build of RUN, COPY and ADD
// succeeds; normal mode writes its files), 1 (no service, a refused token,
// an answer that is not JSON), 2 (a RUN fails and Abort carries its message;
// a missing resource; no connection) and 3 (an injector fails). Then the real
// `sigil vminit` command, whose exit status is vminit's.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { type BuildCommand, parseBuildCommand } from '../../src/guest/build-commands.ts';
import type { BootstrapClientOptions, BootstrapPeer } from '../../src/guest/guest-bootstrap.ts';
import { DEFAULT_INJECTOR_PATHS } from '../../src/guest/guest-injectors.ts';
import type { BootstrapMetadata, MetadataDocument } from '../../src/guest/metadata-document.ts';
import { type MetadataServiceOptions, startMetadataService } from '../../src/guest/metadata-server.ts';
import type { ReceivedResource } from '../../src/guest/resource-deployer.ts';
import { runVminit, type VminitOptions } from '../../src/guest/vminit.ts';
import { run, SIGIL_BIN } from '../support/cli.ts';

const SECRET_KEY = '-----BEGIN PRIVATE KEY-----\nTHIS-IS-THE-SECRET-KEY\n-----END PRIVATE KEY-----\n';

function scratch(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-vminit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function bootstrapSection(): BootstrapMetadata {
  return {
    HostPort: '127.0.0.1:7',
    CAChain: '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n',
    Cert: '-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n',
    Key: SECRET_KEY,
    ServerName: 'vmm-build-1',
    PingInterval: '50ms',
  };
}

function documentWith(fields: Partial<MetadataDocument> = {}): MetadataDocument {
  return {
    VMMID: 'vmm-build-1',
    Drives: {},
    EntrypointJSON: JSON.stringify({
      Cmd: ['serve'],
      EntryPoint: [],
      Env: {},
      Shell: [],
      User: '',
      Workdir: '/',
    }),
    Env: { GREETING: 'hello' },
    LocalHostname: 'guest-1',
    ImageTag: 'acme/web:1',
    Machine: { CPU: '1', CPUTemplate: '', HTEnabled: 'false', KernelArgs: '', Mem: '128', VMLinux: '' },
    Network: { CniNetworkName: 'br0', Interfaces: {} },
    Users: {},
    ...fields,
  };
}

/** The metadata service answering `document` to 127.0.0.1, closed after the test. */
async function serve(
  t: TestContext,
  document: MetadataDocument,
  extra: Partial<MetadataServiceOptions> = {},
) {
  const service = await startMetadataService('127.0.0.1', 0, { documentFor: () => document, ...extra });
  t.after(() => service.close());
  return service;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const command = (json: Record<string, unknown>, index = 0): BuildCommand =>
  parseBuildCommand(JSON.stringify(json), index);

const runCommand = (text: string, workdir: string, env: Record<string, string> = {}): BuildCommand =>
  command({
    OriginalCommand: `RUN ${text}`,
    Args: {},
    Command: text,
    Env: env,
    Shell: { Commands: ['/bin/sh', '-c'] },
    Workdir: { Value: workdir },
    User: { Value: '0:0' },
  });

const copyCommand = (source: string, target: string, keyword = 'COPY'): BuildCommand =>
  command({
    OriginalCommand: `${keyword} ${source} ${target}`,
    OriginalSource: source,
    Source: source,
    Target: target,
    Workdir: { Value: '/' },
    User: { Value: '0:0' },
    Stage: '',
  });

/** The bootstrap service's client, in process: serves commands and resources, records every call. */
class FakePeer implements BootstrapPeer {
  readonly calls: string[] = [];
  readonly out: string[] = [];
  readonly err: string[] = [];
  readonly aborted: string[] = [];
  pings = 0;
  closed = false;
  readonly #commands: BuildCommand[];
  readonly #resources: Record<string, ReceivedResource[]>;
  readonly #onPing: () => void;

  constructor(
    commands: BuildCommand[],
    resources: Record<string, ReceivedResource[]> = {},
    onPing = () => {},
  ) {
    this.#commands = commands;
    this.#resources = resources;
    this.#onPing = onPing;
  }

  async commands(): Promise<BuildCommand[]> {
    this.calls.push('commands');
    return this.#commands;
  }
  async ping(): Promise<void> {
    this.pings += 1;
    this.#onPing();
  }
  async *resource(path: string, stage: string): AsyncIterable<ReceivedResource> {
    this.calls.push(`resource ${stage}:${path}`);
    yield* this.#resources[path] ?? [];
  }
  async stdout(lines: string[]): Promise<void> {
    this.out.push(...lines);
  }
  async stderr(lines: string[]): Promise<void> {
    this.err.push(...lines);
  }
  async abort(error: string): Promise<void> {
    this.calls.push('abort');
    this.aborted.push(error);
  }
  async success(): Promise<void> {
    this.calls.push('success');
  }
  close(): void {
    this.closed = true;
  }
}

function fileEntry(
  sourcePath: string,
  targetPath: string,
  content: string,
  fileMode = 0o644,
): ReceivedResource {
  return {
    header: {
      id: sourcePath,
      sourcePath,
      targetPath,
      fileMode,
      isDir: false,
      targetUser: '0:0',
      targetWorkdir: '/',
    },
    data: Buffer.from(content),
  };
}

function options(
  port: number,
  root: string,
  extra: Partial<VminitOptions> = {},
): VminitOptions & { lines: string[] } {
  const lines: string[] = [];
  return {
    metadata: { host: '127.0.0.1', port, path: 'latest/meta-data' },
    paths: DEFAULT_INJECTOR_PATHS,
    root,
    log: (line) => lines.push(line),
    lines,
    ...extra,
  };
}

describe('vminit, bootstrap mode', () => {
  test('exit 0: connects with the metadata, pings, runs RUN, COPY and ADD in order, reports Success', async (t) => {
    const root = scratch(t);
    const workdir = scratch(t);
    const service = await serve(t, documentWith({ Bootstrap: bootstrapSection() }));
    // The RUN waits for a ping, so the test shows pinging during the build without measuring time.
    const peer = new FakePeer(
      [
        runCommand(
          `echo "$GREETING from run" > built.txt; echo ran; i=0; while [ ! -f pinged ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; test -f pinged`,
          workdir,
          {
            GREETING: 'hello',
          },
        ),
        copyCommand('app.conf', '/etc/app/'),
        copyCommand('notes.txt', '/notes.txt', 'ADD'),
      ],
      {
        'app.conf': [fileEntry('app.conf', '/etc/app/', 'key=value\n', 0o600)],
        'notes.txt': [fileEntry('notes.txt', '/notes.txt', 'notes\n')],
      },
      () => writeFileSync(join(workdir, 'pinged'), ''),
    );
    const connected: BootstrapClientOptions[] = [];
    const settings = options(service.port, root, {
      connect: (clientOptions) => {
        connected.push(clientOptions);
        return peer;
      },
    });
    const outcome = await runVminit(settings);
    assert.deepEqual(outcome, { exitCode: 0, mode: 'bootstrap', commands: 3 });
    const section = bootstrapSection();
    assert.deepEqual(connected, [
      {
        hostPort: section.HostPort,
        caChainPem: section.CAChain,
        certPem: section.Cert,
        keyPem: section.Key,
        serverName: section.ServerName,
      },
    ]);
    assert.deepEqual(peer.calls, ['commands', 'resource :app.conf', 'resource :notes.txt', 'success']);
    assert.deepEqual(peer.out, ['ran']);
    assert.ok(peer.pings >= 1);
    assert.equal(peer.closed, true);
    assert.equal(readFileSync(join(workdir, 'built.txt'), 'utf8'), 'hello from run\n');
    assert.equal(readFileSync(join(root, 'etc/app/app.conf'), 'utf8'), 'key=value\n');
    assert.equal(readFileSync(join(root, 'notes.txt'), 'utf8'), 'notes\n');
    assert.equal(settings.lines.join('\n').includes('THIS-IS-THE-SECRET-KEY'), false);
  });

  test('exit 2: a RUN that fails aborts the build with its message; nothing after it runs', async (t) => {
    const root = scratch(t);
    const workdir = scratch(t);
    const service = await serve(t, documentWith({ Bootstrap: bootstrapSection() }));
    const peer = new FakePeer(
      [runCommand('echo partial; echo oops >&2; exit 7', workdir), copyCommand('app.conf', '/etc/app/')],
      { 'app.conf': [fileEntry('app.conf', '/etc/app/', 'x')] },
    );
    const outcome = await runVminit(options(service.port, root, { connect: () => peer }));
    assert.deepEqual(outcome, { exitCode: 2, mode: 'bootstrap', error: 'command exited with code: 7' });
    assert.deepEqual(peer.calls, ['commands', 'abort']);
    assert.deepEqual(peer.aborted, ['command exited with code: 7']);
    assert.deepEqual([peer.out, peer.err], [['partial'], ['oops']]);
    assert.equal(peer.closed, true);
    assert.equal(existsSync(join(root, 'etc')), false);
  });

  test('exit 2: a COPY of something the service has nothing for aborts the build', async (t) => {
    const root = scratch(t);
    const service = await serve(t, documentWith({ Bootstrap: bootstrapSection() }));
    const peer = new FakePeer([copyCommand('missing.txt', '/x/')]);
    const outcome = await runVminit(options(service.port, root, { connect: () => peer }));
    assert.equal(outcome.exitCode, 2);
    assert.deepEqual(peer.aborted, ['nothing received for "missing.txt"']);
    assert.equal(peer.calls.includes('success'), false);
  });

  test('exit 2: the client cannot be made (bad certificate material); no Abort is possible, no key printed', async (t) => {
    const root = scratch(t);
    const service = await serve(t, documentWith({ Bootstrap: bootstrapSection() }));
    const settings = options(service.port, root, {
      connect: () => {
        throw new Error('the certificate and key do not match');
      },
    });
    const outcome = await runVminit(settings);
    assert.deepEqual(outcome, {
      exitCode: 2,
      mode: 'bootstrap',
      error: 'the certificate and key do not match',
    });
    assert.match(settings.lines.join('\n'), /cannot connect to 127\.0\.0\.1:7/);
    assert.equal(settings.lines.join('\n').includes('THIS-IS-THE-SECRET-KEY'), false);
  });
});

describe('vminit, reading the metadata', () => {
  test('exit 1: no metadata service', async (t) => {
    const root = scratch(t);
    const outcome = await runVminit(options(await closedPort(), root));
    assert.equal(outcome.exitCode, 1);
    assert.equal(outcome.mode, null);
    assert.match(outcome.error ?? '', /metadata service at 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
  });

  test('exit 1: the session token is refused (expired by the time it is used: 401); nothing written', async (t) => {
    const root = scratch(t);
    let clock = Date.now();
    // Every reading of the service's clock is an hour later than the last: the token expires before its first use.
    const service = await serve(t, documentWith(), { now: () => (clock += 3_600_000) });
    const outcome = await runVminit(options(service.port, root));
    assert.equal(outcome.exitCode, 1);
    assert.match(outcome.error ?? '', /the session token was refused \(HTTP 401\)/);
    assert.equal(existsSync(join(root, 'etc')), false);
  });

  test('exit 1: an answer that is not JSON, and a document whose Bootstrap lacks its key', async (t) => {
    const root = scratch(t);
    const server = createServer((request, response) => {
      if (request.method === 'PUT') response.end('a-token');
      else response.end('{"VMMID": "x", ');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const notJson = await runVminit(options((server.address() as AddressInfo).port, root));
    assert.deepEqual([notJson.exitCode, notJson.error], [1, 'metadata: the document is not JSON']);
    const service = await serve(t, documentWith({ Bootstrap: { ...bootstrapSection(), Key: '' } }));
    const noKey = await runVminit(
      options(service.port, root, { connect: () => assert.fail('must not connect') }),
    );
    assert.deepEqual([noKey.exitCode, noKey.error], [1, 'metadata: Bootstrap.Key is empty']);
  });
});

describe('vminit, normal mode', () => {
  test('exit 0: hostname, hosts, env file and entrypoint runner written from the metadata', async (t) => {
    const root = scratch(t);
    const service = await serve(t, documentWith());
    const outcome = await runVminit(options(service.port, root));
    assert.deepEqual(outcome, {
      exitCode: 0,
      mode: 'normal',
      written: [
        '/etc/profile.d/run-env.sh',
        '/etc/hostname',
        '/etc/hosts',
        '/usr/bin/firebuild-entrypoint.sh',
      ],
    });
    assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'guest-1\n');
    assert.equal(readFileSync(join(root, 'etc/profile.d/run-env.sh'), 'utf8'), 'export GREETING="hello"\n');
  });

  test('exit 3: an injector fails (a user with keys but no authorized_keys); nothing written', async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'etc'));
    const service = await serve(t, documentWith({ Users: { alice: { SSHKeys: 'ssh-ed25519 AAAA alice' } } }));
    const outcome = await runVminit(options(service.port, root));
    assert.deepEqual(outcome, {
      exitCode: 3,
      mode: 'normal',
      error: 'injecting SSH keys: /home/alice/.ssh/authorized_keys does not exist',
    });
    assert.equal(existsSync(join(root, 'etc/hostname')), false);
  });
});

describe('sigil vminit', () => {
  test('normal mode: exit 0 and the outcome as JSON; a closed port: exit 1 with the reason on stderr', async (t) => {
    const root = scratch(t);
    const service = await serve(t, documentWith());
    const common = ['vminit', '--guest-mmds-ip', '127.0.0.1', '--root', root];
    const ok = await run(process.execPath, [
      SIGIL_BIN,
      ...common,
      '--guest-mmds-port',
      String(service.port),
      '--json',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).mode, 'normal');
    assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'guest-1\n');
    const down = await run(process.execPath, [
      SIGIL_BIN,
      ...common,
      '--guest-mmds-port',
      String(await closedPort()),
    ]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^vminit: reading the metadata failed: metadata service at 127\.0\.0\.1:\d+/m);
  });

  test('bootstrap mode with certificate material the real client refuses: exit 2, the key never printed', async (t) => {
    const root = scratch(t);
    const service = await serve(t, documentWith({ Bootstrap: bootstrapSection() }));
    const result = await run(process.execPath, [
      SIGIL_BIN,
      'vminit',
      '--guest-mmds-ip',
      '127.0.0.1',
      '--guest-mmds-port',
      String(service.port),
      '--root',
      root,
    ]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /vminit: bootstrap failed/);
    assert.equal(`${result.stdout}${result.stderr}`.includes('THIS-IS-THE-SECRET-KEY'), false);
  });

  test('--print-flags: one `--flag value` a line, with the defaults', async () => {
    const result = await run(process.execPath, [SIGIL_BIN, 'vminit', '--print-flags']);
    assert.equal(result.code, 0);
    assert.equal(
      result.stdout,
      '--guest-mmds-ip 169.254.169.254\n--guest-mmds-port 80\n--metadata-path latest/meta-data\n' +
        '--path-authorized-keys-pattern /home/%s/.ssh/authorized_keys\n' +
        '--path-entrypoint-runner-file /usr/bin/firebuild-entrypoint.sh\n--path-env-file /etc/profile.d/run-env.sh\n' +
        '--path-hostname-file /etc/hostname\n--path-hosts-file /etc/hosts\n--root /\n',
    );
  });
});
