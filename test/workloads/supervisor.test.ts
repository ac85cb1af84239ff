// The workload supervisor against real cgroups, namespaces, overlay mounts and
// a busybox image: output reaches the console, exits and OOM kills are
// recorded, restart policies restart (and destroy stops them), revocation
// destroys exactly a subtree, and nothing is left behind: every test gives
// its supervisor its own cgroup base, closes it in t.after, and asserts the
// base is gone.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import type { CgroupDriver } from '../../src/workloads/cgroups/cgroup.ts';
import { detectCgroups } from '../../src/workloads/cgroups/detect.ts';
import { EventLog, type WorkloadEvent } from '../../src/workloads/event-log.ts';
import { importImage, openImageStore } from '../../src/workloads/images.ts';
import { checkRestartPolicy, RestartBackoff, shouldRestart } from '../../src/workloads/restart-policy.ts';
import { cgroupNameOf, type WorkloadSpec, WorkloadSupervisor } from '../../src/workloads/supervisor.ts';
import { eventually } from '../support/eventually.ts';
import { refusal } from '../support/refusals.ts';
import { buildBusyboxRootfs, tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const unavailable = workloadsUnavailable();
const RUN = `sigil-test-sup-${process.pid}-${randomBytes(3).toString('hex')}`;
const IMAGE = 'test/busybox:1';
let bases = 0;

interface Harness {
  supervisor: WorkloadSupervisor;
  driver: CgroupDriver;
  events: EventLog;
  imageRootfs: string;
  stateDir: string;
}

/** A supervisor with its own cgroup base, image store, event log and state directory, all removed when `t` ends. */
async function harness(t: TestContext): Promise<Harness> {
  const dir = tempDirFor(t, 'sigil-supervisor-');
  const images = openImageStore(join(dir, 'node'));
  const source = tempDirFor(t, 'sigil-image-');
  buildBusyboxRootfs(source); // without /dev: the store adds its own
  const image = await importImage(images, source, IMAGE);
  const events = EventLog.open(join(dir, 'events.db'));
  const driver = detectCgroups({ base: `${RUN}-${++bases}` });
  const stateDir = join(dir, 'node');
  const supervisor = new WorkloadSupervisor({
    cgroups: driver,
    images,
    events,
    stateDir,
    backoff: { initialMs: 10, maxMs: 50, resetAfterMs: 10_000 },
  });
  // Registered after the directory's removal, so it runs first (t.after runs in reverse).
  t.after(async () => {
    try {
      await supervisor.close();
      for (const name of driver.list()) await driver.open(name).remove();
      await driver.removeBase();
    } finally {
      events.close();
    }
  });
  return { supervisor, driver, events, imageRootfs: image.rootfs, stateDir };
}

function spec(key: string, command: string[], more: Partial<WorkloadSpec> = {}): WorkloadSpec {
  return { key, name: 'web', image: IMAGE, command, ...more };
}

const kindsOf = (events: EventLog, workload: string): string[] =>
  events.list({ workload }).map((event) => event.kind);

const consoleText = (h: Harness, key: string): string[] =>
  h.supervisor
    .console(key)
    .history()
    .map((line) => line.bytes.toString('utf8'));

/** close() and the base's removal leave no directory of this supervisor in any hierarchy. */
async function assertNothingLeft(h: Harness): Promise<void> {
  await h.supervisor.close();
  assert.deepEqual(h.driver.list(), []);
  await h.driver.removeBase();
  for (const directory of h.driver.baseDirectories) assert.equal(existsSync(directory), false, directory);
}

function skipped(t: TestContext): boolean {
  if (unavailable === null) return false;
  t.skip(unavailable);
  return true;
}

test('restart policies: shapes, refusals, and which exits restart', () => {
  assert.equal(checkRestartPolicy(undefined), 'no');
  assert.equal(checkRestartPolicy('always'), 'always');
  assert.deepEqual(checkRestartPolicy({ onFailure: {} }), { onFailure: {} });
  assert.deepEqual(checkRestartPolicy({ onFailure: { codes: [1, 1, 2] } }), { onFailure: { codes: [1, 2] } });
  const onFailure = { onFailure: { codes: [3] } };
  assert.equal(shouldRestart(onFailure, { code: 3, signal: null }), true);
  assert.equal(shouldRestart(onFailure, { code: 1, signal: null }), false);
  assert.equal(shouldRestart(onFailure, { code: null, signal: 'SIGKILL' }), true);
  assert.equal(shouldRestart({ onFailure: {} }, { code: 0, signal: null }), false);
  assert.equal(shouldRestart('always', { code: 0, signal: null }), true);
  assert.equal(shouldRestart('no', { code: 1, signal: null }), false);
});

test('restart backoff doubles up to its bound and starts over after a long run', () => {
  const backoff = new RestartBackoff({ initialMs: 100, maxMs: 400, resetAfterMs: 1000 });
  assert.deepEqual(
    [0, 0, 0, 0].map(() => backoff.next(5)),
    [100, 200, 400, 400],
  );
  assert.equal(backoff.next(1000), 100);
  assert.equal(backoff.next(0), 200);
});

test('refused: a bad restart policy, before anything is made', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  for (const restart of [
    'sometimes',
    { onFailure: { codes: [0] } },
    { onFailure: { codes: [] } },
    { never: 1 },
  ])
    await assert.rejects(
      h.supervisor.create(spec('/alice//web', ['/bin/true'], { restart: restart as never })),
      refusal('invalid_argument', /restart policy/),
    );
  assert.deepEqual(h.driver.list(), []);
  assert.deepEqual(h.events.list(), []);
  await assertNothingLeft(h);
});

