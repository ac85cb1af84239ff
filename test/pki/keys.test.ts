import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSecretKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ErrorCode } from '../../src/errors.ts';
import {
  describeKeyType,
  generateKeyPair,
  KEY_TYPES,
  type KeyType,
  keysMatch,
  keyTypeOf,
  parseKeyType,
  privateKeyToDer,
  privateKeyToPem,
  publicKeyFromSpki,
  publicKeyToPem,
  readPrivateKey,
  readPublicKey,
  spkiDer,
} from '../../src/pki/keys.ts';
import { decodePem, encodePem } from '../../src/pki/pem.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

const PASS = 'correct horse battery staple';

let dir: string;
const path = (name: string) => join(dir, name);
const openssl = (...args: string[]): Buffer =>
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
const file = (name: string): Buffer => readFileSync(path(name));
/** The SPKI DER openssl derives from a key file: the reference our spkiDer must match. */
const opensslSpki = (name: string, ...extra: string[]): Buffer =>
  openssl('pkey', '-in', name, ...extra, '-pubout', '-outform', 'DER');

const generated = new Map<KeyType, { privateKey: KeyObject; publicKey: KeyObject }>();

const refused = (fn: () => unknown, code: ErrorCode, pattern: RegExp) =>
  assertThrowsRefusal(fn, code, pattern, (error) => {
    assert.ok(!error.message.includes(PASS), 'message does not contain the passphrase');
    assert.ok(!error.message.includes('BEGIN'), 'message does not contain key material');
  });

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sigil-keys-'));
  openssl('genpkey', '-algorithm', 'ed25519', '-out', 'ed25519.pem');
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384', '-out', 'p384.pem');
  openssl('ecparam', '-genkey', '-name', 'prime256v1', '-out', 'ec-params.pem');
  openssl('ec', '-in', 'ec-params.pem', '-out', 'sec1.pem');
  openssl('ec', '-in', 'ec-params.pem', '-outform', 'DER', '-out', 'sec1.der');
  openssl('ec', '-in', 'ec-params.pem', '-aes256', '-passout', `pass:${PASS}`, '-out', 'sec1-legacy-enc.pem');
  openssl('genrsa', '-traditional', '-out', 'rsa-pkcs1.pem', '2048');
  openssl('rsa', '-in', 'rsa-pkcs1.pem', '-traditional', '-outform', 'DER', '-out', 'rsa-pkcs1.der');
  openssl(
    'rsa',
    '-in',
    'rsa-pkcs1.pem',
    '-traditional',
    '-aes256',
    '-passout',
    `pass:${PASS}`,
    '-out',
    'rsa-legacy-enc.pem',
  );
  openssl('rsa', '-in', 'rsa-pkcs1.pem', '-RSAPublicKey_out', '-out', 'rsa-pub-pkcs1.pem');
  openssl('pkey', '-in', 'p384.pem', '-outform', 'DER', '-out', 'p384.der');
  openssl('pkey', '-in', 'p384.pem', '-pubout', '-out', 'p384-pub.pem');
  openssl('pkey', '-in', 'p384.pem', '-pubout', '-outform', 'DER', '-out', 'p384-pub.der');
  openssl(
    'pkcs8',
    '-topk8',
    '-v2',
    'aes-256-cbc',
    '-in',
    'ed25519.pem',
    '-passout',
    `pass:${PASS}`,
    '-out',
    'ed25519-enc.pem',
  );
  openssl(
    'pkcs8',
    '-topk8',
    '-v2',
    'aes-256-cbc',
    '-in',
    'ec-params.pem',
    '-passout',
    `pass:${PASS}`,
    '-outform',
    'DER',
    '-out',
    'p256-enc.der',
  );
  openssl('ecparam', '-genkey', '-name', 'secp521r1', '-out', 'p521.pem');
  openssl('pkey', '-in', 'p521.pem', '-pubout', '-outform', 'DER', '-out', 'p521-pub.der');
  openssl('genrsa', '-out', 'rsa1024.pem', '1024');
  openssl(
    'req',
    '-x509',
    '-new',
    '-key',
    'ec-params.pem',
    '-subj',
    '/CN=not a key',
    '-days',
    '1',
    '-out',
    'cert.pem',
  );
  openssl('x509', '-in', 'cert.pem', '-outform', 'DER', '-out', 'cert.der');
  for (const type of KEY_TYPES) generated.set(type, generateKeyPair(type)); // RSA 4096 once, here
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('parseKeyType', () => {
  test('accepts every alias, case-insensitively', () => {
    const cases: [string, KeyType][] = [
      ['p256', 'p256'],
      ['ECDSA-P256', 'p256'],
      ['P-256', 'p256'],
      ['prime256v1', 'p256'],
      ['EC', 'p256'],
      ['p384', 'p384'],
      ['P-384', 'p384'],
      ['secp384r1', 'p384'],
      ['Ed25519', 'ed25519'],
      ['rsa', 'rsa2048'],
      ['RSA2048', 'rsa2048'],
      ['rsa-2048', 'rsa2048'],
      ['rsa3072', 'rsa3072'],
      ['rsa4096', 'rsa4096'],
    ];
    for (const [text, type] of cases) assert.equal(parseKeyType(text), type, text);
  });

  test('refuses an unknown key type naming it and the choices', () => {
    refused(
      () => parseKeyType('p521'),
      'invalid_argument',
      /^unknown key type "p521" \(expected one of p256, p384, ed25519, rsa2048, rsa3072, rsa4096\)$/,
    );
    refused(() => parseKeyType('rsa1024'), 'invalid_argument', /unknown key type "rsa1024"/);
  });
});

