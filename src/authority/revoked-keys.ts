// Keys that never get another certificate. A certificate is a statement
// about a key; some revocations end the key itself, the rest end only the
// certificate:
//
//   ends the key     keyCompromise   the private key is (or may be) in someone
//                                    else's hands: any new certificate for it
//                                    would certify the attacker as well.
//                    node revocation `sigil node revoke`, whatever its reason:
//                                    the operator ends the node's identity, and
//                                    a node's identity is its keys (the node ID
//                                    derives from the enrolled key).
//   ends the certificate only
//                    superseded, cessationOfOperation, affiliationChanged,
//                    privilegeWithdrawn, certificateHold, unspecified: the key
//                    is still the holder's alone, so a node may Rejoin or
//                    Register again with it; caCompromise and aACompromise say
//                    the issuer is compromised, not this key, which is exactly
//                    the key to certify again under a new CA.
//
// An ended key is recorded in the store (revoked_keys, by SHA-256 of its
// SubjectPublicKeyInfo, shared by every replica) and refused at every
// issuance: Register, Rejoin, Renew (the caller's key and a new one), Sign,
// delegations. The node has to enrol again with a new token and a new key.
import { createHash, type KeyObject } from 'node:crypto';
import { SigilError } from '../errors.ts';
import { spkiDer, spkiSha256 } from '../pki/keys.ts';
import type { RevokedKeyRecord, Store } from '../store/store.ts';

/** The revocation reasons that end the key of the revoked certificate. */
export const KEY_ENDING_REASONS: ReadonlySet<string> = new Set(['keyCompromise']);

/** The reason recorded for every key of a revoked node. */
export const NODE_REVOKED = 'nodeRevoked';

export function endsKey(reason: string): boolean {
  return KEY_ENDING_REASONS.has(reason);
}

/** SHA-256 of the SubjectPublicKeyInfo DER (a public key, or SPKI DER), lower-case hex. */
export function keyHashOf(key: KeyObject | Buffer): string {
  // A KeyObject's SPKI is spkiDer()'s own cached Buffer, whose digest the key identifier already took;
  // a caller's Buffer is hashed afresh (it could be changed after a cached digest).
  if (!Buffer.isBuffer(key)) return spkiSha256(spkiDer(key)).toString('hex');
  return createHash('sha256').update(key).digest('hex');
}

/** Why the key of `record` gets no certificate, in words an operator can act on. */
export function revokedKeyMessage(record: RevokedKeyRecord): string {
  const why =
    record.reason === NODE_REVOKED
      ? `node ${record.nodeId ?? '(unknown)'} has been revoked; none of its keys gets another certificate`
      : `this key was revoked for key compromise (${
          record.serial ? `certificate ${record.serial}` : 'a certificate'
        }, ${record.revokedAt.toISOString()}) and never gets another certificate`;
  return `${why}: enrol again with a new join token and a new key`;
}

/** Refuses (permission_denied) a key recorded as revoked; changes nothing. */
export async function requireUsableKey(store: Store, key: KeyObject | Buffer): Promise<void> {
  const record = await store.getRevokedKey(keyHashOf(key));
  if (record) throw new SigilError('permission_denied', revokedKeyMessage(record));
}
