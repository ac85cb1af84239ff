// The SPIFFE ID of a workload identity: the name the control plane gives a
// running workload of a delegation subtree (authority/workload-identity.ts)
// and the name transport recognises it by (transport/workload-peers.ts).
//
//   Carol's workload "web"   spiffe://carol.alice.d.<td>/workload/web
//
// The host is the owner's delegation host, so a workload identity lies in its
// owner's subtree for every name-constraint-enforcing verifier and never
// matches a spiffe://<td>/… pattern (admins, nodes, replicas). The name alone
// proves nothing: a delegate can sign it too. Only a leaf the deployment's own
// CAs signed directly, without a policy extension, is a workload identity.
// Pure: no I/O.
import { delegatedId, isDnsLabel, parseDelegatedId, type Subtree } from './delegation-names.ts';

/** The path of a workload identity before the workload's name. */
export const WORKLOAD_PATH_PREFIX = '/workload/';

/** spiffe://<owner's delegation host>/workload/<name>. */
export function workloadSpiffeId(trustDomain: string, owner: Subtree, name: string): string {
  return delegatedId(trustDomain, owner, `${WORKLOAD_PATH_PREFIX}${name}`);
}

export interface WorkloadName {
  /** The owner's subtree, topmost delegation first. */
  readonly subtree: Subtree;
  /** The workload's name (one DNS label). */
  readonly name: string;
  /** The owner's SPIFFE ID: spiffe://carol.alice.d.<td>. */
  readonly owner: string;
}

/** The owner and name of a workload identity's SPIFFE ID; null for any other ID. */
export function parseWorkloadSpiffeId(spiffeId: string, trustDomain: string): WorkloadName | null {
  const delegated = parseDelegatedId(spiffeId, trustDomain);
  if (delegated === null || !delegated.path.startsWith(WORKLOAD_PATH_PREFIX)) return null;
  const name = delegated.path.slice(WORKLOAD_PATH_PREFIX.length);
  if (!isDnsLabel(name)) return null;
  return { subtree: delegated.subtree, name, owner: delegatedId(trustDomain, delegated.subtree) };
}
