// The daemon's desired state on SQLite: records survive closing and reopening,
// the file is 0600 in WAL mode, subtrees never leak into each other, a
// damaged row is reported with its key without hiding the others, and every
// refusal (bad field, duplicate, over the cap) writes nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { type TestContext, test } from 'node:test';
import { DesiredState, type DesiredWorkload } from '../../src/workloads/desired-state.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

const FP = `fp:${'AB'.repeat(32)}`;

function nodeDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-desired-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function open(t: TestContext, dir = nodeDir(t), maxRecords?: number): DesiredState {
  const state = DesiredState.open(dir, maxRecords === undefined ? {} : { maxRecords });
  t.after(() => state.close());
  return state;
}

function record(ownerKey: string, name: string, more: Partial<DesiredWorkload> = {}): DesiredWorkload {
  return {
    key: `${ownerKey}//${name}`,
    spec: {
      name,
      image: 'test/busybox:1',
      command: ['/bin/sh', '-c', 'echo hi; sleep 100'],
      env: { GREETING: 'hello' },
      workdir: '/srv',
      user: 'nobody',
      limits: { memoryMiB: 64, cpus: [0], pidsMax: 32 },
      restart: { onFailure: { codes: [1] } },
      networks: ['br0'],
      blocks: [{ name: 'data', mountPoint: '/data' }],
      tty: false,
    },
    ownerKey,
    revocationIds: [FP, '0A:1B'],
    reservation: { subtree: ownerKey, name },
    createdAt: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
    ...more,
  };
}

test('put, get, list and reopen: records come back as they went in (ids normalized), file 0600 in WAL mode', (t) => {
  const dir = nodeDir(t);
  const state = DesiredState.open(dir);
  const web = state.put(record('/alice/carol', 'web'));
  state.put(record('', 'admin-web'));
  assert.deepEqual(web.revocationIds, [FP.toLowerCase(), 'a1b']);
  state.close();

  const again = open(t, dir);
  assert.deepEqual(again.get('/alice/carol//web'), web);
  assert.equal(again.get('/alice/carol//nope'), undefined);
  assert.deepEqual(
    again.list().workloads.map((w) => w.key),
    ['//admin-web', '/alice/carol//web'],
  );
  assert.equal(statSync(again.path).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, 'workloads')).mode & 0o777, 0o700);
  const db = new DatabaseSync(again.path);
  try {
    assert.equal((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
  } finally {
    db.close();
  }
});

test('list(under) is the subtree itself and beneath it, never a sibling whose name starts the same', (t) => {
  const state = open(t);
  for (const [owner, name] of [
    ['/alice/carol', 'web'],
    ['/alice/carol/erin', 'db'],
    ['/alice/carolyn', 'web'],
    ['/alice/dan', 'web'],
  ])
    state.put(record(owner, name));
  assert.deepEqual(
    state.list('/alice/carol').workloads.map((w) => w.key),
    ['/alice/carol//web', '/alice/carol/erin//db'],
  );
  assert.deepEqual(
    state.list('/alice/dan//web').workloads.map((w) => w.key),
    ['/alice/dan//web'],
  );
});

test('updateCommand replaces only the command; remove forgets; revokedBy finds by any chain id', (t) => {
  const state = open(t);
  state.put(record('/alice/carol', 'web'));
  state.put(record('/alice/dan', 'web', { revocationIds: [`fp:${'cd'.repeat(32)}`] }));
  const updated = state.updateCommand('/alice/carol//web', ['/bin/echo', 'new']);
  assert.deepEqual(updated.spec.command, ['/bin/echo', 'new']);
  assert.deepEqual(state.get('/alice/carol//web')?.spec.command, ['/bin/echo', 'new']);
  assert.equal(state.get('/alice/carol//web')?.spec.image, 'test/busybox:1');
  assert.deepEqual(
    state.revokedBy(['0a1b']).map((w) => w.key),
    ['/alice/carol//web'],
  );
  assert.deepEqual(
    state.revokedBy([`fp:${'CD'.repeat(32)}`, 'not an id']).map((w) => w.key),
    ['/alice/dan//web'],
  );
  assert.equal(state.remove('/alice/carol//web'), true);
  assert.equal(state.remove('/alice/carol//web'), false);
  assert.equal(state.get('/alice/carol//web'), undefined);
  assertThrowsRefusal(() => state.updateCommand('/alice/carol//web', ['/bin/true']), 'not_found', /no such/);
});

test('refused: a duplicate key (already_exists), and nothing changes', (t) => {
  const state = open(t);
  state.put(record('/alice/carol', 'web'));
  assertThrowsRefusal(
    () => state.put(record('/alice/carol', 'web', { revocationIds: [] })),
    'already_exists',
    /\/alice\/carol\/\/web already exists/,
  );
  assert.equal(state.get('/alice/carol//web')?.revocationIds.length, 2);
});