test('refused: a malformed key or spec, before anything is made', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  for (const key of ['', 'web', '/alice/', '/a\nb'])
    await assert.rejects(
      h.supervisor.create(spec(key, ['/bin/true'])),
      refusal('invalid_argument', /workload key/),
    );
  await assert.rejects(
    h.supervisor.create({ ...spec('/alice//web', ['/bin/true']), privileged: true } as WorkloadSpec),
    refusal('invalid_argument', /unknown field "privileged"/),
  );
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/true'], { limits: { memory: 5 } as never })),
    refusal('invalid_argument', /limits: unknown field "memory"/),
  );
  assert.throws(() => h.supervisor.list('nope'), refusal('invalid_argument', /subtree key/));
  assert.deepEqual(h.driver.list(), []);
  assert.deepEqual(h.events.list(), []);
  await assertNothingLeft(h);
});

test('refused: an unknown image (not_found), leaving nothing', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/true'], { image: 'test/nothing:1' })),
    refusal('not_found', /image test\/nothing:1: not on this node/),
  );
  assert.deepEqual(h.driver.list(), []);
  assert.deepEqual(h.events.list(), []);
  await assertNothingLeft(h);
});

test('refused: a command the image lacks, and a bad hostname, leave no cgroup, mount or event', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/nonesuch'])),
    refusal('not_found', /command "\/bin\/nonesuch"/),
  );
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/true'], { name: 'no spaces' })),
    refusal('invalid_argument', /hostname/),
  );
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/true'], { limits: { memoryMiB: 0 } })),
    refusal('invalid_argument', /memoryMiB/),
  );
  assert.deepEqual(h.driver.list(), []);
  assert.equal(existsSync(join(h.stateDir, cgroupNameOf('/alice//web'))), false);
  assert.deepEqual(h.events.list(), []);
  assert.deepEqual(h.supervisor.list(), []);
  await assertNothingLeft(h);
});

test('refused: a duplicate key; an unknown workload (not_found); creating again after destroy works', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice/carol//web';
  await h.supervisor.create(spec(key, ['/bin/sleep', '60']));
  await assert.rejects(
    h.supervisor.create(spec(key, ['/bin/true'])),
    refusal('already_exists', /workload \/alice\/carol\/\/web already exists/),
  );
  for (const call of [
    () => h.supervisor.info('/alice/dan//web'),
    () => h.supervisor.stats('/alice/dan//web'),
    () => h.supervisor.console('/alice/dan//web'),
  ])
    assert.throws(call, refusal('not_found', /no such workload/));
  await assert.rejects(h.supervisor.destroy('/alice/dan//web'), refusal('not_found', /no such workload/));
  await assert.rejects(
    h.supervisor.destroy(key, { reason: 'bored' as never }),
    refusal('invalid_argument', /destroy reason/),
  );
  assert.equal(h.supervisor.info(key).state, 'running');

  await h.supervisor.destroy(key);
  assert.deepEqual(h.driver.list(), []);
  await h.supervisor.create(spec(key, ['/bin/sh', '-c', 'echo again']));
  await eventually('the second run to exit', () => h.supervisor.info(key).state === 'exited');
  assert.deepEqual(consoleText(h, key), ['again']);
  await assertNothingLeft(h);
});

