// Issuing one certificate and recording it: the only path by which the
// authority hands out a certificate. The record is committed before the
// certificate is returned, so "acknowledged" means "stored" and `kill -9`
// right after a reply loses nothing.
import type { KeyObject } from 'node:crypto';
import { invalid } from '../errors.ts';
import type { Issuer, SignedCertificate } from '../pki/issuer.ts';
import { dnsName, emailName, type GeneralName, ipAddress, uriName } from '../pki/names.ts';
import type { Profile } from '../pki/profiles.ts';
import type { CertificateRecord, Store } from '../store/store.ts';

/** What a caller gets back for a leaf (proto SignedCertificate). */
export interface IssuedCertificateView {
  /** DER. */
  readonly certificate: Buffer;
  /** DER intermediates, issuer first, root excluded. */
  readonly chain: readonly Buffer[];
  /** Lower-case hex, no leading zeros. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spiffeId: string;
}

export interface LeafRequest {
  readonly publicKey: KeyObject;
  /** Key usages and EKUs (src/pki/profiles.ts). */
  readonly pkiProfile: Profile;
  /** What the store records: 'node', 'admin', 'server', 'client', 'server+client', … */
  readonly recordProfile: string;
  readonly commonName: string;
  readonly sans: readonly GeneralName[];
  readonly ttlMs: number;
  readonly requester: string;
  readonly now: Date;
}

/** The caller's view of a certificate just issued, sent with `chain`. */
export function issuedView(
  issued: Pick<SignedCertificate, 'der' | 'serialHex' | 'notBefore' | 'notAfter'>,
  chain: readonly Buffer[],
  spiffeId: string,
): IssuedCertificateView {
  const { notBefore, notAfter } = issued;
  return { certificate: issued.der, chain, serial: issued.serialHex, notBefore, notAfter, spiffeId };
}

/** SAN strings as the store keeps them: "dns:…", "ip:…", "uri:…", "email:…". */
export function sanStrings(sans: readonly GeneralName[]): string[] {
  return sans.map((name) => `${name.type}:${name.value}`);
}

/** The GeneralNames back from stored SAN strings (for renewal). */
export function sansFromStrings(sans: readonly string[]): GeneralName[] {
  return sans.map((text) => {
    const colon = text.indexOf(':');
    const type = text.slice(0, colon);
    const value = text.slice(colon + 1);
    switch (type) {
      case 'dns':
        return dnsName(value);
      case 'ip':
        return ipAddress(value);
      case 'uri':
        return uriName(value);
      case 'email':
        return emailName(value);
      default:
        throw invalid(`stored subject alternative name ${JSON.stringify(text)} has an unknown type`);
    }
  });
}

/** The SPIFFE ID among SANs, or ''. */
export function spiffeIdOf(sans: readonly GeneralName[] | readonly string[]): string {
  for (const san of sans) {
    const text = typeof san === 'string' ? san : `${san.type}:${san.value}`;
    if (text.startsWith('uri:spiffe://')) return text.slice(4);
  }
  return '';
}

/** The common name back from a record subject written by this module ("CN=…"). */
export function commonNameOf(subject: string): string | null {
  return subject.startsWith('CN=') ? subject.slice(3) : null;
}

export function certificateRecord(
  issued: SignedCertificate,
  fields: {
    subject: string;
    sans: readonly string[];
    profile: string;
    issuerId: string;
    requester: string;
    now: Date;
  },
): CertificateRecord {
  return {
    serial: issued.serialHex,
    subject: fields.subject,
    sans: fields.sans,
    profile: fields.profile,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    issuerId: fields.issuerId,
    requester: fields.requester,
    der: issued.der,
    issuedAt: fields.now,
    revokedAt: null,
    revocationReason: null,
  };
}

/** The CA that signs a leaf, and where relying parties find its CRL. */
export interface LeafSigner {
  readonly issuer: Issuer;
  readonly issuerId: string;
  readonly chain: readonly Buffer[];
  /**
   * The URL of the issuer's CRL (crl-cache.ts crlUrl), put in the leaf as its
   * CRL distribution point; absent when the server has no HTTP URL to
   * advertise, and then the leaf carries none.
   */
  readonly crlUrl?: string;
}

/** Signs a leaf with `issuer` (CA record `issuerId`), stores the record, and returns both. */
export async function issueLeaf(
  store: Store,
  signer: LeafSigner,
  request: LeafRequest,
): Promise<{ view: IssuedCertificateView; record: CertificateRecord }> {
  const signed = signLeaf(signer, request);
  await store.insertCertificate(signed.record);
  return signed;
}

/**
 * issueLeaf without its insert, for a caller that stores the record together
 * with more (node-certificates.ts: the node's pointer to it, in one commit).
 */
export function signLeaf(
  signer: LeafSigner,
  request: LeafRequest,
): { view: IssuedCertificateView; record: CertificateRecord } {
  const issued = signer.issuer.issue({
    publicKey: request.publicKey,
    profile: request.pkiProfile,
    subject: { commonName: request.commonName },
    sans: request.sans,
    ttlMs: request.ttlMs,
    now: request.now,
    ...(signer.crlUrl ? { crlDistributionPoints: [signer.crlUrl] } : {}),
  });
  const record = certificateRecord(issued, {
    subject: `CN=${request.commonName}`,
    sans: sanStrings(request.sans),
    profile: request.recordProfile,
    issuerId: signer.issuerId,
    requester: request.requester,
    now: request.now,
  });
  return { record, view: issuedView(issued, signer.chain, spiffeIdOf(request.sans)) };
}
