// A minimal DER *writer*. It only ever encodes values sigil itself chose, so
// it needs no parser. Untrusted input is read with @peculiar/asn1-*, except
// CSRs on the issuance hot path, which der-reader.ts reads strictly.
// Every function returns a complete TLV as a Buffer so callers can build
// structures by nesting calls, and precompute constant parts once.

export const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

/** One TLV with the given tag byte; contents are concatenated. Allocates once (hot path). */
export function tlv(tag: number, ...contents: Buffer[]): Buffer {
  let length = 0;
  for (const part of contents) length += part.length;
  const header = length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : length < 0x1000000 ? 5 : 6;
  const out = Buffer.allocUnsafe(header + length);
  out[0] = tag;
  if (header === 2) out[1] = length;
  else {
    out[1] = 0x80 | (header - 2);
    for (let i = header - 1, n = length; i >= 2; i--, n = Math.floor(n / 256)) out[i] = n & 0xff;
  }
  let offset = header;
  for (const part of contents) {
    part.copy(out, offset);
    offset += part.length;
  }
  return out;
}

export const sequence = (...items: Buffer[]): Buffer => tlv(Tag.sequence, ...items);

/** SET OF: DER requires the encodings sorted as octet strings. */
export const setOf = (...items: Buffer[]): Buffer =>
  tlv(Tag.set, ...[...items].sort((a, b) => Buffer.compare(a, b)));

/** [n] EXPLICIT (constructed) context tag around complete TLVs. */
export const explicit = (n: number, ...inner: Buffer[]): Buffer => tlv(0xa0 | n, ...inner);

/** [n] IMPLICIT primitive context tag replacing the tag of a primitive value's contents. */
export const implicitPrimitive = (n: number, contents: Buffer): Buffer => tlv(0x80 | n, contents);

/** [n] IMPLICIT constructed context tag (for SEQUENCE-typed fields). */
export const implicitConstructed = (n: number, ...inner: Buffer[]): Buffer => tlv(0xa0 | n, ...inner);

export const derNull = (): Buffer => Buffer.of(Tag.null, 0);

export const boolean = (value: boolean): Buffer => Buffer.of(Tag.boolean, 1, value ? 0xff : 0x00);

/** INTEGER from a bigint or safe number, minimal two's complement. */
export function integer(value: bigint | number): Buffer {
  return tlv(Tag.integer, integerContents(BigInt(value)));
}

/** INTEGER from unsigned big-endian magnitude bytes (serials), made minimal and positive. */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const body = trimmed[0] & 0x80 ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed;
  return tlv(Tag.integer, body.length === 0 ? Buffer.of(0) : body);
}

function integerContents(value: bigint): Buffer {
  if (value === 0n) return Buffer.of(0);
  const bytes: number[] = [];
  let v = value;
  // Emit bytes until the remaining value is all sign bits and the top bit of
  // the last emitted byte agrees with the sign.
  for (;;) {
    const byte = Number(v & 0xffn);
    bytes.unshift(byte);
    v >>= 8n;
    if ((v === 0n && (byte & 0x80) === 0) || (v === -1n && (byte & 0x80) !== 0)) break;
  }
  return Buffer.from(bytes);
}

/** OBJECT IDENTIFIER from dotted form; arcs may exceed 2^53 (e.g. 2.25.<uuid>). */
export function oid(dotted: string): Buffer {
  return tlv(Tag.oid, oidContents(dotted));
}

const oidCache = new Map<string, Buffer>();
export function oidContents(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const arcs = dotted.split('.').map((a) => {
    if (!/^\d+$/.test(a)) throw new Error(`bad OID ${dotted}`);
    return BigInt(a);
  });
  if (arcs.length < 2 || arcs[0] > 2n || (arcs[0] < 2n && arcs[1] > 39n))
    throw new Error(`bad OID ${dotted}`);
  const out: number[] = [];
  const push = (arc: bigint) => {
    const group: number[] = [Number(arc & 0x7fn)];
    for (let v = arc >> 7n; v > 0n; v >>= 7n) group.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...group);
  };
  push(arcs[0] * 40n + arcs[1]);
  for (const arc of arcs.slice(2)) push(arc);
  const contents = Buffer.from(out);
  oidCache.set(dotted, contents);
  return contents;
}

/** BIT STRING with the given unused-bit count in the last byte. */
export const bitString = (bytes: Buffer, unusedBits = 0): Buffer =>
  tlv(Tag.bitString, Buffer.of(unusedBits), bytes);

/**
 * A named-bit BIT STRING (KeyUsage, permissions): bit 0 is the most
 * significant bit of the first byte; DER drops trailing zero bits.
 */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return tlv(Tag.bitString, Buffer.of(0));
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc((highest >> 3) + 1);
  for (const bit of bits) bytes[bit >> 3] |= 0x80 >> (bit & 7);
  const unused = 7 - (highest & 7);
  return bitString(bytes, unused);
}

export const octetString = (bytes: Buffer): Buffer => tlv(Tag.octetString, bytes);
export const utf8String = (text: string): Buffer => tlv(Tag.utf8String, Buffer.from(text, 'utf8'));
export const printableString = (text: string): Buffer =>
  tlv(Tag.printableString, Buffer.from(text, 'latin1'));
export const ia5String = (text: string): Buffer => tlv(Tag.ia5String, Buffer.from(text, 'latin1'));

/** RFC 5280 Time: UTCTime for years 1950–2049, GeneralizedTime otherwise; whole seconds, Z. */
export function time(date: Date): Buffer {
  const year = date.getUTCFullYear();
  const p2 = (n: number) => String(n).padStart(2, '0');
  const rest =
    p2(date.getUTCMonth() + 1) +
    p2(date.getUTCDate()) +
    p2(date.getUTCHours()) +
    p2(date.getUTCMinutes()) +
    p2(date.getUTCSeconds()) +
    'Z';
  if (year >= 1950 && year < 2050) return tlv(Tag.utcTime, Buffer.from(p2(year % 100) + rest, 'latin1'));
  return tlv(Tag.generalizedTime, Buffer.from(String(year).padStart(4, '0') + rest, 'latin1'));
}

/** GeneralizedTime always (CRL entries may use either; kept for completeness). */
export function generalizedTime(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-11-25T17:03:44.123Z
  const text =
    iso.slice(0, 4) +
    iso.slice(5, 7) +
    iso.slice(8, 10) +
    iso.slice(11, 13) +
    iso.slice(14, 16) +
    iso.slice(17, 19) +
    'Z';
  return tlv(Tag.generalizedTime, Buffer.from(text, 'latin1'));
}
