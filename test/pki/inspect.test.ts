import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readCertificates } from '../../src/pki/certificate.ts';
import { createCrl } from '../../src/pki/crl.ts';
import {
  formatInspection,
  type InspectedCertificate,
  type InspectedCrl,
  type InspectedCsr,
  type InspectedKey,
  inspect,
} from '../../src/pki/inspect.ts';
import { readPrivateKey } from '../../src/pki/keys.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { opensslIn } from '../support/openssl-in.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-inspect-');
const { openssl } = opensslIn(dir);

const read = (name: string): Buffer => readFileSync(join(dir, name));
const write = (name: string, text: string): void => writeFileSync(join(dir, name), text);

const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];

// root → intermediate (pathlen 0, name constraints) → leaf (SANs, EKU, CDP, AIA, an unknown extension)
openssl(
  'req',
  '-x509',
  ...P256,
  '-nodes',
  '-days',
  '30',
  '-subj',
  '/O=sigil tests/CN=Root CA',
  '-addext',
  'basicConstraints=critical,CA:TRUE',
  '-addext',
  'keyUsage=critical,keyCertSign,cRLSign',
  '-keyout',
  'root.key',
  '-out',
  'root.pem',
);
write(
  'int.ext',
  [
    'basicConstraints=critical,CA:TRUE,pathlen:0',
    'keyUsage=critical,keyCertSign,cRLSign',
    'nameConstraints=critical,permitted;DNS:example.org,permitted;IP:10.0.0.0/255.0.0.0,excluded;DNS:bad.example.org',
    'subjectKeyIdentifier=hash',
    'authorityKeyIdentifier=keyid',
  ].join('\n'),
);
openssl(
  'req',
  '-new',
  ...P256,
  '-nodes',
  '-subj',
  '/CN=Intermediate CA',
  '-keyout',
  'int.key',
  '-out',
  'int.csr',
);
openssl(
  'x509',
  '-req',
  '-in',
  'int.csr',
  '-CA',
  'root.pem',
  '-CAkey',
  'root.key',
  '-set_serial',
  '0x1001',
  '-days',
  '20',
  '-extfile',
  'int.ext',
  '-out',
  'int.pem',
);
write(
  'leaf.ext',
  [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth,clientAuth',
    'subjectAltName=DNS:api.example.org,IP:10.1.2.3,URI:spiffe://example.org/svc/api',
    'crlDistributionPoints=URI:http://crl.example.org/int.crl',
    'authorityInfoAccess=OCSP;URI:http://ocsp.example.org',
    '1.3.6.1.4.1.99999.1=ASN1:UTF8String:hello sigil',
  ].join('\n'),
);
openssl(
  'req',
  '-new',
  ...P256,
  '-nodes',
  '-subj',
  '/CN=api',
  '-keyout',
  'leaf.key',
  '-out',
  'leaf.csr',
  '-addext',
  'subjectAltName=DNS:api.example.org,URI:spiffe://example.org/svc/api',
);
openssl(
  'x509',
  '-req',
  '-in',
  'leaf.csr',
  '-CA',
  'int.pem',
  '-CAkey',
  'int.key',
  '-set_serial',
  '0xA1B2C3',
  '-days',
  '1',
  '-extfile',
  'leaf.ext',
  '-out',
  'leaf.pem',
);
const chain = Buffer.concat([read('leaf.pem'), read('int.pem'), read('root.pem')]);
const leafDer = readCertificates(read('leaf.pem'))[0];
const leafNotAfter = new Date(
  openssl('x509', '-in', 'leaf.pem', '-noout', '-enddate').trim().slice('notAfter='.length),
);

const notRecognised = refusal('invalid_argument', /^x: not a certificate, CSR, CRL or key$/);

