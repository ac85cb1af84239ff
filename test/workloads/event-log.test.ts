// The workload event log on SQLite: append and list by workload, subtree and
// time; subtrees never leak into each other; live follow; reopening the file;
// bounded retention; and a refusal (with nothing written) for every bad field.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, type TestContext, test } from 'node:test';
import {
  EVENT_LIST_MAX,
  EventLog,
  type EventLogOptions,
  type WorkloadEvent,
  type WorkloadEventInput,
} from '../../src/workloads/event-log.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

const CAROL_WEB = '/alice/carol//web';
const DAN_WEB = '/alice/dan//web';
const ERIN_WEB = '/alice/carol/erin//web'; // Erin is a delegation of Carol's
const CAROLYN_WEB = '/alice/carolyn//web'; // a sibling whose name starts like Carol's

/**
 * Undo steps for one test, run last-registered first when it ends (pass or
 * fail): a log is closed before its directory is removed.
 */
const undoStacks = new WeakMap<TestContext, (() => void)[]>();
function onEnd(t: TestContext, undo: () => void): void {
  let stack = undoStacks.get(t);
  if (stack === undefined) {
    const steps: (() => void)[] = [];
    stack = steps;
    undoStacks.set(t, steps);
    t.after(() => {
      for (const step of steps.reverse()) step();
    });
  }
  stack.push(undo);
}

/** A fresh directory for one test, removed (and checked gone) when the test ends. */
function scratch(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-events-'));
  onEnd(t, () => {
    rmSync(dir, { recursive: true, force: true });
    assert.equal(existsSync(dir), false);
  });
  return dir;
}

/** A clock the test moves by hand. */
function manualClock(): { now: number; read: () => Date } {
  const clock = { now: Date.UTC(2025, 0, 1), read: () => new Date(clock.now) };
  return clock;
}

/** An event log in its own directory, closed before the directory is removed. */
function openLog(t: TestContext, options: EventLogOptions = {}): { log: EventLog; path: string } {
  const path = join(scratch(t), 'events.db');
  const log = EventLog.open(path, options);
  onEnd(t, () => log.close());
  return { log, path };
}

const kinds = (events: readonly WorkloadEvent[]): string[] => events.map((e) => `${e.workload} ${e.kind}`);

/** Every row in the file, however retention or filters would show it. */
function rowCount(path: string): number {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return Number((db.prepare('SELECT count(*) AS n FROM workload_events').get() as { n: number }).n);
  } finally {
    db.close();
  }
}