test('refused: more records than the cap (resource_exhausted)', (t) => {
  const state = open(t, undefined, 2);
  state.put(record('/a', 'one'));
  state.put(record('/a', 'two'));
  assertThrowsRefusal(
    () => state.put(record('/a', 'three')),
    'resource_exhausted',
    /the most it keeps \(2\)/,
  );
  assert.equal(state.count(), 2);
});

test('refused: bad fields, each named, nothing written', (t) => {
  const state = open(t);
  const base = record('/alice/carol', 'web');
  const cases: [string, unknown, RegExp][] = [
    ['key not owner//name', { ...base, key: '/alice/carol//other' }, /not its owner's key/],
    [
      'a name that is no DNS label',
      { ...base, key: '/alice/carol//Web', spec: { ...base.spec, name: 'Web' } },
      /DNS label/,
    ],
    ['an owner key with //', { ...base, ownerKey: '/a//b', key: '/a//b//web' }, /not a subtree key/],
    ['an unknown field', { ...base, extra: 1 }, /unknown field "extra"/],
    [
      'an unknown spec field',
      { ...base, spec: { ...base.spec, privileged: true } },
      /unknown field "privileged"/,
    ],
    ['a bad image', { ...base, spec: { ...base.spec, image: '../etc' } }, /image/],
    ['an empty command', { ...base, spec: { ...base.spec, command: [] } }, /command must list/],
    ['a bad env name', { ...base, spec: { ...base.spec, env: { 'A=B': 'x' } } }, /env name/],
    ['a relative workdir', { ...base, spec: { ...base.spec, workdir: 'srv' } }, /absolute path/],
    ['a bad restart policy', { ...base, spec: { ...base.spec, restart: 'sometimes' } }, /restart policy/],
    ['a zero memory limit', { ...base, spec: { ...base.spec, limits: { memoryMiB: 0 } } }, /memoryMiB/],
    [
      'a traversing block name',
      { ...base, spec: { ...base.spec, blocks: [{ name: '../x', mountPoint: '/d' }] } },
      /block name/,
    ],
    [
      'a block at /',
      { ...base, spec: { ...base.spec, blocks: [{ name: 'd', mountPoint: '/' }] } },
      /mounted at \//,
    ],
    ['a bad bridge', { ...base, spec: { ...base.spec, networks: ['br 0'] } }, /network/],
    ['a bad revocation id', { ...base, revocationIds: ['fp:zz'] }, /revocation id/],
    ['a bad reservation', { ...base, reservation: { subtree: 'alice', name: 'web' } }, /reservation subtree/],
    ['an invalid date', { ...base, createdAt: new Date(Number.NaN) }, /createdAt/],
  ];
  for (const [what, input, pattern] of cases) {
    assertThrowsRefusal(() => state.put(input as DesiredWorkload), 'invalid_argument', pattern);
    assert.equal(state.count(), 0, what);
  }
});

test('a damaged row is reported with its key; the others still load; get names the key', (t) => {
  const dir = nodeDir(t);
  const state = open(t, dir);
  state.put(record('/alice/carol', 'web'));
  state.put(record('/alice/dan', 'web'));
  state.put(record('/alice/erin', 'web'));
  // Damage two rows behind the daemon's back, as a disk or a hand edit could.
  const db = new DatabaseSync(state.path);
  try {
    db.prepare("UPDATE desired_workloads SET spec = '{not json' WHERE key = ?").run('/alice/dan//web');
    db.prepare("UPDATE desired_workloads SET revocation_ids = '[42]' WHERE key = ?").run('/alice/erin//web');
  } finally {
    db.close();
  }
  const listing = state.list();
  assert.deepEqual(
    listing.workloads.map((w) => w.key),
    ['/alice/carol//web'],
  );
  assert.deepEqual(
    listing.unreadable.map((u) => u.key),
    ['/alice/dan//web', '/alice/erin//web'],
  );
  assert.match(listing.unreadable[0].problem, /"\/alice\/dan\/\/web" is damaged: spec is not JSON/);
  assert.match(listing.unreadable[1].problem, /revocation id must be text/);
  assertThrowsRefusal(() => state.get('/alice/dan//web'), 'internal', /"\/alice\/dan\/\/web" is damaged/);
  // And it can still be forgotten.
  assert.equal(state.remove('/alice/dan//web'), true);
});

test('refused: a closed state, and a node directory that cannot hold the file', (t) => {
  const state = open(t);
  state.close();
  assertThrowsRefusal(() => state.list(), 'failed_precondition', /is closed/);
  // Below /proc/1 a recursive mkdir would spin forever in Node; this must refuse at once.
  assertThrowsRefusal(
    () => DesiredState.open('/proc/1'),
    'failed_precondition',
    /cannot open the desired state/,
  );
  const file = join(nodeDir(t), 'a-file');
  writeFileSync(file, '');
  assertThrowsRefusal(() => DesiredState.open(file), 'failed_precondition', /cannot open the desired state/);
});
