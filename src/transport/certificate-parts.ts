// A peer certificate read once per distinct DER and shared by the strict
// chain checks (chain-strictness.ts) and the peer identity (peer-identity.ts):
// Node's X509Certificate plus the few TBSCertificate fields and the
// extension list, read with sigil's strict DER reader when the certificate is
// plain strict DER (certificate-structure-der.ts), else with asn1js (the
// parser under @peculiar/x509).
//
// Keyed by the SHA-256 of the full DER, so the CAs every connection shares
// are read once, a leaf is read once per connection (not once per consumer),
// and different bytes are never given another certificate's reading. What is
// kept depends on the bytes alone: nothing here knows about revocation or
// time, which are checked per connection and per call elsewhere.
import { X509Certificate } from 'node:crypto';
import * as asn1js from 'asn1js';
import { BoundedCertificateCache } from './certificate-cache.ts';
import type { CertificateStructure, RawExtension } from './certificate-structure.ts';
import { readStructureDer } from './certificate-structure-der.ts';

export type CertificateParts =
  | { readonly node: X509Certificate; readonly structure: CertificateStructure }
  | { readonly node: X509Certificate; readonly structureError: Error }
  | { readonly nodeError: unknown };

/** Decodes one DER element with asn1js; embedded DER is decoded only when asked for. */
export function decode(bytes: Uint8Array, what: string): asn1js.AsnType {
  const { offset, result } = asn1js.fromBER(bytes, { parseEmbedded: false, copyInput: false });
  if (offset === -1 || offset !== bytes.byteLength) throw new Error(`malformed ${what}`);
  return result;
}

export function sequenceItems(node: asn1js.AsnType | undefined, what: string): asn1js.AsnType[] {
  if (!(node instanceof asn1js.Sequence)) throw new Error(`${what} is not a SEQUENCE`);
  return node.valueBlock.value;
}

/** A context-specific tag number, or -1 for any other class. */
export function contextTag(node: asn1js.AsnType | undefined): number {
  return node?.idBlock.tagClass === 3 ? node.idBlock.tagNumber : -1;
}

function sameBytes(a: asn1js.AsnType | undefined, b: asn1js.AsnType | undefined): boolean {
  if (a === undefined || b === undefined) return false;
  return Buffer.from(a.valueBeforeDecodeView).equals(Buffer.from(b.valueBeforeDecodeView));
}

function readExtension(extensionNode: asn1js.AsnType): RawExtension {
  const parts = sequenceItems(extensionNode, 'Extension');
  const oid = parts[0];
  if (!(oid instanceof asn1js.ObjectIdentifier)) throw new Error('extnID is not an OBJECT IDENTIFIER');
  const critical = parts[1] instanceof asn1js.Boolean && parts[1].valueBlock.value;
  const octets = parts[parts.length - 1];
  if (!(octets instanceof asn1js.OctetString)) throw new Error('extnValue is not an OCTET STRING');
  return Object.freeze({ oid: oid.valueBlock.toString(), critical, value: octets.valueBlock.valueHexView });
}

/** The structure through asn1js: what any certificate the strict DER reader declines gets. */
export function readStructureAsn1(der: Buffer): CertificateStructure {
  const [tbsNode, signatureAlgorithm] = sequenceItems(decode(der, 'certificate'), 'Certificate');
  const tbs = sequenceItems(tbsNode, 'TBSCertificate');
  let index = 0;
  let version = 1;
  if (contextTag(tbs[0]) === 0) {
    const inner = (tbs[0] as asn1js.Constructed).valueBlock.value[0];
    if (!(inner instanceof asn1js.Integer)) throw new Error('version is not an INTEGER');
    version = inner.valueBlock.valueDec + 1;
    index = 1;
  }
  // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
  const signature = tbs[index + 1];
  const issuer = sequenceItems(tbs[index + 2], 'issuer');
  const subject = sequenceItems(tbs[index + 4], 'subject');
  const extensionsNode = tbs.slice(index + 6).find((item) => contextTag(item) === 3);
  const extensionNodes = extensionsNode
    ? sequenceItems((extensionsNode as asn1js.Constructed).valueBlock.value[0], 'extensions')
    : [];
  const extensions: RawExtension[] = [];
  let extensionError: Error | undefined;
  for (const extensionNode of extensionNodes) {
    try {
      extensions.push(readExtension(extensionNode));
    } catch (error) {
      // Kept, not thrown: the strict checks report the first problem in certificate order.
      extensionError = error instanceof Error ? error : new Error(String(error));
      break;
    }
  }
  return Object.freeze({
    version,
    issuerEmpty: issuer.length === 0,
    subjectEmpty: subject.length === 0,
    signatureAlgorithmsMatch: sameBytes(signature, signatureAlgorithm),
    extensionCount: extensionNodes.length,
    extensions: Object.freeze(extensions),
    ...(extensionError ? { extensionError } : {}),
    strictDer: false,
  });
}

function readStructure(der: Buffer): CertificateStructure {
  try {
    return readStructureDer(der);
  } catch {
    // Not the plain strict-DER shape: the slow reader decides, exactly as it always did.
    return readStructureAsn1(der);
  }
}

function readParts(der: Buffer): CertificateParts {
  let node: X509Certificate;
  try {
    node = new X509Certificate(der);
  } catch (error) {
    return Object.freeze({ nodeError: error });
  }
  try {
    return Object.freeze({ node, structure: readStructure(der) });
  } catch (error) {
    return Object.freeze({ node, structureError: error instanceof Error ? error : new Error(String(error)) });
  }
}

// CAs recur on every connection, leaves mostly come once or twice (the strict
// checks, then the identity): the least recently used entry goes first.
const PARTS_LIMIT = 1024;
const parts = new BoundedCertificateCache<CertificateParts>(PARTS_LIMIT);

/** The reading of a DER certificate, from the cache when these exact bytes were read before. */
export function certificateParts(der: Buffer): CertificateParts {
  // A private copy: the extension values are views into it, and the caller's buffer may change.
  return parts.get(der, (bytes) => readParts(Buffer.from(bytes)));
}