describe('generateKeyPair, keyTypeOf, describeKeyType', () => {
  test('generates every key type and keyTypeOf recognises both halves', () => {
    for (const type of KEY_TYPES) {
      const pair = generated.get(type)!;
      assert.equal(keyTypeOf(pair.privateKey), type);
      assert.equal(keyTypeOf(pair.publicKey), type);
      assert.equal(pair.privateKey.type, 'private');
      assert.equal(pair.publicKey.type, 'public');
    }
  });

  test('RSA keys use the public exponent 65537', () => {
    for (const type of ['rsa2048', 'rsa3072', 'rsa4096'] as const) {
      assert.equal(generated.get(type)!.publicKey.asymmetricKeyDetails?.publicExponent, 65537n);
    }
  });

  test('describes every key type', () => {
    assert.deepEqual(
      KEY_TYPES.map((t) => describeKeyType(t)),
      ['ECDSA P-256', 'ECDSA P-384', 'Ed25519', 'RSA 2048', 'RSA 3072', 'RSA 4096'],
    );
  });

  test('refuses ECDSA P-521', () => {
    refused(
      () => keyTypeOf(generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey),
      'invalid_argument',
      /unsupported key type: ECDSA P-521/,
    );
  });

  test('refuses secp256k1', () => {
    refused(
      () => keyTypeOf(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey),
      'invalid_argument',
      /unsupported key type: ECDSA secp256k1/,
    );
  });

  test('refuses RSA 1024 and odd RSA sizes', () => {
    refused(
      () => keyTypeOf(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey),
      'invalid_argument',
      /unsupported key type: RSA 1024/,
    );
    refused(
      () => keyTypeOf(generateKeyPairSync('rsa', { modulusLength: 2056 }).publicKey),
      'invalid_argument',
      /unsupported key type: RSA 2056/,
    );
  });

  test('refuses Ed448, X25519, DSA and RSA-PSS-restricted keys', () => {
    refused(
      () => keyTypeOf(generateKeyPairSync('ed448').publicKey),
      'invalid_argument',
      /unsupported key type: Ed448/,
    );
    refused(
      () => keyTypeOf(generateKeyPairSync('x25519').publicKey),
      'invalid_argument',
      /unsupported key type: X25519/,
    );
    refused(
      () => keyTypeOf(generateKeyPairSync('dsa', { modulusLength: 1024, divisorLength: 160 }).publicKey),
      'invalid_argument',
      /unsupported key type: DSA/,
    );
    refused(
      () => keyTypeOf(generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).publicKey),
      'invalid_argument',
      /unsupported key type: RSA-PSS/,
    );
  });

  test('refuses a secret key', () => {
    refused(() => keyTypeOf(createSecretKey(Buffer.alloc(32))), 'invalid_argument', /secret/);
  });
});

