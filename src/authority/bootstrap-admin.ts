// The first admin identity of a deployment, issued by the replica that
// bootstrapped the store and handed back once to be written out (admin.pem,
// admin.key, ca.pem). Until Authority.confirmBootstrap records it as
// delivered, a crash makes the next start issue a new one.
import { generateKeyPair, privateKeyToPem } from '../pki/keys.ts';
import { uriName } from '../pki/names.ts';
import { encodePem } from '../pki/pem.ts';
import { issuedEvent } from './audit.ts';
import type { AuthorityContext } from './context.ts';
import { adminSpiffeId, BOOTSTRAP_ADMIN_NAME } from './identities.ts';
import { ADMIN_TTL_MS } from './lifetimes.ts';

/** What an empty store's bootstrap hands back, to be written as admin.pem / admin.key / ca.pem. */
export interface BootstrapOutput {
  readonly trustDomain: string;
  readonly rootFingerprint: string;
  /** PEM: the admin leaf, then its intermediate. */
  readonly adminCertificatePem: string;
  /** PEM (PKCS#8), unencrypted: write it 0600. */
  readonly adminKeyPem: string;
  readonly adminSpiffeId: string;
  /** PEM of the root, to pin. */
  readonly rootCertificatePem: string;
}

export async function issueBootstrapAdmin(context: AuthorityContext): Promise<BootstrapOutput> {
  const { trustDomain } = context;
  const now = context.now();
  const { privateKey, publicKey } = generateKeyPair('p256');
  const id = adminSpiffeId(trustDomain, BOOTSTRAP_ADMIN_NAME);
  const issued = await context.issue({
    publicKey,
    pkiProfile: 'client',
    recordProfile: 'admin',
    commonName: BOOTSTRAP_ADMIN_NAME,
    sans: [uriName(id)],
    ttlMs: ADMIN_TTL_MS,
    requester: 'bootstrap',
    now,
  });
  context.audit(issuedEvent(issued, 'bootstrap', 'bootstrap', 'admin'));
  const root = context.cas.requireRoot();
  return {
    trustDomain,
    rootFingerprint: root.info.fingerprint,
    adminCertificatePem: [issued.certificate, ...issued.chain]
      .map((der) => encodePem('CERTIFICATE', der))
      .join(''),
    adminKeyPem: privateKeyToPem(privateKey),
    adminSpiffeId: id,
    rootCertificatePem: encodePem('CERTIFICATE', root.record.certificate),
  };
}
