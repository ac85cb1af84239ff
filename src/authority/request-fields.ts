// Checks of the plain fields callers send (names, counts, revocation
// reasons), shared by the concerns that take them.
import { invalid } from '../errors.ts';
import { parseRevocationReason } from '../pki/crl.ts';

/** A display name (node or token): optional, at most 64 characters, no control characters. */
export function displayName(text: string | undefined, what: string): string | null {
  if (text === undefined || text === '') return null;
  if (text.length > 64) throw invalid(`${what} is longer than 64 characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(text)) throw invalid(`${what} contains control characters`);
  return text;
}

/** A count or lifetime field: 0 or absent means `fallback`. */
export function wholeNumber(value: number | undefined, what: string, max: number, fallback: number): number {
  if (value === undefined || value === 0) return fallback;
  if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${what} must be a whole positive number`);
  if (value > max) throw invalid(`${what} must be at most ${max}`);
  return value;
}

/** An RFC 5280 reason name for a revocation; absent or blank is "unspecified". */
export function reasonOf(text: string | undefined): string {
  if (text === undefined || text.trim() === '') return 'unspecified';
  const reason = parseRevocationReason(text);
  if (reason === 'removeFromCRL') {
    throw invalid(
      'removeFromCRL is not a reason to revoke: it only appears in delta CRLs, for a certificate taken off hold; a revocation here is final',
    );
  }
  return reason;
}
