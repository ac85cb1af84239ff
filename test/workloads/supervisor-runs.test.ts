// What a run needs besides its process, against real parts: veths on real
// bridges (in a network namespace each test makes), ext4 block images on
// loop devices (block-devices.ts), pseudo-terminals, restart on request, interface counters.
// Every test closes its supervisor and networks in t.after and asserts no
// cgroup, veth or mount is left.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { mountBlockDevice } from '../../src/workloads/block-devices.ts';
import type { CgroupDriver } from '../../src/workloads/cgroups/cgroup.ts';
import { detectCgroups } from '../../src/workloads/cgroups/detect.ts';
import { EventLog } from '../../src/workloads/event-log.ts';
import { importImage, openImageStore } from '../../src/workloads/images.ts';
import { parseNetDev } from '../../src/workloads/interface-stats.ts';
import {
  hostInterfaceFor,
  openWorkloadNetworks,
  type WorkloadNetworks,
} from '../../src/workloads/networks.ts';
import {
  MAX_RAW_SUBSCRIBERS,
  type WorkloadSpec,
  WorkloadSupervisor,
} from '../../src/workloads/supervisor.ts';
import { eventually } from '../support/eventually.ts';
import { refusal } from '../support/refusals.ts';
import { answersFrom, buildBusyboxRootfs, tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const unavailable = workloadsUnavailable();
const RUN = `sigil-test-runs-${process.pid}-${randomBytes(3).toString('hex')}`;
const IMAGE = 'test/busybox:1';
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
let bases = 0;

interface Harness {
  supervisor: WorkloadSupervisor;
  driver: CgroupDriver;
  events: EventLog;
  networks?: WorkloadNetworks;
  dir: string;
}

async function harness(
  t: TestContext,
  options: { bridge?: string; image?: (source: string) => void } = {},
): Promise<Harness> {
  const dir = tempDirFor(t, 'sigil-runs-');
  const images = openImageStore(join(dir, 'node'));
  const source = tempDirFor(t, 'sigil-image-');
  buildBusyboxRootfs(source);
  options.image?.(source);
  await importImage(images, source, IMAGE);
  const events = EventLog.open(join(dir, 'events.db'));
  const driver = detectCgroups({ base: `${RUN}-${++bases}` });
  let networks: WorkloadNetworks | undefined;
  if (options.bridge) {
    networks = await openWorkloadNetworks({
      bridges: [options.bridge],
      namespace: { create: `t${process.pid}-${randomBytes(3).toString('hex')}` },
    });
  }
  const supervisor = new WorkloadSupervisor({
    cgroups: driver,
    images,
    events,
    stateDir: join(dir, 'node'),
    backoff: { initialMs: 10, maxMs: 50, resetAfterMs: 10_000 },
    mountBlock: mountBlockDevice,
    ...(networks ? { networks } : {}),
  });
  t.after(async () => {
    try {
      await supervisor.close();
      for (const name of driver.list()) await driver.open(name).remove();
      await driver.removeBase();
    } finally {
      await networks?.close();
      events.close();
    }
  });
  return { supervisor, driver, events, dir, ...(networks ? { networks } : {}) };
}

function spec(key: string, command: string[], more: Partial<WorkloadSpec> = {}): WorkloadSpec {
  return { key, name: 'web', image: IMAGE, command, ...more };
}

const consoleText = (h: Harness, key: string): string[] =>
  h.supervisor
    .console(key)
    .history()
    .map((line) => line.bytes.toString('utf8'));

const mountsUnder = (dir: string): string[] =>
  readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .filter((target) => target.startsWith(dir));

function hostLinks(networks: WorkloadNetworks): string[] {
  return execFileSync('ip', ['-netns', networks.namespace, '-o', 'link', 'show'], {
    env: TOOL_ENV,
    encoding: 'utf8',
  })
    .split('\n')
    .map((line) => line.split(': ')[1]?.split('@')[0])
    .filter((name): name is string => Boolean(name));
}

/** After close: no cgroup, no mount under the test's directory, no veth on the bridge. */
async function assertNothingLeft(h: Harness): Promise<void> {
  await h.supervisor.close();
  assert.deepEqual(h.driver.list(), []);
  assert.deepEqual(mountsUnder(h.dir), []);
  if (h.networks)
    assert.deepEqual(
      hostLinks(h.networks).filter((name) => name.startsWith('sgv')),
      [],
    );
}

function skipped(t: TestContext): boolean {
  if (unavailable === null) return false;
  t.skip(unavailable);
  return true;
}

test('/proc/net/dev is parsed into per-interface counters, malformed lines skipped', () => {
  const text = [
    'Inter-|   Receive                                                |  Transmit',
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
    '    lo:     196       2    0    0    0     0          0         0      196       2    0    0    0     0       0          0',
    '  eth0:    1500      10    0    0    0     0          0         0      900       7    0    0    0     0       0          0',
    'garbage line',
    '  bad: 1 2 3',
  ].join('\n');
  assert.deepEqual(parseNetDev(text), [
    { name: 'lo', rxBytes: 196, rxPackets: 2, txBytes: 196, txPackets: 2 },
    { name: 'eth0', rxBytes: 1500, rxPackets: 10, txBytes: 900, txPackets: 7 },
  ]);
});

test('a workload on a bridge gets its address and MAC, reaches the bridge, and counts bytes per interface', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t, { bridge: 'br0=10.91.0.1/24' });
  const key = '/alice//web';
  const info = await h.supervisor.create(
    spec(
      key,
      [
        '/bin/sh',
        '-c',
        `ip -o addr show eth0; ip -o link show eth0; for i in 1 2; do ${answersFrom('10.91.0.1')} && echo ANSWERED; done; sleep 1000`,
      ],
      {
        networks: ['br0'],
      },
    ),
  );
  assert.equal(info.addresses.length, 1);
  const [address] = info.addresses;
  assert.equal(address.network, 'br0');
  assert.match(address.address, /^10\.91\.0\.\d+\/24$/);
  assert.match(address.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  await eventually(
    'two answers',
    () => consoleText(h, key).filter((line) => line === 'ANSWERED').length === 2,
  );
  const lines = consoleText(h, key);
  assert.ok(
    lines.some((line) => line.includes(`inet ${address.address}`)),
    lines.join('\n'),
  );
  assert.ok(
    lines.some((line) => line.includes(`link/ether ${address.mac}`)),
    lines.join('\n'),
  );
  const eth0 = h.supervisor.stats(key).interfaces.find((entry) => entry.name === 'eth0');
  assert.ok(eth0, 'eth0 counted');
  assert.ok(
    eth0.txBytes > 0 && eth0.rxBytes > 0 && eth0.txPackets >= 2 && eth0.rxPackets >= 2,
    JSON.stringify(eth0),
  );
  assert.ok(hostLinks(h.networks!).includes(hostInterfaceFor(key)));

  await h.supervisor.destroy(key);
  assert.equal(
    hostLinks(h.networks!).includes(hostInterfaceFor(key)),
    false,
    'veth removed with the workload',
  );
  await assertNothingLeft(h);
});

