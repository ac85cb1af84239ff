// The strict DER reader on its own: what it reads, and each encoding rule it
// enforces, one refusal per rule (the input is left untouched by every read).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { integer, oid, sequence, tlv } from '../../src/pki/der.ts';
import {
  checkTree,
  DerCursor,
  DerError,
  DerTag,
  MAX_DER_DEPTH,
  readBoolean,
  readElement,
  readOctetAlignedBits,
  readOid,
  readOnly,
  readSmallInteger,
} from '../../src/pki/der-reader.ts';

/** `read` refuses `input` with a DerError matching `why`, and leaves the input as it was. */
function refuses(input: Buffer, read: (der: Buffer) => unknown, why: RegExp): void {
  const before = Buffer.from(input);
  assert.throws(
    () => read(input),
    (error: unknown) => error instanceof DerError && why.test(error.message),
  );
  assert.deepEqual(input, before);
}

const only = (tag: number) => (der: Buffer) => readOnly(der, tag);
const tree = (der: Buffer) => checkTree(der, readOnly(der, der[0]));

describe('DER reader', () => {
  it('reads nested elements, OIDs, small INTEGERs, BIT STRINGs and BOOLEANs', () => {
    const der = sequence(
      oid('1.2.840.113549.1.9.14'),
      integer(300),
      tlv(DerTag.bitString, Buffer.of(0, 0xab)),
      Buffer.of(1, 1, 0xff),
    );
    const cursor = DerCursor.inside(der, readOnly(der, DerTag.sequence));
    assert.equal(readOid(der, cursor.next(DerTag.oid)), '1.2.840.113549.1.9.14');
    assert.equal(readSmallInteger(der, cursor.next(DerTag.integer)), 300);
    assert.deepEqual(Buffer.from(readOctetAlignedBits(der, cursor.next(DerTag.bitString))), Buffer.of(0xab));
    assert.equal(readBoolean(der, cursor.next(DerTag.boolean)), true);
    assert.equal(cursor.atEnd, true);
    cursor.done();
  });

  it('reads long-form lengths when they are needed', () => {
    const long = tlv(DerTag.octetString, Buffer.alloc(300, 1));
    assert.deepEqual(readElement(long, 0, long.length), { tag: 4, start: 0, contentStart: 4, end: 304 });
    assert.equal(readOid(oid('2.999.1'), readOnly(oid('2.999.1'), DerTag.oid)), '2.999.1');
  });

  it('refuses indefinite lengths', () => {
    refuses(Buffer.of(0x30, 0x80, 0x05, 0x00, 0x00, 0x00), only(0x30), /indefinite length/);
  });

  it('refuses non-minimal lengths', () => {
    refuses(Buffer.of(0x04, 0x81, 0x01, 0x00), only(0x04), /non-minimal length/);
    refuses(
      Buffer.concat([Buffer.of(0x04, 0x82, 0x00, 0x81), Buffer.alloc(0x81)]),
      only(0x04),
      /non-minimal/,
    );
  });

  it('refuses lengths of more than three octets and lengths past the end', () => {
    refuses(Buffer.of(0x30, 0x84, 0x7f, 0xff, 0xff, 0xff), only(0x30), /length of 4 octets/);
    refuses(Buffer.of(0x30, 0x05, 0x05, 0x00), only(0x30), /runs past/);
    refuses(Buffer.of(0x30), only(0x30), /truncated header/);
    refuses(Buffer.of(0x30, 0x82, 0x01), only(0x30), /truncated length/);
  });

  it('refuses trailing bytes, inside and after', () => {
    refuses(Buffer.of(0x05, 0x00, 0x00), only(0x05), /unexpected bytes/);
    const der = sequence(integer(1), integer(2));
    const cursor = DerCursor.inside(der, readOnly(der, DerTag.sequence));
    cursor.next(DerTag.integer);
    assert.throws(() => cursor.done(), DerError);
  });

  it('refuses the wrong tag, multi-byte tags, tag 0 and constructed strings', () => {
    refuses(integer(1), only(DerTag.sequence), /expected tag 0x30/);
    refuses(Buffer.of(0x1f, 0x81, 0x00, 0x00), only(0x1f), /multi-byte tag/);
    refuses(Buffer.of(0x00, 0x00), only(0x00), /not DER/);
    refuses(tlv(0x2c, tlv(0x0c, Buffer.from('a'))), only(0x2c), /not DER/);
    refuses(Buffer.of(0x10, 0x00), only(0x10), /not DER/); // a primitive SEQUENCE
  });

  it('refuses non-minimal OID arcs, truncated OIDs and empty OIDs', () => {
    refuses(Buffer.of(0x06, 0x03, 0x2a, 0x80, 0x01), (d) => readOid(d, readOnly(d, 6)), /non-minimal OID/);
    refuses(Buffer.of(0x06, 0x02, 0x2a, 0x86), (d) => readOid(d, readOnly(d, 6)), /truncated OID/);
    refuses(Buffer.of(0x06, 0x00), (d) => readOid(d, readOnly(d, 6)), /empty OID/);
  });

  it('refuses non-minimal, negative and empty INTEGERs', () => {
    const int = (d: Buffer) => readSmallInteger(d, readOnly(d, 2));
    refuses(Buffer.of(0x02, 0x02, 0x00, 0x01), int, /non-minimal INTEGER/);
    refuses(Buffer.of(0x02, 0x02, 0xff, 0x80), int, /non-minimal INTEGER/);
    refuses(Buffer.of(0x02, 0x01, 0x80), int, /negative/);
    refuses(Buffer.of(0x02, 0x00), int, /empty INTEGER/);
  });

  it('refuses BIT STRINGs with unused bits and non-DER BOOLEANs', () => {
    refuses(Buffer.of(0x03, 0x02, 0x01, 0xfe), (d) => readOctetAlignedBits(d, readOnly(d, 3)), /unused bits/);
    refuses(Buffer.of(0x01, 0x01, 0x01), (d) => readBoolean(d, readOnly(d, 1)), /non-DER BOOLEAN/);
  });

  it('walks opaque values: bounded depth, valid UTF-8, sound OIDs', () => {
    let nested: Buffer = Buffer.of(0x05, 0x00);
    for (let i = 0; i < MAX_DER_DEPTH; i++) nested = sequence(nested);
    tree(nested); // MAX_DER_DEPTH constructed levels: the most allowed
    refuses(sequence(nested), tree, /nested deeper/);
    refuses(sequence(tlv(0x0c, Buffer.of(0xff))), tree, /not UTF-8/);
    refuses(sequence(Buffer.of(0x06, 0x01, 0x80)), tree, /OID/);
    refuses(sequence(tlv(0x1e, Buffer.of(0x00))), tree, /BMPString/);
    refuses(sequence(Buffer.of(0x05, 0x01, 0x00)), tree, /NULL/);
  });
});
