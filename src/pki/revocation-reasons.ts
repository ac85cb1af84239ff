// RFC 5280 CRLReason: names, codes, and how a person may type them. Kept apart
// from the CRL codec so the CLI can check --reason without loading ASN.1.
import { invalid } from '../errors.ts';

export const REASON_CODES = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;

/** RFC 5280 CRLReason names (code 7 is unused). */
export type RevocationReason = keyof typeof REASON_CODES;

export const REVOCATION_REASONS: readonly RevocationReason[] = Object.freeze(
  Object.keys(REASON_CODES) as RevocationReason[],
);

export const reasonByCode = new Map<number, RevocationReason>(
  REVOCATION_REASONS.map((r) => [REASON_CODES[r], r]),
);
const reasonByFoldedName = new Map<string, RevocationReason>(
  REVOCATION_REASONS.map((r) => [r.toLowerCase(), r]),
);

/** A reason as a user types it: "keyCompromise", "key-compromise", "KEY_COMPROMISE" or "1". */
export function parseRevocationReason(text: string): RevocationReason {
  const trimmed = text.trim();
  const reason = /^\d{1,2}$/.test(trimmed)
    ? reasonByCode.get(Number(trimmed))
    : reasonByFoldedName.get(trimmed.replace(/[-_ ]/g, '').toLowerCase());
  if (reason === undefined) {
    const shown = trimmed.length > 40 ? `${trimmed.slice(0, 40)}…` : trimmed;
    throw invalid(`unknown revocation reason "${shown}" (expected one of ${REVOCATION_REASONS.join(', ')})`);
  }
  return reason;
}
