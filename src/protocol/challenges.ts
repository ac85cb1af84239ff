// What a proof of possession signs, per call. The server keeps no challenge
// state: each layout binds the proof to what it is for, so a proof made for
// one purpose, token or caller is useless for any other, and the timestamped
// ones are only accepted for a few minutes. (possession.ts then domain
// separates the signed bytes from every other signature the key makes.)
//
//   Register     SHA-256("sigil register v1\0" || token id || 0x00 || token secret)   32 bytes
//   JoinReplica  SHA-256("sigil replica v1\0" || token id || 0x00 || token secret
//                        || 0x00 || replica id)                                       32 bytes
//   Rejoin       "sigil rejoin v1\0" || unix minute (u64 BE) || 16 random bytes       40 bytes
//   Sign/Renew   "sigil sign v1\0" || SHA-256 of the caller's certificate (32)
//                || unix minute (u64 BE) || 16 random bytes                           70 bytes
//
// Register and JoinReplica need no timestamp: the proof is worthless without
// the token secret, and the token is consumed. Rejoin proves only "I hold the
// enrolled key" and is accepted within ±5 minutes. Sign/Renew proofs name the
// caller's own certificate, so nobody else can replay one.
import { createHash, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import { invalid, unauthenticated } from '../errors.ts';
import { canonicalFingerprint } from '../pki/fingerprint.ts';
import { spkiDer } from '../pki/keys.ts';
import { proveChallenge, verifyPossession } from '../pki/possession.ts';

/** Proofs of possession carrying a timestamp are accepted this far either side of now. */
export const CHALLENGE_WINDOW_MS = 5 * 60_000;

/** A proof of possession as it travels (proto ProofOfPossession). */
export interface Possession {
  readonly spki: Buffer;
  readonly challenge: Buffer;
  readonly signature: Buffer;
}

const REGISTER = Buffer.from('sigil register v1\0', 'latin1');
const REPLICA = Buffer.from('sigil replica v1\0', 'latin1');
const REJOIN = Buffer.from('sigil rejoin v1\0', 'latin1');
const SIGN = Buffer.from('sigil sign v1\0', 'latin1');
const NUL = Buffer.of(0);
const RANDOM_BYTES = 16;
const MINUTE_MS = 60_000;

function sha256(...parts: Buffer[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

function minuteBytes(now: Date): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(Math.floor(now.getTime() / MINUTE_MS)));
  return out;
}

export function registerChallenge(tokenId: string, tokenSecret: Buffer): Buffer {
  return sha256(REGISTER, Buffer.from(tokenId, 'utf8'), NUL, tokenSecret);
}

export function replicaChallenge(tokenId: string, tokenSecret: Buffer, replicaId: string): Buffer {
  return sha256(REPLICA, Buffer.from(tokenId, 'utf8'), NUL, tokenSecret, NUL, Buffer.from(replicaId, 'utf8'));
}

export function rejoinChallenge(now: Date = new Date()): Buffer {
  return Buffer.concat([REJOIN, minuteBytes(now), randomBytes(RANDOM_BYTES)]);
}

/** `callerFingerprint`: SHA-256 of the caller's current certificate, hex (as PeerIdentity reports it). */
export function signChallenge(callerFingerprint: string, now: Date = new Date()): Buffer {
  return Buffer.concat([
    SIGN,
    fingerprintBytes(callerFingerprint),
    minuteBytes(now),
    randomBytes(RANDOM_BYTES),
  ]);
}

function fingerprintBytes(hex: string): Buffer {
  const clean = canonicalFingerprint(hex);
  if (!/^[0-9a-f]{64}$/.test(clean))
    throw invalid('a certificate fingerprint must be 32 bytes of hex (SHA-256)');
  return Buffer.from(clean, 'hex');
}

// A Sign caller sends many proofs with one certificate: its fingerprint's bytes
// are kept (a pure function of the text; a few hundred callers at most, then it starts over).
const callerFingerprints = new Map<string, Buffer>();
const MAX_CALLER_FINGERPRINTS = 256;

function callerFingerprintBytes(hex: string): Buffer {
  let bytes = callerFingerprints.get(hex);
  if (bytes === undefined) {
    bytes = fingerprintBytes(hex);
    if (callerFingerprints.size >= MAX_CALLER_FINGERPRINTS) callerFingerprints.clear();
    callerFingerprints.set(hex, bytes);
  }
  return bytes;
}

/** The proof a client sends: its SPKI, the challenge and a signature made with `privateKey`. */
export function possessionFor(privateKey: KeyObject, challenge: Buffer): Possession {
  return { spki: spkiDer(privateKey), challenge, signature: proveChallenge(privateKey, challenge) };
}

function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function checkWindow(challenge: Buffer, offset: number, now: Date, what: string): void {
  const minute = Number(challenge.readBigUInt64BE(offset));
  const skewMs = Math.abs(minute * MINUTE_MS - now.getTime());
  // The minute is floored, so allow one extra minute on top of the window.
  if (skewMs > CHALLENGE_WINDOW_MS + MINUTE_MS) {
    throw unauthenticated(
      `${what} proof of possession is stale or from the future (its timestamp is more than 5 minutes from the server's clock)`,
    );
  }
}

function requirePossession(possession: Possession | undefined, what: string): Possession {
  if (!possession?.spki || !possession.challenge || !possession.signature) {
    throw invalid(`${what} needs a proof of possession (spki, challenge and signature)`);
  }
  return possession;
}

/** Checks a Register proof; returns the proven public key. */
export function verifyRegisterProof(
  possession: Possession | undefined,
  tokenId: string,
  tokenSecret: Buffer,
): KeyObject {
  const proof = requirePossession(possession, 'register');
  if (!sameBytes(proof.challenge, registerChallenge(tokenId, tokenSecret))) {
    throw unauthenticated('register proof of possession is not bound to this join token (wrong challenge)');
  }
  return verifyPossession(proof.spki, proof.challenge, proof.signature);
}

/** Checks a JoinReplica proof; returns the proven public key of the new intermediate. */
export function verifyReplicaProof(
  possession: Possession | undefined,
  tokenId: string,
  tokenSecret: Buffer,
  replicaId: string,
): KeyObject {
  const proof = requirePossession(possession, 'join replica');
  if (!sameBytes(proof.challenge, replicaChallenge(tokenId, tokenSecret, replicaId))) {
    throw unauthenticated(
      'join replica proof of possession is not bound to this join token and replica ID (wrong challenge)',
    );
  }
  return verifyPossession(proof.spki, proof.challenge, proof.signature);
}

/** Checks a Rejoin proof; returns the proven public key. */
export function verifyRejoinProof(possession: Possession | undefined, now: Date): KeyObject {
  const proof = requirePossession(possession, 'rejoin');
  const c = proof.challenge;
  if (c.length !== REJOIN.length + 8 + RANDOM_BYTES || !sameBytes(c.subarray(0, REJOIN.length), REJOIN)) {
    throw unauthenticated(
      'rejoin proof of possession has the wrong challenge layout (expected "sigil rejoin v1")',
    );
  }
  checkWindow(c, REJOIN.length, now, 'rejoin');
  return verifyPossession(proof.spki, proof.challenge, proof.signature);
}

/** Checks a Sign/Renew proof made for the caller with certificate fingerprint `callerFingerprint`. */
export function verifySignProof(
  possession: Possession | undefined,
  callerFingerprint: string,
  now: Date,
): KeyObject {
  const proof = requirePossession(possession, 'sign');
  const c = proof.challenge;
  if (c.length !== SIGN.length + 32 + 8 + RANDOM_BYTES || !sameBytes(c.subarray(0, SIGN.length), SIGN)) {
    throw unauthenticated(
      'sign proof of possession has the wrong challenge layout (expected "sigil sign v1")',
    );
  }
  const expected = callerFingerprintBytes(callerFingerprint);
  if (!sameBytes(c.subarray(SIGN.length, SIGN.length + 32), expected)) {
    throw unauthenticated("sign proof of possession was made for another caller's certificate");
  }
  checkWindow(c, SIGN.length + 32, now, 'sign');
  return verifyPossession(proof.spki, proof.challenge, proof.signature);
}
