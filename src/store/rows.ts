// Records to rows and back, for both store implementations: the columns of
// each table, a record as parameters in its columns' order (each value
// checked on the way in, checks.ts), and a row as a record (dates as unix ms,
// bytes as BLOB/BYTEA, SANs as JSON). Drivers hand rows back in their own
// shapes (node:sqlite: number and Uint8Array; pg: BIGINT as string, Buffer,
// boolean), so the readers here accept each.
import { invalid, SigilError } from '../errors.ts';
import {
  anyText,
  bytes,
  checkCount,
  checkFingerprint,
  checkNodeState,
  checkRevocation,
  checkSerial,
  millis,
  optionalMillis,
  text,
} from './checks.ts';
import type {
  CaRecord,
  CertificateRecord,
  DelegationRecord,
  LineageEntry,
  NodeRecord,
  RevokedKeyRecord,
  TokenRecord,
  UsageReservation,
} from './store.ts';
import { checkSubtree } from './subtrees.ts';

export type Row = Readonly<Record<string, unknown>>;
/** A value either driver accepts as a parameter. */
export type Param = string | number | boolean | Buffer | null;

export const CA_COLUMNS = [
  'id',
  'kind',
  'replica_id',
  'certificate',
  'encrypted_key',
  'not_before',
  'not_after',
  'created_at',
  'retired_at',
] as const;

export const CERTIFICATE_COLUMNS = [
  'serial',
  'subject',
  'sans',
  'profile',
  'not_before',
  'not_after',
  'issuer_id',
  'requester',
  'der',
  'issued_at',
  'revoked_at',
  'revocation_reason',
] as const;

export const TOKEN_COLUMNS = [
  'id',
  'secret_hash',
  'name',
  'uses_total',
  'uses_left',
  'auto_approve',
  'created_at',
  'expires_at',
  'revoked_at',
  'created_by',
] as const;

export const NODE_COLUMNS = [
  'id',
  'public_key',
  'name',
  'state',
  'token_id',
  'created_at',
  'updated_at',
  'certificate_serial',
] as const;

export const DELEGATION_COLUMNS = [
  'fingerprint',
  'serial',
  'subtree',
  'spiffe_id',
  'parent_fingerprint',
  'policy',
  'is_ca',
  'not_after',
  'der',
  'origin',
  'recorded_at',
  'revoked_at',
  'revocation_reason',
  'revoked_by',
] as const;

export const RESERVATION_COLUMNS = [
  'subtree',
  'holder',
  'workloads',
  'cpus',
  'memory_mib',
  'block_mib',
  'created_at',
] as const;

export const REVOKED_KEY_COLUMNS = [
  'key_hash',
  'reason',
  'serial',
  'node_id',
  'revoked_at',
  'revoked_by',
] as const;

export const LINEAGE_COLUMNS = ['serial', 'lineage', 'issued_at'] as const;

// --- records to parameters (in *_COLUMNS order) ----------------------------

export function caParams(r: CaRecord): Param[] {
  if (r.kind !== 'root' && r.kind !== 'intermediate')
    throw invalid(`CA kind ${JSON.stringify(r.kind)} is not root or intermediate`);
  return [
    text(r.id, 'CA id'),
    r.kind,
    r.replicaId === null ? null : text(r.replicaId, 'CA replica id'),
    bytes(r.certificate, 'CA certificate'),
    r.encryptedKey === null ? null : bytes(r.encryptedKey, 'CA encrypted key'),
    millis(r.notBefore, 'CA notBefore'),
    millis(r.notAfter, 'CA notAfter'),
    millis(r.createdAt, 'CA createdAt'),
    optionalMillis(r.retiredAt, 'CA retiredAt'),
  ];
}

export function certificateParams(r: CertificateRecord): Param[] {
  if (!Array.isArray(r.sans) || !r.sans.every((san) => typeof san === 'string'))
    throw invalid('certificate SANs must be an array of strings');
  if ((r.revokedAt === null) !== (r.revocationReason === null))
    throw invalid('certificate revokedAt and revocationReason must be both set or both null');
  return [
    checkSerial(r.serial),
    anyText(r.subject, 'certificate subject'),
    JSON.stringify(r.sans),
    text(r.profile, 'certificate profile'),
    millis(r.notBefore, 'certificate notBefore'),
    millis(r.notAfter, 'certificate notAfter'),
    text(r.issuerId, 'certificate issuerId'),
    text(r.requester, 'certificate requester'),
    bytes(r.der, 'certificate DER'),
    millis(r.issuedAt, 'certificate issuedAt'),
    optionalMillis(r.revokedAt, 'certificate revokedAt'),
    r.revocationReason === null ? null : text(r.revocationReason, 'certificate revocationReason'),
  ];
}

