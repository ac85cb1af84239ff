// Where the store key comes from: SIGIL_STORE_KEY (base64, for deployments
// that keep secrets in the environment or a secret manager) or
// `<data>/store.key` (base64 text, created 0600 on first start). The file is
// refused when others can read it, like ssh refuses a loose private key.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { checkStoreKey, STORE_KEY_BYTES } from '../authority/key-encryption.ts';
import { invalid, preconditionFailed, SigilError } from '../errors.ts';
import { STORE_KEY_FILE } from '../files/data-directory-names.ts';

export const STORE_KEY_ENV = 'SIGIL_STORE_KEY';

/** A store key from its base64 text; says what is wrong without echoing it. */
export function parseStoreKey(text: string, source = STORE_KEY_ENV): Buffer {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) throw invalid(`${source} is not base64`);
  const key = Buffer.from(trimmed.replaceAll('-', '+').replaceAll('_', '/'), 'base64');
  if (key.length !== STORE_KEY_BYTES) {
    throw invalid(`${source} must hold ${STORE_KEY_BYTES} bytes (base64), got ${key.length}`);
  }
  return key;
}

export function generateStoreKey(): Buffer {
  return randomBytes(STORE_KEY_BYTES);
}

export interface LoadedStoreKey {
  readonly key: Buffer;
  /** 'environment', 'file', or 'created' (a new file was written). */
  readonly origin: 'environment' | 'file' | 'created';
}

/**
 * The store key for data directory `dataDir`: from `environment` (the value
 * of SIGIL_STORE_KEY) when given, else from `<dataDir>/store.key`, creating it
 * (0600, exclusive create so two starts cannot write different keys) if absent.
 */
export function loadStoreKey(options: { dataDir: string; environment?: string }): LoadedStoreKey {
  if (options.environment !== undefined && options.environment !== '') {
    return { key: parseStoreKey(options.environment), origin: 'environment' };
  }
  const path = join(options.dataDir, STORE_KEY_FILE);
  let created = false;
  try {
    const key = generateStoreKey();
    const fd = openSync(path, 'wx', 0o600);
    try {
      writeSync(fd, `${key.toString('base64')}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    created = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new SigilError('failed_precondition', `cannot create ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw preconditionFailed(`${path} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it`);
  }
  const key = parseStoreKey(readFileSync(path, 'utf8'), path);
  checkStoreKey(key);
  return { key, origin: created ? 'created' : 'file' };
}