test('two workloads on one bridge reach each other; a workload without a network has lo up only', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t, { bridge: 'br0=10.92.0.1/24' });
  const server = await h.supervisor.create(spec('/alice//a', ['/bin/sleep', '1000'], { networks: ['br0'] }));
  const peer = server.addresses[0].address.split('/')[0];
  await h.supervisor.create(
    spec('/alice//b', ['/bin/sh', '-c', `${answersFrom(peer)} && echo REACHED; sleep 1000`], {
      networks: ['br0'],
    }),
  );
  await eventually('b reaches a', () => consoleText(h, '/alice//b').includes('REACHED'));

  const alone = await h.supervisor.create(
    spec('/alice//c', [
      '/bin/sh',
      '-c',
      `ip -o link | cut -d: -f2; ${answersFrom('127.0.0.1')} && echo LO-UP; sleep 1000`,
    ]),
  );
  assert.deepEqual(alone.addresses, []);
  await eventually('lo answers', () => consoleText(h, '/alice//c').includes('LO-UP'));
  assert.deepEqual(
    consoleText(h, '/alice//c').filter((line) => line !== 'LO-UP'),
    [' lo'],
  );
  assert.deepEqual(
    h.supervisor.stats('/alice//c').interfaces.map((entry) => entry.name),
    ['lo'],
  );
  await assertNothingLeft(h);
});

