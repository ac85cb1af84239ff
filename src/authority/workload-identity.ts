// Workload identity: a short-lived X.509 identity for each running workload of
// a delegation subtree, spiffe://carol.alice.d.<td>/workload/<name>
// (pki/workload-names.ts), asked for by the node daemon that runs it and
// delivered to the workload through the metadata service.
//
// Delegation CA keys stay with the delegates, so the control plane cannot
// sign under the owner's delegation; the replica's intermediate signs
// instead. That leaf is a deployment identity named inside the owner's
// subtree, without the policy extension: transport classifies it as a
// workload identity (transport/workload-peers.ts), it matches the rules that
// name it, never an admin, node or replica role (its host is not the trust
// domain's), never `delegates`, and it holds no permissions, so it can call
// no control-plane method.
//
// Issued only:
//   - to a node (by its deployment-issued certificate), live and UP, for a
//     workload it holds a reservation for ("node/<node id>/<name>" in the
//     owner's subtree): the node ID comes from the node's certificate, so a
//     node gets identities for its own workloads only;
//   - while the owner's recorded delegation chain (each delegation record
//     from the owner's up to the topmost, by parent fingerprint) holds no
//     revoked or expired link;
//   - within issuancePerHour of every delegation of that chain, counted
//     like any other issuance in the subtree (the delegation records filed
//     at or under each one in the last hour): RESOURCE_EXHAUSTED beyond it,
//     and nothing is issued.
// Lifetime: 1 hour unless asked, at most 24 hours, never past the owner's
// chain. Each identity is recorded twice, as every certificate this control
// plane issues (certificates, profile "workload", requester the node ID: it
// shows in ListCertificates) and as a record of the owner's subtree (filed
// at "<owner>//workload/<name>", parent the owner's delegation: it counts in
// the subtree's issuance rate and shows in the owner's delegation status).
// Rotation is asking again: a workload keeps its two newest valid identities,
// older ones are revoked as superseded. Releasing the workload revokes every
// identity of it (cessationOfOperation).
import type { KeyObject } from 'node:crypto';
import { invalid, SigilError } from '../errors.ts';
import { readCsr } from '../pki/csr.ts';
import { delegatedKey } from '../pki/delegation-chain.ts';
import { delegatedId, subtreeOfKey } from '../pki/delegation-names.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import { uriName } from '../pki/names.ts';
import type { PolicyJson } from '../pki/policy-extension.ts';
import { WORKLOAD_PATH_PREFIX, workloadSpiffeId } from '../pki/workload-names.ts';
import { type Possession, verifySignProof } from '../protocol/challenges.ts';
import type { CertificateRecord, DelegationRecord } from '../store/store.ts';
import { permissionDenied } from './access.ts';
import type { AuthorityContext } from './context.ts';
import type { Caller } from './identities.ts';
import { type IssuedCertificateView, issueLeaf, spiffeIdOf } from './issuance.ts';
import { wholeNumber } from './request-fields.ts';
import { requireUsableKey } from './revoked-keys.ts';
import { checkWorkloadName, nodeHolderPrefix, releaseWorkload, requireNode } from './workload-placement.ts';

const HOUR_MS = 3600_000;
export const DEFAULT_WORKLOAD_IDENTITY_TTL_MS = HOUR_MS;
export const MAX_WORKLOAD_IDENTITY_TTL_MS = 24 * HOUR_MS;
/** What the certificates table records a workload identity as. */
export const WORKLOAD_IDENTITY_PROFILE = 'workload';
/** Valid identities a workload keeps when it gets a new one: the new one and the one before. */
const KEPT_VALID = 2;
/** The longest delegation chain walked (the server admits chains of 9 certificates at most). */
const MAX_CHAIN_RECORDS = 16;
const PAGE_SIZE = 1000;

export interface WorkloadIdentityRequest {
  /** The reservation's subtree key, as ReserveWorkload returned it ("/alice/carol"). */
  readonly subtree: string;
  readonly name: string;
  /** Exactly one: a proof (challenge: signChallenge of the node's certificate fingerprint) or a CSR. */
  readonly possession?: Possession;
  readonly csr?: Buffer;
  /** 0 or absent: 1 hour. */
  readonly ttlSeconds?: number;
}

