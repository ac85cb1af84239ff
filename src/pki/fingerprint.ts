// A certificate's (or key's) SHA-256 fingerprint as sigil writes it: lower-case
// hex without colons — what tokens pin, metadata carries and the store keeps.
import { createHash } from 'node:crypto';

export function sha256Hex(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}

/** The same fingerprint from Node's `fingerprint256` text (upper-case hex, colon-separated). */
export function canonicalFingerprint(colonHex: string): string {
  return colonHex.replaceAll(':', '').toLowerCase();
}
