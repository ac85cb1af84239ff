import assert from 'node:assert/strict';
import { createPublicKey, sign } from 'node:crypto';
import { describe, it } from 'node:test';
import { generateKeyPair, type KeyType, spkiDer } from '../../src/pki/keys.ts';
import {
  newChallenge,
  possessionMessage,
  proveChallenge,
  verifyPossession,
} from '../../src/pki/possession.ts';
import { refusal } from '../support/refusals.ts';

const failed = refusal('unauthenticated', /^proof of possession failed: signature does not verify/);

describe('proof of possession', () => {
  const keys = Object.fromEntries(
    (['p256', 'p384', 'ed25519', 'rsa2048'] as KeyType[]).map((type) => [type, generateKeyPair(type)]),
  );

  it('newChallenge is 32 random bytes', () => {
    const a = newChallenge();
    assert.equal(a.length, 32);
    assert.notDeepEqual(a, newChallenge());
  });

  it('possessionMessage is the domain prefix followed by the challenge', () => {
    const challenge = Buffer.alloc(16, 7);
    const message = possessionMessage(challenge);
    assert.deepEqual(
      message,
      Buffer.concat([Buffer.from('sigil proof-of-possession v1\0', 'latin1'), challenge]),
    );
  });

  for (const [type, pair] of Object.entries(keys)) {
    it(`valid proof verifies and returns the key (${type})`, () => {
      const challenge = newChallenge();
      const proof = proveChallenge(pair.privateKey, challenge);
      const key = verifyPossession(spkiDer(pair.publicKey), challenge, proof);
      assert.deepEqual(spkiDer(key), spkiDer(pair.publicKey));
    });
  }

  it('wrong key is refused', () => {
    const challenge = newChallenge();
    const proof = proveChallenge(keys.p256.privateKey, challenge);
    const other = generateKeyPair('p256');
    assert.throws(() => verifyPossession(spkiDer(other.publicKey), challenge, proof), failed);
    // Same proof, key of another type entirely.
    assert.throws(() => verifyPossession(spkiDer(keys.ed25519.publicKey), challenge, proof), failed);
  });

  it('wrong challenge is refused', () => {
    const challenge = newChallenge();
    const proof = proveChallenge(keys.p256.privateKey, challenge);
    const other = Buffer.from(challenge);
    other[0] ^= 1;
    assert.throws(() => verifyPossession(spkiDer(keys.p256.publicKey), other, proof), failed);
  });

  it('signature over the raw challenge without the domain prefix is refused', () => {
    const challenge = newChallenge();
    for (const [type, pair] of Object.entries(keys)) {
      const digest = type === 'ed25519' ? null : type === 'p384' ? 'sha384' : 'sha256';
      const raw = sign(digest, challenge, pair.privateKey);
      assert.throws(() => verifyPossession(spkiDer(pair.publicKey), challenge, raw), failed, type);
    }
  });

  it('truncated SPKI is refused as malformed', () => {
    const challenge = newChallenge();
    const proof = proveChallenge(keys.p256.privateKey, challenge);
    const spki = spkiDer(keys.p256.publicKey);
    for (const cut of [1, 10, spki.length - 1]) {
      assert.throws(
        () => verifyPossession(spki.subarray(0, cut), challenge, proof),
        refusal('invalid_argument', /^malformed SubjectPublicKeyInfo$/),
      );
    }
    // Trailing bytes are not one SPKI either.
    assert.throws(
      () => verifyPossession(Buffer.concat([spki, Buffer.of(0)]), challenge, proof),
      refusal('invalid_argument', /^malformed SubjectPublicKeyInfo$/),
    );
  });

  it('challenge and signature sizes are bounded', () => {
    const spki = spkiDer(keys.p256.publicKey);
    const proof = proveChallenge(keys.p256.privateKey, newChallenge());
    assert.throws(
      () => verifyPossession(spki, Buffer.alloc(15), proof),
      refusal('invalid_argument', /challenge/),
    );
    assert.throws(
      () => verifyPossession(spki, Buffer.alloc(1025), proof),
      refusal('invalid_argument', /challenge/),
    );
    assert.throws(
      () => verifyPossession(spki, newChallenge(), Buffer.alloc(1025)),
      refusal('invalid_argument', /signature/),
    );
    assert.throws(
      () => verifyPossession(spki, newChallenge(), Buffer.alloc(0)),
      refusal('invalid_argument', /signature/),
    );
    assert.throws(
      () => proveChallenge(keys.p256.privateKey, Buffer.alloc(8)),
      refusal('invalid_argument', /challenge/),
    );
  });

  it('garbage signature is refused, not thrown as an internal error', () => {
    const challenge = newChallenge();
    for (const pair of Object.values(keys)) {
      assert.throws(
        () => verifyPossession(spkiDer(pair.publicKey), challenge, Buffer.alloc(64, 0x30)),
        failed,
      );
    }
  });

  it('unsupported key types are refused by name', () => {
    const x25519 = createPublicKey({
      key: Buffer.from('302a300506032b656e032100' + '11'.repeat(32), 'hex'),
      format: 'der',
      type: 'spki',
    });
    assert.throws(
      () =>
        verifyPossession(x25519.export({ type: 'spki', format: 'der' }), newChallenge(), Buffer.alloc(64)),
      refusal('invalid_argument', /unsupported key type: X25519/),
    );
  });
});
