// Who may call what, checked by the authority itself rather than trusted to
// callers (see the rules at the top of authority.ts).
import { SigilError } from '../errors.ts';
import type { CertificateRecord } from '../store/store.ts';
import type { AuthorityContext } from './context.ts';
import type { Caller } from './identities.ts';

export const permissionDenied = (message: string): SigilError => new SigilError('permission_denied', message);

/** A caller whose own certificate is revoked is refused everything. */
export function requireLive(context: AuthorityContext, caller: Caller): void {
  if (caller.serial !== '' && context.revocations.isRevoked(caller.serial)) {
    throw permissionDenied(`the caller certificate ${caller.serial} is revoked`);
  }
}

export function requireAdmin(context: AuthorityContext, caller: Caller, what: string): void {
  requireLive(context, caller);
  if (caller.role !== 'admin') {
    throw permissionDenied(`only an admin may ${what} (caller ${caller.spiffeId || 'without a SPIFFE ID'})`);
  }
}

/** Whether `caller` holds the identity `record` was issued for (its SPIFFE ID is among the SANs). */
export function holds(caller: Caller, record: CertificateRecord): boolean {
  return caller.spiffeId !== '' && record.sans.includes(`uri:${caller.spiffeId}`);
}
