// cgroup v2: the parsing and path computation every v2 machine relies on,
// tested from texts; and the driver for real on whatever cgroup2 mount this
// machine has. Here (hybrid v1) the unified mount has no limit controllers, so
// groups, processes, cgroup.kill and removal run for real and the limit tests
// skip, saying so; on a v2 host they all run.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { cgroupLayout, parseMounts, parseProcCgroup } from '../../src/workloads/cgroups/detect.ts';
import { freezeKillThaw, killEveryTask } from '../../src/workloads/cgroups/kill-tasks.ts';
import { CgroupV2Driver, controllersIn, v2Freezer, v2Stats } from '../../src/workloads/cgroups/v2.ts';
import { eventually } from '../support/eventually.ts';
import { refusal } from '../support/refusals.ts';

const MiB = 1 << 20;

test('v2 statistics: cpu.stat usage_usec in nanoseconds, memory current and peak, oom_kill, pids', () => {
  const stats = v2Stats({
    cpuStat: 'usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n',
    memoryCurrent: '8388608\n',
    memoryPeak: '16777216\n',
    memoryEvents: 'low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n',
    pidsCurrent: '4\n',
  });
  assert.deepEqual(stats, {
    cpuNanos: 1_234_567_000,
    memoryBytes: 8 * MiB,
    memoryPeakBytes: 16 * MiB,
    pids: 4,
    oomKills: 2,
  });
});

test('v2 statistics without memory.peak (before Linux 5.19) or without controllers', () => {
  assert.deepEqual(v2Stats({ cpuStat: 'usage_usec 10\n', memoryCurrent: '4096\n' }), {
    cpuNanos: 10_000,
    memoryBytes: 4096,
    memoryPeakBytes: 4096,
    pids: 0,
    oomKills: 0,
  });
  assert.deepEqual(v2Stats({ cpuStat: '' }), {
    cpuNanos: 0,
    memoryBytes: 0,
    memoryPeakBytes: 0,
    pids: 0,
    oomKills: 0,
  });
});

test('v2 controllers: only the limit controllers are taken from cgroup.controllers', () => {
  assert.deepEqual(controllersIn('cpuset cpu io memory hugetlb pids rdma misc\n'), [
    'memory',
    'cpuset',
    'pids',
  ]);
  assert.deepEqual(controllersIn('hugetlb\n'), []);
  assert.deepEqual(controllersIn('\n'), []);
});

test('v2 paths: a systemd service own cgroup, and the driver base beneath it', () => {
  const mounts =
    'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0\n';
  const layout = cgroupLayout(mounts, '0::/system.slice/sigil-agent.service\n');
  assert.deepEqual(layout, { version: 2, ownDirectory: '/sys/fs/cgroup/system.slice/sigil-agent.service' });
  const driver = new CgroupV2Driver({
    ownDirectory: layout.version === 2 ? layout.ownDirectory : '',
    base: 'w',
  });
  assert.deepEqual(driver.baseDirectories, ['/sys/fs/cgroup/system.slice/sigil-agent.service/w']);
  assert.throws(
    () => new CgroupV2Driver({ ownDirectory: '/sys/fs/cgroup', base: '..' }),
    refusal('invalid_argument', /cgroup base/),
  );
});

// The real part: this machine's cgroup2 mount, if it has one and we may write to it.
const unified = parseMounts(readFileSync('/proc/self/mounts', 'utf8')).find(
  (mount) => mount.type === 'cgroup2',
);
const ownV2Path = parseProcCgroup(readFileSync('/proc/self/cgroup', 'utf8')).v2;
const ownV2 = unified && ownV2Path !== undefined ? join(unified.mountPoint, ownV2Path.slice(1)) : undefined;
const realSkip =
  ownV2 === undefined
    ? 'no cgroup2 filesystem is mounted here'
    : process.getuid?.() !== 0
      ? 'cgroups need root'
      : !existsSync(ownV2)
        ? `this process's v2 cgroup ${ownV2} is not visible`
        : undefined;
