// X.500 distinguished names for certificates sigil issues. Only the few
// attributes a control plane needs; every value is validated so nothing
// unexpected reaches the encoder.
import { invalid } from '../errors.ts';
import { oid, printableString, sequence, setOf, utf8String } from './der.ts';

export interface SubjectName {
  readonly commonName: string;
  readonly organization?: string;
  readonly organizationalUnit?: string;
  /** Two-letter ISO 3166 code. */
  readonly country?: string;
}

const attributeOids = {
  country: '2.5.4.6',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  commonName: '2.5.4.3',
} as const;

// RFC 5280 upper bounds (ub-common-name etc.).
const maxLength = { commonName: 64, organization: 64, organizationalUnit: 64 } as const;

function checkText(field: keyof typeof maxLength, value: string): void {
  if (value.length === 0) throw invalid(`subject ${field} must not be empty`);
  if (value.length > maxLength[field]) {
    throw invalid(`subject ${field} "${value.slice(0, 20)}…" is longer than ${maxLength[field]} characters`);
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalid(`subject ${field} contains control characters`);
}

/** DER Name in the conventional order C, O, OU, CN; one attribute per RDN. */
export function encodeSubject(subject: SubjectName): Buffer {
  const rdns: Buffer[] = [];
  const rdn = (type: string, value: Buffer) => rdns.push(setOf(sequence(oid(type), value)));
  if (subject.country !== undefined) {
    if (!/^[A-Z]{2}$/.test(subject.country))
      throw invalid(`subject country "${subject.country}" must be two capital letters`);
    rdn(attributeOids.country, printableString(subject.country));
  }
  if (subject.organization !== undefined) {
    checkText('organization', subject.organization);
    rdn(attributeOids.organization, utf8String(subject.organization));
  }
  if (subject.organizationalUnit !== undefined) {
    checkText('organizationalUnit', subject.organizationalUnit);
    rdn(attributeOids.organizationalUnit, utf8String(subject.organizationalUnit));
  }
  checkText('commonName', subject.commonName);
  rdn(attributeOids.commonName, utf8String(subject.commonName));
  return sequence(...rdns);
}
