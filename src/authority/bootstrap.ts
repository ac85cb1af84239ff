// Start-up, Monogon's three modes, decided from what the store holds:
//
//   bootstrap  the store is empty: this replica claims it (setting
//              "bootstrap_replica", first writer wins across replicas),
//              fixes the trust domain, creates the root CA and its own
//              intermediate. Every step is idempotent, so a crash part-way
//              resumes on the next start instead of leaving a broken store.
//   serve      the store has a root and this replica's intermediate: use
//              them as they are (nothing is regenerated on restart).
//   join       the store has a root but no intermediate for this replica:
//              the replica must bring one, obtained with a replica join token
//              from a replica holding the root key (JoinReplica). Its key was
//              generated here and never left; no CA key is shared.
//
// Every CA key is stored encrypted with the store key of the replica that
// owns it (key-encryption.ts), so only that replica can use it.
import { type KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import { invalid, preconditionFailed } from '../errors.ts';
import { parseCertificate } from '../pki/certificate.ts';
import type { SubjectName } from '../pki/distinguished-name.ts';
import { createRootCertificate, type Issuer, type SignedCertificate } from '../pki/issuer.ts';
import { generateKeyPair, keysMatch } from '../pki/keys.ts';
import { DEFAULT_TRUST_DOMAIN, parseTrustDomain } from '../pki/names.ts';
import { DEFAULT_POLICY_OID, type PolicyOid, parsePolicyOid } from '../pki/policy-extension.ts';
import type { CaRecord, Store } from '../store/store.ts';
import { CaSet, generationOf, intermediateCaId, ROOT_CA_ID } from './ca-set.ts';
import { replicaSpiffeId } from './identities.ts';
import { certificateRecord } from './issuance.ts';
import { encryptCaKey } from './key-encryption.ts';
import { ROOT_TTL_MS } from './lifetimes.ts';

export const SETTING_TRUST_DOMAIN = 'trust_domain';
export const SETTING_POLICY_OID = 'policy_oid';
export const SETTING_BOOTSTRAP_REPLICA = 'bootstrap_replica';
/** Set once the admin identity of the bootstrap has been written out (Authority.confirmBootstrap). */
export const SETTING_BOOTSTRAP_DELIVERED = 'bootstrap_delivered';

export type StartupMode = 'bootstrap' | 'serve' | 'join';

/** An intermediate a joining replica obtained through JoinReplica, with its key. */
export interface JoinMaterial {
  /** DER of the intermediate certificate signed by the root. */
  readonly intermediate: Buffer;
  readonly privateKey: KeyObject;
}

export interface StartupOptions {
  readonly store: Store;
  readonly replicaId: string;
  readonly storeKey: Buffer;
  readonly trustDomain?: string;
  /** Only used when bootstrapping; a later start with a different one is refused. */
  readonly policyOid?: string;
  readonly now: Date;
  readonly intermediateTtlMs: number;
  readonly join?: JoinMaterial;
}

export interface StartupResult {
  readonly mode: StartupMode;
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  readonly cas: CaSet;
  /** This replica bootstrapped the store and its admin identity has not been confirmed as delivered. */
  readonly adminPending: boolean;
}

function organizationalUnit(trustDomain: string): { organizationalUnit?: string } {
  return trustDomain.length <= 64 ? { organizationalUnit: trustDomain } : {};
}

export function intermediateSubject(trustDomain: string, replicaId: string, generation: number): SubjectName {
  return {
    commonName: `sigil ${replicaId} #${generation}`,
    organization: 'sigil',
    ...organizationalUnit(trustDomain),
  };
}

function caRecordOf(
  id: string,
  kind: 'root' | 'intermediate',
  replicaId: string | null,
  issued: { der: Buffer; notBefore: Date; notAfter: Date },
  encryptedKey: Buffer | null,
  now: Date,
): CaRecord {
  return {
    id,
    kind,
    replicaId,
    certificate: issued.der,
    encryptedKey,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    createdAt: now,
    retiredAt: null,
  };
}

/** The trust domain of the store, fixing it on first start; refuses a different one later. */
async function resolveTrustDomain(store: Store, requested: string | undefined): Promise<string> {
  const wanted = requested === undefined ? undefined : parseTrustDomain(requested);
  const stored = await store.getSetting(SETTING_TRUST_DOMAIN);
  if (stored !== null) {
    if (wanted !== undefined && wanted !== stored) {
      throw preconditionFailed(`this store belongs to trust domain "${stored}", not "${wanted}"`);
    }
    return stored;
  }
  return store.initSetting(SETTING_TRUST_DOMAIN, wanted ?? DEFAULT_TRUST_DOMAIN);
}

/**
 * The store's policy extension OID, fixed on first start like the trust
 * domain (a store made before it was a setting gets the default then);
 * refuses a different one later, since certificates already carry it.
 */
async function resolvePolicyOid(store: Store, requested: string | undefined): Promise<PolicyOid> {
  const wanted = requested === undefined ? undefined : parsePolicyOid(requested);
  const stored = await store.getSetting(SETTING_POLICY_OID);
  if (stored !== null) {
    if (wanted !== undefined && wanted.text !== stored) {
      throw preconditionFailed(
        `this store's policy extension OID is ${stored}, not ${wanted.text}: it is fixed when the deployment is bootstrapped`,
      );
    }
    return parsePolicyOid(stored);
  }
  return parsePolicyOid(await store.initSetting(SETTING_POLICY_OID, (wanted ?? DEFAULT_POLICY_OID).text));
}

async function createRoot(options: StartupOptions, trustDomain: string): Promise<void> {
  const { privateKey } = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey,
    subject: {
      // A random tag keeps two deployments' roots apart in one trust store.
      commonName: `sigil root CA ${randomBytes(4).toString('hex')}`,
      organization: 'sigil',
      ...organizationalUnit(trustDomain),
    },
    ttlMs: ROOT_TTL_MS,
    now: options.now,
  });
  await options.store.putCa(
    caRecordOf(
      ROOT_CA_ID,
      'root',
      null,
      root,
      encryptCaKey(privateKey, options.storeKey, ROOT_CA_ID),
      options.now,
    ),
  );
}

