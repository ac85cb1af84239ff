// The control plane's side of delegation: admitting a delegate's chain,
// creating direct delegations, a delegate's view of its subtree, resource
// reservations and revocation inside a subtree.
//
// Every delegate call is decided on a grant computed once per connection:
// the presented chain linked to this control plane's CAs (presented-chain.ts),
// checked link by link (delegation.ts: narrowing, subtree, lifetimes, length,
// permissions), none of its links revoked, and each certificate recorded so
// that every replica knows the tree and can revoke any part of it.
//
// Isolation: a delegate sees and acts on its own subtree only. Anything
// outside it — unknown, a sibling's, an ancestor's — gets the same
// NOT_FOUND message, so a refusal tells nothing about what exists elsewhere.
import type { KeyObject, X509Certificate } from 'node:crypto';
import { invalid, notFound, SigilError } from '../errors.ts';
import { fingerprintOf } from '../pki/certificate.ts';
import { certificateNames } from '../pki/certificate-names.ts';
import { type LinkedCertificate, linkPresentedChain } from '../pki/chain-links.ts';
import {
  issueDelegateLeaf,
  issueDelegation,
  type NameGrants,
  NO_GRANTS,
} from '../pki/delegation-certificates.ts';
import {
  checkDelegationChain,
  DEFAULT_MAX_CHAIN_LENGTH,
  delegatedKey,
  policyOf,
} from '../pki/delegation-chain.ts';
import { delegatedId, parseDelegatedId, type Subtree, subtreeKey } from '../pki/delegation-names.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import type { Issuer } from '../pki/issuer.ts';
import {
  PERMISSIONS,
  type Permission,
  type Policy,
  type PolicyJson,
  type PolicyOid,
  policyToJson,
} from '../pki/policy-extension.ts';
import type { DelegationRecord, Store, UsageReservation, UsageTotals } from '../store/store.ts';
import { certificateRecord, type IssuedCertificateView, issuedView } from './issuance.ts';
import type { RevocationUpdate } from './revocations.ts';
import { ceilingsFor, checkReservation, exceededMessage, type ReservationRequest } from './usage.ts';

/** A certificate of an admitted chain: what linking and checking found, read once. */
export interface GrantLink extends LinkedCertificate {
  readonly spiffeId: string;
  readonly policy: Policy | null;
  /** Where it sits, as the store keys it ("/alice/carol"). */
  readonly key: string;
}

/** What a verified delegate may do, as computed for its connection. */
export interface DelegateGrant {
  /** The leaf's SPIFFE ID, e.g. spiffe://carol.alice.d.<td>. */
  readonly spiffeId: string;
  /** The subtree the leaf acts for (["alice", "carol"]). */
  readonly subtree: Subtree;
  /** The leaf's place as the store keys it: "/alice/carol", or "/alice/carol//web" for a workload leaf. */
  readonly key: string;
  /** The intersection of the policies along the chain. */
  readonly effective: Policy;
  /** Leaf first, up to the topmost delegation, each with its SPIFFE ID and own policy. */
  readonly links: readonly GrantLink[];
  /** Fingerprints of the chain's certificates. */
  readonly fingerprints: ReadonlySet<string>;
  /**
   * What revokes this grant, in the revocation set's terms: "fp:<hex>" for
   * every link and the serial of the link a server CA signed.
   */
  readonly revocationIds: readonly string[];
}

export interface DelegationRequest {
  readonly name: string;
  readonly policy: Policy;
  readonly pathLen?: number;
  readonly ttlMs?: number;
  /** DNS names and IP ranges the delegate may name in certificates. */
  readonly grants?: Partial<NameGrants>;
  readonly publicKey: KeyObject;
  readonly command: boolean;
}

export interface CreatedDelegation extends IssuedCertificateView {
  readonly policy: Policy;
  readonly grants: NameGrants;
}

/** A node of the delegation tree (status, /delegations). */
export interface DelegationTreeNode {
  readonly spiffeId: string;
  readonly serial: string;
  readonly fingerprint: string;
  readonly policy: PolicyJson | null;
  readonly isCa: boolean;
  readonly origin: 'issued' | 'seen';
  readonly notAfter: Date;
  readonly revokedAt: Date | null;
  readonly children: DelegationTreeNode[];
}

