// Renewal: a new certificate for the caller's own identity, like its current
// one (names, profile, lifetime), for the same key or a new one it proves.
// Everyone but an admin renews within the issuance limits
// (issuance-limits.ts). The server renews the admin identity it keeps in its
// data directory the same way (renewAdminIdentity).
import { type KeyObject, X509Certificate } from 'node:crypto';
import { invalid, preconditionFailed } from '../errors.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import type { Profile } from '../pki/profiles.ts';
import { canonicalSerial } from '../pki/serial.ts';
import { type Possession, verifySignProof } from '../protocol/challenges.ts';
import type { CertificateRecord, NodeRecord } from '../store/store.ts';
import { permissionDenied, requireLive } from './access.ts';
import { issuedEvent } from './audit.ts';
import { type AuthorityContext, messageOf } from './context.ts';
import type { Caller } from './identities.ts';
import { commonNameOf, type IssuedCertificateView, sansFromStrings, spiffeIdOf } from './issuance.ts';
import { checkIssuance } from './issuance-limits.ts';
import { ADMIN_TTL_MS, MAX_SIGN_TTL_MS, NODE_TTL_MS } from './lifetimes.ts';
import { issueNodeCertificate, supersede } from './node-certificates.ts';
import { keyHashOf, requireUsableKey } from './revoked-keys.ts';

/** Recorded profile → the key usages a renewal gets. */
const RENEW_PROFILES: ReadonlyMap<string, Profile> = new Map<string, Profile>([
  ['node', 'server+client'],
  ['admin', 'client'],
  ['server', 'server'],
  ['client', 'client'],
  ['server+client', 'server+client'],
  ['bootstrap', 'client'],
]);

/**
 * A new certificate for the caller's own identity: the SANs, profile and
 * lifetime of its current certificate; its current key, or a new one proven
 * with `possession` (challenge: signChallenge of the caller's fingerprint).
 */
export async function renew(
  context: AuthorityContext,
  caller: Caller,
  request: { readonly possession?: Possession },
): Promise<IssuedCertificateView> {
  requireLive(context, caller);
  const { store, limits } = context;
  const now = context.now();
  const record = await store.getCertificate(caller.serial);
  if (!record || sha256Hex(record.der) !== caller.fingerprint) {
    throw permissionDenied(
      'the caller certificate was not issued by this authority; it cannot be renewed here',
    );
  }
  if (record.revokedAt)
    throw permissionDenied(`certificate ${record.serial} is revoked; it cannot be renewed`);
  const pkiProfile = RENEW_PROFILES.get(record.profile);
  if (!pkiProfile) throw permissionDenied(`a ${record.profile} certificate cannot be renewed through Renew`);
  let node: NodeRecord | null = null;
  if (caller.role === 'node' && caller.name) {
    node = await store.getNode(caller.name);
    if (!node) throw permissionDenied(`node ${caller.name} is not enrolled here`);
    if (node.state === 'REVOKED') throw permissionDenied(`node ${caller.name} has been revoked`);
    if (node.state !== 'UP') throw preconditionFailed(`node ${caller.name} is ${node.state}, not UP`);
  }
  const currentKey = new X509Certificate(record.der).publicKey;
  const publicKey = request.possession
    ? verifySignProof(request.possession, caller.fingerprint, now)
    : currentKey;
  // A revoked key gets nothing, whether it calls or is asked for.
  await requireUsableKey(store, currentKey);
  if (publicKey !== currentKey) await requireUsableKey(store, publicKey);
  const renewal = { caller, record, pkiProfile, publicKey, node, now };
  if (caller.role === 'admin') return renewed(context, renewal);
  // Everyone else within the issuance limits, one decision at a time per identity.
  const identity = node ? `node:${node.id}` : await limits.lineageOf(record);
  return limits.oneAtATime(identity, async () => {
    const holding = node ? await limits.node(node.id, now) : await limits.lineage(identity, record, now);
    const rotation = keyHashOf(publicKey) !== keyHashOf(currentKey);
    checkIssuance(holding, now, { rotation });
    const issued = await renewed(context, renewal);
    if (!node) await limits.recordRenewal(identity, record, issued.serial, now);
    await supersede(context, holding, new Set([record.serial, issued.serial]), caller.spiffeId, now);
    return issued;
  });
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
export async function renewAdminIdentity(
  context: AuthorityContext,
  certificateDer: Buffer,
): Promise<IssuedCertificateView> {
  const now = context.now();
  let serial: string;
  try {
    serial = canonicalSerial(new X509Certificate(certificateDer).serialNumber);
  } catch (error) {
    throw invalid(`the admin certificate is not a valid X.509 certificate: ${messageOf(error)}`, error);
  }
  const fingerprint = sha256Hex(certificateDer);
  const record = await context.store.getCertificate(serial);
  if (!record || sha256Hex(record.der) !== fingerprint || record.profile !== 'admin') {
    throw permissionDenied(`certificate ${serial} is not an admin identity issued by this deployment`);
  }
  if (record.revokedAt || context.revocations.isRevoked(serial)) {
    throw permissionDenied(`admin certificate ${serial} is revoked; it is not renewed`);
  }
  const publicKey = new X509Certificate(record.der).publicKey;
  await requireUsableKey(context.store, publicKey);
  const pkiProfile = RENEW_PROFILES.get(record.profile);
  if (!pkiProfile) throw permissionDenied('admin certificates cannot be renewed');
  const caller: Caller = {
    spiffeId: spiffeIdOf(record.sans),
    serial,
    fingerprint,
    role: 'admin',
    name: commonNameOf(record.subject),
  };
  return renewed(context, { caller, record, pkiProfile, publicKey, node: null, now });
}

interface Renewal {
  readonly caller: Caller;
  /** The certificate renewed. */
  readonly record: CertificateRecord;
  readonly pkiProfile: Profile;
  readonly publicKey: KeyObject;
  /** The caller's node, when a node renews. */
  readonly node: NodeRecord | null;
  readonly now: Date;
}

/** The renewal itself: a certificate like `record` for `publicKey`. */
async function renewed(context: AuthorityContext, renewal: Renewal): Promise<IssuedCertificateView> {
  const { caller, record, pkiProfile, publicKey, node, now } = renewal;
  const lifetime =
    record.profile === 'node'
      ? NODE_TTL_MS
      : record.profile === 'admin'
        ? ADMIN_TTL_MS
        : Math.max(
            60_000,
            Math.floor((record.notAfter.getTime() - record.notBefore.getTime()) / 60_000) * 60_000,
          );
  const request = {
    publicKey,
    pkiProfile,
    recordProfile: record.profile,
    commonName: commonNameOf(record.subject) ?? spiffeIdOf(record.sans).slice(0, 64),
    sans: sansFromStrings(record.sans),
    ttlMs: Math.min(lifetime, MAX_SIGN_TTL_MS),
    requester: record.requester,
    now,
  };
  // A node's certificate and its node record go to the store as one write.
  const issued = node
    ? (await issueNodeCertificate(context, node.id, request)).certificate
    : await context.issue(request);
  context.audit(issuedEvent(issued, caller.spiffeId, 'renew', record.profile));
  return issued;
}
