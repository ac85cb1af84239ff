// Key generation, key reading and writing, and the one list of key types sigil
// accepts. Everything is node:crypto; no other key code exists in sigil. Every
// key that enters through here is checked against KEY_TYPES, so the rest of
// the code can switch on a KeyType instead of re-checking curves and sizes.
// Error messages name the source of a key but never its material or passphrase.

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  timingSafeEqual,
} from 'node:crypto';
import { invalid, SigilError } from '../errors.ts';
import { decodePem, encodePem, looksLikePem, type PemBlock } from './pem.ts';

export type KeyType = 'p256' | 'p384' | 'ed25519' | 'rsa2048' | 'rsa3072' | 'rsa4096';

export const KEY_TYPES: readonly KeyType[] = Object.freeze([
  'p256',
  'p384',
  'ed25519',
  'rsa2048',
  'rsa3072',
  'rsa4096',
]);

const SUPPORTED = 'supported: ECDSA P-256, ECDSA P-384, Ed25519, RSA 2048, RSA 3072, RSA 4096';

const ALIASES: ReadonlyMap<string, KeyType> = new Map<string, KeyType>([
  ['p256', 'p256'],
  ['ecdsa-p256', 'p256'],
  ['p-256', 'p256'],
  ['prime256v1', 'p256'],
  ['ec', 'p256'],
  ['p384', 'p384'],
  ['p-384', 'p384'],
  ['secp384r1', 'p384'],
  ['ed25519', 'ed25519'],
  ['rsa', 'rsa2048'],
  ['rsa2048', 'rsa2048'],
  ['rsa-2048', 'rsa2048'],
  ['rsa3072', 'rsa3072'],
  ['rsa4096', 'rsa4096'],
]);

/** A key type as a user types it (flag, config file); aliases are case-insensitive. */
export function parseKeyType(text: string): KeyType {
  const type = ALIASES.get(text.trim().toLowerCase());
  if (type === undefined) {
    throw invalid(`unknown key type "${text}" (expected one of ${KEY_TYPES.join(', ')})`);
  }
  return type;
}

/** A fresh key pair; RSA keys use the public exponent 65537. */
export function generateKeyPair(type: KeyType): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (type) {
    case 'p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'p384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' });
    case 'ed25519':
      return generateKeyPairSync('ed25519');
    case 'rsa2048':
    case 'rsa3072':
    case 'rsa4096':
      return generateKeyPairSync('rsa', { modulusLength: Number(type.slice(3)), publicExponent: 0x10001 });
    default:
      throw invalid(`unknown key type "${String(type)}" (expected one of ${KEY_TYPES.join(', ')})`);
  }
}

const CURVE_NAMES: Readonly<Record<string, string>> = {
  secp521r1: 'ECDSA P-521',
  secp256k1: 'ECDSA secp256k1',
  secp224r1: 'ECDSA P-224',
};

const OTHER_NAMES: Readonly<Record<string, string>> = {
  ed448: 'Ed448',
  x25519: 'X25519 (a key-agreement key)',
  x448: 'X448 (a key-agreement key)',
  dsa: 'DSA',
  dh: 'Diffie-Hellman (a key-agreement key)',
  'rsa-pss': 'RSA-PSS-restricted RSA',
};

/**
 * The KeyType of a public or private key, or an error naming what the key is
 * when sigil does not support it (other curves, short or odd-sized RSA, …).
 */
// Reading asymmetricKeyDetails crosses into C++ each time; the issuer asks per certificate.
const keyTypeCache = new WeakMap<KeyObject, KeyType>();

export function keyTypeOf(key: KeyObject): KeyType {
  let type = keyTypeCache.get(key);
  if (type === undefined) {
    type = classifyKey(key);
    keyTypeCache.set(key, type);
  }
  return type;
}