const RUN = `sigil-test-${process.pid}-${randomBytes(3).toString('hex')}`;
let drivers = 0;

function realDriver(t: TestContext): CgroupV2Driver | undefined {
  if (realSkip !== undefined) {
    t.skip(realSkip);
    return undefined;
  }
  const driver = new CgroupV2Driver({ ownDirectory: ownV2!, base: `${RUN}-${++drivers}` });
  t.after(async () => {
    for (const name of driver.list()) await driver.open(name).remove();
    await driver.removeBase();
  });
  return driver;
}

/** The reason the limit tests cannot run here, or undefined when memory, cpuset and pids are all delegated. */
function missingControllers(driver: CgroupV2Driver): string | undefined {
  const available: string[] = driver.availableControllers();
  const missing = ['memory', 'cpuset', 'pids'].filter((controller) => !available.includes(controller));
  if (missing.length === 0) return undefined;
  const has = readFileSync(join(ownV2!, 'cgroup.controllers'), 'utf8').trim() || 'none';
  return `no v2 ${missing.join(', ')} controller below ${ownV2} (it offers: ${has}); on this machine they are v1 hierarchies`;
}

function spawnKilledAfter(t: TestContext, command: string, args: string[]): ChildProcess {
  const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'ignore'] });
  t.after(() => {
    child.kill('SIGKILL');
  });
  return child;
}

async function assertCleanedUp(driver: CgroupV2Driver): Promise<void> {
  for (const name of driver.list()) await driver.open(name).remove();
  await driver.removeBase();
  assert.equal(existsSync(driver.baseDirectories[0]), false, driver.baseDirectories[0]);
}

test('real v2: a group takes processes, cgroup.kill empties it, remove leaves no directory', async (t) => {
  const driver = realDriver(t);
  if (!driver) return;
  const group = driver.create('web');
  const directory = join(driver.baseDirectories[0], 'web');
  assert.deepEqual(group.directories, [directory]);
  assert.deepEqual(driver.list(), ['web']);
  const children: ChildProcess[] = [];
  for (let i = 0; i < 2; i++) {
    const child = spawnKilledAfter(t, 'sleep', ['30']);
    await once(child, 'spawn');
    group.addProcess(child.pid!);
    children.push(child);
  }
  assert.deepEqual(
    group.processes(),
    children.map((child) => child.pid).sort((a, b) => a! - b!),
  );
  assert.match(
    readFileSync(`/proc/${children[0].pid}/cgroup`, 'utf8'),
    new RegExp(`0::.*/${RUN}-\\d+/web\\n`),
  );
  const stats = group.stats();
  assert.ok(Number.isSafeInteger(stats.cpuNanos) && stats.cpuNanos >= 0, JSON.stringify(stats));
  const exits = children.map((child) => once(child, 'exit'));
  await group.killAll();
  assert.deepEqual(group.processes(), []);
  for (const exit of exits) assert.equal((await exit)[1], 'SIGKILL');
  await group.remove();
  assert.equal(existsSync(directory), false);
  await group.remove();
  await assertCleanedUp(driver);
});

test('real v2: without cgroup.kill (before Linux 5.14), freeze, kill and thaw empty the group', async (t) => {
  const driver = realDriver(t);
  if (!driver) return;
  const group = driver.create('family');
  const directory = group.directories[0];
  const child = spawnKilledAfter(t, '/bin/sh', ['-c', 'read x; sleep 30 & sleep 30 & wait']);
  await once(child, 'spawn');
  group.addProcess(child.pid!);
  child.stdin!.write('go\n');
  await eventually('the shell and its two sleeps in the group', () => group.processes().length === 3);
  const exited = once(child, 'exit');
  const freezer = v2Freezer(directory);
  const pids = () => group.processes();
  await killEveryTask({ what: 'family', pids, killRound: () => freezeKillThaw(freezer, pids) }, 5_000);
  assert.deepEqual(group.processes(), []);
  assert.equal((await exited)[1], 'SIGKILL');
  assert.equal(readFileSync(join(directory, 'cgroup.freeze'), 'utf8').trim(), '0');
  await assertCleanedUp(driver);
});

