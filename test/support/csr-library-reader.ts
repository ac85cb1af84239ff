// readCsr as it was before the strict DER reader (issue 14): the request read
// with @peculiar/asn1-csr, the key imported with a createPublicKey round trip.
// Kept for the differential test and the benchmark only, as the reference the
// fast path must agree with, input for input.
import type { KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { type Name as AsnName, Extensions, SubjectAlternativeName } from '@peculiar/asn1-x509';
import { invalid, SigilError, unauthenticated } from '../../src/errors.ts';
import {
  type CertificateRequest,
  csrDer,
  csrPublicKey,
  type ParsedCsr,
  parseCsrStructure,
  verifySignedData,
} from '../../src/pki/csr.ts';
import { keyTypeOf } from '../../src/pki/keys.ts';
import { dnsName, emailName, type GeneralName, ipAddress, uriName } from '../../src/pki/names.ts';
import { Name } from '../../src/pki/x509-library.ts';

const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_COMMON_NAME = '2.5.4.3';

function commonNameOf(subject: AsnName, source: string): string | null {
  const values: string[] = [];
  for (const rdn of subject) {
    for (const attribute of rdn) {
      if (attribute.type === OID_COMMON_NAME) values.push(attribute.value.toString());
    }
  }
  if (values.length > 1) throw invalid(`${source}: certificate request subject has more than one commonName`);
  return values[0] ?? null;
}

function subjectAltNames(asn: ParsedCsr['asn'], source: string): GeneralName[] {
  const attributes = asn.certificationRequestInfo.attributes ?? [];
  const requests = attributes.filter((a) => a.type === OID_EXTENSION_REQUEST);
  if (requests.length === 0) return [];
  if (requests.length > 1 || requests[0].values.length !== 1) {
    throw invalid(`${source}: certificate request has more than one extensionRequest`);
  }
  let extensions: Extensions;
  try {
    extensions = AsnConvert.parse(requests[0].values[0], Extensions);
  } catch (error) {
    throw invalid(`${source}: certificate request has a malformed extensionRequest`, error);
  }
  const sanExtensions = extensions.filter((e) => e.extnID === OID_SUBJECT_ALT_NAME);
  if (sanExtensions.length === 0) return [];
  if (sanExtensions.length > 1)
    throw invalid(`${source}: certificate request has more than one subjectAltName`);
  let names: SubjectAlternativeName;
  try {
    names = AsnConvert.parse(sanExtensions[0].extnValue.buffer, SubjectAlternativeName);
  } catch (error) {
    throw invalid(`${source}: certificate request has a malformed subjectAltName`, error);
  }
  return Array.from(names, (name) => {
    if (name.dNSName !== undefined) return dnsName(name.dNSName);
    if (name.iPAddress !== undefined) return ipAddress(name.iPAddress);
    if (name.uniformResourceIdentifier !== undefined) return uriName(name.uniformResourceIdentifier);
    if (name.rfc822Name !== undefined) return emailName(name.rfc822Name);
    throw invalid(
      `${source}: certificate request has a subjectAltName of an unsupported type (only DNS, IP, URI, email)`,
    );
  });
}

/** The library-based readCsr, unchanged in behaviour from before issue 14. */
export function readCsrWithLibrary(data: Buffer | string, source = 'CSR'): CertificateRequest {
  const der = csrDer(data, source);
  const { asn, signedBytes } = parseCsrStructure(der, source);
  const publicKey: KeyObject = csrPublicKey(asn, source);
  try {
    keyTypeOf(publicKey);
  } catch (error) {
    if (error instanceof SigilError) throw new SigilError(error.code, `${source}: ${error.message}`);
    throw error;
  }
  const ok = verifySignedData(
    asn.signatureAlgorithm,
    publicKey,
    signedBytes,
    Buffer.from(asn.signature),
    source,
  );
  if (!ok) throw unauthenticated(`${source}: CSR signature does not verify (proof of possession failed)`);
  const subject = asn.certificationRequestInfo.subject;
  return {
    der,
    publicKey,
    subject: new Name(subject).toString(),
    commonName: commonNameOf(subject, source),
    sans: subjectAltNames(asn, source),
  };
}
