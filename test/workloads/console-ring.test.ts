// The console ring: lines as bytes, wrapping at 1,024, split at 512 bytes,
// history by count and by time (an injected clock), and followers that are
// capped in number and can never hold up the producer.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  CONSOLE_MAX_LINE_BYTES,
  CONSOLE_MAX_SUBSCRIBERS,
  CONSOLE_RING_CAPACITY,
  ConsoleRing,
  type FollowedLine,
} from '../../src/workloads/console-ring.ts';
import { assertThrowsRefusal, refusal } from '../support/refusals.ts';

const text = (lines: readonly { bytes: Buffer }[]): string[] => lines.map((line) => line.bytes.toString());

/** A clock the test moves by hand: each line is stamped with `clock.now`. */
function manualClock(start = Date.UTC(2025, 0, 1)): { now: number; read: () => Date } {
  const clock = {
    now: start,
    read: () => new Date(clock.now),
  };
  return clock;
}

/** Let every queued delivery run (deliveries run on microtasks, which all drain before setImmediate). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('console ring: lines', () => {
  test('keeps Albatross figures by default: 1,024 lines of 512 bytes, 16 followers', () => {
    const ring = new ConsoleRing();
    assert.equal(ring.capacity, CONSOLE_RING_CAPACITY);
    assert.equal(ring.capacity, 1024);
    assert.equal(ring.maxLineBytes, CONSOLE_MAX_LINE_BYTES);
    assert.equal(ring.maxLineBytes, 512);
    assert.equal(ring.maxSubscribers, CONSOLE_MAX_SUBSCRIBERS);
  });

  test('wraps at 1,024 lines, keeping the newest', () => {
    const ring = new ConsoleRing();
    for (let i = 0; i < 1030; i += 1) ring.write(Buffer.from(`line ${i}\n`));
    const held = ring.history();
    assert.equal(held.length, 1024);
    assert.equal(held[0].bytes.toString(), 'line 6');
    assert.equal(held[0].seq, 6);
    assert.equal(held[1023].bytes.toString(), 'line 1029');
    assert.equal(held[1023].seq, 1029);
    assert.deepEqual(ring.stats(), {
      lines: 1024,
      written: 1030,
      subscribers: 0,
      droppedForSubscribers: 0,
      closed: false,
    });
  });

  test('a 2,000-byte line becomes 4 lines of at most 512 bytes, nothing dropped', () => {
    const ring = new ConsoleRing();
    const long = Buffer.alloc(2000, 'x');
    ring.write(Buffer.concat([long, Buffer.from('\n')]));
    const held = ring.history();
    assert.deepEqual(
      held.map((line) => line.bytes.length),
      [512, 512, 512, 464],
    );
    assert.deepEqual(Buffer.concat(held.map((line) => line.bytes)), long);
  });

  test('a 2,000-byte line without a newline also becomes 4 lines: 3 at once, the rest on close', () => {
    const ring = new ConsoleRing();
    ring.write(Buffer.alloc(2000, 'y'));
    assert.deepEqual(
      ring.history().map((line) => line.bytes.length),
      [512, 512, 512],
    );
    ring.close();
    assert.deepEqual(
      ring.history().map((line) => line.bytes.length),
      [512, 512, 512, 464],
    );
  });

  test('a line of exactly 512 bytes and its newline is one line, not a line and an empty one', () => {
    const ring = new ConsoleRing();
    ring.write(Buffer.alloc(512, 'a'));
    ring.write(Buffer.from('\n'));
    ring.write(Buffer.concat([Buffer.alloc(1024, 'b'), Buffer.from('\nnext\n')]));
    assert.deepEqual(
      ring.history().map((line) => line.bytes.length),
      [512, 512, 512, 4],
    );
  });

  test('empty lines are console output and are kept', () => {
    const ring = new ConsoleRing();
    ring.write(Buffer.from('a\n\n\nb\n'));
    assert.deepEqual(text(ring.history()), ['a', '', '', 'b']);
  });

  test('a terminal ring drops the \\r before each \\n, also across writes; other \\r and plain rings keep theirs', () => {
    const terminal = new ConsoleRing({ stripCarriageReturns: true });
    terminal.write(Buffer.from('one\r\ntwo\r'));
    terminal.write(Buffer.from('\nthree\rx\r\n\r\n'));
    assert.deepEqual(text(terminal.history()), ['one', 'two', 'three\rx', '']);
    const plain = new ConsoleRing();
    plain.write(Buffer.from('one\r\n'));
    assert.deepEqual(text(plain.history()), ['one\r']);
  });

  test('a partial line waits for its newline across writes, and flush() ends it', () => {
    const ring = new ConsoleRing();
    ring.write(Buffer.from('hel'));
    assert.equal(ring.history().length, 0);
    ring.write(Buffer.from('lo\nwor'));
    assert.deepEqual(text(ring.history()), ['hello']);
    ring.flush();
    assert.deepEqual(text(ring.history()), ['hello', 'wor']);
    ring.flush();
    assert.deepEqual(text(ring.history()), ['hello', 'wor'], 'a second flush adds nothing');
    ring.write(Buffer.from('after exit\n'));
    assert.deepEqual(text(ring.history()), ['hello', 'wor', 'after exit'], 'flush leaves the ring open');
  });

  test('close() ends a partial line and keeps the history readable', () => {
    const ring = new ConsoleRing();
    ring.write(Buffer.from('done\nbye'));
    ring.close();
    ring.close();
    assert.deepEqual(text(ring.history()), ['done', 'bye']);
    assert.equal(ring.stats().closed, true);
  });

  test('arbitrary bytes survive: NUL, invalid UTF-8, \\r, every byte value, split anywhere', () => {
    const ring = new ConsoleRing({ capacity: 4096 });
    const everyByte = Buffer.from(Array.from({ length: 256 }, (_, i) => i).filter((b) => b !== 0x0a));
    const lines = [
      Buffer.from([0x00, 0xff, 0xfe, 0xc3]),
      Buffer.from('crlf\r'),
      everyByte.subarray(0, 255),
      Buffer.alloc(0),
      ...Array.from({ length: 50 }, () => {
        const random = randomBytes(1 + (randomBytes(1)[0] % 200));
        return Buffer.from(random.filter((b) => b !== 0x0a));
      }),
    ];
    const input = Buffer.concat(lines.flatMap((line) => [line, Buffer.from('\n')]));
    // Written in pieces of 1 to 7 bytes, so lines and even the newline fall across writes.
    for (let at = 0, size = 1; at < input.length; at += size, size = (size % 7) + 1)
      ring.write(input.subarray(at, at + size));
    const held = ring.history();
    assert.equal(held.length, lines.length);
    held.forEach((line, i) => {
      assert.ok(Buffer.isBuffer(line.bytes));
      assert.deepEqual(line.bytes, lines[i], `line ${i}`);
    });
  });

  test('a line is a copy: the writer reusing its buffer changes nothing held', () => {
    const ring = new ConsoleRing();
    const chunk = Buffer.from('first\n');
    ring.write(chunk);
    chunk.fill('z');
    assert.deepEqual(text(ring.history()), ['first']);
  });
});

describe('console ring: history', () => {
  /** Lines "t0".."t9", line i stamped at start + i seconds. */
  function tenLines(): { ring: ConsoleRing; start: number } {
    const clock = manualClock();
    const start = clock.now;
    const ring = new ConsoleRing({ clock: clock.read });
    for (let i = 0; i < 10; i += 1) {
      clock.now = start + i * 1000;
      ring.write(Buffer.from(`t${i}\n`));
    }
    return { ring, start };
  }

  test('each line carries the injected clock time at which it was completed', () => {
    const clock = manualClock();
    const ring = new ConsoleRing({ clock: clock.read });
    ring.write(Buffer.from('par'));
    clock.now += 5000;
    ring.write(Buffer.from('tial\n'));
    assert.equal(ring.history()[0].at.getTime(), clock.now);
  });

  test('the last N lines, oldest first', () => {
    const { ring } = tenLines();
    assert.deepEqual(text(ring.history({ lines: 3 })), ['t7', 't8', 't9']);
    assert.deepEqual(text(ring.history({ lines: 1 })), ['t9']);
    assert.deepEqual(ring.history({ lines: 0 }), []);
  });

  test('lines since a time, inclusive', () => {
    const { ring, start } = tenLines();
    assert.deepEqual(text(ring.history({ since: new Date(start + 7000) })), ['t7', 't8', 't9']);
    assert.deepEqual(text(ring.history({ since: new Date(start + 6500) })), ['t7', 't8', 't9']);
    assert.equal(ring.history({ since: new Date(0) }).length, 10);
  });

  test('since and lines together: the last N of those since the time', () => {
    const { ring, start } = tenLines();
    assert.deepEqual(text(ring.history({ since: new Date(start + 5000), lines: 2 })), ['t8', 't9']);
    assert.deepEqual(text(ring.history({ since: new Date(start + 8000), lines: 5 })), ['t8', 't9']);
  });

  test('absurd counts are clamped to what the ring holds', () => {
    const { ring } = tenLines();
    for (const lines of [11, 1024, 1e9, Number.MAX_SAFE_INTEGER, 1e300, Number.POSITIVE_INFINITY])
      assert.equal(ring.history({ lines }).length, 10, `lines: ${lines}`);
  });

  test('a time in the future gives nothing', () => {
    const { ring, start } = tenLines();
    assert.deepEqual(ring.history({ since: new Date(start + 86_400_000) }), []);
    assert.deepEqual(ring.history({ since: new Date(8.64e15), lines: 1e300 }), []);
  });

  test('a clock that steps back does not hide lines from since', () => {
    const clock = manualClock();
    const ring = new ConsoleRing({ clock: clock.read });
    ring.write(Buffer.from('late\n'));
    clock.now -= 60_000;
    ring.write(Buffer.from('early\n'));
    assert.deepEqual(text(ring.history({ since: new Date(clock.now) })), ['late', 'early']);
  });

  test('refuses a negative count', () => {
    const { ring } = tenLines();
    assertThrowsRefusal(() => ring.history({ lines: -1 }), 'invalid_argument', /lines must be .*0 or more/);
    assertThrowsRefusal(
      () => ring.history({ lines: Number.NEGATIVE_INFINITY }),
      'invalid_argument',
      /lines must be/,
    );
  });

  test('refuses NaN and fractional counts', () => {
    const { ring } = tenLines();
    assertThrowsRefusal(() => ring.history({ lines: Number.NaN }), 'invalid_argument', /lines must be/);
    assertThrowsRefusal(() => ring.history({ lines: 2.5 }), 'invalid_argument', /whole number/);
  });

  test('refuses a count that is not a number', () => {
    const { ring } = tenLines();
    assertThrowsRefusal(
      () => ring.history({ lines: '3' as unknown as number }),
      'invalid_argument',
      /lines must be/,
    );
  });

  test('refuses an invalid time', () => {
    const { ring } = tenLines();
    assertThrowsRefusal(
      () => ring.history({ since: new Date(Number.NaN) }),
      'invalid_argument',
      /since must be a valid Date/,
    );
    assertThrowsRefusal(
      () => ring.history({ since: '2025-01-01' as unknown as Date }),
      'invalid_argument',
      /since must be a valid Date/,
    );
  });

  test('refuses a query that is not an object', () => {
    const { ring } = tenLines();
    assertThrowsRefusal(
      () => ring.history(null as unknown as object),
      'invalid_argument',
      /query must be an object/,
    );
  });
});

