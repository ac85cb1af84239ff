// A node's certificate: issued for its enrolled key within the issuance
// limits (issuance-limits.ts), recorded as the node's newest, and what it
// replaces revoked as superseded. Enrolment (enrolment.ts) issues through
// here; renewal (renewal.ts) records and supersedes the same way.

import { publicKeyFromSpki } from '../pki/keys.ts';
import { uriName } from '../pki/names.ts';
import type { NodeRecord } from '../store/store.ts';
import { permissionDenied } from './access.ts';
import { type IssuanceKind, issuedEvent } from './audit.ts';
import type { AuthorityContext } from './context.ts';
import { nodeSpiffeId } from './identities.ts';
import type { IssuedCertificateView } from './issuance.ts';
import { checkIssuance, type Holding, supersededBy, validCertificates } from './issuance-limits.ts';
import { NODE_TTL_MS } from './lifetimes.ts';
import { type NodeView, nodeView } from './views.ts';

/**
 * A new certificate for the node's enrolled key, within the issuance limits:
 * it supersedes all but the newest one before it.
 */
export async function freshNodeCertificate(
  context: AuthorityContext,
  node: NodeRecord,
  now: Date,
  kind: IssuanceKind,
  by: string,
): Promise<{ node: NodeView; certificate: IssuedCertificateView }> {
  const { limits, trustDomain } = context;
  return limits.oneAtATime(`node:${node.id}`, async () => {
    const holding = await limits.node(node.id, now);
    checkIssuance(holding, now, { rotation: false });
    const previous = validCertificates(holding, now)[0]?.serial;
    const issued = await context.issue({
      publicKey: publicKeyFromSpki(node.publicKey),
      pkiProfile: 'server+client',
      recordProfile: 'node',
      commonName: node.id,
      sans: [uriName(nodeSpiffeId(trustDomain, node.id))],
      ttlMs: NODE_TTL_MS,
      requester: node.id,
      now,
    });
    const updated = await recordNodeCertificate(context, node.id, issued, now);
    context.audit(issuedEvent(issued, by, kind, 'node'));
    const keep = new Set([issued.serial, ...(previous ? [previous] : [])]);
    await supersede(context, holding, keep, by, now);
    return { node: nodeView(updated, trustDomain), certificate: issued };
  });
}

/** Points the node at its newest certificate; if it was revoked meanwhile, revokes that certificate too. */
export async function recordNodeCertificate(
  context: AuthorityContext,
  id: string,
  issued: IssuedCertificateView,
  now: Date,
): Promise<NodeRecord> {
  const updated = await context.store.transitionNode(id, ['UP'], 'UP', {
    certificateSerial: issued.serial,
    at: now,
  });
  if (!updated) {
    if (await context.store.revokeCertificate(issued.serial, 'cessationOfOperation', now)) {
      context.revoked([issued.serial]);
    }
    throw permissionDenied(`node ${id} has been revoked`);
  }
  return updated;
}

/** Revokes, as superseded, the valid certificates of `holding` not in `keep`. */
export async function supersede(
  context: AuthorityContext,
  holding: Holding,
  keep: ReadonlySet<string>,
  by: string,
  now: Date,
): Promise<void> {
  const revoked: string[] = [];
  for (const serial of supersededBy(holding, keep, now)) {
    if (!(await context.store.revokeCertificate(serial, 'superseded', now))) continue;
    revoked.push(serial);
    context.audit({
      action: 'certificate.revoked',
      by,
      serial,
      reason: 'superseded',
      revocation: 'superseded',
    });
  }
  context.revoked(revoked);
}
