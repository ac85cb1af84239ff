// The certificate authority's decisions, in one place: who may ask for what,
// what gets issued, which state transitions are allowed, and what the store
// records. It takes plain inputs (a verified Caller, Buffers, strings),
// returns plain outputs and throws SigilErrors; gRPC, TLS sockets and files
// are other layers' business (services → authority → pki + store).
//
// Authorization, enforced here rather than trusted to callers:
//   admin   everything
//   node    Renew itself; Revoke certificates that carry its own SPIFFE ID
//   other   the same "holder" rights over its own certificate
//   none    Register, Rejoin, JoinReplica and GetTrustBundle need no certificate
//           (the token or the enrolled key is the credential)
// A caller whose own certificate is revoked is refused everything.
//
// Every change is committed to the store before a method resolves, so an
// acknowledged certificate, node or token survives `kill -9`.
import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import { invalid, notFound, preconditionFailed, SigilError, unauthenticated } from '../errors.ts';
import { parseRevocationReason } from '../pki/crl.ts';
import { readCsr } from '../pki/csr.ts';
import { DELEGATION_LABEL } from '../pki/delegation-names.ts';
import {
  generateKeyPair,
  keysMatch,
  privateKeyToPem,
  publicKeyFromSpki,
  readPrivateKey,
  spkiDer,
} from '../pki/keys.ts';
import type { MaterialSource } from '../pki/material.ts';
import { dnsName, type GeneralName, ipAddress, parseSpiffeId, spiffeId, uriName } from '../pki/names.ts';
import { encodePem } from '../pki/pem.ts';
import type { PolicyOid } from '../pki/policy-extension.ts';
import type { Profile } from '../pki/profiles.ts';
import type { RevocationSource } from '../pki/revocation-source.ts';
import {
  type Possession,
  verifyRegisterProof,
  verifyRejoinProof,
  verifyReplicaProof,
  verifySignProof,
} from '../protocol/challenges.ts';
import {
  checkServerAddress,
  encodeJoinToken,
  hashTokenSecret,
  newTokenId,
  newTokenSecret,
  secretMatches,
  TOKEN_SECRET_BYTES,
  type TokenKind,
  tokenKindOf,
} from '../protocol/join-tokens.ts';
import type {
  CertificateFilter,
  CertificateRecord,
  NodeRecord,
  NodeState,
  Page,
  Store,
  StoreEvent,
  TokenRecord,
} from '../store/store.ts';
import type { AuditEvent, AuditSink, IssuanceKind } from './audit.ts';
import {
  createOwnIntermediate,
  type JoinMaterial,
  nextGeneration,
  recertifyIntermediate,
  SETTING_BOOTSTRAP_DELIVERED,
  type StartupMode,
  signIntermediate,
  startUp,
} from './bootstrap.ts';
import { CaSet, type LoadedCa, ROOT_CA_ID } from './ca-set.ts';
import { CrlCache, crlUrl } from './crl-cache.ts';
import {
  type CreatedDelegation,
  type DelegateGrant,
  type DelegationRequest,
  type DelegationStatusView,
  Delegations,
  type DelegationTreeNode,
} from './delegations.ts';
import {
  adminSpiffeId,
  BOOTSTRAP_ADMIN_NAME,
  type Caller,
  nodeSpiffeId,
  parseReplicaId,
  replicaSpiffeId,
} from './identities.ts';
import {
  commonNameOf,
  type IssuedCertificateView,
  issueLeaf,
  type LeafRequest,
  sansFromStrings,
  spiffeIdOf,
} from './issuance.ts';
import {
  checkIssuance,
  type Holding,
  IssuanceLimits,
  supersededBy,
  validCertificates,
} from './issuance-limits.ts';
import { checkStoreKey, encryptCaKey } from './key-encryption.ts';
import {
  ADMIN_TTL_MS,
  DEFAULT_SIGN_TTL_MS,
  DEFAULT_TOKEN_TTL_MS,
  INTERMEDIATE_TTL_MS,
  MAINTENANCE_INTERVAL_MS,
  MAX_SIGN_TTL_MS,
  MAX_TOKEN_TTL_MS,
  MAX_TOKEN_USES,
  NODE_TTL_MS,
  ROOT_CRL_WARNING_MS,
  renewalDue,
  SERVER_TTL_MS,
} from './lifetimes.ts';
import { isNodeId, nodeIdFor, parseNodeId, replicaEnrolmentIdFor } from './node-id.ts';
import { RevocationTracker, type RevocationUpdate } from './revocations.ts';
import { endsKey, keyHashOf, NODE_REVOKED, requireUsableKey } from './revoked-keys.ts';
import { newServerKey, ServerMaterialSource, serverMaterialOf, serverNames } from './server-material.ts';
import type { ReservationRequest } from './usage.ts';
import {
  type AuthorityStatus,
  type CertificateSummary,
  certificateSummary,
  type NodeView,
  nodeView,
  type TokenSummary,
  type TrustBundle,
  tokenSummary,
} from './views.ts';

export interface AuthorityOptions {
  readonly store: Store;
  /** This replica's ID (a SPIFFE path segment): it owns intermediate "replica:<id>:<n>". */
  readonly replicaId: string;
  /** 32 bytes; see server/store-key.ts. */
  readonly storeKey: Buffer;
  /** Only used when bootstrapping; a later start with a different one is refused. Default "sigil.internal". */
  readonly trustDomain?: string;
  /**
   * The policy extension's OID (dotted), fixed when bootstrapping like the
   * trust domain; a later start with a different one is refused. Default
   * DEFAULT_POLICY_OID_TEXT (see pki/policy-extension.ts for why).
   */
  readonly policyOid?: string;
  /** Where clients reach this replica ("host:port"): server certificate SANs and join tokens. */
  readonly serverAddresses: readonly string[];
  /** The clock, injectable for tests. */
  readonly now?: () => Date;
  /** The intermediate this replica obtained with JoinReplica (join mode). */
  readonly join?: JoinMaterial;
  /** Reported by status(): "sqlite" or "postgres". Default "sqlite". */
  readonly storeKind?: string;
  /** Lifetime of intermediates this replica signs (root holder). Default 1 year. */
  readonly intermediateTtlMs?: number;
  /** Lifetime of this replica's own server certificate. Default 24 h. */
  readonly serverTtlMs?: number;
  /** Run the maintenance timer (renewal, rotation, pruning). Default true. */
  readonly timers?: boolean;
  /** Problems of background work (a failed rotation, say). Default: a process warning. */
  readonly onWarning?: (message: string, error?: unknown) => void;
  /** Told about every CA operation (audit.ts); never given a secret. Default: nothing. */
  readonly onAudit?: AuditSink;
  /**
   * The base URL relying parties fetch CRLs from (the HTTP side, or a proxy
   * in front of it), read at each issuance: leaves then carry
   * <url>/crl/<issuer id> as their CRL distribution point. Undefined: none.
   */
  readonly crlBaseUrl?: () => string | undefined;
}

/** What an empty store's bootstrap hands back, to be written as admin.pem / admin.key / ca.pem. */
export interface BootstrapOutput {
  readonly trustDomain: string;
  readonly rootFingerprint: string;
  /** PEM: the admin leaf, then its intermediate. */
  readonly adminCertificatePem: string;
  /** PEM (PKCS#8), unencrypted: write it 0600. */
  readonly adminKeyPem: string;
  readonly adminSpiffeId: string;
  /** PEM of the root, to pin. */
  readonly rootCertificatePem: string;
}

export interface OpenedAuthority {
  readonly authority: Authority;
  readonly mode: StartupMode;
  /**
   * Present when this replica bootstrapped the store and the admin identity
   * has not yet been confirmed as written (Authority.confirmBootstrap); a
   * crash before that hands out a new admin identity on the next start.
   */
  readonly bootstrapped?: BootstrapOutput;
}

export interface SignRequest {
  /** Exactly one of possession (challenge: signChallenge of the caller) or csr (PKCS#10 DER). */
  readonly possession?: Possession;
  readonly csr?: Buffer;
  /** "server" | "client" | "server+client". */
  readonly profile: string;
  readonly commonName?: string;
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** At most one spiffe:// URI; default spiffe://<td>/<profile>/<common name>. */
  readonly uris?: readonly string[];
  /** 0 or absent: 24 h. */
  readonly ttlSeconds?: number;
}

export interface CreateTokenRequest {
  /** 0 or absent: 15 minutes. */
  readonly ttlSeconds?: number;
  /** 0 or absent: 1. */
  readonly uses?: number;
  readonly autoApprove?: boolean;
  readonly name?: string;
  /** A token that admits a replica (JoinReplica) rather than a node. */
  readonly replica?: boolean;
}

export interface CreatedToken {
  /** The compact string for `sigil enrol`; holds the secret, shown once. */
  readonly token: string;
  readonly summary: TokenSummary;
}

export interface RegisterRequest {
  readonly tokenId: string;
  readonly tokenSecret: Buffer;
  /** Challenge: registerChallenge(tokenId, tokenSecret). */
  readonly possession?: Possession;
  readonly name?: string;
}

