// Who is calling, for the authority: derived from the verified client
// certificate of the call's TLS connection (peerIdentity), never from
// metadata. A call without one fails with UNAUTHENTICATED.
import { type Caller, callerFrom } from '../authority/identities.ts';
import { type PeerCall, peerIdentity } from '../transport/peer-identity.ts';

export function callerOf(call: PeerCall, trustDomain: string): Caller {
  const peer = peerIdentity(call);
  return callerFrom(
    { spiffeId: peer.spiffeId, serial: peer.serial, fingerprint: peer.fingerprint },
    trustDomain,
  );
}
