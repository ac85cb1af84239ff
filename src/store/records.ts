// What both store implementations share: the columns of each table, the
// conversion between records and rows (dates as unix ms, bytes as
// BLOB/BYTEA, SANs as JSON), the checks every record passes before it is
// written, and the event payload codec. Drivers hand rows back in their own
// shapes (node:sqlite: number and Uint8Array; pg: BIGINT as string, Buffer,
// boolean), so the readers here accept each.
import { invalid, SigilError } from '../errors.ts';
import { decodePageToken, encodePageToken } from './page-token.ts';
import type {
  CaRecord,
  CertificateFilter,
  CertificateRecord,
  DelegationRecord,
  LineageEntry,
  NodeRecord,
  NodeState,
  RevokedKeyRecord,
  StoreEvent,
  TokenRecord,
  UsageCeiling,
  UsageReservation,
  UsageTotals,
} from './store.ts';

export type Row = Readonly<Record<string, unknown>>;
/** A value either driver accepts as a parameter. */
export type Param = string | number | boolean | Buffer | null;

export const NODE_STATES: readonly NodeState[] = ['NEW', 'UP', 'REVOKED'];
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

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

// --- checks on the way in -------------------------------------------------

/** Unix milliseconds of a valid Date; anything else is refused naming the field. */
export function millis(date: Date, field: string): number {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) throw invalid(`${field} is not a valid date`);
  return date.getTime();
}

function optionalMillis(date: Date | null, field: string): number | null {
  return date === null ? null : millis(date, field);
}

function text(value: string, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(`${field} must be a non-empty string`);
  return value;
}

/** A string that may be empty (a SPIFFE leaf's subject often is). */
function anyText(value: string, field: string): string {
  if (typeof value !== 'string') throw invalid(`${field} must be a string`);
  return value;
}

function bytes(value: Buffer, field: string): Buffer {
  if (!Buffer.isBuffer(value)) throw invalid(`${field} must be a Buffer`);
  return value;
}

const CANONICAL_SERIAL = /^(0|[1-9a-f][0-9a-f]*)$/;

export function checkSerial(serial: string): string {
  if (typeof serial !== 'string' || serial.length > 128 || !CANONICAL_SERIAL.test(serial))
    throw invalid(
      `certificate serial ${JSON.stringify(String(serial).slice(0, 140))} is not lower-case hex without leading zeros`,
    );
  return serial;
}

export function checkNodeState(state: NodeState, field: string): NodeState {
  if (!NODE_STATES.includes(state))
    throw invalid(`${field} ${JSON.stringify(state)} is not one of NEW, UP, REVOKED`);
  return state;
}

