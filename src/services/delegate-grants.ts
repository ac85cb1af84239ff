// Delegates on the wire. MtlsServer holds every call of a connection whose
// leaf the deployment's CAs did not sign directly (or that carries a policy
// or a delegated name) until it is admitted (transport/delegate-admission.ts);
// on the control plane, admission is Authority.admitDelegate: the chain
// checks plus records, issuance rates and revocation of every link. A handler
// then reads the admitted grant here. Only grants this server produced are
// handed out, so nothing else on a connection can pass for one.
import type { Authority } from '../authority/authority.ts';
import type { DelegateGrant } from '../authority/delegations.ts';
import { SigilError } from '../errors.ts';
import type { DelegateAdmitter } from '../transport/delegate-admission.ts';
import { type PeerCall, peerIdentity } from '../transport/peer-identity.ts';

export class DelegateGrants {
  readonly #authority: Authority;
  readonly #granted = new WeakSet<object>();

  constructor(authority: Authority) {
    this.#authority = authority;
  }

  /** The admitter MtlsServer runs for delegated connections. */
  readonly admitter: DelegateAdmitter = async (leafDer, presented) => {
    const grant = await this.#authority.admitDelegate(leafDer, presented);
    this.#granted.add(grant);
    return grant;
  };

  /** The admitted grant of a call; null for a deployment identity. */
  grantOf(call: PeerCall): DelegateGrant | null {
    const delegate = peerIdentity(call).delegate;
    if (delegate === null) return null;
    if (!this.#granted.has(delegate)) {
      throw new SigilError('permission_denied', 'this connection was not admitted by this server');
    }
    return delegate as DelegateGrant;
  }
}

/**
 * The admitted grant of a delegate's call. Fails closed when the server runs
 * without DelegateGrants or the caller is not a delegate.
 */
export async function requireGrant(
  deps: { readonly delegateGrants?: DelegateGrants },
  call: PeerCall,
): Promise<DelegateGrant> {
  if (!deps.delegateGrants) throw new SigilError('permission_denied', 'this server does not admit delegates');
  const grant = deps.delegateGrants.grantOf(call);
  if (grant === null) throw new SigilError('permission_denied', 'the caller is not a delegate');
  return grant;
}
