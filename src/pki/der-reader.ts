// A small, strict DER reader for the structures sigil reads from untrusted
// peers (CSRs first). DER only: definite lengths in their shortest form,
// single-byte tags, primitive strings, minimal INTEGERs and OID arcs, BIT
// STRINGs without unused bits, and no bytes after a value. Anything else is a
// DerError, which callers turn into their own one-line refusal. Values are
// slices of the input (no copies), so a signature can be checked over the bytes
// exactly as they arrived.

import { isUtf8 } from 'node:buffer';
import { Tag } from './der.ts';

/** Malformed or non-DER input; the message says where, for debugging only. */
export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

/** The tags the reader names: the writer's (der.ts), one table for both. */
export const DerTag = Tag;

/** Opaque values (attribute values, ANY) are walked this deep and no deeper. */
export const MAX_DER_DEPTH = 16;

const CONSTRUCTED = 0x20;
const HIGH_TAG_NUMBER = 0x1f;

/** One element: its tag byte and where its header and contents lie in the buffer. */
export interface DerElement {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
}

/**
 * Universal class: tag 0 is BER's end-of-contents; SEQUENCE and SET are always
 * constructed, and in DER everything else (strings included) is primitive.
 */
function isDerUniversalTag(tag: number): boolean {
  const number = tag & HIGH_TAG_NUMBER;
  if (number === 0) return false;
  const constructed = (tag & CONSTRUCTED) !== 0;
  return number === 0x10 || number === 0x11 ? constructed : !constructed;
}

/** Reads the element at `offset`, which must end at or before `limit`. */
export function readElement(der: Uint8Array, offset: number, limit: number): DerElement {
  if (offset + 2 > limit) throw new DerError(`truncated header at ${offset}`);
  const tag = der[offset];
  if ((tag & HIGH_TAG_NUMBER) === HIGH_TAG_NUMBER) throw new DerError(`multi-byte tag at ${offset}`);
  if ((tag & 0xc0) === 0 && !isDerUniversalTag(tag))
    throw new DerError(`tag 0x${hex(tag)} at ${offset} is not DER`);
  const first = der[offset + 1];
  let length = first;
  let contentStart = offset + 2;
  if (first >= 0x80) {
    const count = first & 0x7f;
    // 0x80 is BER's indefinite length; more than 3 octets cannot fit in what sigil reads.
    if (count === 0) throw new DerError(`indefinite length at ${offset}`);
    if (count > 3) throw new DerError(`length of ${count} octets at ${offset}`);
    if (contentStart + count > limit) throw new DerError(`truncated length at ${offset}`);
    if (der[contentStart] === 0) throw new DerError(`non-minimal length at ${offset}`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[contentStart + i];
    if (length < 0x80) throw new DerError(`non-minimal length at ${offset}`);
    contentStart += count;
  }
  const end = contentStart + length;
  if (end > limit) throw new DerError(`length at ${offset} runs past its container`);
  return { tag, start: offset, contentStart, end };
}

/** Reads the elements of one constructed value in order; `done()` insists on nothing left over. */
export class DerCursor {
  readonly der: Uint8Array;
  private offset: number;
  private readonly limit: number;

  constructor(der: Uint8Array, start: number, limit: number) {
    this.der = der;
    this.offset = start;
    this.limit = limit;
  }

  /** The contents of `element` (which must be constructed) as a cursor. */
  static inside(der: Uint8Array, element: DerElement): DerCursor {
    if ((element.tag & CONSTRUCTED) === 0) throw new DerError(`primitive tag 0x${hex(element.tag)}`);
    return new DerCursor(der, element.contentStart, element.end);
  }

  get atEnd(): boolean {
    return this.offset >= this.limit;
  }

  /** The tag of the next element, or -1 at the end. */
  peekTag(): number {
    return this.atEnd ? -1 : this.der[this.offset];
  }

  /** The next element, which must have tag `tag` when given. */
  next(tag?: number): DerElement {
    const element = readElement(this.der, this.offset, this.limit);
    if (tag !== undefined && element.tag !== tag) {
      throw new DerError(`expected tag 0x${hex(tag)}, found 0x${hex(element.tag)} at ${this.offset}`);
    }
    this.offset = element.end;
    return element;
  }

  /** The next element as a cursor over its contents (SEQUENCE, SET, [n] constructed). */
  enter(tag: number): DerCursor {
    return DerCursor.inside(this.der, this.next(tag));
  }

  done(): void {
    if (this.offset !== this.limit) throw new DerError(`unexpected bytes at ${this.offset}`);
  }
}

/** `der` is exactly one element of tag `tag`; returns it. */
export function readOnly(der: Uint8Array, tag: number): DerElement {
  const element = readElement(der, 0, der.length);
  if (element.tag !== tag) throw new DerError(`expected tag 0x${hex(tag)}, found 0x${hex(element.tag)}`);
  if (element.end !== der.length) throw new DerError(`unexpected bytes at ${element.end}`);
  return element;
}

/**
 * Checks that an opaque value is well-formed DER all the way down (constructed
 * contents are walked, at most MAX_DER_DEPTH levels), so nothing the requester
 * signed can be read two ways by a later reader.
 */
export function checkTree(der: Uint8Array, element: DerElement, depth = 0): void {
  if ((element.tag & CONSTRUCTED) === 0) {
    checkPrimitive(der, element);
    return;
  }
  if (depth >= MAX_DER_DEPTH) throw new DerError(`nested deeper than ${MAX_DER_DEPTH} levels`);
  let offset = element.contentStart;
  while (offset < element.end) {
    const child = readElement(der, offset, element.end);
    checkTree(der, child, depth + 1);
    offset = child.end;
  }
}

/**
 * The contents rules of the universal types whose contents can be malformed:
 * a later reader (OpenSSL, a library decoding an ANY) would refuse them or
 * read them its own way.
 */
function checkPrimitive(der: Uint8Array, element: DerElement): void {
  const length = element.end - element.contentStart;
  switch (element.tag) {
    case DerTag.boolean:
      readBoolean(der, element);
      return;
    case DerTag.integer:
      if (length === 0) throw new DerError('empty INTEGER');
      return;
    case DerTag.null:
      if (length !== 0) throw new DerError('NULL with contents');
      return;
    case DerTag.oid:
      readOid(der, element);
      return;
    case DerTag.utf8String:
      if (!isUtf8(der.subarray(element.contentStart, element.end)))
        throw new DerError('UTF8String is not UTF-8');
      return;
    case BMP_STRING:
      if (length % 2 !== 0) throw new DerError('BMPString of odd length');
      return;
    case UNIVERSAL_STRING:
      if (length % 4 !== 0) throw new DerError('UniversalString length not a multiple of 4');
      return;
    default:
      return;
  }
}

const BMP_STRING = 0x1e;
const UNIVERSAL_STRING = 0x1c;

/** Dotted text of an OBJECT IDENTIFIER's contents; arcs must be minimal and fit in 2^53. */
export function readOid(der: Uint8Array, element: DerElement): string {
  if (element.tag !== DerTag.oid) throw new DerError(`expected an OID, found tag 0x${hex(element.tag)}`);
  const { contentStart, end } = element;
  if (contentStart === end) throw new DerError('empty OID');
  const arcs: number[] = [];
  let value = 0;
  let fresh = true;
  for (let i = contentStart; i < end; i++) {
    const byte = der[i];
    if (fresh && byte === 0x80) throw new DerError('non-minimal OID arc');
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER) throw new DerError('OID arc too large');
    fresh = (byte & 0x80) === 0;
    if (fresh) {
      if (arcs.length === 0) {
        const top = value < 40 ? 0 : value < 80 ? 1 : 2;
        arcs.push(top, value - top * 40);
      } else arcs.push(value);
      value = 0;
    }
  }
  if (!fresh) throw new DerError('truncated OID arc');
  return arcs.join('.');
}

