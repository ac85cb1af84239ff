// Who is calling, for the authority: derived from the verified client
// certificate of the call's TLS connection (peerIdentity: who issued it, by
// signature, and any admitted delegation grant), never from metadata. A call
// without one fails with UNAUTHENTICATED.
import { type Caller, callerFrom } from '../authority/identities.ts';
import type { AdmittedDelegate } from '../transport/delegate-admission.ts';
import { type PeerCall, peerIdentity } from '../transport/peer-identity.ts';

/** The control plane's admitted grants carry their store key; any other admission gives none. */
function delegateKeyOf(delegate: AdmittedDelegate): string | null {
  const key = (delegate as { readonly key?: unknown }).key;
  return typeof key === 'string' ? key : null;
}

export function callerOf(call: PeerCall, trustDomain: string): Caller {
  const peer = peerIdentity(call);
  return callerFrom(
    {
      spiffeId: peer.spiffeId,
      serial: peer.serial,
      fingerprint: peer.fingerprint,
      issuedByDeployment: peer.issuedBy === 'deployment',
      delegateKey: peer.delegate === null ? null : delegateKeyOf(peer.delegate),
    },
    trustDomain,
  );
}
