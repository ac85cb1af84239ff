// The node workload daemon's streams and its restarts, against a real control
// plane and real workloads: an interactive console, statistics once and
// watched, events followed, RestartWorkload with a new command; and a daemon
// that stops and starts again: the desired workloads run again (`restarted`),
// a reservation nothing uses is released, a workload whose owner was revoked
// while the daemon was down is forgotten.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import type {
  AttachConsoleRequest,
  ConsoleChunk,
  CreateWorkloadRequest,
  WorkloadsClient,
} from '../../src/gen/sigil/v1/workloads.ts';
import { DesiredState } from '../../src/workloads/desired-state.ts';
import { sigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { tempDir } from '../support/temp-dir.ts';
import { workloadsUnavailable } from '../workloads/rootfs-fixture.ts';
import { nodeFile } from './server-fixture.ts';
import { call, collect, type DaemonHarness, IMAGE, startDaemonHarness } from './workload-daemon-fixture.ts';

const unavailable = workloadsUnavailable();
if (unavailable) console.log(`# skipped: ${unavailable}`);
// Started at the top level, before any test: the fixtures' after() hooks then run when the file ends.
const harness = unavailable
  ? undefined
  : await startDaemonHarness({
      bridges: ['br0=10.79.0.1/24'],
      metricsListen: '127.0.0.1:0',
      networkNamespace: { create: `t${process.pid}-${randomBytes(3).toString('hex')}` },
    });

function request(
  name: string,
  command: string[],
  more: Partial<CreateWorkloadRequest> = {},
): CreateWorkloadRequest {
  return {
    name,
    image: IMAGE,
    command,
    env: {},
    workdir: '',
    user: '',
    memoryMib: 0,
    cpus: [],
    networks: [],
    blocks: [],
    restart: '',
    pidsMax: 0,
    runtime: '',
    ...more,
  };
}

const SLEEPER = ['/bin/sh', '-c', 'echo up; exec sleep 1000'];

describe('the node workload daemon: streams and restarts', { skip: unavailable ?? false }, () => {
  const h = harness as DaemonHarness;
  let admin: WorkloadsClient;
  let alice: string;
  let carol: string;

  before(async () => {
    admin = h.admin();
    alice = await h.delegate('alice', [
      '--permissions',
      'info,create,destroy,console,log,stats,block,delegate,revoke,issue',
      '--workloads',
      '3',
      '--memory',
      '1024',
      '--block',
      '64',
    ]);
    carol = await h.delegate('carol', [
      '--from',
      alice,
      '--permissions',
      'info,create,destroy,console,log,stats,block',
      '--workloads',
      '1',
      '--memory',
      '256',
      '--block',
      '32',
    ]);
    await h.daemon.settled;
  });

  test('an interactive console sends input to the workload and its output back', async () => {
    await call(admin, admin.createWorkload, request('shell', ['/bin/sh']));
    const stream: grpc.ClientDuplexStream<AttachConsoleRequest, ConsoleChunk> = admin.attachConsole();
    let output = '';
    stream.on('data', (chunk: ConsoleChunk) => {
      output += Buffer.from(chunk.data).toString();
    });
    const ended = new Promise<void>((resolve) => {
      stream.on('end', resolve);
      stream.on('error', () => resolve());
    });
    stream.write({ name: 'shell', data: Buffer.alloc(0) });
    stream.write({ name: '', data: Buffer.from('echo $((6 * 7))-done\n') });
    await eventually('the shell answers', () => output.includes('42-done'));
    stream.end();
    await ended;
    await call(admin, admin.destroyWorkload, { name: 'shell' });
  });

  test('a workload on a bridge gets an address from its range', async () => {
    const created = await call(admin, admin.createWorkload, request('net', SLEEPER, { networks: ['br0'] }));
    assert.equal(created.addresses.length, 1);
    assert.equal(created.addresses[0].network, 'br0');
    assert.match(created.addresses[0].address, /^10\.79\.0\.\d+\/24$/);
    const stats = await collect(admin.getStats({ name: 'net', watchIntervalMs: 0 }));
    assert.ok(stats.items[0].interfaces.some((i) => i.name === 'eth0'));
    await call(admin, admin.destroyWorkload, { name: 'net' });
  });

  test('a workload on a bridge reads its own metadata at 169.254.169.254 with a session token', async () => {
    // busybox nc speaks raw HTTP/1.0: a token first, then the JSON document with it; without one, 401.
    const script = [
      'T=$(printf "PUT /latest/api/token HTTP/1.0\\r\\nX-metadata-token-ttl-seconds: 60\\r\\n\\r\\n" | nc 169.254.169.254 80 | tail -n 1)',
      "printf \"GET /latest/meta-data HTTP/1.0\\r\\nAccept: application/json\\r\\nX-metadata-token: $T\\r\\n\\r\\n\" | nc 169.254.169.254 80 | tail -n 1 | tr ',{}' '\\n\\n\\n'",
      'echo',
      'printf "GET /latest/meta-data HTTP/1.0\\r\\n\\r\\n" | nc 169.254.169.254 80 | head -n 1',
      'exec sleep 1000',
    ].join('; ');
    for (const name of ['meta-a', 'meta-b']) {
      await call(
        admin,
        admin.createWorkload,
        request(name, ['/bin/sh', '-c', script], { networks: ['br0'], env: { WHO: name } }),
      );
    }
    for (const name of ['meta-a', 'meta-b']) {
      let lines: string[] = [];
      await eventually(`${name} printed its document`, async () => {
        const chunks = await collect(admin.readConsole({ name, sinceUnixMs: 0, lines: 0, follow: false }));
        lines = chunks.items.map((chunk) => Buffer.from(chunk.data).toString());
        return lines.some((line) => line.startsWith('HTTP/1.'));
      });
      // The console keeps lines of at most 512 bytes: the JSON is split at its commas and braces.
      for (const field of [
        `"VMMID":"${name}"`,
        `"WHO":"${name}"`,
        `"ImageTag":"${IMAGE}"`,
        '"Gateway":"10.79.0.1"',
      ])
        assert.ok(lines.includes(field), `${field} in ${name}'s document`);
      assert.match(lines.find((line) => line.startsWith('HTTP/1.')) ?? '', / 401 /, 'no token, no document');
    }
    for (const name of ['meta-a', 'meta-b']) await call(admin, admin.destroyWorkload, { name });
  });

  test("a delegate's workload reads its own identity from the metadata service; destroying it revokes the identity", async () => {
    const wid = await h.delegate('wid', [
      '--permissions',
      'info,create,destroy,console,log',
      '--workloads',
      '1',
      '--memory',
      '256',
      '--bridges',
      'br0',
      '--issuance-per-hour',
      '10',
    ]);
    const client = h.client(wid);
    // Plain-text reads of the Identity section: the SPIFFE ID, then the certificate's PEM lines.
    const read = (path: string) =>
      `printf "GET /latest/meta-data/Identity/${path} HTTP/1.0\\r\\nX-metadata-token: $T\\r\\n\\r\\n" | nc 169.254.169.254 80 | sed '1,/^\\r$/d'`;
    const script = [
      'T=$(printf "PUT /latest/api/token HTTP/1.0\\r\\nX-metadata-token-ttl-seconds: 60\\r\\n\\r\\n" | nc 169.254.169.254 80 | tail -n 1)',
      `echo "id=$(${read('SpiffeID')})"`,
      read('Cert'),
      'echo',
      'echo done',
      'exec sleep 1000',
    ].join('; ');
    await call(
      client,
      client.createWorkload,
      request('api', ['/bin/sh', '-c', script], { networks: ['br0'] }),
    );
    let lines: string[] = [];
    await eventually('the workload printed its identity', async () => {
      const chunks = await collect(
        client.readConsole({ name: 'api', sinceUnixMs: 0, lines: 0, follow: false }),
      );
      lines = chunks.items.map((chunk) => Buffer.from(chunk.data).toString());
      return lines.includes('done');
    });
    const td = nodeFile(h.nodeDir).trustDomain;
    assert.ok(lines.includes(`id=spiffe://wid.d.${td}/workload/api`), lines.join('\n'));
    const pem = lines.slice(lines.indexOf('-----BEGIN CERTIFICATE-----')).join('\n');
    const certificate = new X509Certificate(pem);
    assert.match(
      certificate.subjectAltName ?? '',
      new RegExp(`URI:spiffe://wid\\.d\\.${td.replaceAll('.', '\\.')}/workload/api`),
    );
    const hours = (Date.parse(certificate.validTo) - Date.now()) / 3600_000;
    assert.ok(hours > 0 && hours <= 1.01, `short-lived: ${certificate.validTo}`);
    await call(client, client.destroyWorkload, { name: 'api' });
    const serial = certificate.serialNumber.toLowerCase().replace(/^0+/, '');
    await eventually('the identity is revoked with the workload', async () => {
      const listed = await h.server.cli(['cert', 'list', '--json', '--all']);
      return listed.stdout.toLowerCase().includes(serial) && /cessation/i.test(listed.stdout);
    });
  });

  test('statistics once, and watched at an interval', async () => {
    await call(admin, admin.createWorkload, request('stat', SLEEPER, { memoryMib: 64 }));
    const once = await collect(admin.getStats({ name: 'stat', watchIntervalMs: 0 }));
    assert.equal(once.items.length, 1);
    assert.equal(once.items[0].name, 'stat');
    assert.equal(once.items[0].state, 'running');
    assert.ok(once.items[0].memoryBytes > 0);
    assert.ok(once.items[0].pids >= 1);
    const watch = admin.getStats({ name: 'stat', watchIntervalMs: 50 }); // raised to 200 ms
    const seen: number[] = [];
    watch.on('data', (stats: { atUnixMs: number }) => seen.push(stats.atUnixMs));
    watch.on('error', () => {});
    await eventually('three samples', () => seen.length >= 3);
    watch.cancel();
    assert.ok(seen[2] - seen[1] >= 150, `samples ${seen.join(', ')} are at least 200 ms apart`);
  });

  test('/metrics shows every workload in the Prometheus text format', async () => {
    const response = await fetch(`http://${h.daemon.metricsAddress}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    assert.match(text, /^sigil_workload_memory_bytes\{workload="\/\/stat"\} [1-9]\d*$/m);
    assert.match(text, /^sigil_workload_pids\{workload="\/\/stat"\} [1-9]\d*$/m);
    assert.equal((await fetch(`http://${h.daemon.metricsAddress}/other`)).status, 404);
  });

  test('events are followed live, and a restart with a new command runs it', async () => {
    const stream = admin.watchEvents({ name: 'stat', limit: 0, sinceUnixMs: 0, follow: true });
    const kinds: string[] = [];
    stream.on('data', (event: { kind: string }) => kinds.push(event.kind));
    stream.on('error', () => {});
    await eventually('the backlog', () => kinds.includes('started'));
    const before = await call(admin, admin.getWorkload, { name: 'stat' });
    const restarted = await call(admin, admin.restartWorkload, {
      name: 'stat',
      command: ['/bin/sh', '-c', 'echo second run; exec sleep 1000'],
    });
    assert.notEqual(restarted.pid, before.pid);
    assert.deepEqual(restarted.command, ['/bin/sh', '-c', 'echo second run; exec sleep 1000']);
    await eventually('the restart is followed', () => kinds.includes('restarted'));
    stream.cancel();
  });

  test('Carol makes a block device within her quota and mounts it into a workload', async () => {
    const carolClient = h.client(carol);
    const made = await call(carolClient, carolClient.createBlock, { name: 'data', sizeMib: 8 });
    assert.deepEqual([made.name, made.owner, made.sizeMib], ['data', '/alice/carol', 8]);
    await assert.rejects(
      call(carolClient, carolClient.createBlock, { name: 'big', sizeMib: 100 }),
      /over your policy's 32 MiB of block storage/,
    );
    await call(
      carolClient,
      carolClient.createWorkload,
      request('disk', ['/bin/sh', '-c', 'echo kept > /data/note; exec sleep 1000'], {
        blocks: ['data:/data'],
      }),
    );
    const listed = await call(carolClient, carolClient.listBlocks, {});
    assert.deepEqual(
      listed.blocks.map((b) => [b.name, b.attachedTo]),
      [['data', 'disk']],
    );
    await assert.rejects(
      call(carolClient, carolClient.destroyBlock, { name: 'data' }),
      /attached to a workload/,
    );
    await call(carolClient, carolClient.destroyWorkload, { name: 'disk' });
    await call(carolClient, carolClient.destroyBlock, { name: 'data' });
    assert.deepEqual((await call(carolClient, carolClient.listBlocks, {})).blocks, []);
  });

  test('sigil block create, upload, download and destroy: the device travels as a stream, byte for byte', async () => {
    const node = nodeFile(h.nodeDir).nodeId;
    const asCarol = (args: readonly string[]) => sigil([...args, '--node', node, '--identity', carol]);
    const ok = async (args: readonly string[]) => {
      const result = await asCarol(args);
      assert.equal(result.code, 0, `sigil ${args.join(' ')}: ${result.stderr}`);
      return result;
    };
    const work = tempDir('sigil-block-cli-');
    mkdirSync(join(work, 'content'));
    writeFileSync(join(work, 'content', 'marker'), randomBytes(4096));
    const image = join(work, 'disk.ext4');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', join(work, 'content'), image, '8M']);
    await ok(['block', 'create', 'travel', '--size', '8']);
    await ok(['block', 'upload', 'travel', image]);
    await ok(['block', 'download', 'travel', join(work, 'back.ext4')]);
    assert.ok(readFileSync(join(work, 'back.ext4')).equals(readFileSync(image)), 'downloaded = uploaded');
    // An upload larger than the device is refused, and the device keeps what it held.
    writeFileSync(join(work, 'big'), Buffer.alloc(9 * 1024 * 1024));
    const refusedUpload = await asCarol(['block', 'upload', 'travel', join(work, 'big')]);
    assert.equal(refusedUpload.code, 1, refusedUpload.stderr);
    await ok(['block', 'download', 'travel', join(work, 'again.ext4')]);
    assert.ok(
      readFileSync(join(work, 'again.ext4')).equals(readFileSync(image)),
      'unchanged by the refused upload',
    );
    await ok(['block', 'destroy', 'travel']);
    assert.doesNotMatch((await ok(['block', 'list'])).stdout, /travel/);
  });

  test('after the daemon restarts, its desired workloads run again and unused reservations are released', async () => {
    const carolClient = h.client(carol);
    await call(carolClient, carolClient.createWorkload, request('web', SLEEPER));
    const stat = await call(admin, admin.getWorkload, { name: 'stat' });
    // Carol's record vanishes while the daemon is down, as if it crashed between reserving and recording.
    const daemon = await h.restartDaemon(() => {
      const desired = DesiredState.open(h.nodeDir);
      try {
        assert.ok(desired.remove('/alice/carol//web'));
      } finally {
        desired.close();
      }
    });
    const again = await call(admin, admin.getWorkload, { name: 'stat' });
    assert.equal(again.state, 'running');
    assert.notEqual(again.pid, stat.pid);
    assert.deepEqual(
      again.command,
      ['/bin/sh', '-c', 'echo second run; exec sleep 1000'],
      'the restart command stays',
    );
    const events = daemon.events.list({ workload: '//stat' });
    assert.ok(events.some((e) => e.kind === 'restarted' && e.detail === 'the node daemon restarted'));
    await daemon.settled;
    // The control plane released Carol's reservation: her one workload is free again.
    await call(carolClient, carolClient.createWorkload, request('web', SLEEPER));
  });

  test('a workload whose owner is revoked while the daemon is down is forgotten at start', async () => {
    await h.restartDaemon(async () => {
      const revoked = await sigil(['delegation', 'revoke', `${carol}/delegation.pem`, '--identity', alice]);
      assert.equal(revoked.code, 0, revoked.stderr);
    });
    await eventually('the revoked workload is gone', () =>
      h.daemon.events
        .list({ workload: '/alice/carol//web' })
        .some((e) => e.kind === 'destroyed-by-revocation'),
    );
    assert.ok(!h.daemon.operations.records.has('/alice/carol//web'));
    const desired = DesiredState.open(h.nodeDir);
    try {
      assert.equal(desired.get('/alice/carol//web'), undefined);
    } finally {
      desired.close();
    }
    assert.equal((await call(admin, admin.getWorkload, { name: 'stat' })).state, 'running');
  });
});
