// A daemon killed with SIGKILL leaves its workloads running, their cgroups,
// overlay mounts and layer directories; cleanLeftovers removes all of it.
// The crash is real: a child process runs a supervisor with a busybox
// workload and is killed -9, then the test checks /proc, the cgroup
// hierarchy, /proc/self/mountinfo and the state directory.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { BlockStore } from '../../src/workloads/block-devices.ts';
import { detectCgroups } from '../../src/workloads/cgroups/detect.ts';
import { importImage, openImageStore } from '../../src/workloads/images.ts';
import { cleanLeftovers, mountsUnder } from '../../src/workloads/leftovers.ts';
import { eventually } from '../support/eventually.ts';
import { refusal } from '../support/refusals.ts';
import { buildBusyboxRootfs, tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const unavailable = workloadsUnavailable();
const SRC = new URL('../../src/workloads/', import.meta.url).pathname;

function skipped(t: TestContext): boolean {
  if (unavailable === null) return false;
  t.skip(unavailable);
  return true;
}

/** Alive and not a zombie (a zombie holds no mount, cgroup or namespace). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const DAEMON = (base: string, nodeDir: string) => `
import { detectCgroups } from ${JSON.stringify(join(SRC, 'cgroups/detect.ts'))};
import { EventLog } from ${JSON.stringify(join(SRC, 'event-log.ts'))};
import { openImageStore } from ${JSON.stringify(join(SRC, 'images.ts'))};
import { WorkloadSupervisor } from ${JSON.stringify(join(SRC, 'supervisor.ts'))};
const supervisor = new WorkloadSupervisor({
  cgroups: detectCgroups({ base: ${JSON.stringify(base)} }),
  images: openImageStore(${JSON.stringify(nodeDir)}),
  events: EventLog.open(${JSON.stringify(join(nodeDir, 'events.db'))}),
  stateDir: ${JSON.stringify(join(nodeDir, 'layers'))},
});
const pids = [];
for (const name of ['web', 'db']) {
  const info = await supervisor.create({
    key: '/alice//' + name, name, image: 'test/busybox:1', command: ['/bin/sh', '-c', 'sleep 1000 & sleep 1000'],
  });
  pids.push(info.pid);
}
process.stdout.write(JSON.stringify({ pids }) + '\\n');
setInterval(() => {}, 1000);
`;

test('after kill -9 of a daemon, cleanLeftovers leaves no cgroup, process, mount or layer', async (t) => {
  if (skipped(t)) return;
  const dir = tempDirFor(t, 'sigil-leftovers-');
  const nodeDir = join(dir, 'node');
  const source = tempDirFor(t, 'sigil-image-');
  buildBusyboxRootfs(source);
  await importImage(openImageStore(nodeDir), source, 'test/busybox:1');
  const base = `sigil-test-left-${process.pid}-${randomBytes(3).toString('hex')}`;
  const driver = detectCgroups({ base });
  const stateDir = join(nodeDir, 'layers');
  // Whatever happens, nothing of this test stays (registered last, so it runs before the directory goes).
  t.after(async () => {
    await cleanLeftovers({ cgroups: driver, stateDir }).catch(() => undefined);
    await driver.removeBase().catch(() => undefined);
  });

  const script = join(dir, 'daemon.ts');
  writeFileSync(script, DAEMON(base, nodeDir));
  const daemon = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => daemon.kill('SIGKILL'));
  let output = '';
  daemon.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const { pids } = JSON.parse(
    await eventually('the daemon to start its workloads', () => output.includes('\n') && output),
  ) as { pids: number[] };

  daemon.kill('SIGKILL');
  await new Promise((resolve) => daemon.once('exit', resolve));
  // What the crash left: the workloads run on, in their cgroups, on their mounts.
  const groups = driver.list();
  assert.equal(groups.length, 2);
  for (const pid of pids) assert.ok(alive(pid), `workload ${pid} survived its daemon`);
  const inGroups = groups.flatMap((name) => driver.open(name).processes());
  assert.ok(inGroups.length >= 4, `processes in the cgroups: ${inGroups.join(' ')}`);
  assert.equal(mountsUnder(readFileSync('/proc/self/mountinfo', 'utf8'), stateDir).length, 2);
  assert.equal(readdirSync(stateDir).length, 2);
  // A block device attached inside one workload's root when the daemon died: a loop mount on top.
  const blocks = BlockStore.open(join(dir, 'blocks-node'));
  await blocks.create('/alice', 'data', 8);
  const layer = readdirSync(stateDir)[0];
  const target = join(stateDir, layer, 'root', 'data');
  mkdirSync(target);
  await blocks.attach('/alice', 'data', target);
  const loops = () =>
    execFileSync('losetup', ['-a'], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.includes(blocks.dir));
  assert.equal(loops().length, 1);
  // And the daemon's network namespace, with a bridge in it.
  const namespace = `sigil-test-${randomBytes(4).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', namespace]);
  t.after(() => {
    if (existsSync(`/run/netns/${namespace}`)) execFileSync('ip', ['netns', 'delete', namespace]);
  });
  execFileSync('ip', ['-netns', namespace, 'link', 'add', 'br0', 'type', 'bridge']);

  const removed = await cleanLeftovers({ cgroups: driver, stateDir, networks: { namespace } });
  assert.deepEqual(removed.failures, []);
  assert.equal(removed.cgroups, 2);
  assert.ok(removed.processes >= 4);
  assert.equal(removed.mounts, 3);
  assert.equal(removed.layerDirectories, 2);
  assert.equal(removed.namespaces, 1);
  assert.equal(existsSync(`/run/netns/${namespace}`), false);
  assert.deepEqual(loops(), []);

  assert.deepEqual(driver.list(), []);
  await eventually('every workload process to be gone', () =>
    [...pids, ...inGroups].every((pid) => !alive(pid)),
  );
  // No launcher either: nothing in /proc still names a root under the state directory.
  await eventually('every launcher to be gone', () =>
    readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry) && alive(Number(entry)))
      .every((entry) => {
        try {
          return !readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(`--root=${stateDir}`);
        } catch {
          return true;
        }
      }),
  );
  assert.deepEqual(mountsUnder(readFileSync('/proc/self/mountinfo', 'utf8'), stateDir), []);
  assert.deepEqual(readdirSync(stateDir), []);
  await driver.removeBase();
  for (const directory of driver.baseDirectories) assert.equal(existsSync(directory), false);

  // A second run finds nothing.
  const again = await cleanLeftovers({ cgroups: driver, stateDir });
  assert.deepEqual(again, {
    cgroups: 0,
    processes: 0,
    launchers: 0,
    mounts: 0,
    layerDirectories: 0,
    namespaces: 0,
    failures: [],
  });
});

test('mountsUnder: strictly beneath, deepest and latest first, escapes decoded', () => {
  const info = [
    '20 1 0:1 / /srv rw - ext4 /dev/a rw',
    '30 20 0:2 / /srv/state/w-1/root rw - overlay overlay rw',
    '31 30 7:0 / /srv/state/w-1/root/data rw - ext4 /dev/loop0 rw',
    '32 20 0:3 / /srv/state/w-2/root rw - overlay overlay rw',
    '33 32 0:4 / /srv/state/w-2/root rw - overlay overlay rw',
    '34 20 0:5 / /srv/state\\040x/y rw - tmpfs tmpfs rw',
    '35 20 0:6 / /srv/state rw - tmpfs tmpfs rw',
    '36 20 0:7 / /srv/stateful/z rw - tmpfs tmpfs rw',
  ].join('\n');
  assert.deepEqual(mountsUnder(info, '/srv/state'), [
    '/srv/state/w-1/root/data',
    '/srv/state/w-2/root',
    '/srv/state/w-2/root',
    '/srv/state/w-1/root',
  ]);
  assert.deepEqual(mountsUnder(info, '/srv/state x'), ['/srv/state x/y']);
});

test('refused: a relative state directory, and a namespace the daemon does not make', async () => {
  const cgroups = { list: () => [] } as unknown as Parameters<typeof cleanLeftovers>[0]['cgroups'];
  await assert.rejects(
    cleanLeftovers({ cgroups, stateDir: 'layers' }),
    refusal('invalid_argument', /absolute path/),
  );
  await assert.rejects(
    cleanLeftovers({ cgroups, stateDir: '/nonexistent', networks: { namespace: 'default' } }),
    refusal('invalid_argument', /not a namespace the daemon makes/),
  );
});
