import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isNodeId, nodeIdFor, parseNodeId } from '../../src/authority/node-id.ts';
import type { SigilError } from '../../src/errors.ts';
import { generateKeyPair, keysMatch, publicKeyFromSpki, spkiDer } from '../../src/pki/keys.ts';
import {
  possessionFor,
  registerChallenge,
  rejoinChallenge,
  replicaChallenge,
  signChallenge,
  verifyRegisterProof,
  verifyRejoinProof,
  verifyReplicaProof,
  verifySignProof,
} from '../../src/protocol/challenges.ts';

const key = generateKeyPair('ed25519');
const secret = Buffer.alloc(32, 7);
const fp = 'cd'.repeat(32);
const MINUTE = 60_000;

const unauthenticated = (pattern: RegExp) => (error: SigilError) => {
  assert.equal(error.code, 'unauthenticated');
  assert.match(error.message, pattern);
  return true;
};

describe('proof-of-possession challenges', () => {
  it('register proofs are bound to the token id and secret', () => {
    const proof = possessionFor(key.privateKey, registerChallenge('tn0011223344556677', secret));
    assert.ok(keysMatch(key.privateKey, verifyRegisterProof(proof, 'tn0011223344556677', secret)));
    assert.throws(
      () => verifyRegisterProof(proof, 'tn0011223344556678', secret),
      unauthenticated(/not bound to this join token/),
    );
    assert.throws(
      () => verifyRegisterProof(proof, 'tn0011223344556677', Buffer.alloc(32, 8)),
      unauthenticated(/wrong challenge/),
    );
  });

  it('replica proofs are bound to the replica id too, and differ from register proofs', () => {
    const challenge = replicaChallenge('tr0011223344556677', secret, 'r2');
    assert.notDeepEqual(challenge, registerChallenge('tr0011223344556677', secret));
    const proof = possessionFor(key.privateKey, challenge);
    verifyReplicaProof(proof, 'tr0011223344556677', secret, 'r2');
    assert.throws(
      () => verifyReplicaProof(proof, 'tr0011223344556677', secret, 'r3'),
      unauthenticated(/replica ID/),
    );
  });

  it('rejoin proofs are accepted within five minutes and refused outside', () => {
    const now = new Date();
    const proof = possessionFor(key.privateKey, rejoinChallenge(now));
    verifyRejoinProof(proof, new Date(now.getTime() + 4 * MINUTE));
    verifyRejoinProof(proof, new Date(now.getTime() - 4 * MINUTE));
    assert.throws(
      () => verifyRejoinProof(proof, new Date(now.getTime() + 10 * MINUTE)),
      unauthenticated(/stale or from the future/),
    );
    const signProof = possessionFor(key.privateKey, signChallenge(fp, now));
    assert.throws(() => verifyRejoinProof(signProof, now), unauthenticated(/wrong challenge layout/));
  });

  it("sign proofs name the caller's certificate: another caller cannot replay them", () => {
    const now = new Date();
    const proof = possessionFor(key.privateKey, signChallenge(fp, now));
    verifySignProof(proof, fp, now);
    assert.throws(
      () => verifySignProof(proof, 'ce'.repeat(32), now),
      unauthenticated(/another caller's certificate/),
    );
    assert.throws(
      () => verifySignProof(proof, fp, new Date(now.getTime() - 7 * MINUTE)),
      unauthenticated(/stale/),
    );
  });

  it('a signature by another key is refused (wrong proof)', () => {
    const other = generateKeyPair('p256');
    const challenge = registerChallenge('tn0011223344556677', secret);
    const forged = { ...possessionFor(other.privateKey, challenge), spki: spkiDer(key.publicKey) };
    assert.throws(
      () => verifyRegisterProof(forged, 'tn0011223344556677', secret),
      unauthenticated(/signature does not verify/),
    );
  });

  it('a missing proof or a malformed SPKI is invalid_argument', () => {
    assert.throws(
      () => verifyRejoinProof(undefined, new Date()),
      (error: SigilError) => error.code === 'invalid_argument',
    );
    const challenge = registerChallenge('tn0011223344556677', secret);
    const proof = { ...possessionFor(key.privateKey, challenge), spki: Buffer.from('not a key') };
    assert.throws(
      () => verifyRegisterProof(proof, 'tn0011223344556677', secret),
      /malformed SubjectPublicKeyInfo/,
    );
  });
});

describe('node IDs', () => {
  it('are derived from the public key: stable, 128 bits of hex, re-encoding-proof', () => {
    const id = nodeIdFor(key.publicKey);
    assert.match(id, /^n[0-9a-f]{32}$/);
    assert.equal(nodeIdFor(publicKeyFromSpki(spkiDer(key.publicKey))), id);
    assert.equal(nodeIdFor(key.privateKey), id, 'the same from the private half');
    assert.notEqual(nodeIdFor(generateKeyPair('ed25519').publicKey), id);
    assert.ok(isNodeId(id));
    assert.equal(parseNodeId(id.toUpperCase()), id);
    assert.throws(() => parseNodeId('n123'), /is not a node ID/);
  });
});
