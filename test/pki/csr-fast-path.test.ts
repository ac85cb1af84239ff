// The CSR fast path (issue 14): readCsr on sigil's strict DER reader must give
// the same outcome as the library-based reader it replaced — the same fields,
// or the same error code and message — for every request in a corpus of good,
// odd, malformed and hostile inputs, and openssl must verify every request
// sigil accepts. Where the new reader is stricter on purpose (non-DER
// encodings the library's BER decoder accepted, nesting deeper than
// MAX_DER_DEPTH), the test says so input by input.
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import type { KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Extensions, SubjectAlternativeName } from '@peculiar/asn1-x509';
import { SigilError } from '../../src/errors.ts';
import { signatureAlgorithmFor, signWith } from '../../src/pki/algorithms.ts';
import { createCsr, MAX_CSR_BYTES, readCsr } from '../../src/pki/csr.ts';
import {
  bitString,
  boolean,
  derNull,
  ia5String,
  implicitConstructed,
  implicitPrimitive,
  integer,
  octetString,
  oid,
  printableString,
  sequence,
  setOf,
  tlv,
  utf8String,
} from '../../src/pki/der.ts';
import { MAX_DER_DEPTH } from '../../src/pki/der-reader.ts';
import { generateKeyPair, type KeyType, readPrivateKey, spkiDer } from '../../src/pki/keys.ts';
import { dnsName, emailName, type GeneralName, ipAddress, uriName } from '../../src/pki/names.ts';
import { decodePem, encodePem } from '../../src/pki/pem.ts';
import { Name } from '../../src/pki/x509-library.ts';
import { readCsrWithLibrary } from '../support/csr-library-reader.ts';
import { opensslIn } from '../support/openssl-in.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-csr-fast-');
const { openssl } = opensslIn(dir);

const OID = {
  cn: '2.5.4.3',
  o: '2.5.4.10',
  ou: '2.5.4.11',
  serialNumber: '2.5.4.5',
  email: '1.2.840.113549.1.9.1',
  extensionRequest: '1.2.840.113549.1.9.14',
  challengePassword: '1.2.840.113549.1.9.7',
  san: '2.5.29.17',
  keyUsage: '2.5.29.15',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  md5WithRsa: '1.2.840.113549.1.1.4',
  ecdsaSha256: '1.2.840.10045.4.3.2',
  ed25519: '1.3.101.112',
};

// --- building requests -------------------------------------------------------

const keys: Record<'p256' | 'p384' | 'ed25519' | 'rsa2048', KeyObject> = {
  p256: generateKeyPair('p256').privateKey,
  p384: generateKeyPair('p384').privateKey,
  ed25519: generateKeyPair('ed25519').privateKey,
  rsa2048: generateKeyPair('rsa2048').privateKey,
};

const atv = (type: string, value: Buffer) => sequence(oid(type), value);
const rdn = (...attributes: Buffer[]) => tlv(0x31, ...attributes); // as given: order is part of some cases
const name = (...rdns: Buffer[]) => sequence(...rdns);
const cn = (text: string) => rdn(atv(OID.cn, utf8String(text)));
const attributes = (...list: Buffer[]) => implicitConstructed(0, ...list);
const attribute = (type: string, ...values: Buffer[]) => sequence(oid(type), tlv(0x31, ...values));
const extension = (id: string, value: Buffer, critical?: Buffer) =>
  sequence(oid(id), ...(critical ? [critical] : []), octetString(value));
const extensionRequest = (...extensions: Buffer[]) =>
  attribute(OID.extensionRequest, sequence(...extensions));
const sanValue = (...names: Buffer[]) => sequence(...names);
const sanRequest = (...names: Buffer[]) =>
  attributes(extensionRequest(extension(OID.san, sanValue(...names))));

interface RequestParts {
  key?: KeyObject;
  version?: Buffer;
  subject?: Buffer;
  spki?: Buffer;
  /** The whole [0] element, or null to leave it out. */
  attributes?: Buffer | null;
  /** Replaces the whole CertificationRequestInfo. */
  info?: Buffer;
  algorithm?: Buffer;
}

/** A request signed by `key` over exactly the CertificationRequestInfo it carries. */
function signedRequest(parts: RequestParts): Buffer {
  const key = parts.key ?? keys.p256;
  const info =
    parts.info ??
    sequence(
      parts.version ?? integer(0),
      parts.subject ?? name(cn('node-1')),
      parts.spki ?? spkiDer(key),
      ...(parts.attributes === null ? [] : [parts.attributes ?? attributes()]),
    );
  const algorithm = signatureAlgorithmFor(key);
  return sequence(
    info,
    parts.algorithm ?? algorithm.algorithmIdentifier,
    bitString(signWith(algorithm, key, info)),
  );
}

const nested = (depth: number): Buffer => {
  let value = derNull();
  for (let i = 0; i < depth; i++) value = sequence(value);
  return value;
};

let opensslCount = 0;
/** openssl req -new with a key made by openssl; PEM output. */
function opensslRequest(
  newkey: string[],
  options: { subject?: string; addext?: string[]; extra?: string[] } = {},
) {
  const base = `o${opensslCount++}`;
  openssl(
    'req',
    '-new',
    ...newkey,
    '-nodes',
    '-subj',
    options.subject ?? '/O=sigil tests/CN=node-1.example.org',
    ...(options.addext ?? []).flatMap((e) => ['-addext', e]),
    ...(options.extra ?? []),
    '-keyout',
    `${base}.key`,
    '-out',
    `${base}.csr`,
  );
  return readFileSync(join(dir, `${base}.csr`));
}

openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'rsa.key');
const NEWKEY: Record<string, string[]> = {
  p256: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  p384: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  ed25519: ['-newkey', 'ed25519'],
  rsa2048: ['-key', 'rsa.key'],
};

