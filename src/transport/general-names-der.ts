// The fast path of the peer identity's subjectAltName reading
// (peer-identity.ts): the DNS names, IP addresses and URIs of a GeneralNames
// value read with sigil's strict DER reader. It accepts only a strict-DER
// list made of those three kinds, with printable ASCII names and 4- or
// 16-byte addresses, and throws DerError on anything else; the caller then
// reads the value with @peculiar/asn1-x509 as it always did, so an unusual
// subjectAltName gets exactly the names (or refusal) it always got.
import { checkTree, contentsOf, DerCursor, DerError, DerTag, readOnly } from '../pki/der-reader.ts';

/** One name as @peculiar/asn1-x509 reports it: IP addresses as text. */
export type GeneralNameText =
  | { readonly dNSName: string }
  | { readonly iPAddress: string }
  | { readonly uniformResourceIdentifier: string };

const DNS_NAME = 0x82;
const URI = 0x86;
const IP_ADDRESS = 0x87;

function printableAscii(bytes: Uint8Array): string {
  for (const byte of bytes) if (byte < 0x20 || byte > 0x7e) throw new DerError('name is not printable ASCII');
  return Buffer.from(bytes).toString('latin1');
}

function addressText(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length !== 16) throw new DerError(`IP address of ${bytes.length} bytes`);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(':');
}

/** The names of a strict-DER GeneralNames value of DNS names, URIs and IP addresses only. */
export function generalNamesDer(value: Uint8Array): GeneralNameText[] {
  const list = readOnly(value, DerTag.sequence);
  checkTree(value, list);
  if (list.end === list.contentStart) throw new DerError('empty GeneralNames');
  const cursor = DerCursor.inside(value, list);
  const names: GeneralNameText[] = [];
  while (!cursor.atEnd) {
    const element = cursor.next();
    const contents = contentsOf(value, element);
    if (element.tag === DNS_NAME) names.push({ dNSName: printableAscii(contents) });
    else if (element.tag === URI) names.push({ uniformResourceIdentifier: printableAscii(contents) });
    else if (element.tag === IP_ADDRESS) names.push({ iPAddress: addressText(contents) });
    else throw new DerError(`GeneralName of tag 0x${element.tag.toString(16)}`);
  }
  return names;
}
