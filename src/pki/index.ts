// The public surface of sigil's PKI core (`sigil/pki`): pure functions and
// types, no I/O. Internals (the DER writer, extension encoders, the CSR
// framing helpers) stay unexported.
export type { CertificateInfo } from './certificate.ts';
export { parseCertificate, readCertificates } from './certificate.ts';
export type { CrlInfo, CrlOptions, RevocationReason, RevokedEntry } from './crl.ts';
export { createCrl, parseCrl, parseRevocationReason, REVOCATION_REASONS, verifyCrlSignature } from './crl.ts';
export type { CertificateRequest } from './csr.ts';
export { createCsr, readCsr } from './csr.ts';
export type { SubjectName } from './distinguished-name.ts';
export { formatDuration, parseDuration } from './duration.ts';
export type { CustomExtension, NameConstraints } from './extensions.ts';
export type { Inspected } from './inspect.ts';
export { formatInspection, inspect } from './inspect.ts';
export type { IssueRequest, IssuerOptions, SignedCertificate } from './issuer.ts';
export { createRootCertificate, DEFAULT_SKEW_MS, Issuer } from './issuer.ts';
export type { KeyType } from './keys.ts';
export {
  describeKeyType,
  generateKeyPair,
  KEY_TYPES,
  keysMatch,
  keyTypeOf,
  parseKeyType,
  privateKeyToDer,
  privateKeyToPem,
  publicKeyFromSpki,
  publicKeyToPem,
  readPrivateKey,
  readPublicKey,
  spkiDer,
} from './keys.ts';
export type { GeneralName, IpRange, SpiffeId } from './names.ts';
export {
  classifyAddress,
  dnsName,
  emailName,
  ipAddress,
  ipRange,
  parseSpiffeId,
  parseTrustDomain,
  spiffeId,
  uriName,
} from './names.ts';
export type { PemBlock } from './pem.ts';
export { decodePem, encodePem } from './pem.ts';
export type { Limits, Permission, Policy, PolicyOid } from './policy-extension.ts';
export {
  DEFAULT_POLICY_OID,
  DEFAULT_POLICY_OID_TEXT,
  decodePolicy,
  encodePolicy,
  intersectPolicies,
  isNarrowing,
  PERMISSIONS,
  parsePermissions,
  parsePolicyOid,
  policyExtension,
  readPolicy,
} from './policy-extension.ts';
export { newChallenge, possessionMessage, proveChallenge, verifyPossession } from './possession.ts';
export type { Profile } from './profiles.ts';
export { PROFILES } from './profiles.ts';