/** SQLite has no boolean type: pass `booleansAsIntegers` for it. */
export function tokenParams(r: TokenRecord, booleansAsIntegers: boolean): Param[] {
  const usesTotal = checkCount(r.usesTotal, 'token usesTotal');
  const usesLeft = checkCount(r.usesLeft, 'token usesLeft');
  if (usesLeft > usesTotal) throw invalid('token usesLeft exceeds usesTotal');
  if (typeof r.autoApprove !== 'boolean') throw invalid('token autoApprove must be a boolean');
  return [
    text(r.id, 'token id'),
    bytes(r.secretHash, 'token secretHash'),
    r.name === null ? null : text(r.name, 'token name'),
    usesTotal,
    usesLeft,
    booleansAsIntegers ? (r.autoApprove ? 1 : 0) : r.autoApprove,
    millis(r.createdAt, 'token createdAt'),
    millis(r.expiresAt, 'token expiresAt'),
    optionalMillis(r.revokedAt, 'token revokedAt'),
    text(r.createdBy, 'token createdBy'),
  ];
}

export function nodeParams(r: NodeRecord): Param[] {
  return [
    text(r.id, 'node id'),
    bytes(r.publicKey, 'node publicKey'),
    r.name === null ? null : text(r.name, 'node name'),
    checkNodeState(r.state, 'node state'),
    text(r.tokenId, 'node tokenId'),
    millis(r.createdAt, 'node createdAt'),
    millis(r.updatedAt, 'node updatedAt'),
    r.certificateSerial === null ? null : text(r.certificateSerial, 'node certificateSerial'),
  ];
}

/** SQLite has no boolean type: pass `booleansAsIntegers` for it. */
export function delegationParams(r: DelegationRecord, booleansAsIntegers: boolean): Param[] {
  if (typeof r.isCa !== 'boolean') throw invalid('delegation isCa must be a boolean');
  if (r.origin !== 'issued' && r.origin !== 'seen')
    throw invalid(`delegation origin ${JSON.stringify(r.origin)} is not issued or seen`);
  if (r.policy !== null && typeof r.policy !== 'string')
    throw invalid('delegation policy must be a string or null');
  const revoked = [r.revokedAt, r.revocationReason, r.revokedBy].filter((v) => v !== null).length;
  if (revoked !== 0 && revoked !== 3)
    throw invalid('delegation revokedAt, revocationReason and revokedBy must be all set or all null');
  return [
    checkFingerprint(r.fingerprint, 'delegation fingerprint'),
    checkSerial(r.serial),
    checkSubtree(r.subtree, 'delegation subtree'),
    text(r.spiffeId, 'delegation spiffeId'),
    r.parentFingerprint === null
      ? null
      : checkFingerprint(r.parentFingerprint, 'delegation parentFingerprint'),
    r.policy,
    booleansAsIntegers ? (r.isCa ? 1 : 0) : r.isCa,
    millis(r.notAfter, 'delegation notAfter'),
    bytes(r.der, 'delegation DER'),
    r.origin,
    millis(r.recordedAt, 'delegation recordedAt'),
    optionalMillis(r.revokedAt, 'delegation revokedAt'),
    r.revocationReason === null ? null : text(r.revocationReason, 'delegation revocationReason'),
    r.revokedBy === null ? null : text(r.revokedBy, 'delegation revokedBy'),
  ];
}

export function reservationParams(r: UsageReservation): Param[] {
  if (!Array.isArray(r.cpus) || !r.cpus.every((cpu) => Number.isSafeInteger(cpu) && cpu >= 0))
    throw invalid('reservation cpus must be an array of non-negative integers');
  return [
    checkSubtree(r.subtree, 'reservation subtree'),
    text(r.holder, 'reservation holder'),
    checkCount(r.workloads, 'reservation workloads'),
    JSON.stringify(r.cpus),
    checkCount(r.memoryMiB, 'reservation memoryMiB'),
    checkCount(r.blockMiB, 'reservation blockMiB'),
    millis(r.createdAt, 'reservation createdAt'),
  ];
}

