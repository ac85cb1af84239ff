// The fast path of the strict chain checks' extension reading
// (chain-strictness.ts): the few facts they need from basicConstraints,
// keyUsage, authorityKeyIdentifier, the name lists and nameConstraints, read
// with sigil's strict DER reader. Each accepts only a value that is strict
// DER of the plain shape and throws DerError on anything else, and the
// caller then reads the value with asn1js as it always did: the same facts,
// or the same refusal, either way.
import {
  checkTree,
  DerCursor,
  DerError,
  DerTag,
  readBoolean,
  readOnly,
  readSmallInteger,
} from '../pki/der-reader.ts';

const CONSTRUCTED = 0x20;
const CONTEXT_CLASS = 0x80;

/** `value` is one strict-DER SEQUENCE: a cursor over its items. */
function sequence(value: Uint8Array): DerCursor {
  const element = readOnly(value, DerTag.sequence);
  checkTree(value, element);
  return DerCursor.inside(value, element);
}

/** basicConstraints: SEQUENCE { cA BOOLEAN OPTIONAL, pathLenConstraint INTEGER OPTIONAL }. */
export function basicConstraintsDer(value: Uint8Array): { ca: boolean; pathLen?: number } {
  const items = sequence(value);
  const ca = items.peekTag() === DerTag.boolean ? readBoolean(value, items.next()) : false;
  const pathLen = items.peekTag() === DerTag.integer ? readSmallInteger(value, items.next()) : undefined;
  items.done();
  return pathLen === undefined ? { ca } : { ca, pathLen };
}

/** keyUsage BIT STRING → { keyCertSign (bit 5), cRLSign (bit 6) }. */
export function keyUsageDer(value: Uint8Array): { keyCertSign: boolean; cRLSign: boolean } {
  const element = readOnly(value, DerTag.bitString);
  if (element.end - element.contentStart < 1) throw new DerError('empty BIT STRING');
  const bytes = value.subarray(element.contentStart + 1, element.end);
  const bit = (n: number): boolean => ((bytes[n >> 3] ?? 0) & (0x80 >> (n & 7))) !== 0;
  return { keyCertSign: bit(5), cRLSign: bit(6) };
}

/** Whether an authorityKeyIdentifier holds a keyIdentifier ([0]). */
export function hasKeyIdentifierDer(value: Uint8Array): boolean {
  const items = sequence(value);
  let found = false;
  while (!items.atEnd) if ((items.next().tag & ~CONSTRUCTED) === CONTEXT_CLASS) found = true;
  return found;
}

/** How many items a SEQUENCE OF holds (subjectAltName, extKeyUsage). */
export function itemCountDer(value: Uint8Array): number {
  const items = sequence(value);
  let count = 0;
  for (; !items.atEnd; count++) items.next();
  return count;
}

/** Whether every subtree list of a nameConstraints value is empty. */
export function subtreesEmptyDer(value: Uint8Array): boolean {
  const items = sequence(value);
  let empty = true;
  while (!items.atEnd) {
    const subtrees = items.next();
    if ((subtrees.tag & CONSTRUCTED) === 0) throw new DerError('primitive subtree list');
    if (subtrees.end > subtrees.contentStart) empty = false;
  }
  return empty;
}
