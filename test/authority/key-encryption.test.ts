import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { decryptCaKey, encryptCaKey } from '../../src/authority/key-encryption.ts';
import type { SigilError } from '../../src/errors.ts';
import { generateKeyPair, keysMatch, privateKeyToDer } from '../../src/pki/keys.ts';
import { generateStoreKey, loadStoreKey, parseStoreKey } from '../../src/server/store-key.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-store-key-');

const refused = refusal(
  'failed_precondition',
  /^cannot decrypt the private key of CA "[^"]+": wrong store key/,
);

describe('CA key encryption at rest', () => {
  const { privateKey, publicKey } = generateKeyPair('p256');
  const storeKey = generateStoreKey();

  it('round-trips a key for its own record, and the blob holds no plaintext', () => {
    const blob = encryptCaKey(privateKey, storeKey, 'replica:r1:1');
    assert.ok(keysMatch(decryptCaKey(blob, storeKey, 'replica:r1:1'), publicKey));
    assert.ok(!blob.includes(privateKeyToDer(privateKey).subarray(-32)));
    assert.notDeepEqual(blob, encryptCaKey(privateKey, storeKey, 'replica:r1:1'), 'a fresh nonce each time');
  });

  it('the wrong store key is refused without details', () => {
    const blob = encryptCaKey(privateKey, storeKey, 'root');
    const wrong = generateStoreKey();
    assert.throws(
      () => decryptCaKey(blob, wrong, 'root'),
      (error: SigilError) => {
        refused(error);
        assert.ok(
          !error.message.includes(wrong.toString('hex')) && !error.message.includes(wrong.toString('base64')),
        );
        assert.equal(error.cause, undefined);
        return true;
      },
    );
  });

  it('a blob swapped into another record (different AAD) is refused', () => {
    const rootBlob = encryptCaKey(privateKey, storeKey, 'root');
    assert.throws(() => decryptCaKey(rootBlob, storeKey, 'replica:r1:1'), refused);
  });

  it('a damaged or truncated blob is refused', () => {
    const blob = encryptCaKey(privateKey, storeKey, 'root');
    const flipped = Buffer.from(blob);
    flipped[flipped.length - 1] ^= 1;
    assert.throws(() => decryptCaKey(flipped, storeKey, 'root'), refused);
    assert.throws(() => decryptCaKey(blob.subarray(0, 20), storeKey, 'root'), refused);
    const version = Buffer.from(blob);
    version[0] = 2;
    assert.throws(() => decryptCaKey(version, storeKey, 'root'), refused);
  });

  it('a store key that is not 32 bytes is refused', () => {
    assert.throws(
      () => encryptCaKey(privateKey, Buffer.alloc(16), 'root'),
      /store key must be 32 bytes, got 16/,
    );
  });
});

describe('the store key source', () => {
  it('is created 0600 in the data directory and read back unchanged', () => {
    const data = join(dir, 'a');
    mkdirSync(data);
    const first = loadStoreKey({ dataDir: data });
    assert.equal(first.origin, 'created');
    assert.equal(statSync(join(data, 'store.key')).mode & 0o777, 0o600);
    const second = loadStoreKey({ dataDir: data });
    assert.equal(second.origin, 'file');
    assert.deepEqual(second.key, first.key);
  });

  it('SIGIL_STORE_KEY wins over the file, and a bad one is refused without echoing it', () => {
    const key = generateStoreKey();
    const loaded = loadStoreKey({ dataDir: dir, environment: key.toString('base64') });
    assert.equal(loaded.origin, 'environment');
    assert.deepEqual(loaded.key, key);
    assert.throws(() => parseStoreKey('c2hvcnQ='), /SIGIL_STORE_KEY must hold 32 bytes \(base64\), got 5/);
    assert.throws(
      () => parseStoreKey('not base64!'),
      (error: Error) => {
        assert.match(error.message, /^SIGIL_STORE_KEY is not base64$/);
        return true;
      },
    );
  });

  it('a store.key readable by others is refused', () => {
    const data = join(dir, 'loose');
    mkdirSync(data);
    writeFileSync(join(data, 'store.key'), `${generateStoreKey().toString('base64')}\n`);
    chmodSync(join(data, 'store.key'), 0o644);
    assert.throws(() => loadStoreKey({ dataDir: data }), /is readable by others \(mode 644\); run chmod 600/);
    assert.ok(readFileSync(join(data, 'store.key'), 'utf8').length > 0, 'left as it was');
  });
});
