// Who is calling the node's Workloads service, and what it may touch.
//
// Two kinds of caller are served, decided by who issued the leaf (never by
// its names alone, see transport/peer-identity.ts):
//   - an admin: a leaf the deployment's CAs signed directly whose SPIFFE ID
//     is spiffe://<td>/admin/<name>; owner key "" (its own workloads are
//     "//web") and it sees every workload;
//   - an admitted delegate (a delegation's identity, or a command
//     certificate): MtlsServer admitted its chain before the call arrived;
//     owner key "/" + subtree ("/alice/carol"), its effective policy decides.
// Everyone else (nodes, replicas, workload certificates) is refused.
//
// Names on the wire are relative to the caller: "web" is the caller's own
// workload (`${owner}//web`); "carol//web" names one beneath it, in the
// sub-owner "carol". A key outside the caller's subtree is answered exactly
// like a key that does not exist.
import type * as grpc from '@grpc/grpc-js';
import { invalid, notFound, SigilError } from '../errors.ts';
import { isDnsLabel } from '../pki/delegation-names.ts';
import { parseSpiffeId } from '../pki/names.ts';
import type { Permission, Policy } from '../pki/policy-extension.ts';
import { readPresentedChain } from '../protocol/chain-metadata.ts';
import { type PeerCall, peerIdentity } from '../transport/peer-identity.ts';

export type WorkloadPermission = Extract<
  Permission,
  'info' | 'create' | 'destroy' | 'console' | 'log' | 'stats' | 'block'
>;

export interface WorkloadCaller {
  readonly kind: 'admin' | 'delegate';
  /** "" for an admin, "/alice/carol" for Alice's Carol. */
  readonly ownerKey: string;
  /** The effective policy; null for an admin (everything). */
  readonly policy: Policy | null;
  /** The leaf as the handshake verified it (DER). */
  readonly leaf: Buffer;
  /** What it presented in sigil-chain-bin, the leaf's issuer first. */
  readonly presented: readonly Buffer[];
  /** What revokes it (the admitted chain's links); empty for an admin. */
  readonly revocationIds: readonly string[];
  /** Its SPIFFE ID, for logs and messages. */
  readonly identity: string;
}

/** A workload or owner name: one DNS label. */
export function checkLabel(name: string, what: string): string {
  if (!isDnsLabel(name)) {
    const shown = JSON.stringify(name.length > 70 ? `${name.slice(0, 70)}…` : name);
    throw invalid(`${what} ${shown}: use one DNS label (a-z, 0-9, inner '-', at most 63 characters)`);
  }
  return name;
}

/** The caller of a call on the node's Workloads service; PERMISSION_DENIED for anyone else. */
export function workloadCallerOf(
  call: PeerCall & { readonly metadata: grpc.Metadata },
  trustDomain: string,
): WorkloadCaller {
  const peer = peerIdentity(call);
  const leaf = peer.chain[0];
  const identity = peer.spiffeId ?? peer.subject;
  if (peer.delegate !== null) {
    return {
      kind: 'delegate',
      ownerKey: `/${peer.delegate.subtree.join('/')}`,
      policy: peer.delegate.effective,
      leaf,
      presented: readPresentedChain(call.metadata),
      revocationIds: peer.delegate.revocationIds,
      identity,
    };
  }
  if (peer.issuedBy === 'deployment' && peer.spiffeId !== null && isAdmin(peer.spiffeId, trustDomain)) {
    return { kind: 'admin', ownerKey: '', policy: null, leaf, presented: [], revocationIds: [], identity };
  }
  throw new SigilError(
    'permission_denied',
    `${identity || 'this certificate'} may not use the workload service: only admins and delegates may`,
  );
}

function isAdmin(spiffeId: string, trustDomain: string): boolean {
  try {
    const parsed = parseSpiffeId(spiffeId);
    const segments = parsed.path.split('/').slice(1);
    return parsed.trustDomain === trustDomain && segments.length === 2 && segments[0] === 'admin';
  } catch {
    return false;
  }
}

/** PERMISSION_DENIED naming the bit when the caller's policy lacks it. */
export function requirePermission(caller: WorkloadCaller, permission: WorkloadPermission): void {
  if (caller.policy === null || caller.policy.permissions.has(permission)) return;
  throw new SigilError(
    'permission_denied',
    `the "${permission}" permission is not in your certificate's policy (${[...caller.policy.permissions].join(', ') || 'none'})`,
  );
}

/**
 * The key a caller's name stands for: "web" → `${owner}//web`,
 * "carol//web" → `${owner}/carol//web`. Refuses names that are not labels.
 */
export function keyOf(caller: WorkloadCaller, name: string): string {
  if (typeof name !== 'string' || name === '') throw invalid('name: give a workload name');
  const split = name.lastIndexOf('//');
  if (split === -1) return `${caller.ownerKey}//${checkLabel(name, 'workload name')}`;
  const owners = name.slice(0, split).split('/');
  for (const owner of owners) checkLabel(owner, 'owner name');
  return `${caller.ownerKey}/${owners.join('/')}//${checkLabel(name.slice(split + 2), 'workload name')}`;
}

/** Whether `key` lies in the caller's subtree (the owner itself, or beneath it). */
export function visibleTo(caller: WorkloadCaller, key: string): boolean {
  return caller.ownerKey === '' || key.startsWith(`${caller.ownerKey}/`);
}

/** `key` as the caller names it (see keyOf). */
export function relativeName(caller: WorkloadCaller, key: string): string {
  const rest = key.slice(caller.ownerKey.length);
  return rest.startsWith('//') ? rest.slice(2) : rest.slice(1);
}

/** The owner key and the name of a workload key ("/alice/carol//web" → ["/alice/carol", "web"]). */
export function splitKey(key: string): { readonly ownerKey: string; readonly name: string } {
  const split = key.lastIndexOf('//');
  return { ownerKey: key.slice(0, split), name: key.slice(split + 2) };
}

/** The same NOT_FOUND for a name that does not exist and one outside the caller's subtree. */
export function noSuchWorkload(name: string): SigilError {
  return notFound(`workload ${JSON.stringify(name)}: no such workload`);
}
