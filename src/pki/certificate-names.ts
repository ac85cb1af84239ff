// The names a certificate carries — its subjectAltName entries and subject
// common names — read once per DER buffer. Authorization decisions use these;
// reading is the libraries' job (Node's X509Certificate, @peculiar/x509).
import { X509Certificate as NodeX509Certificate } from 'node:crypto';
import { invalid } from '../errors.ts';
import { ipAddress } from './names.ts';
import { SubjectAlternativeNameExtension, X509Certificate } from './x509-library.ts';

export interface CertificateNames {
  /** URI SANs, as written. */
  readonly uris: readonly string[];
  /** DNS SANs, lower-cased. */
  readonly dnsNames: readonly string[];
  /** IP SANs, canonical text (IPv6 per RFC 5952). */
  readonly ipAddresses: readonly string[];
  /** Every CN attribute of the subject, as written. */
  readonly commonNames: readonly string[];
}

const cache = new WeakMap<Buffer, CertificateNames>();

/** The names of a DER certificate. Refuses (invalid_argument) a certificate or SAN it cannot read. */
export function certificateNames(der: Buffer): CertificateNames {
  const cached = cache.get(der);
  if (cached) return cached;
  let items: readonly { type: string; value: string }[];
  let subject: string;
  try {
    subject = new NodeX509Certificate(der).subject;
    items = new X509Certificate(der).getExtension(SubjectAlternativeNameExtension)?.names.items ?? [];
  } catch (error) {
    throw invalid('certificate: unreadable subject or subjectAltName', error);
  }
  const names: CertificateNames = {
    uris: items.filter((n) => n.type === 'url').map((n) => n.value),
    dnsNames: items.filter((n) => n.type === 'dns').map((n) => n.value.toLowerCase()),
    ipAddresses: items
      .filter((n) => n.type === 'ip')
      .map((n) => {
        try {
          return ipAddress(n.value).value;
        } catch {
          throw invalid(`certificate: malformed IP address SAN ${JSON.stringify(n.value)}`);
        }
      }),
    // Node prints one attribute per line, "CN=value"; multi-valued RDNs are joined with "+".
    commonNames: subject
      .split('\n')
      .flatMap((line) => line.split('+'))
      .filter((part) => part.startsWith('CN='))
      .map((part) => part.slice(3)),
  };
  cache.set(der, names);
  return names;
}

// Labels of host-name characters and "*": Node's checkServerIdentity takes a
// "*" anywhere in the first label as a wildcard ("w*.example.com" matches
// www.example.com), and OpenSSL skips a CN holding one when it applies DNS
// name constraints, so such a CN must count as host-like too.
const HOST_LIKE = /^[a-z0-9_*-]+(?:\.[a-z0-9_*-]+)+\.?$/i;

/**
 * Whether a common name could be taken for a host name or an IP address by a
 * client that still falls back to the CN (Node's checkServerIdentity does,
 * for a certificate without DNS SANs): it has a dot and only host-name
 * characters or wildcards, or it parses as an IP address.
 */
export function commonNameLooksLikeHost(commonName: string): boolean {
  if (HOST_LIKE.test(commonName)) return true;
  try {
    ipAddress(commonName);
    return true;
  } catch {
    return false;
  }
}
