import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { signatureAlgorithmFor, signWith } from '../../src/pki/algorithms.ts';
import { createCsr, readCsr } from '../../src/pki/csr.ts';
import { bitString, implicitConstructed, integer, oid, sequence, setOf, tlv } from '../../src/pki/der.ts';
import { generateKeyPair, type KeyType, keysMatch, readPrivateKey, spkiDer } from '../../src/pki/keys.ts';
import { dnsName, emailName, ipAddress, uriName } from '../../src/pki/names.ts';
import { decodePem, encodePem } from '../../src/pki/pem.ts';
import { opensslIn } from '../support/openssl-in.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-csr-');
const { openssl, opensslAll } = opensslIn(dir);

let counter = 0;
/** openssl req -new with a fresh key; returns the CSR file contents and the key. */
function opensslCsr(
  newkey: string[],
  options: { subject?: string; addext?: string[]; extra?: string[]; der?: boolean } = {},
) {
  const name = `req${counter++}`;
  openssl(
    'req',
    '-new',
    ...newkey,
    '-nodes',
    '-subj',
    options.subject ?? '/O=sigil tests/CN=node-1.example.org',
    ...(options.addext ?? []).flatMap((e) => ['-addext', e]),
    ...(options.extra ?? []),
    ...(options.der ? ['-outform', 'DER'] : []),
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
  );
  const keyFile = join(dir, `${name}.key`);
  return { csr: readFileSync(join(dir, `${name}.csr`)), key: () => readPrivateKey(readFileSync(keyFile)) };
}

const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
// RSA key generation is slow; every RSA request reuses one key.
openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'rsa.key');
const RSA = ['-key', 'rsa.key'];
const SANS =
  'subjectAltName=DNS:node-1.example.org,DNS:*.svc.example.org,IP:10.0.0.1,IP:2001:db8::1,URI:spiffe://example.org/node/1,email:ops@example.org';