describe('event log: append and list', () => {
  test('records every kind with its time and fields, and lists them in order', (t) => {
    const clock = manualClock();
    const { log } = openLog(t, { clock: clock.read });
    const start = clock.now;
    const inputs: WorkloadEventInput[] = [
      { workload: CAROL_WEB, kind: 'created' },
      { workload: CAROL_WEB, kind: 'started' },
      { workload: CAROL_WEB, kind: 'oom-killed' },
      { workload: CAROL_WEB, kind: 'exited', signal: 'SIGKILL' },
      { workload: CAROL_WEB, kind: 'restarted', detail: 'attempt 1 after 1 s' },
      { workload: CAROL_WEB, kind: 'exited', exitCode: 3 },
      { workload: CAROL_WEB, kind: 'destroyed' },
      { workload: DAN_WEB, kind: 'destroyed-by-revocation', detail: 'delegation /alice/dan revoked' },
    ];
    const appended = inputs.map((input) => {
      clock.now += 1000;
      return log.append(input);
    });
    for (let i = 1; i < appended.length; i += 1) assert.ok(appended[i].id > appended[i - 1].id);
    const listed = log.list();
    assert.deepEqual(listed, appended);
    assert.deepEqual(
      listed.map((e) => e.at.getTime() - start),
      [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000],
    );
    assert.equal(listed[3].signal, 'SIGKILL');
    assert.equal('exitCode' in listed[3], false);
    assert.equal(listed[5].exitCode, 3);
    assert.equal(listed[4].detail, 'attempt 1 after 1 s');
    assert.equal(listed[7].kind, 'destroyed-by-revocation');
  });

  test('keeps a time the caller gives', (t) => {
    const { log } = openLog(t);
    const at = new Date(Date.UTC(2024, 5, 1, 12));
    assert.equal(log.append({ workload: CAROL_WEB, kind: 'created', at }).at.getTime(), at.getTime());
    assert.equal(log.list()[0].at.getTime(), at.getTime());
  });

  test('an exit code of 0 is kept as 0', (t) => {
    const { log } = openLog(t);
    log.append({ workload: CAROL_WEB, kind: 'exited', exitCode: 0 });
    assert.equal(log.list()[0].exitCode, 0);
  });

  test('limit gives the last N events, oldest first', (t) => {
    const { log } = openLog(t);
    for (let i = 0; i < 6; i += 1) log.append({ workload: CAROL_WEB, kind: 'started', detail: `n${i}` });
    assert.deepEqual(
      log.list({ limit: 2 }).map((e) => e.detail),
      ['n4', 'n5'],
    );
  });

  test('an absurd limit is clamped to EVENT_LIST_MAX', (t) => {
    const { log } = openLog(t);
    for (let i = 0; i < EVENT_LIST_MAX + 5; i += 1) log.append({ workload: CAROL_WEB, kind: 'started' });
    for (const limit of [EVENT_LIST_MAX + 1, 1e9, 1e300, Number.POSITIVE_INFINITY])
      assert.equal(log.list({ limit }).length, EVENT_LIST_MAX, `limit ${limit}`);
    assert.equal(log.list().length, 100, 'the default is 100');
  });

  test('since gives the events at or after a time', (t) => {
    const clock = manualClock();
    const { log } = openLog(t, { clock: clock.read });
    for (let i = 0; i < 5; i += 1) {
      clock.now += 1000;
      log.append({ workload: CAROL_WEB, kind: 'started', detail: `s${i}` });
    }
    assert.deepEqual(
      log.list({ since: new Date(clock.now - 1000) }).map((e) => e.detail),
      ['s3', 's4'],
    );
    assert.deepEqual(log.list({ since: new Date(clock.now + 1) }), []);
  });

  test('the file is WAL and readable by its owner only', (t) => {
    const { log, path } = openLog(t);
    log.append({ workload: CAROL_WEB, kind: 'created' });
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      assert.equal((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
    } finally {
      db.close();
    }
    assert.equal(statSync(path).mode & 0o777, 0o600);
  });
});

describe('event log: subtrees', () => {
  function populated(t: TestContext): EventLog {
    const { log } = openLog(t);
    for (const workload of [CAROL_WEB, DAN_WEB, ERIN_WEB, CAROLYN_WEB, '/alice/carol//webby', '/alicia//web'])
      log.append({ workload, kind: 'created' });
    return log;
  }

  test("Carol's web and Dan's web are different workloads", (t) => {
    const log = populated(t);
    assert.deepEqual(kinds(log.list({ workload: CAROL_WEB })), [`${CAROL_WEB} created`]);
    assert.deepEqual(kinds(log.list({ workload: DAN_WEB })), [`${DAN_WEB} created`]);
  });

  test("under Carol: her workloads and her delegates', never Dan's, Carolyn's or a name that merely starts alike", (t) => {
    const log = populated(t);
    assert.deepEqual(kinds(log.list({ under: '/alice/carol' })), [
      `${CAROL_WEB} created`,
      `${ERIN_WEB} created`,
      '/alice/carol//webby created',
    ]);
    assert.deepEqual(kinds(log.list({ under: '/alice/dan' })), [`${DAN_WEB} created`]);
    assert.deepEqual(kinds(log.list({ under: CAROL_WEB })), [`${CAROL_WEB} created`]);
    assert.deepEqual(
      log.list({ under: '/alice' }).map((e) => e.workload),
      [CAROL_WEB, DAN_WEB, ERIN_WEB, CAROLYN_WEB, '/alice/carol//webby'],
    );
    assert.deepEqual(log.list({ under: '/bob' }), []);
  });

  test('workload and under together must both hold', (t) => {
    const log = populated(t);
    assert.equal(log.list({ under: '/alice/carol', workload: CAROL_WEB }).length, 1);
    assert.deepEqual(log.list({ under: '/alice/carol', workload: DAN_WEB }), []);
  });
});

describe('event log: follow', () => {
  test('a follower under Carol gets her new events only, and stop ends it', (t) => {
    const { log } = openLog(t);
    log.append({ workload: CAROL_WEB, kind: 'created' });
    const got: WorkloadEvent[] = [];
    const stop = log.follow({ under: '/alice/carol' }, (event) => got.push(event));
    log.append({ workload: CAROL_WEB, kind: 'started' });
    log.append({ workload: DAN_WEB, kind: 'started' });
    log.append({ workload: CAROLYN_WEB, kind: 'started' });
    log.append({ workload: ERIN_WEB, kind: 'started' });
    assert.deepEqual(kinds(got), [`${CAROL_WEB} started`, `${ERIN_WEB} started`]);
    assert.deepEqual(
      got,
      log.list({ under: '/alice/carol', limit: 2 }),
      'what is followed is what is stored',
    );
    stop();
    stop();
    log.append({ workload: CAROL_WEB, kind: 'destroyed' });
    assert.equal(got.length, 2);
  });

  test('a follower of one workload, and one of everything', (t) => {
    const { log } = openLog(t);
    const one: WorkloadEvent[] = [];
    const all: WorkloadEvent[] = [];
    log.follow({ workload: DAN_WEB }, (event) => one.push(event));
    log.follow({}, (event) => all.push(event));
    log.append({ workload: CAROL_WEB, kind: 'created' });
    log.append({ workload: DAN_WEB, kind: 'created' });
    assert.deepEqual(kinds(one), [`${DAN_WEB} created`]);
    assert.equal(all.length, 2);
  });

  test('a follower that throws is stopped and reported; the event is kept and others still hear it', (t) => {
    const errors: Error[] = [];
    const { log } = openLog(t, { onFollowerError: (error) => errors.push(error) });
    const heard: WorkloadEvent[] = [];
    log.follow({}, () => {
      throw new Error('follower broke');
    });
    log.follow({}, (event) => heard.push(event));
    log.append({ workload: CAROL_WEB, kind: 'created' });
    log.append({ workload: CAROL_WEB, kind: 'started' });
    assert.deepEqual(
      errors.map((e) => e.message),
      ['follower broke'],
    );
    assert.equal(heard.length, 2);
    assert.equal(log.list().length, 2);
  });

  test('followers are capped', (t) => {
    const { log } = openLog(t, { maxFollowers: 2 });
    log.follow({}, () => {});
    const stop = log.follow({}, () => {});
    assertThrowsRefusal(
      () => log.follow({}, () => {}),
      'resource_exhausted',
      /2 followers, the most it admits/,
    );
    stop();
    log.follow({}, () => {});
  });

  test('refuses a bad follow filter or callback', (t) => {
    const { log } = openLog(t);
    assertThrowsRefusal(
      () => log.follow({ under: 'alice' }, () => {}),
      'invalid_argument',
      /under .*start with '\/'/,
    );
    assertThrowsRefusal(
      () => log.follow({ since: new Date() } as unknown as object, () => {}),
      'invalid_argument',
      /unknown field "since"/,
    );
    assertThrowsRefusal(
      () => log.follow({}, 'x' as unknown as () => void),
      'invalid_argument',
      /must be a function/,
    );
  });
});

describe('event log: the file', () => {
  test('a new EventLog on the same file sees the old events, and ids keep increasing', (t) => {
    const path = join(scratch(t), 'events.db');
    const first = EventLog.open(path);
    const old = first.append({ workload: CAROL_WEB, kind: 'created' });
    const exited = first.append({ workload: CAROL_WEB, kind: 'exited', exitCode: 1 });
    first.close();
    const second = EventLog.open(path);
    onEnd(t, () => second.close());
    assert.deepEqual(second.list(), [old, exited]);
    assert.equal(second.list()[1].exitCode, 1);
    const next = second.append({ workload: CAROL_WEB, kind: 'destroyed' });
    assert.ok(next.id > old.id + 1);
  });

  test('two EventLogs open on one file see each other in list()', (t) => {
    const path = join(scratch(t), 'events.db');
    const a = EventLog.open(path);
    const b = EventLog.open(path);
    onEnd(t, () => {
      a.close();
      b.close();
    });
    a.append({ workload: CAROL_WEB, kind: 'created' });
    b.append({ workload: DAN_WEB, kind: 'created' });
    assert.deepEqual(kinds(a.list()), kinds(b.list()));
    assert.equal(a.list().length, 2);
  });

  test('a closed log refuses everything; closing twice is fine', (t) => {
    const { log } = openLog(t);
    log.close();
    log.close();
    assertThrowsRefusal(
      () => log.append({ workload: CAROL_WEB, kind: 'created' }),
      'failed_precondition',
      /closed/,
    );
    assertThrowsRefusal(() => log.list(), 'failed_precondition', /closed/);
    assertThrowsRefusal(() => log.follow({}, () => {}), 'failed_precondition', /closed/);
  });

  test('refuses a file it cannot open', (t) => {
    const dir = scratch(t);
    assertThrowsRefusal(
      () => EventLog.open(join(dir, 'missing', 'events.db')),
      'failed_precondition',
      /cannot open the event log/,
    );
    assertThrowsRefusal(() => EventLog.open(''), 'invalid_argument', /non-empty file path/);
  });

  test('refuses options out of range', (t) => {
    const path = join(scratch(t), 'events.db');
    for (const [options, field] of [
      [{ keepPerWorkload: 0 }, 'keepPerWorkload'],
      [{ keepTotal: -5 }, 'keepTotal'],
      [{ maxFollowers: 1.5 }, 'maxFollowers'],
      [{ busyTimeoutMs: -1 }, 'busyTimeoutMs'],
      [{ clock: 'now' as unknown as () => Date }, 'clock'],
    ] as const)
      assertThrowsRefusal(() => EventLog.open(path, options), 'invalid_argument', new RegExp(field));
    assert.equal(existsSync(path), false, 'nothing was created');
  });
});

describe('event log: retention', () => {
  test('keeps the last keepPerWorkload events of each workload', (t) => {
    const { log, path } = openLog(t, { keepPerWorkload: 3 });
    for (let i = 0; i < 5; i += 1) log.append({ workload: CAROL_WEB, kind: 'started', detail: `c${i}` });
    for (let i = 0; i < 2; i += 1) log.append({ workload: DAN_WEB, kind: 'started', detail: `d${i}` });
    assert.deepEqual(
      log.list({ workload: CAROL_WEB }).map((e) => e.detail),
      ['c2', 'c3', 'c4'],
    );
    assert.deepEqual(
      log.list({ workload: DAN_WEB }).map((e) => e.detail),
      ['d0', 'd1'],
    );
    assert.equal(rowCount(path), 5);
  });

  test('keeps at most keepTotal events altogether, the newest', (t) => {
    const { log, path } = openLog(t, { keepTotal: 4 });
    for (let i = 0; i < 7; i += 1)
      log.append({ workload: i % 2 === 0 ? CAROL_WEB : DAN_WEB, kind: 'started', detail: `e${i}` });
    assert.deepEqual(
      log.list().map((e) => e.detail),
      ['e3', 'e4', 'e5', 'e6'],
    );
    assert.equal(rowCount(path), 4);
  });
});

describe('event log: refusals write nothing', () => {
  const bad: [string, unknown, RegExp][] = [
    ['not an object', 'created', /must be an object/],
    ['an array', [], /must be an object/],
    ['an unknown field', { workload: CAROL_WEB, kind: 'created', exitcode: 1 }, /unknown field "exitcode"/],
    ['no workload', { kind: 'created' }, /workload must be a workload key/],
    ['a workload without a leading /', { workload: 'alice//web', kind: 'created' }, /start with '\/'/],
    ['a workload ending in /', { workload: '/alice/', kind: 'created' }, /not end with one/],
    ['a workload with a newline', { workload: '/alice//web\nx', kind: 'created' }, /control character/],
    ['a workload with NUL', { workload: '/alice//we\u0000b', kind: 'created' }, /control character/],
    ['a workload with a C1 control', { workload: '/alice//we\u009bb', kind: 'created' }, /control character/],
    ['a workload with a lone surrogate', { workload: '/alice//\ud800', kind: 'created' }, /well-formed/],
    ['an overlong workload', { workload: `/${'a'.repeat(600)}`, kind: 'created' }, /1 to 512 characters/],
    ['an empty workload', { workload: '', kind: 'created' }, /1 to 512 characters/],
    ['an unknown kind', { workload: CAROL_WEB, kind: 'paused' }, /kind "paused" is not one of/],
    ['exited without code or signal', { workload: CAROL_WEB, kind: 'exited' }, /exactly one of/],
    [
      'exited with both code and signal',
      { workload: CAROL_WEB, kind: 'exited', exitCode: 1, signal: 'SIGTERM' },
      /exactly one of/,
    ],
    ['an exit code on started', { workload: CAROL_WEB, kind: 'started', exitCode: 0 }, /takes no exitCode/],
    ['a signal on oom-killed', { workload: CAROL_WEB, kind: 'oom-killed', signal: 'SIGKILL' }, /takes no/],
    ['an exit code of 256', { workload: CAROL_WEB, kind: 'exited', exitCode: 256 }, /0 to 255/],
    ['a negative exit code', { workload: CAROL_WEB, kind: 'exited', exitCode: -1 }, /0 to 255/],
    ['a fractional exit code', { workload: CAROL_WEB, kind: 'exited', exitCode: 1.5 }, /0 to 255/],
    ['an exit code as text', { workload: CAROL_WEB, kind: 'exited', exitCode: '1' }, /0 to 255/],
    ['a signal that is not a name', { workload: CAROL_WEB, kind: 'exited', signal: 'KILL' }, /signal name/],
    ['a signal number', { workload: CAROL_WEB, kind: 'exited', signal: 9 }, /signal name/],
    [
      'an invalid time',
      { workload: CAROL_WEB, kind: 'created', at: new Date(Number.NaN) },
      /at must be a valid/,
    ],
    ['a time before 1970', { workload: CAROL_WEB, kind: 'created', at: new Date(-1) }, /at must be a valid/],
    ['a time as text', { workload: CAROL_WEB, kind: 'created', at: '2025-01-01' }, /at must be a Date/],
    ['an overlong detail', { workload: CAROL_WEB, kind: 'created', detail: 'x'.repeat(257) }, /at most 256/],
    [
      'a detail with a newline',
      { workload: CAROL_WEB, kind: 'created', detail: 'a\nb' },
      /control characters/,
    ],
    ['a detail that is not text', { workload: CAROL_WEB, kind: 'created', detail: 5 }, /detail must be text/],
  ];
  for (const [name, input, problem] of bad)
    test(`refuses ${name}`, (t) => {
      const { log, path } = openLog(t);
      const heard: WorkloadEvent[] = [];
      log.follow({}, (event) => heard.push(event));
      assertThrowsRefusal(() => log.append(input as WorkloadEventInput), 'invalid_argument', problem);
      assert.equal(rowCount(path), 0);
      assert.deepEqual(heard, []);
    });

  test('refuses a clock that gives an invalid time, and writes nothing', (t) => {
    const { log, path } = openLog(t, { clock: () => new Date(Number.NaN) });
    assertThrowsRefusal(
      () => log.append({ workload: CAROL_WEB, kind: 'created' }),
      'invalid_argument',
      /the clock must be a valid time/,
    );
    assert.equal(rowCount(path), 0);
  });
});

describe('event log: list refusals', () => {
  const bad: [string, unknown, RegExp][] = [
    ['a limit of 0', { limit: 0 }, /limit must be a number of events, 1 or more/],
    ['a negative limit', { limit: -1 }, /1 or more/],
    ['a NaN limit', { limit: Number.NaN }, /1 or more/],
    ['a fractional limit', { limit: 2.5 }, /whole number/],
    ['a limit as text', { limit: '5' }, /1 or more/],
    ['an invalid since', { since: new Date(Number.NaN) }, /since must be a valid/],
    ['a since as a number', { since: 0 }, /since must be a Date/],
    ['an under without a leading /', { under: 'alice' }, /under .*start with '\/'/],
    ['an under of just /', { under: '/' }, /not end with one/],
    ['an under with a control character', { under: '/alice\u0007' }, /control character/],
    ['a workload that is not text', { workload: 7 }, /workload must be a workload key/],
    ['an unknown field', { subtree: '/alice' }, /unknown field "subtree"/],
    ['a query that is not an object', 'all', /must be an object/],
  ];
  for (const [name, query, problem] of bad)
    test(`refuses ${name}`, (t) => {
      const { log } = openLog(t);
      assertThrowsRefusal(() => log.list(query as object), 'invalid_argument', problem);
    });
});
