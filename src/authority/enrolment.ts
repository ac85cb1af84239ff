// Nodes: Monogon's enrolment (Register with a join token and proof of the
// node's key, NEW → UP by approval or an auto-approving token), Rejoin with
// the enrolled key after a certificate lapsed, and an admin's listing and
// revocation. A node's ID comes from its key (node-id.ts).
import { X509Certificate } from 'node:crypto';
import { invalid, notFound, preconditionFailed } from '../errors.ts';
import { spkiDer } from '../pki/keys.ts';
import { type Possession, verifyRegisterProof, verifyRejoinProof } from '../protocol/challenges.ts';
import { type CertificateRecord, MAX_PAGE_SIZE, type NodeRecord, type NodeState } from '../store/store.ts';
import { permissionDenied, requireAdmin } from './access.ts';
import type { AuthorityContext } from './context.ts';
import { type Caller, nodeSpiffeId } from './identities.ts';
import { type IssuedCertificateView, spiffeIdOf } from './issuance.ts';
import { renewalDue } from './lifetimes.ts';
import { freshNodeCertificate } from './node-certificates.ts';
import { isNodeId, nodeIdFor, parseNodeId } from './node-id.ts';
import { displayName, reasonOf } from './request-fields.ts';
import { keyHashOf, NODE_REVOKED, requireUsableKey } from './revoked-keys.ts';
import { checkTokenSecret, spendToken } from './tokens.ts';
import { type NodeView, nodeView } from './views.ts';

export interface RegisterRequest {
  readonly tokenId: string;
  readonly tokenSecret: Buffer;
  /** Challenge: registerChallenge(tokenId, tokenSecret). */
  readonly possession?: Possession;
  readonly name?: string;
}

export interface Registration {
  readonly node: NodeView;
  /** Present when the node is UP. */
  readonly certificate?: IssuedCertificateView;
}

/**
 * Monogon's register: a join token plus proof of the node's key. The node
 * ID comes from the key; the token is consumed atomically (a single-use
 * token admits one node, whatever the concurrency). Repeating it with the
 * same key returns the node's state, and its certificate once it is UP.
 */
export async function register(context: AuthorityContext, request: RegisterRequest): Promise<Registration> {
  const now = context.now();
  const token = await checkTokenSecret(context, request.tokenId, request.tokenSecret, 'node');
  const publicKey = verifyRegisterProof(request.possession, request.tokenId, request.tokenSecret);
  const name = displayName(request.name, 'node name');
  const id = nodeIdFor(publicKey);
  // Before the token is spent: a revoked key changes nothing.
  await requireUsableKey(context.store, publicKey);
  const node =
    (await context.store.getNode(id)) ??
    (await spendToken(
      context,
      token,
      { id, publicKey: spkiDer(publicKey), name, state: 'NEW' },
      now,
      nodeSpiffeId(context.trustDomain, id),
    ));
  return enrolmentResult(context, node, now);
}

async function enrolmentResult(
  context: AuthorityContext,
  node: NodeRecord,
  now: Date,
): Promise<Registration> {
  const { store, trustDomain } = context;
  if (node.state === 'REVOKED') throw permissionDenied(`node ${node.id} has been revoked`);
  const by = nodeSpiffeId(trustDomain, node.id);
  if (node.state === 'NEW') {
    const token = await store.getToken(node.tokenId);
    if (!token?.autoApprove) return { node: nodeView(node, trustDomain) };
    return approveAndIssue(context, node, now, by);
  }
  const current = node.certificateSerial ? await store.getCertificate(node.certificateSerial) : null;
  if (
    current &&
    !current.revokedAt &&
    now.getTime() < renewalDue(current.notBefore, current.notAfter) &&
    context.cas.get(current.issuerId)
  ) {
    return { node: nodeView(node, trustDomain), certificate: viewOf(context, current) };
  }
  return freshNodeCertificate(context, node, now, 'register', by);
}

/** A node whose certificate lapsed proves its enrolled key and gets a new one, unless revoked. */
export async function rejoin(
  context: AuthorityContext,
  request: { readonly possession?: Possession },
): Promise<Registration> {
  const now = context.now();
  const publicKey = verifyRejoinProof(request.possession, now);
  const id = nodeIdFor(publicKey);
  const node = await context.store.getNode(id);
  if (!node) throw notFound(`no node is enrolled with this key (node ${id}); register with a join token`);
  if (node.state === 'REVOKED') throw permissionDenied(`node ${id} has been revoked`);
  await requireUsableKey(context.store, publicKey);
  if (node.state === 'NEW') throw preconditionFailed(`node ${id} is not approved yet (state NEW)`);
  return freshNodeCertificate(context, node, now, 'rejoin', nodeSpiffeId(context.trustDomain, id));
}

