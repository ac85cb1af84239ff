// Workload placement: the control plane's side of workloads, asked by node
// daemons (`sigil agent --workloads`) and by whoever looks a node up.
//
// A node reserves a workload's resources here before it starts anything, so
// quotas hold across nodes: it forwards the caller's leaf (as it saw it in the
// handshake) and the chain the caller presented, and this control plane
// admits that chain itself (Delegations.admit: linking, narrowing, records,
// issuance rates, revocation), requires "create", and charges every level of
// the chain in one store transaction. The reservation is held under
// "node/<node id>/<name>" in the caller's subtree: the node ID comes from the
// calling node's certificate, never from the request, so a node lists and
// releases only its own.
//
// An admin caller (an empty leaf, or a leaf the deployment issued directly to
// spiffe://<td>/admin/…) is charged nothing. The node is trusted with its own
// workloads and with what it forwards: it saw the caller's handshake, and a
// node that made up an admin caller could as well have run the workload
// without asking. What it cannot do is charge one subtree for another's
// workload under a name it does not hold, or touch another node's holders.
import { X509Certificate } from 'node:crypto';
import { invalid, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { fingerprintOf, serialHexOf } from '../pki/certificate.ts';
import { certificateNames } from '../pki/certificate-names.ts';
import { isDnsLabel, parseDelegatedId } from '../pki/delegation-names.ts';
import { issuedDirectlyBy } from '../pki/issued-by.ts';
import { findPolicyExtension, type Policy } from '../pki/policy-extension.ts';
import { checkServerAddress } from '../protocol/join-tokens.ts';
import type { NodeRecord, UsageReservation } from '../store/store.ts';
import { permissionDenied, requireLive } from './access.ts';
import type { AuthorityContext } from './context.ts';
import type { DelegateGrant } from './delegations.ts';
import { type Caller, callerFrom, nodeSpiffeId } from './identities.ts';
import { isNodeId } from './node-id.ts';
import { checkReservation } from './usage.ts';

/** A workload's name: one DNS label, as the node daemon names workloads. */

/** Longest workload address accepted ("host:port"; a DNS name is at most 253). */
const MAX_ADDRESS_LENGTH = 261;

export interface WorkloadReservationRequest {
  /** DER of the caller's certificate as the node saw it; empty for an admin caller. */
  readonly leaf: Buffer;
  /** What the caller presented in sigil-chain-bin, the leaf's issuer first. */
  readonly chain: readonly Buffer[];
  readonly name: string;
  readonly workloads: number;
  readonly cpus: readonly number[];
  readonly memoryMiB: number;
  readonly blockMiB: number;
}

export interface PlacedWorkload {
  /** "node/<node id>/<name>"; "" for an admin caller (nothing is held). */
  readonly holder: string;
  /** The subtree key charged ("/alice/carol"); "" for an admin caller. */
  readonly subtree: string;
  /** The same holder already held these resources: nothing changed. */
  readonly existing: boolean;
  /** The caller's effective policy; null for an admin caller. */
  readonly policy: Policy | null;
}

/** One reservation a node holds: its subtree and the workload name after "node/<id>/". */
export interface HeldWorkload {
  readonly subtree: string;
  readonly name: string;
  readonly workloads: number;
  readonly cpus: readonly number[];
  readonly memoryMiB: number;
  readonly blockMiB: number;
}

export interface WorkloadNodeView {
  readonly nodeId: string;
  readonly name: string;
  /** "" when the node serves no workloads. */
  readonly address: string;
  /** What the node's server certificate carries: spiffe://<td>/node/<id>. */
  readonly spiffeId: string;
}

/** The holder prefix of every reservation node `nodeId` makes. */
export function nodeHolderPrefix(nodeId: string): string {
  return `node/${nodeId}/`;
}

export function checkWorkloadName(name: string): string {
  if (!isDnsLabel(name)) {
    const shown = String(name).length > 70 ? `${String(name).slice(0, 70)}…` : String(name);
    throw invalid(
      `workload name ${JSON.stringify(shown)} must be 1 to 63 lower-case letters, digits or inner hyphens`,
    );
  }
  return name;
}

/**
 * The calling node's record: the caller must be a node (by its
 * deployment-issued certificate), live, and UP in the store. Reading the
 * record is also what tells the node the store is reachable.
 */
export async function requireNode(
  context: AuthorityContext,
  caller: Caller,
  what: string,
): Promise<NodeRecord> {
  requireLive(context, caller);
  if (caller.role !== 'node' || caller.name === null) {
    throw permissionDenied(`only a node may ${what} (caller ${caller.spiffeId || 'without a SPIFFE ID'})`);
  }
  const node = await context.store.getNode(caller.name);
  if (node?.state !== 'UP') throw permissionDenied(`node ${caller.name} is not enrolled and up`);
  return node;
}

/**
 * Reserves a workload's resources for the caller the node forwards (see the
 * top of this file). Idempotent: the same name with the same resources again
 * is `existing`; the same name with other resources is refused.
 */
export async function reserveWorkload(
  context: AuthorityContext,
  caller: Caller,
  request: WorkloadReservationRequest,
): Promise<PlacedWorkload> {
  const node = await requireNode(context, caller, 'reserve workloads');
  const name = checkWorkloadName(request.name);
  const grant = await admitForwardedCaller(context, request.leaf, request.chain);
  if (grant === null) return { holder: '', subtree: '', existing: false, policy: null };

  if (!grant.effective.permissions.has('create')) {
    throw permissionDenied('this delegation lacks the "create" permission');
  }
  const holder = `${nodeHolderPrefix(node.id)}${name}`;
  const wanted = {
    workloads: request.workloads,
    cpus: [...new Set(request.cpus)].sort((a, b) => a - b),
    memoryMiB: request.memoryMiB,
    blockMiB: request.blockMiB,
  };
  // The shape and the CPU ids (Delegations.reserve's checks; the holder
  // checked there is the bare name, since "node/…/" holders are this file's).
  checkReservation({ holder: name, ...wanted }, grant.effective.limits);
  const result = await context.delegations.charge(grant, holder, wanted);
  if (result.outcome === 'existing' && !sameResources(result.reservation, wanted)) {
    throw new SigilError(
      'already_exists',
      `workload ${name} already holds a reservation on this node with other resources; destroy it first`,
    );
  }
  if (result.outcome === 'reserved') {
    context.audit({
      action: 'workload.reserved',
      by: grant.spiffeId,
      nodeId: node.id,
      subtree: grant.key,
      holder,
    });
  }
  return { holder, subtree: grant.key, existing: result.outcome === 'existing', policy: grant.effective };
}

function sameResources(
  held: UsageReservation,
  wanted: Pick<UsageReservation, 'workloads' | 'cpus' | 'memoryMiB' | 'blockMiB'>,
): boolean {
  return (
    held.workloads === wanted.workloads &&
    held.memoryMiB === wanted.memoryMiB &&
    held.blockMiB === wanted.blockMiB &&
    held.cpus.length === wanted.cpus.length &&
    held.cpus.every((cpu, index) => cpu === wanted.cpus[index])
  );
}

/**
 * Who the node says called it: null for an admin (nothing is charged), else
 * the grant of an admitted delegate (or command certificate). A leaf the
 * deployment issued directly is an admin's only when it names one and carries
 * no policy or delegated name (those are command certificates, admitted like
 * any delegate); it must be valid now and not revoked.
 */
async function admitForwardedCaller(
  context: AuthorityContext,
  leaf: Buffer,
  chain: readonly Buffer[],
): Promise<DelegateGrant | null> {
  if (leaf.length === 0) return null;
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(leaf);
  } catch {
    throw invalid('leaf: not a DER certificate');
  }
  if (certificate.ca) throw permissionDenied('the caller certificate is a CA, not a client certificate');
  const now = context.now().getTime();
  if (now < new Date(certificate.validFrom).getTime() || now > new Date(certificate.validTo).getTime()) {
    throw permissionDenied('the caller certificate is not valid now');
  }
  const uris = certificateNames(leaf).uris;
  const deploymentIssued = issuedDirectlyBy(certificate, context.caCertificates());
  const command =
    findPolicyExtension(leaf, context.policyOid) !== null ||
    uris.some((uri) => parseDelegatedId(uri, context.trustDomain) !== null);
  if (!deploymentIssued || command) return context.delegations.admit(leaf, chain);
  const forwarded = callerFrom(
    {
      spiffeId: uris.length === 1 ? uris[0] : null,
      serial: serialHexOf(certificate),
      fingerprint: fingerprintOf(certificate),
      issuedByDeployment: true,
      delegateKey: null,
    },
    context.trustDomain,
  );
  requireLive(context, forwarded);
  if (forwarded.role !== 'admin') {
    throw permissionDenied(
      `only an admin or a delegation may run workloads (caller ${forwarded.spiffeId || 'without a SPIFFE ID'})`,
    );
  }
  return null;
}

