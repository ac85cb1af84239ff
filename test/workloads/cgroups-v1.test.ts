// cgroup v1 for real, on this machine's hierarchies: each test makes its own
// driver base beneath this process's cgroup, and removes it (workload groups
// first) in t.after even when it fails; the last test checks nothing was left.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { type TestContext, test } from 'node:test';
import type { CgroupDriver, WorkloadCgroup } from '../../src/workloads/cgroups/cgroup.ts';
import { cgroupLayout, detectCgroups } from '../../src/workloads/cgroups/detect.ts';
import { V1_CONTROLLERS, type V1Controller } from '../../src/workloads/cgroups/v1.ts';
import { eventually } from '../support/eventually.ts';
import { refusal } from '../support/refusals.ts';

const layout = cgroupLayout(
  readFileSync('/proc/self/mounts', 'utf8'),
  readFileSync('/proc/self/cgroup', 'utf8'),
);
const skipReason =
  layout.version !== 1
    ? 'this machine has cgroup v2, not v1'
    : process.getuid?.() !== 0
      ? 'cgroups need root'
      : undefined;
const own = layout.version === 1 ? layout.ownDirectories : undefined;
const RUN = `sigil-test-${process.pid}-${randomBytes(3).toString('hex')}`;
let drivers = 0;
const MiB = 1 << 20;

/** A driver with a base of its own, removed with every group in it when the test ends. */
function newDriver(t: TestContext): CgroupDriver {
  const driver = detectCgroups({ base: `${RUN}-${++drivers}` });
  t.after(() => removeEverything(driver));
  return driver;
}

async function removeEverything(driver: CgroupDriver): Promise<void> {
  for (const name of driver.list()) await driver.open(name).remove();
  await driver.removeBase();
}

/** Removes everything and asserts that no directory of it is left in any hierarchy. */
async function assertCleanedUp(driver: CgroupDriver): Promise<void> {
  await removeEverything(driver);
  for (const directory of driver.baseDirectories) assert.equal(existsSync(directory), false, directory);
}

/** The group's directory in `controller`'s hierarchy (from the layout, not from the code under test). */
function directoryOf(driver: CgroupDriver, name: string, controller: V1Controller): string {
  const base = driver.baseDirectories.find((directory) => directory.startsWith(`${own![controller]}/`))!;
  return join(base, name);
}

const read = (path: string) => readFileSync(path, 'utf8').trim();

function spawnKilledAfter(t: TestContext, command: string, args: string[]): ChildProcess {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'ignore'] });
  t.after(() => {
    child.kill('SIGKILL');
  });
  return child;
}

/** The child's first line of output; fails if it exits first. */
function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code, signal) =>
      reject(new Error(`exited (${code ?? signal}) before writing a line`)),
    );
  });
}

/** The real python3 binary (not a shim), or undefined. */
function python(): string | undefined {
  const found = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() || undefined : undefined;
}

function skipped(t: TestContext): boolean {
  if (skipReason === undefined) return false;
  t.skip(skipReason);
  return true;
}