export interface IssuedWorkloadIdentity extends IssuedCertificateView {
  /** The owner's SPIFFE ID: spiffe://carol.alice.d.<td>. */
  readonly owner: string;
  /** The owner's subtree key ("/alice/carol"). */
  readonly subtree: string;
}

const exhausted = (message: string): SigilError => new SigilError('resource_exhausted', message);

/** The owner's subtree key of a reservation key: "/alice/carol//web" (a leaf with a path) → "/alice/carol". */
function ownerKeyOf(reservationSubtree: string): string {
  const workloadPath = reservationSubtree.indexOf('//');
  return workloadPath === -1 ? reservationSubtree : reservationSubtree.slice(0, workloadPath);
}

/** Issues an identity for workload `name` the calling node holds in `subtree` (see the top of this file). */
export async function issueWorkloadIdentity(
  context: AuthorityContext,
  caller: Caller,
  request: WorkloadIdentityRequest,
): Promise<IssuedWorkloadIdentity> {
  const node = await requireNode(context, caller, 'ask for workload identities');
  const name = checkWorkloadName(request.name);
  if (!request.subtree.startsWith('/')) throw invalid('subtree must be a subtree key such as "/alice/carol"');
  const ownerKey = ownerKeyOf(request.subtree);
  const owner = subtreeOfKey(ownerKey);
  const spiffeId = workloadSpiffeId(context.trustDomain, owner, name);
  const ttlSeconds = wholeNumber(
    request.ttlSeconds,
    'ttl_seconds',
    MAX_WORKLOAD_IDENTITY_TTL_MS / 1000,
    DEFAULT_WORKLOAD_IDENTITY_TTL_MS / 1000,
  );
  const publicKey = provenKey(caller, request, context.now());
  await requireUsableKey(context.store, publicKey);
  const holder = `${nodeHolderPrefix(node.id)}${name}`;

  // One decision at a time per topmost delegation on this replica: the rate
  // is counted, then charged by the record written below.
  return context.limits.oneAtATime(`workload-identity ${owner[0]}`, async () => {
    const now = context.now();
    const held = await context.store.listReservationsHeldBy(holder);
    if (
      !held.some((reservation) => reservation.holder === holder && reservation.subtree === request.subtree)
    ) {
      throw permissionDenied(`node ${node.id} holds no workload ${name} in ${request.subtree}`);
    }
    const chain = await liveOwnerChain(context, ownerKey, now);
    if (chain === null) {
      throw permissionDenied(
        `the delegation chain of ${delegatedId(context.trustDomain, owner)} is revoked or expired: no workload identity`,
      );
    }
    await checkIssuanceRate(context, chain.links, now);
    const ttlMs = Math.min(ttlSeconds * 1000, chain.notAfter.getTime() - now.getTime());
    const signer = context.leafSigner(now);
    const { view, record } = await issueLeaf(context.store, signer, {
      publicKey,
      pkiProfile: 'server+client',
      recordProfile: WORKLOAD_IDENTITY_PROFILE,
      commonName: `workload ${name}`,
      sans: [uriName(spiffeId)],
      ttlMs,
      requester: node.id,
      now,
    });
    await context.store.recordDelegation({
      fingerprint: sha256Hex(record.der),
      serial: record.serial,
      spiffeId,
      subtree: delegatedKey(owner, `${WORKLOAD_PATH_PREFIX}${name}`),
      parentFingerprint: chain.links[0].fingerprint,
      policy: null,
      isCa: false,
      notAfter: record.notAfter,
      der: record.der,
      origin: 'issued',
      recordedAt: now,
      revokedAt: null,
      revocationReason: null,
      revokedBy: null,
    });
    context.audit({
      action: 'certificate.issued',
      by: caller.spiffeId,
      serial: view.serial,
      spiffeId,
      profile: WORKLOAD_IDENTITY_PROFILE,
      issuance: 'workload',
      nodeId: node.id,
      subtree: request.subtree,
      holder,
      notAfter: view.notAfter,
    });
    const older = (await validIdentities(context, node.id, spiffeId, now)).filter(
      (identity) => identity.serial !== record.serial,
    );
    await revokeIdentities(context, older.slice(KEPT_VALID - 1), 'superseded', caller.spiffeId, now);
    return { ...view, owner: delegatedId(context.trustDomain, owner), subtree: ownerKey };
  });
}

