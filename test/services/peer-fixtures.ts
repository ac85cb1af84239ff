// Peers for the authorization-table tests: a PeerIdentity with only what the
// table looks at filled in (SPIFFE ID, who issued the leaf, the admitted
// delegate), and Carol, a delegate beneath Alice whose chain grants every
// permission.
import { PERMISSIONS } from '../../src/pki/policy-extension.ts';
import type { PeerIdentity } from '../../src/transport/peer-identity.ts';

export function peer(
  spiffeId: string | null,
  issuedBy: PeerIdentity['issuedBy'] = 'deployment',
  delegate: PeerIdentity['delegate'] = null,
): PeerIdentity {
  return {
    spiffeId,
    subject: 'CN=test',
    dnsNames: [],
    ipAddresses: [],
    serial: '1',
    fingerprint: '00'.repeat(32),
    notAfter: new Date(Date.now() + 60_000),
    chain: [],
    extensions: [],
    issuedBy,
    delegate,
    workload: null,
  };
}

/** Carol, admitted: her chain grants everything, even "admin" (what an admin's method needs is the deployment's issuer). */
export function admittedCarol(spiffeId = 'spiffe://carol.alice.d.example.test'): PeerIdentity {
  return peer(spiffeId, 'delegated', {
    spiffeId,
    subtree: ['alice', 'carol'],
    effective: { version: 1, permissions: new Set(PERMISSIONS), limits: null },
    revocationIds: [],
  });
}
