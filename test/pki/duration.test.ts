import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SigilError } from '../../src/errors.ts';
import { formatDuration, parseDuration } from '../../src/pki/duration.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

const refused = (text: string, pattern: RegExp) =>
  assertThrowsRefusal(() => parseDuration(text), 'invalid_argument', pattern);

describe('parseDuration', () => {
  test('parses every unit', () => {
    assert.equal(parseDuration('30s'), 30 * S);
    assert.equal(parseDuration('15m'), 15 * M);
    assert.equal(parseDuration('24h'), 24 * H);
    assert.equal(parseDuration('90d'), 90 * D);
    assert.equal(parseDuration('2w'), 14 * D);
    assert.equal(parseDuration('10y'), 3650 * D);
  });

  test('parses compound durations, with or without spaces', () => {
    assert.equal(parseDuration('1h30m'), H + 30 * M);
    assert.equal(parseDuration('1y2w3d4h5m6s'), 365 * D + 14 * D + 3 * D + 4 * H + 5 * M + 6 * S);
    assert.equal(parseDuration('23h 59m'), 23 * H + 59 * M);
    assert.equal(parseDuration(' 90d '), 90 * D);
  });

  test('reads back what formatDuration prints', () => {
    for (const ms of [45 * S, 23 * H + 59 * M, 9 * 365 * D + 364 * D, 3 * D + 2 * H]) {
      assert.equal(parseDuration(formatDuration(ms)), ms);
    }
  });

  test('refuses a bare number', () => {
    refused('30', /^invalid duration "30" \(use e\.g\. 30s, 15m, 24h, 90d, 10y\)$/);
  });

  test('refuses zero', () => {
    refused('0s', /invalid duration "0s": must be greater than zero/);
    refused('0h0m', /must be greater than zero/);
  });

  test('refuses negative durations', () => {
    refused('-1h', /invalid duration "-1h" \(use e\.g\./);
  });

  test('refuses unknown units and fractions', () => {
    refused('1M', /invalid duration "1M"/);
    refused('100ms', /invalid duration "100ms"/);
    refused('1.5h', /invalid duration "1\.5h"/);
    refused('1 h', /invalid duration "1 h"/);
    refused('h', /invalid duration "h"/);
    refused('', /invalid duration ""/);
  });

  test('refuses repeated or out-of-order units', () => {
    refused('1m1m', /give each unit once, largest first/);
    refused('30m1h', /give each unit once, largest first/);
  });

  test('refuses a duration too large to represent', () => {
    refused('99999999999999999999y', /too long/);
  });
});

describe('formatDuration', () => {
  test('shows the two largest units, truncated', () => {
    assert.equal(formatDuration(24 * H - 1), '23h 59m');
    assert.equal(formatDuration(10 * 365 * D - 1), '9y 364d');
    assert.equal(formatDuration(45 * S), '45s');
    assert.equal(formatDuration(90 * D), '90d');
    assert.equal(formatDuration(400 * D + 5 * H), '1y 35d');
    assert.equal(formatDuration(D + 5 * M), '1d');
    assert.equal(formatDuration(2 * M + 3 * S + 999), '2m 3s');
    assert.equal(formatDuration(H), '1h');
  });

  test('formats the absolute value of negative durations', () => {
    assert.equal(formatDuration(-3 * H), '3h');
  });

  test('sub-second values', () => {
    assert.equal(formatDuration(0), '0s');
    assert.equal(formatDuration(250), '250ms');
  });

  test('refuses non-finite values', () => {
    assert.throws(() => formatDuration(Number.NaN), SigilError);
    assert.throws(() => formatDuration(Number.POSITIVE_INFINITY), SigilError);
  });
});
