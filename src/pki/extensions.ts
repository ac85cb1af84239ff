// Encoders for the X.509 v3 extensions sigil writes (RFC 5280 §4.2). Each
// returns a complete DER Extension so the issuer can cache constant ones.
import { invalid } from '../errors.ts';
import {
  boolean,
  explicit,
  implicitConstructed,
  implicitPrimitive,
  integer,
  namedBits,
  octetString,
  oid,
  oidContents,
  sequence,
} from './der.ts';
import { dnsName, type GeneralName, type IpRange, uriName } from './names.ts';

export const ExtensionOid = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  nameConstraints: '2.5.29.30',
  crlDistributionPoints: '2.5.29.31',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
} as const;

/** An extension the caller supplies as OID + DER value; always non-critical. */
export interface CustomExtension {
  readonly oid: string;
  /** The DER value placed inside extnValue's OCTET STRING. */
  readonly value: Buffer;
  readonly critical?: false;
}

export interface NameConstraints {
  readonly permittedDns?: readonly string[];
  readonly excludedDns?: readonly string[];
  readonly permittedIp?: readonly IpRange[];
  readonly excludedIp?: readonly IpRange[];
  /** URI constraints apply to the host part only (RFC 5280 §4.2.1.10). */
  readonly permittedUri?: readonly string[];
  readonly excludedUri?: readonly string[];
}

export function extension(extnId: string, critical: boolean, value: Buffer): Buffer {
  // DEFAULT FALSE must be omitted in DER.
  return critical
    ? sequence(oid(extnId), boolean(true), octetString(value))
    : sequence(oid(extnId), octetString(value));
}

export function basicConstraints(isCa: boolean, pathLen?: number): Buffer {
  if (!isCa) return extension(ExtensionOid.basicConstraints, true, sequence());
  const parts = [boolean(true)];
  if (pathLen !== undefined) parts.push(integer(pathLen));
  return extension(ExtensionOid.basicConstraints, true, sequence(...parts));
}

export const keyUsage = (bits: readonly number[]): Buffer =>
  extension(ExtensionOid.keyUsage, true, namedBits(bits));

export const extKeyUsage = (oids: readonly string[]): Buffer =>
  extension(ExtensionOid.extKeyUsage, false, sequence(...oids.map(oid)));

export const subjectKeyIdentifier = (keyId: Buffer): Buffer =>
  extension(ExtensionOid.subjectKeyIdentifier, false, octetString(keyId));

export const authorityKeyIdentifier = (keyId: Buffer): Buffer =>
  extension(ExtensionOid.authorityKeyIdentifier, false, sequence(implicitPrimitive(0, keyId)));

/** GeneralName CHOICE, context tags per RFC 5280 (IMPLICIT). */
export function generalName(name: GeneralName): Buffer {
  switch (name.type) {
    case 'email':
      return implicitPrimitive(1, Buffer.from(name.value, 'latin1'));
    case 'dns':
      return implicitPrimitive(2, Buffer.from(name.value, 'latin1'));
    case 'uri':
      return implicitPrimitive(6, Buffer.from(name.value, 'latin1'));
    case 'ip':
      return implicitPrimitive(7, name.bytes);
  }
}

export function subjectAltName(names: readonly GeneralName[], critical = false): Buffer {
  if (names.length === 0) throw invalid('subjectAltName needs at least one name');
  return extension(ExtensionOid.subjectAltName, critical, sequence(...names.map(generalName)));
}

/** Name constraints are always critical (RFC 5280 MUST). */
export function nameConstraints(constraints: NameConstraints): Buffer {
  const subtrees = (dns?: readonly string[], ip?: readonly IpRange[], uri?: readonly string[]): Buffer[] => [
    ...(dns ?? []).map((d) => sequence(implicitPrimitive(2, constraintHost(d, 'DNS')))),
    ...(ip ?? []).map((r) => sequence(implicitPrimitive(7, r.bytes))),
    ...(uri ?? []).map((u) => sequence(implicitPrimitive(6, constraintHost(u, 'URI')))),
  ];
  const permitted = subtrees(constraints.permittedDns, constraints.permittedIp, constraints.permittedUri);
  const excluded = subtrees(constraints.excludedDns, constraints.excludedIp, constraints.excludedUri);
  if (permitted.length === 0 && excluded.length === 0) throw invalid('name constraints are empty');
  const parts: Buffer[] = [];
  if (permitted.length > 0) parts.push(implicitConstructed(0, ...permitted));
  if (excluded.length > 0) parts.push(implicitConstructed(1, ...excluded));
  return extension(ExtensionOid.nameConstraints, true, sequence(...parts));
}

/**
 * A DNS or URI name-constraint base: a host name, or for URIs also ".domain"
 * (any host below it). Validated like a SAN so only ASCII reaches the encoder.
 */
// A leading "." means subdomains only, for DNS as for URI constraints (OpenSSL and Go read it so).
function constraintHost(text: string, kind: 'DNS' | 'URI'): Buffer {
  const host = text.startsWith('.') ? text.slice(1) : text;
  if (host.startsWith('*')) throw invalid(`${kind} name constraint "${text}" may not contain a wildcard`);
  try {
    dnsName(host);
  } catch (error) {
    throw invalid(`${kind} name constraint "${text}" is not a valid host name`, error);
  }
  return Buffer.from(text.toLowerCase(), 'latin1');
}

/** cRLDistributionPoints with one fullName URI per distribution point. */
export function crlDistributionPoints(uris: readonly string[]): Buffer {
  for (const uri of uris) uriName(uri); // refuses non-ASCII, relative and malformed URIs
  const points = uris.map((uri) =>
    // distributionPoint [0] (explicit: it tags a CHOICE) → fullName [0] IMPLICIT GeneralNames
    sequence(explicit(0, implicitConstructed(0, implicitPrimitive(6, Buffer.from(uri, 'latin1'))))),
  );
  return extension(ExtensionOid.crlDistributionPoints, false, sequence(...points));
}

export function customExtension(ext: CustomExtension): Buffer {
  if ((ext as { critical?: boolean }).critical === true) {
    throw invalid(
      `extension ${ext.oid}: custom extensions must be non-critical (OpenSSL rejects unknown critical ones)`,
    );
  }
  try {
    oidContents(ext.oid);
  } catch {
    throw invalid(`extension OID "${ext.oid}" is not a valid dotted OID`);
  }
  if ((Object.values(ExtensionOid) as string[]).includes(ext.oid)) {
    throw invalid(
      `extension ${ext.oid} is written by sigil itself and cannot be supplied as a custom extension`,
    );
  }
  return extension(ext.oid, false, ext.value);
}