test('real v2: refused names, a taken name, a missing group, and a base still holding groups', async (t) => {
  const driver = realDriver(t);
  if (!driver) return;
  for (const name of ['..', 'a/b', '', 'x'.repeat(65), 'a\u0000'])
    assert.throws(() => driver.create(name), refusal('invalid_argument', /cgroup name/));
  assert.throws(() => driver.create('cgroup.procs'), refusal('invalid_argument', /control file/));
  driver.create('taken');
  assert.throws(() => driver.create('taken'), refusal('already_exists', /cgroup taken already exists/));
  assert.throws(() => driver.open('absent'), refusal('not_found', /cgroup absent does not exist/));
  await assert.rejects(
    driver.removeBase(),
    refusal('failed_precondition', /still holds workload cgroups: taken/),
  );
  assert.deepEqual(driver.list(), ['taken']);
  await assertCleanedUp(driver);
});

test('real v2: a limit whose controller is not delegated is refused and nothing is made', async (t) => {
  const driver = realDriver(t);
  if (!driver) return;
  if (missingControllers(driver) === undefined)
    return t.skip('every limit controller is delegated here, so no limit can be refused for lacking one');
  const lacking = driver.availableControllers().includes('memory')
    ? { pidsMax: 4 }
    : { memoryBytes: 32 * MiB };
  assert.throws(
    () => driver.create('limited', lacking),
    refusal('failed_precondition', /controller is not enabled/),
  );
  assert.equal(existsSync(join(driver.baseDirectories[0], 'limited')), false);
  await assertCleanedUp(driver);
});

test('real v2: limits reach memory.max, cpuset.cpus and pids.max', async (t) => {
  const driver = realDriver(t);
  if (!driver) return;
  const missing = missingControllers(driver);
  if (missing) return t.skip(missing);
  const group = driver.create('limited', { memoryBytes: 32 * MiB, cpus: [0], pidsMax: 10 });
  const file = (name: string) => readFileSync(join(group.directories[0], name), 'utf8').trim();
  assert.equal(file('memory.max'), String(32 * MiB));
  assert.equal(file('cpuset.cpus'), '0');
  assert.equal(file('pids.max'), '10');
  assert.throws(
    () => group.setLimits({ pidsMax: 20, cpus: [4000] }),
    refusal('failed_precondition', /CPU 4000/),
  );
  assert.equal(file('pids.max'), '10');
  await assertCleanedUp(driver);
});

test('real v2: a process over memory.max is OOM-killed and counted in memory.events', async (t) => {
  const driver = realDriver(t);
  if (!driver) return;
  const missing = missingControllers(driver);
  if (missing) return t.skip(missing);
  const python = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' });
  if (python.status !== 0) return t.skip('python3 is not installed (it makes the process that allocates)');
  const group = driver.create('hog', { memoryBytes: 16 * MiB });
  const child = spawnKilledAfter(t, python.stdout.trim(), [
    '-c',
    'import sys\nsys.stdin.readline()\nb = b"x" * (64 << 20)',
  ]);
  await once(child, 'spawn');
  group.addProcess(child.pid!);
  const exited = once(child, 'exit');
  child.stdin!.end('go\n');
  assert.equal((await exited)[1], 'SIGKILL');
  assert.ok(group.stats().oomKills >= 1, JSON.stringify(group.stats()));
  await assertCleanedUp(driver);
});

test('real v2: no test left a cgroup directory behind', (t) => {
  if (realSkip !== undefined) return t.skip(realSkip);
  const left = readdirSync(ownV2!).filter((entry) => entry.startsWith(RUN));
  assert.deepEqual(left, [], `${ownV2} still holds ${left.join(', ')}`);
});
