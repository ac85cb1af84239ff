// The trust bundle and certificate chains as the node keeps them in PEM: the
// bundle file lists every root, then every current intermediate (so
// `openssl verify -CAfile bundle.pem cert.pem` works and peers that send
// only their leaf still chain); a certificate file is the leaf followed by its
// intermediates, issuer first.

import { X509Certificate } from 'node:crypto';
import type { IssuedCertificate, TrustBundle } from '../gen/sigil/v1/sigil.ts';
import { readCertificates } from '../pki/certificate.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import { encodePem } from '../pki/pem.ts';

function pemOf(ders: readonly Uint8Array[]): string {
  return ders.map((der) => encodePem('CERTIFICATE', Buffer.from(der))).join('');
}

/** bundle.pem for a TrustBundle: roots first, then intermediates. */
export function bundlePem(bundle: TrustBundle): string {
  return pemOf([...bundle.roots, ...bundle.intermediates]);
}

/** cert.pem for an issued certificate: the leaf, then its chain (root excluded). */
export function chainPem(issued: IssuedCertificate): string {
  return pemOf([issued.certificate, ...issued.chain]);
}

/** The self-signed certificates (roots) of a PEM bundle, as DER. */
export function rootsOf(bundle: string, source = 'trust bundle'): Buffer[] {
  return readCertificates(bundle, source).filter((der) => {
    const certificate = new X509Certificate(der);
    return (
      certificate.ca && certificate.checkIssued(certificate) && certificate.verify(certificate.publicKey)
    );
  });
}

/** SHA-256 fingerprints (lower-case hex) of the roots in a PEM bundle. */
export function rootFingerprints(bundle: string, source = 'trust bundle'): string[] {
  return rootsOf(bundle, source).map(sha256Hex);
}
