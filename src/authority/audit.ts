// The authority's audit trail: one event for every CA operation, handed to
// the `onAudit` callback of AuthorityOptions (the server writes each as a log
// line at info and counts it in its metrics; the authority itself knows
// nothing of logs). An event says who did what to which serial; it never
// carries a secret: no token secret, no private key, no join token string
// (token IDs, serials, fingerprints and public-key hashes are public).
import type { IssuedCertificateView } from './issuance.ts';

export type AuditAction =
  | 'token.created'
  | 'token.revoked'
  | 'token.spent'
  | 'node.registered'
  | 'node.approved'
  | 'node.revoked'
  | 'certificate.issued'
  | 'certificate.revoked'
  | 'key.revoked'
  | 'delegation.created'
  | 'delegation.revoked'
  | 'reservations.released'
  | 'workload.reserved'
  | 'workload.released';

/** How a certificate came to be issued (also a metrics label: a closed set). */
export type IssuanceKind =
  | 'sign'
  | 'renew'
  | 'register'
  | 'approve'
  | 'rejoin'
  | 'replica'
  | 'server'
  | 'bootstrap'
  | 'delegate'
  | 'workload';

/** How a certificate came to be revoked (also a metrics label: a closed set). */
export type RevocationKind =
  /** Revoke by serial (sigil cert revoke). */
  | 'certificate'
  /** With its node (sigil node revoke). */
  | 'node'
  /** A delegation subtree's certificate (sigil delegation revoke, or a delegation's serial). */
  | 'delegation'
  /** Replaced by a newer certificate of the same identity (issuance limits). */
  | 'superseded'
  /** Another certificate with the same key was revoked for keyCompromise. */
  | 'key';

export interface AuditEvent {
  readonly action: AuditAction;
  /** Who asked: the caller's SPIFFE ID; for anonymous enrolment, the SPIFFE ID the node proved its key for. */
  readonly by: string;
  readonly serial?: string;
  /** SHA-256 of a delegation certificate (delegations are known by fingerprint). */
  readonly fingerprint?: string;
  /** The SPIFFE ID of the certificate or delegation acted on. */
  readonly spiffeId?: string;
  readonly profile?: string;
  readonly issuance?: IssuanceKind;
  readonly revocation?: RevocationKind;
  /** RFC 5280 reason name of a revocation. */
  readonly reason?: string;
  readonly nodeId?: string;
  readonly tokenId?: string;
  readonly tokenKind?: 'node' | 'replica';
  readonly autoApprove?: boolean;
  /** A node's state after the operation. */
  readonly state?: string;
  /** SHA-256 of a revoked key's SubjectPublicKeyInfo. */
  readonly keyHash?: string;
  /** A subtree key ("/alice/carol"). */
  readonly subtree?: string;
  readonly notAfter?: Date;
  /** A reservation's holder ("node/<node id>/<workload name>"). */
  readonly holder?: string;
  /** How many (reservations released, token uses, …). */
  readonly count?: number;
}

export type AuditSink = (event: AuditEvent) => void;

/** The event of a leaf issued to `by` (a caller's SPIFFE ID, or what asked for it). */
export function issuedEvent(
  issued: IssuedCertificateView,
  by: string,
  issuance: IssuanceKind,
  profile: string,
): AuditEvent {
  return {
    action: 'certificate.issued',
    by,
    serial: issued.serial,
    spiffeId: issued.spiffeId,
    profile,
    issuance,
    notAfter: issued.notAfter,
  };
}