describe('readPrivateKey with keys written by openssl', () => {
  const cases: { name: string; file: string; type: KeyType; passphrase?: string }[] = [
    { name: 'PKCS#8 Ed25519 (genpkey)', file: 'ed25519.pem', type: 'ed25519' },
    { name: 'PKCS#8 P-384 (genpkey)', file: 'p384.pem', type: 'p384' },
    { name: 'SEC1 with EC PARAMETERS (ecparam -genkey)', file: 'ec-params.pem', type: 'p256' },
    { name: 'SEC1 without parameters', file: 'sec1.pem', type: 'p256' },
    { name: 'SEC1 DER', file: 'sec1.der', type: 'p256' },
    {
      name: 'SEC1 with legacy encryption headers',
      file: 'sec1-legacy-enc.pem',
      type: 'p256',
      passphrase: PASS,
    },
    { name: 'PKCS#1 RSA (genrsa -traditional)', file: 'rsa-pkcs1.pem', type: 'rsa2048' },
    { name: 'PKCS#1 DER', file: 'rsa-pkcs1.der', type: 'rsa2048' },
    {
      name: 'PKCS#1 with legacy encryption headers',
      file: 'rsa-legacy-enc.pem',
      type: 'rsa2048',
      passphrase: PASS,
    },
    { name: 'PKCS#8 DER', file: 'p384.der', type: 'p384' },
    {
      name: 'encrypted PKCS#8 (pkcs8 -topk8 -v2 aes-256-cbc)',
      file: 'ed25519-enc.pem',
      type: 'ed25519',
      passphrase: PASS,
    },
    { name: 'encrypted PKCS#8 DER', file: 'p256-enc.der', type: 'p256', passphrase: PASS },
  ];
  for (const c of cases) {
    test(`reads ${c.name} with the public key openssl derives`, () => {
      const key = readPrivateKey(file(c.file), { passphrase: c.passphrase, source: c.file });
      assert.equal(key.type, 'private');
      assert.equal(keyTypeOf(key), c.type);
      const passin = c.passphrase === undefined ? [] : ['-passin', `pass:${c.passphrase}`];
      assert.deepEqual(spkiDer(key), opensslSpki(c.file, ...passin));
    });
  }

  test('reads PEM given as a string', () => {
    const key = readPrivateKey(file('p384.pem').toString());
    assert.equal(keyTypeOf(key), 'p384');
  });
});