const SAN_KINDS: Record<string, { ours: GeneralName[]; openssl: string }> = {
  dns: { ours: [dnsName('node-1.example.org')], openssl: 'DNS:node-1.example.org,DNS:*.svc.example.org' },
  ipv4: { ours: [ipAddress('10.0.0.1')], openssl: 'IP:10.0.0.1' },
  ipv6: {
    ours: [ipAddress('2001:db8::1'), ipAddress('fe80::'), ipAddress('1:0:0:1:0:0:0:1')],
    openssl: 'IP:2001:db8::1,IP:::1,IP:1:0:0:1:0:0:0:1,IP:0:0:1::',
  },
  uri: { ours: [uriName('spiffe://example.org/node/1')], openssl: 'URI:spiffe://example.org/node/1' },
  email: { ours: [emailName('ops@example.org')], openssl: 'email:ops@example.org' },
};

// --- the corpus ----------------------------------------------------------------

interface Entry {
  name: string;
  input: Buffer | string;
  /** Why the new reader refuses what the library accepted or refused differently, when it does on purpose. */
  stricter?: string;
}

const NON_DER = 'not DER: the library decodes BER, the strict reader refuses it as not a PKCS#10 request';
const NOT_UTF8 = 'a UTF8String that is not UTF-8 (the library read it as Latin-1; openssl refuses it too)';
const NOT_A_STRING = 'a subject value that is not a string type (openssl refuses it too)';
const TOO_DEEP = `nested deeper than ${MAX_DER_DEPTH} levels: refused before anything reads it`;

function goodRequests(): Entry[] {
  const entries: Entry[] = [];
  for (const type of Object.keys(keys) as (keyof typeof keys)[]) {
    const key = keys[type];
    entries.push({ name: `sigil ${type}, no SANs`, input: createCsr(key, { commonName: 'node-1' }) });
    entries.push({ name: `sigil ${type}, no subject`, input: createCsr(key, {}) });
    for (const [kind, { ours }] of Object.entries(SAN_KINDS)) {
      entries.push({
        name: `sigil ${type}, ${kind} SAN`,
        input: createCsr(key, { commonName: 'n', sans: ours }),
      });
    }
    const all = Object.values(SAN_KINDS).flatMap((k) => k.ours);
    const csr = createCsr(key, { commonName: 'node-1', sans: all });
    entries.push({ name: `sigil ${type}, every SAN type`, input: csr });
    entries.push({
      name: `sigil ${type}, every SAN type, PEM`,
      input: encodePem('CERTIFICATE REQUEST', csr),
    });
  }
  for (const [type, newkey] of Object.entries(NEWKEY)) {
    const extra = type === 'p384' ? ['-sha384'] : [];
    entries.push({ name: `openssl ${type}, no SANs`, input: opensslRequest(newkey, { extra }) });
    const all = Object.values(SAN_KINDS).map((k) => k.openssl);
    for (const [kind, { openssl: san }] of Object.entries(SAN_KINDS)) {
      if (type !== 'p256' && kind !== 'dns') continue; // every SAN type per key is covered below
      entries.push({
        name: `openssl ${type}, ${kind} SAN`,
        input: opensslRequest(newkey, { addext: [`subjectAltName=${san}`], extra }),
      });
    }
    entries.push({
      name: `openssl ${type}, every SAN type, keyUsage too`,
      input: opensslRequest(newkey, {
        addext: [`subjectAltName=${all.join(',')}`, 'keyUsage=critical,digitalSignature'],
        extra,
      }),
    });
  }
  entries.push({
    name: 'openssl RSA 2048 with SHA-512, multi-valued RDN, escapes',
    input: opensslRequest(NEWKEY.rsa2048, {
      subject: '/O=a\\,b;c/OU=x+CN=" lead/emailAddress=ops@example.org',
      extra: ['-sha512', '-multivalue-rdn'],
    }),
  });
  entries.push({
    name: 'openssl P-256, UTF-8 subject',
    input: opensslRequest(NEWKEY.p256, { subject: '/CN=nœud-1/O=Société', extra: ['-utf8'] }),
  });
  entries.push({
    name: 'openssl P-256, challengePassword attribute',
    input: opensslRequest(NEWKEY.p256, {
      addext: ['subjectAltName=DNS:a.example.org'],
      extra: ['-config', configWithChallenge()],
    }),
  });
  return entries;
}

function configWithChallenge(): string {
  const path = join(dir, 'challenge.cnf');
  writeFileSync(
    path,
    '[req]\ndistinguished_name=dn\nattributes=attrs\nprompt=no\n[dn]\nCN=x\n[attrs]\nchallengePassword=secret123\n',
  );
  return path;
}

