// PKCS#10 certificate requests (RFC 2986). readCsr, on the Sign hot path,
// reads with sigil's strict DER reader (csr-reader.ts); parseCsrStructure
// keeps the library (@peculiar/asn1-csr) for inspect, which shows requests
// rather than trusting them. Proof of possession is ours: the signature is
// checked with node:crypto over the CertificationRequestInfo bytes exactly as
// they arrived, never over a re-encoding, so what we verify is what the
// requester signed. Writing uses the DER writer and node:crypto.
import { isAscii, isUtf8 } from 'node:buffer';
import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName as AsnGeneralName } from '@peculiar/asn1-x509';
import { invalid, SigilError, unauthenticated } from '../errors.ts';
import { signatureAlgorithmFor, signWith } from './algorithms.ts';
import {
  GeneralNameTag,
  type RawGeneralName,
  type RequestExtension,
  type RequestLayout,
  readExtensions,
  readGeneralNames,
  readRequestLayout,
} from './csr-reader.ts';
import { bitString, implicitConstructed, integer, oid, sequence, setOf, tlv, utf8String } from './der.ts';
import { type DerElement, DerTag } from './der-reader.ts';
import { subjectAltName } from './extensions.ts';
import { publicKeyFromSpki, spkiDer } from './keys.ts';
import { dnsName, emailName, type GeneralName, ipAddress, uriName } from './names.ts';
import { decodePem, looksLikePem } from './pem.ts';
import { Name } from './x509-library.ts';

export interface CertificateRequest {
  /** The request exactly as received (DER). */
  der: Buffer;
  publicKey: KeyObject;
  /** RFC 4514-style text of the subject, e.g. "CN=node-1". */
  subject: string;
  commonName: string | null;
  /** From the extensionRequest attribute's subjectAltName (dns, ip, uri, email). */
  sans: GeneralName[];
}

/** Requests are small; anything bigger is not one we want to parse. */
export const MAX_CSR_BYTES = 64 * 1024;

const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_COMMON_NAME = '2.5.4.3';
const OID_RSASSA_PSS = '1.2.840.113549.1.1.10';
const CSR_LABELS = new Set(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);

// ---------------------------------------------------------------------------
// Signature algorithms sigil accepts on things others signed (CSRs, CRLs).
// Shared with crl.ts and inspect.ts; it belongs next to algorithms.ts.

interface AcceptedSignatureAlgorithm {
  readonly name: string;
  /** node:crypto digest, or null for Ed25519. */
  readonly digest: string | null;
  /** node:crypto asymmetricKeyType the algorithm needs. */
  readonly keyType: 'ec' | 'ed25519' | 'rsa';
}