export interface RegisterResult {
  readonly node: NodeView;
  /** Present when the node is UP. */
  readonly certificate?: IssuedCertificateView;
}

export interface JoinReplicaRequest {
  readonly tokenId: string;
  readonly tokenSecret: Buffer;
  /** The new replica's intermediate key; challenge: replicaChallenge(tokenId, tokenSecret, replicaId). */
  readonly possession?: Possession;
  readonly replicaId: string;
}

export interface JoinReplicaResult {
  readonly intermediate: IssuedCertificateView;
  readonly bundle: TrustBundle;
}

export interface ListCertificatesFilter {
  readonly requester?: string;
  readonly profile?: string;
  readonly issuerId?: string;
  readonly revoked?: boolean;
  readonly validAt?: Date;
  readonly pageSize?: number;
  readonly pageToken?: string;
}

export interface ExportedRoot {
  readonly certificatePem: string;
  /** PKCS#8 PEM, encrypted when a passphrase was given. */
  readonly privateKeyPem: string;
  readonly rootFingerprint: string;
}

/** Sign profiles → the path segment of their default SPIFFE ID. */
const SIGN_PROFILES: ReadonlyMap<string, { pki: Profile; segment: string }> = new Map([
  ['server', { pki: 'server', segment: 'server' }],
  ['client', { pki: 'client', segment: 'client' }],
  ['server+client', { pki: 'server+client', segment: 'server-client' }],
]);

/** Recorded profile → the key usages a renewal gets. */
const RENEW_PROFILES: ReadonlyMap<string, Profile> = new Map<string, Profile>([
  ['node', 'server+client'],
  ['admin', 'client'],
  ['server', 'server'],
  ['client', 'client'],
  ['server+client', 'server+client'],
  ['bootstrap', 'client'],
]);

const MAX_NAMES = 100;
const MAX_PAGE_SIZE = 1000;

const permissionDenied = (message: string): SigilError => new SigilError('permission_denied', message);

