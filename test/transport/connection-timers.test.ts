// Issue #10: "per-connection TimersList growth after ~8,000 connections (heap
// 17.9 → 20.0 MiB after GC)". The cause: grpc-js armed its max-connection-age
// timer (grpc.max_connection_age_ms, which MtlsServer used to set) per
// connection with a random ±10% jitter and unref'd it. Node keeps one
// TimersList per distinct duration and, on clearTimeout of an unref'd timer,
// leaves the emptied list in place until the time it would have fired
// ("unrefed ones are incredibly likely to come from http and be recreated
// shortly after", lib/timers.js): every closed connection left an empty list
// behind for up to the connection age (half the server leaf's lifetime, 12 h
// for a 24 h leaf). Measured before the fix: 100 connections → 100 more lists,
// all of the connection age. sigil now ages connections itself
// (connection-aging.ts: the jitter in a few steps, timers ref'd before they
// are cleared); nothing else in MtlsServer keeps a timer per connection (the
// handshake timeout shares one list). Measured in a child process (node
// --expose-internals, to count the lists): 100 connections opened and closed.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CHILD = join(fileURLToPath(new URL('.', import.meta.url)), 'connection-timers-child.ts');

interface Measured {
  readonly connections: number;
  readonly connectionAgeMs: number;
  readonly before: { timerLists: number; ofConnectionAge: number; heapUsed: number };
  readonly after: { timerLists: number; ofConnectionAge: number; heapUsed: number };
  readonly open: number;
}

function measure(connections: number): Promise<Measured> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--expose-internals', '--expose-gc', CHILD, String(connections)],
      { timeout: 120_000 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${error.message}\n${stderr}`));
        else resolve(JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Measured);
      },
    );
  });
}

test('closed connections leave no timer lists behind (100 connections: fewer than 20 new TimersLists)', async () => {
  const measured = await measure(100);
  console.log(
    `100 connections opened and closed: TimersLists ${measured.before.timerLists} → ${measured.after.timerLists} ` +
      `(of the connection age ${measured.connectionAgeMs} ms ±10%: ${measured.before.ofConnectionAge} → ${measured.after.ofConnectionAge}), ` +
      `heap after GC ${(measured.before.heapUsed / 2 ** 20).toFixed(2)} → ${(measured.after.heapUsed / 2 ** 20).toFixed(2)} MiB`,
  );
  assert.equal(measured.open, 0, 'every connection closed');
  assert.ok(
    measured.after.timerLists - measured.before.timerLists < 20,
    `${measured.after.timerLists - measured.before.timerLists} timer lists left behind by 100 closed connections`,
  );
});