/** A small non-negative INTEGER (version fields); minimal encoding required. */
export function readSmallInteger(der: Uint8Array, element: DerElement): number {
  if (element.tag !== DerTag.integer) throw new DerError(`expected an INTEGER, found 0x${hex(element.tag)}`);
  const { contentStart, end } = element;
  const length = end - contentStart;
  if (length === 0) throw new DerError('empty INTEGER');
  if (length > 1 && (der[contentStart] === 0 ? der[contentStart + 1] < 0x80 : der[contentStart] === 0xff)) {
    throw new DerError('non-minimal INTEGER');
  }
  if (der[contentStart] >= 0x80) throw new DerError('negative INTEGER');
  if (length > 4) throw new DerError('INTEGER too large');
  let value = 0;
  for (let i = contentStart; i < end; i++) value = value * 256 + der[i];
  return value;
}

/** The bytes of a BIT STRING that holds whole octets (signatures, keys). */
export function readOctetAlignedBits(der: Uint8Array, element: DerElement): Uint8Array {
  if (element.tag !== DerTag.bitString)
    throw new DerError(`expected a BIT STRING, found 0x${hex(element.tag)}`);
  if (element.contentStart === element.end) throw new DerError('empty BIT STRING');
  if (der[element.contentStart] !== 0) throw new DerError('BIT STRING with unused bits');
  return der.subarray(element.contentStart + 1, element.end);
}

/** DER BOOLEAN: one octet, 0x00 or 0xff. */
export function readBoolean(der: Uint8Array, element: DerElement): boolean {
  if (element.tag !== DerTag.boolean || element.end - element.contentStart !== 1) {
    throw new DerError('malformed BOOLEAN');
  }
  const value = der[element.contentStart];
  if (value !== 0 && value !== 0xff) throw new DerError('non-DER BOOLEAN');
  return value === 0xff;
}

/** The contents of a primitive element. */
export function contentsOf(der: Uint8Array, element: DerElement): Uint8Array {
  return der.subarray(element.contentStart, element.end);
}

function hex(tag: number): string {
  return tag.toString(16).padStart(2, '0');
}