function subjectCases(): Entry[] {
  const s = (label: string, subject: Buffer): Entry => ({
    name: `subject: ${label}`,
    input: signedRequest({ subject }),
  });
  return [
    s(
      'escaped characters',
      name(cn(',+"\\<>;=x'), rdn(atv(OID.o, utf8String('#lead'))), rdn(atv(OID.ou, utf8String('trail ')))),
    ),
    s('control characters (only the first is hex-escaped)', name(cn('a\nb\tc\rd\ne'))),
    s('multi-valued RDN', name(rdn(atv(OID.cn, utf8String('n')), atv(OID.o, utf8String('org'))))),
    s('unknown attribute type', name(rdn(atv(OID.serialNumber, printableString('1234'))), cn('x'))),
    s('email as IA5String', name(rdn(atv(OID.email, ia5String('a@example.org'))))),
    s('PrintableString', name(rdn(atv(OID.cn, printableString("node 1 (a)'+,-./:=?"))))),
    s(
      'PrintableString with characters outside its set',
      name(rdn(atv(OID.cn, tlv(0x13, Buffer.from('a*b@c'))))),
    ),
    s('IA5String with a high byte', name(rdn(atv(OID.cn, tlv(0x16, Buffer.of(0x61, 0xe9)))))),
    s('BMPString', name(rdn(atv(OID.cn, tlv(0x1e, Buffer.from('\u0000b\u0000m\u0000p')))))),
    s('TeletexString', name(rdn(atv(OID.cn, tlv(0x14, Buffer.from('teletex')))))),
    s('UniversalString', name(rdn(atv(OID.cn, tlv(0x1c, Buffer.from('\0\0\0u\0\0\0s')))))),
    {
      ...s('UTF8String, invalid UTF-8', name(rdn(atv(OID.cn, tlv(0x0c, Buffer.of(0x61, 0xff, 0x62)))))),
      stricter: NOT_UTF8,
    },
    {
      ...s('UTF8String, encoded surrogate', name(rdn(atv(OID.cn, tlv(0x0c, Buffer.of(0xed, 0xa0, 0x80)))))),
      stricter: NOT_UTF8,
    },
    s(
      'UTF8String, byte order mark and NUL',
      name(rdn(atv(OID.cn, tlv(0x0c, Buffer.of(0xef, 0xbb, 0xbf, 0x61, 0x00))))),
    ),
    s('UTF8String, astral character', name(cn('😀'))),
    { ...s('INTEGER value', name(rdn(atv(OID.cn, integer(7))))), stricter: NOT_A_STRING },
    {
      ...s('OCTET STRING value', name(rdn(atv(OID.serialNumber, octetString(Buffer.of(1)))))),
      stricter: NOT_A_STRING,
    },
    s('NumericString value', name(rdn(atv(OID.serialNumber, tlv(0x12, Buffer.from('0123')))))),
    s('empty value', name(cn(''))),
    s('empty RDN', name(rdn(), cn('x'))),
    s('empty subject', name()),
    s('two commonNames', name(cn('a'), cn('b'))),
    s('two commonNames, one a BMPString', name(cn('a'), rdn(atv(OID.cn, tlv(0x1e, Buffer.from('\0b')))))),
    {
      ...s('a SEQUENCE value', name(rdn(atv(OID.serialNumber, sequence(utf8String('x')))))),
      stricter: NOT_A_STRING,
    },
  ];
}

function sanCases(): Entry[] {
  const s = (label: string, attrs: Buffer | null, stricter?: string): Entry => ({
    name: `extensions: ${label}`,
    input: signedRequest({ attributes: attrs }),
    ...(stricter ? { stricter } : {}),
  });
  const dns = (text: string) => implicitPrimitive(2, Buffer.from(text, 'latin1'));
  const ip = (...bytes: number[]) => implicitPrimitive(7, Buffer.from(bytes));
  const sanExt = extension(OID.san, sanValue(dns('a.example.org')));
  return [
    s('no attributes element at all', null),
    s('an unknown attribute kept as signed', attributes(attribute(OID.challengePassword, utf8String('pw')))),
    s(
      'attributes in non-canonical order',
      attributes(extensionRequest(sanExt), attribute(OID.challengePassword, utf8String('pw'))),
    ),
    s('two extensionRequests', attributes(extensionRequest(sanExt), extensionRequest(sanExt))),
    s(
      'an extensionRequest with two values',
      attributes(attribute(OID.extensionRequest, sequence(sanExt), sequence(sanExt))),
    ),
    s('an extensionRequest with no value', attributes(attribute(OID.extensionRequest))),
    s('an extensionRequest that is not a SEQUENCE', attributes(attribute(OID.extensionRequest, integer(1)))),
    s('an empty extensionRequest', attributes(extensionRequest())),
    s('two subjectAltNames', attributes(extensionRequest(sanExt, sanExt))),
    s(
      'a critical subjectAltName',
      attributes(extensionRequest(extension(OID.san, sanValue(dns('a.example.org')), boolean(true)))),
    ),
    s(
      'critical FALSE spelled out',
      attributes(extensionRequest(extension(OID.san, sanValue(dns('a.example.org')), boolean(false)))),
      NON_DER,
    ),
    s(
      'critical as 0x01',
      attributes(extensionRequest(extension(OID.san, sanValue(dns('a.example.org')), Buffer.of(1, 1, 1)))),
      NON_DER,
    ),
    s(
      'keyUsage only',
      attributes(extensionRequest(extension(OID.keyUsage, bitString(Buffer.of(0x80), 7), boolean(true)))),
    ),
    s('an empty subjectAltName', sanRequest()),
    s(
      'a subjectAltName that is not DER',
      attributes(extensionRequest(extension(OID.san, Buffer.from('garbage')))),
    ),
    s(
      'a subjectAltName with bytes after it',
      attributes(
        extensionRequest(extension(OID.san, Buffer.concat([sanValue(dns('a.example.org')), Buffer.of(0)]))),
      ),
      NON_DER,
    ),
    s('a bad DNS name', sanRequest(dns('bad_name.example.org'))),
    s('a non-ASCII DNS name', sanRequest(implicitPrimitive(2, Buffer.from('nœud.example.org', 'utf8')))),
    s('a constructed dNSName', sanRequest(implicitConstructed(2, ia5String('a.example.org')))),
    s('an IPv4-mapped IPv6 address', sanRequest(ip(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4))),
    s('an all-zero IPv6 address', sanRequest(ip(...new Array(16).fill(0)))),
    s('a 5-byte IP address', sanRequest(ip(1, 2, 3, 4, 5))),
    s('an 8-byte IP address (a range)', sanRequest(ip(10, 0, 0, 0, 255, 0, 0, 0))),
    s('an empty IP address', sanRequest(ip())),
    s('a bad URI', sanRequest(implicitPrimitive(6, Buffer.from('not a uri')))),
    s('a bad SPIFFE ID', sanRequest(implicitPrimitive(6, Buffer.from('spiffe://Example.org/x')))),
    s('a bad email', sanRequest(implicitPrimitive(1, Buffer.from('no-at-sign')))),
    s(
      'otherName',
      sanRequest(
        dns('ok.example.org'),
        implicitConstructed(0, oid('1.2.3.4'), implicitConstructed(0, utf8String('x'))),
      ),
    ),
    s(
      'a bad DNS name before an unsupported type',
      sanRequest(
        dns('bad_name'),
        implicitConstructed(0, oid('1.2.3.4'), implicitConstructed(0, utf8String('x'))),
      ),
    ),
    s('registeredID', sanRequest(implicitPrimitive(8, Buffer.from(oid('1.2.3.4').subarray(2))))),
    s('directoryName', sanRequest(implicitConstructed(4, name(cn('x'))))),
    s('an unknown GeneralName tag', sanRequest(implicitPrimitive(9, Buffer.from('x')))),
    s(
      'an attribute nested within the depth limit',
      attributes(attribute(OID.challengePassword, nested(MAX_DER_DEPTH - 2))),
    ),
    s(
      'an attribute nested just past the depth limit',
      attributes(attribute(OID.challengePassword, nested(MAX_DER_DEPTH + 1))),
      TOO_DEEP,
    ),
    s(
      'extensionRequest nested past the depth limit',
      attributes(attribute(OID.challengePassword, nested(MAX_DER_DEPTH + 4))),
      TOO_DEEP,
    ),
    s('attribute nested 2000 deep', attributes(attribute(OID.challengePassword, nested(2000)))),
  ];
}

