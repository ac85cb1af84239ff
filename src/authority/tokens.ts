// Join tokens: an admin creates, lists and revokes them; Register and
// JoinReplica check a token's secret and spend one of its uses. The secret
// is shown once, in the token string, and stored only as a hash.
import { invalid, notFound, type SigilError, unauthenticated } from '../errors.ts';
import {
  encodeJoinToken,
  hashTokenSecret,
  newTokenId,
  newTokenSecret,
  secretMatches,
  TOKEN_SECRET_BYTES,
  type TokenKind,
  tokenKindOf,
} from '../protocol/join-tokens.ts';
import type { NodeRecord, TokenRecord } from '../store/store.ts';
import { permissionDenied, requireAdmin } from './access.ts';
import type { AuthorityContext } from './context.ts';
import type { Caller } from './identities.ts';
import { DEFAULT_TOKEN_TTL_MS, MAX_TOKEN_TTL_MS, MAX_TOKEN_USES } from './lifetimes.ts';
import { isNodeId } from './node-id.ts';
import { displayName, wholeNumber } from './request-fields.ts';
import { type TokenSummary, tokenSummary } from './views.ts';

export interface CreateTokenRequest {
  /** 0 or absent: 15 minutes. */
  readonly ttlSeconds?: number;
  /** 0 or absent: 1. */
  readonly uses?: number;
  readonly autoApprove?: boolean;
  readonly name?: string;
  /** A token that admits a replica (JoinReplica) rather than a node. */
  readonly replica?: boolean;
}

export interface CreatedToken {
  /** The compact string for `sigil enrol`; holds the secret, shown once. */
  readonly token: string;
  readonly summary: TokenSummary;
}

export async function createToken(
  context: AuthorityContext,
  caller: Caller,
  request: CreateTokenRequest,
): Promise<CreatedToken> {
  requireAdmin(context, caller, 'create join tokens');
  const now = context.now();
  const kind: TokenKind = request.replica ? 'replica' : 'node';
  const ttlSeconds = wholeNumber(
    request.ttlSeconds,
    'token ttl_seconds',
    MAX_TOKEN_TTL_MS / 1000,
    DEFAULT_TOKEN_TTL_MS / 1000,
  );
  const uses = wholeNumber(request.uses, 'token uses', MAX_TOKEN_USES, 1);
  if (kind === 'replica' && request.autoApprove) {
    throw invalid('auto-approve applies to node join tokens, not replica tokens');
  }
  const id = newTokenId(kind);
  const secret = newTokenSecret();
  const record: TokenRecord = {
    id,
    secretHash: hashTokenSecret(secret),
    name: displayName(request.name, 'token name'),
    usesTotal: uses,
    usesLeft: uses,
    autoApprove: request.autoApprove === true,
    createdAt: now,
    expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
    revokedAt: null,
    createdBy: caller.spiffeId,
  };
  const token = encodeJoinToken({
    addresses: context.serverAddresses,
    rootFingerprint: context.cas.requireRoot().info.fingerprint,
    id,
    secret,
  });
  await context.store.insertToken(record);
  context.audit({
    action: 'token.created',
    by: caller.spiffeId,
    tokenId: id,
    tokenKind: kind,
    count: uses,
    autoApprove: record.autoApprove,
    notAfter: record.expiresAt,
  });
  return { token, summary: tokenSummary(record) };
}

export async function listTokens(context: AuthorityContext, caller: Caller): Promise<TokenSummary[]> {
  requireAdmin(context, caller, 'list join tokens');
  return (await context.store.listTokens()).map(tokenSummary);
}

export async function revokeToken(
  context: AuthorityContext,
  caller: Caller,
  id: string,
): Promise<{ alreadyRevoked: boolean }> {
  requireAdmin(context, caller, 'revoke join tokens');
  if (tokenKindOf(id) === null) throw invalid(`"${id.slice(0, 40)}" is not a token ID`);
  const token = await context.store.getToken(id);
  if (!token) throw notFound(`join token ${id} not found`);
  if (token.revokedAt) return { alreadyRevoked: true };
  const changed = await context.store.revokeToken(id, context.now());
  if (changed) context.audit({ action: 'token.revoked', by: caller.spiffeId, tokenId: id });
  return { alreadyRevoked: !changed };
}

/**
 * Looks the token up by its public ID and compares the secret's hash in
 * constant time. Unknown ID and wrong secret give the same error.
 */
export async function checkTokenSecret(
  context: AuthorityContext,
  tokenId: string,
  secret: Buffer,
  kind: TokenKind,
): Promise<TokenRecord> {
  if (typeof tokenId !== 'string' || tokenKindOf(tokenId) === null) {
    throw unauthenticated('invalid join token: malformed token ID');
  }
  if (!Buffer.isBuffer(secret) || secret.length !== TOKEN_SECRET_BYTES) {
    throw unauthenticated(`invalid join token: the secret must be ${TOKEN_SECRET_BYTES} bytes`);
  }
  const token = await context.store.getToken(tokenId);
  if (!secretMatches(secret, token?.secretHash ?? null) || !token)
    throw unauthenticated('invalid join token');
  if (tokenKindOf(tokenId) !== kind) {
    throw permissionDenied(
      kind === 'node'
        ? 'this is a replica join token; a node needs a node join token'
        : 'this is a node join token; a replica needs a replica join token (sigil token create --replica)',
    );
  }
  return token;
}

/**
 * Consumes one use of `token` and records the enrolment, atomically (the
 * store's registerNode). Refuses a token that is unusable now or was used
 * up by a concurrent registration, naming why.
 */
export async function spendToken(
  context: AuthorityContext,
  token: TokenRecord,
  node: Pick<NodeRecord, 'id' | 'publicKey' | 'name' | 'state'>,
  now: Date,
  by: string,
): Promise<NodeRecord> {
  const problem = tokenProblem(token, now);
  if (problem) throw problem;
  const { store } = context;
  const result = await store.registerNode(
    token.id,
    { ...node, tokenId: token.id, createdAt: now, updatedAt: now, certificateSerial: null },
    now,
  );
  if (result.outcome === 'created') {
    context.audit({ action: 'token.spent', by, tokenId: token.id, nodeId: node.id });
    if (isNodeId(node.id)) {
      context.audit({ action: 'node.registered', by, tokenId: token.id, nodeId: node.id, state: node.state });
    }
  }
  if (result.outcome !== 'token-unusable') return result.node;
  const fresh = await store.getToken(token.id);
  throw (
    (fresh && tokenProblem(fresh, now)) ?? permissionDenied(`join token ${token.id} can no longer be used`)
  );
}

/** Why a token whose secret matched cannot admit anyone now, or null when it can. */
function tokenProblem(token: TokenRecord, now: Date): SigilError | null {
  if (token.revokedAt !== null) return permissionDenied(`join token ${token.id} has been revoked`);
  if (token.expiresAt.getTime() <= now.getTime()) {
    return unauthenticated(`join token ${token.id} expired at ${token.expiresAt.toISOString()}`);
  }
  if (token.usesLeft <= 0) {
    return permissionDenied(
      `join token ${token.id} has already been used (${token.usesTotal} of ${token.usesTotal} uses)`,
    );
  }
  return null;
}