function classifyKey(key: KeyObject): KeyType {
  if (key.type === 'secret') throw invalid('unsupported key: a secret (symmetric) key, not a key pair');
  const kind = key.asymmetricKeyType ?? 'unknown';
  const details = key.asymmetricKeyDetails ?? {};
  if (kind === 'ec') {
    const curve = details.namedCurve ?? 'unknown';
    if (curve === 'prime256v1') return 'p256';
    if (curve === 'secp384r1') return 'p384';
    throw invalid(`unsupported key type: ${CURVE_NAMES[curve] ?? `ECDSA on curve ${curve}`} (${SUPPORTED})`);
  }
  if (kind === 'ed25519') return 'ed25519';
  if (kind === 'rsa') {
    const bits = details.modulusLength ?? 0;
    if (bits === 2048) return 'rsa2048';
    if (bits === 3072) return 'rsa3072';
    if (bits === 4096) return 'rsa4096';
    throw invalid(`unsupported key type: RSA ${bits} (${SUPPORTED})`);
  }
  throw invalid(`unsupported key type: ${OTHER_NAMES[kind] ?? kind} (${SUPPORTED})`);
}

/** The human name of a key type, as shown by `sigil` commands. */
export function describeKeyType(type: KeyType): string {
  switch (type) {
    case 'p256':
      return 'ECDSA P-256';
    case 'p384':
      return 'ECDSA P-384';
    case 'ed25519':
      return 'Ed25519';
    case 'rsa2048':
      return 'RSA 2048';
    case 'rsa3072':
      return 'RSA 3072';
    case 'rsa4096':
      return 'RSA 4096';
    default:
      return String(type);
  }
}

// --- DER framing -------------------------------------------------------------
// OpenSSL's decoders ignore trailing bytes after a structure; sigil refuses them
// so that a key file means exactly one thing. These helpers only walk TLV
// headers; the contents are parsed by OpenSSL.

interface Tlv {
  tag: number;
  contentStart: number;
  end: number;
}

function tlvAt(der: Buffer, offset: number): Tlv | undefined {
  if (offset + 2 > der.length) return undefined;
  const tag = der[offset];
  const first = der[offset + 1];
  let length: number;
  let contentStart: number;
  if (first < 0x80) {
    length = first;
    contentStart = offset + 2;
  } else {
    const count = first & 0x7f;
    if (count === 0 || count > 4 || offset + 2 + count > der.length) return undefined;
    if (der[offset + 2] === 0) return undefined; // not minimal
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[offset + 2 + i];
    if (length < 0x80) return undefined; // not minimal
    contentStart = offset + 2 + count;
  }
  const end = contentStart + length;
  if (end > der.length) return undefined;
  return { tag, contentStart, end };
}

/** True when `der` is exactly one SEQUENCE with nothing after it. */
function isOneSequence(der: Buffer): boolean {
  const outer = tlvAt(der, 0);
  return outer !== undefined && outer.tag === 0x30 && outer.end === der.length;
}

/** SEQUENCE { SEQUENCE (AlgorithmIdentifier), BIT STRING } and nothing else. */
function isSpkiShape(der: Buffer): boolean {
  const outer = tlvAt(der, 0);
  if (outer === undefined || outer.tag !== 0x30 || outer.end !== der.length) return false;
  const algorithm = tlvAt(der, outer.contentStart);
  if (algorithm === undefined || algorithm.tag !== 0x30) return false;
  const key = tlvAt(der, algorithm.end);
  return key !== undefined && key.tag === 0x03 && key.end === outer.end;
}

// --- reading -----------------------------------------------------------------

const PRIVATE_KEY_LABELS: ReadonlyMap<string, 'pkcs8' | 'pkcs1' | 'sec1'> = new Map([
  ['PRIVATE KEY', 'pkcs8'],
  ['ENCRYPTED PRIVATE KEY', 'pkcs8'],
  ['RSA PRIVATE KEY', 'pkcs1'],
  ['EC PRIVATE KEY', 'sec1'],
] as const);

const PUBLIC_KEY_LABELS: ReadonlyMap<string, 'spki' | 'pkcs1'> = new Map([
  ['PUBLIC KEY', 'spki'],
  ['RSA PUBLIC KEY', 'pkcs1'],
] as const);

