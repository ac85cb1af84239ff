// Why a TLS client was refused, in the terms a person can act on: OpenSSL's
// verification code (the name `openssl verify` prints, e.g.
// PERMITTED_SUBTREE_VIOLATION where Node says only "UNSPECIFIED"), or the
// sigil rule that refused a certificate OpenSSL accepted; what the client
// presented (serial, SPIFFE ID); and the TLS alert that tells the client
// (tls-alert.ts sends it).
import type { X509Certificate } from 'node:crypto';
import type tls from 'node:tls';
import { certificateNames } from '../pki/certificate-names.ts';
import { canonicalSerial } from '../pki/serial.ts';
import type { TlsAlert } from './tls-alert.ts';

/** sigil's own refusals of a certificate OpenSSL accepted (mtls-server.ts). */
export const CA_CERTIFICATE_AS_CLIENT = 'CA_CERTIFICATE_AS_CLIENT';
export const CERT_CHAIN_NOT_STRICT = 'CERT_CHAIN_NOT_STRICT';
/** More connections from one identity than the server allows (peer-limits.ts). */
export const TOO_MANY_CONNECTIONS = 'TOO_MANY_CONNECTIONS';
/** The reason Node's server reports for a client that sent no certificate. */
export const NO_CLIENT_CERTIFICATE = 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE';

const UNKNOWN_CA = [
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_UNTRUSTED',
  'INVALID_CA',
];

// The alert for each reason, after OpenSSL's own table (ssl_x509err2alert),
// with sigil's refusals added. Anything else is certificate_unknown.
const ALERT_BY_REASON: Readonly<Record<string, TlsAlert>> = {
  ...Object.fromEntries(UNKNOWN_CA.map((code) => [code, 'unknown_ca' as const])),
  CERT_REVOKED: 'certificate_revoked',
  CERT_HAS_EXPIRED: 'certificate_expired',
  INVALID_PURPOSE: 'unsupported_certificate',
  [CA_CERTIFICATE_AS_CLIENT]: 'unsupported_certificate',
  CERT_NOT_YET_VALID: 'bad_certificate',
  CERT_SIGNATURE_FAILURE: 'bad_certificate',
  CERT_REJECTED: 'bad_certificate',
  CERT_CHAIN_TOO_LONG: 'bad_certificate',
  PATH_LENGTH_EXCEEDED: 'bad_certificate',
  PERMITTED_SUBTREE_VIOLATION: 'bad_certificate',
  EXCLUDED_SUBTREE_VIOLATION: 'bad_certificate',
  UNSUPPORTED_OR_INVALID_NAME_SYNTAX: 'bad_certificate',
  UNSUPPORTED_OR_INVALID_NAME_CONSTRAINT_SYNTAX: 'bad_certificate',
  UNSUPPORTED_NAME_CONSTRAINT_TYPE: 'bad_certificate',
  [CERT_CHAIN_NOT_STRICT]: 'bad_certificate',
  [TOO_MANY_CONNECTIONS]: 'access_denied',
  [NO_CLIENT_CERTIFICATE]: 'certificate_required',
};

/** The TLS alert that tells a client refused for `reason`. */
export function alertFor(reason: string): TlsAlert {
  return ALERT_BY_REASON[reason] ?? 'certificate_unknown';
}

/**
 * OpenSSL's verification code of a socket whose client certificate failed
 * verification. Node names only the codes it knows and reports the rest
 * (name constraints among them) as "UNSPECIFIED"; the text OpenSSL gives
 * ("permitted subtree violation") names them all, so it is turned into the
 * code (PERMITTED_SUBTREE_VIOLATION).
 */
export function verificationCode(socket: tls.TLSSocket): string {
  // Node sets authorizationError to the code (typed Error, a string at run time).
  const code: unknown = socket.authorizationError;
  const named = typeof code === 'string' && code !== '' ? code : 'CERT_REJECTED';
  if (named !== 'UNSPECIFIED') return named;
  // The verification error as an Error, with OpenSSL's text: Node's TLSWrap.verifyError().
  const handle = (socket as unknown as { _handle?: { verifyError?: () => Error | null } })._handle;
  let text: string | undefined;
  try {
    text = handle?.verifyError?.()?.message;
  } catch {
    text = undefined;
  }
  const derived = text
    ?.trim()
    .toUpperCase()
    .replace(/[^A-Z0-9]+/g, '_')
    .replace(/^_|_$/g, '');
  return derived ? derived : named;
}

/** What a refused client presented, for the log: never anything secret. */
export interface PresentedCertificate {
  /** Lower-case hex, no leading zeros. */
  readonly serial: string;
  readonly spiffeId: string | null;
  readonly subject: string;
  readonly issuer: string;
}

/** The leaf a client presented, when it presented one and Node still has it. */
export function presentedCertificate(socket: tls.TLSSocket): PresentedCertificate | undefined {
  let leaf: X509Certificate | undefined;
  try {
    leaf = socket.getPeerX509Certificate();
  } catch {
    return undefined;
  }
  if (!leaf) return undefined;
  let spiffeId: string | null = null;
  try {
    spiffeId = certificateNames(leaf.raw).uris.find((uri) => uri.startsWith('spiffe://')) ?? null;
  } catch {
    // an unreadable SAN is reported without a SPIFFE ID
  }
  return {
    serial: canonicalSerial(leaf.serialNumber),
    spiffeId,
    subject: leaf.subject.replaceAll('\n', ', '),
    issuer: leaf.issuer.replaceAll('\n', ', '),
  };
}
