// CA private keys are kept in the store encrypted, so a copy of the database
// (a backup, a PostgreSQL dump, a replica's disk) holds no usable key. The
// store key lives beside the data (`<data>/store.key`, 0600) or in
// SIGIL_STORE_KEY; see server/store-key.ts. Each replica has its own store key, so
// only the replica that owns a CA record can decrypt it.
//
// Blob layout, version 1:
//   0x01 || nonce (12) || tag (16) || AES-256-GCM(PKCS#8 DER)
// with AAD = "sigil ca key v1\0" || CA id. Binding the CA id means a blob
// copied into another record (say the root key pasted over an intermediate)
// fails to decrypt instead of silently signing as the wrong CA.
import { createCipheriv, createDecipheriv, createPrivateKey, type KeyObject, randomBytes } from 'node:crypto';
import { invalid, SigilError } from '../errors.ts';
import { privateKeyToDer } from '../pki/keys.ts';

export const STORE_KEY_BYTES = 32;
const VERSION = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + NONCE_BYTES + TAG_BYTES;
const AAD_PREFIX = Buffer.from('sigil ca key v1\0', 'latin1');

/** Throws unless `storeKey` is exactly 32 bytes (the key itself never appears in the message). */
export function checkStoreKey(storeKey: Buffer): void {
  if (!Buffer.isBuffer(storeKey) || storeKey.length !== STORE_KEY_BYTES) {
    throw invalid(`the store key must be ${STORE_KEY_BYTES} bytes, got ${storeKey?.length ?? 0}`);
  }
}

function aad(caId: string): Buffer {
  return Buffer.concat([AAD_PREFIX, Buffer.from(caId, 'utf8')]);
}

/** Encrypts a CA's private key for the store record `caId`. */
export function encryptCaKey(privateKey: KeyObject, storeKey: Buffer, caId: string): Buffer {
  checkStoreKey(storeKey);
  const plaintext = privateKeyToDer(privateKey);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', storeKey, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad(caId));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  plaintext.fill(0);
  return Buffer.concat([Buffer.of(VERSION), nonce, cipher.getAuthTag(), body]);
}

/**
 * Decrypts the key of CA record `caId`. A wrong store key, a damaged blob and
 * a blob moved from another record all give the same failed_precondition,
 * which says what to check and nothing about the key.
 */
export function decryptCaKey(blob: Buffer, storeKey: Buffer, caId: string): KeyObject {
  checkStoreKey(storeKey);
  const refuse = (cause?: unknown) =>
    new SigilError(
      'failed_precondition',
      `cannot decrypt the private key of CA "${caId}": wrong store key (store.key or SIGIL_STORE_KEY), or the record was altered`,
      { cause },
    );
  if (blob.length <= HEADER_BYTES || blob[0] !== VERSION) throw refuse();
  const nonce = blob.subarray(1, 1 + NONCE_BYTES);
  const tag = blob.subarray(1 + NONCE_BYTES, HEADER_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', storeKey, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad(caId));
  decipher.setAuthTag(tag);
  let plaintext: Buffer;
  try {
    plaintext = Buffer.concat([decipher.update(blob.subarray(HEADER_BYTES)), decipher.final()]);
  } catch {
    throw refuse(); // no cause: OpenSSL's message adds nothing and we say nothing about the key
  }
  try {
    return createPrivateKey({ key: plaintext, format: 'der', type: 'pkcs8' });
  } catch {
    throw refuse();
  } finally {
    plaintext.fill(0);
  }
}