/** NEW → UP, issuing the node's certificate (its next Register returns it). UP stays UP. */
export async function approveNode(
  context: AuthorityContext,
  caller: Caller,
  idText: string,
): Promise<NodeView> {
  requireAdmin(context, caller, 'approve nodes');
  const id = parseNodeId(idText);
  const node = await context.store.getNode(id);
  if (!node) throw notFound(`node ${id} not found`);
  if (node.state === 'REVOKED') {
    throw preconditionFailed(`node ${id} is REVOKED and cannot be approved (only NEW → UP is allowed)`);
  }
  if (node.state === 'UP') return nodeView(node, context.trustDomain);
  return (await approveAndIssue(context, node, context.now(), caller.spiffeId)).node;
}

/** Any state → REVOKED, and every certificate of the node revoked. Repeating it is safe. */
export async function revokeNode(
  context: AuthorityContext,
  caller: Caller,
  idText: string,
  reasonText?: string,
): Promise<NodeView> {
  requireAdmin(context, caller, 'revoke nodes');
  const { store, trustDomain } = context;
  const id = parseNodeId(idText);
  const reason = reasonOf(reasonText);
  const now = context.now();
  let node = await store.getNode(id);
  if (!node) throw notFound(`node ${id} not found`);
  if (node.state !== 'REVOKED') {
    node =
      (await store.transitionNode(id, ['NEW', 'UP'], 'REVOKED', { at: now })) ?? (await store.getNode(id));
    if (!node) throw notFound(`node ${id} not found`);
  }
  // Collected first, revoked after: revoking while paging would shift the pages.
  const serials: string[] = [];
  // Every key the node ever had ends with it (revoked-keys.ts): the enrolled one and any it rotated to.
  const keys = new Set<string>([keyHashOf(node.publicKey)]);
  let pageToken = '';
  do {
    const page = await store.listCertificates({ requester: id, pageSize: MAX_PAGE_SIZE, pageToken });
    for (const record of page.items) {
      keys.add(keyHashOf(new X509Certificate(record.der).publicKey));
      if (record.revokedAt === null) serials.push(record.serial);
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== '');
  for (const keyHash of keys) {
    const record = { keyHash, reason: NODE_REVOKED, serial: null, nodeId: id, revokedAt: now };
    if (await store.revokeKey({ ...record, revokedBy: caller.spiffeId })) {
      context.audit({
        action: 'key.revoked',
        by: caller.spiffeId,
        keyHash,
        reason: NODE_REVOKED,
        nodeId: id,
      });
    }
  }
  const revoked: string[] = [];
  for (const serial of serials) {
    if (await store.revokeCertificate(serial, reason, now)) {
      revoked.push(serial);
      context.audit({
        action: 'certificate.revoked',
        by: caller.spiffeId,
        serial,
        spiffeId: nodeSpiffeId(trustDomain, id),
        profile: 'node',
        reason,
        revocation: 'node',
        nodeId: id,
      });
    }
  }
  context.revoked(revoked);
  context.audit({ action: 'node.revoked', by: caller.spiffeId, nodeId: id, reason, count: revoked.length });
  return nodeView(node, trustDomain);
}

export async function getNode(context: AuthorityContext, caller: Caller, idText: string): Promise<NodeView> {
  requireAdmin(context, caller, 'read nodes');
  const id = parseNodeId(idText);
  const node = await context.store.getNode(id);
  if (!node) throw notFound(`node ${id} not found`);
  return nodeView(node, context.trustDomain);
}

export async function listNodes(
  context: AuthorityContext,
  caller: Caller,
  filter: { readonly state?: NodeState },
): Promise<NodeView[]> {
  requireAdmin(context, caller, 'list nodes');
  if (filter.state !== undefined && !['NEW', 'UP', 'REVOKED'].includes(filter.state)) {
    throw invalid(`unknown node state "${String(filter.state).slice(0, 20)}" (expected NEW, UP or REVOKED)`);
  }
  const nodes = await context.store.listNodes(filter.state ? { state: filter.state } : {});
  return nodes.filter((node) => isNodeId(node.id)).map((node) => nodeView(node, context.trustDomain));
}

async function approveAndIssue(
  context: AuthorityContext,
  node: NodeRecord,
  now: Date,
  by: string,
): Promise<Registration> {
  const moved = await context.store.transitionNode(node.id, ['NEW'], 'UP', { at: now });
  const up = moved ?? (await context.store.getNode(node.id));
  if (!up || up.state === 'REVOKED') throw permissionDenied(`node ${node.id} has been revoked`);
  if (moved) context.audit({ action: 'node.approved', by, nodeId: node.id, tokenId: node.tokenId });
  return freshNodeCertificate(context, up, now, 'approve', by);
}

/** A stored certificate as Register returns it, with its issuer as the chain. */
function viewOf(context: AuthorityContext, record: CertificateRecord): IssuedCertificateView {
  const issuer = context.cas.get(record.issuerId);
  return {
    certificate: record.der,
    chain: issuer ? [issuer.record.certificate] : [],
    serial: record.serial,
    notBefore: record.notBefore,
    notAfter: record.notAfter,
    spiffeId: spiffeIdOf(record.sans),
  };
}
