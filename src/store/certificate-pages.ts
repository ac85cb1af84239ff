// One page of listCertificates, the same SQL in both dialects: keyset pages in
// (issued_at, serial) order, continued by an opaque page token (page-token.ts).
import { invalid } from '../errors.ts';
import { anyText, millis } from './checks.ts';
import { decodePageToken, encodePageToken } from './page-token.ts';
import { CERTIFICATE_COLUMNS, certificateFromRow, type Param, type Row } from './rows.ts';
import { type CertificateFilter, type CertificateRecord, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './store.ts';

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