test('create runs the command in its cgroup: console shows its output, then created, started, exited', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice/carol//web';
  const info = await h.supervisor.create(
    spec(key, ['/bin/sh', '-c', 'echo "hello from $(hostname)"; echo oops >&2; cat /proc/1/cgroup; exit 3'], {
      env: { GREETING: 'hi' },
      limits: { memoryMiB: 32, pidsMax: 16 },
    }),
  );
  assert.equal(info.cgroup, cgroupNameOf(key));
  assert.deepEqual(h.driver.list(), [cgroupNameOf(key)]);
  await eventually('the exit', () => h.supervisor.info(key).state === 'exited');
  const lines = consoleText(h, key);
  assert.ok(lines.includes('hello from web'), lines.join('\n'));
  assert.ok(lines.includes('oops'), lines.join('\n'));
  // The workload saw itself in its own memory cgroup (v1 lists one line per hierarchy).
  assert.ok(
    lines.some((line) => line.includes(cgroupNameOf(key))),
    lines.join('\n'),
  );
  assert.deepEqual(kindsOf(h.events, key), ['created', 'started', 'exited']);
  const exited = h.events.list({ workload: key }).at(-1) as WorkloadEvent;
  assert.equal(exited.exitCode, 3);
  assert.deepEqual(h.supervisor.info(key).lastExit?.code, 3);
  const stats = h.supervisor.stats(key);
  assert.equal(stats.state, 'exited');
  assert.equal(stats.restarts, 0);
  assert.ok(stats.cpuNanos > 0);
  await assertNothingLeft(h);
});

test('each workload writes to its own layer: the image is unchanged and destroy removes the layer', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice//writer';
  await h.supervisor.create(
    spec(key, ['/bin/sh', '-c', 'echo changed > /etc/motd && rm /bin/true && echo done']),
  );
  await eventually('the exit', () => h.supervisor.info(key).state === 'exited');
  assert.deepEqual(consoleText(h, key), ['done']);
  assert.equal(existsSync(join(h.imageRootfs, 'etc', 'motd')), false);
  assert.equal(existsSync(join(h.imageRootfs, 'bin', 'true')), true);
  const layer = join(h.stateDir, cgroupNameOf(key));
  assert.equal(readFileSync(join(layer, 'upper', 'etc', 'motd'), 'utf8'), 'changed\n');
  await h.supervisor.destroy(key);
  assert.equal(existsSync(layer), false);
  assert.equal(
    readFileSync('/proc/self/mounts', 'utf8').includes(layer),
    false,
    'the overlay is still mounted',
  );
  await assertNothingLeft(h);
});

test('OOM: a run over its memory limit is recorded as oom-killed and restarted on failure', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice//hog';
  // busybox tail buffers a line that never ends: it grows until the cgroup's limit kills it.
  await h.supervisor.create(
    spec(key, ['/bin/tail', '/dev/zero'], { limits: { memoryMiB: 16 }, restart: { onFailure: {} } }),
  );
  await eventually('an OOM kill and a restart', () => {
    const kinds = kindsOf(h.events, key);
    return kinds.includes('oom-killed') && kinds.includes('restarted');
  });
  const kinds = kindsOf(h.events, key);
  assert.deepEqual(kinds.slice(0, 5), ['created', 'started', 'exited', 'oom-killed', 'restarted']);
  // The OOM killer's SIGKILL: seen as the signal, or as sh's 128+9 if a shell ran the program.
  const exited = h.events.list({ workload: key })[2];
  assert.ok(exited.signal === 'SIGKILL' || exited.exitCode === 137, JSON.stringify(exited));
  assert.ok(h.supervisor.stats(key).oomKills >= 1);
  await h.supervisor.destroy(key);
  assert.equal(kindsOf(h.events, key).at(-1), 'destroyed');
  await assertNothingLeft(h);
});

test("'always' restarts after exit 0; on-failure with codes does not restart another code; 'no' never", async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  await h.supervisor.create(spec('/a//always', ['/bin/sh', '-c', 'echo run'], { restart: 'always' }));
  await h.supervisor.create(
    spec('/a//codes', ['/bin/sh', '-c', 'exit 4'], { restart: { onFailure: { codes: [5] } } }),
  );
  await h.supervisor.create(spec('/a//no', ['/bin/false']));
  await eventually('two restarts', () => h.supervisor.info('/a//always').restarts >= 2);
  await eventually('the others to exit', () =>
    ['/a//codes', '/a//no'].every((key) => h.supervisor.info(key).state === 'exited'),
  );
  assert.ok(consoleText(h, '/a//always').filter((line) => line === 'run').length >= 2);
  const always = kindsOf(h.events, '/a//always');
  assert.deepEqual(always.slice(0, 5), ['created', 'started', 'exited', 'restarted', 'exited']);
  assert.equal(h.events.list({ workload: '/a//always' })[2].exitCode, 0);
  assert.deepEqual(kindsOf(h.events, '/a//codes'), ['created', 'started', 'exited']);
  assert.deepEqual(kindsOf(h.events, '/a//no'), ['created', 'started', 'exited']);
  assert.equal(h.supervisor.info('/a//codes').restarts, 0);
  await assertNothingLeft(h);
});

