// Which deployment identities are workload identities. A leaf the
// deployment's own CAs signed directly whose SPIFFE ID lies in a delegation
// subtree is either a command certificate (it carries the policy extension,
// and is admitted like a delegate) or, without one, the identity the control
// plane gave one of that subtree's running workloads
// (spiffe://carol.alice.d.<td>/workload/<name>; see pki/workload-names.ts).
// A workload identity is a deployment identity: rules match it by spiffeIds
// and spiffePatterns, never by `delegates`, and it holds no permissions. A
// delegate-signed leaf with the same name is never one: who signed it decides.
import { certificateNames } from '../pki/certificate-names.ts';
import { findPolicyExtension, type PolicyOid } from '../pki/policy-extension.ts';
import { parseWorkloadSpiffeId, WORKLOAD_PATH_PREFIX, type WorkloadName } from '../pki/workload-names.ts';

/** A workload identity's owner and name, as peerIdentity reports it. */
export interface WorkloadPeer extends WorkloadName {
  /** The leaf's SPIFFE ID: spiffe://carol.alice.d.<td>/workload/<name>. */
  readonly spiffeId: string;
}

const PATH_BYTES = Buffer.from(WORKLOAD_PATH_PREFIX, 'latin1');

/**
 * The workload a leaf is the identity of, or null. `leaf` must be one the
 * deployment's own CAs signed directly (the caller checked, by signature).
 * The DER is first searched for "/workload/": a leaf without it cannot be
 * one, and only the rare leaf holding it is parsed.
 */
export function workloadPeerOf(
  leaf: Buffer,
  settings: { readonly trustDomain: string; readonly policyOid: PolicyOid },
): WorkloadPeer | null {
  if (!leaf.includes(PATH_BYTES)) return null;
  try {
    if (findPolicyExtension(leaf, settings.policyOid) !== null) return null;
    const spiffeIds = certificateNames(leaf).uris.filter(
      (uri) => uri.slice(0, 7).toLowerCase() === 'spiffe:',
    );
    if (spiffeIds.length !== 1) return null;
    const name = parseWorkloadSpiffeId(spiffeIds[0], settings.trustDomain);
    return name === null ? null : { ...name, spiffeId: spiffeIds[0] };
  } catch {
    // A leaf whose extensions cannot be read is not a workload identity (fail closed: nothing matches it).
    return null;
  }
}
