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
  NodeRecord,
  NodeState,
  StoreEvent,
  TokenRecord,
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