describe('readPrivateKey refusals', () => {
  test('refuses a wrong passphrase for encrypted PKCS#8 PEM', () => {
    refused(
      () => readPrivateKey(file('ed25519-enc.pem'), { passphrase: 'wrong', source: 'ed.pem' }),
      'unauthenticated',
      /^wrong passphrase for ed\.pem$/,
    );
  });

  test('refuses a wrong passphrase for encrypted PKCS#8 DER', () => {
    refused(
      () => readPrivateKey(file('p256-enc.der'), { passphrase: 'wrong', source: 'k.der' }),
      'unauthenticated',
      /^wrong passphrase for k\.der$/,
    );
  });

  test('refuses a wrong passphrase for a legacy encrypted PKCS#1 key', () => {
    refused(
      () => readPrivateKey(file('rsa-legacy-enc.pem'), { passphrase: 'wrong', source: 'rsa.key' }),
      'unauthenticated',
      /^wrong passphrase for rsa\.key$/,
    );
  });

  test('refuses an encrypted PKCS#8 PEM without a passphrase', () => {
    refused(
      () => readPrivateKey(file('ed25519-enc.pem'), { source: 'ed.pem' }),
      'invalid_argument',
      /^ed\.pem is encrypted; a passphrase is required$/,
    );
  });

  test('refuses an encrypted PKCS#8 DER without a passphrase', () => {
    refused(
      () => readPrivateKey(file('p256-enc.der')),
      'invalid_argument',
      /^input is encrypted; a passphrase is required$/,
    );
  });

  test('refuses a legacy encrypted key without a passphrase', () => {
    refused(
      () => readPrivateKey(file('sec1-legacy-enc.pem'), { source: 'ec.key' }),
      'invalid_argument',
      /^ec\.key is encrypted/,
    );
  });

  test('refuses garbage text', () => {
    refused(
      () => readPrivateKey('hello world', { source: 'notes.txt' }),
      'invalid_argument',
      /^no private key found in notes\.txt$/,
    );
  });

  test('refuses garbage bytes', () => {
    refused(
      () => readPrivateKey(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]), { source: 'x.der' }),
      'invalid_argument',
      /^x\.der: not a valid private key$/,
    );
    refused(
      () => readPrivateKey(Buffer.from([0xde, 0xad, 0xbe, 0xef])),
      'invalid_argument',
      /^input: not a valid private key$/,
    );
  });

  test('refuses a PEM block of garbage labelled PRIVATE KEY', () => {
    refused(
      () => readPrivateKey(encodePem('PRIVATE KEY', Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]))),
      'invalid_argument',
      /not a valid private key/,
    );
  });

  test('refuses empty input', () => {
    refused(
      () => readPrivateKey(Buffer.alloc(0), { source: 'empty.key' }),
      'invalid_argument',
      /^no private key found in empty\.key/,
    );
    refused(() => readPrivateKey(''), 'invalid_argument', /^no private key found in input/);
  });

  test('refuses a certificate PEM instead of a key, saying what it found', () => {
    refused(
      () => readPrivateKey(file('cert.pem'), { source: 'cert.pem' }),
      'invalid_argument',
      /^no private key found in cert\.pem \(found CERTIFICATE\)$/,
    );
  });

  test('refuses a certificate DER instead of a key', () => {
    refused(
      () => readPrivateKey(file('cert.der'), { source: 'cert.der' }),
      'invalid_argument',
      /^cert\.der: not a valid private key$/,
    );
  });

  test('refuses a public key given as a private key', () => {
    refused(
      () => readPrivateKey(file('p384-pub.pem'), { source: 'pub.pem' }),
      'invalid_argument',
      /no private key found in pub\.pem \(found PUBLIC KEY\)/,
    );
    refused(
      () => readPrivateKey(file('p384-pub.der'), { source: 'pub.der' }),
      'invalid_argument',
      /pub\.der: not a valid private key/,
    );
  });

  test('refuses an unsupported curve (secp521r1)', () => {
    refused(
      () => readPrivateKey(file('p521.pem'), { source: 'p521.pem' }),
      'invalid_argument',
      /^p521\.pem: unsupported key type: ECDSA P-521/,
    );
  });

  test('refuses an RSA 1024 key', () => {
    refused(
      () => readPrivateKey(file('rsa1024.pem'), { source: 'old.key' }),
      'invalid_argument',
      /^old\.key: unsupported key type: RSA 1024/,
    );
  });

  test('refuses a file with two private keys', () => {
    const two = Buffer.concat([file('p384.pem'), file('ed25519.pem')]);
    refused(
      () => readPrivateKey(two, { source: 'two.pem' }),
      'invalid_argument',
      /two\.pem contains 2 private keys/,
    );
  });

  test('refuses DER with trailing bytes', () => {
    refused(
      () => readPrivateKey(Buffer.concat([file('p384.der'), Buffer.of(0)])),
      'invalid_argument',
      /not a valid private key/,
    );
  });

  test('refuses a damaged PEM block, naming the source', () => {
    const broken = file('p384.pem').toString().replace('-----END PRIVATE KEY-----', '');
    refused(
      () => readPrivateKey(broken, { source: 'broken.pem' }),
      'invalid_argument',
      /^broken\.pem: PEM block "PRIVATE KEY" is not terminated/,
    );
  });
});