test('create makes the group in every v1 hierarchy beneath this process own cgroup, limits in its files', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  const group = driver.create('web', { memoryBytes: 32 * MiB, cpus: [0], pidsMax: 10 });
  assert.deepEqual(driver.list(), ['web']);
  for (const controller of V1_CONTROLLERS) {
    const directory = directoryOf(driver, 'web', controller);
    assert.ok(directory.startsWith(`${own![controller]}/${RUN}-`), directory);
    assert.ok(group.directories.includes(directory), directory);
    assert.ok(existsSync(join(directory, 'cgroup.procs')), directory);
  }
  const memory = directoryOf(driver, 'web', 'memory');
  const cpuset = directoryOf(driver, 'web', 'cpuset');
  assert.equal(read(join(memory, 'memory.limit_in_bytes')), String(32 * MiB));
  if (existsSync(join(memory, 'memory.memsw.limit_in_bytes')))
    assert.equal(read(join(memory, 'memory.memsw.limit_in_bytes')), String(32 * MiB));
  assert.equal(read(join(cpuset, 'cpuset.cpus')), '0');
  assert.equal(read(join(cpuset, 'cpuset.mems')), read(join(own!.cpuset, 'cpuset.effective_mems')));
  assert.equal(read(join(directoryOf(driver, 'web', 'pids'), 'pids.max')), '10');

  // Raising and lowering memory both work (memory+swap must stay ≥ memory at every step).
  group.setLimits({ memoryBytes: 64 * MiB, pidsMax: 20 });
  assert.equal(read(join(memory, 'memory.limit_in_bytes')), String(64 * MiB));
  assert.equal(read(join(directoryOf(driver, 'web', 'pids'), 'pids.max')), '20');
  group.setLimits({ memoryBytes: 16 * MiB });
  assert.equal(read(join(memory, 'memory.limit_in_bytes')), String(16 * MiB));

  // Without a cpus limit a group gets every CPU its parent has.
  driver.create('all-cpus');
  assert.equal(
    read(join(directoryOf(driver, 'all-cpus', 'cpuset'), 'cpuset.cpus')),
    read(join(own!.cpuset, 'cpuset.effective_cpus')),
  );
  await assertCleanedUp(driver);
});

test('a process added is listed, counted, and in the group in every hierarchy', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  const group = driver.create('sleeper', { pidsMax: 5 });
  const child = spawnKilledAfter(t, 'sleep', ['30']);
  await once(child, 'spawn');
  group.addProcess(child.pid!);
  assert.deepEqual(group.processes(), [child.pid]);
  const procCgroup = readFileSync(`/proc/${child.pid}/cgroup`, 'utf8');
  for (const controller of V1_CONTROLLERS)
    assert.match(procCgroup, new RegExp(`:${controller}:(/.*)?/${RUN}-\\d+/sleeper\\n`), controller);
  const stats = group.stats();
  assert.equal(stats.pids, 1);
  assert.equal(stats.oomKills, 0);
  assert.ok(stats.memoryPeakBytes >= stats.memoryBytes, JSON.stringify(stats));
  assert.ok(Number.isSafeInteger(stats.cpuNanos) && stats.cpuNanos >= 0, JSON.stringify(stats));
  const exited = once(child, 'exit');
  await assertCleanedUp(driver);
  assert.equal((await exited)[1], 'SIGKILL');
});

test('a process over the memory limit is OOM-killed and counted', async (t) => {
  if (skipped(t)) return;
  const executable = python();
  if (!executable) return t.skip('python3 is not installed (it makes the process that allocates)');
  const driver = newDriver(t);
  const group = driver.create('hog', { memoryBytes: 16 * MiB });
  // It waits for a line so that its memory is charged to the group, then touches 64 MiB.
  const child = spawnKilledAfter(t, executable, [
    '-c',
    'import sys\nsys.stdin.readline()\nb = b"x" * (64 << 20)\nprint("survived", flush=True)',
  ]);
  await once(child, 'spawn');
  group.addProcess(child.pid!);
  const exited = once(child, 'exit');
  child.stdin!.end('go\n');
  const [code, signal] = await exited;
  assert.equal(signal, 'SIGKILL', `exit code ${code}`);
  const stats = group.stats();
  assert.ok(stats.oomKills >= 1, JSON.stringify(stats));
  assert.ok(stats.memoryPeakBytes > 0 && stats.memoryPeakBytes <= 16 * MiB, JSON.stringify(stats));
  assert.deepEqual(group.processes(), []);
  await assertCleanedUp(driver);
});

