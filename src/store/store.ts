// The Store contract: everything the control plane keeps. Two implementations
// (sqlite.ts on node:sqlite, postgres.ts on pg) pass one contract test suite.
// The store holds facts, the authority makes decisions: nothing here knows
// about certificates beyond the bytes and the fields it indexes.
//
// Durability: a method's promise resolves only after its change is committed
// (SQLite WAL with synchronous=FULL; PostgreSQL COMMIT). "Acknowledged" means
// exactly that, and `kill -9` afterwards loses nothing.

export type NodeState = 'NEW' | 'UP' | 'REVOKED';
export const NODE_STATES: readonly NodeState[] = ['NEW', 'UP', 'REVOKED'];

export interface CertificateRecord {
  /** Canonical serial: lower-case hex, no leading zeros. */
  readonly serial: string;
  readonly subject: string;
  /** SAN strings as "dns:…", "ip:…", "uri:…", "email:…". */
  readonly sans: readonly string[];
  /** 'server' | 'client' | 'server+client' | 'node' | 'admin' | 'bootstrap' | 'intermediate' … */
  readonly profile: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Id of the CaRecord that signed it. */
  readonly issuerId: string;
  /** Who asked: a SPIFFE ID, a node id, or 'bootstrap'. */
  readonly requester: string;
  readonly der: Buffer;
  readonly issuedAt: Date;
  readonly revokedAt: Date | null;
  /** RFC 5280 CRLReason name when revoked. */
  readonly revocationReason: string | null;
}

export interface TokenRecord {
  /** Public identifier (appears in the token string and in listings). */
  readonly id: string;
  /** SHA-256 of the secret; the secret itself is never stored. */
  readonly secretHash: Buffer;
  readonly name: string | null;
  readonly usesTotal: number;
  readonly usesLeft: number;
  readonly autoApprove: boolean;
  readonly createdAt: Date;
  readonly expiresAt: Date;
  readonly revokedAt: Date | null;
  readonly createdBy: string;
}

/** A compare-and-set step of one node (Store.insertNodeCertificate): from one of `from` to `to`, at `at`. */
export interface NodeStep {
  readonly id: string;
  readonly from: readonly NodeState[];
  readonly to: NodeState;
  readonly at: Date;
}

export interface NodeRecord {
  /** Derived from the public key (see authority/node-id.ts). */
  readonly id: string;
  /** SubjectPublicKeyInfo DER of the node's enrolled key. */
  readonly publicKey: Buffer;
  readonly name: string | null;
  readonly state: NodeState;
  readonly tokenId: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  /** Serial of the newest certificate issued to the node. */
  readonly certificateSerial: string | null;
}

export interface CaRecord {
  /** 'root', or 'replica:<replica-id>:<n>' for intermediates. */
  readonly id: string;
  readonly kind: 'root' | 'intermediate';
  /** Replica that owns (and alone can decrypt) the key; null for the root. */
  readonly replicaId: string | null;
  readonly certificate: Buffer;
  /** Private key encrypted at rest (see authority/key-encryption.ts); null when offline. */
  readonly encryptedKey: Buffer | null;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly createdAt: Date;
  /** Retired CAs stay in the trust bundle until their last leaf expires. */
  readonly retiredAt: Date | null;
}

/**
 * A certificate of a delegation subtree: a delegation CA, a command
 * certificate or a leaf, issued by this server or seen in a chain a delegate
 * presented. Keyed by fingerprint, not serial: offline issuers choose their
 * own serials, so serials are not unique across the subtree.
 *
 * Subtree keys. Delegated SPIFFE IDs are host-form (spiffe://carol.alice.d.<td>)
 * and do not nest by string prefix, so the store files each record under a
 * key the authority computes, which does: "/alice" for Alice, "/alice/carol"
 * for Carol (a delegation of Alice's), "/alice/carol//web" for a workload leaf
 * "web" Carol issued (a double slash before the workload path: beneath Carol,
 * apart from any sub-delegation of hers). The store treats keys as opaque
 * byte-ordered text: "at or under K" is K itself or anything starting with
 * K + '/'. A key starts with '/'.
 */