describe('console ring: refusals', () => {
  test('refuses output that is not bytes, and keeps nothing', () => {
    const ring = new ConsoleRing();
    assertThrowsRefusal(() => ring.write('text\n' as unknown as Buffer), 'invalid_argument', /must be bytes/);
    assert.equal(ring.stats().written, 0);
  });

  test('refuses output after close', () => {
    const ring = new ConsoleRing();
    ring.close();
    assertThrowsRefusal(() => ring.write(Buffer.from('x\n')), 'failed_precondition', /closed/);
    assert.equal(ring.stats().written, 0);
  });

  test('refuses options out of range', () => {
    for (const [options, field] of [
      [{ capacity: 0 }, 'capacity'],
      [{ capacity: 1.5 }, 'capacity'],
      [{ capacity: 1e12 }, 'capacity'],
      [{ maxLineBytes: -1 }, 'maxLineBytes'],
      [{ maxSubscribers: Number.NaN }, 'maxSubscribers'],
      [{ queueLines: 0 }, 'queueLines'],
    ] as const)
      assertThrowsRefusal(() => new ConsoleRing(options), 'invalid_argument', new RegExp(`${field} must be`));
    assertThrowsRefusal(
      () => new ConsoleRing({ clock: 5 as unknown as () => Date }),
      'invalid_argument',
      /clock must be a function/,
    );
  });

  test('refuses a subscriber that is not a function', () => {
    const ring = new ConsoleRing();
    assertThrowsRefusal(
      () => ring.subscribe('no' as unknown as () => void),
      'invalid_argument',
      /must be a function/,
    );
    assert.equal(ring.stats().subscribers, 0);
  });
});