export interface DelegationStatusView {
  readonly spiffeId: string;
  readonly subtree: Subtree;
  readonly policy: Policy;
  readonly usage: UsageTotals;
  readonly issuedLastHour: number;
  readonly delegated: DelegationTreeNode[];
}

export interface DelegationContext {
  readonly store: Store;
  readonly trustDomain: string;
  /** The deployment's policy extension OID. */
  readonly policyOid: PolicyOid;
  readonly now: () => Date;
  /** The control plane's CA certificates (roots and intermediates, current and retired). */
  readonly serverCas: () => readonly X509Certificate[];
  /** The CA that signs direct delegations now, with the chain to send (issuer first, root excluded). */
  readonly signer: (now: Date) => { issuer: Issuer; issuerId: string; chain: readonly Buffer[] };
  readonly isRevoked: (id: string) => boolean;
  /** After a revocation this replica made: feed the revocation set at once (events follow). */
  readonly revoked: (ids: readonly string[]) => void;
}

/** Direct delegations last 30 days unless asked otherwise; command certificates an hour. */
export const DEFAULT_DELEGATION_TTL_MS = 30 * 24 * 3600_000;
export const DEFAULT_COMMAND_TTL_MS = 3600_000;
export const MAX_DELEGATION_TTL_MS = 365 * 24 * 3600_000;
/**
 * pathLen of a direct delegation unless asked otherwise: the longest chain
 * the server accepts (leaf, delegations, replica intermediate: 9) leaves room
 * for the direct delegation and six below it.
 */
export const DEFAULT_DIRECT_PATH_LEN = DEFAULT_MAX_CHAIN_LENGTH - 3;

const HOUR_MS = 3600_000;
const NOT_IN_SUBTREE = 'no such certificate in your subtree';

const denied = (message: string): SigilError => new SigilError('permission_denied', message);

/** Whether store key `key` is `base` or lies beneath it. */
export function isAtOrUnder(key: string, base: string): boolean {
  return key === base || key.startsWith(`${base}/`);
}

/** The store key of a delegated SPIFFE ID, or null when it is not delegated in `trustDomain`. */
export function keyOfDelegatedId(spiffeId: string, trustDomain: string): string | null {
  const name = parseDelegatedId(spiffeId, trustDomain);
  return name === null ? null : delegatedKey(name.subtree, name.path);
}

export class Delegations {
  readonly #context: DelegationContext;

  constructor(context: DelegationContext) {
    this.#context = context;
  }

  // ------------------------------------------------------------ admission

  /**
   * The grant of a delegate whose verified leaf is `leafDer`, with the CA
   * certificates it sent in `presented`. Refuses (permission_denied) a chain
   * that does not link, does not narrow, strays from its subtree, is too long,
   * carries a malformed or critical policy, or has a revoked link; records
   * every link, and refuses a certificate first seen beyond an issuance rate.
   */
  async admit(leafDer: Buffer, presented: readonly Buffer[]): Promise<DelegateGrant> {
    const { store, trustDomain, policyOid, now: clock } = this.#context;
    const now = clock();
    const linked = linkPresentedChain(leafDer, presented, this.#context.serverCas(), now);
    const anchorIsRoot = linked.anchor.checkIssued(linked.anchor);
    const chain = [...linked.links.map((link) => link.der), ...(anchorIsRoot ? [] : [linked.anchor.raw])];
    const result = checkDelegationChain(chain, { trustDomain, policyOid });
    // Every linked certificate lies at or beneath the topmost delegation, so each has a subtree.
    const links: GrantLink[] = linked.links.map((link, index) => {
      const checked = result.links[index];
      const path = index === 0 ? result.path : '';
      return {
        ...link,
        spiffeId: checked.spiffeId ?? '',
        policy: checked.policy,
        key: delegatedKey(checked.subtree ?? [], path),
      };
    });

    const revocationIds: string[] = [];
    for (const link of links) {
      revocationIds.push(`fp:${link.fingerprint}`);
      if (link.issuedByServer) revocationIds.push(link.serial);
    }
    if (revocationIds.some((id) => this.#context.isRevoked(id))) {
      throw denied('a certificate in the chain has been revoked');
    }

    // Record top-down so every record's parent is known; enforce issuance
    // rates on certificates this control plane has not seen before.
    for (let index = links.length - 1; index >= 0; index--) {
      const link = links[index];
      if (await store.getDelegation(link.fingerprint)) continue;
      await this.#checkIssuanceRate(links.slice(index + 1), now);
      await this.#recordSeen(link, links[index + 1]?.fingerprint ?? null, now);
    }
    // A revocation may have landed while recording.
    if (revocationIds.some((id) => this.#context.isRevoked(id))) {
      throw denied('a certificate in the chain has been revoked');
    }
    return {
      spiffeId: result.spiffeId,
      subtree: result.subtree,
      key: result.key,
      effective: result.effective,
      links,
      fingerprints: new Set(links.map((link) => link.fingerprint)),
      revocationIds,
    };
  }

  /** Records a certificate first met in a presented chain (insert-if-absent). */
  async #recordSeen(
    link: LinkedCertificate & {
      readonly spiffeId: string;
      readonly policy: Policy | null;
      readonly key: string;
    },
    parentFingerprint: string | null,
    now: Date,
  ): Promise<void> {
    await this.#context.store.recordDelegation({
      fingerprint: link.fingerprint,
      serial: link.serial,
      spiffeId: link.spiffeId,
      subtree: link.key,
      parentFingerprint,
      policy: link.policy ? JSON.stringify(policyToJson(link.policy)) : null,
      isCa: link.certificate.ca,
      notAfter: new Date(link.certificate.validTo),
      der: link.der,
      origin: 'seen',
      recordedAt: now,
      revokedAt: null,
      revocationReason: null,
      revokedBy: null,
    });
  }

