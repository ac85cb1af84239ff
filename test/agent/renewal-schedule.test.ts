// The renewal schedule is pure: fixed clocks and random sources, no timers.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DEFAULT_RENEWAL_POLICY,
  delayUntil,
  MAX_TIMER_MS,
  renewalAction,
  renewalPolicy,
  renewalTime,
  retryDelay,
} from '../../src/agent/renewal-schedule.ts';

const HOUR = 3_600_000;
const start = new Date('2030-01-01T00:00:00Z');
const day = { notBefore: start, notAfter: new Date(start.getTime() + 24 * HOUR) };
const at = (ms: number) => new Date(start.getTime() + ms);

describe('renewalTime', () => {
  test('is two thirds of the lifetime without jitter (random 0.5)', () => {
    assert.equal(renewalTime(day, () => 0.5).getTime(), at(16 * HOUR).getTime());
  });

  test('jitter moves it by at most 5% of the lifetime either way', () => {
    const earliest = renewalTime(day, () => 0).getTime();
    const latest = renewalTime(day, () => 0.999999).getTime();
    assert.equal(earliest, at(Math.floor(24 * HOUR * (2 / 3 - 0.05))).getTime());
    assert.ok(latest <= at(24 * HOUR * (2 / 3 + 0.05)).getTime());
    assert.ok(latest > at(16 * HOUR).getTime());
  });

  test('is always strictly inside the validity period, for any random value', () => {
    for (let i = 0; i <= 100; i++) {
      const r = i / 101;
      const t = renewalTime(day, () => r).getTime();
      assert.ok(t > day.notBefore.getTime() && t < day.notAfter.getTime(), `r=${r}`);
    }
  });

  test('scales with the lifetime: a 90-second certificate renews after about a minute', () => {
    const short = { notBefore: start, notAfter: at(90_000) };
    assert.equal(renewalTime(short, () => 0.5).getTime(), at(60_000).getTime());
  });
});

describe('renewalAction', () => {
  const renewAt = at(16 * HOUR);
  test('waits until the planned instant', () => {
    assert.deepEqual(renewalAction(day, renewAt, at(HOUR)), { kind: 'wait', at: renewAt });
  });
  test('renews from the planned instant until expiry', () => {
    assert.deepEqual(renewalAction(day, renewAt, renewAt), { kind: 'renew' });
    assert.deepEqual(renewalAction(day, renewAt, at(24 * HOUR - 1)), { kind: 'renew' });
  });
  test('re-joins once the certificate has expired', () => {
    assert.deepEqual(renewalAction(day, renewAt, at(24 * HOUR)), { kind: 'rejoin' });
    assert.deepEqual(renewalAction(day, renewAt, at(48 * HOUR)), { kind: 'rejoin' });
  });
});

describe('retryDelay', () => {
  const now = at(16 * HOUR); // 8 hours left
  test('doubles from one second (half fixed, half random)', () => {
    assert.equal(
      retryDelay(1, day, now, () => 0),
      500,
    );
    assert.equal(
      retryDelay(1, day, now, () => 0.999999),
      999,
    );
    assert.equal(
      retryDelay(2, day, now, () => 0),
      1_000,
    );
    assert.equal(
      retryDelay(3, day, now, () => 0),
      2_000,
    );
    assert.equal(
      retryDelay(8, day, now, () => 0),
      64_000,
    );
    assert.equal(
      retryDelay(10, day, now, () => 0),
      150_000,
    ); // capped at 5 min
  });

  test('is capped at five minutes, however many failures', () => {
    for (const failures of [20, 100, 1_000_000, Number.MAX_SAFE_INTEGER]) {
      const delay = retryDelay(failures, day, now, () => 0.999999);
      assert.ok(delay <= DEFAULT_RENEWAL_POLICY.maxRetryMs, `${failures}: ${delay}`);
      assert.ok(delay >= DEFAULT_RENEWAL_POLICY.maxRetryMs / 2);
    }
  });

  test('never schedules a retry past expiry while the certificate is valid', () => {
    for (const left of [10 * 60_000, 60_000, 5_000, 1_000, 150, 50, 1]) {
      const t = at(24 * HOUR - left);
      for (const failures of [1, 5, 30]) {
        const delay = retryDelay(failures, day, t, () => 0.999999);
        assert.ok(delay > 0, `left=${left} failures=${failures}`);
        assert.ok(
          t.getTime() + delay <= day.notAfter.getTime(),
          `left=${left} failures=${failures}: ${delay}`,
        );
      }
    }
  });

  test('keeps at least the minimum delay while that much time is left', () => {
    assert.equal(
      retryDelay(30, day, at(24 * HOUR - 150), () => 0),
      100,
    );
  });

  test('after expiry uses the plain backoff (for re-join attempts)', () => {
    const expired = at(25 * HOUR);
    assert.equal(
      retryDelay(1, day, expired, () => 0),
      500,
    );
    assert.equal(
      retryDelay(30, day, expired, () => 0),
      DEFAULT_RENEWAL_POLICY.maxRetryMs / 2,
    );
  });

  test('treats zero or fractional failure counts as the first failure', () => {
    assert.equal(
      retryDelay(0, day, now, () => 0),
      500,
    );
    assert.equal(
      retryDelay(1.7, day, now, () => 0),
      500,
    );
  });
});

describe('renewalPolicy', () => {
  test('fills defaults and accepts overrides', () => {
    const policy = renewalPolicy({ maxRetryMs: 60_000 });
    assert.equal(policy.maxRetryMs, 60_000);
    assert.equal(policy.fraction, 2 / 3);
  });

  test('refuses policies that could schedule outside the lifetime', () => {
    assert.throws(() => renewalPolicy({ fraction: 1 }), /fraction/);
    assert.throws(() => renewalPolicy({ fraction: 0 }), /fraction/);
    assert.throws(() => renewalPolicy({ fraction: 0.9, jitter: 0.2 }), /jitter/);
    assert.throws(() => renewalPolicy({ initialRetryMs: 10, minDelayMs: 100 }), /retry delays/);
    assert.throws(() => renewalPolicy({ maxRetryMs: 10 }), /retry delays/);
  });
});

describe('delayUntil', () => {
  test('is never negative and never beyond what setTimeout can hold', () => {
    assert.equal(delayUntil(at(0), at(5_000)), 0);
    assert.equal(delayUntil(at(5_000), at(0)), 5_000);
    assert.equal(delayUntil(at(365 * 24 * HOUR), at(0)), MAX_TIMER_MS);
  });
});