describe('writing keys', () => {
  for (const type of KEY_TYPES) {
    test(`${type} round-trips through PKCS#8 PEM and openssl reads it`, () => {
      const { privateKey, publicKey } = generated.get(type)!;
      const pem = privateKeyToPem(privateKey);
      assert.deepEqual(
        decodePem(pem).map((b) => b.label),
        ['PRIVATE KEY'],
      );
      const back = readPrivateKey(pem);
      assert.ok(keysMatch(back, publicKey));
      writeFileSync(path(`ours-${type}.pem`), pem);
      assert.deepEqual(opensslSpki(`ours-${type}.pem`), spkiDer(publicKey));
    });

    test(`${type} round-trips through encrypted PKCS#8 PEM and openssl reads it with the passphrase`, () => {
      const { privateKey, publicKey } = generated.get(type)!;
      const pem = privateKeyToPem(privateKey, PASS);
      assert.deepEqual(
        decodePem(pem).map((b) => b.label),
        ['ENCRYPTED PRIVATE KEY'],
      );
      const back = readPrivateKey(pem, { passphrase: PASS });
      assert.ok(keysMatch(back, publicKey));
      writeFileSync(path(`ours-enc-${type}.pem`), pem);
      assert.deepEqual(opensslSpki(`ours-enc-${type}.pem`, '-passin', `pass:${PASS}`), spkiDer(publicKey));
      const info = openssl('asn1parse', '-in', `ours-enc-${type}.pem`).toString();
      assert.match(info, /PBES2/);
      assert.match(info, /aes-256-cbc/);
    });
  }

  test('PKCS#8 DER round-trips and matches openssl', () => {
    const { privateKey, publicKey } = generated.get('p256')!;
    const der = privateKeyToDer(privateKey);
    assert.ok(keysMatch(readPrivateKey(der), publicKey));
    writeFileSync(path('ours.der'), der);
    assert.deepEqual(opensslSpki('ours.der'), spkiDer(publicKey));
  });

  test('publicKeyToPem writes SPKI openssl reads, from a public or a private key', () => {
    const { privateKey, publicKey } = generated.get('ed25519')!;
    const pem = publicKeyToPem(publicKey);
    assert.equal(publicKeyToPem(privateKey), pem);
    writeFileSync(path('ours-pub.pem'), pem);
    assert.deepEqual(openssl('pkey', '-pubin', '-in', 'ours-pub.pem', '-outform', 'DER'), spkiDer(publicKey));
  });

  test('refuses to write a public key as a private key', () => {
    const { publicKey } = generated.get('p256')!;
    refused(() => privateKeyToPem(publicKey), 'invalid_argument', /expected a private key, got a public key/);
    refused(() => privateKeyToDer(publicKey), 'invalid_argument', /expected a private key/);
  });

  test('refuses an empty passphrase', () => {
    refused(
      () => privateKeyToPem(generated.get('p256')!.privateKey, ''),
      'invalid_argument',
      /empty passphrase/,
    );
  });
});

describe('readPublicKey', () => {
  test('reads SPKI PEM and DER written by openssl', () => {
    const expected = file('p384-pub.der');
    assert.deepEqual(spkiDer(readPublicKey(file('p384-pub.pem'))), expected);
    assert.deepEqual(spkiDer(readPublicKey(file('p384-pub.der'))), expected);
  });

  test('reads a PKCS#1 RSA PUBLIC KEY', () => {
    const key = readPublicKey(file('rsa-pub-pkcs1.pem'));
    assert.equal(keyTypeOf(key), 'rsa2048');
    assert.deepEqual(spkiDer(key), opensslSpki('rsa-pkcs1.pem'));
  });

  test('returns the public half of a private key (PEM and DER)', () => {
    for (const name of ['ec-params.pem', 'rsa-pkcs1.der', 'sec1.der', 'p384.der']) {
      const key = readPublicKey(file(name));
      assert.equal(key.type, 'public', name);
      assert.deepEqual(spkiDer(key), opensslSpki(name), name);
    }
  });

  test('refuses a certificate', () => {
    refused(
      () => readPublicKey(file('cert.pem'), { source: 'c.pem' }),
      'invalid_argument',
      /^no public key found in c\.pem \(found CERTIFICATE\)$/,
    );
    refused(
      () => readPublicKey(file('cert.der'), { source: 'c.der' }),
      'invalid_argument',
      /^c\.der: not a valid public key$/,
    );
  });

  test('refuses garbage', () => {
    refused(() => readPublicKey('nothing here'), 'invalid_argument', /^no public key found in input$/);
    refused(() => readPublicKey(Buffer.from([0x30, 0x00])), 'invalid_argument', /not a valid public key/);
  });

  test('refuses an encrypted private key, asking for the passphrase', () => {
    refused(
      () => readPublicKey(file('ed25519-enc.pem'), { source: 'e.pem' }),
      'invalid_argument',
      /e\.pem is encrypted/,
    );
    refused(
      () => readPublicKey(file('p256-enc.der'), { source: 'e.der' }),
      'invalid_argument',
      /e\.der is encrypted/,
    );
  });

  test('refuses an unsupported curve', () => {
    refused(
      () => readPublicKey(file('p521-pub.der'), { source: 'p521' }),
      'invalid_argument',
      /^p521: unsupported key type: ECDSA P-521/,
    );
  });
});