/**
 * ReleaseWorkload (the workload was destroyed): the node's reservation
 * (workload-placement.ts), then every identity the node was given for the
 * workload, also when the reservation was already gone (a revoked delegation
 * frees it). False when no reservation was held.
 */
export async function releaseWorkloadAndIdentities(
  context: AuthorityContext,
  caller: Caller,
  subtree: string,
  name: string,
): Promise<boolean> {
  const released = await releaseWorkload(context, caller, subtree, name);
  // releaseWorkload admitted only a node: its name is its node ID.
  if (caller.role === 'node' && caller.name !== null) {
    await revokeWorkloadIdentities(context, caller.name, subtree, name, caller.spiffeId);
  }
  return released;
}

/**
 * After node `nodeId` released workload `name` of `subtree`: revokes every
 * valid identity it was given (cessationOfOperation). Returns their serials.
 */
export async function revokeWorkloadIdentities(
  context: AuthorityContext,
  nodeId: string,
  subtree: string,
  name: string,
  by: string,
): Promise<string[]> {
  const now = context.now();
  let spiffeId: string;
  try {
    spiffeId = workloadSpiffeId(context.trustDomain, subtreeOfKey(ownerKeyOf(subtree)), name);
  } catch {
    return []; // not a subtree any workload identity was issued in
  }
  const identities = await validIdentities(context, nodeId, spiffeId, now);
  return revokeIdentities(context, identities, 'cessationOfOperation', by, now);
}

/**
 * After the delegation recorded as `fingerprint` was revoked: revokes every
 * valid workload identity issued beneath it (privilegeWithdrawn), on every
 * node, since none may outlive its owner's authority. Nothing for a revoked
 * leaf (an identity leaf or a workload identity ends one credential, not a
 * subtree). Returns their serials.
 */
export async function revokeWorkloadIdentitiesBeneath(
  context: AuthorityContext,
  fingerprint: string,
  by: string,
): Promise<string[]> {
  const { store } = context;
  const revoked = await store.getDelegation(fingerprint);
  if (!revoked?.isCa || revoked.revokedAt === null) return [];
  const now = context.now();
  const identities: CertificateRecord[] = [];
  for (const record of await store.listDelegations({ under: revoked.subtree })) {
    if (!record.subtree.includes(`/${WORKLOAD_PATH_PREFIX}`) || record.isCa || record.origin !== 'issued')
      continue;
    if (record.revokedAt !== null || record.notAfter.getTime() <= now.getTime()) continue;
    const certificate = await store.getCertificate(record.serial);
    if (certificate?.profile === WORKLOAD_IDENTITY_PROFILE && certificate.der.equals(record.der)) {
      identities.push(certificate);
    }
  }
  return revokeIdentities(context, identities, 'privilegeWithdrawn', by, now);
}

function provenKey(caller: Caller, request: WorkloadIdentityRequest, now: Date): KeyObject {
  const hasPossession = request.possession !== undefined && request.possession !== null;
  const hasCsr = request.csr !== undefined && request.csr !== null && request.csr.length > 0;
  if (hasPossession === hasCsr) {
    throw invalid('a workload identity needs exactly one of a proof of possession or a CSR');
  }
  if (hasCsr) return readCsr(request.csr as Buffer, 'CSR').publicKey;
  return verifySignProof(request.possession, caller.fingerprint, now);
}

interface OwnerChain {
  /** The owner's delegation first, up to the topmost. */
  readonly links: readonly DelegationRecord[];
  /** The earliest notAfter along it: no identity outlives it. */
  readonly notAfter: Date;
}

/**
 * A chain of live delegation records from one of the owner's delegations
 * (a CA record filed at `ownerKey`) up to a topmost one, by parent
 * fingerprint; the one that lasts longest when there are several (a renewed
 * delegation). Null when every such chain has a revoked or expired link.
 */