export interface DelegationRecord {
  /** SHA-256 of the DER, lower-case hex. */
  readonly fingerprint: string;
  /** Canonical serial (lower-case hex, no leading zeros). */
  readonly serial: string;
  /**
   * The subtree key it is filed under ("/alice/carol", "/alice/carol//web"):
   * what listDelegations and countDelegationsSince select on.
   */
  readonly subtree: string;
  /** The certificate's SPIFFE ID as written (spiffe://carol.alice.d.<td>…); for display, never queried. */
  readonly spiffeId: string;
  /** Fingerprint of the certificate that signed it; null when a server CA did. */
  readonly parentFingerprint: string | null;
  /** The policy it carries as JSON (policyToJson); null for a leaf without one. */
  readonly policy: string | null;
  readonly isCa: boolean;
  readonly notAfter: Date;
  readonly der: Buffer;
  /** 'issued' by this control plane, or 'seen' first in a presented chain. */
  readonly origin: 'issued' | 'seen';
  readonly recordedAt: Date;
  readonly revokedAt: Date | null;
  readonly revocationReason: string | null;
  /** SPIFFE ID of who revoked it. */
  readonly revokedBy: string | null;
}

/** Resources one holder (e.g. a workload) keeps inside a delegation subtree. */
export interface UsageReservation {
  /** Unique per principal: (subtree, holder) is the key. */
  readonly holder: string;
  /** Subtree key of the principal it is charged to ("/alice/carol"); every ancestor's subtree counts it too. */
  readonly subtree: string;
  readonly workloads: number;
  readonly cpus: readonly number[];
  readonly memoryMiB: number;
  readonly blockMiB: number;
  readonly createdAt: Date;
}

/** Sums over the reservations at or under a subtree key. */
export interface UsageTotals {
  readonly workloads: number;
  /** Distinct CPU ids in use, ascending. */
  readonly cpus: readonly number[];
  readonly memoryMiB: number;
  readonly blockMiB: number;
  readonly reservations: number;
}

/**
 * One ceiling to respect when reserving: the totals at or under the subtree
 * key `subtree`, this reservation included, must not exceed these (computed
 * by authority/usage.ts from the policies along the caller's chain).
 */
export interface UsageCeiling {
  readonly subtree: string;
  readonly workloads: number;
  readonly memoryMiB: number;
  readonly blockMiB: number;
}

export type ReserveResult =
  | { readonly outcome: 'reserved'; readonly reservation: UsageReservation }
  /** (subtree, holder) already held: nothing changed, the held one returned. */
  | { readonly outcome: 'existing'; readonly reservation: UsageReservation }
  /** A ceiling would be exceeded: nothing changed. `subtree` is that ceiling's. */
  | {
      readonly outcome: 'exceeded';
      readonly subtree: string;
      readonly resource: 'workloads' | 'memoryMiB' | 'blockMiB';
      readonly used: number;
      readonly limit: number;
    };

/**
 * A key that never gets another certificate: one of its certificates was
 * revoked for keyCompromise, or it belonged to a revoked node (see
 * authority/issuance-limits.ts for which reasons end a key).
 */
export interface RevokedKeyRecord {
  /** SHA-256 of the SubjectPublicKeyInfo DER, lower-case hex. */
  readonly keyHash: string;
  /** 'keyCompromise' or 'nodeRevoked'. */
  readonly reason: string;
  /** The certificate whose revocation ended the key, when one did. */
  readonly serial: string | null;
  /** The node the key belonged to, when it was a node's. */
  readonly nodeId: string | null;
  readonly revokedAt: Date;
  /** SPIFFE ID of who revoked it. */
  readonly revokedBy: string;
}

/** A certificate filed under the identity it was renewed for (issuance limits). */
export interface LineageEntry {
  /** Canonical serial of the certificate. */
  readonly serial: string;
  /** The identity, e.g. "certificate:<serial of the first certificate of the line>". */
  readonly lineage: string;
  readonly issuedAt: Date;
}

export type StoreEvent =
  | { readonly kind: 'revocation'; readonly serials: readonly string[] }
  | { readonly kind: 'node'; readonly nodeId: string; readonly state: NodeState }
  | { readonly kind: 'ca'; readonly caId: string };

