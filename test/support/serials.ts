// A certificate's serial as sigil writes serials (lower-case hex, no leading
// zeros), read with node:crypto's X509Certificate rather than sigil's own
// parser, so tests compare sigil's output against an independent reading.
import { X509Certificate } from 'node:crypto';

/** A serial in hex as openssl or TLS print it (any case, leading zeros), the way sigil writes it. */
export function canonicalSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, '');
}

/** The serial of a certificate (an X509Certificate, or PEM or DER; the first of a PEM chain). */
export function serialOf(certificate: X509Certificate | string | Buffer): string {
  const x509 = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate);
  return canonicalSerial(x509.serialNumber);
}
