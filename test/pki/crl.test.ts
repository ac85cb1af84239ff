import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificateList } from '@peculiar/asn1-x509';
import { readCertificates } from '../../src/pki/certificate.ts';
import {
  createCrl,
  parseCrl,
  parseRevocationReason,
  REVOCATION_REASONS,
  type RevokedEntry,
  verifyCrlSignature,
} from '../../src/pki/crl.ts';
import { generateKeyPair, readPrivateKey } from '../../src/pki/keys.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { opensslIn } from '../support/openssl-in.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-crl-');
const { openssl, opensslAll } = opensslIn(dir);

let counter = 0;
function makeCa(newkey: string[], options: { extensions?: string[]; subject?: string } = {}) {
  const name = `ca${counter++}`;
  const extensions = options.extensions ?? [
    'basicConstraints=critical,CA:TRUE',
    'keyUsage=critical,keyCertSign,cRLSign',
  ];
  openssl(
    'req',
    '-x509',
    ...newkey,
    '-nodes',
    '-days',
    '2',
    '-subj',
    options.subject ?? `/O=sigil tests/CN=Test CA ${name}`,
    ...extensions.flatMap((e) => ['-addext', e]),
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
  );
  const pem = readFileSync(join(dir, `${name}.pem`));
  return {
    name,
    pemPath: `${name}.pem`,
    der: readCertificates(pem)[0],
    key: readPrivateKey(readFileSync(join(dir, `${name}.key`))),
  };
}