test('pids.max refuses forks beyond the limit', async (t) => {
  if (skipped(t)) return;
  const executable = python();
  if (!executable) return t.skip('python3 is not installed (it makes the process that forks)');
  const driver = newDriver(t);
  const group = driver.create('forker', { pidsMax: 3 });
  const script = [
    'import os, sys, time',
    'sys.stdin.readline()',
    'forked = refused = 0',
    'for _ in range(5):',
    '    try:',
    '        pid = os.fork()',
    '    except BlockingIOError:',
    '        refused += 1',
    '        continue',
    '    if pid == 0:',
    '        time.sleep(30)',
    '        os._exit(0)',
    '    forked += 1',
    'print(forked, refused, flush=True)',
    'time.sleep(30)',
  ].join('\n');
  const child = spawnKilledAfter(t, executable, ['-c', script]);
  await once(child, 'spawn');
  group.addProcess(child.pid!);
  const line = firstLine(child);
  child.stdin!.write('go\n');
  assert.equal(await line, '2 3', 'the parent and two children fill pids.max 3; the other three forks fail');
  assert.equal(group.processes().length, 3);
  assert.equal(group.stats().pids, 3);
  await group.killAll();
  assert.deepEqual(group.processes(), []);
  await assertCleanedUp(driver);
});

test('killAll empties the group, children forked inside it included, and leaves it thawed', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  const group = driver.create('family');
  const child = spawnKilledAfter(t, '/bin/sh', ['-c', 'read x; sleep 30 & sleep 30 & echo forked; wait']);
  await once(child, 'spawn');
  group.addProcess(child.pid!);
  const line = firstLine(child);
  child.stdin!.write('go\n');
  assert.equal(await line, 'forked');
  await eventually('the shell and its two sleeps in the group', () => group.processes().length === 3);
  const exited = once(child, 'exit');
  await group.killAll();
  assert.deepEqual(group.processes(), []);
  assert.equal((await exited)[1], 'SIGKILL');
  assert.equal(read(join(directoryOf(driver, 'family', 'freezer'), 'freezer.state')), 'THAWED');
  // An empty group is still there and usable until it is removed.
  await group.killAll();
  assert.deepEqual(driver.list(), ['family']);
  await assertCleanedUp(driver);
});

test('remove kills what runs, leaves no directory in any hierarchy, and may be repeated', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  const group = driver.create('doomed', { memoryBytes: 64 * MiB, pidsMax: 8 });
  const child = spawnKilledAfter(t, 'sleep', ['30']);
  await once(child, 'spawn');
  group.addProcess(child.pid!);
  const exited = once(child, 'exit');
  await group.remove();
  assert.equal((await exited)[1], 'SIGKILL');
  for (const controller of V1_CONTROLLERS)
    assert.equal(existsSync(directoryOf(driver, 'doomed', controller)), false, controller);
  await group.remove();
  assert.deepEqual(group.processes(), []);
  assert.deepEqual(driver.list(), []);
  await assertCleanedUp(driver);
});

test('open finds a group made earlier (as after a restart); list names only valid groups', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  driver.create('kept', { pidsMax: 4 });
  const again = detectCgroups({ base: driver.baseDirectories[0].split('/').at(-1) });
  const group = again.open('kept');
  assert.deepEqual(group.directories.toSorted(), driver.open('kept').directories.toSorted());
  assert.deepEqual(again.list(), ['kept']);
  await group.remove();
  await assertCleanedUp(driver);
});

test('refused create: a name that exists, and the existing group is unchanged', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  driver.create('web', { pidsMax: 7 });
  assert.throws(
    () => driver.create('web', { pidsMax: 99 }),
    refusal('already_exists', /cgroup web already exists/),
  );
  assert.equal(read(join(directoryOf(driver, 'web', 'pids'), 'pids.max')), '7');
  await assertCleanedUp(driver);
});

test('refused create: the name of a control file ("tasks", "cgroup.procs")', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  for (const name of ['tasks', 'cgroup.procs', 'notify_on_release'])
    assert.throws(() => driver.create(name), refusal('invalid_argument', /name of a cgroup control file/));
  assert.deepEqual(driver.list(), []);
  await assertCleanedUp(driver);
});

