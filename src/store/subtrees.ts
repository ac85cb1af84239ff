// Subtree keys (see DelegationRecord) and the queries "at or under a key"
// that delegations, reservations and usage ceilings run.
import { invalid } from '../errors.ts';

/**
 * A subtree key (see DelegationRecord): non-empty text starting with '/'.
 * Anything else, a SPIFFE ID above all, is refused rather than matching
 * nothing, so a caller that mixes the two up fails loudly.
 */
export function checkSubtree(key: string, field: string): string {
  if (typeof key !== 'string' || !key.startsWith('/'))
    throw invalid(
      `${field} ${JSON.stringify(String(key).slice(0, 80))} is not a subtree key (text starting with '/')`,
    );
  return key;
}

/**
 * The bounds of "at or under `key`" as [itself, lower, upper]: a subtree key
 * is in the subtree when it equals `itself` or lies in [lower, upper), i.e.
 * starts with key + '/' ('0' is the character after '/'). Both dialects
 * compare these columns byte by byte (byteOrderedText), so the range is
 * exact, has no wildcards to escape and is case-sensitive (SQLite's LIKE is
 * not), and it uses the index.
 */
export function subtreeBounds(key: string, field = 'under'): [string, string, string] {
  const root = checkSubtree(key, field);
  return [root, `${root}/`, `${root}0`];
}

/** The SQL condition of subtreeBounds on `column`, given the three placeholders. */
export function subtreeCondition(column: string, [itself, lower, upper]: readonly string[]): string {
  return `(${column} = ${itself} OR (${column} >= ${lower} AND ${column} < ${upper}))`;
}

/** True when the subtree key `key` is `ancestor` or lies beneath it (subtreeBounds, in memory). */
export function isAtOrUnder(key: string, ancestor: string): boolean {
  return key === ancestor || key.startsWith(`${ancestor}/`);
}

/**
 * The bounds of "starts with `prefix`" as [lower, upper): the prefix itself
 * and the prefix with its last character raised by one. Prefixes are limited
 * to printable ASCII, where code-unit order is byte order, so the range is
 * exact in both dialects' byte-ordered comparison and uses the index.
 */
export function prefixBounds(prefix: string, field: string): [string, string] {
  if (typeof prefix !== 'string' || !/^[\x21-\x7e]{1,256}$/.test(prefix))
    throw invalid(`${field} must be 1 to 256 printable ASCII characters without spaces`);
  const last = prefix.charCodeAt(prefix.length - 1);
  return [prefix, `${prefix.slice(0, -1)}${String.fromCharCode(last + 1)}`];
}
