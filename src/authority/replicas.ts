// Admitting a replica: JoinReplica with a replica join token and proof of
// the new replica's intermediate key, answered by the replica holding the
// root key with an intermediate for that key. No CA key ever leaves the
// replica that generated it (bootstrap.ts).
import { preconditionFailed, SigilError } from '../errors.ts';
import { spkiDer } from '../pki/keys.ts';
import { type Possession, verifyReplicaProof } from '../protocol/challenges.ts';
import { permissionDenied } from './access.ts';
import { nextGeneration, signIntermediate } from './bootstrap.ts';
import type { AuthorityContext } from './context.ts';
import { parseReplicaId, replicaSpiffeId } from './identities.ts';
import { type IssuedCertificateView, issuedView } from './issuance.ts';
import { replicaEnrolmentIdFor } from './node-id.ts';
import { requireUsableKey } from './revoked-keys.ts';
import { trustBundle } from './status.ts';
import { checkTokenSecret, spendToken } from './tokens.ts';
import type { TrustBundleView } from './views.ts';

export interface JoinReplicaRequest {
  readonly tokenId: string;
  readonly tokenSecret: Buffer;
  /** The new replica's intermediate key; challenge: replicaChallenge(tokenId, tokenSecret, replicaId). */
  readonly possession?: Possession;
  readonly replicaId: string;
}

export interface JoinReplicaResult {
  readonly intermediate: IssuedCertificateView;
  readonly bundle: TrustBundleView;
}

/**
 * Admits a new replica: signs an intermediate for the key it proved, with
 * the root key held here. The token is consumed through the store's atomic
 * registerNode (recorded as replica enrolment "r…", never listed as a
 * node). Repeating it with the same key and replica ID is safe.
 */
export async function joinReplica(
  context: AuthorityContext,
  request: JoinReplicaRequest,
): Promise<JoinReplicaResult> {
  const { store, trustDomain } = context;
  const now = context.now();
  const rootIssuer = context.cas.rootIssuer();
  if (!rootIssuer) {
    throw preconditionFailed(
      `the root key is not online on replica "${context.replicaId}"; send JoinReplica to the replica holding it (or import the root key)`,
    );
  }
  const replicaId = parseReplicaId(request.replicaId);
  const token = await checkTokenSecret(context, request.tokenId, request.tokenSecret, 'replica');
  const publicKey = verifyReplicaProof(request.possession, request.tokenId, request.tokenSecret, replicaId);
  await requireUsableKey(store, publicKey);
  const spki = spkiDer(publicKey);
  if (context.cas.intermediates(replicaId).some((ca) => !spkiDer(ca.info.publicKey).equals(spki))) {
    throw new SigilError(
      'already_exists',
      `replica "${replicaId}" already has an intermediate CA with another key`,
    );
  }
  const by = replicaSpiffeId(trustDomain, replicaId);
  const enrolmentName = `replica:${replicaId}`;
  const id = replicaEnrolmentIdFor(publicKey);
  const enrolment =
    (await store.getNode(id)) ??
    (await spendToken(context, token, { id, publicKey: spki, name: enrolmentName, state: 'UP' }, now, by));
  if (enrolment.name !== enrolmentName) {
    throw new SigilError(
      'already_exists',
      `this key already joined as ${enrolment.name ?? 'another replica'}`,
    );
  }
  if (enrolment.state === 'REVOKED') throw permissionDenied(`replica "${replicaId}" has been revoked`);
  const issued = await signIntermediate(store, rootIssuer, {
    trustDomain,
    replicaId,
    generation: nextGeneration(context.cas, replicaId),
    publicKey,
    ttlMs: context.intermediateTtlMs,
    now,
    requester: by,
  });
  context.audit({
    action: 'certificate.issued',
    by,
    serial: issued.serialHex,
    profile: 'intermediate',
    issuance: 'replica',
    notAfter: issued.notAfter,
  });
  return {
    intermediate: issuedView(issued, [], ''),
    bundle: trustBundle(context),
  };
}