/** listCertificates page sizes. */
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

export interface CertificateFilter {
  readonly requester?: string;
  readonly profile?: string;
  readonly issuerId?: string;
  /** true: only revoked; false: only not revoked; undefined: both. */
  readonly revoked?: boolean;
  /** Only certificates whose notAfter is after this instant. */
  readonly validAt?: Date;
  /** 1..MAX_PAGE_SIZE, default DEFAULT_PAGE_SIZE. */
  readonly pageSize?: number;
  /** Opaque, from a previous page's nextPageToken. */
  readonly pageToken?: string;
}

export interface Page<T> {
  readonly items: readonly T[];
  /** Empty when this is the last page. */
  readonly nextPageToken: string;
}

export type NodeRegistrationOutcome =
  | { readonly outcome: 'created'; readonly node: NodeRecord }
  /** The same key registered before: nothing consumed, the existing record returned (idempotent). */
  | { readonly outcome: 'existing'; readonly node: NodeRecord }
  /** Token unknown, used up, expired or revoked at commit time: nothing changed. */
  | { readonly outcome: 'token-unusable' };

export interface Store {
  /** Apply pending versioned migrations; safe to call on every start and from several replicas at once. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  getSetting(key: string): Promise<string | null>;
  /** Insert only if absent; returns the value now stored (the first writer wins across replicas). */
  initSetting(key: string, value: string): Promise<string>;

  putCa(record: CaRecord): Promise<void>;
  retireCa(id: string, at: Date): Promise<void>;
  listCas(): Promise<readonly CaRecord[]>;

  insertCertificate(record: CertificateRecord): Promise<void>;
  getCertificate(serial: string): Promise<CertificateRecord | null>;
  listCertificates(filter: CertificateFilter): Promise<Page<CertificateRecord>>;
  /** Marks revoked and publishes a revocation event; false if unknown or already revoked (nothing changes). */
  revokeCertificate(serial: string, reason: string, at: Date): Promise<boolean>;
  /** All revoked, not yet expired certificates of one issuer, for its CRL. */
  listRevoked(issuerId: string, now: Date): Promise<readonly CertificateRecord[]>;

  insertToken(record: TokenRecord): Promise<void>;
  getToken(id: string): Promise<TokenRecord | null>;
  listTokens(): Promise<readonly TokenRecord[]>;
  /** False if unknown or already revoked. */
  revokeToken(id: string, at: Date): Promise<boolean>;

  /**
   * One transaction: if a node with this id exists, return it ('existing',
   * nothing consumed); else consume one use of the token — only if it is
   * unrevoked, unexpired at `now` and has uses left — and insert the node.
   * Atomic across connections and replicas: a single-use token admits one node.
   */
  registerNode(tokenId: string, node: NodeRecord, now: Date): Promise<NodeRegistrationOutcome>;
  getNode(id: string): Promise<NodeRecord | null>;
  listNodes(filter?: { readonly state?: NodeState }): Promise<readonly NodeRecord[]>;
  /**
   * Compare-and-set: moves the node to `to` only if its state is one of
   * `from`; returns the updated record, or null if the node is unknown or in
   * another state (nothing changes). Publishes a node event when it changes.
   */
  transitionNode(
    id: string,
    from: readonly NodeState[],
    to: NodeState,
    update: { readonly certificateSerial?: string; readonly at: Date },
  ): Promise<NodeRecord | null>;
  /**
   * One transaction (a node's new certificate, e.g. a renewal's): inserts
   * `record`, then moves node `node.id` to `node.to`, pointing it at
   * `record.serial`, only if its state is one of `node.from` — as
   * insertCertificate followed by transitionNode, committed together.
   * Returns the updated node, or null if the node is unknown or in another
   * state: the certificate is inserted all the same, for the caller to deal
   * with (as it would after transitionNode returned null). A certificate that
   * cannot be inserted (a duplicate serial: ALREADY_EXISTS) fails the call and
   * the node is left as it was; so does any failure of the transaction.
   * Publishes a node event when the state changes.
   */
  insertNodeCertificate(record: CertificateRecord, node: NodeStep): Promise<NodeRecord | null>;
  /** The nodes called `name` (names are not unique), ordered by createdAt, then id. */
  listNodesNamed(name: string): Promise<readonly NodeRecord[]>;
  /**
   * Where the node serves workloads ("host:port", as it registered it), or
   * null to withdraw; false if no node has this id (nothing changes). The
   * node's state and updatedAt are left alone: this is the node's report,
   * not a lifecycle step.
   */
  setNodeWorkloadAddress(id: string, address: string | null): Promise<boolean>;
  /** The node's workload address; null when it registered none or no node has this id. */
  getNodeWorkloadAddress(id: string): Promise<string | null>;