/**
 * Signs an intermediate for `replicaId` with the root and records the
 * certificate (not the CA: its owner does that, with its own store key).
 */
export async function signIntermediate(
  store: Store,
  rootIssuer: Issuer,
  fields: {
    trustDomain: string;
    replicaId: string;
    generation: number;
    publicKey: KeyObject;
    ttlMs: number;
    now: Date;
    requester: string;
  },
): Promise<SignedCertificate> {
  const subject = intermediateSubject(fields.trustDomain, fields.replicaId, fields.generation);
  const issued = rootIssuer.issue({
    publicKey: fields.publicKey,
    profile: 'intermediate',
    subject,
    ttlMs: fields.ttlMs,
    now: fields.now,
  });
  await store.insertCertificate(
    certificateRecord(issued, {
      subject: `CN=${subject.commonName}`,
      sans: [],
      profile: 'intermediate',
      issuerId: ROOT_CA_ID,
      requester: fields.requester,
      now: fields.now,
    }),
  );
  return issued;
}

/** A new key and intermediate for this replica, signed by the root held here. */
export async function createOwnIntermediate(
  store: Store,
  cas: CaSet,
  fields: { trustDomain: string; storeKey: Buffer; ttlMs: number; now: Date },
): Promise<CaRecord> {
  const rootIssuer = cas.rootIssuer();
  if (!rootIssuer) throw preconditionFailed('the root key is not online on this replica');
  const generation = nextGeneration(cas, cas.replicaId);
  const { privateKey, publicKey } = generateKeyPair('p256');
  const issued = await signIntermediate(store, rootIssuer, {
    ...fields,
    replicaId: cas.replicaId,
    generation,
    publicKey,
    requester: replicaSpiffeId(fields.trustDomain, cas.replicaId),
  });
  const id = intermediateCaId(cas.replicaId, generation);
  const record = caRecordOf(
    id,
    'intermediate',
    cas.replicaId,
    issued,
    encryptCaKey(privateKey, fields.storeKey, id),
    fields.now,
  );
  await store.putCa(record);
  return record;
}

/**
 * The root holder extends another replica's intermediate: a new certificate
 * for the same public key. The new record carries no key; its owner finds
 * the key in its earlier record (ca-set.ts).
 */
