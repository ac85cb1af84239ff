// Shared by the operator commands (token, node, cert, status): the JSON shape
// of the control plane's records (ISO 8601 instants, null for "not set"
// instead of the wire's 0) and the plain-text tables printed without --json.

import type { CertificateSummary, Node, TokenSummary } from '../gen/sigil/v1/sigil.ts';
import { formatDuration } from '../pki/duration.ts';

/** An instant from the wire (unix ms; 0 = unset) as ISO 8601 or null. */
export function instant(ms: number): string | null {
  return ms > 0 ? new Date(ms).toISOString() : null;
}

/** "in 14m 59s" / "3h 2m ago" / "-" for unset. */
export function relative(ms: number, now = Date.now()): string {
  if (ms <= 0) return '-';
  const delta = ms - now;
  return delta >= 0 ? `in ${formatDuration(delta)}` : `${formatDuration(delta)} ago`;
}

/** Columns padded to their widest cell; the last column is not padded. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, i) =>
    Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export interface TokenJson {
  readonly id: string;
  readonly name: string | null;
  readonly replica: boolean;
  readonly usesTotal: number;
  readonly usesLeft: number;
  readonly autoApprove: boolean;
  readonly createdAt: string | null;
  readonly expiresAt: string | null;
  readonly revokedAt: string | null;
  readonly createdBy: string | null;
  /** active, expired, revoked or used-up, as of the command's clock. */
  readonly state: 'active' | 'expired' | 'revoked' | 'used-up';
}

export function tokenState(token: TokenSummary, now = Date.now()): TokenJson['state'] {
  if (token.revokedAtUnixMs > 0) return 'revoked';
  if (token.usesLeft === 0) return 'used-up';
  if (token.expiresAtUnixMs > 0 && token.expiresAtUnixMs <= now) return 'expired';
  return 'active';
}

export function tokenJson(token: TokenSummary, now = Date.now()): TokenJson {
  return {
    id: token.id,
    name: token.name || null,
    replica: token.replica,
    usesTotal: token.usesTotal,
    usesLeft: token.usesLeft,
    autoApprove: token.autoApprove,
    createdAt: instant(token.createdAtUnixMs),
    expiresAt: instant(token.expiresAtUnixMs),
    revokedAt: instant(token.revokedAtUnixMs),
    createdBy: token.createdBy || null,
    state: tokenState(token, now),
  };
}

export interface NodeJson {
  readonly id: string;
  readonly name: string | null;
  readonly state: string;
  readonly tokenId: string | null;
  readonly createdAt: string | null;
  readonly updatedAt: string | null;
  readonly certificateSerial: string | null;
  readonly spiffeId: string | null;
}

export function nodeJson(node: Node): NodeJson {
  return {
    id: node.id,
    name: node.name || null,
    state: node.state,
    tokenId: node.tokenId || null,
    createdAt: instant(node.createdAtUnixMs),
    updatedAt: instant(node.updatedAtUnixMs),
    certificateSerial: node.certificateSerial || null,
    spiffeId: node.spiffeId || null,
  };
}

export function nodeLines(node: NodeJson): string {
  return [
    `node ${node.id}`,
    `  name:        ${node.name ?? '-'}`,
    `  state:       ${node.state}`,
    `  SPIFFE ID:   ${node.spiffeId ?? '-'}`,
    `  certificate: ${node.certificateSerial ?? '-'}`,
    `  token:       ${node.tokenId ?? '-'}`,
    `  created:     ${node.createdAt ?? '-'}`,
    `  updated:     ${node.updatedAt ?? '-'}`,
  ].join('\n');
}

export interface CertificateJson {
  readonly serial: string;
  readonly subject: string;
  readonly sans: readonly string[];
  readonly profile: string;
  readonly notBefore: string | null;
  readonly notAfter: string | null;
  readonly issuerId: string;
  readonly requester: string;
  readonly revoked: boolean;
  readonly revokedAt: string | null;
  readonly revocationReason: string | null;
}

export function certificateJson(certificate: CertificateSummary): CertificateJson {
  return {
    serial: certificate.serial,
    subject: certificate.subject,
    sans: certificate.sans,
    profile: certificate.profile,
    notBefore: instant(certificate.notBeforeUnixMs),
    notAfter: instant(certificate.notAfterUnixMs),
    issuerId: certificate.issuerId,
    requester: certificate.requester,
    revoked: certificate.revokedAtUnixMs > 0,
    revokedAt: instant(certificate.revokedAtUnixMs),
    revocationReason: certificate.revocationReason || null,
  };
}

export function certificateLines(certificate: CertificateJson): string {
  return [
    `certificate ${certificate.serial}`,
    `  subject:     ${certificate.subject}`,
    `  names:       ${certificate.sans.length > 0 ? certificate.sans.join(', ') : '-'}`,
    `  profile:     ${certificate.profile}`,
    `  valid:       ${certificate.notBefore ?? '-'} to ${certificate.notAfter ?? '-'}`,
    `  issuer:      ${certificate.issuerId}`,
    `  requester:   ${certificate.requester || '-'}`,
    `  revoked:     ${certificate.revoked ? `${certificate.revokedAt} (${certificate.revocationReason ?? 'unspecified'})` : 'no'}`,
  ].join('\n');
}

export function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((line) => `  ${line}`).join('\n')}\n`;
}
