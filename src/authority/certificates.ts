// Certificates by request: an admin's Sign (a leaf for a key proven by
// possession or CSR), listing and reading records, and Revoke by serial,
// which an admin or the holder of the certificate's identity may do.
// Renewal is renewal.ts; nodes' certificates come from enrolment.ts.
import { type KeyObject, X509Certificate } from 'node:crypto';
import { invalid, notFound } from '../errors.ts';
import { readCsr } from '../pki/csr.ts';
import { DELEGATION_LABEL } from '../pki/delegation-names.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import { dnsName, type GeneralName, ipAddress, parseSpiffeId, spiffeId, uriName } from '../pki/names.ts';
import type { Profile } from '../pki/profiles.ts';
import { parseSerial } from '../pki/serial.ts';
import { type Possession, verifySignProof } from '../protocol/challenges.ts';
import {
  type CertificateFilter,
  type CertificateRecord,
  DEFAULT_PAGE_SIZE,
  MAX_PAGE_SIZE,
  type Page,
} from '../store/store.ts';
import { holds, requireAdmin, requireLive } from './access.ts';
import { issuedEvent } from './audit.ts';
import type { AuthorityContext } from './context.ts';
import { releaseReservations } from './delegation-requests.ts';
import type { Caller } from './identities.ts';
import { type IssuedCertificateView, spiffeIdOf } from './issuance.ts';
import { validCertificates } from './issuance-limits.ts';
import { DEFAULT_SIGN_TTL_MS, MAX_SIGN_TTL_MS } from './lifetimes.ts';
import { reasonOf, wholeNumber } from './request-fields.ts';
import { endsKey, keyHashOf, requireUsableKey } from './revoked-keys.ts';
import { type CertificateSummary, certificateSummary } from './views.ts';