  /** Each delegation above a new certificate allows only so many new certificates an hour in its subtree. */
  async #checkIssuanceRate(ancestors: readonly GrantLink[], now: Date): Promise<void> {
    const since = new Date(now.getTime() - HOUR_MS);
    for (const [index, ancestor] of ancestors.entries()) {
      const limit = ancestor.policy?.limits?.issuancePerHour;
      if (limit === undefined) continue;
      // The ancestor's own record counts as issued in its parent's subtree, not its own.
      const seen = await this.#context.store.countDelegationsSince(ancestor.key, since);
      const own = (await this.#context.store.getDelegation(ancestor.fingerprint))?.recordedAt;
      const beneath = seen - (own && own.getTime() >= since.getTime() ? 1 : 0);
      if (beneath >= limit) {
        throw denied(
          `issuance rate exceeded: ${index === 0 ? 'your issuer' : 'a delegation above'} allows ${limit} new certificates an hour in its subtree`,
        );
      }
    }
  }

  // ------------------------------------------------------------- creation

  /** A direct delegation (or command certificate) under this replica's intermediate. The caller is an admin. */
  async create(request: DelegationRequest, requester: string): Promise<CreatedDelegation> {
    const { store, trustDomain, policyOid } = this.#context;
    const now = this.#context.now();
    const signer = this.#context.signer(now);
    let ttlMs = request.ttlMs;
    if (ttlMs !== undefined && (ttlMs <= 0 || ttlMs > MAX_DELEGATION_TTL_MS)) {
      throw invalid('ttl_seconds must be at most 365 days');
    }
    ttlMs ??= request.command ? DEFAULT_COMMAND_TTL_MS : DEFAULT_DELEGATION_TTL_MS;
    // One live direct grant per name (identity leaves seen beneath share the ID and do not count).
    const wanted = delegatedId(trustDomain, [request.name]);
    const live = (await store.listDelegations({ under: subtreeKey([request.name]) })).some(
      (record) =>
        record.spiffeId === wanted &&
        record.origin === 'issued' &&
        record.revokedAt === null &&
        record.notAfter > now,
    );
    if (live) {
      throw new SigilError(
        'already_exists',
        `a live delegation ${wanted} exists; revoke it first or pick another name`,
      );
    }
    const issued = request.command
      ? issueDelegateLeaf({
          parent: { issuer: signer.issuer, certificateDer: signer.chain[0] },
          trustDomain,
          policyOid,
          publicKey: request.publicKey,
          name: request.name,
          policy: request.policy,
          ttlMs,
          now,
        })
      : issueDelegation({
          // The operator grants from the top: any policy, bounded by nothing above.
          parent: {
            issuer: signer.issuer,
            certificateDer: signer.chain[0],
            policy: {
              version: 1,
              permissions: new Set<Permission>(PERMISSIONS),
              limits: request.policy.limits,
            },
          },
          trustDomain,
          policyOid,
          publicKey: request.publicKey,
          name: request.name,
          policy: request.policy,
          pathLen: request.pathLen ?? DEFAULT_DIRECT_PATH_LEN,
          ttlMs,
          ...(request.grants ? { grants: request.grants } : {}),
          now,
        });
    const grants: NameGrants = 'grants' in issued ? (issued.grants as NameGrants) : NO_GRANTS;
    const spiffeId = issued.id;
    const fingerprint = sha256Hex(issued.der);
    await store.insertCertificate(
      certificateRecord(issued, {
        subject: `CN=${request.command ? 'sigil command' : 'sigil delegation'} ${request.name}`,
        sans: [`uri:${spiffeId}`],
        profile: request.command ? 'command' : 'delegation',
        issuerId: signer.issuerId,
        requester,
        now,
      }),
    );
    await store.recordDelegation({
      fingerprint,
      serial: issued.serialHex,
      spiffeId,
      subtree: subtreeKey([request.name]),
      parentFingerprint: null,
      policy: JSON.stringify(policyToJson(request.policy)),
      isCa: !request.command,
      notAfter: issued.notAfter,
      der: issued.der,
      origin: 'issued',
      recordedAt: now,
      revokedAt: null,
      revocationReason: null,
      revokedBy: null,
    });
    return { ...issuedView(issued, signer.chain, spiffeId), policy: request.policy, grants };
  }

