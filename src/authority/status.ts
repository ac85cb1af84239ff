// What the authority tells about the deployment: the trust bundle (public:
// what clients and replicas pin) and the status (admin: counts, replicas,
// where the root key is).
import { type CertificateFilter, MAX_PAGE_SIZE } from '../store/store.ts';
import { requireAdmin } from './access.ts';
import type { AuthorityContext } from './context.ts';
import type { Caller } from './identities.ts';
import { isNodeId } from './node-id.ts';
import type { AuthorityStatus, TrustBundleView } from './views.ts';

export function trustBundle(context: AuthorityContext): TrustBundleView {
  const { cas } = context;
  const { roots, intermediates } = cas.bundle(context.now());
  return {
    trustDomain: context.trustDomain,
    roots,
    intermediates,
    rootFingerprint: cas.requireRoot().info.fingerprint,
    policyOid: context.policyOid.text,
  };
}

export async function status(context: AuthorityContext, caller: Caller): Promise<AuthorityStatus> {
  requireAdmin(context, caller, 'read the status');
  const { store } = context;
  const now = context.now();
  const count = async (filter: CertificateFilter): Promise<number> => {
    let total = 0;
    let pageToken = '';
    do {
      const page = await store.listCertificates({ ...filter, pageSize: MAX_PAGE_SIZE, pageToken });
      total += page.items.length;
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    return total;
  };
  const nodes = (await store.listNodes()).filter((node) => isNodeId(node.id));
  const cas = context.cas;
  const replicaIds = [...new Set(cas.intermediates().map((ca) => ca.record.replicaId ?? ''))].sort();
  const replicas = replicaIds.flatMap((replicaId) => {
    const current = cas.currentIntermediate(replicaId, now);
    return current
      ? [
          {
            replicaId,
            intermediateSerial: current.info.serialHex,
            intermediateNotAfter: current.info.notAfter,
          },
        ]
      : [];
  });
  const root = cas.requireRoot();
  return {
    trustDomain: context.trustDomain,
    rootFingerprint: root.info.fingerprint,
    replicaId: context.replicaId,
    replicas,
    certificatesIssued: await count({}),
    certificatesRevoked: await count({ revoked: true }),
    nodesNew: nodes.filter((node) => node.state === 'NEW').length,
    nodesUp: nodes.filter((node) => node.state === 'UP').length,
    nodesRevoked: nodes.filter((node) => node.state === 'REVOKED').length,
    store: context.storeKind,
    rootKeyOnline: root.record.encryptedKey !== null,
    rootKeyHere: context.cas.rootKey() !== null,
    policyOid: context.policyOid.text,
  };
}