test('destroy stops restarts for good and leaves no cgroup', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice//loop';
  await h.supervisor.create(spec(key, ['/bin/sleep', '0.05'], { restart: 'always' }));
  await eventually('a restart', () => h.supervisor.info(key).restarts >= 1);
  await h.supervisor.destroy(key);
  const after = h.events.list({ workload: key }).length;
  assert.equal(kindsOf(h.events, key).at(-1), 'destroyed');
  assert.deepEqual(h.driver.list(), []);
  assert.deepEqual(h.supervisor.list(), []);
  // Longer than several backoffs (10–50 ms): a restart would have happened by now.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(h.events.list({ workload: key }).length, after);
  assert.deepEqual(h.driver.list(), []);
  await assertNothingLeft(h);
});

test('stop kills a restarting workload and never restarts it; it stays listed until destroyed', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice//stopped';
  await h.supervisor.create(spec(key, ['/bin/sleep', '60'], { restart: 'always' }));
  await h.supervisor.stop(key);
  assert.equal(h.supervisor.info(key).state, 'exited');
  assert.equal(h.supervisor.info(key).pid, undefined);
  assert.deepEqual(kindsOf(h.events, key), ['created', 'started', 'exited']);
  assert.equal(h.events.list({ workload: key })[2].signal, 'SIGKILL');
  assert.deepEqual(h.driver.list(), [cgroupNameOf(key)]);
  assert.equal(h.supervisor.stats(key).pids, 0);
  // Longer than several backoffs (10–50 ms): a restart would have happened by now.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(h.supervisor.info(key).restarts, 0);
  assert.deepEqual(kindsOf(h.events, key), ['created', 'started', 'exited']);
  await h.supervisor.destroy(key);
  assert.deepEqual(kindsOf(h.events, key), ['created', 'started', 'exited', 'destroyed']);
  await assertNothingLeft(h);
});

test('destroyUnder destroys exactly the subtree: Carol’s workloads, not Dan’s or Carolyn’s', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const keys = ['/alice/carol//web', '/alice/carol/erin//db', '/alice/dan//web', '/alice/carolyn//web'];
  for (const key of keys) await h.supervisor.create(spec(key, ['/bin/sleep', '60']));
  const destroyed = await h.supervisor.destroyUnder('/alice/carol');
  assert.deepEqual(destroyed, ['/alice/carol//web', '/alice/carol/erin//db']);
  assert.deepEqual(
    h.supervisor.list().map((info) => info.key),
    ['/alice/carolyn//web', '/alice/dan//web'],
  );
  assert.deepEqual(
    h.supervisor.list('/alice/dan').map((info) => info.key),
    ['/alice/dan//web'],
  );
  for (const key of destroyed) assert.equal(kindsOf(h.events, key).at(-1), 'destroyed-by-revocation');
  assert.deepEqual(
    h.driver.list(),
    [cgroupNameOf('/alice/carolyn//web'), cgroupNameOf('/alice/dan//web')].sort(),
  );
  for (const key of ['/alice/dan//web', '/alice/carolyn//web'])
    assert.equal(h.supervisor.info(key).state, 'running');
  await assertNothingLeft(h);
});

test('close() kills everything, removes every cgroup and layer, and refuses create afterwards', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const pids: number[] = [];
  for (const key of ['/x//one', '/x//two']) {
    const info = await h.supervisor.create(spec(key, ['/bin/sleep', '60'], { restart: 'always' }));
    pids.push(info.pid!);
  }
  await h.supervisor.close();
  for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `process ${pid} survived`);
  assert.deepEqual(h.driver.list(), []);
  assert.equal(existsSync(join(h.stateDir, cgroupNameOf('/x//one'))), false);
  await assert.rejects(
    h.supervisor.create(spec('/x//three', ['/bin/true'])),
    refusal('failed_precondition', /closed/),
  );
  await assertNothingLeft(h);
});