describe('spkiDer, publicKeyFromSpki, keysMatch', () => {
  test('spkiDer is the same for both halves and cached per KeyObject', () => {
    const { privateKey, publicKey } = generated.get('p256')!;
    assert.deepEqual(spkiDer(privateKey), spkiDer(publicKey));
    assert.equal(spkiDer(publicKey), spkiDer(publicKey)); // same Buffer object
  });

  test('publicKeyFromSpki reads openssl SPKI DER for every generated type', () => {
    assert.equal(keyTypeOf(publicKeyFromSpki(file('p384-pub.der'))), 'p384');
    for (const type of KEY_TYPES) {
      const der = spkiDer(generated.get(type)!.publicKey);
      assert.equal(keyTypeOf(publicKeyFromSpki(der)), type);
    }
  });

  test('publicKeyFromSpki refuses garbage', () => {
    refused(
      () => publicKeyFromSpki(Buffer.from('not der')),
      'invalid_argument',
      /^malformed SubjectPublicKeyInfo$/,
    );
    refused(() => publicKeyFromSpki(Buffer.alloc(0)), 'invalid_argument', /^malformed SubjectPublicKeyInfo$/);
  });

  test('publicKeyFromSpki refuses a well-framed SPKI with a corrupt key', () => {
    const der = Buffer.from(file('p384-pub.der'));
    der[der.length - 40] ^= 0xff; // the point is no longer on the curve
    refused(() => publicKeyFromSpki(der), 'invalid_argument', /^malformed SubjectPublicKeyInfo$/);
  });

  test('publicKeyFromSpki refuses trailing bytes', () => {
    refused(
      () => publicKeyFromSpki(Buffer.concat([file('p384-pub.der'), Buffer.of(0, 0)])),
      'invalid_argument',
      /malformed/,
    );
  });

  test('publicKeyFromSpki refuses a PKCS#8 private key', () => {
    refused(() => publicKeyFromSpki(file('p384.der')), 'invalid_argument', /malformed/);
  });

  test('publicKeyFromSpki refuses an unsupported curve', () => {
    refused(
      () => publicKeyFromSpki(file('p521-pub.der')),
      'invalid_argument',
      /unsupported key type: ECDSA P-521/,
    );
  });

  test('keysMatch tells matching and non-matching pairs apart', () => {
    const a = generated.get('p256')!;
    const b = generateKeyPair('p256');
    const rsa = generated.get('rsa2048')!;
    assert.equal(keysMatch(a.privateKey, a.publicKey), true);
    assert.equal(keysMatch(a.privateKey, b.publicKey), false);
    assert.equal(keysMatch(a.privateKey, rsa.publicKey), false);
    assert.equal(keysMatch(rsa.privateKey, publicKeyFromSpki(spkiDer(rsa.publicKey))), true);
  });

  test('keysMatch refuses a public key in the private key position', () => {
    const a = generated.get('p256')!;
    refused(() => keysMatch(a.publicKey, a.publicKey), 'invalid_argument', /expected a private key/);
  });
});

test('publicKeyFromSpki: the SPKI kept for P-256 and Ed25519 keys is exactly what OpenSSL exports', () => {
  for (const type of ['p256', 'ed25519'] as const) {
    const der = generateKeyPair(type).publicKey.export({ type: 'spki', format: 'der' });
    const key = publicKeyFromSpki(der);
    assert.equal(keyTypeOf(key), type);
    assert.deepEqual(spkiDer(key), key.export({ type: 'spki', format: 'der' }));
    der.fill(0); // the caller's buffer may be reused; the key's SPKI must not change with it
    assert.deepEqual(spkiDer(key), key.export({ type: 'spki', format: 'der' }));
  }
});