async function liveOwnerChain(
  context: AuthorityContext,
  ownerKey: string,
  now: Date,
): Promise<OwnerChain | null> {
  const { store } = context;
  const live = (record: DelegationRecord): boolean =>
    record.isCa &&
    record.revokedAt === null &&
    record.notAfter.getTime() > now.getTime() &&
    !context.revocations.isRevoked(`fp:${record.fingerprint}`);
  const candidates = (await store.listDelegations({ at: ownerKey })).filter((record) => record.isCa);
  let best: OwnerChain | null = null;
  for (const candidate of candidates) {
    const links: DelegationRecord[] = [];
    let record: DelegationRecord | null = candidate;
    while (record !== null && live(record) && links.length < MAX_CHAIN_RECORDS) {
      links.push(record);
      if (record.parentFingerprint === null) break;
      record = await store.getDelegation(record.parentFingerprint);
    }
    const whole = record !== null && live(record) && record.parentFingerprint === null;
    if (!whole) continue;
    const notAfter = new Date(Math.min(...links.map((link) => link.notAfter.getTime())));
    if (best === null || notAfter > best.notAfter) best = { links, notAfter };
  }
  return best;
}

/** Each delegation of the chain allows only so many new certificates an hour in its subtree. */
async function checkIssuanceRate(
  context: AuthorityContext,
  links: readonly DelegationRecord[],
  now: Date,
): Promise<void> {
  const since = new Date(now.getTime() - HOUR_MS);
  for (const link of links) {
    const limit =
      link.policy === null ? undefined : (JSON.parse(link.policy) as PolicyJson).limits?.issuancePerHour;
    if (limit === undefined) continue;
    // The delegation's own record counts as issued in its parent's subtree, not its own.
    const seen = await context.store.countDelegationsSince(link.subtree, since);
    const issued = seen - (link.recordedAt.getTime() >= since.getTime() ? 1 : 0);
    if (issued >= limit) {
      throw exhausted(
        `issuance rate exceeded: the delegation ${link.spiffeId} allows ${limit} new certificates an hour in its subtree (${issued} in the last hour); no workload identity was issued`,
      );
    }
  }
}

/** The valid (unrevoked, unexpired) identities `spiffeId` node `nodeId` was given, newest first. */
async function validIdentities(
  context: AuthorityContext,
  nodeId: string,
  spiffeId: string,
  now: Date,
): Promise<CertificateRecord[]> {
  const found: CertificateRecord[] = [];
  let pageToken = '';
  do {
    const page = await context.store.listCertificates({
      requester: nodeId,
      profile: WORKLOAD_IDENTITY_PROFILE,
      revoked: false,
      validAt: now,
      pageSize: PAGE_SIZE,
      pageToken,
    });
    found.push(...page.items.filter((record) => spiffeIdOf(record.sans) === spiffeId));
    pageToken = page.nextPageToken;
  } while (pageToken !== '');
  return found.sort(
    (a, b) => b.issuedAt.getTime() - a.issuedAt.getTime() || b.notAfter.getTime() - a.notAfter.getTime(),
  );
}

/** Revokes identities in both records (certificate, subtree record); feeds the revocation set at once. */
async function revokeIdentities(
  context: AuthorityContext,
  identities: readonly CertificateRecord[],
  reason: string,
  by: string,
  now: Date,
): Promise<string[]> {
  const revoked: string[] = [];
  for (const identity of identities) {
    const fingerprint = sha256Hex(identity.der);
    const changed = await context.store.revokeCertificate(identity.serial, reason, now);
    await context.store.revokeDelegation(fingerprint, reason, now, by);
    context.revoked([identity.serial, `fp:${fingerprint}`]);
    if (!changed) continue;
    revoked.push(identity.serial);
    context.audit({
      action: 'certificate.revoked',
      by,
      serial: identity.serial,
      spiffeId: spiffeIdOf(identity.sans),
      profile: identity.profile,
      reason,
      ...(reason === 'superseded' ? { revocation: 'superseded' as const } : {}),
    });
  }
  return revoked;
}
