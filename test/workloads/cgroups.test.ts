// The cgroup layer's pure parts: workload names, limits, CPU lists, and which
// interface and own cgroup /proc's texts describe (real cgroups: the v1 and
// v2 test files).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  cgroupLayout,
  detectCgroups,
  parseMounts,
  parseProcCgroup,
} from '../../src/workloads/cgroups/detect.ts';
import { checkLimits, formatCpuList, parseCpuList } from '../../src/workloads/cgroups/limits.ts';
import { checkCgroupName } from '../../src/workloads/cgroups/names.ts';
import { refusal } from '../support/refusals.ts';

test('a cgroup name may be letters, digits, ".", "_" and "-", up to 64 characters', () => {
  for (const name of ['web', 'web-1', 'a', 'carol.web_2', 'A'.repeat(64), '0'])
    assert.equal(checkCgroupName(name), name);
});

test('refused name: ".." (climbs out of the base)', () => {
  assert.throws(() => checkCgroupName('..'), refusal('invalid_argument', /"\.\.".*relative directory/));
  assert.throws(() => checkCgroupName('.'), refusal('invalid_argument', /relative directory/));
});

test('refused name: one with "/" (more than one path segment)', () => {
  for (const name of ['a/b', '/a', 'a/', '../etc', '/'])
    assert.throws(() => checkCgroupName(name), refusal('invalid_argument', /one path segment|relative/));
});

test('refused name: empty', () => {
  assert.throws(() => checkCgroupName(''), refusal('invalid_argument', /must not be empty/));
});

test('refused name: over 64 characters, without echoing it', () => {
  assert.throws(
    () => checkCgroupName('a'.repeat(65)),
    refusal('invalid_argument', /is 65 characters, at most 64/, (error) =>
      assert.ok(error.message.length < 100),
    ),
  );
  assert.throws(() => checkCgroupName('a'.repeat(100_000)), refusal('invalid_argument', /at most 64/));
});

test('refused name: control characters (newline, NUL, escape, DEL), on one line', () => {
  for (const name of ['a\nb', 'a\u0000', '\u001b[31m', 'x\u007f', 'tab\there'])
    assert.throws(() => checkCgroupName(name), refusal('invalid_argument', /control character/));
});

test('refused name: a hidden name, spaces, other punctuation, a non-string', () => {
  for (const name of ['.hidden', '-flag', 'a b', 'a:b', 'ü', 'a*'])
    assert.throws(() => checkCgroupName(name), refusal('invalid_argument', /may hold only letters/));
  assert.throws(() => checkCgroupName(42), refusal('invalid_argument', /must be a string/));
});

test('limits: memory of at least 1 MiB, a pids limit up to the kernel maximum, distinct CPU ids', () => {
  const limits = { memoryBytes: 16 << 20, pidsMax: 64, cpus: [0, 2, 1] };
  assert.deepEqual(checkLimits(limits), limits);
  assert.deepEqual(checkLimits({}), {});
});

test('refused limits: memory under 1 MiB, fractional, negative, not a number', () => {
  for (const memoryBytes of [0, -1, 1024, (1 << 20) + 0.5, Number.NaN, '16M', 2 ** 60])
    assert.throws(() => checkLimits({ memoryBytes }), refusal('invalid_argument', /memoryBytes must be/));
});

test('refused limits: pidsMax zero, negative, fractional, above the kernel maximum', () => {
  for (const pidsMax of [0, -5, 2.5, 4_194_305, '10'])
    assert.throws(() => checkLimits({ pidsMax }), refusal('invalid_argument', /pidsMax must be/));
});

test('refused limits: CPUs empty, repeated, negative, fractional, huge, not a list', () => {
  assert.throws(() => checkLimits({ cpus: [] }), refusal('invalid_argument', /at least one CPU/));
  assert.throws(() => checkLimits({ cpus: [0, 0] }), refusal('invalid_argument', /CPU id 0 appears twice/));
  for (const id of [-1, 0.5, 8192, '0'])
    assert.throws(() => checkLimits({ cpus: [id] }), refusal('invalid_argument', /is not a whole number/));
  assert.throws(() => checkLimits({ cpus: '0-3' }), refusal('invalid_argument', /list of CPU ids/));
  assert.throws(
    () => checkLimits({ cpus: Array.from({ length: 10_000 }, (_, i) => i) }),
    refusal('invalid_argument', /more than 8192 CPUs/),
  );
});

test('refused limits: an unknown field or not an object', () => {
  assert.throws(
    () => checkLimits({ memory: 1 << 30 }),
    refusal('invalid_argument', /unknown field "memory"/),
  );
  for (const limits of [null, 5, [1]])
    assert.throws(() => checkLimits(limits), refusal('invalid_argument', /must be an object/));
});

test('CPU lists read and write the kernel format', () => {
  assert.deepEqual(parseCpuList('0-3,8,10-11\n'), [0, 1, 2, 3, 8, 10, 11]);
  assert.deepEqual(parseCpuList('\n'), []);
  assert.equal(formatCpuList([11, 0, 1, 2, 3, 8, 10]), '0-3,8,10-11');
  assert.equal(formatCpuList([5]), '5');
  assert.throws(() => parseCpuList('0-x'), refusal('invalid_argument', /cannot read "0-x"/));
  assert.throws(() => parseCpuList('3-1'), refusal('invalid_argument', /bad range 3-1/));
});