const acceptedAlgorithms: ReadonlyMap<string, AcceptedSignatureAlgorithm> = new Map([
  ['1.2.840.10045.4.3.2', { name: 'ecdsa-with-SHA256', digest: 'sha256', keyType: 'ec' }],
  ['1.2.840.10045.4.3.3', { name: 'ecdsa-with-SHA384', digest: 'sha384', keyType: 'ec' }],
  ['1.3.101.112', { name: 'ED25519', digest: null, keyType: 'ed25519' }],
  ['1.2.840.113549.1.1.11', { name: 'sha256WithRSAEncryption', digest: 'sha256', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.12', { name: 'sha384WithRSAEncryption', digest: 'sha384', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.13', { name: 'sha512WithRSAEncryption', digest: 'sha512', keyType: 'rsa' }],
] as const);

const otherAlgorithmNames: ReadonlyMap<string, string> = new Map([
  [OID_RSASSA_PSS, 'RSASSA-PSS'],
  ['1.2.840.113549.1.1.5', 'sha1WithRSAEncryption'],
  ['1.2.840.113549.1.1.4', 'md5WithRSAEncryption'],
  ['1.2.840.10045.4.1', 'ecdsa-with-SHA1'],
  ['1.2.840.10045.4.3.4', 'ecdsa-with-SHA512'],
  ['1.3.101.113', 'ED448'],
]);

/** openssl's short name for a signature algorithm OID, or the dotted OID when unknown. */
export function signatureAlgorithmName(algorithmOid: string): string {
  return acceptedAlgorithms.get(algorithmOid)?.name ?? otherAlgorithmNames.get(algorithmOid) ?? algorithmOid;
}

/**
 * Verify `signature` over `signedBytes` with the algorithm an ASN.1 structure
 * names. Throws invalid() for algorithms sigil does not accept (with `what`
 * naming the object); returns false for a signature that does not verify,
 * including one whose algorithm does not fit the key.
 */
export function verifySignedData(
  algorithm: { readonly algorithm: string },
  publicKey: KeyObject,
  signedBytes: Buffer,
  signature: Buffer,
  what: string,
): boolean {
  const accepted = acceptedAlgorithms.get(algorithm.algorithm);
  if (!accepted) {
    if (algorithm.algorithm === OID_RSASSA_PSS) {
      throw invalid(`${what}: RSA-PSS signatures are not supported; sign with sha256WithRSAEncryption`);
    }
    throw invalid(`${what}: unsupported signature algorithm ${signatureAlgorithmName(algorithm.algorithm)}`);
  }
  if (publicKey.asymmetricKeyType !== accepted.keyType) return false;
  try {
    return verify(accepted.digest, signedBytes, publicKey, signature);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Small framing checks. Parsing stays with the library; these only make sure
// the input is exactly one DER object and that the library's "raw" slice is
// the one in our buffer.

/** Length of the DER header (tag + length octets) and the whole TLV, or null when malformed. */
export function derFrame(der: Buffer): { header: number; total: number } | null {
  if (der.length < 2) return null;
  const first = der[1];
  if (first < 0x80) return { header: 2, total: 2 + first };
  const count = first & 0x7f;
  if (count === 0 || count > 4 || der.length < 2 + count) return null;
  let length = 0;
  for (let i = 0; i < count; i++) length = length * 256 + der[2 + i];
  return { header: 2 + count, total: 2 + count + length };
}

/** True when `der` is exactly one SEQUENCE, nothing before or after it. */
export function isSingleSequence(der: Buffer): boolean {
  const frame = derFrame(der);
  return der.length > 0 && der[0] === 0x30 && frame !== null && frame.total === der.length;
}

/** The first field of an outer SEQUENCE as it appears in `der`, checked against the library's raw copy. */
export function firstFieldBytes(der: Buffer, raw: ArrayBuffer | undefined): Buffer | null {
  const frame = derFrame(der);
  if (!frame || !raw) return null;
  const bytes = der.subarray(frame.header, frame.header + raw.byteLength);
  return bytes.equals(Buffer.from(raw)) ? bytes : null;
}

// ---------------------------------------------------------------------------

function notACsr(source: string, cause?: unknown) {
  return invalid(`${source}: not a PKCS#10 certificate request`, cause);
}

/** The DER of a request given as PEM or DER, within MAX_CSR_BYTES: the framing every reader of requests shares. */
export function csrDer(data: Buffer | string, source: string): Buffer {
  const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
  if (size > MAX_CSR_BYTES) throw invalid(`${source}: certificate request is larger than 64 KiB`);
  if (looksLikePem(data)) {
    const text = typeof data === 'string' ? data : data.toString('latin1');
    const blocks = decodePem(text).filter((b) => CSR_LABELS.has(b.label));
    if (blocks.length === 0) throw notACsr(source);
    if (blocks.length > 1)
      throw invalid(`${source}: contains ${blocks.length} certificate requests, expected one`);
    return blocks[0].der;
  }
  return typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
}

export interface ParsedCsr {
  readonly asn: CertificationRequest;
  /** CertificationRequestInfo exactly as it appears in the input. */
  readonly signedBytes: Buffer;
}

/** Structure only: no signature or key checks. Used by readCsr and inspect. */
export function parseCsrStructure(der: Buffer, source: string): ParsedCsr {
  if (!isSingleSequence(der)) throw notACsr(source);
  let asn: CertificationRequest;
  try {
    asn = AsnConvert.parse(der, CertificationRequest);
  } catch (error) {
    throw notACsr(source, error);
  }
  const signedBytes = firstFieldBytes(der, asn.certificationRequestInfoRaw);
  if (!signedBytes || asn.certificationRequestInfo.version !== 0) throw notACsr(source);
  return { asn, signedBytes };
}

/** The CSR's public key; invalid() when its SubjectPublicKeyInfo cannot be read. */
export function csrPublicKey(asn: CertificationRequest, source: string): KeyObject {
  try {
    const spki = Buffer.from(AsnConvert.serialize(asn.certificationRequestInfo.subjectPKInfo));
    return createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (error) {
    throw invalid(`${source}: certificate request has an unreadable public key`, error);
  }
}

// ---------------------------------------------------------------------------
// readCsr: sigil's own strict DER reader (csr-reader.ts), the key imported
// through publicKeyFromSpki. The library is touched only for subjects whose
// text needs its formatting rules (string types other than UTF8String,
// PrintableString and IA5String) and for odd-length IP SANs.

const NAME_SHORT_FORMS: ReadonlyMap<string, string> = new Map([
  ['2.5.4.3', 'CN'],
  ['2.5.4.7', 'L'],
  ['2.5.4.8', 'ST'],
  ['2.5.4.10', 'O'],
  ['2.5.4.11', 'OU'],
  ['2.5.4.6', 'C'],
  ['0.9.2342.19200300.100.1.25', 'DC'],
  ['1.2.840.113549.1.9.1', 'E'],
  ['2.5.4.42', 'G'],
  ['2.5.4.43', 'I'],
  ['2.5.4.4', 'SN'],
  ['2.5.4.12', 'T'],
]);

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** The text of a subject value, or undefined when only the library's rules can say. */
function simpleText(der: Buffer, value: DerElement): string | undefined {
  const bytes = der.subarray(value.contentStart, value.end);
  switch (value.tag) {
    case DerTag.utf8String:
      return isUtf8(bytes) ? bytes.toString('utf8') : undefined;
    case DerTag.printableString: {
      const text = bytes.toString('latin1');
      return PRINTABLE.test(text) ? text : undefined;
    }
    case DerTag.ia5String: {
      const text = bytes.toString('latin1');
      return isAscii(bytes) ? text : undefined;
    }
    default:
      return undefined;
  }
}

// The library's RFC 4514-ish escaping, rule for rule (only the first control
// character is hex-escaped, as it does), so subjects read the same as before.
function escapeValue(text: string): string {
  return text
    .replace(/([,+"\\<>;])/g, '\\$1')
    .replace(/^([ #])/, '\\$1')
    .replace(/([ ]$)/, '\\$1')
    .replace(/([\r\n\t])/, (c) => `\\${Buffer.from(c, 'utf8').toString('hex').toUpperCase()}`);
}

interface SubjectTexts {
  subject: string;
  commonNames: string[];
}

function subjectTexts(layout: RequestLayout, der: Buffer, source: string): SubjectTexts {
  const commonNames: string[] = [];
  const rdnTexts: string[] = [];
  for (const rdn of layout.subject) {
    const parts: string[] = [];
    for (const attribute of rdn) {
      const text = simpleText(der, attribute.value);
      if (text === undefined) return librarySubjectTexts(layout.subjectDer, source);
      if (attribute.type === OID_COMMON_NAME) commonNames.push(text);
      parts.push(`${NAME_SHORT_FORMS.get(attribute.type) ?? attribute.type}=${escapeValue(text)}`);
    }
    rdnTexts.push(parts.join('+'));
  }
  return { subject: rdnTexts.join(', '), commonNames };
}

/** The unusual subject: text exactly as @peculiar/x509 writes it. */
function librarySubjectTexts(subjectDer: Buffer, source: string): SubjectTexts {
  try {
    const name = new Name(new Uint8Array(subjectDer));
    return { subject: name.toString(), commonNames: name.getField('CN') };
  } catch (error) {
    throw notACsr(source, error);
  }
}

/** A supported SAN as sigil's name type (validated), or undefined for the other choices. */
function generalName(raw: RawGeneralName): GeneralName | undefined {
  // IA5String: one character per byte, as the library read them; the validators refuse non-ASCII.
  const text = () => raw.contents.toString('latin1');
  switch (raw.tag) {
    case GeneralNameTag.dNSName:
      return dnsName(text());
    case GeneralNameTag.iPAddress:
      return ipAddress(ipText(raw.contents));
    case GeneralNameTag.uniformResourceIdentifier:
      return uriName(text());
    case GeneralNameTag.rfc822Name:
      return emailName(text());
    default:
      return undefined;
  }
}

/** IP SAN bytes as text, as the library wrote them (its IPv6 form, not RFC 5952's). */
function ipText(bytes: Buffer): string {
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
    return compressIpv6(groups);
  }
  // Not an address (a range, or junk): the library's text, which ipAddress then refuses by name.
  return AsnConvert.parse(tlv(GeneralNameTag.iPAddress, bytes), AsnGeneralName).iPAddress ?? '';
}

/** The first longest run of two or more zero groups becomes "::". */
function compressIpv6(groups: string[]): string {
  let bestStart = -1;
  let bestLength = 0;
  let start = -1;
  for (let i = 0; i <= groups.length; i++) {
    if (i < groups.length && groups[i] === '0') {
      if (start === -1) start = i;
    } else if (start !== -1) {
      if (i - start > bestLength) {
        bestStart = start;
        bestLength = i - start;
      }
      start = -1;
    }
  }
  if (bestLength < 2) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
}

function subjectAltNames(layout: RequestLayout, source: string): GeneralName[] {
  const requests = layout.attributes.filter((a) => a.type === OID_EXTENSION_REQUEST);
  if (requests.length === 0) return [];
  if (requests.length > 1 || requests[0].values.length !== 1) {
    throw invalid(`${source}: certificate request has more than one extensionRequest`);
  }
  let extensions: RequestExtension[];
  try {
    extensions = readExtensions(requests[0].values[0]);
  } catch (error) {
    throw invalid(`${source}: certificate request has a malformed extensionRequest`, error);
  }
  const sanExtensions = extensions.filter((e) => e.id === OID_SUBJECT_ALT_NAME);
  if (sanExtensions.length === 0) return [];
  if (sanExtensions.length > 1)
    throw invalid(`${source}: certificate request has more than one subjectAltName`);
  let names: RawGeneralName[];
  try {
    names = readGeneralNames(sanExtensions[0].value);
  } catch (error) {
    throw invalid(`${source}: certificate request has a malformed subjectAltName`, error);
  }
  return names.map((raw) => {
    const name = generalName(raw);
    // Refuse rather than drop: a request must mean exactly what it says.
    if (name === undefined) {
      throw invalid(
        `${source}: certificate request has a subjectAltName of an unsupported type (only DNS, IP, URI, email)`,
      );
    }
    return name;
  });
}

/** The request's public key through the fast SPKI import; refusals name the request. */
function requestPublicKey(spki: Buffer, source: string): KeyObject {
  try {
    return publicKeyFromSpki(spki);
  } catch (error) {
    if (error instanceof SigilError && error.message !== MALFORMED_SPKI) {
      throw new SigilError(error.code, `${source}: ${error.message}`); // an unsupported key type, named
    }
    throw invalid(`${source}: certificate request has an unreadable public key`, error);
  }
}

/** publicKeyFromSpki's message for a key OpenSSL cannot read. */
const MALFORMED_SPKI = 'malformed SubjectPublicKeyInfo';

/**
 * Read a PKCS#10 request (PEM "CERTIFICATE REQUEST" / "NEW CERTIFICATE
 * REQUEST", or DER) and check its proof of possession. Throws invalid() for
 * anything that is not a well-formed DER request with a supported key and
 * algorithm, unauthenticated() when the signature does not verify.
 */
export function readCsr(data: Buffer | string, source = 'CSR'): CertificateRequest {
  const der = csrDer(data, source);
  let layout: RequestLayout;
  try {
    layout = readRequestLayout(der);
  } catch (error) {
    throw notACsr(source, error);
  }
  if (layout.version !== 0) throw notACsr(source);
  const publicKey = requestPublicKey(layout.spki, source);
  const ok = verifySignedData(
    { algorithm: layout.signatureAlgorithm },
    publicKey,
    layout.signedBytes,
    layout.signature,
    source,
  );
  if (!ok) throw unauthenticated(`${source}: CSR signature does not verify (proof of possession failed)`);
  const { subject, commonNames } = subjectTexts(layout, der, source);
  if (commonNames.length > 1)
    throw invalid(`${source}: certificate request subject has more than one commonName`);
  return {
    der,
    publicKey,
    subject,
    commonName: commonNames[0] ?? null,
    sans: subjectAltNames(layout, source),
  };
}

/**
 * A DER PKCS#10 request for `privateKey`, signed with the algorithm matched to
 * the key: subject CN (optional) and a subjectAltName in an extensionRequest.
 */
export function createCsr(
  privateKey: KeyObject,
  options: { commonName?: string; sans?: readonly GeneralName[] },
): Buffer {
  if (privateKey.type !== 'private') throw invalid('createCsr needs a private key');
  const algorithm = signatureAlgorithmFor(privateKey);
  const { commonName } = options;
  const rdns: Buffer[] = [];
  if (commonName !== undefined) {
    if (commonName.length === 0 || commonName.length > 64) {
      throw invalid('certificate request commonName must be 1 to 64 characters');
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    if (/[\u0000-\u001f\u007f]/.test(commonName))
      throw invalid('certificate request commonName contains control characters');
    rdns.push(setOf(sequence(oid(OID_COMMON_NAME), utf8String(commonName))));
  }
  const spki = spkiDer(privateKey);
  const sans = options.sans ?? [];
  const attributes =
    sans.length === 0
      ? implicitConstructed(0)
      : implicitConstructed(0, sequence(oid(OID_EXTENSION_REQUEST), setOf(sequence(subjectAltName(sans)))));
  const info = sequence(integer(0), sequence(...rdns), spki, attributes);
  const signature = signWith(algorithm, privateKey, info);
  return sequence(info, algorithm.algorithmIdentifier, bitString(signature));
}
