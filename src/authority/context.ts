// What every concern of the authority shares: the store, the CA set of the
// moment, the clock, the options and the audit sink, plus the few acts they
// all need (issue from this replica's intermediate, report, feed the
// revocation set). Authority (authority.ts) builds one per start and hands it
// to each concern (certificates.ts, enrolment.ts, …) as its first argument,
// so no concern imports the facade.
import { X509Certificate } from 'node:crypto';
import { invalid } from '../errors.ts';
import type { PolicyOid } from '../pki/policy-extension.ts';
import { checkServerAddress } from '../protocol/join-tokens.ts';
import type { Store } from '../store/store.ts';
import type { AuditEvent, AuditSink } from './audit.ts';
import type { JoinMaterial } from './bootstrap.ts';
import { CaSet } from './ca-set.ts';
import { CrlCache, crlUrl } from './crl-cache.ts';
import { Delegations } from './delegations.ts';
import { parseReplicaId } from './identities.ts';
import type { IdentityLock } from './identity-lock.ts';
import { type IssuedCertificateView, issueLeaf, type LeafRequest, type LeafSigner } from './issuance.ts';
import { IssuanceLimits } from './issuance-limits.ts';
import { checkStoreKey } from './key-encryption.ts';
import { INTERMEDIATE_TTL_MS, SERVER_TTL_MS } from './lifetimes.ts';
import { RevocationTracker } from './revocations.ts';

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
  /** Serializes each identity's issuance decisions; default: within this process (identity-lock.ts). */
  readonly identityLock?: IdentityLock;
}

export interface AuthorityContext {
  readonly store: Store;
  readonly replicaId: string;
  readonly storeKey: Buffer;
  /** Fixed at bootstrap (bootstrap.ts), like the policy OID. */
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  readonly serverAddresses: readonly string[];
  /** "sqlite" or "postgres", for status. */
  readonly storeKind: string;
  readonly intermediateTtlMs: number;
  readonly serverTtlMs: number;
  readonly now: () => Date;
  /** The CA set as last loaded; reload() replaces it, so read it afresh rather than keep it. */
  readonly cas: CaSet;
  readonly limits: IssuanceLimits;
  readonly revocations: RevocationTracker;
  readonly crls: CrlCache;
  readonly delegations: Delegations;
  /** Loads the CA set from the store again (run it inside exclusive). */
  reload(): Promise<void>;
  /** Runs `work` after every CA change, reload and maintenance round queued before it. */
  exclusive<T>(work: () => Promise<T>): Promise<T>;
  /** Reports that background work (or a subscriber, or the audit sink) `what` failed, and why. */
  failed(what: string, error: unknown): void;
  /** Warns once per `key` for this authority's life (a condition the maintenance round keeps finding). */
  warnOnce(key: string, message: string): void;
  /** Hands an event to onAudit; a failing sink is a warning, never a failed operation. */
  audit(event: AuditEvent): void;
  /** After this replica revoked `serials`: the revocation set and CRLs learn at once (store events follow). */
  revoked(serials: readonly string[]): void;
  /** This replica's current intermediate as the signer of a leaf issued at `now`. */
  leafSigner(now: Date): LeafSigner;
  /** Issues and records a leaf signed by this replica's current intermediate. */
  issue(request: LeafRequest): Promise<IssuedCertificateView>;
  /** The deployment's CA certificates (roots and intermediates, current and retired), parsed once per CA set. */
  caCertificates(): X509Certificate[];
}

/** Refuses options the authority cannot start with, before anything touches the store. */
export function checkAuthorityOptions(options: AuthorityOptions): void {
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
}

/** What start-up (bootstrap.ts startUp) settled: the deployment's fixed facts and its CAs. */
export interface StartedStore {
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  readonly cas: CaSet;
}

export function createAuthorityContext(options: AuthorityOptions, started: StartedStore): AuthorityContext {
  const { store, replicaId, storeKey } = options;
  const now = options.now ?? (() => new Date());
  const onWarning =
    options.onWarning ??
    ((message: string) => process.emitWarning(`sigil authority: ${message}`, 'SigilAuthorityWarning'));
  const failed = (what: string, error: unknown) => onWarning(`${what} failed: ${messageOf(error)}`, error);
  const crlBaseUrl = options.crlBaseUrl ?? (() => undefined);
  const warned = new Set<string>();
  let cas = started.cas;
  let lock: Promise<unknown> = Promise.resolve();
  let parsed: { cas: CaSet; certificates: X509Certificate[] } | null = null;
  const revocations = new RevocationTracker((error) => failed('a revocation subscriber', error));
  const crls = new CrlCache(store, () => cas, now);
  const revoked = (serials: readonly string[]): void => {
    if (serials.length === 0) return;
    revocations.add(serials);
    crls.invalidate();
  };
  const caCertificates = (): X509Certificate[] => {
    const current = cas;
    if (parsed?.cas !== current) {
      parsed = {
        cas: current,
        certificates: current.all().map((ca) => new X509Certificate(ca.record.certificate)),
      };
    }
    return parsed.certificates;
  };
  const leafSigner = (at: Date): LeafSigner => {
    const { ca, issuer } = cas.signer(at);
    // The CRL distribution point, when there is an HTTP URL to advertise.
    const base = crlBaseUrl();
    const url = base ? { crlUrl: crlUrl(base, ca.record.id) } : {};
    return { issuer, issuerId: ca.record.id, chain: [ca.record.certificate], ...url };
  };
  return {
    store,
    replicaId,
    storeKey,
    trustDomain: started.trustDomain,
    policyOid: started.policyOid,
    serverAddresses: options.serverAddresses,
    storeKind: options.storeKind ?? 'sqlite',
    intermediateTtlMs: options.intermediateTtlMs ?? INTERMEDIATE_TTL_MS,
    serverTtlMs: options.serverTtlMs ?? SERVER_TTL_MS,
    now,
    get cas() {
      return cas;
    },
    limits: new IssuanceLimits(store, options.identityLock),
    revocations,
    crls,
    delegations: new Delegations({
      store,
      trustDomain: started.trustDomain,
      policyOid: started.policyOid,
      now,
      serverCas: caCertificates,
      signer: (at) => {
        const { ca, issuer } = cas.signer(at);
        return { issuer, issuerId: ca.record.id, chain: [ca.record.certificate] };
      },
      isRevoked: (id) => revocations.isRevoked(id),
      revoked,
    }),
    async reload() {
      cas = await CaSet.load(store, replicaId, storeKey);
      crls.invalidate();
    },
    exclusive<T>(work: () => Promise<T>): Promise<T> {
      const run = lock.then(work, work);
      lock = run.catch(() => {});
      return run;
    },
    failed,
    warnOnce(key, message) {
      if (warned.has(key)) return;
      warned.add(key);
      onWarning(message);
    },
    audit(event) {
      if (!options.onAudit) return;
      try {
        options.onAudit(event);
      } catch (error) {
        failed('the audit sink', error);
      }
    },
    revoked,
    leafSigner,
    async issue(request) {
      return (await issueLeaf(store, leafSigner(request.now), request)).view;
    },
    caCertificates,
  };
}

/**
 * The message of a failure as the authority has always shown it: the error's
 * own message (errors.ts describeError adds "unexpected error: " to a
 * foreign one, which warnings and these messages never did).
 */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