function structureCases(): Entry[] {
  const key = keys.p256;
  const good = createCsr(key, { commonName: 'node-1', sans: [dnsName('node-1.example.org')] });
  const [info] = topLevel(good); // the CertificationRequestInfo
  const cases: Entry[] = [
    { name: 'wrong version (1)', input: signedRequest({ version: integer(1) }) },
    {
      name: 'version as a non-minimal INTEGER',
      input: signedRequest({ version: Buffer.of(2, 2, 0, 0) }),
      stricter: NON_DER,
    },
    { name: 'version 2^40', input: signedRequest({ version: integer(2 ** 40) }) },
    { name: 'negative version', input: signedRequest({ version: integer(-1) }) },
    {
      name: 'BER: a non-minimal length in the signed part',
      input: signedRequest({
        info: tlv(0x30, Buffer.of(0x02, 0x81, 0x01, 0x00), name(cn('ber')), spkiDer(key), attributes()),
      }),
      stricter: NON_DER,
    },
    {
      name: 'BER: indefinite length in the subject',
      input: signedRequest({
        info: tlv(
          0x30,
          integer(0),
          Buffer.concat([Buffer.of(0x30, 0x80), cn('x'), Buffer.of(0, 0)]),
          spkiDer(key),
          attributes(),
        ),
      }),
      stricter: NON_DER,
    },
    {
      name: 'BER: indefinite outer length',
      input: Buffer.concat([Buffer.of(0x30, 0x80), good.subarray(3), Buffer.of(0, 0)]),
    },
    {
      name: 'BER: non-minimal outer length',
      input: Buffer.concat([Buffer.of(0x30, 0x83, 0x00), good.subarray(2)]),
    },
    { name: 'trailing garbage', input: Buffer.concat([good, Buffer.of(0)]) },
    { name: 'two requests back to back', input: Buffer.concat([good, good]) },
    {
      name: 'a field after the attributes',
      input: signedRequest({
        info: sequence(integer(0), name(cn('x')), spkiDer(key), attributes(), integer(5)),
      }),
      stricter: NON_DER,
    },
    { name: 'attributes as a SET (universal tag)', input: signedRequest({ attributes: tlv(0x31) }) },
    { name: 'a signature with unused bits', input: withUnusedSignatureBits(good) },
    {
      name: 'a SubjectPublicKeyInfo with an extra field',
      input: signedRequest({ spki: sequence(...spkiParts(key), derNull()) }),
      stricter: NON_DER,
    },
    { name: 'a SubjectPublicKeyInfo with a corrupt key', input: signedRequest({ spki: corruptSpki(key) }) },
    {
      name: 'a SubjectPublicKeyInfo that is a NULL',
      input: signedRequest({
        spki: sequence(sequence(oid('1.2.840.10045.2.1')), bitString(Buffer.alloc(0))),
      }),
    },
    {
      name: 'signature algorithm of another key type',
      input: signedRequest({ algorithm: sequence(oid(OID.sha256WithRsa), derNull()) }),
    },
    {
      name: 'Ed25519 algorithm on an ECDSA key',
      input: signedRequest({ algorithm: sequence(oid(OID.ed25519)) }),
    },
    {
      name: 'ECDSA algorithm with NULL parameters',
      input: signedRequest({ algorithm: sequence(oid(OID.ecdsaSha256), derNull()) }),
    },
    {
      name: 'md5WithRSAEncryption',
      input: signedRequest({ key: keys.rsa2048, algorithm: sequence(oid(OID.md5WithRsa), derNull()) }),
    },
    {
      name: 'an unknown signature algorithm',
      input: signedRequest({ algorithm: sequence(oid('1.2.3.4.5')) }),
    },
    {
      name: 'a signature algorithm OID with a non-minimal arc',
      input: signedRequest({ algorithm: sequence(Buffer.of(6, 3, 0x2a, 0x80, 0x01)) }),
      stricter: NON_DER,
    },
    {
      name: 'huge length claim (4 octets)',
      input: Buffer.concat([Buffer.of(0x30, 0x84, 0xff, 0xff, 0xff, 0xff), good.subarray(3)]),
    },
    {
      name: 'huge length claim (3 octets)',
      input: Buffer.concat([Buffer.of(0x30, 0x83, 0x7f, 0xff, 0xff), good.subarray(3)]),
    },
    {
      name: 'huge inner length claim',
      input: Buffer.concat([
        good.subarray(0, info.start),
        Buffer.of(0x30, 0x84, 0x7f, 0xff, 0xff, 0xff),
        good.subarray(info.contentStart),
      ]),
    },
    {
      name: 'length of five octets',
      input: Buffer.concat([Buffer.of(0x30, 0x85, 0, 0, 0, 0, good.length - 3), good.subarray(3)]),
    },
    {
      name: 'oversize DER (64 KiB + 1)',
      input: Buffer.concat([good, Buffer.alloc(MAX_CSR_BYTES + 1 - good.length)]),
    },
    { name: 'oversize PEM string', input: encodePem('CERTIFICATE REQUEST', Buffer.alloc(MAX_CSR_BYTES)) },
    { name: 'two PEM blocks', input: encodePem('CERTIFICATE REQUEST', good).repeat(2) },
    { name: 'PEM with another label', input: encodePem('CERTIFICATE', good) },
    {
      name: 'PEM with broken base64',
      input: '-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n',
    },
    { name: 'empty', input: Buffer.alloc(0) },
    { name: 'text', input: 'hello, world' },
    { name: 'a lone SEQUENCE', input: Buffer.of(0x30, 0x03, 0x02, 0x01, 0x00) },
    { name: 'a run of 0x30', input: Buffer.alloc(300, 0x30) },
    { name: 'a flipped signature byte', input: flip(good, good.length - 5, 0x01) },
    {
      name: 'a name changed after signing',
      input: swapped(good, 'node-1.example.org', 'evil-1.example.org'),
    },
  ];
  // A length byte off by one, for every element header in the request.
  for (const at of lengthOffsets(good)) {
    cases.push({ name: `length at ${at} plus one`, input: adjust(good, at, +1) });
    cases.push({ name: `length at ${at} minus one`, input: adjust(good, at, -1) });
  }
  return cases;
}