// errors.ts's unauthenticated() takes no cause; keep OpenSSL's error as the cause for debugging.
function wrongPassphrase(source: string, cause: unknown): SigilError {
  return new SigilError('unauthenticated', `wrong passphrase for ${source}`, { cause });
}

const notAPrivateKey = (source: string): string => `${source}: not a valid private key`;

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

/** Re-throws a SigilError from a helper with the source named in front. */
function withSource<T>(source: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (error instanceof SigilError) {
      throw new SigilError(error.code, `${source}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

function pemBlocks(data: Buffer | string, source: string): PemBlock[] {
  const text = typeof data === 'string' ? data : data.toString('latin1');
  return withSource(source, () => decodePem(text));
}

function foundLabels(blocks: PemBlock[]): string {
  if (blocks.length === 0) return '';
  return ` (found ${[...new Set(blocks.map((b) => b.label))].join(', ')})`;
}

function isLegacyEncrypted(block: PemBlock): boolean {
  return /ENCRYPTED/i.test(block.headers?.['Proc-Type'] ?? '');
}

/** Rebuilds a block with its RFC 1421 headers so OpenSSL can decrypt it itself. */
function legacyPem(block: PemBlock): string {
  const headers = Object.entries(block.headers ?? {}).map(([name, value]) => `${name}: ${value}\n`);
  const body = block.der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n');
  return `-----BEGIN ${block.label}-----\n${headers.join('')}\n${body}-----END ${block.label}-----\n`;
}

function decodePrivateBlock(block: PemBlock, source: string, passphrase: string | undefined): KeyObject {
  const encrypted = block.label === 'ENCRYPTED PRIVATE KEY' || isLegacyEncrypted(block);
  if (encrypted && passphrase === undefined)
    throw invalid(`${source} is encrypted; a passphrase is required`);
  if (isLegacyEncrypted(block)) {
    try {
      return createPrivateKey({ key: legacyPem(block), format: 'pem', passphrase });
    } catch (error) {
      throw wrongPassphrase(source, error);
    }
  }
  if (!isOneSequence(block.der)) throw invalid(notAPrivateKey(source));
  const type = PRIVATE_KEY_LABELS.get(block.label) ?? 'pkcs8';
  try {
    return createPrivateKey({ key: block.der, format: 'der', type, passphrase });
  } catch (error) {
    // With PBES2/AES-CBC a wrong passphrase almost always fails the padding
    // check ("bad decrypt"); the rare wrong key with valid padding then fails
    // to parse, which is still best explained by the passphrase.
    if (encrypted) throw wrongPassphrase(source, error);
    throw invalid(notAPrivateKey(source), error);
  }
}

function decodePrivateDer(der: Buffer, source: string, passphrase: string | undefined): KeyObject {
  if (!isOneSequence(der)) throw invalid(notAPrivateKey(source));
  let firstError: unknown;
  for (const type of ['pkcs8', 'pkcs1', 'sec1'] as const) {
    try {
      return createPrivateKey({ key: der, format: 'der', type, passphrase });
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ERR_MISSING_PASSPHRASE')
        throw invalid(`${source} is encrypted; a passphrase is required`);
      if (code === 'ERR_OSSL_BAD_DECRYPT') throw wrongPassphrase(source, error);
      firstError ??= error;
    }
  }
  throw invalid(notAPrivateKey(source), firstError);
}

/**
 * Reads one private key from PEM (PKCS#8, encrypted PKCS#8, PKCS#1 including
 * legacy OpenSSL encryption headers, SEC1 with or without an EC PARAMETERS
 * block) or DER (PKCS#8, encrypted PKCS#8, PKCS#1, SEC1), and refuses key
 * types sigil does not support. `source` (a file name, say) is used in errors.
 */
export function readPrivateKey(
  data: Buffer | string,
  options: { passphrase?: string; source?: string } = {},
): KeyObject {
  const source = options.source ?? 'input';
  const { passphrase } = options;
  let key: KeyObject;
  if (typeof data === 'string' || looksLikePem(data)) {
    const blocks = pemBlocks(data, source);
    const keys = blocks.filter((block) => PRIVATE_KEY_LABELS.has(block.label));
    if (keys.length === 0) throw invalid(`no private key found in ${source}${foundLabels(blocks)}`);
    if (keys.length > 1)
      throw invalid(`${source} contains ${keys.length} private keys; expected exactly one`);
    key = decodePrivateBlock(keys[0], source, passphrase);
  } else {
    if (data.length === 0) throw invalid(`no private key found in ${source} (it is empty)`);
    key = decodePrivateDer(data, source, passphrase);
  }
  if (key.type !== 'private') throw invalid(notAPrivateKey(source));
  withSource(source, () => keyTypeOf(key));
  return key;
}

function decodePublicDer(der: Buffer, source: string): KeyObject {
  if (!isOneSequence(der)) throw invalid(`${source}: not a valid public key`);
  if (isSpkiShape(der)) {
    try {
      return createPublicKey({ key: der, format: 'der', type: 'spki' });
    } catch (error) {
      throw invalid(`${source}: not a valid public key`, error);
    }
  }
  // Not SPKI: a PKCS#1 RSA public key, or a private key whose public half we return.
  try {
    return createPublicKey({ key: der, format: 'der', type: 'pkcs1' });
  } catch {
    // fall through
  }
  try {
    return createPublicKey(decodePrivateDer(der, source, undefined));
  } catch (error) {
    // Passphrase errors say more than "not a public key"; keep them.
    if (error instanceof SigilError && error.message === notAPrivateKey(source)) {
      throw invalid(`${source}: not a valid public key`, error.cause);
    }
    throw error;
  }
}

/**
 * Reads a public key: SPKI ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY") in PEM
 * or DER. A private key is accepted too and its public half returned, so a
 * command can be pointed at whichever file the user has.
 */
export function readPublicKey(data: Buffer | string, options: { source?: string } = {}): KeyObject {
  const source = options.source ?? 'input';
  let key: KeyObject;
  if (typeof data === 'string' || looksLikePem(data)) {
    const blocks = pemBlocks(data, source);
    const publics = blocks.filter((block) => PUBLIC_KEY_LABELS.has(block.label));
    if (publics.length > 1)
      throw invalid(`${source} contains ${publics.length} public keys; expected exactly one`);
    if (publics.length === 1) {
      const block = publics[0];
      const type = PUBLIC_KEY_LABELS.get(block.label) ?? 'spki';
      if (!isOneSequence(block.der) || (type === 'spki' && !isSpkiShape(block.der))) {
        throw invalid(`${source}: not a valid public key`);
      }
      try {
        key = createPublicKey({ key: block.der, format: 'der', type });
      } catch (error) {
        throw invalid(`${source}: not a valid public key`, error);
      }
    } else if (blocks.some((block) => PRIVATE_KEY_LABELS.has(block.label))) {
      key = createPublicKey(readPrivateKey(data, { source }));
    } else {
      throw invalid(`no public key found in ${source}${foundLabels(blocks)}`);
    }
  } else {
    if (data.length === 0) throw invalid(`no public key found in ${source} (it is empty)`);
    key = decodePublicDer(data, source);
  }
  if (key.type !== 'public') key = createPublicKey(key);
  withSource(source, () => keyTypeOf(key));
  return key;
}

// --- writing -----------------------------------------------------------------

function requirePrivate(key: KeyObject): void {
  if (key.type !== 'private') throw invalid(`expected a private key, got a ${key.type} key`);
}

/**
 * PKCS#8 PEM. With a passphrase, encrypted PKCS#8 (PBES2: PBKDF2 as OpenSSL
 * defaults it, AES-256-CBC), which every current tool reads.
 */
export function privateKeyToPem(key: KeyObject, passphrase?: string): string {
  requirePrivate(key);
  if (passphrase === undefined) return key.export({ type: 'pkcs8', format: 'pem' }) as string;
  if (passphrase.length === 0) throw invalid('refusing to encrypt a private key with an empty passphrase');
  return key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }) as string;
}

/** Unencrypted PKCS#8 DER. */
export function privateKeyToDer(key: KeyObject): Buffer {
  requirePrivate(key);
  return key.export({ type: 'pkcs8', format: 'der' });
}

/** SPKI PEM of a public key, or of a private key's public half. */
export function publicKeyToPem(key: KeyObject): string {
  return encodePem('PUBLIC KEY', spkiDer(key));
}

const spkiCache = new WeakMap<KeyObject, Buffer>();

/**
 * SubjectPublicKeyInfo DER of a public key, or of a private key's public half.
 * Cached per KeyObject because the issuer calls it for every certificate; the
 * returned Buffer is shared, so callers must treat it as read-only.
 */
export function spkiDer(key: KeyObject): Buffer {
  const cached = spkiCache.get(key);
  if (cached !== undefined) return cached;
  if (key.type === 'secret') throw invalid('expected a public or private key, got a secret key');
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  const der = publicKey.export({ type: 'spki', format: 'der' });
  spkiCache.set(key, der);
  return der;
}

const spkiDigests = new WeakMap<Buffer, Buffer>();

/**
 * SHA-256 of a SubjectPublicKeyInfo DER, cached per Buffer: the subject key
 * identifier and the revoked-keys hash are both made from it, so a Sign
 * hashes the key once when both ask with spkiDer()'s shared Buffer. The
 * result is shared too: read-only.
 */
export function spkiSha256(spki: Buffer): Buffer {
  let digest = spkiDigests.get(spki);
  if (digest === undefined) {
    digest = createHash('sha256').update(spki).digest();
    spkiDigests.set(spki, digest);
  }
  return digest;
}

/**
 * The public key in a SubjectPublicKeyInfo (from a CSR or certificate), refused
 * unless it is one well-framed SPKI of a supported key type.
 */
export function publicKeyFromSpki(der: Buffer): KeyObject {
  if (!isSpkiShape(der)) throw invalid('malformed SubjectPublicKeyInfo');
  let key: KeyObject;
  try {
    // The same DER as a PEM string: Node's options-object path brand-checks
    // the object with exceptions and costs 2-5x as much (Sign/enrolment hot path).
    key = createPublicKey(
      `-----BEGIN PUBLIC KEY-----\n${der.toString('base64')}\n-----END PUBLIC KEY-----\n`,
    );
  } catch (error) {
    throw invalid('malformed SubjectPublicKeyInfo', error);
  }
  const known = KNOWN_SPKI_PREFIXES.find(
    (p) => der.length === p.length && der.subarray(0, p.prefix.length).equals(p.prefix),
  );
  if (known) {
    keyTypeCache.set(key, known.type);
    // These encodings are canonical (uncompressed P-256 point, raw Ed25519),
    // so the input is what exporting would produce: keep a copy, skip the export.
    spkiCache.set(key, Buffer.from(der));
  } else keyTypeOf(key);
  return key;
}

// P-256 and Ed25519 SPKIs have one fixed encoding each: the algorithm
// identifier bytes and the total length determine the key type, and OpenSSL
// has already accepted the key above. Recognising them skips a ~65 µs
// asymmetricKeyDetails call on the enrolment and Sign hot paths.
const KNOWN_SPKI_PREFIXES: readonly { type: KeyType; length: number; prefix: Buffer }[] = [
  {
    type: 'p256',
    length: 91,
    prefix: Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex'),
  },
  { type: 'ed25519', length: 44, prefix: Buffer.from('302a300506032b6570032100', 'hex') },
];

/**
 * True when `publicKey` is the public half of `privateKey`. Compares SPKI DER in
 * constant time: the public key is not secret, but this is a check callers use
 * on attacker-supplied keys and there is no reason to leak where they differ.
 */
export function keysMatch(privateKey: KeyObject, publicKey: KeyObject): boolean {
  requirePrivate(privateKey);
  const a = spkiDer(privateKey);
  const b = spkiDer(publicKey);
  return a.length === b.length && timingSafeEqual(a, b);
}
