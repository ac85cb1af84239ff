// The shape of a PKCS#10 request (RFC 2986), read with the strict DER reader.
// This file only finds the parts and checks their encoding; what the parts
// mean (key, signature, names) is csr.ts's business. Every slice points into
// the input, so the signature is checked over the CertificationRequestInfo
// bytes exactly as received.
//
//   CertificationRequest ::= SEQUENCE {
//     certificationRequestInfo SEQUENCE {
//       version INTEGER (0), subject Name, subjectPKInfo SubjectPublicKeyInfo,
//       attributes [0] IMPLICIT SET OF Attribute }   -- [0] absent: read as empty, like OpenSSL
//     signatureAlgorithm AlgorithmIdentifier, signature BIT STRING }
import {
  checkTree,
  DerCursor,
  type DerElement,
  DerError,
  DerTag,
  readBoolean,
  readOctetAlignedBits,
  readOid,
  readOnly,
  readSmallInteger,
} from './der-reader.ts';

const ATTRIBUTES_TAG = 0xa0;

/** One AttributeTypeAndValue of the subject. */
export interface SubjectAttribute {
  readonly type: string;
  /** The value element (any tag), inside the request buffer. */
  readonly value: DerElement;
}

export interface RequestAttribute {
  readonly type: string;
  /** Each value as its complete DER encoding. */
  readonly values: readonly Buffer[];
}

export interface RequestLayout {
  readonly version: number;
  /** CertificationRequestInfo exactly as received: what the signature covers. */
  readonly signedBytes: Buffer;
  /** The subject Name's complete encoding. */
  readonly subjectDer: Buffer;
  /** RDNs in order, each a set of attributes. */
  readonly subject: readonly (readonly SubjectAttribute[])[];
  readonly spki: Buffer;
  readonly attributes: readonly RequestAttribute[];
  readonly signatureAlgorithm: string;
  readonly signature: Buffer;
}

/** Reads `der` as one CertificationRequest; throws DerError when it is anything else. */
export function readRequestLayout(der: Buffer): RequestLayout {
  const outer = DerCursor.inside(der, readOnly(der, DerTag.sequence));
  const infoElement = outer.next(DerTag.sequence);
  const signatureAlgorithm = readAlgorithmIdentifier(outer.enter(DerTag.sequence));
  const signature = readOctetAlignedBits(der, outer.next(DerTag.bitString));
  outer.done();

  const info = DerCursor.inside(der, infoElement);
  const version = readSmallInteger(der, info.next(DerTag.integer));
  const subjectElement = info.next(DerTag.sequence);
  const subject = readName(der, subjectElement);
  const spkiElement = info.next(DerTag.sequence);
  readSubjectPublicKeyInfo(DerCursor.inside(der, spkiElement));
  const attributes = info.peekTag() === ATTRIBUTES_TAG ? readAttributes(der, info.enter(ATTRIBUTES_TAG)) : [];
  info.done();

  return {
    version,
    signedBytes: der.subarray(infoElement.start, infoElement.end),
    subjectDer: der.subarray(subjectElement.start, subjectElement.end),
    subject,
    spki: der.subarray(spkiElement.start, spkiElement.end),
    attributes,
    signatureAlgorithm,
    signature: Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength),
  };
}

/** AlgorithmIdentifier: the OID; parameters, when present, must be one well-formed element. */
function readAlgorithmIdentifier(cursor: DerCursor): string {
  const algorithm = readOid(cursor.der, cursor.next(DerTag.oid));
  if (!cursor.atEnd) checkTree(cursor.der, cursor.next());
  cursor.done();
  return algorithm;
}

function readSubjectPublicKeyInfo(cursor: DerCursor): void {
  readAlgorithmIdentifier(cursor.enter(DerTag.sequence));
  readOctetAlignedBits(cursor.der, cursor.next(DerTag.bitString));
  cursor.done();
}

// Subject values are strings (X.520 DirectoryString, IA5String, NumericString),
// the types OpenSSL reads a name with; anything else in a subject is refused.
const NAME_STRING_TAGS: ReadonlySet<number> = new Set([
  DerTag.utf8String,
  DerTag.printableString,
  DerTag.ia5String,
  0x12, // NumericString
  0x14, // TeletexString
  0x1c, // UniversalString
  0x1e, // BMPString
]);

/** Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value: one of NAME_STRING_TAGS }. */
function readName(der: Buffer, element: DerElement): SubjectAttribute[][] {
  const rdns: SubjectAttribute[][] = [];
  const names = DerCursor.inside(der, element);
  while (!names.atEnd) {
    const rdn = names.enter(DerTag.set);
    const attributes: SubjectAttribute[] = [];
    while (!rdn.atEnd) {
      const pair = rdn.enter(DerTag.sequence);
      const type = readOid(der, pair.next(DerTag.oid));
      const value = pair.next();
      if (!NAME_STRING_TAGS.has(value.tag))
        throw new DerError(`subject value of tag 0x${value.tag.toString(16)}`);
      checkTree(der, value);
      pair.done();
      attributes.push({ type, value });
    }
    rdns.push(attributes);
  }
  return rdns;
}

/** Attribute ::= SEQUENCE { type OID, values SET OF ANY }. */
function readAttributes(der: Buffer, cursor: DerCursor): RequestAttribute[] {
  const attributes: RequestAttribute[] = [];
  while (!cursor.atEnd) {
    const attribute = cursor.enter(DerTag.sequence);
    const type = readOid(der, attribute.next(DerTag.oid));
    const set = attribute.enter(DerTag.set);
    const values: Buffer[] = [];
    while (!set.atEnd) {
      const value = set.next();
      checkTree(der, value);
      values.push(der.subarray(value.start, value.end));
    }
    attribute.done();
    attributes.push({ type, values });
  }
  return attributes;
}

export interface RequestExtension {
  readonly id: string;
  /** The extnValue OCTET STRING's contents. */
  readonly value: Buffer;
}

/** Extensions ::= SEQUENCE OF SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
export function readExtensions(der: Buffer): RequestExtension[] {
  const list = DerCursor.inside(der, readOnly(der, DerTag.sequence));
  const extensions: RequestExtension[] = [];
  while (!list.atEnd) {
    const extension = list.enter(DerTag.sequence);
    const id = readOid(der, extension.next(DerTag.oid));
    // DER leaves a FALSE default out, so a present flag must be TRUE.
    if (extension.peekTag() === DerTag.boolean && !readBoolean(der, extension.next())) {
      throw new DerError('critical FALSE encoded explicitly');
    }
    const value = extension.next(DerTag.octetString);
    extension.done();
    extensions.push({ id, value: der.subarray(value.contentStart, value.end) });
  }
  return extensions;
}

/** A GeneralName as found: its context tag byte and contents. */
export interface RawGeneralName {
  readonly tag: number;
  readonly contents: Buffer;
}

// The GeneralName choices (RFC 5280): primitive IA5String/OCTET STRING/OID ones
// and constructed ones. Only the primitive string forms are ever read as text.
export const GeneralNameTag = {
  otherName: 0xa0,
  rfc822Name: 0x81,
  dNSName: 0x82,
  x400Address: 0xa3,
  directoryName: 0xa4,
  ediPartyName: 0xa5,
  uniformResourceIdentifier: 0x86,
  iPAddress: 0x87,
  registeredID: 0x88,
} as const;

const GENERAL_NAME_TAGS: ReadonlySet<number> = new Set(Object.values(GeneralNameTag));

/** GeneralNames ::= SEQUENCE OF GeneralName; each choice's encoding is checked. */
export function readGeneralNames(der: Buffer): RawGeneralName[] {
  const list = DerCursor.inside(der, readOnly(der, DerTag.sequence));
  const names: RawGeneralName[] = [];
  while (!list.atEnd) {
    const name = list.next();
    if (!GENERAL_NAME_TAGS.has(name.tag))
      throw new DerError(`unknown GeneralName tag 0x${name.tag.toString(16)}`);
    if (name.tag === GeneralNameTag.otherName) {
      // otherName ::= SEQUENCE { type-id OID, value [0] EXPLICIT ANY }
      const other = DerCursor.inside(der, name);
      readOid(der, other.next(DerTag.oid));
      const value = other.enter(0xa0);
      checkTree(der, value.next());
      value.done();
      other.done();
    } else if (name.tag === GeneralNameTag.registeredID) {
      readOid(der, { ...name, tag: DerTag.oid });
    } else checkTree(der, name);
    names.push({ tag: name.tag, contents: der.subarray(name.contentStart, name.end) });
  }
  return names;
}