test('refused: a bridge not configured, or more than one, leaving nothing behind', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t, { bridge: 'br0=10.93.0.1/24' });
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/true'], { networks: ['br9'] })),
    refusal('not_found', /bridge "br9": not configured on this node/),
  );
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/true'], { networks: ['br0', 'br0'] })),
    refusal('invalid_argument', /at most one bridge/),
  );
  assert.deepEqual(h.driver.list(), []);
  assert.deepEqual(h.events.list(), []);
  assert.deepEqual(h.supervisor.list(), []);
  assert.deepEqual(
    hostLinks(h.networks!).filter((name) => name.startsWith('sgv')),
    [],
  );
  await assertNothingLeft(h);
});

test('refused: a network on a node without bridges', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  await assert.rejects(
    h.supervisor.create(spec('/alice//web', ['/bin/true'], { networks: ['br0'] })),
    refusal('not_found', /not configured/),
  );
  assert.deepEqual(h.driver.list(), []);
  await assertNothingLeft(h);
});

function ext4Image(t: TestContext, dir: string): string {
  const content = join(dir, 'content');
  mkdirSync(content);
  writeFileSync(join(content, 'hello.txt'), 'from the block device\n');
  const file = join(dir, 'data.ext4');
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', content, file, '8M'], { env: TOOL_ENV });
  t.diagnostic(`ext4 image ${file}`);
  return file;
}

test('a block device is mounted inside for every run and unmounted after exit and destroy', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const file = ext4Image(t, h.dir);
  const key = '/alice//db';
  await h.supervisor.create(
    spec(key, ['/bin/sh', '-c', 'cat /srv/data/hello.txt; echo written > /srv/data/new.txt; exit 3'], {
      blocks: [{ file, mountPoint: '/srv/data' }],
      restart: { onFailure: {} },
    }),
  );
  await eventually('two runs read the block', () =>
    consoleText(h, key).filter((line) => line === 'from the block device').length >= 2 ? true : undefined,
  );
  await h.supervisor.destroy(key);
  assert.deepEqual(mountsUnder(h.dir), []);
  // The write went to the image, not the overlay.
  const check = join(h.dir, 'check');
  mkdirSync(check);
  execFileSync('mount', ['-o', 'loop,ro', file, check], { env: TOOL_ENV });
  try {
    assert.equal(readFileSync(join(check, 'new.txt'), 'utf8'), 'written\n');
  } finally {
    execFileSync('umount', [check], { env: TOOL_ENV });
  }
  await assertNothingLeft(h);
});

test('refused: block mount points that are relative, traverse, repeat or escape through a symlink', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const file = ext4Image(t, h.dir);
  for (const [mountPoint, pattern] of [
    ['data', /absolute path/],
    ['/srv/../etc', /'\.\.'/],
    ['/', /the root itself/],
  ] as const)
    await assert.rejects(
      h.supervisor.create(spec('/alice//db', ['/bin/true'], { blocks: [{ file, mountPoint }] })),
      refusal('invalid_argument', pattern),
    );
  await assert.rejects(
    h.supervisor.create(
      spec('/alice//db', ['/bin/true'], {
        blocks: [
          { file, mountPoint: '/a' },
          { file, mountPoint: '/a/' },
        ],
      }),
    ),
    refusal('invalid_argument', /mounted twice/),
  );
  // /bin/sh is a file inside: a mount point must be a directory.
  await assert.rejects(
    h.supervisor.create(spec('/alice//db', ['/bin/true'], { blocks: [{ file, mountPoint: '/bin/sh' }] })),
    refusal('invalid_argument', /not a directory/),
  );
  assert.deepEqual(h.driver.list(), []);
  assert.deepEqual(mountsUnder(h.dir), []);
  assert.deepEqual(h.events.list(), []);
  await assertNothingLeft(h);
});

