// The authority's plain results as proto messages. Absent values become the
// proto3 defaults ("" and 0), as the proto comments promise.
import type { IssuedCertificateView } from '../authority/issuance.ts';
import type {
  AuthorityStatus,
  CertificateSummary as CertificateSummaryView,
  NodeView,
  TokenSummary as TokenSummaryView,
  TrustBundleView,
} from '../authority/views.ts';
import type {
  CertificateSummary,
  IssuedCertificate,
  Node,
  Status,
  TokenSummary,
  TrustBundle,
} from '../gen/sigil/v1/sigil.ts';

const ms = (date: Date | null): number => (date ? date.getTime() : 0);

export function issuedCertificateMessage(view: IssuedCertificateView): IssuedCertificate {
  return {
    certificate: view.certificate,
    chain: [...view.chain],
    serial: view.serial,
    notBeforeUnixMs: ms(view.notBefore),
    notAfterUnixMs: ms(view.notAfter),
    spiffeId: view.spiffeId,
  };
}

export function trustBundleMessage(bundle: TrustBundleView): TrustBundle {
  return {
    trustDomain: bundle.trustDomain,
    roots: [...bundle.roots],
    intermediates: [...bundle.intermediates],
    rootFingerprint: bundle.rootFingerprint,
    policyOid: bundle.policyOid,
  };
}

export function certificateSummaryMessage(summary: CertificateSummaryView): CertificateSummary {
  return {
    serial: summary.serial,
    subject: summary.subject,
    sans: [...summary.sans],
    profile: summary.profile,
    notBeforeUnixMs: ms(summary.notBefore),
    notAfterUnixMs: ms(summary.notAfter),
    issuerId: summary.issuerId,
    requester: summary.requester,
    revokedAtUnixMs: ms(summary.revokedAt),
    revocationReason: summary.revocationReason ?? '',
  };
}

export function tokenSummaryMessage(summary: TokenSummaryView): TokenSummary {
  return {
    id: summary.id,
    name: summary.name ?? '',
    usesTotal: summary.usesTotal,
    usesLeft: summary.usesLeft,
    autoApprove: summary.autoApprove,
    createdAtUnixMs: ms(summary.createdAt),
    expiresAtUnixMs: ms(summary.expiresAt),
    revokedAtUnixMs: ms(summary.revokedAt),
    createdBy: summary.createdBy,
    replica: summary.replica,
  };
}

export function nodeMessage(node: NodeView): Node {
  return {
    id: node.id,
    name: node.name ?? '',
    state: node.state,
    tokenId: node.tokenId,
    createdAtUnixMs: ms(node.createdAt),
    updatedAtUnixMs: ms(node.updatedAt),
    certificateSerial: node.certificateSerial ?? '',
    spiffeId: node.spiffeId,
  };
}

export function statusMessage(status: AuthorityStatus): Status {
  return {
    trustDomain: status.trustDomain,
    rootFingerprint: status.rootFingerprint,
    replicaId: status.replicaId,
    replicas: status.replicas.map((replica) => ({
      replicaId: replica.replicaId,
      intermediateSerial: replica.intermediateSerial,
      intermediateNotAfterUnixMs: ms(replica.intermediateNotAfter),
    })),
    certificatesIssued: status.certificatesIssued,
    certificatesRevoked: status.certificatesRevoked,
    nodesNew: status.nodesNew,
    nodesUp: status.nodesUp,
    nodesRevoked: status.nodesRevoked,
    store: status.store,
    rootKeyOnline: status.rootKeyOnline,
    policyOid: status.policyOid,
  };
}