  /** Insert if no record has this fingerprint; returns the record now stored (the first writer wins). */
  recordDelegation(record: DelegationRecord): Promise<DelegationRecord>;
  getDelegation(fingerprint: string): Promise<DelegationRecord | null>;
  /**
   * Records whose subtree key is `under` or lies beneath it ("/alice" matches
   * "/alice", "/alice/carol" and "/alice//web", not "/alicia"), or (`at`)
   * exactly `at` ("/alice" only); every record when both are absent; giving
   * both is refused. Ordered by subtree key, then recordedAt, then fingerprint.
   */
  listDelegations(filter?: {
    readonly under?: string;
    readonly at?: string;
  }): Promise<readonly DelegationRecord[]>;
  /** How many records whose subtree key is at or under `under` were recorded at or after `since` (issuance-rate limits). */
  countDelegationsSince(under: string, since: Date): Promise<number>;
  /**
   * Marks revoked and publishes a revocation event carrying "fp:<fingerprint>";
   * false if unknown or already revoked (nothing changes).
   */
  revokeDelegation(fingerprint: string, reason: string, at: Date, by: string): Promise<boolean>;
  /** Revoked records whose notAfter is after `now`. */
  listRevokedDelegations(now: Date): Promise<readonly DelegationRecord[]>;

  /**
   * One transaction, atomic across replicas: if (subtree, holder) is held,
   * 'existing'; else, if for every ceiling the totals at or under its subtree
   * key plus this reservation stay within it, insert ('reserved'); else
   * 'exceeded' naming the first ceiling broken. Every ceiling must be at or
   * above the reservation's subtree key. Two concurrent reservations can
   * never both pass a ceiling only one of them fits under.
   */
  reserveUsage(reservation: UsageReservation, ceilings: readonly UsageCeiling[]): Promise<ReserveResult>;
  /** False if (subtree, holder) held nothing. */
  releaseUsage(subtree: string, holder: string): Promise<boolean>;
  /**
   * Deletes every reservation whose subtree key is `under` or beneath it, in
   * one statement (a revoked delegation's subtree); returns how many.
   */
  releaseUsageUnder(under: string): Promise<number>;
  /** Totals of the reservations whose subtree key is `under` or beneath it. */
  usageUnder(under: string): Promise<UsageTotals>;
  /** Reservations whose subtree key is `under` or beneath it, ordered by subtree, holder. */
  listReservations(under: string): Promise<readonly UsageReservation[]>;
  /**
   * Reservations, in any subtree, whose holder starts with `prefix` (printable
   * ASCII, e.g. "node/<node id>/"), ordered by subtree, holder.
   */
  listReservationsHeldBy(prefix: string): Promise<readonly UsageReservation[]>;

  /** Insert if absent; false when the key was already revoked (the first record is kept). */
  revokeKey(record: RevokedKeyRecord): Promise<boolean>;
  /** The revocation of the key with this SPKI hash, or null. */
  getRevokedKey(keyHash: string): Promise<RevokedKeyRecord | null>;

  /** Insert if absent (a serial belongs to one lineage, the first recorded). */
  recordLineage(entry: LineageEntry): Promise<void>;
  /** The lineage entry of a serial, or null. */
  getLineage(serial: string): Promise<LineageEntry | null>;
  /** The entries of `lineage` issued at or after `since`, oldest first (then by serial). */
  listLineage(lineage: string, since: Date): Promise<readonly LineageEntry[]>;

  /** Events from every replica (PostgreSQL LISTEN/NOTIFY; in-process for SQLite). Returns unsubscribe. */
  subscribe(listener: (event: StoreEvent) => void): () => void;
}