test('a symlink in the image cannot carry a block mount out of the root', async (t) => {
  if (skipped(t)) return;
  const outside = `/tmp/${RUN}-outside`;
  const h = await harness(t, {
    image: (source) => {
      mkdirSync(join(source, outside), { recursive: true });
      symlinkSync(outside, join(source, 'store'));
      symlinkSync('/nowhere', join(source, 'dangling'));
    },
  });
  const file = ext4Image(t, h.dir);
  const key = '/alice//db';
  await h.supervisor.create(
    spec(key, ['/bin/sh', '-c', 'cat /store/data/hello.txt; sleep 1000'], {
      blocks: [{ file, mountPoint: '/store/data' }],
    }),
  );
  await eventually('the block is read', () => consoleText(h, key).includes('from the block device'));
  // An absolute link resolves inside the root, as the workload sees it: the host's path was never made or mounted.
  assert.equal(existsSync(outside), false);
  assert.deepEqual(mountsUnder(outside), []);
  assert.equal(mountsUnder(h.dir).filter((target) => target.endsWith(`${outside}/data`)).length, 1);
  await h.supervisor.destroy(key);
  await assert.rejects(
    h.supervisor.create(spec(key, ['/bin/true'], { blocks: [{ file, mountPoint: '/dangling/data' }] })),
    refusal('invalid_argument', /symbolic link to nothing/),
  );
  assert.equal(existsSync('/nowhere'), false);
  await assertNothingLeft(h);
});

test('tty: the workload has a terminal, input reaches it, its echo and output reach the console', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice//shell';
  await h.supervisor.create(
    spec(key, ['/bin/sh', '-c', 'tty; echo ready; read line; echo "got:$line"; sleep 1000'], { tty: true }),
  );
  assert.equal(h.supervisor.info(key).tty, true);
  await eventually('the workload is ready', () => consoleText(h, key).includes('ready'));
  assert.match(consoleText(h, key)[0], /^\/dev\/pts\/\d+$/);
  const raw: Buffer[] = [];
  const unsubscribe = h.supervisor.subscribeRaw(key, (chunk) => raw.push(chunk));
  h.supervisor.writeInput(key, Buffer.from('hello\n'));
  await eventually('the answer', () => consoleText(h, key).includes('got:hello'));
  // The terminal echoed the input; lines end without '\r' in the ring, raw bytes keep it.
  assert.ok(consoleText(h, key).includes('hello'), consoleText(h, key).join('|'));
  assert.ok(consoleText(h, key).every((line) => !line.includes('\r')));
  assert.match(Buffer.concat(raw).toString('utf8'), /got:hello\r\n/);
  unsubscribe();
  await h.supervisor.destroy(key);
  await assertNothingLeft(h);
});

test('tty: the cgroup is joined before the workload runs, and the terminal is its controlling one', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice//shell';
  const info = await h.supervisor.create(
    spec(key, ['/bin/sh', '-c', 'cat /proc/self/cgroup; cat /proc/1/stat; sleep 1000'], { tty: true }),
  );
  await eventually('the output', () => consoleText(h, key).some((line) => line.startsWith('1 (')));
  const lines = consoleText(h, key);
  // The very first thing it ran was already in the workload's cgroup.
  assert.ok(
    lines.some((line) => line.includes(info.cgroup)),
    lines.join('\n'),
  );
  // /proc/1/stat field 7 is tty_nr: non-zero means a controlling terminal.
  const stat = lines.find((line) => line.startsWith('1 ('))!;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  assert.notEqual(fields[4], '0', stat);
  await assertNothingLeft(h);
});

