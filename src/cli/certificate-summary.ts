// How commands report a certificate they wrote: the same few facts in JSON
// and in text, with the SHA-256 fingerprint in the form `openssl x509
// -fingerprint -sha256` prints, so the two can be compared by eye.
import type { CertificateInfo } from '../pki/certificate.ts';

export interface CertificateSummary {
  readonly path: string;
  readonly subject: string;
  readonly issuer: string;
  readonly serial: string;
  readonly notBefore: string;
  readonly notAfter: string;
  /** Colon-separated upper-case hex, as openssl (and `sigil pki inspect`) prints it. */
  readonly fingerprintSha256: string;
}

export function summarizeCertificate(info: CertificateInfo, path: string): CertificateSummary {
  return {
    path,
    subject: info.subject,
    issuer: info.issuer,
    serial: info.serialHex,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    fingerprintSha256: colonHex(info.fingerprint),
  };
}

/** "AB:CD:…", as openssl prints fingerprints. */
export function colonHex(hex: string): string {
  return (hex.toUpperCase().match(/../g) ?? []).join(':');
}

/** Indented text lines describing one certificate. */
export function certificateLines(summary: CertificateSummary, indent = '  '): string[] {
  return [
    `${indent}subject:     ${summary.subject}`,
    `${indent}serial:      ${summary.serial}`,
    `${indent}valid:       ${summary.notBefore} to ${summary.notAfter}`,
    `${indent}SHA-256:     ${summary.fingerprintSha256}`,
  ];
}
