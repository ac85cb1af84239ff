// Signature algorithms, one per key type, with their AlgorithmIdentifier DER
// precomputed. Every signature sigil makes goes through node:crypto here.
import { type KeyObject, sign, verify } from 'node:crypto';
import { derNull, oid, sequence } from './der.ts';
import { type KeyType, keyTypeOf } from './keys.ts';

export interface SignatureAlgorithm {
  /** Short name, as openssl prints it. */
  readonly name: string;
  /** DER AlgorithmIdentifier placed in TBSCertificate/TBSCertList and the outer structure. */
  readonly algorithmIdentifier: Buffer;
  /** node:crypto digest name, or null for Ed25519 (which hashes internally). */
  readonly digest: string | null;
}

const ecdsaWithSha256: SignatureAlgorithm = {
  name: 'ecdsa-with-SHA256',
  // RFC 5758: parameters MUST be absent for ECDSA.
  algorithmIdentifier: sequence(oid('1.2.840.10045.4.3.2')),
  digest: 'sha256',
};
const ecdsaWithSha384: SignatureAlgorithm = {
  name: 'ecdsa-with-SHA384',
  algorithmIdentifier: sequence(oid('1.2.840.10045.4.3.3')),
  digest: 'sha384',
};
const ed25519: SignatureAlgorithm = {
  name: 'ED25519',
  algorithmIdentifier: sequence(oid('1.3.101.112')),
  digest: null,
};
const sha256WithRsa: SignatureAlgorithm = {
  name: 'sha256WithRSAEncryption',
  // RFC 4055: parameters MUST be NULL for the PKCS#1 v1.5 signatures.
  algorithmIdentifier: sequence(oid('1.2.840.113549.1.1.11'), derNull()),
  digest: 'sha256',
};

const byKeyType: Record<KeyType, SignatureAlgorithm> = {
  p256: ecdsaWithSha256,
  p384: ecdsaWithSha384,
  ed25519,
  rsa2048: sha256WithRsa,
  rsa3072: sha256WithRsa,
  rsa4096: sha256WithRsa,
};

export function signatureAlgorithmFor(key: KeyObject): SignatureAlgorithm {
  return byKeyType[keyTypeOf(key)];
}

/** Sign `data` with the issuer's private key using the algorithm matched to it. */
export function signWith(algorithm: SignatureAlgorithm, privateKey: KeyObject, data: Buffer): Buffer {
  return sign(algorithm.digest, data, privateKey);
}

export function verifyWith(
  algorithm: SignatureAlgorithm,
  publicKey: KeyObject,
  data: Buffer,
  signature: Buffer,
): boolean {
  return verify(algorithm.digest, data, publicKey, signature);
}