test('refused: input to a workload without a tty or not running; too many raw subscribers', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  await h.supervisor.create(spec('/alice//pipes', ['/bin/sleep', '1000']));
  assert.throws(
    () => h.supervisor.writeInput('/alice//pipes', Buffer.from('x')),
    refusal('failed_precondition', /has no terminal/),
  );
  await h.supervisor.create(spec('/alice//done', ['/bin/true'], { tty: true }));
  await eventually('exited', () => h.supervisor.info('/alice//done').state === 'exited');
  assert.throws(
    () => h.supervisor.writeInput('/alice//done', Buffer.from('x')),
    refusal('failed_precondition', /not running/),
  );
  assert.throws(() => h.supervisor.writeInput('/alice//nope', Buffer.from('x')), refusal('not_found'));
  const unsubscribes = Array.from({ length: MAX_RAW_SUBSCRIBERS }, () =>
    h.supervisor.subscribeRaw('/alice//pipes', () => undefined),
  );
  assert.throws(
    () => h.supervisor.subscribeRaw('/alice//pipes', () => undefined),
    refusal('resource_exhausted', /raw console subscribers/),
  );
  unsubscribes[0]();
  h.supervisor.subscribeRaw('/alice//pipes', () => undefined)();
  await assertNothingLeft(h);
});

test('restart with new arguments runs the new command, records restarted, and is not a failure', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t, { bridge: 'br0=10.94.0.1/24' });
  const key = '/alice//web';
  const first = await h.supervisor.create(
    spec(key, ['/bin/sh', '-c', 'echo first; sleep 1000'], { networks: ['br0'], tty: true, restart: 'no' }),
  );
  await eventually('first', () => consoleText(h, key).includes('first'));
  const second = await h.supervisor.restart(key, ['/bin/sh', '-c', 'echo second; sleep 1000']);
  assert.equal(second.state, 'running');
  assert.notEqual(second.pid, first.pid);
  assert.equal(second.restarts, 1);
  assert.deepEqual(second.addresses, first.addresses, 'the same address and MAC again');
  await eventually('second', () => consoleText(h, key).includes('second'));
  const kinds = h.events.list({ workload: key }).map((event) => event.kind);
  assert.deepEqual(kinds, ['created', 'started', 'exited', 'restarted']);
  assert.match(h.events.list({ workload: key }).at(-1)?.detail ?? '', /by request: new command/);
  assert.deepEqual(h.supervisor.specOf(key).command, ['/bin/sh', '-c', 'echo second; sleep 1000']);
  // A plain restart keeps the new command.
  await h.supervisor.restart(key);
  await eventually(
    'second again',
    () => consoleText(h, key).filter((line) => line === 'second').length === 2,
  );
  // Only one veth, and after destroy none.
  assert.equal(hostLinks(h.networks!).filter((name) => name.startsWith('sgv')).length, 1);
  await h.supervisor.destroy(key);
  await assertNothingLeft(h);
});

test('refused: restart with a command not in the image, leaving the run as it was', async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  const key = '/alice//web';
  const info = await h.supervisor.create(spec(key, ['/bin/sleep', '1000']));
  await assert.rejects(h.supervisor.restart(key, ['/bin/nope']), refusal('not_found', /not found/));
  assert.equal(h.supervisor.info(key).pid, info.pid);
  assert.equal(h.supervisor.info(key).state, 'running');
  await assert.rejects(h.supervisor.restart('/alice//other'), refusal('not_found'));
  await assertNothingLeft(h);
});

test("no leaked descriptors: a tty workload holds none of the daemon's, nor another workload's terminal", async (t) => {
  if (skipped(t)) return;
  const h = await harness(t);
  await h.supervisor.create(spec('/alice//a', ['/bin/sleep', '1000'], { tty: true }));
  const b = await h.supervisor.create(spec('/alice//b', ['/bin/sleep', '1000'], { tty: true }));
  const fds = await eventually('b runs sleep', () => {
    try {
      return readFileSync(`/proc/${b.pid}/cmdline`, 'utf8').includes('sleep')
        ? execFileSync('ls', [`/proc/${b.pid}/fd`], { encoding: 'utf8' })
            .trim()
            .split('\n')
            .sort()
        : undefined;
    } catch {
      return undefined;
    }
  });
  assert.deepEqual(fds, ['0', '1', '2']);
  assert.ok(existsSync(`/proc/${b.pid}`));
  await assertNothingLeft(h);
});
