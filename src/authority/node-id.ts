// A node's ID is derived from its public key (Monogon): whoever holds the key
// is that node, a re-install with a new key is a new node, and nothing has to
// allocate IDs or keep them unique.
//
//   node id = "n" + hex(SHA-256(SubjectPublicKeyInfo DER)[0..16])
//
// 128 bits: collision-resistant far beyond any fleet (a collision needs about
// 2^64 keys), 33 characters, lower-case hex, so it is also a valid SPIFFE path
// segment and DNS label. The SPKI is re-encoded by node:crypto before hashing,
// so two encodings of one key (e.g. a compressed EC point) give one ID.
import { createHash, type KeyObject } from 'node:crypto';
import { invalid } from '../errors.ts';
import { spkiDer } from '../pki/keys.ts';

const NODE_ID = /^n[0-9a-f]{32}$/;

export function nodeIdFor(publicKey: KeyObject): string {
  return `n${createHash('sha256').update(spkiDer(publicKey)).digest().subarray(0, 16).toString('hex')}`;
}

export function isNodeId(text: string): boolean {
  return NODE_ID.test(text);
}

/** A node ID as typed by an operator; invalid() naming the expected form otherwise. */
export function parseNodeId(text: string): string {
  const id = text.trim().toLowerCase();
  if (!NODE_ID.test(id)) {
    const shown = text.length > 40 ? `${text.slice(0, 40)}…` : text;
    throw invalid(`"${shown}" is not a node ID ("n" followed by 32 hex digits)`);
  }
  return id;
}

/**
 * The enrolment record of a replica that joined with a replica token: the
 * same derivation with an "r" prefix. Replicas are recorded through the
 * store's atomic registerNode (which consumes the token exactly once) but are
 * never listed as nodes.
 */
export function replicaEnrolmentIdFor(publicKey: KeyObject): string {
  return `r${createHash('sha256').update(spkiDer(publicKey)).digest().subarray(0, 16).toString('hex')}`;
}