function sha256Hex(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/** A display name (node or token): optional, at most 64 characters, no control characters. */
function displayName(text: string | undefined, what: string): string | null {
  if (text === undefined || text === '') return null;
  if (text.length > 64) throw invalid(`${what} is longer than 64 characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(text)) throw invalid(`${what} contains control characters`);
  return text;
}

function wholeNumber(value: number | undefined, what: string, max: number, fallback: number): number {
  if (value === undefined || value === 0) return fallback;
  if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${what} must be a whole positive number`);
  if (value > max) throw invalid(`${what} must be at most ${max}`);
  return value;
}

function canonicalSerial(text: string): string {
  const hex = text.replaceAll(':', '').toLowerCase();
  if (!/^[0-9a-f]{1,42}$/.test(hex)) {
    const shown = text.length > 48 ? `${text.slice(0, 48)}…` : text;
    throw invalid(`"${shown}" is not a certificate serial (hex, at most 20 bytes)`);
  }
  return hex.replace(/^0+(?=.)/, '');
}

function reasonOf(text: string | undefined): string {
  if (text === undefined || text.trim() === '') return 'unspecified';
  const reason = parseRevocationReason(text);
  if (reason === 'removeFromCRL') {
    throw invalid(
      'removeFromCRL is not a reason to revoke: it only appears in delta CRLs, for a certificate taken off hold; a revocation here is final',
    );
  }
  return reason;
}

/** Why a token whose secret matched cannot admit anyone now, or null when it can. */
function tokenProblem(token: TokenRecord, now: Date): SigilError | null {
  if (token.revokedAt !== null) return permissionDenied(`join token ${token.id} has been revoked`);
  if (token.expiresAt.getTime() <= now.getTime()) {
    return unauthenticated(`join token ${token.id} expired at ${token.expiresAt.toISOString()}`);
  }
  if (token.usesLeft <= 0) {
    return permissionDenied(
      `join token ${token.id} has already been used (${token.usesTotal} of ${token.usesTotal} uses)`,
    );
  }
  return null;
}

export class Authority {
  readonly #store: Store;
  readonly #replicaId: string;
  readonly #storeKey: Buffer;
  readonly #trustDomain: string;
  readonly #addresses: readonly string[];
  readonly #now: () => Date;
  readonly #storeKind: string;
  readonly #policyOid: PolicyOid;
  readonly #intermediateTtlMs: number;
  readonly #serverTtlMs: number;
  readonly #warn: (message: string, error?: unknown) => void;
  readonly #onAudit: AuditSink | undefined;
  readonly #crlBaseUrl: () => string | undefined;
  readonly #limits: IssuanceLimits;
  readonly #revocations: RevocationTracker;
  readonly #crls: CrlCache;
  readonly #delegations: Delegations;
  #cas: CaSet;
  #server!: ServerMaterialSource;
  #serverLeaf: { serial: string; issuerId: string; notBefore: Date; notAfter: Date } | null = null;
  #unsubscribe: (() => void) | null = null;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Serializes CA changes, reloads and maintenance runs. */
  #lock: Promise<unknown> = Promise.resolve();
  readonly #warned = new Set<string>();
  #caCertificates: { cas: CaSet; certificates: X509Certificate[] } | null = null;

  private constructor(options: AuthorityOptions, trustDomain: string, policyOid: PolicyOid, cas: CaSet) {
    this.#store = options.store;
    this.#replicaId = options.replicaId;
    this.#storeKey = options.storeKey;
    this.#trustDomain = trustDomain;
    this.#policyOid = policyOid;
    this.#addresses = options.serverAddresses;
    this.#now = options.now ?? (() => new Date());
    this.#storeKind = options.storeKind ?? 'sqlite';
    this.#intermediateTtlMs = options.intermediateTtlMs ?? INTERMEDIATE_TTL_MS;
    this.#serverTtlMs = options.serverTtlMs ?? SERVER_TTL_MS;
    this.#warn =
      options.onWarning ??
      ((message: string) => process.emitWarning(`sigil authority: ${message}`, 'SigilAuthorityWarning'));
    this.#onAudit = options.onAudit;
    this.#crlBaseUrl = options.crlBaseUrl ?? (() => undefined);
    this.#cas = cas;
    this.#revocations = new RevocationTracker((error) =>
      this.#warn(`a revocation subscriber failed: ${describe(error)}`, error),
    );
    this.#crls = new CrlCache(this.#store, () => this.#cas, this.#now);
    this.#limits = new IssuanceLimits(this.#store);
    this.#delegations = new Delegations({
      store: this.#store,
      trustDomain,
      policyOid,
      now: this.#now,
      serverCas: () => this.#serverCaCertificates(),
      signer: (now) => {
        const { ca, issuer } = this.#cas.signer(now);
        return { issuer, issuerId: ca.record.id, chain: [ca.record.certificate] };
      },
      isRevoked: (id) => this.#revocations.isRevoked(id),
      revoked: (ids) => this.#afterRevocation(ids),
    });
  }

  /**
   * Starts the authority on `store`: bootstraps an empty store, serves an
   * existing one, or adopts a joined intermediate (see bootstrap.ts). Then
   * loads revocations, subscribes to store events, issues this replica's
   * server certificate and starts the maintenance timer.
   */
  static async open(options: AuthorityOptions): Promise<OpenedAuthority> {
    parseReplicaId(options.replicaId);
    checkStoreKey(options.storeKey);
    if (options.serverAddresses.length === 0) {
      throw invalid('the authority needs at least one server address (host:port) to put in join tokens');
    }
    for (const address of options.serverAddresses) checkServerAddress(address);
    for (const [what, value] of [
      ['intermediateTtlMs', options.intermediateTtlMs],
      ['serverTtlMs', options.serverTtlMs],
    ] as const) {
      if (value !== undefined && (!Number.isSafeInteger(value) || value < 60_000)) {
        throw invalid(`${what} must be a whole number of milliseconds, at least one minute`);
      }
    }
    const now = (options.now ?? (() => new Date()))();
    const started = await startUp({
      store: options.store,
      replicaId: options.replicaId,
      storeKey: options.storeKey,
      trustDomain: options.trustDomain,
      policyOid: options.policyOid,
      now,
      intermediateTtlMs: options.intermediateTtlMs ?? INTERMEDIATE_TTL_MS,
      join: options.join,
    });
    const authority = new Authority(options, started.trustDomain, started.policyOid, started.cas);
    try {
      await authority.#start();
      const bootstrapped = started.adminPending ? await authority.#issueBootstrapAdmin() : undefined;
      if (options.timers !== false) authority.#schedule();
      return { authority, mode: started.mode, ...(bootstrapped ? { bootstrapped } : {}) };
    } catch (error) {
      await authority.close();
      throw error;
    }
  }

  async #start(): Promise<void> {
    this.#unsubscribe = this.#store.subscribe((event) => this.#onEvent(event));
    await this.#revocations.reload(this.#store, this.#caIds(), this.#now());
    if (this.#cas.rootKey()) await this.#crls.publishRoot();
    this.#server = new ServerMaterialSource(await this.#newServerMaterial(), (error) =>
      this.#warn(`a server material subscriber failed: ${describe(error)}`, error),
    );
  }

  get trustDomain(): string {
    return this.#trustDomain;
  }

  get replicaId(): string {
    return this.#replicaId;
  }

  /** The deployment's policy extension OID (fixed at bootstrap). */
  get policyOid(): PolicyOid {
    return this.#policyOid;
  }

  get rootFingerprint(): string {
    return this.#cas.requireRoot().info.fingerprint;
  }

  /** Records that the bootstrap's admin identity was written out; later starts issue no new one. */
  async confirmBootstrap(): Promise<void> {
    await this.#store.initSetting(SETTING_BOOTSTRAP_DELIVERED, this.#now().toISOString());
  }

  /** Stops the timer and the store subscription. The store stays open (its owner closes it). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    await this.#lock.catch(() => {});
  }

  // ------------------------------------------------------------- CA service

  /** Issues a leaf for a key proven by possession or CSR. Admin only. */
  async sign(caller: Caller, request: SignRequest): Promise<IssuedCertificateView> {
    this.#requireAdmin(caller, 'sign certificates');
    const now = this.#now();
    const profile = SIGN_PROFILES.get(request.profile);
    if (!profile) {
      const shown = String(request.profile).slice(0, 40);
      throw invalid(`unknown profile "${shown}" (Sign issues server, client or server+client)`);
    }
    // Names first: they are cheap to refuse, a signature check is not.
    const given =
      (request.dnsNames?.length ?? 0) + (request.ipAddresses?.length ?? 0) + (request.uris?.length ?? 0);
    if (given > MAX_NAMES) throw invalid(`a certificate may carry at most ${MAX_NAMES} names, got ${given}`);
    const sans: GeneralName[] = [];
    for (const name of request.dnsNames ?? []) sans.push(dnsName(name));
    for (const name of request.ipAddresses ?? []) sans.push(ipAddress(name));
    const uris = (request.uris ?? []).map((uri) => uriName(uri));
    const spiffeUris = uris.filter((uri) => uri.value.startsWith('spiffe://'));
    if (spiffeUris.length > 1) throw invalid('a certificate may carry at most one spiffe:// URI');
    const commonName = request.commonName?.trim() ?? '';
    let identity: string;
    if (spiffeUris.length === 1) {
      identity = spiffeUris[0].value;
      const parsed = parseSpiffeId(identity);
      if (parsed.trustDomain.endsWith(`.${DELEGATION_LABEL}.${this.#trustDomain}`)) {
        throw invalid(`SPIFFE ID ${identity} names a delegation subtree: create one with sigil delegate`);
      }
      if (parsed.trustDomain !== this.#trustDomain) {
        throw invalid(`SPIFFE ID ${identity} is not in this trust domain (${this.#trustDomain})`);
      }
      const first = parsed.path.split('/')[1];
      if (first === 'node' || first === 'replica') {
        throw invalid(
          `SPIFFE IDs under /${first}/ are reserved: ${first}s get theirs by enrolling with a join token`,
        );
      }
    } else {
      if (commonName === '') throw invalid('Sign needs a common name or a spiffe:// URI');
      try {
        identity = spiffeId(this.#trustDomain, profile.segment, commonName);
      } catch {
        throw invalid(
          `common name "${commonName.slice(0, 64)}" cannot form the default SPIFFE ID (use letters, digits, ".", "-", "_", or give a spiffe:// URI)`,
        );
      }
      uris.unshift(uriName(identity));
    }
    sans.push(...uris);
    if (sans.length > MAX_NAMES) throw invalid(`a certificate may carry at most ${MAX_NAMES} names`);
    const ttlSeconds = wholeNumber(
      request.ttlSeconds,
      'ttl_seconds',
      MAX_SIGN_TTL_MS / 1000,
      DEFAULT_SIGN_TTL_MS / 1000,
    );
    const publicKey = this.#provenKey(caller, request, now);
    await requireUsableKey(this.#store, publicKey);
    const issued = await this.#issue({
      publicKey,
      pkiProfile: profile.pki,
      recordProfile: request.profile,
      commonName: commonName === '' ? identity.slice(0, 64) : commonName,
      sans,
      ttlMs: ttlSeconds * 1000,
      requester: caller.spiffeId,
      now,
    });
    this.#issuedEvent(issued, caller.spiffeId, 'sign', request.profile);
    return issued;
  }

  #provenKey(caller: Caller, request: SignRequest, now: Date): KeyObject {
    const hasPossession = request.possession !== undefined && request.possession !== null;
    const hasCsr = request.csr !== undefined && request.csr !== null && request.csr.length > 0;
    if (hasPossession === hasCsr) {
      throw invalid('Sign needs exactly one of a proof of possession or a CSR');
    }
    if (hasCsr) return readCsr(request.csr as Buffer, 'CSR').publicKey;
    return verifySignProof(request.possession, caller.fingerprint, now);
  }

  /**
   * A new certificate for the caller's own identity: the SANs, profile and
   * lifetime of its current certificate; its current key, or a new one proven
   * with `possession` (challenge: signChallenge of the caller's fingerprint).
   */
  async renew(
    caller: Caller,
    request: { readonly possession?: Possession } = {},
  ): Promise<IssuedCertificateView> {
    this.#requireLive(caller);
    const now = this.#now();
    const record = await this.#store.getCertificate(caller.serial);
    if (!record || sha256Hex(record.der) !== caller.fingerprint) {
      throw permissionDenied(
        'the caller certificate was not issued by this authority; it cannot be renewed here',
      );
    }
    if (record.revokedAt)
      throw permissionDenied(`certificate ${record.serial} is revoked; it cannot be renewed`);
    const pkiProfile = RENEW_PROFILES.get(record.profile);
    if (!pkiProfile)
      throw permissionDenied(`a ${record.profile} certificate cannot be renewed through Renew`);
    let node: NodeRecord | null = null;
    if (caller.role === 'node' && caller.name) {
      node = await this.#store.getNode(caller.name);
      if (!node) throw permissionDenied(`node ${caller.name} is not enrolled here`);
      if (node.state === 'REVOKED') throw permissionDenied(`node ${caller.name} has been revoked`);
      if (node.state !== 'UP') throw preconditionFailed(`node ${caller.name} is ${node.state}, not UP`);
    }
    const currentKey = new X509Certificate(record.der).publicKey;
    const publicKey = request.possession
      ? verifySignProof(request.possession, caller.fingerprint, now)
      : currentKey;
    // A revoked key gets nothing, whether it calls or is asked for.
    await requireUsableKey(this.#store, currentKey);
    if (publicKey !== currentKey) await requireUsableKey(this.#store, publicKey);
    if (caller.role === 'admin') return this.#renewed(caller, record, pkiProfile, publicKey, node, now);
    // Everyone else within the issuance limits (issuance-limits.ts), one decision at a time per identity.
    const identity = node ? `node:${node.id}` : await this.#limits.lineageOf(record);
    return this.#limits.oneAtATime(identity, async () => {
      const holding = node
        ? await this.#limits.node(node.id, now)
        : await this.#limits.lineage(identity, record, now);
      const rotation = keyHashOf(publicKey) !== keyHashOf(currentKey);
      checkIssuance(holding, now, { rotation });
      const issued = await this.#renewed(caller, record, pkiProfile, publicKey, node, now);
      if (!node) await this.#limits.recordRenewal(identity, record, issued.serial, now);
      await this.#supersede(holding, new Set([record.serial, issued.serial]), caller.spiffeId, now);
      return issued;
    });
  }

  /** The renewal itself: a certificate like `record` for `publicKey`. */
  async #renewed(
    caller: Caller,
    record: CertificateRecord,
    pkiProfile: Profile,
    publicKey: KeyObject,
    node: NodeRecord | null,
    now: Date,
  ): Promise<IssuedCertificateView> {
    const sans = sansFromStrings(record.sans);
    const lifetime =
      record.profile === 'node'
        ? NODE_TTL_MS
        : record.profile === 'admin'
          ? ADMIN_TTL_MS
          : Math.max(
              60_000,
              Math.floor((record.notAfter.getTime() - record.notBefore.getTime()) / 60_000) * 60_000,
            );
    const issued = await this.#issue({
      publicKey,
      pkiProfile,
      recordProfile: record.profile,
      commonName: commonNameOf(record.subject) ?? spiffeIdOf(record.sans).slice(0, 64),
      sans,
      ttlMs: Math.min(lifetime, MAX_SIGN_TTL_MS),
      requester: record.requester,
      now,
    });
    if (node) await this.#recordNodeCertificate(node.id, issued, now);
    this.#issuedEvent(issued, caller.spiffeId, 'renew', record.profile);
    return issued;
  }

  /**
   * Renews the admin identity a server keeps in its data directory (admin.pem,
   * server/admin-renewal.ts): a certificate like `certificateDer` for the
   * same key, names and profile, valid ADMIN_TTL_MS, exactly as if that admin
   * had called Renew. Not an API: the server reads the file from beside its
   * own keys, so an admin.pem that expired while the server was down is
   * renewed too. Refuses a certificate this deployment did not issue as an
   * admin identity, a revoked one, and a revoked key.
   */
  async renewAdminIdentity(certificateDer: Buffer): Promise<IssuedCertificateView> {
    const now = this.#now();
    let serial: string;
    try {
      serial = canonicalSerial(new X509Certificate(certificateDer).serialNumber);
    } catch (error) {
      throw invalid(`the admin certificate is not a valid X.509 certificate: ${describe(error)}`, error);
    }
    const fingerprint = sha256Hex(certificateDer);
    const record = await this.#store.getCertificate(serial);
    if (!record || sha256Hex(record.der) !== fingerprint || record.profile !== 'admin') {
      throw permissionDenied(`certificate ${serial} is not an admin identity issued by this deployment`);
    }
    if (record.revokedAt || this.#revocations.isRevoked(serial)) {
      throw permissionDenied(`admin certificate ${serial} is revoked; it is not renewed`);
    }
    const publicKey = new X509Certificate(record.der).publicKey;
    await requireUsableKey(this.#store, publicKey);
    const pkiProfile = RENEW_PROFILES.get(record.profile);
    if (!pkiProfile) throw permissionDenied('admin certificates cannot be renewed');
    const admin: Caller = {
      spiffeId: spiffeIdOf(record.sans),
      serial,
      fingerprint,
      role: 'admin',
      name: commonNameOf(record.subject),
    };
    return this.#renewed(admin, record, pkiProfile, publicKey, null, now);
  }

  /** Revokes a certificate: an admin, or the holder of the certificate's SPIFFE ID. */
  async revoke(
    caller: Caller,
    serialText: string,
    reasonText?: string,
  ): Promise<{ alreadyRevoked: boolean }> {
    this.#requireLive(caller);
    const serial = canonicalSerial(serialText);
    const reason = reasonOf(reasonText);
    const record = await this.#store.getCertificate(serial);
    const holder =
      record !== null && caller.spiffeId !== '' && record.sans.includes(`uri:${caller.spiffeId}`);
    // Someone else's certificate looks exactly like a missing one: a refusal
    // must not tell a non-admin what exists outside what it holds.
    if (!record || (caller.role !== 'admin' && !holder)) {
      throw notFound(`certificate ${serial} not found among the certificates you may revoke`);
    }
    const now = this.#now();
    // Recorded first and also for a certificate revoked before for another reason: the key is what ends.
    if (endsKey(reason)) await this.#endKey(record, reason, caller.spiffeId, now);
    if (record.revokedAt) return { alreadyRevoked: true };
    const changed = await this.#store.revokeCertificate(serial, reason, now);
    this.#afterRevocation([serial]);
    const delegated = record.profile === 'delegation' || record.profile === 'command';
    if (changed) {
      this.#emit({
        action: delegated ? 'delegation.revoked' : 'certificate.revoked',
        by: caller.spiffeId,
        serial,
        spiffeId: spiffeIdOf(record.sans),
        profile: record.profile,
        reason,
        revocation: delegated ? 'delegation' : 'certificate',
        ...(delegated ? { fingerprint: sha256Hex(record.der) } : {}),
      });
    }
    if (delegated) {
      // Keep the delegation tree's record in step (its event carries the fingerprint too).
      await this.#store.revokeDelegation(sha256Hex(record.der), reason, now, caller.spiffeId);
      await this.#releaseReservations(sha256Hex(record.der), caller.spiffeId);
    }
    if (record.profile === 'intermediate' && this.#cas.rootKey()) await this.#crls.publishRoot();
    return { alreadyRevoked: !changed };
  }

  /**
   * Ends the key of `record` (revoked-keys.ts): recorded in the store, and
   * every other valid certificate of the same identity with that key revoked
   * too. Safe to repeat.
   */
  async #endKey(record: CertificateRecord, reason: string, by: string, now: Date): Promise<void> {
    const key = new X509Certificate(record.der).publicKey;
    const keyHash = keyHashOf(key);
    const nodeId = record.profile === 'node' ? record.requester : null;
    if (
      await this.#store.revokeKey({
        keyHash,
        reason,
        serial: record.serial,
        nodeId,
        revokedAt: now,
        revokedBy: by,
      })
    ) {
      this.#emit({
        action: 'key.revoked',
        by,
        keyHash,
        serial: record.serial,
        reason,
        ...(nodeId ? { nodeId } : {}),
      });
    }
    const holding = nodeId
      ? await this.#limits.node(nodeId, now)
      : await this.#limits.lineage(await this.#limits.lineageOf(record), record, now);
    const revoked: string[] = [];
    for (const other of validCertificates(holding, now)) {
      if (other.serial === record.serial) continue;
      if (keyHashOf(new X509Certificate(other.der).publicKey) !== keyHash) continue;
      if (!(await this.#store.revokeCertificate(other.serial, reason, now))) continue;
      revoked.push(other.serial);
      this.#emit({
        action: 'certificate.revoked',
        by,
        serial: other.serial,
        spiffeId: spiffeIdOf(other.sans),
        profile: other.profile,
        reason,
        revocation: 'key',
      });
    }
    this.#afterRevocation(revoked);
  }

  trustBundle(): TrustBundle {
    const { roots, intermediates } = this.#cas.bundle(this.#now());
    return {
      trustDomain: this.#trustDomain,
      roots,
      intermediates,
      rootFingerprint: this.rootFingerprint,
      policyOid: this.#policyOid.text,
    };
  }

  /** PEM of the trust bundle's roots. */
  trustBundlePem(): string {
    return this.trustBundle()
      .roots.map((der) => encodePem('CERTIFICATE', der))
      .join('');
  }

  /**
   * A snapshot of every revoked, unexpired serial (delivered before this
   * returns), then each delta. For a delegate (`grant`), only what lies
   * beneath it, delivered asynchronously (see Delegations.watchRevocations).
   */
  watchRevocations(listener: (update: RevocationUpdate) => void, grant?: DelegateGrant): () => void {
    if (!grant) return this.#revocations.watch(listener);
    return this.#delegations.watchRevocations(
      grant,
      (inner) => this.#revocations.watch(inner),
      listener,
      (error) => this.#warn(`a delegate's revocation watch failed: ${describe(error)}`, error),
    );
  }

  revokedSerials(): string[] {
    return this.#revocations.snapshot();
  }

  /** What transport enforces: fed by store events from every replica. */
  revocationSource(): RevocationSource {
    return this.#revocations;
  }

  async listCertificates(
    caller: Caller,
    filter: ListCertificatesFilter = {},
  ): Promise<Page<CertificateSummary>> {
    this.#requireAdmin(caller, 'list certificates');
    const pageSize = wholeNumber(filter.pageSize, 'page_size', MAX_PAGE_SIZE, 100);
    const storeFilter: CertificateFilter = {
      ...(filter.requester ? { requester: filter.requester } : {}),
      ...(filter.profile ? { profile: filter.profile } : {}),
      ...(filter.issuerId ? { issuerId: filter.issuerId } : {}),
      ...(filter.revoked !== undefined ? { revoked: filter.revoked } : {}),
      ...(filter.validAt ? { validAt: filter.validAt } : {}),
      ...(filter.pageToken ? { pageToken: filter.pageToken } : {}),
      pageSize,
    };
    const page = await this.#store.listCertificates(storeFilter);
    return { items: page.items.map(certificateSummary), nextPageToken: page.nextPageToken };
  }

  /** One certificate record (admin, or its holder). */
  async getCertificate(caller: Caller, serialText: string): Promise<CertificateRecord> {
    this.#requireLive(caller);
    const serial = canonicalSerial(serialText);
    const record = await this.#store.getCertificate(serial);
    if (
      !record ||
      (caller.role !== 'admin' && !(caller.spiffeId !== '' && record.sans.includes(`uri:${caller.spiffeId}`)))
    ) {
      throw notFound(`certificate ${serial} not found among the certificates you may read`);
    }
    return record;
  }

  // ------------------------------------------------------------ delegation

  /**
   * The grant of a delegate connection: its verified leaf and the CA
   * certificates it sent (sigil-chain-bin). See delegations.ts.
   */
  async admitDelegate(leafDer: Buffer, presented: readonly Buffer[]): Promise<DelegateGrant> {
    return this.#delegations.admit(leafDer, presented);
  }

  /** A direct delegation or command certificate under this replica's intermediate. Admin only. */
  async createDelegation(
    caller: Caller,
    request: Omit<DelegationRequest, 'publicKey'> & { readonly possession: Possession | undefined },
  ): Promise<CreatedDelegation> {
    this.#requireAdmin(caller, 'create delegations');
    const publicKey = verifySignProof(request.possession, caller.fingerprint, this.#now());
    await requireUsableKey(this.#store, publicKey);
    const created = await this.#delegations.create({ ...request, publicKey }, caller.spiffeId);
    this.#emit({
      action: 'delegation.created',
      by: caller.spiffeId,
      serial: created.serial,
      spiffeId: created.spiffeId,
      profile: request.command ? 'command' : 'delegation',
      issuance: 'delegate',
      notAfter: created.notAfter,
    });
    return created;
  }

  async delegationStatus(grant: DelegateGrant): Promise<DelegationStatusView> {
    return this.#delegations.status(grant);
  }

  /** Every delegation recorded (issued here or seen in a presented chain), as a forest. */
  async delegationTree(): Promise<DelegationTreeNode[]> {
    return this.#delegations.tree();
  }

  async reserve(grant: DelegateGrant, request: ReservationRequest) {
    return this.#delegations.reserve(grant, request);
  }

  async release(grant: DelegateGrant, holder: string): Promise<boolean> {
    return this.#delegations.release(grant, holder);
  }

  /** Revokes a certificate in a delegation subtree: a delegate's own subtree (grant), or any (admin). */
  async revokeDelegated(
    caller: Caller,
    grant: DelegateGrant | null,
    request: { certificate: Buffer; chain: readonly Buffer[]; reason?: string },
  ): Promise<{ alreadyRevoked: boolean }> {
    this.#requireLive(caller);
    if (!grant && caller.role !== 'admin')
      throw permissionDenied('only an admin or a delegate may revoke delegations');
    const reason = reasonOf(request.reason);
    const result = await this.#delegations.revoke(
      grant,
      request.certificate,
      request.chain,
      reason,
      caller.spiffeId,
    );
    if (!result.alreadyRevoked) {
      this.#emit({
        action: 'delegation.revoked',
        by: caller.spiffeId,
        serial: result.serial,
        fingerprint: result.fingerprint,
        spiffeId: result.spiffeId,
        profile: result.profile,
        reason,
        revocation: 'delegation',
      });
    }
    await this.#releaseReservations(result.fingerprint, caller.spiffeId);
    return { alreadyRevoked: result.alreadyRevoked };
  }

  /** Frees what a revoked delegation (or command, or workload) certificate held (Delegations.releaseRevoked). */
  async #releaseReservations(fingerprint: string, by: string): Promise<void> {
    const released = await this.#delegations.releaseRevoked(fingerprint);
    if (released && released.count > 0) {
      this.#emit({
        action: 'reservations.released',
        by,
        fingerprint,
        subtree: released.subtree,
        count: released.count,
      });
    }
  }

  /** Whether one of this deployment's CAs (current or retired) signed `certificateDer` directly. */
  issuedByDeployment(certificateDer: Buffer): boolean {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(certificateDer);
    } catch {
      return false;
    }
    return this.#serverCaCertificates().some((ca) => {
      try {
        return certificate.checkIssued(ca) && certificate.verify(ca.publicKey);
      } catch {
        return false;
      }
    });
  }

  /** The deployment's CA certificates (roots and intermediates, current and retired), for transport. */
  deploymentAuthorities(): readonly X509Certificate[] {
    return this.#serverCaCertificates();
  }

  #serverCaCertificates(): X509Certificate[] {
    const cas = this.#cas;
    if (this.#caCertificates?.cas !== cas) {
      this.#caCertificates = {
        cas,
        certificates: cas.all().map((ca) => new X509Certificate(ca.record.certificate)),
      };
    }
    return this.#caCertificates.certificates;
  }

  // ---------------------------------------------------------------- tokens

  async createToken(caller: Caller, request: CreateTokenRequest = {}): Promise<CreatedToken> {
    this.#requireAdmin(caller, 'create join tokens');
    const now = this.#now();
    const kind: TokenKind = request.replica ? 'replica' : 'node';
    const ttlSeconds = wholeNumber(
      request.ttlSeconds,
      'token ttl_seconds',
      MAX_TOKEN_TTL_MS / 1000,
      DEFAULT_TOKEN_TTL_MS / 1000,
    );
    const uses = wholeNumber(request.uses, 'token uses', MAX_TOKEN_USES, 1);
    if (kind === 'replica' && request.autoApprove) {
      throw invalid('auto-approve applies to node join tokens, not replica tokens');
    }
    const id = newTokenId(kind);
    const secret = newTokenSecret();
    const record: TokenRecord = {
      id,
      secretHash: hashTokenSecret(secret),
      name: displayName(request.name, 'token name'),
      usesTotal: uses,
      usesLeft: uses,
      autoApprove: request.autoApprove === true,
      createdAt: now,
      expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
      revokedAt: null,
      createdBy: caller.spiffeId,
    };
    const token = encodeJoinToken({
      addresses: this.#addresses,
      rootFingerprint: this.rootFingerprint,
      id,
      secret,
    });
    await this.#store.insertToken(record);
    this.#emit({
      action: 'token.created',
      by: caller.spiffeId,
      tokenId: id,
      tokenKind: kind,
      count: uses,
      autoApprove: record.autoApprove,
      notAfter: record.expiresAt,
    });
    return { token, summary: tokenSummary(record) };
  }

  async listTokens(caller: Caller): Promise<TokenSummary[]> {
    this.#requireAdmin(caller, 'list join tokens');
    return (await this.#store.listTokens()).map(tokenSummary);
  }

  async revokeToken(caller: Caller, id: string): Promise<{ alreadyRevoked: boolean }> {
    this.#requireAdmin(caller, 'revoke join tokens');
    if (tokenKindOf(id) === null) throw invalid(`"${id.slice(0, 40)}" is not a token ID`);
    const token = await this.#store.getToken(id);
    if (!token) throw notFound(`join token ${id} not found`);
    if (token.revokedAt) return { alreadyRevoked: true };
    const changed = await this.#store.revokeToken(id, this.#now());
    if (changed) this.#emit({ action: 'token.revoked', by: caller.spiffeId, tokenId: id });
    return { alreadyRevoked: !changed };
  }

  /**
   * Looks the token up by its public ID and compares the secret's hash in
   * constant time. Unknown ID and wrong secret give the same error.
   */
  async #checkTokenSecret(tokenId: string, secret: Buffer, kind: TokenKind): Promise<TokenRecord> {
    if (typeof tokenId !== 'string' || tokenKindOf(tokenId) === null) {
      throw unauthenticated('invalid join token: malformed token ID');
    }
    if (!Buffer.isBuffer(secret) || secret.length !== TOKEN_SECRET_BYTES) {
      throw unauthenticated(`invalid join token: the secret must be ${TOKEN_SECRET_BYTES} bytes`);
    }
    const token = await this.#store.getToken(tokenId);
    if (!secretMatches(secret, token?.secretHash ?? null) || !token)
      throw unauthenticated('invalid join token');
    if (tokenKindOf(tokenId) !== kind) {
      throw permissionDenied(
        kind === 'node'
          ? 'this is a replica join token; a node needs a node join token'
          : 'this is a node join token; a replica needs a replica join token (sigil token create --replica)',
      );
    }
    return token;
  }

  // ------------------------------------------------------------- enrolment

  /**
   * Monogon's register: a join token plus proof of the node's key. The node
   * ID comes from the key; the token is consumed atomically (a single-use
   * token admits one node, whatever the concurrency). Repeating it with the
   * same key returns the node's state, and its certificate once it is UP.
   */
  async register(request: RegisterRequest): Promise<RegisterResult> {
    const now = this.#now();
    const token = await this.#checkTokenSecret(request.tokenId, request.tokenSecret, 'node');
    const publicKey = verifyRegisterProof(request.possession, request.tokenId, request.tokenSecret);
    const name = displayName(request.name, 'node name');
    const id = nodeIdFor(publicKey);
    // Before the token is spent: a revoked key changes nothing.
    await requireUsableKey(this.#store, publicKey);
    const node =
      (await this.#store.getNode(id)) ??
      (await this.#spendToken(
        token,
        { id, publicKey: spkiDer(publicKey), name, state: 'NEW' },
        now,
        nodeSpiffeId(this.#trustDomain, id),
      ));
    return this.#enrolmentResult(node, now);
  }

  /**
   * Consumes one use of `token` and records the enrolment, atomically (the
   * store's registerNode). Refuses a token that is unusable now or was used
   * up by a concurrent registration, naming why.
   */
  async #spendToken(
    token: TokenRecord,
    node: Pick<NodeRecord, 'id' | 'publicKey' | 'name' | 'state'>,
    now: Date,
    by: string,
  ): Promise<NodeRecord> {
    const problem = tokenProblem(token, now);
    if (problem) throw problem;
    const result = await this.#store.registerNode(
      token.id,
      { ...node, tokenId: token.id, createdAt: now, updatedAt: now, certificateSerial: null },
      now,
    );
    if (result.outcome === 'created') {
      this.#emit({ action: 'token.spent', by, tokenId: token.id, nodeId: node.id });
      if (isNodeId(node.id)) {
        this.#emit({ action: 'node.registered', by, tokenId: token.id, nodeId: node.id, state: node.state });
      }
    }
    if (result.outcome !== 'token-unusable') return result.node;
    const fresh = await this.#store.getToken(token.id);
    throw (
      (fresh && tokenProblem(fresh, now)) ?? permissionDenied(`join token ${token.id} can no longer be used`)
    );
  }

  async #enrolmentResult(node: NodeRecord, now: Date): Promise<RegisterResult> {
    if (node.state === 'REVOKED') throw permissionDenied(`node ${node.id} has been revoked`);
    const by = nodeSpiffeId(this.#trustDomain, node.id);
    if (node.state === 'NEW') {
      const token = await this.#store.getToken(node.tokenId);
      if (!token?.autoApprove) return { node: nodeView(node, this.#trustDomain) };
      return this.#approveAndIssue(node, now, by);
    }
    const current = node.certificateSerial ? await this.#store.getCertificate(node.certificateSerial) : null;
    if (
      current &&
      !current.revokedAt &&
      now.getTime() < renewalDue(current.notBefore, current.notAfter) &&
      this.#cas.get(current.issuerId)
    ) {
      return { node: nodeView(node, this.#trustDomain), certificate: this.#viewOf(current) };
    }
    return this.#freshNodeCertificate(node, now, 'register', by);
  }

  /** A node whose certificate lapsed proves its enrolled key and gets a new one, unless revoked. */
  async rejoin(request: { readonly possession?: Possession }): Promise<RegisterResult> {
    const now = this.#now();
    const publicKey = verifyRejoinProof(request.possession, now);
    const id = nodeIdFor(publicKey);
    const node = await this.#store.getNode(id);
    if (!node) throw notFound(`no node is enrolled with this key (node ${id}); register with a join token`);
    if (node.state === 'REVOKED') throw permissionDenied(`node ${id} has been revoked`);
    await requireUsableKey(this.#store, publicKey);
    if (node.state === 'NEW') throw preconditionFailed(`node ${id} is not approved yet (state NEW)`);
    return this.#freshNodeCertificate(node, now, 'rejoin', nodeSpiffeId(this.#trustDomain, id));
  }

  /** NEW → UP, issuing the node's certificate (its next Register returns it). UP stays UP. */
  async approveNode(caller: Caller, idText: string): Promise<NodeView> {
    this.#requireAdmin(caller, 'approve nodes');
    const id = parseNodeId(idText);
    const node = await this.#store.getNode(id);
    if (!node) throw notFound(`node ${id} not found`);
    if (node.state === 'REVOKED') {
      throw preconditionFailed(`node ${id} is REVOKED and cannot be approved (only NEW → UP is allowed)`);
    }
    if (node.state === 'UP') return nodeView(node, this.#trustDomain);
    return (await this.#approveAndIssue(node, this.#now(), caller.spiffeId)).node;
  }

  /** Any state → REVOKED, and every certificate of the node revoked. Repeating it is safe. */
  async revokeNode(caller: Caller, idText: string, reasonText?: string): Promise<NodeView> {
    this.#requireAdmin(caller, 'revoke nodes');
    const id = parseNodeId(idText);
    const reason = reasonOf(reasonText);
    const now = this.#now();
    let node = await this.#store.getNode(id);
    if (!node) throw notFound(`node ${id} not found`);
    if (node.state !== 'REVOKED') {
      node =
        (await this.#store.transitionNode(id, ['NEW', 'UP'], 'REVOKED', { at: now })) ??
        (await this.#store.getNode(id));
      if (!node) throw notFound(`node ${id} not found`);
    }
    // Collected first, revoked after: revoking while paging would shift the pages.
    const serials: string[] = [];
    // Every key the node ever had ends with it (revoked-keys.ts): the enrolled one and any it rotated to.
    const keys = new Set<string>([keyHashOf(node.publicKey)]);
    let pageToken = '';
    do {
      const page = await this.#store.listCertificates({ requester: id, pageSize: MAX_PAGE_SIZE, pageToken });
      for (const record of page.items) {
        keys.add(keyHashOf(new X509Certificate(record.der).publicKey));
        if (record.revokedAt === null) serials.push(record.serial);
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    for (const keyHash of keys) {
      const record = { keyHash, reason: NODE_REVOKED, serial: null, nodeId: id, revokedAt: now };
      if (await this.#store.revokeKey({ ...record, revokedBy: caller.spiffeId })) {
        this.#emit({ action: 'key.revoked', by: caller.spiffeId, keyHash, reason: NODE_REVOKED, nodeId: id });
      }
    }
    const revoked: string[] = [];
    for (const serial of serials) {
      if (await this.#store.revokeCertificate(serial, reason, now)) {
        revoked.push(serial);
        this.#emit({
          action: 'certificate.revoked',
          by: caller.spiffeId,
          serial,
          spiffeId: nodeSpiffeId(this.#trustDomain, id),
          profile: 'node',
          reason,
          revocation: 'node',
          nodeId: id,
        });
      }
    }
    this.#afterRevocation(revoked);
    this.#emit({ action: 'node.revoked', by: caller.spiffeId, nodeId: id, reason, count: revoked.length });
    return nodeView(node, this.#trustDomain);
  }

  async getNode(caller: Caller, idText: string): Promise<NodeView> {
    this.#requireAdmin(caller, 'read nodes');
    const id = parseNodeId(idText);
    const node = await this.#store.getNode(id);
    if (!node) throw notFound(`node ${id} not found`);
    return nodeView(node, this.#trustDomain);
  }

  async listNodes(caller: Caller, filter: { readonly state?: NodeState } = {}): Promise<NodeView[]> {
    this.#requireAdmin(caller, 'list nodes');
    if (filter.state !== undefined && !['NEW', 'UP', 'REVOKED'].includes(filter.state)) {
      throw invalid(
        `unknown node state "${String(filter.state).slice(0, 20)}" (expected NEW, UP or REVOKED)`,
      );
    }
    const nodes = await this.#store.listNodes(filter.state ? { state: filter.state } : {});
    return nodes.filter((node) => isNodeId(node.id)).map((node) => nodeView(node, this.#trustDomain));
  }

  async #approveAndIssue(node: NodeRecord, now: Date, by: string): Promise<RegisterResult> {
    const moved = await this.#store.transitionNode(node.id, ['NEW'], 'UP', { at: now });
    const up = moved ?? (await this.#store.getNode(node.id));
    if (!up || up.state === 'REVOKED') throw permissionDenied(`node ${node.id} has been revoked`);
    if (moved) this.#emit({ action: 'node.approved', by, nodeId: node.id, tokenId: node.tokenId });
    return this.#freshNodeCertificate(up, now, 'approve', by);
  }

  /**
   * A new certificate for the node's enrolled key, within the issuance limits
   * (issuance-limits.ts): it supersedes all but the newest one before it.
   */
  async #freshNodeCertificate(
    node: NodeRecord,
    now: Date,
    kind: IssuanceKind,
    by: string,
  ): Promise<RegisterResult> {
    return this.#limits.oneAtATime(`node:${node.id}`, async () => {
      const holding = await this.#limits.node(node.id, now);
      checkIssuance(holding, now, { rotation: false });
      const previous = validCertificates(holding, now)[0]?.serial;
      const issued = await this.#issue({
        publicKey: publicKeyFromSpki(node.publicKey),
        pkiProfile: 'server+client',
        recordProfile: 'node',
        commonName: node.id,
        sans: [uriName(nodeSpiffeId(this.#trustDomain, node.id))],
        ttlMs: NODE_TTL_MS,
        requester: node.id,
        now,
      });
      const updated = await this.#recordNodeCertificate(node.id, issued, now);
      this.#issuedEvent(issued, by, kind, 'node');
      const keep = new Set([issued.serial, ...(previous ? [previous] : [])]);
      await this.#supersede(holding, keep, by, now);
      return { node: nodeView(updated, this.#trustDomain), certificate: issued };
    });
  }

  /** Revokes, as superseded, the valid certificates of `holding` not in `keep`. */
  async #supersede(holding: Holding, keep: ReadonlySet<string>, by: string, now: Date): Promise<void> {
    const revoked: string[] = [];
    for (const serial of supersededBy(holding, keep, now)) {
      if (!(await this.#store.revokeCertificate(serial, 'superseded', now))) continue;
      revoked.push(serial);
      this.#emit({
        action: 'certificate.revoked',
        by,
        serial,
        reason: 'superseded',
        revocation: 'superseded',
      });
    }
    this.#afterRevocation(revoked);
  }

  /** Points the node at its newest certificate; if it was revoked meanwhile, revokes that certificate too. */
  async #recordNodeCertificate(id: string, issued: IssuedCertificateView, now: Date): Promise<NodeRecord> {
    const updated = await this.#store.transitionNode(id, ['UP'], 'UP', {
      certificateSerial: issued.serial,
      at: now,
    });
    if (!updated) {
      if (await this.#store.revokeCertificate(issued.serial, 'cessationOfOperation', now)) {
        this.#afterRevocation([issued.serial]);
      }
      throw permissionDenied(`node ${id} has been revoked`);
    }
    return updated;
  }

  // --------------------------------------------------------------- replicas

  /**
   * Admits a new replica: signs an intermediate for the key it proved, with
   * the root key held here. The token is consumed through the store's atomic
   * registerNode (recorded as replica enrolment "r…", never listed as a
   * node). Repeating it with the same key and replica ID is safe.
   */
  async joinReplica(request: JoinReplicaRequest): Promise<JoinReplicaResult> {
    const now = this.#now();
    const rootIssuer = this.#cas.rootIssuer();
    if (!rootIssuer) {
      throw preconditionFailed(
        `the root key is not online on replica "${this.#replicaId}"; send JoinReplica to the replica holding it (or import the root key)`,
      );
    }
    const replicaId = parseReplicaId(request.replicaId);
    const token = await this.#checkTokenSecret(request.tokenId, request.tokenSecret, 'replica');
    const publicKey = verifyReplicaProof(request.possession, request.tokenId, request.tokenSecret, replicaId);
    await requireUsableKey(this.#store, publicKey);
    const spki = spkiDer(publicKey);
    const existing = this.#cas.intermediates(replicaId);
    if (existing.some((ca) => !spkiDer(ca.info.publicKey).equals(spki))) {
      throw new SigilError(
        'already_exists',
        `replica "${replicaId}" already has an intermediate CA with another key`,
      );
    }
    const enrolmentName = `replica:${replicaId}`;
    const id = replicaEnrolmentIdFor(publicKey);
    const enrolment =
      (await this.#store.getNode(id)) ??
      (await this.#spendToken(
        token,
        { id, publicKey: spki, name: enrolmentName, state: 'UP' },
        now,
        replicaSpiffeId(this.#trustDomain, replicaId),
      ));
    if (enrolment.name !== enrolmentName) {
      throw new SigilError(
        'already_exists',
        `this key already joined as ${enrolment.name ?? 'another replica'}`,
      );
    }
    if (enrolment.state === 'REVOKED') throw permissionDenied(`replica "${replicaId}" has been revoked`);
    const issued = await signIntermediate(this.#store, rootIssuer, {
      trustDomain: this.#trustDomain,
      replicaId,
      generation: nextGeneration(this.#cas, replicaId),
      publicKey,
      ttlMs: this.#intermediateTtlMs,
      now,
      requester: replicaSpiffeId(this.#trustDomain, replicaId),
    });
    this.#emit({
      action: 'certificate.issued',
      by: replicaSpiffeId(this.#trustDomain, replicaId),
      serial: issued.serialHex,
      profile: 'intermediate',
      issuance: 'replica',
      notAfter: issued.notAfter,
    });
    return {
      intermediate: {
        certificate: issued.der,
        chain: [],
        serial: issued.serialHex,
        notBefore: issued.notBefore,
        notAfter: issued.notAfter,
        spiffeId: '',
      },
      bundle: this.trustBundle(),
    };
  }

  /**
   * The root certificate and key as PEM (the key encrypted when a passphrase
   * is given). Unless `keepInStore`, the encrypted root key is then removed
   * from the store: this replica keeps issuing with its intermediate but can
   * no longer admit replicas or rotate intermediates. A root CRL valid until
   * the root expires is published first, since no new one can be signed
   * while the key is away. Write the key out before calling with removal, or
   * call twice: keepInStore first, then removeRootKey.
   */
  async exportRoot(
    caller: Caller,
    options: { passphrase?: string; keepInStore?: boolean } = {},
  ): Promise<ExportedRoot> {
    this.#requireAdmin(caller, 'export the root key');
    return this.#exclusive(async () => {
      const root = this.#cas.requireRoot();
      const key = this.#rootKeyHere(root);
      await this.#crls.publishRoot({ offline: !options.keepInStore });
      const exported: ExportedRoot = {
        certificatePem: encodePem('CERTIFICATE', root.record.certificate),
        privateKeyPem: privateKeyToPem(key, options.passphrase),
        rootFingerprint: root.info.fingerprint,
      };
      if (!options.keepInStore) await this.#removeRootKey(root);
      return exported;
    });
  }

  /** Removes the encrypted root key from the store (after exportRoot with keepInStore). */
  async removeRootKey(caller: Caller): Promise<void> {
    this.#requireAdmin(caller, 'take the root key offline');
    await this.#exclusive(async () => {
      const root = this.#cas.requireRoot();
      this.#rootKeyHere(root);
      await this.#crls.publishRoot({ offline: true });
      await this.#removeRootKey(root);
    });
  }

  /** Brings an exported root key back online on this replica. */
  async importRoot(caller: Caller, options: { privateKeyPem: string; passphrase?: string }): Promise<void> {
    this.#requireAdmin(caller, 'import the root key');
    await this.#exclusive(async () => {
      const root = this.#cas.requireRoot();
      const key = readPrivateKey(options.privateKeyPem, {
        passphrase: options.passphrase,
        source: 'root key',
      });
      if (!keysMatch(key, root.info.publicKey)) {
        throw preconditionFailed("this key does not belong to this store's root CA");
      }
      if (this.#cas.rootKey()) return;
      if (root.record.encryptedKey)
        throw preconditionFailed('the root key is already online on another replica');
      await this.#store.putCa({
        ...root.record,
        encryptedKey: encryptCaKey(key, this.#storeKey, ROOT_CA_ID),
      });
      await this.#reload();
    });
  }

  #rootKeyHere(root: LoadedCa): KeyObject {
    const key = this.#cas.rootKey();
    if (!key) {
      throw preconditionFailed(
        root.record.encryptedKey
          ? `the root key is held by another replica, not by "${this.#replicaId}"`
          : 'the root key is already offline (exported)',
      );
    }
    return key;
  }

  async #removeRootKey(root: LoadedCa): Promise<void> {
    await this.#store.putCa({ ...root.record, encryptedKey: null });
    await this.#reload();
  }

  // ------------------------------------------------------------------ status

  async status(caller: Caller): Promise<AuthorityStatus> {
    this.#requireAdmin(caller, 'read the status');
    const now = this.#now();
    const count = async (filter: CertificateFilter): Promise<number> => {
      let total = 0;
      let pageToken = '';
      do {
        const page = await this.#store.listCertificates({ ...filter, pageSize: MAX_PAGE_SIZE, pageToken });
        total += page.items.length;
        pageToken = page.nextPageToken;
      } while (pageToken !== '');
      return total;
    };
    const nodes = (await this.#store.listNodes()).filter((node) => isNodeId(node.id));
    const replicaIds = [...new Set(this.#cas.intermediates().map((ca) => ca.record.replicaId ?? ''))].sort();
    const replicas = replicaIds.flatMap((replicaId) => {
      const current = this.#cas.currentIntermediate(replicaId, now);
      return current
        ? [
            {
              replicaId,
              intermediateSerial: current.info.serialHex,
              intermediateNotAfter: current.info.notAfter,
            },
          ]
        : [];
    });
    const root = this.#cas.requireRoot();
    return {
      trustDomain: this.#trustDomain,
      rootFingerprint: root.info.fingerprint,
      replicaId: this.#replicaId,
      replicas,
      certificatesIssued: await count({}),
      certificatesRevoked: await count({ revoked: true }),
      nodesNew: nodes.filter((node) => node.state === 'NEW').length,
      nodesUp: nodes.filter((node) => node.state === 'UP').length,
      nodesRevoked: nodes.filter((node) => node.state === 'REVOKED').length,
      store: this.#storeKind,
      rootKeyOnline: root.record.encryptedKey !== null,
      rootKeyHere: this.#cas.rootKey() !== null,
      policyOid: this.#policyOid.text,
    };
  }

  // ------------------------------------------------------------ CRLs, TLS

  /** DER CRL of one CA ("root" or "replica:<id>:<n>"); see crl-cache.ts. */
  async crl(issuerId: string): Promise<Buffer> {
    return this.#crls.crl(issuerId);
  }

  /** CA ids whose CRL this replica serves. */
  crlIssuers(): string[] {
    return this.#crls.servable();
  }

  /** This replica's gRPC server identity; renewed in place at 2/3 of its life. */
  serverMaterial(): MaterialSource {
    return this.#server;
  }

  // ------------------------------------------------------------ maintenance

  /**
   * One round of background work, also run by the timer: reload CAs, rotate
   * intermediates due at 2/3 of their life (on the root holder: its own with
   * a new key, other replicas' by re-certifying their key), renew the server
   * certificate, and prune expired serials from the revoked set.
   */
  async maintain(): Promise<void> {
    if (this.#closed) return;
    await this.#exclusive(async () => {
      await this.#reload();
      await this.#rotateIntermediates();
      await this.#renewServerIfDue();
      await this.#revocations.reload(this.#store, this.#caIds(), this.#now());
      await this.#keepRootCrlFresh();
    });
  }

  /**
   * The root CRL must never expire under a running deployment: the holder of
   * the root key re-signs it when half its 7 days are gone (crl-cache.ts);
   * with the key offline, the last one published lasts a year, and this
   * warns when it has less than 30 days left.
   */
  async #keepRootCrlFresh(): Promise<void> {
    if (this.#cas.rootKey()) {
      await this.#crls.publishRoot();
      return;
    }
    const latest = await this.#crls.latestRoot();
    const now = this.#now();
    if (latest?.nextUpdate && latest.nextUpdate.getTime() - now.getTime() < ROOT_CRL_WARNING_MS) {
      this.#warnOnce(
        `root-crl:${latest.n}`,
        `the root CRL expires at ${latest.nextUpdate.toISOString()} and the root key is offline: bring it back (sigil ca import-root) to sign a new one, or TLS peers that check CRLs will refuse every chain`,
      );
    }
  }

  async #rotateIntermediates(): Promise<void> {
    const now = this.#now();
    const cas = this.#cas;
    const replicaIds = [...new Set(cas.intermediates().map((ca) => ca.record.replicaId ?? ''))];
    if (!cas.rootIssuer()) {
      const own = cas.currentIntermediate(this.#replicaId, now);
      if (own && now.getTime() >= renewalDue(own.info.notBefore, own.info.notAfter)) {
        this.#warnOnce(
          `rotate:${own.record.id}`,
          `intermediate ${own.record.id} expires at ${own.info.notAfter.toISOString()} and the root key is not on this replica; it is rotated by the replica holding the root key`,
        );
      }
      return;
    }
    let changed = false;
    for (const replicaId of replicaIds) {
      const newest = cas.intermediates(replicaId)[0];
      if (!newest) continue;
      const current = cas.currentIntermediate(replicaId, now);
      if (current && now.getTime() < renewalDue(current.info.notBefore, current.info.notAfter)) continue;
      try {
        const fields = { trustDomain: this.#trustDomain, ttlMs: this.#intermediateTtlMs, now };
        if (replicaId === this.#replicaId) {
          await createOwnIntermediate(this.#store, cas, { ...fields, storeKey: this.#storeKey });
        } else {
          await recertifyIntermediate(this.#store, cas, replicaId, fields);
        }
        for (const old of cas.intermediates(replicaId)) {
          if (old.record.retiredAt === null) await this.#store.retireCa(old.record.id, now);
        }
        changed = true;
      } catch (error) {
        this.#warn(`rotating the intermediate of replica "${replicaId}" failed: ${describe(error)}`, error);
      }
    }
    if (changed) await this.#reload();
  }

  async #renewServerIfDue(): Promise<void> {
    const leaf = this.#serverLeaf;
    const now = this.#now();
    const signer = this.#cas.currentIntermediate(this.#replicaId, now);
    const due =
      !leaf ||
      now.getTime() >= renewalDue(leaf.notBefore, leaf.notAfter) ||
      this.#revocations.isRevoked(leaf.serial) ||
      (signer !== undefined && signer.record.id !== leaf.issuerId);
    if (due) this.#server.set(await this.#newServerMaterial());
  }

  async #newServerMaterial() {
    const now = this.#now();
    const { ca, issuer } = this.#cas.signer(now);
    const { privateKey, publicKey } = newServerKey();
    const replicaId = replicaSpiffeId(this.#trustDomain, this.#replicaId);
    const { view } = await issueLeaf(
      this.#store,
      { issuer, issuerId: ca.record.id, chain: [ca.record.certificate], ...this.#crlUrlOf(ca.record.id) },
      {
        publicKey,
        pkiProfile: 'server+client',
        recordProfile: 'server',
        commonName: `sigil replica ${this.#replicaId}`,
        sans: serverNames(this.#addresses, replicaId),
        ttlMs: this.#serverTtlMs,
        requester: replicaId,
        now,
      },
    );
    this.#serverLeaf = {
      serial: view.serial,
      issuerId: ca.record.id,
      notBefore: view.notBefore,
      notAfter: view.notAfter,
    };
    this.#issuedEvent(view, replicaId, 'server', 'server');
    return serverMaterialOf(view.certificate, view.chain, privateKey, this.#cas.bundle(now).roots);
  }

  #schedule(): void {
    if (this.#closed) return;
    const now = this.#now().getTime();
    const due: number[] = [now + MAINTENANCE_INTERVAL_MS];
    if (this.#serverLeaf) due.push(renewalDue(this.#serverLeaf.notBefore, this.#serverLeaf.notAfter));
    if (this.#cas.rootIssuer()) {
      for (const ca of this.#cas.intermediates()) {
        if (ca.record.retiredAt === null) due.push(renewalDue(ca.info.notBefore, ca.info.notAfter));
      }
    }
    const delay = Math.min(Math.max(Math.min(...due) - now, 1000), MAINTENANCE_INTERVAL_MS);
    this.#timer = setTimeout(() => {
      this.maintain()
        .catch((error) => this.#warn(`maintenance failed: ${describe(error)}`, error))
        .finally(() => this.#schedule());
    }, delay);
    this.#timer.unref();
  }

  // ----------------------------------------------------------------- helpers

  async #issueBootstrapAdmin(): Promise<BootstrapOutput> {
    const now = this.#now();
    const { privateKey, publicKey } = generateKeyPair('p256');
    const id = adminSpiffeId(this.#trustDomain, BOOTSTRAP_ADMIN_NAME);
    const issued = await this.#issue({
      publicKey,
      pkiProfile: 'client',
      recordProfile: 'admin',
      commonName: BOOTSTRAP_ADMIN_NAME,
      sans: [uriName(id)],
      ttlMs: ADMIN_TTL_MS,
      requester: 'bootstrap',
      now,
    });
    this.#issuedEvent(issued, 'bootstrap', 'bootstrap', 'admin');
    const root = this.#cas.requireRoot();
    return {
      trustDomain: this.#trustDomain,
      rootFingerprint: root.info.fingerprint,
      adminCertificatePem: [issued.certificate, ...issued.chain]
        .map((der) => encodePem('CERTIFICATE', der))
        .join(''),
      adminKeyPem: privateKeyToPem(privateKey),
      adminSpiffeId: id,
      rootCertificatePem: encodePem('CERTIFICATE', root.record.certificate),
    };
  }

  async #issue(request: LeafRequest): Promise<IssuedCertificateView> {
    const { ca, issuer } = this.#cas.signer(request.now);
    const { view } = await issueLeaf(
      this.#store,
      { issuer, issuerId: ca.record.id, chain: [ca.record.certificate], ...this.#crlUrlOf(ca.record.id) },
      request,
    );
    return view;
  }

  /** The CRL distribution point of leaves `issuerId` signs, when there is an HTTP URL to advertise. */
  #crlUrlOf(issuerId: string): { crlUrl?: string } {
    const base = this.#crlBaseUrl();
    return base ? { crlUrl: crlUrl(base, issuerId) } : {};
  }

  /** Hands an audit event to onAudit; a failing sink is a warning, never a failed operation. */
  #emit(event: AuditEvent): void {
    if (!this.#onAudit) return;
    try {
      this.#onAudit(event);
    } catch (error) {
      this.#warn(`the audit sink failed: ${describe(error)}`, error);
    }
  }

  #issuedEvent(issued: IssuedCertificateView, by: string, issuance: IssuanceKind, profile: string): void {
    this.#emit({
      action: 'certificate.issued',
      by,
      serial: issued.serial,
      spiffeId: issued.spiffeId,
      profile,
      issuance,
      notAfter: issued.notAfter,
    });
  }

  #viewOf(record: CertificateRecord): IssuedCertificateView {
    const issuer = this.#cas.get(record.issuerId);
    return {
      certificate: record.der,
      chain: issuer ? [issuer.record.certificate] : [],
      serial: record.serial,
      notBefore: record.notBefore,
      notAfter: record.notAfter,
      spiffeId: spiffeIdOf(record.sans),
    };
  }

  #requireLive(caller: Caller): void {
    if (caller.serial !== '' && this.#revocations.isRevoked(caller.serial)) {
      throw permissionDenied(`the caller certificate ${caller.serial} is revoked`);
    }
  }

  #requireAdmin(caller: Caller, what: string): void {
    this.#requireLive(caller);
    if (caller.role !== 'admin') {
      throw permissionDenied(
        `only an admin may ${what} (caller ${caller.spiffeId || 'without a SPIFFE ID'})`,
      );
    }
  }

  #caIds(): string[] {
    return this.#cas.all().map((ca) => ca.record.id);
  }

  #afterRevocation(serials: readonly string[]): void {
    if (serials.length === 0) return;
    this.#revocations.add(serials);
    this.#crls.invalidate();
  }

  #onEvent(event: StoreEvent): void {
    if (this.#closed) return;
    if (event.kind === 'revocation') {
      this.#afterRevocation(event.serials);
      const intermediates = new Set(this.#cas.intermediates().map((ca) => ca.info.serialHex));
      if (this.#cas.rootKey() && event.serials.some((serial) => intermediates.has(serial))) {
        this.#crls
          .publishRoot()
          .catch((error) => this.#warn(`publishing the root CRL failed: ${describe(error)}`, error));
      }
    } else if (event.kind === 'ca') {
      this.#exclusive(() => this.#reload()).catch((error) =>
        this.#warn(`reloading CAs after a change failed: ${describe(error)}`, error),
      );
    }
  }

  async #reload(): Promise<void> {
    this.#cas = await CaSet.load(this.#store, this.#replicaId, this.#storeKey);
    this.#crls.invalidate();
  }

  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(work, work);
    this.#lock = run.catch(() => {});
    return run;
  }

  #warnOnce(key: string, message: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#warn(message);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
