// Durations as users type them for certificate lifetimes and renewal windows
// ("90d", "1h30m"), and as sigil prints them ("23h 59m").

import { invalid } from '../errors.ts';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const UNITS: Readonly<Record<string, number>> = {
  y: 365 * DAY,
  w: 7 * DAY,
  d: DAY,
  h: HOUR,
  m: MINUTE,
  s: SECOND,
};
const ORDER = 'ywdhms';

/**
 * Milliseconds from "30s", "15m", "24h", "90d", "2w", "10y" (365 days) or a
 * compound such as "1h30m" or "1d 12h". Units must each appear once, largest
 * first, so a typo like "1m1m" is refused rather than summed. A bare number is
 * refused because its unit would be a guess; zero is refused because no
 * lifetime or interval may be empty.
 */
export function parseDuration(text: string): number {
  const usage = `invalid duration ${JSON.stringify(text)} (use e.g. 30s, 15m, 24h, 90d, 10y)`;
  const trimmed = text.trim();
  if (!/^(?:[0-9]+[ywdhms] ?)+$/.test(trimmed)) throw invalid(usage);
  let total = 0;
  let lastUnit = -1;
  for (const [, digits, unit] of trimmed.matchAll(/([0-9]+)([ywdhms])/g)) {
    const rank = ORDER.indexOf(unit);
    if (rank <= lastUnit) {
      throw invalid(
        `invalid duration ${JSON.stringify(text)}: give each unit once, largest first (e.g. 1h30m)`,
      );
    }
    lastUnit = rank;
    total += Number(digits) * UNITS[unit];
  }
  if (!Number.isSafeInteger(total)) throw invalid(`invalid duration ${JSON.stringify(text)}: too long`);
  if (total === 0) throw invalid(`invalid duration ${JSON.stringify(text)}: must be greater than zero`);
  return total;
}

/**
 * A short human form of |ms|: the two largest non-zero units of y, d, h, m, s,
 * truncated ("23h 59m", "9y 364d", "45s"); under a second, "0s" or e.g. "250ms".
 * Truncating rather than rounding means a certificate with 23h 59m 59s left
 * never shows "1d". Callers add "in"/"ago" themselves.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) throw invalid(`cannot format duration ${ms}`);
  let rest = Math.floor(Math.abs(ms));
  if (rest < SECOND) return rest === 0 ? '0s' : `${rest}ms`;
  const parts: string[] = [];
  for (const unit of ['y', 'd', 'h', 'm', 's']) {
    const size = UNITS[unit];
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (parts.length > 0) {
      if (count > 0) parts.push(`${count}${unit}`);
      break;
    }
    if (count > 0) parts.push(`${count}${unit}`);
  }
  return parts.join(' ');
}
