// The names on a leaf certificate issued from the command line: subject common
// name, subject alternative names, and the one SPIFFE ID every sigil leaf
// carries. Shared by `pki issue` and `pki quickstart` so both name things the
// same way.
//
//   SPIFFE ID   --spiffe-id (or a spiffe: --uri), else the CSR's, else
//               spiffe://<trust domain>/<server|client>/<name>
//   common name --name, else the first DNS name, else the first IP address,
//               else the CSR's common name, else the SPIFFE ID's last segment
//   <name>      the common name with characters outside [A-Za-z0-9._-] made "-"
import type { KeyObject } from 'node:crypto';
import { invalid } from '../errors.ts';
import type { CertificateRequest } from '../pki/csr.ts';
import type { Issuer, SignedCertificate } from '../pki/issuer.ts';
import {
  dnsName,
  emailName,
  type GeneralName,
  ipAddress,
  parseSpiffeId,
  type SpiffeId,
  spiffeId,
  uriName,
} from '../pki/names.ts';

export type LeafProfile = 'server' | 'client' | 'server+client';

export interface LeafNameRequest {
  readonly profile: LeafProfile;
  /** The CA's trust domain; every SPIFFE ID must be inside it. */
  readonly trustDomain: string;
  readonly name?: string;
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
  readonly uris?: readonly string[];
  readonly emails?: readonly string[];
  readonly spiffeId?: string;
  /** A verified CSR whose requested names are kept. */
  readonly csr?: CertificateRequest;
}

export interface LeafNames {
  readonly commonName: string;
  readonly spiffeId: string;
  /** Every SAN in certificate order: the SPIFFE ID first, then DNS, IP, email and other URIs. */
  readonly sans: readonly GeneralName[];
  /** Things worth telling the user that do not stop issuance. */
  readonly warnings: readonly string[];
}

const isSpiffe = (name: GeneralName): boolean => name.type === 'uri' && name.value.startsWith('spiffe://');

/** A SPIFFE path segment from a free-form name. */
export function spiffeSegment(name: string): string {
  const segment = name.replace(/[^A-Za-z0-9._-]/g, '-');
  return segment === '.' || segment === '..' ? segment.replaceAll('.', '-') : segment;
}

function inTrustDomain(id: SpiffeId, trustDomain: string, from: string): string {
  if (id.trustDomain !== trustDomain) {
    throw invalid(`SPIFFE ID ${id.id} (${from}) is outside this CA's trust domain "${trustDomain}"`);
  }
  return id.id;
}

function single(ids: readonly string[], from: string): string | undefined {
  const distinct = [...new Set(ids)];
  if (distinct.length > 1) {
    throw invalid(
      `more than one SPIFFE ID ${from} (${distinct.join(', ')}); a certificate carries exactly one`,
    );
  }
  return distinct[0];
}

export function planLeafNames(request: LeafNameRequest): LeafNames {
  const warnings: string[] = [];
  const commandLine: GeneralName[] = [
    ...(request.dns ?? []).map(dnsName),
    ...(request.ips ?? []).map(ipAddress),
    ...(request.emails ?? []).map(emailName),
    ...(request.uris ?? []).map(uriName),
  ];
  const requested = request.csr?.sans ?? [];

  // The one SPIFFE ID.
  const explicit = request.spiffeId === undefined ? [] : [parseSpiffeId(request.spiffeId).id];
  const fromUris = commandLine.filter(isSpiffe).map((n) => n.value);
  let id = single([...explicit, ...fromUris], 'on the command line');
  if (id !== undefined) id = inTrustDomain(parseSpiffeId(id), request.trustDomain, 'from the command line');
  const fromCsr = requested.filter(isSpiffe).map((n) => n.value);
  if (id === undefined) {
    const csrId = single(fromCsr, 'in the certificate request');
    if (csrId !== undefined)
      id = inTrustDomain(parseSpiffeId(csrId), request.trustDomain, 'requested in the CSR');
  } else if (fromCsr.some((value) => value !== id)) {
    warnings.push(`the SPIFFE ID requested in the CSR (${fromCsr.join(', ')}) was replaced by ${id}`);
  }

  // Every other name, CSR first, without duplicates.
  const others: GeneralName[] = [];
  const seen = new Set<string>();
  for (const name of [...requested, ...commandLine]) {
    const key = `${name.type}:${name.value}`;
    if (isSpiffe(name) || seen.has(key)) continue;
    seen.add(key);
    others.push(name);
  }

  const firstOf = (type: GeneralName['type']) => others.find((n) => n.type === type)?.value;
  // A derived name is cut to the 64 characters a common name may hold; --name is taken as given.
  let commonName =
    request.name ?? (firstOf('dns') ?? firstOf('ip') ?? request.csr?.commonName ?? undefined)?.slice(0, 64);
  if (commonName === undefined && id !== undefined) {
    const { path, trustDomain } = parseSpiffeId(id);
    commonName = path === '' ? trustDomain : path.slice(path.lastIndexOf('/') + 1);
  }
  if (commonName === undefined || commonName === '') {
    throw invalid('the certificate needs a name: give --name, --dns, --ip or --spiffe-id');
  }
  if (id === undefined) {
    const role = request.profile === 'client' ? 'client' : 'server';
    id = spiffeId(request.trustDomain, role, spiffeSegment(commonName));
  }

  const order: Record<GeneralName['type'], number> = { dns: 0, ip: 1, email: 2, uri: 3 };
  others.sort((a, b) => order[a.type] - order[b.type]);
  if (others.some((n) => n.type === 'uri')) {
    warnings.push(
      'URI SANs besides the SPIFFE ID make this certificate an invalid X.509-SVID for SPIFFE peers',
    );
  }
  return { commonName, spiffeId: id, sans: [{ type: 'uri', value: id }, ...others], warnings };
}

export interface LeafIssue {
  readonly issuer: Issuer;
  readonly profile: LeafProfile;
  readonly names: LeafNames;
  readonly publicKey: KeyObject;
  readonly ttlMs: number;
}

export function issueLeaf(request: LeafIssue): SignedCertificate {
  return request.issuer.issue({
    publicKey: request.publicKey,
    profile: request.profile,
    subject: { commonName: request.names.commonName },
    sans: request.names.sans,
    ttlMs: request.ttlMs,
  });
}

/** "DNS:a, IP:1.2.3.4, URI:spiffe://…", as openssl prints a subjectAltName. */
export function describeSans(sans: readonly { readonly type: string; readonly value: string }[]): string {
  const prefix: Readonly<Record<string, string>> = { dns: 'DNS', ip: 'IP', email: 'email', uri: 'URI' };
  return sans.map((n) => `${prefix[n.type] ?? n.type}:${n.value}`).join(', ');
}
