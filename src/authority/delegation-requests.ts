// Delegation as callers ask for it: who may create or revoke, the proof of
// the delegate's key, the audit trail, and freeing what a revoked subtree
// held. The subtree rules themselves (admission, narrowing, reservations,
// revocation inside a subtree) are the Delegations class (delegations.ts).
import { X509Certificate } from 'node:crypto';
import { issuedDirectlyBy } from '../pki/issued-by.ts';
import { type Possession, verifySignProof } from '../protocol/challenges.ts';
import { permissionDenied, requireAdmin, requireLive } from './access.ts';
import type { AuthorityContext } from './context.ts';
import type { CreatedDelegation, DelegateGrant, DelegationRequest } from './delegations.ts';
import type { Caller } from './identities.ts';
import { reasonOf } from './request-fields.ts';
import type { RevocationUpdate } from './revocations.ts';
import { requireUsableKey } from './revoked-keys.ts';
import { revokeWorkloadIdentitiesBeneath } from './workload-identity.ts';

/** A direct delegation or command certificate under this replica's intermediate. Admin only. */
export async function createDelegation(
  context: AuthorityContext,
  caller: Caller,
  request: Omit<DelegationRequest, 'publicKey'> & { readonly possession: Possession | undefined },
): Promise<CreatedDelegation> {
  requireAdmin(context, caller, 'create delegations');
  const publicKey = verifySignProof(request.possession, caller.fingerprint, context.now());
  await requireUsableKey(context.store, publicKey);
  const created = await context.delegations.create({ ...request, publicKey }, caller.spiffeId);
  context.audit({
    action: 'delegation.created',
    by: caller.spiffeId,
    serial: created.serial,
    spiffeId: created.spiffeId,
    profile: request.command ? 'command' : 'delegation',
    issuance: 'delegate',
    notAfter: created.notAfter,
  });
  return created;
}

/** Revokes a certificate in a delegation subtree: a delegate's own subtree (grant), or any (admin). */
export async function revokeDelegated(
  context: AuthorityContext,
  caller: Caller,
  grant: DelegateGrant | null,
  request: { certificate: Buffer; chain: readonly Buffer[]; reason?: string },
): Promise<{ alreadyRevoked: boolean }> {
  requireLive(context, caller);
  if (!grant && caller.role !== 'admin') {
    throw permissionDenied('only an admin or a delegate may revoke delegations');
  }
  const reason = reasonOf(request.reason);
  const by = caller.spiffeId;
  const result = await context.delegations.revoke(grant, request.certificate, request.chain, reason, by);
  if (!result.alreadyRevoked) {
    context.audit({
      action: 'delegation.revoked',
      by,
      serial: result.serial,
      fingerprint: result.fingerprint,
      spiffeId: result.spiffeId,
      profile: result.profile,
      reason,
      revocation: 'delegation',
    });
  }
  await releaseReservations(context, result.fingerprint, by);
  return { alreadyRevoked: result.alreadyRevoked };
}

/** Frees what a revoked delegation (or command, or workload) certificate held (Delegations.releaseRevoked). */
export async function releaseReservations(
  context: AuthorityContext,
  fingerprint: string,
  by: string,
): Promise<void> {
  // A revoked delegation's workloads lose their identities with it.
  await revokeWorkloadIdentitiesBeneath(context, fingerprint, by);
  const released = await context.delegations.releaseRevoked(fingerprint);
  if (released && released.count > 0) {
    context.audit({
      action: 'reservations.released',
      by,
      fingerprint,
      subtree: released.subtree,
      count: released.count,
    });
  }
}

/**
 * A snapshot of every revoked, unexpired serial (delivered before this
 * returns), then each delta. For a delegate (`grant`), only what lies
 * beneath it, delivered asynchronously (see Delegations.watchRevocations).
 */
export function watchRevocations(
  context: AuthorityContext,
  listener: (update: RevocationUpdate) => void,
  grant: DelegateGrant | undefined,
): () => void {
  if (!grant) return context.revocations.watch(listener);
  return context.delegations.watchRevocations(
    grant,
    (inner) => context.revocations.watch(inner),
    listener,
    (error) => context.failed("a delegate's revocation watch", error),
  );
}

/** Whether one of this deployment's CAs (current or retired) signed `certificateDer` directly. */
export function issuedByDeployment(context: AuthorityContext, certificateDer: Buffer): boolean {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(certificateDer);
  } catch {
    return false;
  }
  return issuedDirectlyBy(certificate, context.caCertificates());
}
