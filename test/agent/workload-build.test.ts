// `sigil build` against a real control plane and node daemon: the Dockerfile
// runs as a workload of the caller (sigil vminit inside, the guest runtime
// bound in, the bootstrap service reached over the bridge), the image lands in
// the node's store with an ext4 file and firebuild's metadata, and a workload
// runs from it. Refusals store nothing: an unsupported instruction, a caller
// over quota, a context entry that climbs out, and an owner revoked mid-build.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { before, describe, test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import type {
  BuildImageProgress,
  BuildImageRequest,
  WorkloadsClient,
} from '../../src/gen/sigil/v1/workloads.ts';
import { listImages, openImageStore } from '../../src/workloads/images.ts';
import { sigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { tempDir } from '../support/temp-dir.ts';
import { workloadsUnavailable } from '../workloads/rootfs-fixture.ts';
import { nodeFile } from './server-fixture.ts';
import {
  call,
  collect,
  createRequest,
  type DaemonHarness,
  IMAGE,
  startDaemonHarness,
} from './workload-daemon-fixture.ts';

const unavailable = workloadsUnavailable();
if (unavailable) console.log(`# skipped: ${unavailable}`);
const harness = unavailable
  ? undefined
  : await startDaemonHarness({
      bridges: ['br0=10.81.0.1/24'],
      networkNamespace: { create: `b${process.pid}-${randomBytes(3).toString('hex')}` },
    });

const DOCKERFILE = [
  `FROM ${IMAGE}`,
  'ENV GREETING=hello',
  'WORKDIR /app',
  'COPY site/ /srv/www/',
  'RUN echo "$GREETING from RUN" && mkdir -p /app/data',
  'RUN echo built > /app/data/marker',
  'RUN ls /srv/www',
  'CMD ["/bin/sh", "-c", "cat /app/data/marker"]',
].join('\n');

function contextWith(dockerfile: string): string {
  const dir = tempDir('sigil-build-context-');
  mkdirSync(join(dir, 'site'));
  writeFileSync(join(dir, 'site', 'index.html'), '<h1>hi</h1>\n');
  writeFileSync(join(dir, 'Dockerfile'), `${dockerfile}\n`);
  return dir;
}

/** A BuildImage call through the API: the messages, then the progress and the status it ends with. */
async function buildThroughApi(
  client: WorkloadsClient,
  messages: BuildImageRequest[],
  during?: (progress: BuildImageProgress[]) => Promise<void>,
): Promise<{ progress: BuildImageProgress[]; error: grpc.ServiceError | null }> {
  const stream = client.buildImage();
  const progress: BuildImageProgress[] = [];
  const ended = new Promise<grpc.ServiceError | null>((resolve) => {
    stream.on('data', (message: BuildImageProgress) => progress.push(message));
    stream.on('end', () => resolve(null));
    stream.on('error', (error: grpc.ServiceError) => resolve(error));
  });
  for (const message of messages) stream.write(message);
  stream.end();
  if (during) await during(progress);
  return { progress, error: await ended };
}

const header = (dockerfile: string, tag: string, memoryMib = 0): BuildImageRequest => ({
  part: {
    $case: 'header',
    value: {
      tag,
      dockerfile: Buffer.from(dockerfile),
      buildArgs: {},
      runtime: '',
      networks: [],
      memoryMib,
    },
  },
});

describe('sigil build on a node', { skip: unavailable ?? false }, () => {
  const h = harness as DaemonHarness;
  let alice: string;
  let node: string;
  const images = () => listImages(openImageStore(h.nodeDir)).map((image) => image.tag);

  before(async () => {
    alice = await h.delegate('alice', [
      '--permissions',
      'info,create,destroy,console,log',
      '--workloads',
      '2',
      '--memory',
      '1024',
      '--bridges',
      'br0',
      '--issuance-per-hour',
      '20',
    ]);
    node = nodeFile(h.nodeDir).nodeId;
    await h.daemon.settled;
  });

  test('builds ENV, WORKDIR, COPY and three RUNs on a busybox base; the image runs as a workload', async () => {
    const context = contextWith(DOCKERFILE);
    const result = await sigil([
      'build',
      '-t',
      'demo/site:1',
      '--node',
      node,
      '--identity',
      alice,
      '--json',
      context,
    ]);
    assert.equal(result.code, 0, result.stderr);
    const image = JSON.parse(result.stdout);
    assert.equal(image.tag, 'demo/site:1');
    assert.match(result.stderr, /command 2\/4: RUN echo "\$GREETING from RUN"/);
    assert.ok(images().includes('demo/site:1'));
    const stored = listImages(openImageStore(h.nodeDir)).find((entry) => entry.tag === 'demo/site:1');
    assert.ok(stored);
    assert.equal(readFileSync(join(stored.rootfs, 'srv/www/index.html'), 'utf8'), '<h1>hi</h1>\n');
    assert.equal(readFileSync(join(stored.rootfs, 'app/data/marker'), 'utf8'), 'built\n');
    assert.equal(
      existsSync(join(stored.rootfs, '.sigil')),
      false,
      'the guest runtime is not part of the image',
    );
    assert.ok(existsSync(join(dirname(stored.rootfs), 'rootfs.ext4')));
    const metadata = JSON.parse(readFileSync(join(dirname(stored.rootfs), 'metadata.json'), 'utf8'));
    assert.deepEqual(metadata.Image, { Org: 'demo', Image: 'site', Version: '1' });
    assert.equal(metadata.EntrypointInfo.Env.GREETING, 'hello');
    // No build workload is left, and its reservation is free again: two more workloads fit alice's quota of 2.
    const client = h.client(alice);
    assert.deepEqual((await call(client, client.listWorkloads, {})).workloads, []);
    const request = createRequest('site', {
      image: 'demo/site:1',
      command: ['/bin/sh', '-c', 'cat /app/data/marker /srv/www/index.html; exec sleep 1000'],
    });
    await call(client, client.createWorkload, request);
    await eventually('the workload prints what the build wrote', async () => {
      const { items } = await collect(
        client.readConsole({ name: 'site', sinceUnixMs: 0, lines: 0, follow: false }),
      );
      const lines = items.map((chunk) => Buffer.from(chunk.data).toString());
      return lines.includes('built') && lines.includes('<h1>hi</h1>');
    });
    await call(client, client.destroyWorkload, { name: 'site' });
  });

  test("a workload from the built image without a command runs its CMD: on a bridge through vminit's normal mode", async () => {
    const client = h.client(alice);
    // vminit is Node: give it room (64 MiB is enough for the CMD alone, not for Node).
    const fromImage = (name: string, networks: string[], memoryMib: number) =>
      createRequest(name, { image: 'demo/site:1', memoryMib, networks });
    const consoleOf = async (name: string) => {
      const { items } = await collect(client.readConsole({ name, sinceUnixMs: 0, lines: 0, follow: false }));
      return items.map((chunk) => Buffer.from(chunk.data).toString());
    };
    await call(client, client.createWorkload, fromImage('normal', ['br0'], 256));
    await call(client, client.createWorkload, fromImage('direct', [], 64));
    try {
      await eventually(
        'both ran the CMD',
        async () =>
          (await consoleOf('normal')).includes('built') && (await consoleOf('direct')).includes('built'),
      ).catch(async (error: Error) => {
        const normal = (await consoleOf('normal')).join(' | ');
        const direct = (await consoleOf('direct')).join(' | ');
        throw new Error(`${error.message}; normal: ${normal}; direct: ${direct}`);
      });
      const normal = await consoleOf('normal');
      assert.ok(
        normal.some((line) => line.includes('wrote /usr/bin/firebuild-entrypoint.sh')),
        `vminit wrote the runner: ${normal.join(' | ')}`,
      );
      assert.ok(normal.some((line) => line.includes('wrote /etc/hostname')));
      assert.ok(!(await consoleOf('direct')).some((line) => line.includes('firebuild-entrypoint')));
    } finally {
      await call(client, client.destroyWorkload, { name: 'normal' });
      await call(client, client.destroyWorkload, { name: 'direct' });
    }
  });

  test("another workload on the bridge cannot reach a build's bootstrap service: the router drops it unanswered", async () => {
    const client = h.client(alice);
    let snooped: string[] = [];
    const { error, progress } = await buildThroughApi(
      client,
      [header(`FROM ${IMAGE}\nRUN echo started && sleep 5\n`, 'demo/snooped:1', 256)],
      async (progress) => {
        await eventually('the build is running', () =>
          progress.some((message) => message.part?.$case === 'stdout' && message.part.value === 'started'),
        );
        await call(
          client,
          client.createWorkload,
          createRequest('snoop', {
            command: [
              '/bin/sh',
              '-c',
              // Then a real TLS client hello (busybox wget's): were it forwarded, the service would refuse it and say so.
              'echo bytes=$(printf hello | nc 169.254.169.254 8443 | wc -c); wget -q -O - https://169.254.169.254:8443/; echo tried; exec sleep 1000',
            ],
            memoryMib: 64,
            networks: ['br0'],
          }),
        );
        await eventually('the snoop tried', async () => {
          const { items } = await collect(
            client.readConsole({ name: 'snoop', sinceUnixMs: 0, lines: 0, follow: false }),
          );
          snooped = items.map((chunk) => Buffer.from(chunk.data).toString());
          return snooped.includes('tried');
        });
      },
    );
    await call(client, client.destroyWorkload, { name: 'snoop' });
    assert.equal(error, null, 'the build itself went on and succeeded');
    assert.ok(snooped.includes('bytes=0'), `nothing answered the snoop: ${snooped.join(' | ')}`);
    assert.ok(
      !progress.some(
        (message) => message.part?.$case === 'step' && /refused a connection/.test(message.part.value),
      ),
      "the snoop's connections never reached the build's bootstrap service",
    );
    assert.ok(images().includes('demo/snooped:1'));
  });

  test('refuses a process build with less than 128 MiB (the guest agent is Node) before anything starts', async () => {
    const client = h.client(alice);
    const { error } = await buildThroughApi(client, [
      header(`FROM ${IMAGE}\nRUN true\n`, 'demo/small:1', 64),
    ]);
    assert.ok(error);
    assert.match(error.details, /at least 128 MiB/);
    assert.ok(!images().includes('demo/small:1'));
    assert.deepEqual((await call(client, client.listWorkloads, {})).workloads, []);
  });

  test('refuses a Dockerfile with HEALTHCHECK before anything starts, naming the instruction', async () => {
    const client = h.client(alice);
    const { error } = await buildThroughApi(client, [
      header(`FROM ${IMAGE}\nHEALTHCHECK CMD true\n`, 'demo/health:1'),
    ]);
    assert.ok(error);
    assert.match(error.details, /HEALTHCHECK/);
    assert.ok(!images().includes('demo/health:1'));
    assert.deepEqual((await call(client, client.listWorkloads, {})).workloads, []);
  });

  test('refuses a context entry that climbs out with ../, writing nothing', async () => {
    const client = h.client(alice);
    const { error } = await buildThroughApi(client, [
      header(`FROM ${IMAGE}\nCOPY x /x\n`, 'demo/escape:1'),
      {
        part: {
          $case: 'entry',
          value: { path: '../escaped', mode: 0o644, isDir: false, data: Buffer.from('no'), symlink: '' },
        },
      },
    ]);
    assert.ok(error);
    assert.match(error.details, /'\.\.'/);
    assert.ok(!images().includes('demo/escape:1'));
    assert.equal(existsSync(join(h.nodeDir, 'workloads', 'escaped')), false);
  });

  test('a caller over its workload quota is refused: the build is a workload of theirs, nothing is stored', async () => {
    const client = h.client(alice);
    const hold = (name: string) => createRequest(name, { command: ['/bin/sleep', '1000'], memoryMib: 64 });
    await call(client, client.createWorkload, hold('hold-1'));
    await call(client, client.createWorkload, hold('hold-2'));
    try {
      const { error } = await buildThroughApi(client, [header(`FROM ${IMAGE}\nRUN true\n`, 'demo/over:1')]);
      assert.ok(error);
      assert.match(error.details, /workloads/);
      assert.ok(!images().includes('demo/over:1'));
    } finally {
      await call(client, client.destroyWorkload, { name: 'hold-1' });
      await call(client, client.destroyWorkload, { name: 'hold-2' });
    }
  });

  test('revoking the owner mid-build stops the build and stores nothing', async () => {
    const bob = await h.delegate('bob', [
      '--permissions',
      'info,create,destroy',
      '--workloads',
      '1',
      '--memory',
      '256',
      '--bridges',
      'br0',
      '--issuance-per-hour',
      '10',
    ]);
    const client = h.client(bob);
    const { error } = await buildThroughApi(
      client,
      [header(`FROM ${IMAGE}\nRUN echo started && sleep 60\n`, 'demo/revoked:1')],
      async (progress) => {
        await eventually('the build is running', () =>
          progress.some((message) => message.part?.$case === 'stdout' && message.part.value === 'started'),
        );
        const revoked = await h.server.cli(['delegation', 'revoke', join(bob, 'delegation.pem')]);
        assert.equal(revoked.code, 0, revoked.stderr);
      },
    );
    assert.ok(error, 'the build fails');
    assert.ok(!images().includes('demo/revoked:1'));
  });
});
