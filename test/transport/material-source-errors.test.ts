// Errors from material sources are SigilErrors naming the problem (issue
// #10: an issuer certificate whose public key OpenSSL cannot decode threw a
// raw ERR_OSSL_EVP_DECODE_ERROR). Every source — StaticMaterialSource,
// MaterialProvider, FileMaterialSource, EmbeddedCA with a given CA — is fed
// damaged certificates, keys and CRLs, values of the wrong type, and a few
// hundred random corruptions; each refusal must be a SigilError, and a file
// source names the file.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SigilError } from '../../src/errors.ts';
import { createCrl } from '../../src/pki/crl.ts';
import { createRootCertificate } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { decodePem, encodePem } from '../../src/pki/pem.ts';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { FileMaterialSource } from '../../src/transport/file-source.ts';
import { MaterialProvider } from '../../src/transport/material-provider.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-material-errors-');

// A root whose key the test holds (for CRLs), an embedded CA under it, one server leaf.
const rootKeys = generateKeyPair('p256');
const root = createRootCertificate({
  privateKey: rootKeys.privateKey,
  subject: { commonName: 'material errors root' },
});
const rootPem = encodePem('CERTIFICATE', root.der);
const ca = EmbeddedCA.create({
  addresses: ['localhost'],
  ca: { certificate: rootPem, privateKey: privateKeyToPem(rootKeys.privateKey) },
});
after(() => ca.close());
const leaf = ca.issueServer();
const good: TlsMaterial = {
  certificateChain: leaf.certificateChain,
  privateKey: leaf.privateKey,
  trustBundle: ca.chainPem(),
};
const crl = encodePem(
  'X509 CRL',
  createCrl({
    issuerCertificate: root.der,
    issuerKey: rootKeys.privateKey,
    entries: [],
    crlNumber: 1n,
    nextUpdate: new Date(Date.now() + 86_400_000),
  }),
);

/** `der` with the last byte of its subjectPublicKeyInfo changed: OpenSSL parses it, but cannot decode the key. */
function damagedKeyCertificate(der: Buffer): Buffer {
  const spki = new X509Certificate(der).publicKey.export({ format: 'der', type: 'spki' });
  const at = der.indexOf(spki);
  assert.ok(at > 0);
  const bad = Buffer.from(der);
  bad[at + spki.length - 1] ^= 0x01;
  const parsed = new X509Certificate(bad);
  assert.throws(() => parsed.publicKey, { code: 'ERR_OSSL_EVP_DECODE_ERROR' }, 'the damage this test needs');
  return bad;
}

function assertSigilError(what: string, run: () => unknown, message?: RegExp): SigilError {
  try {
    run();
  } catch (error) {
    assert.ok(
      error instanceof SigilError,
      `${what}: ${error instanceof Error ? error.stack : String(error)}`,
    );
    if (message) assert.match(error.message, message, what);
    return error;
  }
  assert.fail(`${what}: accepted`);
}

async function assertSigilRejection(
  what: string,
  run: () => Promise<unknown>,
  message?: RegExp,
): Promise<void> {
  try {
    await run();
  } catch (error) {
    assert.ok(
      error instanceof SigilError,
      `${what}: ${error instanceof Error ? error.stack : String(error)}`,
    );
    if (message) assert.match(error.message, message, what);
    return;
  }
  assert.fail(`${what}: accepted`);
}

const damagedRootPem = encodePem('CERTIFICATE', damagedKeyCertificate(root.der));
const damagedLeafPem = encodePem(
  'CERTIFICATE',
  damagedKeyCertificate(decodePem(leaf.certificateChain)[0].der),
);

