// The plain results the authority returns: what the services turn into proto
// messages and the CLI prints. Dates stay Dates; DER stays Buffers.

import { tokenKindOf } from '../protocol/join-tokens.ts';
import type { CertificateRecord, NodeRecord, TokenRecord } from '../store/store.ts';
import { nodeSpiffeId } from './identities.ts';

/** A node record without its key, with its SPIFFE ID. */
export interface NodeView extends Omit<NodeRecord, 'publicKey'> {
  readonly spiffeId: string;
}

/** A token record without its secret hash. */
export interface TokenSummary extends Omit<TokenRecord, 'secretHash'> {
  /** A token for joining a replica rather than a node. */
  readonly replica: boolean;
}

/** A certificate record without its DER. */
export type CertificateSummary = Omit<CertificateRecord, 'der'>;

export interface TrustBundleView {
  readonly trustDomain: string;
  /** DER; more than one during a root rotation. */
  readonly roots: readonly Buffer[];
  /** DER; every replica's current and not yet expired intermediates. */
  readonly intermediates: readonly Buffer[];
  /** SHA-256 of the current root, lower-case hex. */
  readonly rootFingerprint: string;
  /** The deployment's policy extension OID, dotted. */
  readonly policyOid: string;
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
  /** The deployment's policy extension OID, dotted. */
  readonly policyOid: string;
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
