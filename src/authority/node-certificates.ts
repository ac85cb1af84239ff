// A node's certificate: issued for its enrolled key within the issuance
// limits (issuance-limits.ts), recorded as the node's newest, and what it
// replaces revoked as superseded. Enrolment (enrolment.ts) issues through
// here; renewal (renewal.ts) records and supersedes the same way.
//
// The certificate and the node's pointer to it are one store write
// (store.insertNodeCertificate): on SQLite they join the certificate group
// commit, so a renewal storm pays one fsync per batch, not two per renewal.

import { publicKeyFromSpki } from '../pki/keys.ts';
import { uriName } from '../pki/names.ts';
import type { NodeRecord } from '../store/store.ts';
import { permissionDenied } from './access.ts';
import { type IssuanceKind, issuedEvent } from './audit.ts';
import type { AuthorityContext } from './context.ts';
import { nodeSpiffeId } from './identities.ts';
import { type IssuedCertificateView, type LeafRequest, signLeaf } from './issuance.ts';
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
    const { certificate: issued, node: updated } = await issueNodeCertificate(context, node.id, {
      publicKey: publicKeyFromSpki(node.publicKey),
      pkiProfile: 'server+client',
      recordProfile: 'node',
      commonName: node.id,
      sans: [uriName(nodeSpiffeId(trustDomain, node.id))],
      ttlMs: NODE_TTL_MS,
      requester: node.id,
      now,
    });
    context.audit(issuedEvent(issued, by, kind, 'node'));
    const keep = new Set([issued.serial, ...(previous ? [previous] : [])]);
    await supersede(context, holding, keep, by, now);
    return { node: nodeView(updated, trustDomain), certificate: issued };
  });
}

/**
 * Issues the node's newest certificate and points the node at it, in one
 * commit; if the node is no longer UP (revoked meanwhile), the certificate,
 * recorded all the same, is revoked and the call refused.
 */
export async function issueNodeCertificate(
  context: AuthorityContext,
  id: string,
  request: LeafRequest,
): Promise<{ node: NodeRecord; certificate: IssuedCertificateView }> {
  const { record, view } = signLeaf(context.leafSigner(request.now), request);
  const updated = await context.store.insertNodeCertificate(record, {
    id,
    from: ['UP'],
    to: 'UP',
    at: request.now,
  });
  if (!updated) {
    if (await context.store.revokeCertificate(record.serial, 'cessationOfOperation', request.now)) {
      context.revoked([record.serial]);
    }
    throw permissionDenied(`node ${id} has been revoked`);
  }
  return { node: updated, certificate: view };
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