describe('inspect', () => {
  it('a chain file: three certificates with extensions named', () => {
    const items = inspect(chain, { source: 'chain.pem', now: new Date(leafNotAfter.getTime() - 86340_000) });
    assert.equal(items.length, 3);
    const [leaf, int, root] = items as InspectedCertificate[];
    assert.deepEqual(
      items.map((i) => [i.kind, (i as InspectedCertificate).index]),
      [
        ['certificate', 0],
        ['certificate', 1],
        ['certificate', 2],
      ],
    );

    assert.equal(leaf.subject, 'CN=api');
    assert.equal(leaf.issuer, 'CN=Intermediate CA');
    assert.equal(leaf.serial, 'a1b2c3');
    assert.equal(leaf.secondsLeft, 86340);
    assert.equal(leaf.expired, false);
    assert.equal(leaf.keyType, 'ECDSA P-256');
    assert.equal(leaf.isCa, false);
    assert.equal(leaf.selfSigned, false);
    assert.deepEqual(leaf.sans, [
      { type: 'dns', value: 'api.example.org' },
      { type: 'ip', value: '10.1.2.3' },
      { type: 'uri', value: 'spiffe://example.org/svc/api' },
    ]);
    assert.equal(leaf.spiffeId, 'spiffe://example.org/svc/api');
    const fingerprint = openssl('x509', '-in', 'leaf.pem', '-noout', '-fingerprint', '-sha256')
      .trim()
      .split('=')[1];
    assert.equal(leaf.fingerprintSha256, fingerprint);
    const ext = Object.fromEntries(leaf.extensions.map((e) => [e.name, e]));
    assert.deepEqual(ext.basicConstraints, {
      oid: '2.5.29.19',
      name: 'basicConstraints',
      critical: true,
      value: 'CA:FALSE',
    });
    assert.equal(ext.keyUsage.value, 'digitalSignature, keyEncipherment');
    assert.equal(ext.keyUsage.critical, true);
    assert.equal(ext.extKeyUsage.value, 'serverAuth, clientAuth');
    assert.equal(
      ext.subjectAltName.value,
      'DNS:api.example.org, IP:10.1.2.3, URI:spiffe://example.org/svc/api',
    );
    assert.equal(ext.cRLDistributionPoints.value, 'URI:http://crl.example.org/int.crl');
    assert.equal(ext.authorityInfoAccess.value, 'OCSP - URI:http://ocsp.example.org');
    assert.match(ext.authorityKeyIdentifier.value, /^keyid:([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    assert.equal(
      ext['1.3.6.1.4.1.99999.1'].value,
      Buffer.concat([Buffer.of(0x0c, 11), Buffer.from('hello sigil')]).toString('hex'),
    );

    assert.equal(int.isCa, true);
    assert.equal(int.pathLen, 0);
    const intExt = Object.fromEntries(int.extensions.map((e) => [e.name, e]));
    assert.equal(intExt.basicConstraints.value, 'CA:TRUE, pathlen:0');
    assert.equal(intExt.keyUsage.value, 'keyCertSign, cRLSign');
    assert.deepEqual(intExt.nameConstraints, {
      oid: '2.5.29.30',
      name: 'nameConstraints',
      critical: true,
      value: 'permitted: DNS:example.org, IP:10.0.0.0/8; excluded: DNS:bad.example.org',
    });
    assert.equal(intExt.subjectKeyIdentifier.value.length, 59);

    assert.equal(root.selfSigned, true);
    assert.equal(root.subject, 'O=sigil tests, CN=Root CA');

    const text = formatInspection(items, 'chain.pem');
    assert.match(text, /^chain\.pem: 3 objects\n/);
    assert.match(text, /\(23h 59m left\)/);
    assert.match(text, /SPIFFE ID: +spiffe:\/\/example\.org\/svc\/api/);
    assert.match(text, /nameConstraints \(2\.5\.29\.30\) \[critical\]: permitted: DNS:example\.org/);
    assert.match(text, /extKeyUsage \(2\.5\.29\.37\): serverAuth, clientAuth/);
  });

  it('an expired certificate says so', () => {
    const [leaf] = inspect(read('leaf.pem'), {
      source: 'leaf.pem',
      now: new Date(leafNotAfter.getTime() + 7200_000),
    });
    assert.equal(leaf.kind, 'certificate');
    assert.equal((leaf as InspectedCertificate).expired, true);
    assert.equal((leaf as InspectedCertificate).secondsLeft, -7200);
    assert.match(formatInspection([leaf], 'leaf.pem'), /\(EXPIRED 2h ago\)/);
  });

  it('a DER certificate', () => {
    const items = inspect(leafDer, { source: 'leaf.der' });
    assert.equal(items.length, 1);
    assert.equal(items[0].kind, 'certificate');
    assert.equal((items[0] as InspectedCertificate).subject, 'CN=api');
  });

  it('a CSR, valid and with a flipped signature byte', () => {
    const [csr] = inspect(read('leaf.csr'), { source: 'leaf.csr' }) as InspectedCsr[];
    assert.equal(csr.kind, 'csr');
    assert.equal(csr.subject, 'CN=api');
    assert.equal(csr.keyType, 'ECDSA P-256');
    assert.equal(csr.signatureValid, true);
    assert.deepEqual(csr.sans, [
      { type: 'dns', value: 'api.example.org' },
      { type: 'uri', value: 'spiffe://example.org/svc/api' },
    ]);
    const der = readDer('leaf.csr');
    der[der.length - 3] ^= 1;
    const [bad] = inspect(der, { source: 'bad.csr' }) as InspectedCsr[];
    assert.equal(bad.kind, 'csr');
    assert.equal(bad.signatureValid, false);
    assert.match(formatInspection([bad], 'bad.csr'), /signature: +DOES NOT VERIFY/);
  });

  it('a CRL', () => {
    const ca = readCertificates(read('int.pem'))[0];
    const crl = createCrl({
      issuerCertificate: ca,
      issuerKey: readPrivateKey(read('int.key')),
      entries: [
        { serialHex: 'a1b2c3', revokedAt: new Date('2026-01-02T03:04:05Z'), reason: 'keyCompromise' },
      ],
      crlNumber: 9007199254740993n,
      thisUpdate: new Date('2026-01-02T03:04:05Z'),
      nextUpdate: new Date('2026-01-03T03:04:05Z'),
    });
    const items = inspect(Buffer.from(encodePem('X509 CRL', crl)), {
      source: 'int.crl',
      now: new Date('2026-01-02T04:04:05Z'),
    });
    const [info] = items as InspectedCrl[];
    assert.equal(info.kind, 'crl');
    assert.equal(info.issuer, 'CN=Intermediate CA');
    assert.equal(info.crlNumber, '9007199254740993');
    assert.equal(info.nextUpdate, '2026-01-03T03:04:05.000Z');
    assert.deepEqual(info.revoked, [
      { serial: 'a1b2c3', revokedAt: '2026-01-02T03:04:05.000Z', reason: 'keyCompromise' },
    ]);
    assert.equal(
      info.fingerprintSha256,
      createHash('sha256').update(crl).digest('hex').toUpperCase().match(/../g)?.join(':'),
    );
    const text = formatInspection(items, 'int.crl');
    assert.match(text, /next update: +2026-01-03T03:04:05\.000Z \(in 23h\)/);
    assert.match(text, /a1b2c3 +2026-01-02T03:04:05\.000Z +keyCompromise/);
    // DER works too
    assert.equal(inspect(crl, { source: 'int.crl' })[0].kind, 'crl');
    JSON.stringify(items); // plain data, no bigint
  });

  it('an encrypted key: reported as encrypted without a passphrase, described with one', () => {
    openssl(
      'genpkey',
      '-algorithm',
      'EC',
      '-pkeyopt',
      'ec_paramgen_curve:P-384',
      '-aes-256-cbc',
      '-pass',
      'pass:s3cret-pw',
      '-out',
      'enc.key',
    );
    const [locked] = inspect(read('enc.key'), { source: 'enc.key' }) as InspectedKey[];
    assert.equal(locked.kind, 'private-key');
    assert.equal(locked.encrypted, true);
    assert.equal(locked.publicKeySha256, null);
    const [open] = inspect(read('enc.key'), { source: 'enc.key', passphrase: 's3cret-pw' }) as InspectedKey[];
    assert.deepEqual(open, {
      kind: 'private-key',
      keyType: 'ECDSA P-384',
      encrypted: true,
      publicKeySha256: spkiHash(readPrivateKey(read('enc.key'), { passphrase: 's3cret-pw' })),
    });
    const text = formatInspection([locked, open], 'enc.key');
    assert.doesNotMatch(text, /s3cret/);
    assert.throws(
      () => inspect(read('enc.key'), { source: 'enc.key', passphrase: 'zz-bad-pass-zz' }),
      refusal(
        'unauthenticated',
        /^enc\.key block 1 \(ENCRYPTED PRIVATE KEY\): cannot decrypt the private key \(wrong passphrase\?\)$/,
      ),
    );
    // Encrypted PKCS#8 in DER, and a legacy "Proc-Type: 4,ENCRYPTED" SEC1 key.
    openssl(
      'pkcs8',
      '-topk8',
      '-in',
      'enc.key',
      '-passin',
      'pass:s3cret-pw',
      '-passout',
      'pass:s3cret-pw',
      '-outform',
      'DER',
      '-out',
      'enc.der',
    );
    assert.equal((inspect(read('enc.der'), { source: 'enc.der' })[0] as InspectedKey).encrypted, true);
    assert.equal(
      (inspect(read('enc.der'), { source: 'enc.der', passphrase: 's3cret-pw' })[0] as InspectedKey).keyType,
      'ECDSA P-384',
    );
    openssl(
      'ec',
      '-in',
      'enc.key',
      '-passin',
      'pass:s3cret-pw',
      '-aes256',
      '-passout',
      'pass:s3cret-pw',
      '-out',
      'legacy.key',
    );
    assert.match(read('legacy.key').toString(), /Proc-Type: 4,ENCRYPTED/);
    assert.equal((inspect(read('legacy.key'), { source: 'legacy.key' })[0] as InspectedKey).encrypted, true);
    assert.equal(
      (inspect(read('legacy.key'), { source: 'legacy.key', passphrase: 's3cret-pw' })[0] as InspectedKey)
        .keyType,
      'ECDSA P-384',
    );
  });

  it('plain keys in every encoding, and a file mixing kinds', () => {
    const key = readPrivateKey(read('leaf.key'));
    const hash = spkiHash(key);
    openssl('ec', '-in', 'leaf.key', '-out', 'sec1.pem');
    openssl('pkey', '-in', 'leaf.key', '-outform', 'DER', '-out', 'p8.der');
    openssl('pkey', '-in', 'leaf.key', '-pubout', '-out', 'pub.pem');
    openssl('pkey', '-in', 'leaf.key', '-pubout', '-outform', 'DER', '-out', 'pub.der');
    for (const file of ['leaf.key', 'sec1.pem', 'p8.der']) {
      assert.deepEqual(
        inspect(read(file), { source: file }),
        [{ kind: 'private-key', keyType: 'ECDSA P-256', encrypted: false, publicKeySha256: hash }],
        file,
      );
    }
    for (const file of ['pub.pem', 'pub.der']) {
      assert.deepEqual(
        inspect(read(file), { source: file }),
        [{ kind: 'public-key', keyType: 'ECDSA P-256', encrypted: false, publicKeySha256: hash }],
        file,
      );
    }
    const mixed = Buffer.concat([read('leaf.pem'), read('leaf.key'), read('leaf.csr'), read('pub.pem')]);
    assert.deepEqual(
      inspect(mixed, { source: 'mixed.pem' }).map((i) => i.kind),
      ['certificate', 'private-key', 'csr', 'public-key'],
    );
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1', '-out', 'k1.key');
    assert.equal(
      (inspect(read('k1.key'), { source: 'k1.key' })[0] as InspectedKey).keyType,
      'ECDSA secp256k1 (not supported by sigil)',
    );
  });

  it('garbage is refused', () => {
    for (const garbage of [
      Buffer.from('hello, world\n'),
      Buffer.alloc(0),
      Buffer.alloc(100, 0x30),
      Buffer.of(0x30, 0x03, 0x02, 0x01, 0x01),
    ]) {
      assert.throws(() => inspect(garbage, { source: 'x' }), notRecognised);
    }
    assert.throws(
      () => inspect(Buffer.from(encodePem('SOMETHING ELSE', Buffer.of(1, 2, 3))), { source: 'x' }),
      notRecognised,
    );
    assert.throws(
      () => inspect(Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n'), { source: 'x' }),
      refusal(null, /^x: PEM block "CERTIFICATE" is not terminated/),
    );
    assert.throws(
      () => inspect(Buffer.from(encodePem('CERTIFICATE', Buffer.from('not a cert'))), { source: 'x' }),
      refusal(null, /x block 1 \(CERTIFICATE\): not a valid X\.509 certificate/),
    );
  });
});

function readDer(pemFile: string): Buffer {
  const out = execFileSync('openssl', ['req', '-in', pemFile, '-outform', 'DER'], { cwd: dir });
  return Buffer.from(out);
}

function spkiHash(key: ReturnType<typeof readPrivateKey>): string {
  const der = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return (createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g) ?? []).join(':');
}