  // --------------------------------------------------------------- views

  async status(grant: DelegateGrant): Promise<DelegationStatusView> {
    this.#require(grant, 'info');
    const { store } = this.#context;
    const since = new Date(this.#context.now().getTime() - HOUR_MS);
    const records = await store.listDelegations({ under: grant.key });
    const beneath = records.filter((record) => !grant.fingerprints.has(record.fingerprint));
    return {
      spiffeId: grant.spiffeId,
      subtree: grant.subtree,
      policy: grant.effective,
      usage: await store.usageUnder(grant.key),
      issuedLastHour: beneath.filter((record) => record.recordedAt >= since).length,
      delegated: buildTree(beneath),
    };
  }

  /** Every recorded delegation as a forest (for admins: /delegations). */
  async tree(): Promise<DelegationTreeNode[]> {
    return buildTree(await this.#context.store.listDelegations());
  }

  // ---------------------------------------------------------- reservations

  async reserve(grant: DelegateGrant, request: ReservationRequest) {
    this.#require(grant, 'create');
    checkReservation(request, grant.effective.limits);
    const { holder, ...wanted } = request;
    const result = await this.charge(grant, holder, wanted);
    return { reservation: result.reservation, existing: result.outcome === 'existing' };
  }

  /**
   * Holds `wanted` under `holder` in the grant's place, checked against every
   * level of its chain in one store transaction: each link's own limits and
   * the caller's effective ones. The caller has checked the request's shape.
   */
  async charge(
    grant: DelegateGrant,
    holder: string,
    wanted: Omit<ReservationRequest, 'holder'>,
  ): Promise<{ reservation: UsageReservation; outcome: 'reserved' | 'existing' }> {
    const levels = grant.links
      .map((link) => ({ subtree: link.key, limits: link.policy?.limits ?? null }))
      .reverse();
    levels.push({ subtree: grant.key, limits: grant.effective.limits });
    const result = await this.#context.store.reserveUsage(
      {
        holder,
        subtree: grant.key,
        workloads: wanted.workloads,
        cpus: [...new Set(wanted.cpus)].sort((a, b) => a - b),
        memoryMiB: wanted.memoryMiB,
        blockMiB: wanted.blockMiB,
        createdAt: this.#context.now(),
      },
      ceilingsFor(levels),
    );
    if (result.outcome === 'exceeded') {
      throw new SigilError(
        'resource_exhausted',
        exceededMessage(result.resource, result.used, result.limit, result.subtree, grant.key),
      );
    }
    return { reservation: result.reservation, outcome: result.outcome };
  }

  async release(grant: DelegateGrant, holder: string): Promise<boolean> {
    this.#require(grant, 'destroy');
    return this.#context.store.releaseUsage(grant.key, holder);
  }

  /**
   * After `fingerprint` was revoked: frees every reservation at or under its
   * subtree key, in one store transaction every replica sees (a revoked
   * delegation's subtree holds nothing any more). An identity leaf shares its
   * delegation's key; revoking it ends one credential, not the subtree, and
   * frees nothing. Null when nothing was released for that reason.
   */
  async releaseRevoked(fingerprint: string): Promise<{ subtree: string; count: number } | null> {
    const { store } = this.#context;
    const record = await store.getDelegation(fingerprint);
    if (!record || record.revokedAt === null) return null;
    if (!record.isCa && record.parentFingerprint !== null) {
      const parent = await store.getDelegation(record.parentFingerprint);
      if (parent && parent.subtree === record.subtree) return null;
    }
    return { subtree: record.subtree, count: await store.releaseUsageUnder(record.subtree) };
  }

  // ------------------------------------------------------------ revocation

  /**
   * Revokes `certificateDer`, linked by `chain` (its issuer first) to the
   * caller: a delegate with "revoke" may revoke anything strictly beneath its
   * own place in the tree; an admin (grant null) anything in a delegation
   * subtree. A delegate may also revoke itself (its own delegation, or the
   * leaf it calls with) without "revoke": giving up one's own authority takes
   * nothing from anyone else, and a holder must be able to end a compromised
   * key on its own, as any certificate holder can with Revoke.
   */
  async revoke(
    grant: DelegateGrant | null,
    certificateDer: Buffer,
    chain: readonly Buffer[],
    reason: string,
    by: string,
  ): Promise<RevokedDelegation> {
    const { store, trustDomain, policyOid } = this.#context;
    const now = this.#context.now();
    const fingerprint = sha256Hex(certificateDer);
    const own = grant?.links.find((link) => link.fingerprint === fingerprint && link.key === grant.key);
    if (own) return this.#revokeOwn(own, reason, by, now);
    if (grant) this.#require(grant, 'revoke');
    let linked: ReturnType<typeof linkPresentedChain>;
    try {
      // A delegate's own certificates serve as anchors: the target must descend from them.
      const anchors = grant ? grant.links.map((link) => link.certificate) : this.#context.serverCas();
      linked = linkPresentedChain(certificateDer, chain, anchors, now);
    } catch {
      throw notFound(NOT_IN_SUBTREE);
    }
    const target = linked.links[0];
    let targetId: string | null;
    let targetKey: string | null = null;
    let policy: Policy | null;
    try {
      const uris = certificateUris(target.der);
      targetId = uris.length === 1 ? uris[0] : null;
      if (targetId !== null) targetKey = keyOfDelegatedId(targetId, trustDomain);
      policy = policyOf(target.der, policyOid, 'the certificate');
    } catch {
      throw notFound(NOT_IN_SUBTREE);
    }
    const inside =
      targetKey !== null && (grant ? targetKey !== grant.key && isAtOrUnder(targetKey, grant.key) : true);
    if (targetId === null || targetKey === null || !inside || grant?.fingerprints.has(target.fingerprint)) {
      throw notFound(NOT_IN_SUBTREE);
    }

    if (!(await store.getDelegation(target.fingerprint))) {
      const parent = linked.links[1] ?? null;
      const parentFingerprint = parent ? parent.fingerprint : grant ? fingerprintOf(linked.anchor) : null;
      await this.#recordSeen(
        { ...target, spiffeId: targetId, policy, key: targetKey },
        parentFingerprint,
        now,
      );
    }
    const changed = await store.revokeDelegation(target.fingerprint, reason, now, by);
    const ids = [`fp:${target.fingerprint}`];
    // A direct delegation is also a certificate this control plane issued.
    if (!grant && target.issuedByServer) ids.push(...(await this.#revokeIssued(target, reason, now)));
    this.#context.revoked(ids);
    return revokedView(target, targetId, policy, !changed);
  }

  /** A delegate revoking its own delegation or identity leaf (recorded when it was admitted). */
  async #revokeOwn(link: GrantLink, reason: string, by: string, now: Date): Promise<RevokedDelegation> {
    const changed = await this.#context.store.revokeDelegation(link.fingerprint, reason, now, by);
    const ids = [`fp:${link.fingerprint}`];
    if (link.issuedByServer) ids.push(...(await this.#revokeIssued(link, reason, now)));
    this.#context.revoked(ids);
    return revokedView(link, link.spiffeId, link.policy, !changed);
  }

  /** The certificates-table copy of a certificate this control plane issued (a direct delegation). */
  async #revokeIssued(link: LinkedCertificate, reason: string, now: Date): Promise<string[]> {
    const { store } = this.#context;
    const record = await store.getCertificate(link.serial);
    if (!record?.der.equals(link.der) || record.revokedAt !== null) return [];
    await store.revokeCertificate(link.serial, reason, now);
    return [link.serial];
  }

  /**
   * The revocation stream as a delegate may see it: only certificates
   * recorded strictly beneath its own place in the tree ("fp:<fingerprint>"), so it
   * learns nothing of other subtrees, not even how often they revoke. The
   * snapshot comes from the store, each later change is checked against it;
   * updates keep their order.
   */
  watchRevocations(
    grant: DelegateGrant,
    source: (listener: (update: RevocationUpdate) => void) => () => void,
    listener: (update: RevocationUpdate) => void,
    onError: (error: unknown) => void,
  ): () => void {
    const { store } = this.#context;
    const beneath = (record: DelegationRecord | null): boolean =>
      record !== null && record.subtree !== grant.key && isAtOrUnder(record.subtree, grant.key);
    let closed = false;
    let queue: Promise<void> = Promise.resolve();
    const deliver = (work: () => Promise<RevocationUpdate | null>): void => {
      queue = queue
        .then(work)
        .then((update) => {
          if (update !== null && !closed) listener(update);
        })
        .catch(onError);
    };
    const unsubscribe = source((update) =>
      deliver(async () => {
        if (update.snapshot) {
          const now = this.#context.now();
          const revoked = (await store.listDelegations({ under: grant.key })).filter(
            (record) => beneath(record) && record.revokedAt !== null && record.notAfter > now,
          );
          return { snapshot: true, serials: revoked.map((record) => `fp:${record.fingerprint}`) };
        }
        const visible: string[] = [];
        for (const id of update.serials) {
          if (id.startsWith('fp:') && beneath(await store.getDelegation(id.slice(3)))) visible.push(id);
        }
        return visible.length > 0 ? { snapshot: false, serials: visible } : null;
      }),
    );
    return () => {
      closed = true;
      unsubscribe();
    };
  }

  #require(grant: DelegateGrant, permission: Permission): void {
    if (!grant.effective.permissions.has(permission)) {
      throw denied(`this delegation lacks the "${permission}" permission`);
    }
  }
}

/** What a delegation revocation acted on (for the audit trail). */
export interface RevokedDelegation {
  readonly alreadyRevoked: boolean;
  readonly fingerprint: string;
  readonly serial: string;
  readonly spiffeId: string;
  /** 'delegation' (a CA), 'command' (a leaf with a policy) or 'leaf'. */
  readonly profile: string;
}

function revokedView(
  link: LinkedCertificate,
  spiffeId: string,
  policy: Policy | null,
  alreadyRevoked: boolean,
): RevokedDelegation {
  return {
    alreadyRevoked,
    fingerprint: link.fingerprint,
    serial: link.serial,
    spiffeId,
    profile: link.certificate.ca ? 'delegation' : policy ? 'command' : 'leaf',
  };
}

/**
 * Records as a forest by parent fingerprint; a record whose parent is not
 * among them is a root. A delegate's own identity leaves (same SPIFFE ID as
 * the delegation that signed them) are the delegate itself, not something it
 * delegated, and are left out.
 */
export function buildTree(all: readonly DelegationRecord[]): DelegationTreeNode[] {
  const byFingerprint = new Map(all.map((record) => [record.fingerprint, record]));
  const records = all.filter((record) => {
    const parent = record.parentFingerprint ? byFingerprint.get(record.parentFingerprint) : undefined;
    return record.isCa || parent === undefined || parent.spiffeId !== record.spiffeId;
  });
  const nodes = new Map<string, DelegationTreeNode>();
  for (const record of records) {
    nodes.set(record.fingerprint, {
      spiffeId: record.spiffeId,
      serial: record.serial,
      fingerprint: record.fingerprint,
      policy: record.policy ? (JSON.parse(record.policy) as PolicyJson) : null,
      isCa: record.isCa,
      origin: record.origin,
      notAfter: record.notAfter,
      revokedAt: record.revokedAt,
      children: [],
    });
  }
  const roots: DelegationTreeNode[] = [];
  for (const record of records) {
    const node = nodes.get(record.fingerprint) as DelegationTreeNode;
    const parent = record.parentFingerprint ? nodes.get(record.parentFingerprint) : undefined;
    if (parent) parent.children.push(node);
    else roots.push(node);
  }
  return roots;
}

/** The URI SANs of a certificate. */
function certificateUris(der: Buffer): readonly string[] {
  return certificateNames(der).uris;
}