describe('readCsr reads openssl req -new output', () => {
  const cases: [string, string[], string[]][] = [
    ['ECDSA P-256', P256, []],
    ['ECDSA P-384 with SHA-384', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-sha384']],
    ['Ed25519', ['-newkey', 'ed25519'], []],
    ['RSA 2048', RSA, []],
    ['RSA 2048 with SHA-512', RSA, ['-sha512']],
  ];
  for (const [label, newkey, extra] of cases) {
    it(`${label}, with SANs`, () => {
      const { csr, key } = opensslCsr(newkey, { addext: [SANS], extra });
      const request = readCsr(csr, 'req.csr');
      assert.ok(keysMatch(key(), request.publicKey));
      assert.equal(request.commonName, 'node-1.example.org');
      assert.equal(request.subject, 'O=sigil tests, CN=node-1.example.org');
      assert.deepEqual(request.sans, [
        dnsName('node-1.example.org'),
        dnsName('*.svc.example.org'),
        ipAddress('10.0.0.1'),
        ipAddress('2001:db8::1'),
        uriName('spiffe://example.org/node/1'),
        emailName('ops@example.org'),
      ]);
      assert.deepEqual(request.der, decodePem(csr.toString())[0].der);
    });
  }

  it('DER input, no SANs, and the old "NEW CERTIFICATE REQUEST" label', () => {
    const { csr: der, key } = opensslCsr(P256, { der: true, subject: '/CN=plain' });
    const fromDer = readCsr(der);
    assert.ok(keysMatch(key(), fromDer.publicKey));
    assert.deepEqual(fromDer.sans, []);
    assert.equal(fromDer.commonName, 'plain');
    const legacy = encodePem('NEW CERTIFICATE REQUEST', der);
    assert.deepEqual(readCsr(legacy).der, der);
    assert.deepEqual(readCsr(Buffer.from(legacy)).der, der);
  });

  it('a subject without a commonName', () => {
    const { csr } = opensslCsr(P256, { subject: '/O=only org' });
    const request = readCsr(csr);
    assert.equal(request.commonName, null);
    assert.equal(request.subject, 'O=only org');
  });
});

describe('createCsr', () => {
  const sans = [
    dnsName('api.example.org'),
    ipAddress('192.0.2.7'),
    ipAddress('fd00::7'),
    uriName('spiffe://example.org/svc/api'),
    emailName('a@example.org'),
  ];
  for (const type of ['p256', 'p384', 'ed25519', 'rsa2048'] as KeyType[]) {
    it(`passes openssl req -verify and reads back (${type})`, () => {
      const { privateKey, publicKey } = generateKeyPair(type);
      const der = createCsr(privateKey, { commonName: 'api', sans });
      const path = `ours-${type}.csr`;
      writeFileSync(join(dir, path), encodePem('CERTIFICATE REQUEST', der));
      const out = opensslAll('req', '-in', path, '-verify', '-noout', '-text');
      assert.match(out, /verif(y|ication) OK/i);
      assert.match(out, /Subject: CN ?= ?api/);
      assert.match(
        out,
        /DNS:api\.example\.org, IP Address:192\.0\.2\.7, IP Address:FD00:0:0:0:0:0:0:7, URI:spiffe:\/\/example\.org\/svc\/api, email:a@example\.org/,
      );
      const request = readCsr(der);
      assert.deepEqual(spkiDer(request.publicKey), spkiDer(publicKey));
      assert.equal(request.commonName, 'api');
      assert.deepEqual(request.sans, sans);
    });
  }

  it('without commonName or SANs', () => {
    const { privateKey } = generateKeyPair('p256');
    const der = createCsr(privateKey, {});
    writeFileSync(join(dir, 'empty.csr'), der);
    assert.match(
      opensslAll('req', '-in', 'empty.csr', '-inform', 'DER', '-verify', '-noout'),
      /verif(y|ication) OK/i,
    );
    const request = readCsr(der);
    assert.equal(request.commonName, null);
    assert.deepEqual(request.sans, []);
  });

  it('refuses a public key, and bad commonNames', () => {
    const { privateKey, publicKey } = generateKeyPair('p256');
    assert.throws(() => createCsr(publicKey, {}), refusal('invalid_argument', /needs a private key/));
    assert.throws(
      () => createCsr(privateKey, { commonName: '' }),
      refusal('invalid_argument', /commonName must be 1 to 64/),
    );
    assert.throws(
      () => createCsr(privateKey, { commonName: 'x'.repeat(65) }),
      refusal('invalid_argument', /commonName must be 1 to 64/),
    );
    assert.throws(
      () => createCsr(privateKey, { commonName: 'a\nb' }),
      refusal('invalid_argument', /control characters/),
    );
  });
});

describe('readCsr refusals', () => {
  const { privateKey } = generateKeyPair('p256');
  const good = createCsr(privateKey, { commonName: 'victim', sans: [dnsName('victim.example.org')] });
  const failedPop = refusal(
    'unauthenticated',
    /^x\.csr: CSR signature does not verify \(proof of possession failed\)$/,
  );
  const notCsr = refusal('invalid_argument', /^x\.csr: not a PKCS#10 certificate request$/);

  it('refuses a CSR with a flipped signature byte', () => {
    const bad = Buffer.from(good);
    bad[bad.length - 5] ^= 0x01;
    assert.throws(() => readCsr(bad, 'x.csr'), failedPop);
    assert.throws(() => readCsr(encodePem('CERTIFICATE REQUEST', bad), 'x.csr'), failedPop);
  });

  it('refuses a CSR whose signed content was altered (name swapped after signing)', () => {
    const bad = Buffer.from(good);
    const at = bad.indexOf(Buffer.from('victim.example.org'));
    bad.write('attack', at, 'latin1');
    assert.throws(() => readCsr(bad, 'x.csr'), failedPop);
  });

  it('refuses a CSR signed by a different key than the one it carries', () => {
    const other = generateKeyPair('p256').privateKey;
    const info = sequence(integer(0), sequence(), spkiDer(privateKey), implicitConstructed(0));
    const alg = signatureAlgorithmFor(other);
    const forged = sequence(info, alg.algorithmIdentifier, bitString(signWith(alg, other, info)));
    assert.throws(() => readCsr(forged, 'x.csr'), failedPop);
  });

  it('refuses BER (a non-minimal length) inside the signed request, which the library reader accepted', () => {
    // Same request, but the version INTEGER with a (valid BER, non-DER) long-form length. The strict DER
    // reader refuses it; "signed bytes as received" is covered in csr-fast-path.test.ts.
    const info = Buffer.concat([
      Buffer.of(0x02, 0x81, 0x01, 0x00),
      sequence(setOf(sequence(oid('2.5.4.3'), tlv(0x0c, Buffer.from('ber'))))),
      spkiDer(privateKey),
      implicitConstructed(0),
    ]);
    const cri = tlv(0x30, info);
    const alg = signatureAlgorithmFor(privateKey);
    const csr = sequence(cri, alg.algorithmIdentifier, bitString(signWith(alg, privateKey, cri)));
    assert.throws(() => readCsr(csr, 'x.csr'), notCsr);
  });

  it('refuses garbage', () => {
    for (const garbage of [
      Buffer.from('hello, world'),
      Buffer.alloc(0),
      Buffer.of(0x30, 0x03, 0x02, 0x01, 0x00),
      Buffer.alloc(300, 0x30),
    ]) {
      assert.throws(() => readCsr(garbage, 'x.csr'), notCsr);
    }
    assert.throws(
      () =>
        readCsr('-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n', 'x.csr'),
      refusal('invalid_argument', /invalid base64/),
    );
    assert.throws(() => readCsr(Buffer.concat([good, Buffer.of(0)]), 'x.csr'), notCsr);
    assert.throws(() => readCsr(good.subarray(0, good.length - 1), 'x.csr'), notCsr);
  });

  it('refuses oversized input', () => {
    const huge = Buffer.alloc(64 * 1024 + 1, 0x41);
    assert.throws(
      () => readCsr(huge, 'x.csr'),
      refusal('invalid_argument', /^x\.csr: certificate request is larger than 64 KiB$/),
    );
    assert.throws(() => readCsr(huge.toString(), 'x.csr'), refusal('invalid_argument', /larger than 64 KiB/));
  });

  it('refuses a certificate given as a CSR', () => {
    openssl(
      'req',
      '-x509',
      ...P256,
      '-nodes',
      '-subj',
      '/CN=cert',
      '-keyout',
      'cert.key',
      '-out',
      'cert.pem',
      '-days',
      '1',
    );
    const pem = readFileSync(join(dir, 'cert.pem'));
    assert.throws(() => readCsr(pem, 'x.csr'), notCsr);
    assert.throws(() => readCsr(decodePem(pem.toString())[0].der, 'x.csr'), notCsr);
  });

  it('refuses two requests in one file', () => {
    const pem = encodePem('CERTIFICATE REQUEST', good);
    assert.throws(
      () => readCsr(pem + pem, 'x.csr'),
      refusal('invalid_argument', /contains 2 certificate requests/),
    );
  });

  it('refuses unsupported key types by name', () => {
    const { csr } = opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1']);
    assert.throws(
      () => readCsr(csr, 'x.csr'),
      refusal('invalid_argument', /unsupported key type: ECDSA secp256k1/),
    );
  });

  it('refuses RSA-PSS and SHA-1 signatures with a clear message', () => {
    const { csr: pss } = opensslCsr(RSA, { extra: ['-sigopt', 'rsa_padding_mode:pss'] });
    assert.throws(
      () => readCsr(pss, 'x.csr'),
      refusal('invalid_argument', /^x\.csr: RSA-PSS signatures are not supported/),
    );
    const { csr: sha1 } = opensslCsr(P256, { extra: ['-sha1'] });
    assert.throws(
      () => readCsr(sha1, 'x.csr'),
      refusal('invalid_argument', /^x\.csr: unsupported signature algorithm ecdsa-with-SHA1$/),
    );
  });

  it('refuses SAN types sigil does not issue, and invalid SAN values', () => {
    const { csr: other } = opensslCsr(P256, {
      addext: ['subjectAltName=DNS:ok.example.org,otherName:1.2.3.4;UTF8:hello'],
    });
    assert.throws(
      () => readCsr(other, 'x.csr'),
      refusal('invalid_argument', /subjectAltName of an unsupported type/),
    );
    const { csr: badDns } = opensslCsr(P256, { addext: ['subjectAltName=DNS:bad_name.example.org'] });
    assert.throws(
      () => readCsr(badDns, 'x.csr'),
      refusal('invalid_argument', /invalid DNS name "bad_name\.example\.org"/),
    );
  });
});