test('refused create: CPUs outside the parent effective CPUs, naming them, and nothing is made', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  assert.throws(
    () => driver.create('greedy', { cpus: [0, 4000] }),
    refusal('failed_precondition', /CPU 4000 is outside the CPUs available to .*\(\d/),
  );
  for (const controller of V1_CONTROLLERS)
    assert.equal(existsSync(directoryOf(driver, 'greedy', controller)), false, controller);
  await assertCleanedUp(driver);
});

test('refused create: bad names and bad limits make nothing', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  for (const name of ['..', 'a/b', '', 'x'.repeat(65), 'a\nb'])
    assert.throws(() => driver.create(name), refusal('invalid_argument', /cgroup name/));
  assert.throws(() => driver.create('ok', { memoryBytes: 100 }), refusal('invalid_argument', /memoryBytes/));
  assert.throws(() => driver.create('ok', { pidsMax: 0 }), refusal('invalid_argument', /pidsMax/));
  assert.throws(() => driver.create('ok', { cpus: [] }), refusal('invalid_argument', /at least one CPU/));
  assert.deepEqual(driver.list(), []);
  for (const controller of V1_CONTROLLERS)
    assert.equal(existsSync(directoryOf(driver, 'ok', controller)), false, controller);
  await assertCleanedUp(driver);
});

test('refused setLimits: one bad field among good ones changes nothing', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  const group = driver.create('steady', { memoryBytes: 32 * MiB, pidsMax: 5 });
  const memory = join(directoryOf(driver, 'steady', 'memory'), 'memory.limit_in_bytes');
  const pids = join(directoryOf(driver, 'steady', 'pids'), 'pids.max');
  assert.throws(
    () => group.setLimits({ memoryBytes: 64 * MiB, pidsMax: 9, cpus: [4000] }),
    refusal('failed_precondition', /CPU 4000/),
  );
  assert.throws(
    () => group.setLimits({ memoryBytes: 64 * MiB, pidsMax: -1 }),
    refusal('invalid_argument', /pidsMax/),
  );
  assert.equal(read(memory), String(32 * MiB));
  assert.equal(read(pids), '5');
  await assertCleanedUp(driver);
});

test('refused addProcess: not a PID, and a PID no process has', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  const group: WorkloadCgroup = driver.create('lonely');
  for (const pid of [0, -1, 1.5, Number.NaN, 2 ** 23])
    assert.throws(
      () => group.addProcess(pid),
      refusal('invalid_argument', /process id: must be a whole number/),
    );
  const gone = spawn('true');
  await once(gone, 'exit');
  if (!existsSync(`/proc/${gone.pid}`))
    assert.throws(() => group.addProcess(gone.pid!), refusal('not_found', /process \d+ does not exist/));
  assert.deepEqual(group.processes(), []);
  await assertCleanedUp(driver);
});

test('refused open and removeBase: a group that does not exist, a base that still holds groups', async (t) => {
  if (skipped(t)) return;
  const driver = newDriver(t);
  assert.throws(() => driver.open('nobody'), refusal('not_found', /cgroup nobody does not exist/));
  assert.throws(() => driver.open('../x'), refusal('invalid_argument', /cgroup name/));
  driver.create('left');
  await assert.rejects(
    driver.removeBase(),
    refusal('failed_precondition', /still holds workload cgroups: left/),
  );
  assert.deepEqual(driver.list(), ['left']);
  await assertCleanedUp(driver);
});

test('no test left a cgroup directory behind in any hierarchy', (t) => {
  if (skipped(t)) return;
  for (const controller of V1_CONTROLLERS) {
    const left = readdirSync(own![controller]).filter((entry) => entry.startsWith(RUN));
    assert.deepEqual(left, [], `${own![controller]} still holds ${left.join(', ')}`);
  }
});
