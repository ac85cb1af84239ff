// Join tokens: the one string an operator copies from `sigil token create` to
// `sigil enrol` (or to a new replica). It carries everything the newcomer
// needs to reach and trust the server before it has any certificate:
//
//   "sigil1." || base64url( u8 len || CA root fingerprint (32, SHA-256 of the root DER)
//                        || u8 len || token id (ASCII)
//                        || u8 len || secret (32 random bytes)
//                        || u8 count || count × (u8 len || server address "host:port") )
//
// Binary rather than JSON keeps it around 140 characters for one address.
// The version lives in the prefix: a future layout is "sigil2.".
//
// Token IDs are public (they appear in listings and in the token): "tn" + 16
// hex for node join tokens, "tr" + 16 hex for replica join tokens. The kind
// is part of the ID because the ID is bound into every proof, so a node token
// can never be used to admit a replica. The store keeps only SHA-256 of the
// secret; a presented secret is looked up by its public ID and compared to
// that hash in constant time (an unknown ID is compared against a dummy
// hash, so timing does not tell which IDs exist).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { invalid } from '../errors.ts';

export const TOKEN_PREFIX = 'sigil1.';
export const TOKEN_SECRET_BYTES = 32;
const FINGERPRINT_BYTES = 32;
const MAX_ADDRESSES = 16;
const MAX_TOKEN_CHARS = 8192;

export type TokenKind = 'node' | 'replica';

export interface JoinToken {
  /** Server addresses, "host:port" (IPv6 hosts in brackets). */
  readonly addresses: readonly string[];
  /** SHA-256 of the root certificate DER, lower-case hex. */
  readonly rootFingerprint: string;
  readonly id: string;
  readonly secret: Buffer;
}

const TOKEN_ID = /^t[nr][0-9a-f]{16}$/;

export function newTokenId(kind: TokenKind): string {
  return `t${kind === 'node' ? 'n' : 'r'}${randomBytes(8).toString('hex')}`;
}

export function newTokenSecret(): Buffer {
  return randomBytes(TOKEN_SECRET_BYTES);
}

/** The kind of a well-formed token ID, or null when `id` is not one. */
export function tokenKindOf(id: string): TokenKind | null {
  if (!TOKEN_ID.test(id)) return null;
  return id[1] === 'n' ? 'node' : 'replica';
}

export function hashTokenSecret(secret: Buffer): Buffer {
  return createHash('sha256').update(secret).digest();
}

// Compared against when the ID is unknown, so both paths do the same work.
const DUMMY_HASH = hashTokenSecret(randomBytes(TOKEN_SECRET_BYTES));

/** Constant-time check of a presented secret against the stored hash (or none: always false). */
export function secretMatches(secret: Buffer, storedHash: Buffer | null): boolean {
  const presented = hashTokenSecret(secret);
  const expected = storedHash && storedHash.length === presented.length ? storedHash : DUMMY_HASH;
  const equal = timingSafeEqual(presented, expected);
  return equal && expected !== DUMMY_HASH;
}

/** A "host:port" address as it goes into a token; invalid() naming it otherwise. */
export function checkServerAddress(address: string): string {
  const shown = JSON.stringify(address.length > 80 ? `${address.slice(0, 80)}…` : address);
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$/.exec(address);
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
    throw invalid(`server address ${shown} must be host:port (IPv6 in brackets, e.g. [::1]:7443)`);
  }
  return address;
}

function field(bytes: Buffer): Buffer {
  if (bytes.length > 255) throw invalid('a join token field is longer than 255 bytes');
  return Buffer.concat([Buffer.of(bytes.length), bytes]);
}

export function encodeJoinToken(token: JoinToken): string {
  if (!/^[0-9a-f]{64}$/.test(token.rootFingerprint)) {
    throw invalid('the CA fingerprint of a join token must be 32 bytes of lower-case hex');
  }
  if (tokenKindOf(token.id) === null) throw invalid('malformed token ID');
  if (token.secret.length !== TOKEN_SECRET_BYTES)
    throw invalid(`a token secret must be ${TOKEN_SECRET_BYTES} bytes`);
  if (token.addresses.length === 0 || token.addresses.length > MAX_ADDRESSES) {
    throw invalid(
      `a join token carries 1 to ${MAX_ADDRESSES} server addresses, got ${token.addresses.length}`,
    );
  }
  const body = Buffer.concat([
    field(Buffer.from(token.rootFingerprint, 'hex')),
    field(Buffer.from(token.id, 'latin1')),
    field(token.secret),
    Buffer.of(token.addresses.length),
    ...token.addresses.map((address) => field(Buffer.from(checkServerAddress(address), 'utf8'))),
  ]);
  return `${TOKEN_PREFIX}${body.toString('base64url')}`;
}

/**
 * Reads a join token. Every refusal names what is wrong (prefix, version,
 * encoding, which field) and never echoes the token, which holds a secret.
 */
export function parseJoinToken(text: string): JoinToken {
  const trimmed = text.trim();
  if (trimmed.length > MAX_TOKEN_CHARS) throw invalid('malformed join token: it is far too long');
  const version = /^sigil(\d+)\./.exec(trimmed);
  if (!version) throw invalid('malformed join token: it must start with "sigil1."');
  if (version[1] !== '1') {
    throw invalid(`join token version ${version[1]} is not supported (this sigil reads version 1)`);
  }
  const encoded = trimmed.slice(TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(encoded)) throw invalid('malformed join token: not base64url after "sigil1."');
  const body = Buffer.from(encoded, 'base64url');
  let offset = 0;
  const take = (what: string): Buffer => {
    if (offset >= body.length) throw invalid(`malformed join token: truncated before the ${what}`);
    const length = body[offset];
    if (offset + 1 + length > body.length) throw invalid(`malformed join token: the ${what} is truncated`);
    const out = body.subarray(offset + 1, offset + 1 + length);
    offset += 1 + length;
    return out;
  };
  const fingerprint = take('CA fingerprint');
  if (fingerprint.length !== FINGERPRINT_BYTES) {
    throw invalid(
      `malformed join token: the CA fingerprint is ${fingerprint.length} bytes; expected ${FINGERPRINT_BYTES} (SHA-256)`,
    );
  }
  const id = take('token ID').toString('latin1');
  if (tokenKindOf(id) === null) throw invalid('malformed join token: the token ID is malformed');
  const secret = Buffer.from(take('secret'));
  if (secret.length !== TOKEN_SECRET_BYTES) {
    throw invalid(
      `malformed join token: the secret is ${secret.length} bytes; expected ${TOKEN_SECRET_BYTES}`,
    );
  }
  if (offset >= body.length) throw invalid('malformed join token: truncated before the server addresses');
  const count = body[offset++];
  if (count === 0 || count > MAX_ADDRESSES) {
    throw invalid(`malformed join token: it must carry 1 to ${MAX_ADDRESSES} server addresses, not ${count}`);
  }
  const addresses: string[] = [];
  for (let i = 0; i < count; i++) {
    const address = take(`server address #${i + 1}`).toString('utf8');
    try {
      addresses.push(checkServerAddress(address));
    } catch {
      throw invalid(`malformed join token: server address #${i + 1} is not host:port`);
    }
  }
  if (offset !== body.length)
    throw invalid('malformed join token: unexpected bytes after the server addresses');
  return { addresses, rootFingerprint: fingerprint.toString('hex'), id, secret };
}
