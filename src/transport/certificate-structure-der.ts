// The fast path of certificate-parts.ts: the certificate's structure read with
// sigil's strict DER reader (pki/der-reader.ts) instead of asn1js, ~20 times
// cheaper. It accepts only the plain shape every conforming certificate has
// (strict DER all the way down, the RFC 5280 fields in order and of the
// ASN.1 shapes @peculiar/asn1-x509 decodes, RFC 5280 times, extensions as
// OID [BOOLEAN] OCTET STRING) and throws DerError on anything
// else; the caller then reads the certificate the slow way, so an unusual
// certificate gets exactly the reading (or refusal) it always got. On what it
// accepts, its reading equals asn1js's (test/transport/peer-parse-cache.test.ts
// compares the two).
import {
  checkTree,
  contentsOf,
  DerCursor,
  type DerElement,
  DerError,
  DerTag,
  readBoolean,
  readOid,
  readOnly,
  readSmallInteger,
} from '../pki/der-reader.ts';
import type { CertificateStructure, RawExtension } from './certificate-structure.ts';

const VERSION = 0xa0;
const ISSUER_UNIQUE_ID = 0x81;
const SUBJECT_UNIQUE_ID = 0x82;
const EXTENSIONS = 0xa3;

// What asn1js accepts as UTCTime and GeneralizedTime contents, narrowed to RFC 5280's forms.
const UTC_TIME = /^\d{12}Z$/;
const GENERALIZED_TIME = /^\d{14}Z$/;

function readTime(der: Uint8Array, cursor: DerCursor): void {
  const element = cursor.next();
  const text = Buffer.from(contentsOf(der, element)).toString('latin1');
  const pattern =
    element.tag === DerTag.utcTime
      ? UTC_TIME
      : element.tag === DerTag.generalizedTime
        ? GENERALIZED_TIME
        : null;
  if (pattern === null || !pattern.test(text)) throw new DerError('validity time not in RFC 5280 form');
}

/** AlgorithmIdentifier: SEQUENCE { OID, parameters OPTIONAL }. */
function algorithmIdentifier(der: Uint8Array, cursor: DerCursor): DerElement {
  const element = cursor.next(DerTag.sequence);
  const inside = DerCursor.inside(der, element);
  inside.next(DerTag.oid);
  if (!inside.atEnd) inside.next();
  inside.done();
  return element;
}

/** Name: SEQUENCE OF SET OF SEQUENCE { OID, value }. */
function name(der: Uint8Array, cursor: DerCursor): DerElement {
  const element = cursor.next(DerTag.sequence);
  const rdns = DerCursor.inside(der, element);
  while (!rdns.atEnd) {
    const rdn = rdns.enter(DerTag.set);
    if (rdn.atEnd) throw new DerError('empty RelativeDistinguishedName');
    while (!rdn.atEnd) {
      const attribute = rdn.enter(DerTag.sequence);
      attribute.next(DerTag.oid);
      attribute.next();
      attribute.done();
    }
  }
  return element;
}

function readExtensions(der: Uint8Array, cursor: DerCursor): RawExtension[] {
  const extensions: RawExtension[] = [];
  const list = cursor.enter(DerTag.sequence);
  cursor.done();
  while (!list.atEnd) {
    const extension = list.enter(DerTag.sequence);
    const oid = readOid(der, extension.next(DerTag.oid));
    const critical = extension.peekTag() === DerTag.boolean ? readBoolean(der, extension.next()) : false;
    const value = contentsOf(der, extension.next(DerTag.octetString));
    extension.done();
    extensions.push(Object.freeze({ oid, critical, value }));
  }
  return extensions;
}

/** The structure of a strict-DER certificate of the usual shape; DerError for any other. */
export function readStructureDer(der: Uint8Array): CertificateStructure {
  const certificate = readOnly(der, DerTag.sequence);
  // Everything asn1js would decode is well-formed DER, so it would decode it the same way.
  checkTree(der, certificate);
  const outer = DerCursor.inside(der, certificate);
  const tbsElement = outer.next(DerTag.sequence);
  const signatureAlgorithm = algorithmIdentifier(der, outer);
  outer.next(DerTag.bitString);
  outer.done();
  const tbs = DerCursor.inside(der, tbsElement);
  let version = 1;
  if (tbs.peekTag() === VERSION) {
    const wrapper = tbs.enter(VERSION);
    version = readSmallInteger(der, wrapper.next(DerTag.integer)) + 1;
    wrapper.done();
  }
  tbs.next(DerTag.integer);
  const signature = algorithmIdentifier(der, tbs);
  const issuer = name(der, tbs);
  const validity = tbs.enter(DerTag.sequence);
  readTime(der, validity);
  readTime(der, validity);
  validity.done();
  const subject = name(der, tbs);
  const subjectPublicKeyInfo = tbs.enter(DerTag.sequence);
  algorithmIdentifier(der, subjectPublicKeyInfo);
  subjectPublicKeyInfo.next(DerTag.bitString);
  subjectPublicKeyInfo.done();
  let extensions: RawExtension[] = [];
  let seenExtensions = false;
  while (!tbs.atEnd) {
    const tag = tbs.peekTag();
    if (tag === EXTENSIONS && !seenExtensions) {
      extensions = readExtensions(der, tbs.enter(EXTENSIONS));
      seenExtensions = true;
    } else if ((tag === ISSUER_UNIQUE_ID || tag === SUBJECT_UNIQUE_ID) && !seenExtensions) {
      tbs.next();
    } else {
      throw new DerError(`unexpected TBSCertificate field 0x${tag.toString(16)}`);
    }
  }
  return Object.freeze({
    version,
    issuerEmpty: issuer.contentStart === issuer.end,
    subjectEmpty: subject.contentStart === subject.end,
    signatureAlgorithmsMatch: Buffer.from(der.subarray(signature.start, signature.end)).equals(
      der.subarray(signatureAlgorithm.start, signatureAlgorithm.end),
    ),
    extensionCount: extensions.length,
    extensions: Object.freeze(extensions),
    strictDer: true,
  });
}