export function revokedKeyParams(r: RevokedKeyRecord): Param[] {
  checkRevocation(r.reason, r.revokedBy);
  return [
    checkFingerprint(r.keyHash, 'revoked key hash'),
    r.reason,
    r.serial === null ? null : checkSerial(r.serial),
    r.nodeId === null ? null : text(r.nodeId, 'revoked key nodeId'),
    millis(r.revokedAt, 'revoked key revokedAt'),
    r.revokedBy,
  ];
}

export function lineageParams(entry: LineageEntry): Param[] {
  return [
    checkSerial(entry.serial),
    text(entry.lineage, 'lineage'),
    millis(entry.issuedAt, 'lineage issuedAt'),
  ];
}

// --- rows to records ---------------------------------------------------------

function corrupt(what: string): SigilError {
  return new SigilError('internal', `store returned a malformed ${what}`);
}

export function intOf(value: unknown, what: string): number {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'bigint' || typeof value === 'string'
        ? Number(value)
        : NaN;
  if (!Number.isSafeInteger(n)) throw corrupt(what);
  return n;
}

function dateOf(value: unknown, what: string): Date {
  return new Date(intOf(value, what));
}

function optionalDateOf(value: unknown, what: string): Date | null {
  return value === null || value === undefined ? null : dateOf(value, what);
}

function bufferOf(value: unknown, what: string): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw corrupt(what);
}

function stringOf(value: unknown, what: string): string {
  if (typeof value !== 'string') throw corrupt(what);
  return value;
}

export function optionalStringOf(value: unknown, what: string): string | null {
  return value === null || value === undefined ? null : stringOf(value, what);
}

function boolOf(value: unknown, what: string): boolean {
  if (value === true || value === 1 || value === 1n) return true;
  if (value === false || value === 0 || value === 0n) return false;
  throw corrupt(what);
}

export function caFromRow(row: Row): CaRecord {
  const kind = row.kind;
  if (kind !== 'root' && kind !== 'intermediate') throw corrupt('CA kind');
  return {
    id: stringOf(row.id, 'CA id'),
    kind,
    replicaId: optionalStringOf(row.replica_id, 'CA replica id'),
    certificate: bufferOf(row.certificate, 'CA certificate'),
    encryptedKey: row.encrypted_key === null ? null : bufferOf(row.encrypted_key, 'CA key'),
    notBefore: dateOf(row.not_before, 'CA notBefore'),
    notAfter: dateOf(row.not_after, 'CA notAfter'),
    createdAt: dateOf(row.created_at, 'CA createdAt'),
    retiredAt: optionalDateOf(row.retired_at, 'CA retiredAt'),
  };
}

export function certificateFromRow(row: Row): CertificateRecord {
  const sans: unknown = JSON.parse(stringOf(row.sans, 'certificate SANs'));
  if (!Array.isArray(sans) || !sans.every((san) => typeof san === 'string'))
    throw corrupt('certificate SANs');
  return {
    serial: stringOf(row.serial, 'certificate serial'),
    subject: stringOf(row.subject, 'certificate subject'),
    sans,
    profile: stringOf(row.profile, 'certificate profile'),
    notBefore: dateOf(row.not_before, 'certificate notBefore'),
    notAfter: dateOf(row.not_after, 'certificate notAfter'),
    issuerId: stringOf(row.issuer_id, 'certificate issuerId'),
    requester: stringOf(row.requester, 'certificate requester'),
    der: bufferOf(row.der, 'certificate DER'),
    issuedAt: dateOf(row.issued_at, 'certificate issuedAt'),
    revokedAt: optionalDateOf(row.revoked_at, 'certificate revokedAt'),
    revocationReason: optionalStringOf(row.revocation_reason, 'certificate revocationReason'),
  };
}