/**
 * Releases the calling node's reservation of `name` in `subtree`; false when
 * it held none. (Authority.releaseWorkload also revokes the workload's
 * identities: workload-identity.ts releaseWorkloadAndIdentities.)
 */
export async function releaseWorkload(
  context: AuthorityContext,
  caller: Caller,
  subtree: string,
  name: string,
): Promise<boolean> {
  const node = await requireNode(context, caller, 'release workloads');
  if (!subtree.startsWith('/')) throw invalid('subtree must be a subtree key such as "/alice/carol"');
  const holder = `${nodeHolderPrefix(node.id)}${checkWorkloadName(name)}`;
  const released = await context.store.releaseUsage(subtree, holder);
  if (released) {
    context.audit({ action: 'workload.released', by: caller.spiffeId, nodeId: node.id, subtree, holder });
  }
  return released;
}

/** Every reservation the calling node holds (for reconciliation after its restart). */
export async function listWorkloadReservations(
  context: AuthorityContext,
  caller: Caller,
): Promise<HeldWorkload[]> {
  const node = await requireNode(context, caller, 'list its workload reservations');
  const prefix = nodeHolderPrefix(node.id);
  const held = await context.store.listReservationsHeldBy(prefix);
  return held.map((reservation) => ({
    subtree: reservation.subtree,
    name: reservation.holder.slice(prefix.length),
    workloads: reservation.workloads,
    cpus: reservation.cpus,
    memoryMiB: reservation.memoryMiB,
    blockMiB: reservation.blockMiB,
  }));
}