export async function recertifyIntermediate(
  store: Store,
  cas: CaSet,
  replicaId: string,
  fields: { trustDomain: string; ttlMs: number; now: Date },
): Promise<CaRecord> {
  const rootIssuer = cas.rootIssuer();
  if (!rootIssuer) throw preconditionFailed('the root key is not online on this replica');
  const current = cas.intermediates(replicaId)[0];
  if (!current) throw preconditionFailed(`replica "${replicaId}" has no intermediate to extend`);
  const generation = nextGeneration(cas, replicaId);
  const issued = await signIntermediate(store, rootIssuer, {
    ...fields,
    replicaId,
    generation,
    publicKey: current.info.publicKey,
    requester: replicaSpiffeId(fields.trustDomain, cas.replicaId),
  });
  const record = caRecordOf(
    intermediateCaId(replicaId, generation),
    'intermediate',
    replicaId,
    issued,
    null,
    fields.now,
  );
  await store.putCa(record);
  return record;
}

export function nextGeneration(cas: CaSet, replicaId: string): number {
  return Math.max(0, ...cas.intermediates(replicaId).map((ca) => generationOf(ca.record.id))) + 1;
}

/** Stores the intermediate a joining replica obtained with JoinReplica, after checking it. */
async function adoptIntermediate(options: StartupOptions, cas: CaSet, join: JoinMaterial): Promise<void> {
  const root = cas.requireRoot();
  const info = parseCertificate(join.intermediate, 'joined intermediate certificate');
  if (!info.isCa) throw invalid('the joined intermediate certificate is not a CA certificate');
  if (!new X509Certificate(join.intermediate).verify(root.info.publicKey)) {
    throw preconditionFailed("the joined intermediate certificate is not signed by this store's root CA");
  }
  if (!info.subject.includes(`CN=sigil ${options.replicaId} #`)) {
    throw preconditionFailed(
      `the joined intermediate was issued for another replica ID, not "${options.replicaId}"`,
    );
  }
  if (!keysMatch(join.privateKey, info.publicKey)) {
    throw preconditionFailed('the joined intermediate key does not match its certificate');
  }
  if (info.notAfter.getTime() <= options.now.getTime()) {
    throw preconditionFailed(`the joined intermediate certificate expired at ${info.notAfter.toISOString()}`);
  }
  const id = intermediateCaId(options.replicaId, nextGeneration(cas, options.replicaId));
  await options.store.putCa(
    caRecordOf(
      id,
      'intermediate',
      options.replicaId,
      { der: join.intermediate, notBefore: info.notBefore, notAfter: info.notAfter },
      encryptCaKey(join.privateKey, options.storeKey, id),
      options.now,
    ),
  );
}

export async function startUp(options: StartupOptions): Promise<StartupResult> {
  const { store, replicaId } = options;
  let mode: StartupMode = 'serve';
  let owner = await store.getSetting(SETTING_BOOTSTRAP_REPLICA);
  if (owner === null) {
    owner = await store.initSetting(SETTING_BOOTSTRAP_REPLICA, replicaId);
    if (owner === replicaId) mode = 'bootstrap';
  }
  const trustDomain = await resolveTrustDomain(store, options.trustDomain);
  const policyOid = await resolvePolicyOid(store, options.policyOid);
  let cas = await CaSet.load(store, replicaId, options.storeKey);
  if (!cas.root()) {
    if (owner !== replicaId) {
      throw preconditionFailed(
        `replica "${owner}" is bootstrapping this store and has not created its root CA yet; start this replica again once it has`,
      );
    }
    mode = 'bootstrap';
    await createRoot(options, trustDomain);
    cas = await CaSet.load(store, replicaId, options.storeKey);
  }
  if (cas.intermediates(replicaId).length === 0) {
    if (options.join) {
      mode = 'join';
      await adoptIntermediate(options, cas, options.join);
    } else if (owner === replicaId && cas.rootIssuer()) {
      mode = 'bootstrap';
      await createOwnIntermediate(store, cas, { ...options, trustDomain, ttlMs: options.intermediateTtlMs });
    } else {
      throw preconditionFailed(
        `replica "${replicaId}" has no intermediate CA in this store; join it with a replica join token (sigil token create --replica)`,
      );
    }
    cas = await CaSet.load(store, replicaId, options.storeKey);
  } else if (options.join) {
    // Repeating a start with the same joined intermediate is fine; another one is a mistake.
    const joined = options.join.intermediate;
    if (!cas.intermediates(replicaId).some((ca) => ca.record.certificate.equals(joined))) {
      throw preconditionFailed(
        `replica "${replicaId}" already has an intermediate CA in this store; start it without join material`,
      );
    }
  }
  const delivered = owner === replicaId ? await store.getSetting(SETTING_BOOTSTRAP_DELIVERED) : 'n/a';
  return { mode, trustDomain, policyOid, cas, adminPending: delivered === null };
}