export function tokenFromRow(row: Row): TokenRecord {
  return {
    id: stringOf(row.id, 'token id'),
    secretHash: bufferOf(row.secret_hash, 'token hash'),
    name: optionalStringOf(row.name, 'token name'),
    usesTotal: intOf(row.uses_total, 'token usesTotal'),
    usesLeft: intOf(row.uses_left, 'token usesLeft'),
    autoApprove: boolOf(row.auto_approve, 'token autoApprove'),
    createdAt: dateOf(row.created_at, 'token createdAt'),
    expiresAt: dateOf(row.expires_at, 'token expiresAt'),
    revokedAt: optionalDateOf(row.revoked_at, 'token revokedAt'),
    createdBy: stringOf(row.created_by, 'token createdBy'),
  };
}

export function nodeFromRow(row: Row): NodeRecord {
  const state = row.state;
  if (state !== 'NEW' && state !== 'UP' && state !== 'REVOKED') throw corrupt('node state');
  return {
    id: stringOf(row.id, 'node id'),
    publicKey: bufferOf(row.public_key, 'node publicKey'),
    name: optionalStringOf(row.name, 'node name'),
    state,
    tokenId: stringOf(row.token_id, 'node tokenId'),
    createdAt: dateOf(row.created_at, 'node createdAt'),
    updatedAt: dateOf(row.updated_at, 'node updatedAt'),
    certificateSerial: optionalStringOf(row.certificate_serial, 'node certificateSerial'),
  };
}

export function delegationFromRow(row: Row): DelegationRecord {
  const origin = row.origin;
  if (origin !== 'issued' && origin !== 'seen') throw corrupt('delegation origin');
  return {
    fingerprint: stringOf(row.fingerprint, 'delegation fingerprint'),
    serial: stringOf(row.serial, 'delegation serial'),
    subtree: stringOf(row.subtree, 'delegation subtree'),
    spiffeId: stringOf(row.spiffe_id, 'delegation spiffeId'),
    parentFingerprint: optionalStringOf(row.parent_fingerprint, 'delegation parentFingerprint'),
    policy: optionalStringOf(row.policy, 'delegation policy'),
    isCa: boolOf(row.is_ca, 'delegation isCa'),
    notAfter: dateOf(row.not_after, 'delegation notAfter'),
    der: bufferOf(row.der, 'delegation DER'),
    origin,
    recordedAt: dateOf(row.recorded_at, 'delegation recordedAt'),
    revokedAt: optionalDateOf(row.revoked_at, 'delegation revokedAt'),
    revocationReason: optionalStringOf(row.revocation_reason, 'delegation revocationReason'),
    revokedBy: optionalStringOf(row.revoked_by, 'delegation revokedBy'),
  };
}

export function revokedKeyFromRow(row: Row): RevokedKeyRecord {
  return {
    keyHash: stringOf(row.key_hash, 'revoked key hash'),
    reason: stringOf(row.reason, 'revoked key reason'),
    serial: optionalStringOf(row.serial, 'revoked key serial'),
    nodeId: optionalStringOf(row.node_id, 'revoked key nodeId'),
    revokedAt: dateOf(row.revoked_at, 'revoked key revokedAt'),
    revokedBy: stringOf(row.revoked_by, 'revoked key revokedBy'),
  };
}

export function lineageFromRow(row: Row): LineageEntry {
  return {
    serial: stringOf(row.serial, 'lineage serial'),
    lineage: stringOf(row.lineage, 'lineage'),
    issuedAt: dateOf(row.issued_at, 'lineage issuedAt'),
  };
}

/** A JSON array of CPU ids (non-negative integers). */
export function cpusOf(value: unknown, what: string): number[] {
  let cpus: unknown;
  try {
    cpus = JSON.parse(stringOf(value, what));
  } catch {
    throw corrupt(what);
  }
  if (!Array.isArray(cpus) || !cpus.every((cpu) => Number.isSafeInteger(cpu) && cpu >= 0))
    throw corrupt(what);
  return cpus;
}

export function reservationFromRow(row: Row): UsageReservation {
  return {
    holder: stringOf(row.holder, 'reservation holder'),
    subtree: stringOf(row.subtree, 'reservation subtree'),
    workloads: intOf(row.workloads, 'reservation workloads'),
    cpus: cpusOf(row.cpus, 'reservation cpus'),
    memoryMiB: intOf(row.memory_mib, 'reservation memoryMiB'),
    blockMiB: intOf(row.block_mib, 'reservation blockMiB'),
    createdAt: dateOf(row.created_at, 'reservation createdAt'),
  };
}