function checkCount(value: number, field: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${field} must be a non-negative integer`);
  return value;
}

export function pageSizeOf(filter: CertificateFilter): number {
  const size = filter.pageSize ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(size) || size < 1 || size > MAX_PAGE_SIZE)
    throw invalid(`page size must be an integer from 1 to ${MAX_PAGE_SIZE}, got ${size}`);
  return size;
}

const FINGERPRINT = /^[0-9a-f]{64}$/;

function checkFingerprint(fingerprint: string, field: string): string {
  if (typeof fingerprint !== 'string' || !FINGERPRINT.test(fingerprint))
    throw invalid(
      `${field} ${JSON.stringify(String(fingerprint).slice(0, 80))} is not a SHA-256 in lower-case hex`,
    );
  return fingerprint;
}

/**
 * A subtree key (see DelegationRecord): non-empty text starting with '/'.
 * Anything else, a SPIFFE ID above all, is refused rather than matching
 * nothing, so a caller that mixes the two up fails loudly.
 */
export function checkSubtree(key: string, field: string): string {
  if (typeof key !== 'string' || !key.startsWith('/'))
    throw invalid(
      `${field} ${JSON.stringify(String(key).slice(0, 80))} is not a subtree key (text starting with '/')`,
    );
  return key;
}

/**
 * The bounds of "at or under `key`" as [itself, lower, upper]: a subtree key
 * is in the subtree when it equals `itself` or lies in [lower, upper), i.e.
 * starts with key + '/' ('0' is the character after '/'). Both dialects
 * compare these columns byte by byte (byteOrderedText), so the range is
 * exact, has no wildcards to escape and is case-sensitive (SQLite's LIKE is
 * not), and it uses the index.
 */
export function subtreeBounds(key: string, field = 'under'): [string, string, string] {
  const root = checkSubtree(key, field);
  return [root, `${root}/`, `${root}0`];
}

/** The SQL condition of subtreeBounds on `column`, given the three placeholders. */
export function subtreeCondition(column: string, [itself, lower, upper]: readonly string[]): string {
  return `(${column} = ${itself} OR (${column} >= ${lower} AND ${column} < ${upper}))`;
}

/** True when the subtree key `key` is `ancestor` or lies beneath it (subtreeBounds, in memory). */
export function isAtOrUnder(key: string, ancestor: string): boolean {
  return key === ancestor || key.startsWith(`${ancestor}/`);
}

export function checkRevocation(reason: string, by?: string): void {
  if (typeof reason !== 'string' || reason === '')
    throw invalid('revocation reason must be a non-empty string');
  if (by !== undefined && (typeof by !== 'string' || by === ''))
    throw invalid('revoker (by) must be a non-empty string');
}

/**
 * The ceilings checked, with the reservation they are checked for. Every
 * ceiling must be at or above the reservation's subtree key: a ceiling
 * elsewhere would not count it, and the locks that make reserveUsage atomic
 * assume one subtree.
 */
export function checkCeilings(
  reservation: UsageReservation,
  ceilings: readonly UsageCeiling[],
): readonly UsageCeiling[] {
  if (!Array.isArray(ceilings)) throw invalid('ceilings must be an array');
  for (const ceiling of ceilings) {
    checkSubtree(ceiling.subtree, 'ceiling subtree');
    checkCount(ceiling.workloads, 'ceiling workloads');
    checkCount(ceiling.memoryMiB, 'ceiling memoryMiB');
    checkCount(ceiling.blockMiB, 'ceiling blockMiB');
    if (!isAtOrUnder(reservation.subtree, ceiling.subtree))
      throw invalid(
        `ceiling ${ceiling.subtree} is not at or above the reservation's subtree ${reservation.subtree}`,
      );
  }
  return ceilings;
}

/** Sums at or under a ceiling's subtree key, before the reservation. */
export interface CeilingSums {
  readonly workloads: number;
  readonly memoryMiB: number;
  readonly blockMiB: number;
}

/** The first resource of `ceiling` the reservation would exceed, or null when it fits. */
export function exceededResource(
  ceiling: UsageCeiling,
  sums: CeilingSums,
  reservation: UsageReservation,
): { resource: 'workloads' | 'memoryMiB' | 'blockMiB'; used: number; limit: number } | null {
  for (const resource of ['workloads', 'memoryMiB', 'blockMiB'] as const)
    if (sums[resource] + reservation[resource] > ceiling[resource])
      return { resource, used: sums[resource], limit: ceiling[resource] };
  return null;
}

export interface CertificateQuery {
  readonly sql: string;
  readonly params: Param[];
  readonly pageSize: number;
}

/**
 * One page of listCertificates as SQL both dialects run: filters, then the
 * keyset condition in (issued_at, serial) order, one row more than the page
 * to learn whether another page follows. `placeholder(n)` spells the n-th
 * parameter (1-based): '?' for SQLite, '$n' for PostgreSQL.
 */
export function certificatePageQuery(
  filter: CertificateFilter,
  placeholder: (index: number) => string,
): CertificateQuery {
  const pageSize = pageSizeOf(filter);
  const where: string[] = [];
  const params: Param[] = [];
  const bind = (value: Param): string => {
    params.push(value);
    return placeholder(params.length);
  };
  if (filter.requester !== undefined)
    where.push(`requester = ${bind(anyText(filter.requester, 'requester'))}`);
  if (filter.profile !== undefined) where.push(`profile = ${bind(anyText(filter.profile, 'profile'))}`);
  if (filter.issuerId !== undefined) where.push(`issuer_id = ${bind(anyText(filter.issuerId, 'issuerId'))}`);
  if (filter.revoked !== undefined)
    where.push(filter.revoked ? 'revoked_at IS NOT NULL' : 'revoked_at IS NULL');
  if (filter.validAt !== undefined) where.push(`not_after > ${bind(millis(filter.validAt, 'validAt'))}`);
  if (filter.pageToken !== undefined && filter.pageToken !== '') {
    const after = decodePageToken(filter.pageToken);
    where.push(`(issued_at, serial) > (${bind(after.issuedAtMs)}, ${bind(after.serial)})`);
  }
  const sql =
    `SELECT ${CERTIFICATE_COLUMNS.join(', ')} FROM certificates` +
    (where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '') +
    ` ORDER BY issued_at, serial LIMIT ${bind(pageSize + 1)}`;
  return { sql, params, pageSize };
}