export interface LeafRequest {
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

/** What an admin may filter a listing by: the store's own filter (empty strings are ignored). */
export type ListCertificatesFilter = CertificateFilter;

/** Sign profiles → the path segment of their default SPIFFE ID. */
const SIGN_PROFILES: ReadonlyMap<string, { pki: Profile; segment: string }> = new Map([
  ['server', { pki: 'server', segment: 'server' }],
  ['client', { pki: 'client', segment: 'client' }],
  ['server+client', { pki: 'server+client', segment: 'server-client' }],
]);

const MAX_NAMES = 100;

/** Issues a leaf for a key proven by possession or CSR. Admin only. */
export async function sign(
  context: AuthorityContext,
  caller: Caller,
  request: LeafRequest,
): Promise<IssuedCertificateView> {
  requireAdmin(context, caller, 'sign certificates');
  const { trustDomain } = context;
  const now = context.now();
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
    if (parsed.trustDomain.endsWith(`.${DELEGATION_LABEL}.${trustDomain}`)) {
      throw invalid(`SPIFFE ID ${identity} names a delegation subtree: create one with sigil delegate`);
    }
    if (parsed.trustDomain !== trustDomain) {
      throw invalid(`SPIFFE ID ${identity} is not in this trust domain (${trustDomain})`);
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
      identity = spiffeId(trustDomain, profile.segment, commonName);
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
  const publicKey = provenKey(caller, request, now);
  await requireUsableKey(context.store, publicKey);
  const issued = await context.issue({
    publicKey,
    pkiProfile: profile.pki,
    recordProfile: request.profile,
    commonName: commonName === '' ? identity.slice(0, 64) : commonName,
    sans,
    ttlMs: ttlSeconds * 1000,
    requester: caller.spiffeId,
    now,
  });
  context.audit(issuedEvent(issued, caller.spiffeId, 'sign', request.profile));
  return issued;
}

function provenKey(caller: Caller, request: LeafRequest, now: Date): KeyObject {
  const hasPossession = request.possession !== undefined && request.possession !== null;
  const hasCsr = request.csr !== undefined && request.csr !== null && request.csr.length > 0;
  if (hasPossession === hasCsr) {
    throw invalid('Sign needs exactly one of a proof of possession or a CSR');
  }
  if (hasCsr) return readCsr(request.csr as Buffer, 'CSR').publicKey;
  return verifySignProof(request.possession, caller.fingerprint, now);
}

/** Revokes a certificate: an admin, or the holder of the certificate's SPIFFE ID. */
export async function revoke(
  context: AuthorityContext,
  caller: Caller,
  serialText: string,
  reasonText?: string,
): Promise<{ alreadyRevoked: boolean }> {
  requireLive(context, caller);
  const { store } = context;
  const serial = parseSerial(serialText);
  const reason = reasonOf(reasonText);
  const record = await store.getCertificate(serial);
  // Someone else's certificate looks exactly like a missing one: a refusal
  // must not tell a non-admin what exists outside what it holds.
  if (!record || (caller.role !== 'admin' && !holds(caller, record))) {
    throw notFound(`certificate ${serial} not found among the certificates you may revoke`);
  }
  const now = context.now();
  // Recorded first and also for a certificate revoked before for another reason: the key is what ends.
  if (endsKey(reason)) await endKey(context, record, reason, caller.spiffeId, now);
  if (record.revokedAt) return { alreadyRevoked: true };
  const changed = await store.revokeCertificate(serial, reason, now);
  context.revoked([serial]);
  const delegated = record.profile === 'delegation' || record.profile === 'command';
  const fingerprint = sha256Hex(record.der);
  if (changed) {
    context.audit({
      action: delegated ? 'delegation.revoked' : 'certificate.revoked',
      by: caller.spiffeId,
      serial,
      spiffeId: spiffeIdOf(record.sans),
      profile: record.profile,
      reason,
      revocation: delegated ? 'delegation' : 'certificate',
      ...(delegated ? { fingerprint } : {}),
    });
  }
  if (delegated) {
    // Keep the delegation tree's record in step (its event carries the fingerprint too).
    await store.revokeDelegation(fingerprint, reason, now, caller.spiffeId);
    await releaseReservations(context, fingerprint, caller.spiffeId);
  }
  if (record.profile === 'intermediate' && context.cas.rootKey()) await context.crls.publishRoot();
  return { alreadyRevoked: !changed };
}

/**
 * Ends the key of `record` (revoked-keys.ts): recorded in the store, and
 * every other valid certificate of the same identity with that key revoked
 * too. Safe to repeat.
 */
async function endKey(
  context: AuthorityContext,
  record: CertificateRecord,
  reason: string,
  by: string,
  now: Date,
): Promise<void> {
  const { store, limits } = context;
  const key = new X509Certificate(record.der).publicKey;
  const keyHash = keyHashOf(key);
  const nodeId = record.profile === 'node' ? record.requester : null;
  const serial = record.serial;
  if (await store.revokeKey({ keyHash, reason, serial, nodeId, revokedAt: now, revokedBy: by })) {
    context.audit({ action: 'key.revoked', by, keyHash, serial, reason, ...(nodeId ? { nodeId } : {}) });
  }
  const holding = nodeId
    ? await limits.node(nodeId, now)
    : await limits.lineage(await limits.lineageOf(record), record, now);
  const revoked: string[] = [];
  for (const other of validCertificates(holding, now)) {
    if (other.serial === serial) continue;
    if (keyHashOf(new X509Certificate(other.der).publicKey) !== keyHash) continue;
    if (!(await store.revokeCertificate(other.serial, reason, now))) continue;
    revoked.push(other.serial);
    context.audit({
      action: 'certificate.revoked',
      by,
      serial: other.serial,
      spiffeId: spiffeIdOf(other.sans),
      profile: other.profile,
      reason,
      revocation: 'key',
    });
  }
  context.revoked(revoked);
}

export async function listCertificates(
  context: AuthorityContext,
  caller: Caller,
  filter: ListCertificatesFilter,
): Promise<Page<CertificateSummary>> {
  requireAdmin(context, caller, 'list certificates');
  const pageSize = wholeNumber(filter.pageSize, 'page_size', MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE);
  const storeFilter: CertificateFilter = {
    ...(filter.requester ? { requester: filter.requester } : {}),
    ...(filter.profile ? { profile: filter.profile } : {}),
    ...(filter.issuerId ? { issuerId: filter.issuerId } : {}),
    ...(filter.revoked !== undefined ? { revoked: filter.revoked } : {}),
    ...(filter.validAt ? { validAt: filter.validAt } : {}),
    ...(filter.pageToken ? { pageToken: filter.pageToken } : {}),
    pageSize,
  };
  const page = await context.store.listCertificates(storeFilter);
  return { items: page.items.map(certificateSummary), nextPageToken: page.nextPageToken };
}

/** One certificate record (admin, or its holder). */
export async function getCertificate(
  context: AuthorityContext,
  caller: Caller,
  serialText: string,
): Promise<CertificateRecord> {
  requireLive(context, caller);
  const serial = parseSerial(serialText);
  const record = await context.store.getCertificate(serial);
  if (!record || (caller.role !== 'admin' && !holds(caller, record))) {
    throw notFound(`certificate ${serial} not found among the certificates you may read`);
  }
  return record;
}