/** Records where the calling node serves workloads ("host:port"); "" withdraws. */
export async function registerWorkloadEndpoint(
  context: AuthorityContext,
  caller: Caller,
  address: string,
): Promise<WorkloadNodeView> {
  if (address !== '') checkWorkloadAddress(address);
  const node = await requireNode(context, caller, 'register a workload endpoint');
  if (!(await context.store.setNodeWorkloadAddress(node.id, address === '' ? null : address))) {
    throw notFound(`node ${node.id} not found`);
  }
  return workloadNodeView(context, node, address);
}

function checkWorkloadAddress(address: string): void {
  if (address.length > MAX_ADDRESS_LENGTH) {
    throw invalid(`address: ${address.length} characters is over the limit of ${MAX_ADDRESS_LENGTH}`);
  }
  try {
    checkServerAddress(address);
  } catch (error) {
    const shown = JSON.stringify(address.length > 80 ? `${address.slice(0, 80)}…` : address);
    throw invalid(`address ${shown} must be host:port (IPv6 in brackets, e.g. [::1]:7543)`, error);
  }
}

/**
 * A node's workload endpoint by node ID or name, for any authenticated
 * caller. Unknown and revoked nodes are NOT_FOUND alike; a name several live
 * nodes share must be given as an ID instead.
 */
export async function findWorkloadNode(
  context: AuthorityContext,
  caller: Caller,
  text: string,
): Promise<WorkloadNodeView> {
  requireLive(context, caller);
  const wanted = text.trim();
  if (wanted === '') throw invalid('node: give a node name or ID');
  const shown = JSON.stringify(wanted.length > 70 ? `${wanted.slice(0, 70)}…` : wanted);
  const byId = isNodeId(wanted.toLowerCase()) ? await context.store.getNode(wanted.toLowerCase()) : null;
  const candidates = byId ? [byId] : await context.store.listNodesNamed(wanted);
  const live = candidates.filter((node) => node.state !== 'REVOKED');
  if (live.length === 0) throw notFound(`no node ${shown}`);
  if (live.length > 1) {
    throw preconditionFailed(
      `several nodes are named ${shown} (${live.map((node) => node.id).join(', ')}): give a node ID`,
    );
  }
  const [node] = live;
  const address = (await context.store.getNodeWorkloadAddress(node.id)) ?? '';
  if (address === '') {
    throw preconditionFailed(
      `node ${node.name ?? node.id} serves no workloads (start it with sigil agent --workloads)`,
    );
  }
  return workloadNodeView(context, node, address);
}

function workloadNodeView(context: AuthorityContext, node: NodeRecord, address: string): WorkloadNodeView {
  return {
    nodeId: node.id,
    name: node.name ?? '',
    address,
    spiffeId: nodeSpiffeId(context.trustDomain, node.id),
  };
}