/** The page from the rows of certificatePageQuery. */
export function certificatePage(
  rows: readonly Row[],
  pageSize: number,
): { items: CertificateRecord[]; nextPageToken: string } {
  const items = rows.slice(0, pageSize).map(certificateFromRow);
  const last = items[items.length - 1];
  const nextPageToken =
    rows.length > pageSize
      ? encodePageToken({ issuedAtMs: last.issuedAt.getTime(), serial: last.serial })
      : '';
  return { items, nextPageToken };
}

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

function intOf(value: unknown, what: string): number {
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

function optionalStringOf(value: unknown, what: string): string | null {
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
function cpusOf(value: unknown, what: string): number[] {
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

/**
 * The select list of the sums over usage_reservations (both dialects): sum()
 * of nothing is NULL, hence coalesce. PostgreSQL's sum of BIGINT is NUMERIC
 * and count() BIGINT, both returned as strings; intOf reads either.
 */
export const USAGE_SUMS = `coalesce(sum(workloads), 0) AS workloads,
  coalesce(sum(memory_mib), 0) AS memory_mib,
  coalesce(sum(block_mib), 0) AS block_mib,
  count(*) AS reservations`;

export function ceilingSumsFromRow(row: Row): CeilingSums {
  return {
    workloads: intOf(row.workloads, 'usage workloads'),
    memoryMiB: intOf(row.memory_mib, 'usage memoryMiB'),
    blockMiB: intOf(row.block_mib, 'usage blockMiB'),
  };
}

/** A row of USAGE_SUMS plus `cpus`, a JSON array of the distinct CPU ids (or NULL for none). */
export function usageTotalsFromRow(row: Row): UsageTotals {
  const cpus = row.cpus === null || row.cpus === undefined ? [] : cpusOf(row.cpus, 'usage cpus');
  return {
    ...ceilingSumsFromRow(row),
    cpus: [...new Set(cpus)].sort((a, b) => a - b),
    reservations: intOf(row.reservations, 'usage reservations'),
  };
}

// --- events --------------------------------------------------------------------

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. */
const MAX_EVENT_BYTES = 7999;

export function encodeEvent(event: StoreEvent): string {
  const json = JSON.stringify(event);
  if (Buffer.byteLength(json) > MAX_EVENT_BYTES)
    throw new SigilError('internal', 'store event too large to publish');
  return json;
}

/** The event in a payload, or null when it is not one this build understands. */
export function decodeEvent(payload: string | undefined): StoreEvent | null {
  if (payload === undefined) return null;
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.kind === 'revocation' && Array.isArray(v.serials) && v.serials.every((s) => typeof s === 'string'))
    return Object.freeze({ kind: 'revocation', serials: Object.freeze([...v.serials]) });
  if (v.kind === 'node' && typeof v.nodeId === 'string' && NODE_STATES.includes(v.state as NodeState))
    return Object.freeze({ kind: 'node', nodeId: v.nodeId, state: v.state as NodeState });
  if (v.kind === 'ca' && typeof v.caId === 'string') return Object.freeze({ kind: 'ca', caId: v.caId });
  return null;
}

/**
 * The subscribers of one store object. A listener that throws is reported to
 * `onError` and does not stop the others (nor fail the write that caused the
 * event: events are published after the commit).
 */
export class Listeners {
  private readonly listeners = new Set<{ readonly listener: (event: StoreEvent) => void }>();
  private readonly onError: (error: Error) => void;

  constructor(onError: (error: Error) => void) {
    this.onError = onError;
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    const entry = { listener };
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  emit(event: StoreEvent): void {
    for (const { listener } of [...this.listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.onError(
          new SigilError('internal', `a store event listener threw: ${describe(error)}`, { cause: error }),
        );
      }
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The default onError: a process warning (stderr), never silence. */
export function warn(error: Error): void {
  process.emitWarning(error.message, { code: 'SIGIL_STORE' });
}
