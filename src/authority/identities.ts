// The SPIFFE IDs of sigil's own principals and how a verified peer maps to a
// role. OpenSSL has verified the chain before any of this runs. A role comes
// from who issued the leaf, never from its name alone: only a leaf the
// deployment's own CAs signed directly is read by its SPIFFE ID,
//   spiffe://<td>/admin/<name>        admin: everything
//   spiffe://<td>/node/<node-id>      node: renew itself, revoke its own certificates
//   spiffe://<td>/replica/<replica>   replica: another server replica
// and a leaf with an admitted delegation grant is a delegate (what its chain
// grants; see delegations.ts), whatever SPIFFE ID it carries. Anything else
// (other trust domains, workload certificates from Sign) is 'other'.
import { invalid } from '../errors.ts';
import { parseSpiffeId, spiffeId } from '../pki/names.ts';
import { isNodeId } from './node-id.ts';

export type Role = 'admin' | 'node' | 'replica' | 'delegate' | 'other';

export interface Caller {
  /** The verified client certificate's SPIFFE ID; '' when it has none. */
  readonly spiffeId: string;
  /** Serial of the client certificate: lower-case hex, no leading zeros. */
  readonly serial: string;
  /** SHA-256 of the client certificate DER, lower-case hex. */
  readonly fingerprint: string;
  readonly role: Role;
  /** The admin name, node ID, replica ID or delegate key ("/alice/carol"); null for 'other'. */
  readonly name: string | null;
}

/** What the services know about a verified peer (see transport/peer-identity.ts). */
export interface VerifiedPeer {
  readonly spiffeId: string | null;
  readonly serial: string;
  readonly fingerprint: string;
  /** Signed directly by one of the deployment's CAs (checked by signature). */
  readonly issuedByDeployment: boolean;
  /** The store key of an admitted delegate ("/alice/carol"); null for anyone else. */
  readonly delegateKey: string | null;
}

const REPLICA_ID = /^[A-Za-z0-9._-]{1,48}$/;
export const BOOTSTRAP_ADMIN_NAME = 'admin';

export function adminSpiffeId(trustDomain: string, name: string): string {
  return spiffeId(trustDomain, 'admin', name);
}

export function nodeSpiffeId(trustDomain: string, nodeId: string): string {
  return spiffeId(trustDomain, 'node', nodeId);
}

export function replicaSpiffeId(trustDomain: string, replicaId: string): string {
  return spiffeId(trustDomain, 'replica', replicaId);
}

/** A replica ID: 1 to 48 letters, digits, ".", "-" or "_" (it becomes a SPIFFE path segment). */
export function parseReplicaId(text: string): string {
  if (!REPLICA_ID.test(text) || text === '.' || text === '..') {
    const shown = text.length > 60 ? `${text.slice(0, 60)}…` : text;
    throw invalid(
      `invalid replica ID ${JSON.stringify(shown)}: use 1 to 48 letters, digits, ".", "-" or "_"`,
    );
  }
  return text;
}

/** Role of a verified peer in trust domain `trustDomain`. */
export function callerFrom(peer: VerifiedPeer, trustDomain: string): Caller {
  const base = { spiffeId: peer.spiffeId ?? '', serial: peer.serial, fingerprint: peer.fingerprint };
  const other: Caller = { ...base, role: 'other', name: null };
  if (peer.delegateKey !== null) return { ...base, role: 'delegate', name: peer.delegateKey };
  // A name binds only when the deployment issued it: a delegate can sign any name at all.
  if (!peer.issuedByDeployment || !peer.spiffeId) return other;
  let path: string;
  try {
    const parsed = parseSpiffeId(peer.spiffeId);
    if (parsed.trustDomain !== trustDomain) return other;
    path = parsed.path;
  } catch {
    return other;
  }
  const segments = path.split('/').slice(1);
  if (segments.length !== 2) return other;
  const [kind, name] = segments;
  if (kind === 'admin') return { ...base, role: 'admin', name };
  if (kind === 'node' && isNodeId(name)) return { ...base, role: 'node', name };
  if (kind === 'replica' && REPLICA_ID.test(name)) return { ...base, role: 'replica', name };
  return other;
}

/**
 * The caller for commands run on the server's own data directory (`sigil ca
 * export-root`, recovery): whoever can read store.key can already do
 * anything, so it acts as an admin.
 */
export function localOperator(trustDomain: string): Caller {
  return {
    spiffeId: adminSpiffeId(trustDomain, 'local'),
    serial: '',
    fingerprint: '',
    role: 'admin',
    name: 'local',
  };
}
