// SHA-256 fingerprints the way sigil writes them (lower-case hex, no colons),
// computed here with node:crypto rather than with src/pki/fingerprint.ts, so
// the tests that compare against them check sigil's output independently.
import { createHash } from 'node:crypto';

/** SHA-256 of `der` as lower-case hex. */
export function sha256(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}
