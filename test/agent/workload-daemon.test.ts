// The node workload daemon end to end: a real control plane, an enrolled node
// running `WorkloadDaemon` (real TLS, cgroups, namespaces, a busybox image),
// delegations made by the real CLI. An admin runs a workload through gRPC;
// Carol works within her delegation and Dan cannot see her workloads; every
// refusal is named; revoking Carol destroys her workload and ends her console
// stream; with the control plane gone creates are refused and what runs keeps
// running.
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { rootRefusal } from '../../src/agent/workload-daemon.ts';
import { serveWorkloadMetrics } from '../../src/agent/workload-metrics-http.ts';
import { RpcError } from '../../src/client/rpc.ts';
import type { CreateWorkloadRequest, WorkloadsClient } from '../../src/gen/sigil/v1/workloads.ts';
import { silentLogger } from '../../src/logging.ts';
import { type ForgeRequest, Forger } from '../server/forgery-fixtures.ts';
import { run, SIGIL_BIN, sigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { invalid } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { workloadsUnavailable } from '../workloads/rootfs-fixture.ts';
import { call, collect, type DaemonHarness, IMAGE, startDaemonHarness } from './workload-daemon-fixture.ts';

const unavailable = workloadsUnavailable();
if (unavailable) console.log(`# skipped: ${unavailable}`);
// Started at the top level, before any test: the fixtures' after() hooks then run when the file ends.
const harness = unavailable ? undefined : await startDaemonHarness();

function request(name: string, more: Partial<CreateWorkloadRequest> = {}): CreateWorkloadRequest {
  return {
    name,
    image: IMAGE,
    command: ['/bin/sh', '-c', `echo hello from ${name}; exec sleep 1000`],
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

/** The call fails with `status` and a message matching `pattern`. */
async function refused(promise: Promise<unknown>, status: grpc.status, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
    assert.equal(error.statusName, grpc.status[status], error.message);
    assert.match(error.message, pattern);
    return true;
  });
}

test('the daemon refuses to start unless root, in one line', () => {
  assert.equal(rootRefusal(1000), 'sigil agent --workloads must run as root (namespaces, cgroups)');
  assert.equal(rootRefusal(undefined), 'sigil agent --workloads must run as root (namespaces, cgroups)');
  assert.equal(rootRefusal(0), null);
});

const setprivMissing = !existsSync('/usr/bin/setpriv') ? '/usr/bin/setpriv is missing (util-linux)' : null;
if (process.getuid?.() === 0 && setprivMissing)
  console.log(`# skipped the non-root CLI test: ${setprivMissing}`);

test('sigil agent --workloads run as nobody exits 1 with that one line', {
  skip: process.getuid?.() !== 0 ? 'needs root to switch to nobody' : (setprivMissing ?? false),
}, async () => {
  const result = await run('/usr/bin/setpriv', [
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    process.execPath,
    SIGIL_BIN,
    'agent',
    '--dir',
    '/nonexistent',
    '--workloads',
  ]);
  assert.equal(result.code, 1);
  assert.equal(result.stderr, 'sigil: sigil agent --workloads must run as root (namespaces, cgroups)\n');
});

test('--listen, --bridge and --metrics-listen without --workloads are usage errors', async () => {
  const result = await sigil(['agent', '--dir', '/nonexistent', '--listen', '127.0.0.1:7543']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /apply with --workloads only/);
});

test('/metrics is served on loopback addresses only', async () => {
  await assert.rejects(
    serveWorkloadMetrics('0.0.0.0', 0, () => '', silentLogger()),
    invalid(/loopback address only/),
  );
});

describe('the node workload daemon', { skip: unavailable ?? false }, () => {
  const h = harness as DaemonHarness;
  let admin: WorkloadsClient;
  let alice: string;
  let carol: string;
  let dan: string;
  let ops: string;

  before(async () => {
    admin = h.admin();
    alice = await h.delegate('alice', [
      '--permissions',
      'info,create,destroy,console,log,stats,delegate,revoke,issue',
      '--workloads',
      '3',
      '--cpus',
      '0,1',
      '--memory',
      '1024',
      '--bridges',
      'br0',
    ]);
    carol = await h.delegate('carol', [
      '--from',
      alice,
      '--permissions',
      'info,create,destroy,console,log,stats',
      '--workloads',
      '1',
      '--cpus',
      '0',
      '--memory',
      '256',
    ]);
    dan = await h.delegate('dan', ['--from', alice, '--permissions', 'info,create,destroy', '--cpus', '1']);
    ops = await h.delegate('ops', ['--command', '--permissions', 'info,log,stats', '--ttl', '8h']);
    await h.daemon.settled;
  });

  test('an admin creates, lists, reads, gets and destroys a workload', async () => {
    const created = await call(admin, admin.createWorkload, request('adm'));
    assert.equal(created.name, 'adm');
    assert.equal(created.owner, '');
    assert.equal(created.state, 'running');
    assert.ok(created.pid > 0);
    const listed = await call(admin, admin.listWorkloads, {});
    assert.deepEqual(
      listed.workloads.map((w) => w.name),
      ['adm'],
    );
    await eventually('the console shows the greeting', async () => {
      const { items } = await collect(
        admin.readConsole({ name: 'adm', sinceUnixMs: 0, lines: 0, follow: false }),
      );
      return items.some((chunk) => Buffer.from(chunk.data).toString().includes('hello from adm'));
    });
    const got = await call(admin, admin.getWorkload, { name: 'adm' });
    assert.equal(got.image, IMAGE);
    await call(admin, admin.destroyWorkload, { name: 'adm' });
    await refused(call(admin, admin.getWorkload, { name: 'adm' }), grpc.status.NOT_FOUND, /no such workload/);
    const kinds = h.daemon.events.list({ workload: '//adm' }).map((event) => event.kind);
    assert.deepEqual(kinds.slice(0, 2), ['created', 'started']);
    assert.equal(kinds.at(-1), 'destroyed');
  });

  test('Carol creates within her delegation; Dan cannot see or destroy her web', async () => {
    const carolClient = h.client(carol);
    const danClient = h.client(dan);
    const web = await call(carolClient, carolClient.createWorkload, request('web'));
    assert.equal(web.owner, '/alice/carol');
    assert.equal(web.memoryMib, 256, 'the default memory is the policy memory');
    const seenByDan = await call(danClient, danClient.listWorkloads, {});
    assert.deepEqual(seenByDan.workloads, []);
    await refused(
      call(danClient, danClient.getWorkload, { name: 'web' }),
      grpc.status.NOT_FOUND,
      /no such workload/,
    );
    await refused(
      call(danClient, danClient.destroyWorkload, { name: 'web' }),
      grpc.status.NOT_FOUND,
      /no such workload/,
    );
    assert.equal((await call(carolClient, carolClient.getWorkload, { name: 'web' })).state, 'running');
    // Alice sees it beneath her, by its path.
    const aliceClient = h.client(alice);
    const seenByAlice = await call(aliceClient, aliceClient.listWorkloads, {});
    assert.deepEqual(
      seenByAlice.workloads.map((w) => w.name),
      ['carol//web'],
    );
  });

  test("Carol's second workload is over her quota: RESOURCE_EXHAUSTED, nothing created", async () => {
    const carolClient = h.client(carol);
    await refused(
      call(carolClient, carolClient.createWorkload, request('web2')),
      grpc.status.RESOURCE_EXHAUSTED,
      /workload/,
    );
    const listed = await call(carolClient, carolClient.listWorkloads, {});
    assert.deepEqual(
      listed.workloads.map((w) => w.name),
      ['web'],
    );
  });

  test('a command certificate without create is refused, naming the bit', async () => {
    const opsClient = h.client(ops);
    await refused(
      call(opsClient, opsClient.createWorkload, request('tool')),
      grpc.status.PERMISSION_DENIED,
      /"create" permission/,
    );
    await refused(
      call(opsClient, opsClient.restartWorkload, { name: 'tool', command: [] }),
      grpc.status.PERMISSION_DENIED,
      /"create" permission/,
    );
    // It may read (info): nothing of its own, and the node's images.
    assert.deepEqual((await call(opsClient, opsClient.listWorkloads, {})).workloads, []);
    const images = await call(opsClient, opsClient.listImages, {});
    assert.deepEqual(
      images.images.map((image) => image.tag),
      [IMAGE],
    );
  });

  test('every action needs its own bit: each missing one is refused, naming it', async () => {
    // A command certificate with "info" only, and one with "log" only (no "info").
    const reader = h.client(
      await h.delegate('reader', ['--command', '--permissions', 'info', '--ttl', '1h']),
    );
    const logger = h.client(await h.delegate('logger', ['--command', '--permissions', 'log', '--ttl', '1h']));
    const denied = async (pending: Promise<unknown>, bit: string) =>
      refused(pending, grpc.status.PERMISSION_DENIED, new RegExp(`"${bit}" permission`));
    const streamDenied = async (stream: Parameters<typeof collect>[0], bit: string) => {
      const { error } = await collect(stream);
      assert.equal(error?.code, grpc.status.PERMISSION_DENIED, `${bit}: ${error?.details}`);
      assert.match(error?.details ?? '', new RegExp(`"${bit}" permission`));
    };
    await denied(call(reader, reader.destroyWorkload, { name: 'web' }), 'destroy');
    await denied(call(reader, reader.createBlock, { name: 'data', sizeMib: 8 }), 'block');
    await denied(call(reader, reader.listBlocks, {}), 'block');
    await denied(call(reader, reader.destroyBlock, { name: 'data' }), 'block');
    await streamDenied(
      reader.readConsole({ name: 'web', sinceUnixMs: 0, lines: 0, follow: false }),
      'console',
    );
    await streamDenied(reader.watchEvents({ name: '', limit: 0, sinceUnixMs: 0, follow: false }), 'log');
    await streamDenied(reader.getStats({ name: 'web', watchIntervalMs: 0 }), 'stats');
    await streamDenied(reader.downloadBlock({ name: 'data' }), 'block');
    await denied(call(logger, logger.listWorkloads, {}), 'info');
    await denied(call(logger, logger.getWorkload, { name: 'web' }), 'info');
    await denied(call(logger, logger.listImages, {}), 'info');
  });

  test("Dan's delegation lacks console: reading a console is refused, naming the bit", async () => {
    const danClient = h.client(dan);
    const { error } = await collect(
      danClient.readConsole({ name: 'web', sinceUnixMs: 0, lines: 0, follow: false }),
    );
    assert.equal(error?.code, grpc.status.PERMISSION_DENIED);
    assert.match(error?.details ?? '', /"console" permission/);
  });

  test('a CPU, a bridge or memory outside the policy is refused, and nothing is created', async () => {
    const danClient = h.client(dan);
    await refused(
      call(danClient, danClient.createWorkload, request('db', { cpus: [0] })),
      grpc.status.PERMISSION_DENIED,
      /cpu 0 is not in your policy's cpus \(1\)/,
    );
    await refused(
      call(danClient, danClient.createWorkload, request('db', { networks: ['br1'] })),
      grpc.status.PERMISSION_DENIED,
      /bridge br1 is not in your policy's bridges \(br0\)/,
    );
    // In the policy, but this node has no such bridge.
    await refused(
      call(danClient, danClient.createWorkload, request('db', { networks: ['br0'] })),
      grpc.status.FAILED_PRECONDITION,
      /bridge br0 is not configured on node/,
    );
    await refused(
      call(danClient, danClient.createWorkload, request('db', { memoryMib: 4096 })),
      grpc.status.RESOURCE_EXHAUSTED,
      /memory 4096 MiB is over your policy's 1024 MiB/,
    );
    assert.deepEqual((await call(danClient, danClient.listWorkloads, {})).workloads, []);
  });

  test('path-traversing workload, block and image names are refused, naming the problem', async () => {
    await refused(
      call(admin, admin.createWorkload, request('../etc')),
      grpc.status.INVALID_ARGUMENT,
      /workload name "\.\.\/etc": use one DNS label/,
    );
    await refused(
      call(admin, admin.getWorkload, { name: '..//web' }),
      grpc.status.INVALID_ARGUMENT,
      /owner name "\.\.": use one DNS label/,
    );
    await refused(
      call(admin, admin.createBlock, { name: '../etc', sizeMib: 8 }),
      grpc.status.INVALID_ARGUMENT,
      /block name "\.\.\/etc": use one DNS label/,
    );
    await refused(
      call(admin, admin.createWorkload, request('img', { image: '../../etc:1' })),
      grpc.status.INVALID_ARGUMENT,
      /image/,
    );
    assert.deepEqual((await call(admin, admin.listBlocks, {})).blocks, []);
  });

  test("a workload name that would share a block device's reservation name is refused", async () => {
    await refused(
      call(admin, admin.createWorkload, request('block-data')),
      grpc.status.INVALID_ARGUMENT,
      /names beginning with "block-" are kept for block devices/,
    );
    assert.ok(!(await call(admin, admin.listWorkloads, {})).workloads.some((w) => w.name === 'block-data'));
  });

  test('an image the node does not have is NOT_FOUND', async () => {
    await refused(
      call(admin, admin.createWorkload, request('ghost', { image: 'nobody/nothing:1' })),
      grpc.status.NOT_FOUND,
      /image nobody\/nothing:1 not found on node/,
    );
  });

  test('other identities (the node itself) may not use the service', async () => {
    const nodeClient = h.client(h.nodeDir);
    await refused(
      call(nodeClient, nodeClient.listWorkloads, {}),
      grpc.status.PERMISSION_DENIED,
      /only admins and delegates/,
    );
  });

  test("Dan's forgeries are refused: an admin's name, a leaf he may not issue, a CA as client", async () => {
    const td = h.server.running.info.trustDomain;
    const forger = Forger.fromDelegationDirectory(tempDir('sigil-forger-'), dan);
    const asForged = async (request: ForgeRequest) => {
      const forged = await forger.mint(request);
      const dir = tempDir('sigil-forged-');
      writeFileSync(join(dir, 'cert.pem'), forged.chain);
      writeFileSync(join(dir, 'key.pem'), forged.key, { mode: 0o600 });
      return h.client(dir);
    };
    // An admin's name: outside Dan's URI name constraints, so the handshake itself fails.
    const mallory = await asForged({ commonName: 'mallory', uris: [`spiffe://${td}/admin/mallory`] });
    await assert.rejects(call(mallory, mallory.listWorkloads, {}));
    await assert.rejects(call(mallory, mallory.destroyWorkload, { name: 'alice/carol//web' }));
    // A name in Dan's own host with an admin-looking path: Dan may not issue at all (no "issue" bit).
    const inside = await asForged({
      commonName: 'dan-admin',
      uris: [`spiffe://dan.alice.d.${td}/admin/root`],
    });
    await refused(
      call(inside, inside.listWorkloads, {}),
      grpc.status.PERMISSION_DENIED,
      /lacks the "issue" permission/,
    );
    await refused(
      call(inside, inside.destroyWorkload, { name: 'web' }),
      grpc.status.PERMISSION_DENIED,
      /lacks the "issue" permission/,
    );
    // A CA certificate Dan signs, presented as a client: refused.
    const ca = await asForged({ commonName: 'dan-ca', uris: [`spiffe://dan.alice.d.${td}`], ca: true });
    await assert.rejects(call(ca, ca.listWorkloads, {}));
    const carolClient = h.client(carol);
    assert.equal((await call(carolClient, carolClient.getWorkload, { name: 'web' })).state, 'running');
  });

  test("revoking Carol's delegation destroys her workload and ends her console stream", async () => {
    const carolClient = h.client(carol);
    const stream = carolClient.readConsole({ name: 'web', sinceUnixMs: 0, lines: 0, follow: true });
    const ended = collect(stream);
    let first = false;
    stream.once('data', () => {
      first = true;
    });
    await eventually('the console stream delivers', () => first);
    const revoked = await sigil(['delegation', 'revoke', `${carol}/delegation.pem`, '--identity', alice]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const started = Date.now();
    await eventually('the workload is destroyed by revocation', () =>
      h.daemon.events
        .list({ workload: '/alice/carol//web' })
        .some((e) => e.kind === 'destroyed-by-revocation'),
    );
    console.log(`# revoke → workload destroyed: ${Date.now() - started} ms`);
    const { error } = await ended;
    assert.ok(error, 'the stream ended with an error status');
    assert.ok(!h.daemon.operations.records.has('/alice/carol//web'));
    // Alice sees the event under her subtree, named by its path.
    const aliceClient = h.client(alice);
    const { items } = await collect(
      aliceClient.watchEvents({ name: '', limit: 0, sinceUnixMs: 0, follow: false }),
    );
    assert.ok(items.some((e) => e.workload === 'carol//web' && e.kind === 'destroyed-by-revocation'));
  });

  test('with the control plane unreachable creates are refused UNAVAILABLE and running workloads keep running', async () => {
    const kept = await call(admin, admin.createWorkload, request('keeper'));
    await h.server.close();
    await refused(
      call(admin, admin.createWorkload, request('late')),
      grpc.status.UNAVAILABLE,
      /cannot reach the control plane; nothing was created/,
    );
    await refused(
      call(admin, admin.getWorkload, { name: 'late' }),
      grpc.status.NOT_FOUND,
      /no such workload/,
    );
    const still = await call(admin, admin.getWorkload, { name: 'keeper' });
    assert.equal(still.state, 'running');
    assert.equal(still.pid, kept.pid);
  });
});
