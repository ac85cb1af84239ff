// Authority comes from who issued a certificate: decided by signature, since
// names and key identifiers can be copied by anyone holding a lesser key.
import type { X509Certificate } from 'node:crypto';

/** Whether `leaf` is signed directly by one of the CA certificates in `authorities`. */
export function issuedDirectlyBy(leaf: X509Certificate, authorities: readonly X509Certificate[]): boolean {
  return authorities.some((ca) => {
    try {
      return ca.ca && leaf.checkIssued(ca) && leaf.verify(ca.publicKey);
    } catch {
      return false;
    }
  });
}