describe('console ring: followers', () => {
  test('a follower gets new lines (not the history), in order, after write returns', async () => {
    const ring = new ConsoleRing();
    ring.write(Buffer.from('before\n'));
    const got: FollowedLine[] = [];
    ring.subscribe((line) => {
      got.push(line);
    });
    ring.write(Buffer.from('one\ntwo\nthr'));
    assert.equal(got.length, 0, 'nothing is delivered inside write()');
    await settle();
    assert.deepEqual(text(got), ['one', 'two']);
    assert.deepEqual(
      got.map((line) => line.droppedBefore),
      [0, 0],
    );
    assert.deepEqual(
      got.map((line) => line.seq),
      [1, 2],
    );
  });

  test('admits at most maxSubscribers followers; the next is refused until one leaves', () => {
    const ring = new ConsoleRing();
    const stops = Array.from({ length: CONSOLE_MAX_SUBSCRIBERS }, () => ring.subscribe(() => {}));
    assert.equal(ring.stats().subscribers, 16);
    assertThrowsRefusal(() => ring.subscribe(() => {}), 'resource_exhausted', /16 followers, the most/);
    assert.equal(ring.stats().subscribers, 16);
    stops[0]();
    stops[0]();
    assert.equal(ring.stats().subscribers, 15);
    ring.subscribe(() => {});
    assert.equal(ring.stats().subscribers, 16);
  });

  test('the cap is configurable', () => {
    const ring = new ConsoleRing({ maxSubscribers: 2 });
    ring.subscribe(() => {});
    ring.subscribe(() => {});
    assertThrowsRefusal(() => ring.subscribe(() => {}), 'resource_exhausted', /the most it admits \(2\)/);
  });

  test('a slow follower neither blocks the producer nor a fast follower, and its queue stays bounded', async () => {
    const ring = new ConsoleRing({ queueLines: 8 });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow: FollowedLine[] = [];
    const fast: FollowedLine[] = [];
    ring.subscribe(async (line) => {
      slow.push(line);
      await gate;
    });
    ring.subscribe((line) => {
      fast.push(line);
    });

    ring.write(Buffer.from('line 0\n'));
    await settle();
    assert.equal(slow.length, 1, 'the slow follower took line 0 and is stuck on it');
    for (let i = 1; i <= 100; i += 1) {
      ring.write(Buffer.from(`line ${i}\n`));
      await settle();
    }
    assert.equal(fast.length, 101, 'the fast follower got every line while the slow one was stuck');
    assert.ok(
      fast.every((line) => line.droppedBefore === 0),
      'the fast follower missed nothing',
    );
    assert.equal(slow.length, 1);
    // Lines 1..100 arrived for the slow follower; only the newest 8 fit its queue.
    assert.equal(ring.stats().droppedForSubscribers, 92);

    release();
    await settle();
    assert.deepEqual(text(slow), ['line 0', ...Array.from({ length: 8 }, (_, i) => `line ${93 + i}`)]);
    assert.deepEqual(
      slow.map((line) => line.droppedBefore),
      [0, 92, 0, 0, 0, 0, 0, 0, 0],
    );
    ring.write(Buffer.from('line 101\n'));
    await settle();
    assert.equal(slow.at(-1)?.bytes.toString(), 'line 101');
    assert.equal(slow.at(-1)?.droppedBefore, 0);
  });

  test('a burst larger than the queue, written in one go, keeps the newest lines for a follower', async () => {
    const ring = new ConsoleRing({ queueLines: 4 });
    const got: FollowedLine[] = [];
    ring.subscribe((line) => {
      got.push(line);
    });
    ring.write(Buffer.from(Array.from({ length: 10 }, (_, i) => `b${i}\n`).join('')));
    await settle();
    assert.deepEqual(text(got), ['b6', 'b7', 'b8', 'b9']);
    assert.equal(got[0].droppedBefore, 6);
    assert.equal(ring.history().length, 10, 'the ring itself keeps what the follower missed');
  });

  test('unsubscribing stops delivery, including lines already queued', async () => {
    const ring = new ConsoleRing();
    const got: FollowedLine[] = [];
    const stop = ring.subscribe((line) => {
      got.push(line);
    });
    ring.write(Buffer.from('queued\n'));
    stop();
    await settle();
    ring.write(Buffer.from('later\n'));
    await settle();
    assert.deepEqual(got, []);
    assert.equal(ring.stats().subscribers, 0);
  });

  test('a follower that throws is removed and reported; the others carry on', async () => {
    const errors: Error[] = [];
    const ring = new ConsoleRing({ onSubscriberError: (error) => errors.push(error) });
    const good: FollowedLine[] = [];
    ring.subscribe(() => {
      throw new Error('follower broke');
    });
    ring.subscribe(async () => {
      throw new Error('async follower broke');
    });
    ring.subscribe((line) => {
      good.push(line);
    });
    ring.write(Buffer.from('a\nb\n'));
    await settle();
    assert.deepEqual(errors.map((error) => error.message).sort(), ['async follower broke', 'follower broke']);
    assert.deepEqual(text(good), ['a', 'b']);
    assert.equal(ring.stats().subscribers, 1);
  });

  test('close delivers the queued lines and the flushed partial line, then onEnd, once', async () => {
    const ring = new ConsoleRing();
    const got: string[] = [];
    let ends = 0;
    ring.subscribe(
      (line) => {
        got.push(line.bytes.toString());
      },
      { onEnd: () => (ends += 1) },
    );
    ring.write(Buffer.from('last\nwords'));
    ring.close();
    await settle();
    assert.deepEqual(got, ['last', 'words']);
    assert.equal(ends, 1);
    assert.equal(ring.stats().subscribers, 0);
  });

  test('close waits for a slow follower before its onEnd', async () => {
    const ring = new ConsoleRing();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const got: string[] = [];
    let ended = false;
    ring.subscribe(
      async (line) => {
        got.push(line.bytes.toString());
        await gate;
      },
      { onEnd: () => (ended = true) },
    );
    ring.write(Buffer.from('one\ntwo\n'));
    ring.close();
    await settle();
    assert.deepEqual(got, ['one']);
    assert.equal(ended, false);
    release();
    await settle();
    assert.deepEqual(got, ['one', 'two']);
    assert.equal(ended, true);
  });

  test('refuses a follower once the console is closed', () => {
    const ring = new ConsoleRing();
    ring.close();
    assert.throws(
      () => ring.subscribe(() => {}),
      refusal('failed_precondition', /closed; there is nothing more to follow/),
    );
  });

  test('history then subscribe in the same tick misses and repeats nothing', async () => {
    const ring = new ConsoleRing();
    ring.write(Buffer.from('old 1\nold 2\n'));
    const seen = text(ring.history());
    ring.subscribe((line) => {
      seen.push(line.bytes.toString());
    });
    ring.write(Buffer.from('new 1\n'));
    await settle();
    assert.deepEqual(seen, ['old 1', 'old 2', 'new 1']);
  });
});
