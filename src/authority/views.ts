// The plain results the authority returns: what the services turn into proto
// messages and the CLI prints. Dates stay Dates; DER stays Buffers.
import type { CertificateRecord, NodeRecord, NodeState, TokenRecord } from '../store/store.ts';
import { nodeSpiffeId } from './identities.ts';
import { tokenKindOf } from './tokens.ts';

export interface NodeView {
  readonly id: string;
  readonly name: string | null;
  readonly state: NodeState;
  readonly tokenId: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly certificateSerial: string | null;
  readonly spiffeId: string;
}

export interface TokenSummary {
  readonly id: string;
  readonly name: string | null;
  readonly usesTotal: number;
  readonly usesLeft: number;
  readonly autoApprove: boolean;
  readonly createdAt: Date;
  readonly expiresAt: Date;
  readonly revokedAt: Date | null;
  readonly createdBy: string;
  /** A token for joining a replica rather than a node. */
  readonly replica: boolean;
}

/** A certificate record without its DER. */
export interface CertificateSummary {
  readonly serial: string;
  readonly subject: string;
  readonly sans: readonly string[];
  readonly profile: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly issuerId: string;
  readonly requester: string;
  readonly issuedAt: Date;
  readonly revokedAt: Date | null;
  readonly revocationReason: string | null;
}

export interface TrustBundle {
  readonly trustDomain: string;
  /** DER; more than one during a root rotation. */
  readonly roots: readonly Buffer[];
  /** DER; every replica's current and not yet expired intermediates. */
  readonly intermediates: readonly Buffer[];
  /** SHA-256 of the current root, lower-case hex. */
  readonly rootFingerprint: string;
}

export interface ReplicaSummary {
  readonly replicaId: string;
  readonly intermediateSerial: string;
  readonly intermediateNotAfter: Date;
}

export interface AuthorityStatus {
  readonly trustDomain: string;
  readonly rootFingerprint: string;
  readonly replicaId: string;
  readonly replicas: readonly ReplicaSummary[];
  readonly certificatesIssued: number;
  readonly certificatesRevoked: number;
  readonly nodesNew: number;
  readonly nodesUp: number;
  readonly nodesRevoked: number;
  readonly store: string;
  /** The root key is in the store (on some replica); false once exported. */
  readonly rootKeyOnline: boolean;
  /** The root key is usable on this replica (it can admit replicas and rotate intermediates). */
  readonly rootKeyHere: boolean;
}

export function nodeView(node: NodeRecord, trustDomain: string): NodeView {
  return {
    id: node.id,
    name: node.name,
    state: node.state,
    tokenId: node.tokenId,
    createdAt: node.createdAt,
    updatedAt: node.updatedAt,
    certificateSerial: node.certificateSerial,
    spiffeId: nodeSpiffeId(trustDomain, node.id),
  };
}

export function tokenSummary(token: TokenRecord): TokenSummary {
  return {
    id: token.id,
    name: token.name,
    usesTotal: token.usesTotal,
    usesLeft: token.usesLeft,
    autoApprove: token.autoApprove,
    createdAt: token.createdAt,
    expiresAt: token.expiresAt,
    revokedAt: token.revokedAt,
    createdBy: token.createdBy,
    replica: tokenKindOf(token.id) === 'replica',
  };
}

export function certificateSummary(record: CertificateRecord): CertificateSummary {
  return {
    serial: record.serial,
    subject: record.subject,
    sans: record.sans,
    profile: record.profile,
    notBefore: record.notBefore,
    notAfter: record.notAfter,
    issuerId: record.issuerId,
    requester: record.requester,
    issuedAt: record.issuedAt,
    revokedAt: record.revokedAt,
    revocationReason: record.revocationReason,
  };
}