describe('material sources refuse bad input with SigilErrors', () => {
  test('EmbeddedCA with an issuer certificate whose key cannot be decoded (was ERR_OSSL_EVP_DECODE_ERROR)', () => {
    const error = assertSigilError(
      'EmbeddedCA.create',
      () =>
        EmbeddedCA.create({
          addresses: ['localhost'],
          ca: { certificate: damagedRootPem, privateKey: privateKeyToPem(rootKeys.privateKey) },
        }),
      /CA certificate: the certificate's public key cannot be read/,
    );
    assert.equal(error.code, 'invalid_argument');
  });

  test('StaticMaterialSource and MaterialProvider with a damaged leaf, bundle or CRL', () => {
    const cases: [string, TlsMaterial, RegExp][] = [
      [
        'leaf',
        { ...good, certificateChain: damagedLeafPem },
        /certificate chain: the certificate's public key/,
      ],
      ['bundle', { ...good, trustBundle: damagedRootPem }, /trust bundle: the certificate's public key/],
      [
        'CRL',
        { ...good, trustBundle: rootPem, crls: ['-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n'] },
        /CRL #1/,
      ],
    ];
    for (const [what, material, message] of cases) {
      assertSigilError(`static ${what}`, () => new StaticMaterialSource(material), message);
      assertSigilError(`provider ${what}`, () => new MaterialProvider(material), message);
    }
    const provider = new MaterialProvider(good);
    assertSigilError('provider.set', () => provider.set({ ...good, trustBundle: damagedRootPem }));
    assert.equal(provider.current(), good, 'a refused set() leaves the current material in place');
    assert.ok(
      new MaterialProvider({ ...good, trustBundle: rootPem, crls: [crl] }),
      'the good CRL is accepted',
    );
  });

  test('values of the wrong type from JavaScript callers', () => {
    const wrong = [
      null,
      5,
      { ...good, certificateChain: 5 },
      { ...good, privateKey: undefined },
      { ...good, trustBundle: {} },
      { ...good, crls: 'not an array' },
      { ...good, crls: [7] },
    ] as unknown as TlsMaterial[];
    for (const material of wrong) {
      assertSigilError(
        `static ${JSON.stringify(material)}`,
        () => new StaticMaterialSource(material),
        /must be/,
      );
      assertSigilError(
        `provider ${JSON.stringify(material)}`,
        () => new MaterialProvider(material),
        /must be/,
      );
    }
    assertSigilError('EmbeddedCA addresses', () =>
      EmbeddedCA.create({ addresses: [5 as unknown as string] }),
    );
    assertSigilError('EmbeddedCA addresses', () =>
      EmbeddedCA.create({ addresses: 'localhost' as unknown as string[] }),
    );
    assertSigilError('EmbeddedCA ca', () =>
      EmbeddedCA.create({
        addresses: ['x'],
        ca: { certificate: Buffer.from(rootPem) as unknown as string, privateKey: '' },
      }),
    );
  });

  test('FileMaterialSource names the file that is wrong', async () => {
    const write = (name: string, text: string) => {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    };
    const chain = write('chain.pem', good.certificateChain);
    const key = write('key.pem', good.privateKey);
    const bundle = write('bundle.pem', good.trustBundle);
    const badBundle = write('damaged-bundle.pem', damagedRootPem);
    const badKey = write(
      'damaged-key.pem',
      '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH\n-----END PRIVATE KEY-----\n',
    );
    const badCrl = write('damaged.crl', '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n');
    await assertSigilRejection(
      'damaged bundle',
      () => FileMaterialSource.open({ certificateChain: chain, privateKey: key, trustBundle: badBundle }),
      new RegExp(
        `${badBundle.replaceAll('.', '\\.')}: trust bundle: the certificate's public key cannot be read`,
      ),
    );
    await assertSigilRejection(
      'damaged key',
      () => FileMaterialSource.open({ certificateChain: chain, privateKey: badKey, trustBundle: bundle }),
      new RegExp(`${badKey.replaceAll('.', '\\.')}: private key: not a valid private key`),
    );
    await assertSigilRejection(
      'damaged CRL',
      () =>
        FileMaterialSource.open({
          certificateChain: chain,
          privateKey: key,
          trustBundle: bundle,
          crls: [badCrl],
        }),
      new RegExp(`${badCrl.replaceAll('.', '\\.')}`),
    );
    await assertSigilRejection(
      'a path that is not a string',
      () =>
        FileMaterialSource.open({
          certificateChain: 5 as unknown as string,
          privateKey: key,
          trustBundle: bundle,
        }),
      /certificateChain must be a file path/,
    );

    // A reload with a damaged file is refused naming it, and the old material keeps serving.
    const refusals: SigilError[] = [];
    const source = await FileMaterialSource.open({
      certificateChain: chain,
      privateKey: key,
      trustBundle: bundle,
      pollIntervalMs: 0,
      onError: (error) => refusals.push(error),
    });
    try {
      writeFileSync(bundle, damagedRootPem);
      assert.equal(await source.reload(), 'rejected');
      assert.equal(refusals.length, 1);
      assert.ok(refusals[0] instanceof SigilError);
      assert.match(
        refusals[0].message,
        /bundle\.pem: trust bundle: the certificate's public key cannot be read/,
      );
      assert.equal(source.current().trustBundle, good.trustBundle);
    } finally {
      source.close();
    }
  });

  test('a few hundred random corruptions of each piece: every refusal is a SigilError', () => {
    let seed = 20_250_101;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
      return seed % n;
    };
    const corrupt = (der: Buffer) => {
      const copy = Buffer.from(der);
      for (let i = 1 + random(3); i > 0; i--) copy[random(copy.length)] = random(256);
      return copy;
    };
    const leafDer = decodePem(leaf.certificateChain)[0].der;
    const keyDer = decodePem(leaf.privateKey)[0].der;
    const crlDer = decodePem(crl)[0].der;
    const attempts: [string, () => unknown][] = [];
    for (let i = 0; i < 300; i++) {
      const chain = encodePem('CERTIFICATE', corrupt(leafDer));
      const key = encodePem('PRIVATE KEY', corrupt(keyDer));
      const bundle = encodePem('CERTIFICATE', corrupt(root.der));
      const list = encodePem('X509 CRL', corrupt(crlDer));
      attempts.push(
        ['chain', () => new StaticMaterialSource({ ...good, certificateChain: chain })],
        ['key', () => new StaticMaterialSource({ ...good, privateKey: key })],
        ['bundle', () => new MaterialProvider({ ...good, trustBundle: bundle })],
        ['crl', () => new MaterialProvider({ ...good, trustBundle: rootPem, crls: [list] })],
        [
          'ca',
          () =>
            EmbeddedCA.create({
              addresses: ['x'],
              ca: { certificate: bundle, privateKey: privateKeyToPem(rootKeys.privateKey) },
            }).close(),
        ],
      );
    }
    let refused = 0;
    for (const [what, run] of attempts) {
      try {
        run();
      } catch (error) {
        refused++;
        assert.ok(
          error instanceof SigilError,
          `${what}: ${error instanceof Error ? error.stack : String(error)}`,
        );
      }
    }
    assert.ok(
      refused > attempts.length / 2,
      `only ${refused} of ${attempts.length} corruptions were refused`,
    );
  });
});
