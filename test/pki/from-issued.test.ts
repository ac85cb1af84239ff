// Issuer.fromIssued on a certificate this process just made reads the facts
// the encoder wrote instead of parsing the DER (cold-start path of the
// embedded CA), and still refuses what fromCertificate refuses: a key that
// does not match, a certificate that is no CA. The facts it uses are the
// ones a parse would give.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import { parseCertificate } from '../../src/pki/certificate.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { uriName } from '../../src/pki/names.ts';
import { refusal } from '../support/refusals.ts';

const rootKey = generateKeyPair('p256');
const root = createRootCertificate({
  privateKey: rootKey.privateKey,
  subject: { commonName: 'root' },
  pathLen: 1,
});

describe('Issuer.fromIssued', () => {
  test('its certificate facts are the ones parsing the DER gives', () => {
    const issuer = Issuer.fromIssued(root, rootKey.privateKey);
    const parsed = parseCertificate(Buffer.from(root.der));
    for (const field of ['serialHex', 'subject', 'issuer', 'isCa', 'pathLen', 'fingerprint'] as const) {
      assert.deepEqual(issuer.certificate[field], parsed[field], field);
    }
    assert.equal(issuer.certificate.notBefore.getTime(), parsed.notBefore.getTime());
    assert.equal(issuer.certificate.notAfter.getTime(), parsed.notAfter.getTime());
    assert.deepEqual(issuer.certificate.subjectDer, parsed.subjectDer);
    assert.deepEqual(issuer.certificate.subjectKeyId, parsed.subjectKeyId);
    assert.ok(issuer.certificate.publicKey.equals(parsed.publicKey));
  });

  test('certificates it issues chain like those of an issuer that parsed its CA', () => {
    const leafKey = generateKeyPair('p256');
    const request = {
      publicKey: leafKey.publicKey,
      profile: 'client' as const,
      subject: { commonName: 'c' },
      sans: [uriName('spiffe://example.test/c')],
      ttlMs: 60_000,
    };
    const fast = parseCertificate(Issuer.fromIssued(root, rootKey.privateKey).issue(request).der);
    const slow = parseCertificate(Issuer.fromCertificate(root.der, rootKey.privateKey).issue(request).der);
    assert.equal(fast.issuer, slow.issuer);
    assert.ok(new X509Certificate(fast.der).verify(parseCertificate(root.der).publicKey));
  });

  test('refuses a private key that does not match, and a certificate that is no CA', () => {
    const other = generateKeyPair('p256');
    assert.throws(
      () => Issuer.fromIssued(root, other.privateKey),
      refusal('failed_precondition', /does not match the issuer certificate "CN=root"/),
    );
    const leafKey = generateKeyPair('p256');
    const leaf = Issuer.fromIssued(root, rootKey.privateKey).issue({
      publicKey: leafKey.publicKey,
      profile: 'server',
      sans: [uriName('spiffe://example.test/s')],
      ttlMs: 60_000,
    });
    assert.throws(
      () => Issuer.fromIssued(leaf, leafKey.privateKey),
      refusal('failed_precondition', /is not a CA certificate/),
    );
    assert.throws(
      () => Issuer.fromIssued(root, rootKey.publicKey),
      refusal('invalid_argument', /private key/),
    );
  });
});