const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
const issuers = {
  p256: makeCa(P256),
  p384: makeCa(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384']),
  ed25519: makeCa(['-newkey', 'ed25519']),
  rsa2048: makeCa(['-newkey', 'rsa:2048']),
};

const thisUpdate = new Date('2026-03-01T12:00:00Z');
const nextUpdate = new Date('2030-01-01T00:00:00Z');
const entries: RevokedEntry[] = [
  { serialHex: '0a1b2c3d4e5f', revokedAt: new Date('2026-02-01T10:00:00Z'), reason: 'keyCompromise' },
  { serialHex: '7f00ff', revokedAt: new Date('2026-02-02T10:00:00Z'), reason: 'unspecified' },
  {
    serialHex: 'c0ffee00c0ffee00c0ffee00c0ffee00',
    revokedAt: new Date('2026-02-03T10:00:00Z'),
    reason: 'superseded',
  },
];

function writeCrl(der: Buffer): string {
  const path = `crl${counter++}.pem`;
  writeFileSync(join(dir, path), encodePem('X509 CRL', der));
  return path;
}

describe('createCrl is accepted by openssl', () => {
  for (const [type, ca] of Object.entries(issuers)) {
    it(`${type} issuer: openssl crl -verify passes and -text shows what we asked for`, () => {
      const der = createCrl({
        issuerCertificate: ca.der,
        issuerKey: ca.key,
        entries,
        crlNumber: 42n,
        thisUpdate,
        nextUpdate,
      });
      const path = writeCrl(der);
      assert.match(opensslAll('crl', '-in', path, '-CAfile', ca.pemPath, '-verify', '-noout'), /verify OK/);
      const text = openssl('crl', '-in', path, '-noout', '-text');
      assert.match(text, /Version 2 \(0x1\)/);
      assert.match(text, /Next Update: Jan {2}1 00:00:00 2030 GMT/);
      assert.match(text, /Last Update: Mar {2}1 12:00:00 2026 GMT/);
      assert.match(text, /X509v3 CRL Number: \n\s+42\n/);
      assert.match(text, /X509v3 Authority Key Identifier: \n\s+(keyid:)?[0-9A-F:]{59}\n/);
      assert.match(
        text,
        /Serial Number: 0A1B2C3D4E5F\n\s+Revocation Date: Feb {2}1 10:00:00 2026 GMT\n\s+CRL entry extensions:\n\s+X509v3 CRL Reason Code:\s*\n\s+Key Compromise/,
      );
      // unspecified: no reasonCode extension at all (RFC 5280 SHOULD).
      assert.match(
        text,
        /Serial Number: 7F00FF\n\s+Revocation Date: Feb {2}2 10:00:00 2026 GMT\n\s+Serial Number/,
      );
      assert.match(
        text,
        /Serial Number: C0FFEE00C0FFEE00C0FFEE00C0FFEE00\n[^\n]+\n[^\n]+\n[^\n]+\n\s+Superseded/,
      );
      const expectedAlgorithm = {
        p256: 'ecdsa-with-SHA256',
        p384: 'ecdsa-with-SHA384',
        ed25519: 'ED25519',
        rsa2048: 'sha256WithRSAEncryption',
      }[type];
      assert.match(text, new RegExp(`Signature Algorithm: ${expectedAlgorithm}`));
    });
  }

  it('an empty CRL verifies too, with revokedCertificates omitted', () => {
    const ca = issuers.p256;
    const der = createCrl({
      issuerCertificate: ca.der,
      issuerKey: ca.key,
      entries: [],
      crlNumber: 0n,
      nextUpdate: new Date(Date.now() + 3600_000),
    });
    const path = writeCrl(der);
    assert.match(opensslAll('crl', '-in', path, '-CAfile', ca.pemPath, '-verify', '-noout'), /verify OK/);
    assert.match(openssl('crl', '-in', path, '-noout', '-text'), /No Revoked Certificates/);
    assert.equal(AsnConvert.parse(der, CertificateList).tbsCertList.revokedCertificates, undefined);
  });

  it('issuer field is the CA subject exactly as encoded in the certificate', () => {
    const ca = makeCa(P256, { subject: '/C=NL/O=Ünïcödé Org/OU=unit/CN=Verbatim CA' });
    const der = createCrl({
      issuerCertificate: ca.der,
      issuerKey: ca.key,
      entries,
      crlNumber: 1n,
      thisUpdate,
      nextUpdate,
    });
    const issuer = Buffer.from(
      AsnConvert.serialize(AsnConvert.parse(der, CertificateList).tbsCertList.issuer),
    );
    assert.ok(ca.der.includes(issuer));
    assert.match(
      opensslAll('crl', '-in', writeCrl(der), '-CAfile', ca.pemPath, '-verify', '-noout'),
      /verify OK/,
    );
  });

  it('authorityKeyIdentifier is SHA-1 of the key bits when the issuer has no SKI', () => {
    const ca = makeCa(P256, {
      extensions: [
        'basicConstraints=critical,CA:TRUE',
        'keyUsage=critical,keyCertSign,cRLSign',
        'subjectKeyIdentifier=none',
        'authorityKeyIdentifier=none',
      ],
    });
    const der = createCrl({
      issuerCertificate: ca.der,
      issuerKey: ca.key,
      entries,
      crlNumber: 7n,
      thisUpdate,
      nextUpdate,
    });
    const path = writeCrl(der);
    assert.match(opensslAll('crl', '-in', path, '-CAfile', ca.pemPath, '-verify', '-noout'), /verify OK/);
    const spki = new X509Certificate(ca.der).publicKey.export({ type: 'spki', format: 'der' });
    const keyBits = spki.subarray(spki.length - 65); // uncompressed P-256 point
    const expected = createHash('sha1').update(keyBits).digest('hex').toUpperCase().match(/../g)?.join(':');
    assert.ok(expected);
    assert.ok(openssl('crl', '-in', path, '-noout', '-text').includes(expected));
  });

  it('large CRL numbers survive the round trip', () => {
    const ca = issuers.p256;
    const crlNumber = (1n << 158n) + 12345n;
    const der = createCrl({
      issuerCertificate: ca.der,
      issuerKey: ca.key,
      entries: [],
      crlNumber,
      thisUpdate,
      nextUpdate,
    });
    assert.equal(parseCrl(der).crlNumber, crlNumber);
    assert.match(
      openssl('crl', '-in', writeCrl(der), '-noout', '-text'),
      /X509v3 CRL Number: \n\s+0x4000000000000000000000000000000000003039/,
    );
  });
});

describe('parseCrl and verifyCrlSignature', () => {
  const ca = issuers.p256;
  const der = createCrl({
    issuerCertificate: ca.der,
    issuerKey: ca.key,
    entries,
    crlNumber: 42n,
    thisUpdate,
    nextUpdate,
  });

  it('reads back what createCrl wrote, from DER and from PEM', () => {
    for (const input of [
      der,
      encodePem('X509 CRL', der),
      Buffer.from(`junk before\n${encodePem('X509 CRL', der)}`),
    ]) {
      const info = parseCrl(input, 'test.crl');
      assert.deepEqual(info.der, der);
      assert.equal(info.issuer, `O=sigil tests, CN=Test CA ${ca.name}`);
      assert.deepEqual(info.thisUpdate, thisUpdate);
      assert.deepEqual(info.nextUpdate, nextUpdate);
      assert.equal(info.crlNumber, 42n);
      assert.equal(info.signatureAlgorithm, 'ecdsa-with-SHA256');
      assert.deepEqual(info.entries, [
        { serialHex: '0a1b2c3d4e5f', revokedAt: entries[0].revokedAt, reason: 'keyCompromise' },
        { serialHex: '7f00ff', revokedAt: entries[1].revokedAt, reason: 'unspecified' },
        {
          serialHex: 'c0ffee00c0ffee00c0ffee00c0ffee00',
          revokedAt: entries[2].revokedAt,
          reason: 'superseded',
        },
      ]);
    }
  });

  it('every reason round-trips', () => {
    const all = REVOCATION_REASONS.map((reason, i) => ({
      serialHex: (i + 1).toString(16),
      revokedAt: thisUpdate,
      reason,
    }));
    const info = parseCrl(
      createCrl({
        issuerCertificate: ca.der,
        issuerKey: ca.key,
        entries: all,
        crlNumber: 1n,
        thisUpdate,
        nextUpdate,
      }),
    );
    assert.deepEqual(
      info.entries.map((e) => e.reason),
      [...REVOCATION_REASONS],
    );
  });

  it('verifyCrlSignature accepts ours for each issuer and refuses a flipped byte or another issuer', () => {
    for (const issuer of Object.values(issuers)) {
      const crl = createCrl({
        issuerCertificate: issuer.der,
        issuerKey: issuer.key,
        entries,
        crlNumber: 3n,
        thisUpdate,
        nextUpdate,
      });
      assert.equal(verifyCrlSignature(crl, issuer.der), true);
      const tampered = Buffer.from(crl);
      tampered[tampered.indexOf(Buffer.from('0a1b2c3d4e5f', 'hex'))] ^= 1;
      assert.equal(verifyCrlSignature(tampered, issuer.der), false);
      const other = issuer === issuers.p256 ? issuers.p384 : issuers.p256;
      assert.equal(verifyCrlSignature(crl, other.der), false);
    }
  });

  it('garbage, a certificate, trailing bytes and several CRLs are refused', () => {
    const notCrl = refusal('invalid_argument', /^x: not an X\.509 CRL$/);
    assert.throws(() => parseCrl(Buffer.from('hello world'), 'x'), notCrl);
    assert.throws(() => parseCrl(ca.der, 'x'), notCrl);
    assert.throws(() => parseCrl(Buffer.concat([der, Buffer.of(0)]), 'x'), notCrl);
    assert.throws(() => parseCrl(der.subarray(0, der.length - 3), 'x'), notCrl);
    assert.throws(() => parseCrl(encodePem('CERTIFICATE', ca.der), 'x'), notCrl);
    assert.throws(
      () => parseCrl(encodePem('X509 CRL', der) + encodePem('X509 CRL', der), 'x'),
      refusal('invalid_argument', /contains 2 CRLs/),
    );
    assert.throws(() => verifyCrlSignature(ca.der, ca.der), refusal('invalid_argument', /not an X\.509 CRL/));
  });
});

describe('createCrl refusals', () => {
  const ca = issuers.p256;
  const base = {
    issuerCertificate: ca.der,
    issuerKey: ca.key,
    entries,
    crlNumber: 1n,
    thisUpdate,
    nextUpdate,
  };

  it('refuses an issuer that is not a CA', () => {
    const leaf = makeCa(P256, { extensions: ['basicConstraints=critical,CA:FALSE'] });
    assert.throws(
      () => createCrl({ ...base, issuerCertificate: leaf.der, issuerKey: leaf.key }),
      refusal('failed_precondition', /is not a CA certificate/),
    );
  });

  it('refuses a CA whose keyUsage lacks cRLSign', () => {
    const noCrlSign = makeCa(P256, {
      extensions: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign'],
    });
    assert.throws(
      () => createCrl({ ...base, issuerCertificate: noCrlSign.der, issuerKey: noCrlSign.key }),
      refusal('failed_precondition', /keyUsage without cRLSign/),
    );
  });

  it('refuses a key that does not match the issuer certificate', () => {
    assert.throws(
      () => createCrl({ ...base, issuerKey: generateKeyPair('p256').privateKey }),
      refusal('failed_precondition', /signing key does not match the issuer certificate/),
    );
    assert.throws(
      () => createCrl({ ...base, issuerKey: issuers.p384.key }),
      refusal('failed_precondition', /signing key does not match/),
    );
  });

  it('refuses nextUpdate not after thisUpdate', () => {
    for (const next of [
      thisUpdate,
      new Date(thisUpdate.getTime() + 999),
      new Date(thisUpdate.getTime() - 1000),
    ]) {
      assert.throws(
        () => createCrl({ ...base, nextUpdate: next }),
        refusal('failed_precondition', /nextUpdate must be later than thisUpdate/),
      );
    }
  });

  it('refuses malformed serials, naming them', () => {
    for (const serialHex of ['', 'xyz', '0', '00', '-1', `${'ab'.repeat(21)}`, '12 34']) {
      assert.throws(
        () => createCrl({ ...base, entries: [{ serialHex, revokedAt: thisUpdate, reason: 'superseded' }] }),
        refusal(
          'invalid_argument',
          new RegExp(`^revoked serial "${serialHex.slice(0, 10)}.*" is not a positive hex number`),
        ),
        serialHex,
      );
    }
  });

  it('refuses duplicate serials, also when spelled differently', () => {
    assert.throws(
      () => createCrl({ ...base, entries: [entries[0], { ...entries[0], reason: 'superseded' }] }),
      refusal('invalid_argument', /serial 0a1b2c3d4e5f is listed more than once/),
    );
    assert.throws(
      () =>
        createCrl({ ...base, entries: [entries[0], { ...entries[0], serialHex: '000A:1B:2C:3D:4E:5F' }] }),
      refusal('invalid_argument', /is listed more than once/),
    );
  });

  it('refuses an unknown reason from an untyped caller', () => {
    for (const reason of ['compromised', 'constructor', 'toString']) {
      const entry = { serialHex: '01', revokedAt: thisUpdate, reason } as unknown as RevokedEntry;
      assert.throws(
        () => createCrl({ ...base, entries: [entry] }),
        refusal('invalid_argument', /unknown revocation reason/),
      );
    }
  });

  it('refuses out-of-range CRL numbers', () => {
    assert.throws(() => createCrl({ ...base, crlNumber: -1n }), refusal('invalid_argument', /CRL number/));
    assert.throws(
      () => createCrl({ ...base, crlNumber: 1n << 159n }),
      refusal('invalid_argument', /CRL number/),
    );
  });
});

describe('parseRevocationReason', () => {
  it('accepts names case-insensitively, kebab-case and codes', () => {
    assert.equal(parseRevocationReason('keyCompromise'), 'keyCompromise');
    assert.equal(parseRevocationReason('KEYCOMPROMISE'), 'keyCompromise');
    assert.equal(parseRevocationReason('key-compromise'), 'keyCompromise');
    assert.equal(parseRevocationReason('ca-compromise'), 'cACompromise');
    assert.equal(parseRevocationReason('remove-from-crl'), 'removeFromCRL');
    assert.equal(parseRevocationReason('1'), 'keyCompromise');
    assert.equal(parseRevocationReason('0'), 'unspecified');
    assert.equal(parseRevocationReason('10'), 'aACompromise');
    assert.equal(parseRevocationReason(' superseded '), 'superseded');
  });

  it('refuses anything else, listing the choices', () => {
    for (const text of ['7', '11', 'compromised', '', '1.0']) {
      assert.throws(
        () => parseRevocationReason(text),
        refusal(
          'invalid_argument',
          /unknown revocation reason .* \(expected one of unspecified, keyCompromise, .*aACompromise\)/,
        ),
      );
    }
  });
});