// The shape of this machine: v1 hierarchies per controller, an empty unified mount, a nested memory cgroup.
const HYBRID_MOUNTS = `sysfs /sys sysfs rw 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`;
const HYBRID_CGROUP = `9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/e7228c6a
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`;

test('v1 layout: each controller own cgroup is its mount joined with its /proc/self/cgroup path', () => {
  assert.deepEqual(cgroupLayout(HYBRID_MOUNTS, HYBRID_CGROUP), {
    version: 1,
    ownDirectories: {
      memory: '/sys/fs/cgroup/memory/process_api/e7228c6a',
      cpuset: '/sys/fs/cgroup/cpuset',
      pids: '/sys/fs/cgroup/pids',
      cpuacct: '/sys/fs/cgroup/cpuacct',
      freezer: '/sys/fs/cgroup/freezer',
    },
  });
});

test('v1 layout: co-mounted controllers ("cpu,cpuacct") share one hierarchy and one path', () => {
  const mounts = HYBRID_MOUNTS.replace(
    /cgroup \/sys\/fs\/cgroup\/cpu cgroup rw,relatime,cpu 0 0\ncgroup \/sys\/fs\/cgroup\/cpuacct .*\n/,
    'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n',
  );
  const cgroup = HYBRID_CGROUP.replace(
    '2:cpuacct:/\n1:cpu:/\n',
    '2:cpu,cpuacct:/system.slice/sigil.service\n',
  );
  const layout = cgroupLayout(mounts, cgroup);
  assert.equal(layout.version, 1);
  assert.equal(
    layout.version === 1 && layout.ownDirectories.cpuacct,
    '/sys/fs/cgroup/cpu,cpuacct/system.slice/sigil.service',
  );
});

test('v2 layout: the cgroup2 mount joined with the "0::" path', () => {
  const mounts = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n';
  assert.deepEqual(cgroupLayout(mounts, '0::/system.slice/sigil.service\n'), {
    version: 2,
    ownDirectory: '/sys/fs/cgroup/system.slice/sigil.service',
  });
  // Inside a cgroup namespace the own cgroup is the namespace's root.
  assert.deepEqual(cgroupLayout(mounts, '0::/\n'), { version: 2, ownDirectory: '/sys/fs/cgroup' });
});

test('mount points with spaces (\\040) are unescaped', () => {
  const [entry] = parseMounts('cgroup2 /mnt/my\\040cgroups cgroup2 rw 0 0\n');
  assert.equal(entry.mountPoint, '/mnt/my cgroups');
  assert.deepEqual(parseProcCgroup('0::/a:b\n').v2, '/a:b');
});

test('refused layout: workload controllers split between v1 and v2', () => {
  const mounts = HYBRID_MOUNTS.replace(/.*pids cgroup .*\n/, '').replace(/.*freezer cgroup .*\n/, '');
  assert.throws(
    () => cgroupLayout(mounts, HYBRID_CGROUP),
    refusal('failed_precondition', /v1 hierarchies lack pids, freezer/),
  );
});

test('refused layout: no cgroup filesystem at all', () => {
  assert.throws(
    () => cgroupLayout('proc /proc proc rw 0 0\n', '0::/\n'),
    refusal('failed_precondition', /no cgroup filesystem is mounted/),
  );
});

test('refused layout: an own path outside the cgroup namespace ("/..")', () => {
  const mounts = 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n';
  assert.throws(
    () => cgroupLayout(mounts, '0::/../../other\n'),
    refusal('invalid_argument', /not inside the hierarchy/),
  );
  assert.throws(
    () =>
      cgroupLayout(HYBRID_MOUNTS, HYBRID_CGROUP.replace('4:memory:/process_api/e7228c6a', '4:memory:/..')),
    refusal('invalid_argument', /memory cgroup path "\/\.\." is not inside/),
  );
});

test('refused layout: a v1 controller this process has no cgroup line for', () => {
  assert.throws(
    () => cgroupLayout(HYBRID_MOUNTS, HYBRID_CGROUP.replace('8:pids:/\n', '')),
    refusal('failed_precondition', /names no pids cgroup/),
  );
});

test('refused detection: an own cgroup that is not visible, and a bad base name', () => {
  const mounts = 'cgroup2 /nonexistent/cgroup cgroup2 rw 0 0\n';
  assert.throws(
    () => detectCgroups({ mountsText: mounts, procCgroupText: '0::/x\n' }),
    refusal('failed_precondition', /\/nonexistent\/cgroup\/x is not visible/),
  );
  assert.throws(() => detectCgroups({ base: '../escape' }), refusal('invalid_argument', /cgroup base/));
});

test('detectCgroups on this machine: the driver nests beneath this process own cgroup', (t) => {
  const procCgroup = readFileSync('/proc/self/cgroup', 'utf8');
  const layout = cgroupLayout(readFileSync('/proc/self/mounts', 'utf8'), procCgroup);
  const driver = detectCgroups({ base: 'sigil-workloads' });
  assert.equal(driver.version, layout.version);
  if (layout.version === 1) {
    const memoryPath = parseProcCgroup(procCgroup).v1.get('memory')!;
    assert.ok(driver.baseDirectories.includes(join('/sys/fs/cgroup/memory', memoryPath, 'sigil-workloads')));
    for (const own of Object.values(layout.ownDirectories))
      assert.ok(driver.baseDirectories.includes(join(own, 'sigil-workloads')));
  } else {
    t.diagnostic('this machine has cgroup v2');
    assert.deepEqual(driver.baseDirectories, [join(layout.ownDirectory, 'sigil-workloads')]);
  }
});
