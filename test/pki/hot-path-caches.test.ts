// What the Sign hot path now keeps between certificates (issue 14) changes
// nothing a certificate or a proof check says: the cRLDistributionPoints an
// Issuer reuses are those of each request (read back by openssl), a malformed
// URL is refused every time, the key identifier is still SHA-256 of the SPKI
// cut to 160 bits, and a Sign proof is checked against the caller it names
// however many callers came before.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { createRootCertificate, Issuer, keyIdentifier } from '../../src/pki/issuer.ts';
import { generateKeyPair, spkiDer, spkiSha256 } from '../../src/pki/keys.ts';
import { dnsName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { possessionFor, signChallenge, verifySignProof } from '../../src/protocol/challenges.ts';
import { refusal } from '../support/refusals.ts';

const rootKey = generateKeyPair('p256');
const root = createRootCertificate({ privateKey: rootKey.privateKey, subject: { commonName: 'root' } });

/** The CRL URLs openssl reads from a certificate. */
function crlUrls(der: Buffer): string[] {
  const text = execFileSync('openssl', ['x509', '-noout', '-ext', 'crlDistributionPoints'], {
    input: encodePem('CERTIFICATE', der),
    encoding: 'utf8',
  });
  return [...text.matchAll(/URI:(\S+)/g)].map((match) => match[1]);
}

function leaf(issuer: Issuer, crl: readonly string[]): Buffer {
  return issuer.issue({
    publicKey: generateKeyPair('p256').publicKey,
    profile: 'server',
    sans: [dnsName('leaf.example.test')],
    ttlMs: 3_600_000,
    crlDistributionPoints: crl,
  }).der;
}

test('leaves of one issuer each carry the CRL URLs of their own request, past the cached few', () => {
  const issuer = Issuer.fromIssued(root, rootKey.privateKey);
  const requests = [
    ['http://127.0.0.1:8080/crl/a.crl'],
    ['http://127.0.0.1:8080/crl/b.crl'],
    ['http://127.0.0.1:8080/crl/a.crl'],
    ['http://crl.example.test/1.crl', 'http://crl.example.test/2.crl'],
    ...Array.from({ length: 10 }, (_, i) => [`http://crl.example.test/many-${i}.crl`]),
    ['http://127.0.0.1:8080/crl/b.crl'],
    [],
  ];
  for (const crl of requests) assert.deepEqual(crlUrls(leaf(issuer, crl)), crl);
});

test('a malformed CRL URL is refused each time it is asked for, and the issuer goes on issuing', () => {
  const issuer = Issuer.fromIssued(root, rootKey.privateKey);
  for (let attempt = 0; attempt < 2; attempt++) {
    assert.throws(() => leaf(issuer, ['not a url']), refusal('invalid_argument', /URI/));
  }
  assert.deepEqual(crlUrls(leaf(issuer, ['http://crl.example.test/ok.crl'])), [
    'http://crl.example.test/ok.crl',
  ]);
});

test('the key identifier is the first 160 bits of SHA-256 over the SPKI, for every key', () => {
  for (const type of ['p256', 'p384', 'ed25519'] as const) {
    const spki = spkiDer(generateKeyPair(type).publicKey);
    const digest = createHash('sha256').update(spki).digest();
    assert.deepEqual(spkiSha256(spki), digest, type);
    assert.deepEqual(keyIdentifier(spki), digest.subarray(0, 20), type);
    assert.deepEqual(keyIdentifier(Buffer.from(spki)), digest.subarray(0, 20), `${type}, another Buffer`);
  }
});

test('a Sign proof made for one caller is refused for another, before and after 300 other callers', () => {
  const key = generateKeyPair('p256');
  const alice = 'a1'.repeat(32);
  const bob = 'b2'.repeat(32);
  const now = new Date();
  const proof = possessionFor(key.privateKey, signChallenge(alice, now));
  const check = () => {
    assert.deepEqual(spkiDer(verifySignProof(proof, alice, now)), spkiDer(key.publicKey));
    assert.deepEqual(spkiDer(verifySignProof(proof, alice.toUpperCase(), now)), spkiDer(key.publicKey));
    assert.throws(
      () => verifySignProof(proof, bob, now),
      refusal('unauthenticated', /made for another caller's certificate/),
    );
    assert.throws(
      () => verifySignProof(proof, 'not hex', now),
      refusal('invalid_argument', /fingerprint must be 32 bytes of hex/),
    );
  };
  check();
  for (let i = 0; i < 300; i++) {
    const other = createHash('sha256').update(String(i)).digest('hex');
    assert.throws(() => verifySignProof(proof, other, now), refusal('unauthenticated'));
  }
  check();
});