function opensslRefusals(): Entry[] {
  return [
    {
      name: 'openssl RSA-PSS',
      input: opensslRequest(NEWKEY.rsa2048, { extra: ['-sigopt', 'rsa_padding_mode:pss'] }),
    },
    { name: 'openssl SHA-1', input: opensslRequest(NEWKEY.p256, { extra: ['-sha1'] }) },
    {
      name: 'openssl secp256k1 key',
      input: opensslRequest(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1']),
    },
    { name: 'openssl Ed448 key', input: opensslRequest(['-newkey', 'ed448']) },
    { name: 'openssl RSA 1024 key', input: opensslRequest(['-newkey', 'rsa:1024']) },
    {
      name: 'openssl otherName SAN',
      input: opensslRequest(NEWKEY.p256, {
        addext: ['subjectAltName=DNS:ok.example.org,otherName:1.2.3.4;UTF8:hello'],
      }),
    },
    {
      name: 'openssl dirName SAN',
      input: opensslRequest(NEWKEY.p256, {
        addext: ['subjectAltName=dirName:dir'],
        extra: ['-config', configWithDirName()],
      }),
    },
  ];
}

function configWithDirName(): string {
  const path = join(dir, 'dirname.cnf');
  writeFileSync(path, '[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=x\n[dir]\nCN=inner\n');
  return path;
}

// --- byte surgery ------------------------------------------------------------

function flip(der: Buffer, at: number, mask: number): Buffer {
  const out = Buffer.from(der);
  out[at] ^= mask;
  return out;
}

function swapped(der: Buffer, from: string, to: string): Buffer {
  const out = Buffer.from(der);
  out.write(to, out.indexOf(Buffer.from(from)), 'latin1');
  return out;
}

function adjust(der: Buffer, at: number, delta: number): Buffer {
  const out = Buffer.from(der);
  out[at] = (out[at] + delta) & 0xff;
  return out;
}

/** Offsets of every short-form length byte and the last octet of every long-form one. */
function lengthOffsets(der: Buffer, start = 0, end = der.length, out: number[] = []): number[] {
  let offset = start;
  while (offset + 2 <= end) {
    const first = der[offset + 1];
    const count = first < 0x80 ? 0 : first & 0x7f;
    let length = first;
    if (count > 0) length = der.readUIntBE(offset + 2, count);
    const contentStart = offset + 2 + count;
    out.push(offset + 1 + count);
    if ((der[offset] & 0x20) !== 0) lengthOffsets(der, contentStart, contentStart + length, out);
    offset = contentStart + length;
  }
  return out;
}

function spkiParts(key: KeyObject): Buffer[] {
  const spki = spkiDer(key);
  const algorithmLength = spki[3] + 2;
  return [spki.subarray(2, 2 + algorithmLength), spki.subarray(2 + algorithmLength)];
}

function corruptSpki(key: KeyObject): Buffer {
  const spki = Buffer.from(spkiDer(key));
  spki[spki.length - 40] ^= 0xff; // the point is no longer on the curve
  return spki;
}

/** The signature BIT STRING (the last element) claiming one unused bit. */
function withUnusedSignatureBits(der: Buffer): Buffer {
  const out = Buffer.from(der);
  const elements = topLevel(out);
  out[elements[elements.length - 1].contentStart] = 1;
  return out;
}

/** The elements inside the outer SEQUENCE, found by walking headers (no checks: test inputs are ours). */
function topLevel(der: Buffer): { tag: number; start: number; contentStart: number; end: number }[] {
  const outerCount = der[1] < 0x80 ? 0 : der[1] & 0x7f;
  let offset = 2 + outerCount;
  const items: { tag: number; start: number; contentStart: number; end: number }[] = [];
  while (offset < der.length) {
    const first = der[offset + 1];
    const count = first < 0x80 ? 0 : first & 0x7f;
    const length = count > 0 ? der.readUIntBE(offset + 2, count) : first;
    const contentStart = offset + 2 + count;
    items.push({ tag: der[offset], start: offset, contentStart, end: contentStart + length });
    offset = contentStart + length;
  }
  return items;
}

// --- comparing ---------------------------------------------------------------

type Outcome =
  | { ok: { der: string; spki: string; subject: string; commonName: string | null; sans: GeneralName[] } }
  | { refused: { code: string; message: string } }
  | { crashed: string };

function outcomeOf(
  read: (data: Buffer | string, source: string) => unknown,
  input: Buffer | string,
): Outcome {
  try {
    const request = read(input, 'x.csr') as ReturnType<typeof readCsr>;
    return {
      ok: {
        der: request.der.toString('hex'),
        spki: request.publicKey.export({ type: 'spki', format: 'der' }).toString('hex'),
        subject: request.subject,
        commonName: request.commonName,
        sans: request.sans,
      },
    };
  } catch (error) {
    if (error instanceof SigilError) return { refused: { code: error.code, message: error.message } };
    return { crashed: String(error) };
  }
}

/**
 * True when the input is DER the library itself would write: every element
 * has a minimal definite length, and the request, its extensionRequest and
 * its subjectAltName re-encode to the same bytes. On such input the two
 * readers must agree exactly.
 */
function isCanonical(input: Buffer | string): boolean {
  let der: Buffer;
  if (typeof input === 'string' || input.includes('-----BEGIN')) {
    try {
      const blocks = decodePem(input.toString());
      if (blocks.length !== 1) return true; // refused before any DER is read, by both
      der = blocks[0].der;
    } catch {
      return true;
    }
  } else der = input;
  if (der.length > MAX_CSR_BYTES) return true;
  if (!strictTree(der, 0, der.length, 0)) return false;
  try {
    const asn = AsnConvert.parse(der, CertificationRequest);
    if (!Buffer.from(AsnConvert.serialize(asn)).equals(der)) return false;
    for (const attribute of asn.certificationRequestInfo.attributes ?? []) {
      if (attribute.type !== OID.extensionRequest) continue;
      for (const value of attribute.values) {
        const extensions = AsnConvert.parse(value, Extensions);
        if (!Buffer.from(AsnConvert.serialize(extensions)).equals(Buffer.from(value))) return false;
        for (const e of extensions) {
          if (e.extnID !== OID.san) continue;
          const names = AsnConvert.parse(e.extnValue.buffer, SubjectAlternativeName);
          if (!Buffer.from(AsnConvert.serialize(names)).equals(Buffer.from(e.extnValue.buffer))) return false;
        }
      }
    }
  } catch {
    return false;
  }
  return true;
}

/**
 * An independent check of DER framing (definite minimal lengths, exact
 * nesting, low tag numbers) and of the value rules of BOOLEAN and UTF8String.
 */
function strictTree(der: Buffer, start: number, end: number, depth: number): boolean {
  let offset = start;
  while (offset < end) {
    if (offset + 2 > end || (der[offset] & 0x1f) === 0x1f) return false;
    const first = der[offset + 1];
    let length = first;
    let contentStart = offset + 2;
    if (first & 0x80) {
      const count = first & 0x7f;
      if (count === 0 || count > 3 || contentStart + count > end || der[contentStart] === 0) return false;
      length = der.readUIntBE(contentStart, count);
      if (length < 0x80) return false;
      contentStart += count;
    }
    if (contentStart + length > end) return false;
    const contents = der.subarray(contentStart, contentStart + length);
    if (der[offset] === 0x01 && !(length === 1 && (contents[0] === 0 || contents[0] === 0xff))) return false;
    if (der[offset] === 0x0c && !isUtf8(contents)) return false;
    if (der[offset] & 0x20 && !strictTree(der, contentStart, contentStart + length, depth + 1)) return false;
    offset = contentStart + length;
  }
  return depth > 0 || offset === end;
}

interface Comparison {
  entry: Entry;
  old: Outcome;
  fresh: Outcome;
}

function compareAll(entries: Entry[]): Comparison[] {
  return entries.map((entry) => ({
    entry,
    old: outcomeOf(readCsrWithLibrary, entry.input),
    fresh: outcomeOf(readCsr, entry.input),
  }));
}

/**
 * On canonical DER the same outcome, exactly. Elsewhere — input the library's
 * BER decoder read in its own lenient way, or an entry that says why — the new
 * reader must still refuse (it may name an earlier problem than the library
 * did) and never accept what the old reader refused.
 */
function assertAgreement({ entry, old, fresh }: Comparison): void {
  assert.ok(!('crashed' in fresh), `${entry.name}: the new reader crashed: ${JSON.stringify(fresh)}`);
  if (isDeepStrictEqual(old, fresh)) {
    assert.equal(
      entry.stricter,
      undefined,
      `${entry.name}: expected the readers to differ (${entry.stricter})`,
    );
    return;
  }
  const why = entry.stricter ?? (isCanonical(entry.input) ? undefined : NON_DER);
  assert.ok(
    why,
    `${entry.name}: canonical DER, yet the readers differ:\n old ${JSON.stringify(old)}\n new ${JSON.stringify(fresh)}`,
  );
  assert.ok(
    'refused' in fresh,
    `${entry.name}: the new reader accepted what the old refused (${JSON.stringify(old)})`,
  );
  assert.ok(['invalid_argument', 'unauthenticated'].includes(fresh.refused.code), entry.name);
  assert.match(fresh.refused.message, /^x\.csr: /, entry.name);
}

/**
 * openssl req -verify on each DER request, one shell for the whole batch: true
 * when it says "verify OK" (OpenSSL 3.0 exits 0 on a failed verification too).
 */
function opensslVerifies(requests: Buffer[]): boolean[] {
  for (const [i, der] of requests.entries()) writeFileSync(join(dir, `v${i}.der`), der);
  const script = `for i in $(seq 0 ${requests.length - 1}); do
    if openssl req -in v$i.der -inform DER -verify -noout 2>&1 | grep -q 'verify OK'; then echo 1; else echo 0; fi
  done`;
  const out = execFileSync('sh', ['-c', script], { cwd: dir, encoding: 'utf8' });
  return out
    .trim()
    .split('\n')
    .map((line) => line === '1');
}

function derOf(input: Buffer | string): Buffer {
  if (typeof input === 'string' || input.includes('-----BEGIN')) return decodePem(input.toString())[0].der;
  return input;
}

// --- the tests ---------------------------------------------------------------

describe('readCsr fast path agrees with the library-based reader', () => {
  const named = [
    ...goodRequests(),
    ...subjectCases(),
    ...sanCases(),
    ...structureCases(),
    ...opensslRefusals(),
  ];
  const compared = compareAll(named);

  it('on good requests from sigil createCsr and openssl req -new, field for field', () => {
    const good = compared.filter(
      (c) => c.entry.name.startsWith('sigil ') || c.entry.name.startsWith('openssl '),
    );
    for (const comparison of good.filter((c) => !c.entry.name.startsWith('openssl ') || 'ok' in c.old)) {
      assertAgreement(comparison);
    }
    const accepted = good.filter((c) => 'ok' in c.fresh);
    assert.ok(accepted.length >= 45, `only ${accepted.length} good requests accepted`);
  });

  it('on every named odd, malformed and hostile request (same fields, or the same code and message)', (t) => {
    for (const comparison of compared) assertAgreement(comparison);
    const differing = compared.filter((c) => !isDeepStrictEqual(c.old, c.fresh));
    t.diagnostic(`${compared.length} inputs, ${differing.length} refused more strictly by design:`);
    for (const c of differing) t.diagnostic(`  ${c.entry.name}: ${c.entry.stricter ?? NON_DER}`);
    // The refusals named in the brief, spelled out.
    const outcome = (label: string) => {
      const found = compared.find((c) => c.entry.name === label);
      assert.ok(found, label);
      return found.fresh;
    };
    const refused = (label: string, message: RegExp, code = 'invalid_argument') => {
      const result = outcome(label);
      assert.ok('refused' in result, `${label} was not refused`);
      assert.equal(result.refused.code, code, label);
      assert.match(result.refused.message, message, label);
    };
    const notCsr = /^x\.csr: not a PKCS#10 certificate request$/;
    refused('wrong version (1)', notCsr);
    refused('trailing garbage', notCsr);
    refused('BER: indefinite outer length', notCsr);
    refused('BER: a non-minimal length in the signed part', notCsr);
    refused('huge length claim (4 octets)', notCsr);
    refused('oversize DER (64 KiB + 1)', /^x\.csr: certificate request is larger than 64 KiB$/);
    refused('two PEM blocks', /^x\.csr: contains 2 certificate requests, expected one$/);
    refused(
      'extensions: two extensionRequests',
      /^x\.csr: certificate request has more than one extensionRequest$/,
    );
    refused(
      'extensions: two subjectAltNames',
      /^x\.csr: certificate request has more than one subjectAltName$/,
    );
    refused('extensions: otherName', /unsupported type \(only DNS, IP, URI, email\)$/);
    refused('extensions: a bad DNS name before an unsupported type', /^invalid DNS name "bad_name"/);
    refused('a flipped signature byte', /^x\.csr: CSR signature does not verify/, 'unauthenticated');
    refused(
      'signature algorithm of another key type',
      /^x\.csr: CSR signature does not verify/,
      'unauthenticated',
    );
    refused('openssl RSA-PSS', /^x\.csr: RSA-PSS signatures are not supported/);
    refused('openssl SHA-1', /^x\.csr: unsupported signature algorithm ecdsa-with-SHA1$/);
    refused('md5WithRSAEncryption', /^x\.csr: unsupported signature algorithm md5WithRSAEncryption$/);
    refused('openssl Ed448 key', /^x\.csr: unsupported key type: Ed448/);
    refused(
      'a SubjectPublicKeyInfo with a corrupt key',
      /^x\.csr: certificate request has an unreadable public key$/,
    );
    refused('extensions: an attribute nested just past the depth limit', notCsr);
    refused('subject: INTEGER value', notCsr);
    refused('extensions: attribute nested 2000 deep', notCsr);
    refused('subject: two commonNames', /^x\.csr: certificate request subject has more than one commonName$/);
  });

  it('openssl req -verify accepts every request sigil accepts, and refuses every bad signature', () => {
    const accepted = compared.filter((c) => 'ok' in c.fresh);
    const badSignature = compared.filter(
      (c) => 'refused' in c.fresh && c.fresh.refused.code === 'unauthenticated',
    );
    const verdicts = opensslVerifies([...accepted, ...badSignature].map((c) => derOf(c.entry.input)));
    const disagreements = [
      ...accepted
        .filter((_, i) => !verdicts[i])
        .map((c) => `openssl refuses "${c.entry.name}", which sigil accepts`),
      ...badSignature
        .filter((_, i) => verdicts[accepted.length + i])
        .map((c) => `openssl verifies "${c.entry.name}", whose signature sigil refuses`),
    ];
    assert.deepEqual(disagreements, []);
    assert.ok(
      accepted.length >= 60 && badSignature.length >= 3,
      `${accepted.length} accepted, ${badSignature.length} bad`,
    );
  });
});

describe('readCsr fast path on mechanically damaged requests', () => {
  const p256 = createCsr(keys.p256, {
    commonName: 'node-1',
    sans: Object.values(SAN_KINDS).flatMap((k) => k.ours),
  });
  const ed25519 = createCsr(keys.ed25519, { commonName: 'e', sans: [dnsName('e.example.org')] });

  for (const [label, csr] of [
    ['P-256 with every SAN type', p256],
    ['Ed25519', ed25519],
  ] as const) {
    it(`truncated at every length (${label})`, () => {
      for (let length = 0; length < csr.length; length++) {
        const comparison = {
          entry: { name: `truncated to ${length}`, input: csr.subarray(0, length) },
          ...outcomes(csr.subarray(0, length)),
        };
        assert.deepEqual(comparison.fresh, comparison.old, comparison.entry.name);
        assert.ok('refused' in comparison.fresh, comparison.entry.name);
      }
    });

    // Damage never yields a valid request, except in the bytes no signature covers; so
    // here the rule is: whatever the old reader accepted, the new one accepts identically,
    // and whatever it refused, the new one refuses — often naming the broken encoding
    // ("not a PKCS#10 certificate request") where the library read on and failed the
    // signature. Those are counted, not hidden.
    it(`every single-bit flip at every byte (${label})`, (t) => {
      let accepted = 0;
      let sameRefusal = 0;
      let earlierRefusal = 0;
      for (let at = 0; at < csr.length; at++) {
        for (let bit = 0; bit < 8; bit++) {
          const input = flip(csr, at, 1 << bit);
          const name = `bit ${bit} of byte ${at}`;
          const { old, fresh } = outcomes(input);
          assert.ok(
            !('crashed' in old) && !('crashed' in fresh),
            `${name}: ${JSON.stringify({ old, fresh })}`,
          );
          if ('ok' in old) {
            if (!isDeepStrictEqual(old, fresh)) {
              // Accepted by the old reader only when the damage is in unsigned non-DER framing.
              assertAgreement({ entry: { name, input }, old, fresh });
              earlierRefusal++;
            } else accepted++;
            continue;
          }
          assert.ok('refused' in fresh, `${name}: the new reader accepted what the old refused`);
          if (isDeepStrictEqual(old, fresh)) sameRefusal++;
          else {
            assert.match(fresh.refused.message, /^x\.csr: not a PKCS#10 certificate request$/, name);
            earlierRefusal++;
          }
        }
      }
      t.diagnostic(
        `${csr.length * 8} flips: ${accepted} accepted by both (identically), ${sameRefusal} refused identically, ` +
          `${earlierRefusal} refused by the new reader as not DER`,
      );
      // A flip inside the signature or the signed bytes must never still verify.
      assert.ok(accepted < csr.length, `${accepted} damaged requests accepted`);
    });
  }
});

function outcomes(input: Buffer | string): { old: Outcome; fresh: Outcome } {
  return { old: outcomeOf(readCsrWithLibrary, input), fresh: outcomeOf(readCsr, input) };
}

describe('readCsr fast path, properties of its own', () => {
  it('verifies the signature over the bytes as received (attributes in non-DER order stay as signed)', () => {
    const key = keys.p256;
    const password = attribute(OID.challengePassword, utf8String('pw'));
    const san = extensionRequest(
      extension(OID.san, sanValue(implicitPrimitive(2, Buffer.from('a.example.org')))),
    );
    const asSigned = Buffer.concat([san, password]);
    assert.notDeepEqual(asSigned, setOf(san, password).subarray(2), 'a DER writer would reorder these');
    const request = readCsr(signedRequest({ key, attributes: implicitConstructed(0, asSigned) }), 'x.csr');
    assert.deepEqual(request.sans, [dnsName('a.example.org')]);
  });

  it('formats common subjects itself; only unusual string types reach the library', (t) => {
    const libraryFormat = t.mock.method(Name.prototype, 'toString');
    const common = name(
      cn('node-1'),
      rdn(atv(OID.o, printableString('Example Org'))),
      rdn(atv(OID.email, ia5String('a@example.org'))),
    );
    assert.equal(
      readCsr(signedRequest({ subject: common })).subject,
      'CN=node-1, O=Example Org, E=a@example.org',
    );
    assert.equal(libraryFormat.mock.callCount(), 0);
    const bmp = name(rdn(atv(OID.cn, tlv(0x1e, Buffer.from('\u0000b')))));
    assert.equal(readCsr(signedRequest({ subject: bmp })).subject, 'CN=b');
    assert.equal(libraryFormat.mock.callCount(), 1);
  });

  it('imports the key through the fast SPKI path (the same key, for every key type)', () => {
    for (const type of ['p256', 'p384', 'ed25519', 'rsa2048'] as KeyType[]) {
      const key = keys[type as keyof typeof keys];
      const request = readCsr(createCsr(key, { commonName: 'k' }));
      assert.deepEqual(request.publicKey.export({ type: 'spki', format: 'der' }), spkiDer(key));
      assert.equal(request.publicKey.type, 'public');
    }
  });

  it('reads openssl output with a private key that matches', () => {
    const pem = opensslRequest(NEWKEY.p256, { addext: ['subjectAltName=DNS:k.example.org'] });
    const key = readPrivateKey(readFileSync(join(dir, `o${opensslCount - 1}.key`)));
    const request = readCsr(pem, 'x.csr');
    assert.deepEqual(spkiDer(request.publicKey), spkiDer(key));
    assert.equal(request.subject, 'O=sigil tests, CN=node-1.example.org');
  });
});
