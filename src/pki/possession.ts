// The fast proof of possession: a client sends its SubjectPublicKeyInfo and a
// signature over a challenge the server chose, instead of a whole CSR. The
// signed message is domain separated, so a signature the key made for any
// other purpose (a TLS handshake, a certificate, a CSR) can never be replayed
// as a proof here, and a proof can never be replayed anywhere else.
import { type KeyObject, randomBytes } from 'node:crypto';
import { invalid, unauthenticated } from '../errors.ts';
import { signatureAlgorithmFor, signWith, verifyWith } from './algorithms.ts';
import { publicKeyFromSpki } from './keys.ts';

const DOMAIN = Buffer.from('sigil proof-of-possession v1\0', 'latin1');

export const MIN_CHALLENGE_BYTES = 16;
export const MAX_CHALLENGE_BYTES = 1024;
export const MAX_SIGNATURE_BYTES = 1024;
/** Larger than any supported key's SPKI (RSA 4096 is ~550 bytes). */
const MAX_SPKI_BYTES = 2048;

/** 32 fresh random bytes for the server to hand out and remember. */
export function newChallenge(): Buffer {
  return randomBytes(32);
}

/** ascii "sigil proof-of-possession v1\0" || challenge: the bytes actually signed. */
export function possessionMessage(challenge: Buffer): Buffer {
  checkChallenge(challenge);
  return Buffer.concat([DOMAIN, challenge]);
}

function checkChallenge(challenge: Buffer): void {
  if (challenge.length < MIN_CHALLENGE_BYTES || challenge.length > MAX_CHALLENGE_BYTES) {
    throw invalid(
      `challenge must be ${MIN_CHALLENGE_BYTES} to ${MAX_CHALLENGE_BYTES} bytes, got ${challenge.length}`,
    );
  }
}

/** The proof: a signature over possessionMessage(challenge) with the key's algorithm. */
export function proveChallenge(privateKey: KeyObject, challenge: Buffer): Buffer {
  if (privateKey.type !== 'private') throw invalid('proof of possession needs a private key');
  return signWith(signatureAlgorithmFor(privateKey), privateKey, possessionMessage(challenge));
}

/**
 * Check a proof and return the public key it proves. invalid() for malformed
 * input (SPKI, sizes, unsupported key types), unauthenticated() when the
 * signature does not verify for this key and challenge.
 */
export function verifyPossession(spki: Buffer, challenge: Buffer, signature: Buffer): KeyObject {
  checkChallenge(challenge);
  if (signature.length === 0 || signature.length > MAX_SIGNATURE_BYTES) {
    throw invalid(
      `proof of possession signature must be 1 to ${MAX_SIGNATURE_BYTES} bytes, got ${signature.length}`,
    );
  }
  if (spki.length > MAX_SPKI_BYTES) throw invalid('malformed SubjectPublicKeyInfo');
  const publicKey = publicKeyFromSpki(spki); // also refuses unsupported key types
  let ok: boolean;
  try {
    ok = verifyWith(signatureAlgorithmFor(publicKey), publicKey, possessionMessage(challenge), signature);
  } catch {
    ok = false; // e.g. an ECDSA signature that is not valid DER
  }
  if (!ok)
    throw unauthenticated('proof of possession failed: signature does not verify for this key and challenge');
  return publicKey;
}
