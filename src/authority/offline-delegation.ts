// A sub-delegation signed offline: a delegate signs a delegation (or a
// command certificate) below its own with its own delegation key. Nothing
// contacts the server; it learns of the new delegation when it is first
// presented in a chain, and checks it then as it checks every chain
// (pki/delegation-chain.ts). So this signs only what the server would take:
// a policy that narrows the parent's effective one, names within its grants.
//
// Pure logic: certificates and keys in, a certificate out. Reading the
// parent's delegation directory and writing the new one is the CLI's
// (cli/delegation-parent.ts, cli/delegation-directory.ts).
import { type KeyObject, X509Certificate } from 'node:crypto';
import { invalid, SigilError } from '../errors.ts';
import { issueDelegateLeaf, issueDelegation, type NameGrants } from '../pki/delegation-certificates.ts';
import { checkDelegationChain } from '../pki/delegation-chain.ts';
import { Issuer } from '../pki/issuer.ts';
import { isNarrowing, type Policy, type PolicyOid } from '../pki/policy-extension.ts';

/** The delegation that signs: its certificate, chain, key and the deployment's settings. */
export interface ParentDelegation {
  /** The parent delegation certificate first, then its chain up to but excluding the root. */
  readonly chainDer: readonly Buffer[];
  readonly key: KeyObject;
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  /** What the parent's name constraints permit. */
  readonly grants: NameGrants;
}

/** Refuses a chain whose certificates do not belong together: each must be signed by the next. */
export function checkParentChain(chainDer: readonly Buffer[], source: string): void {
  const certificates = chainDer.map((der) => new X509Certificate(der));
  for (let i = 0; i + 1 < certificates.length; i++) {
    const [child, parent] = [certificates[i], certificates[i + 1]];
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      throw invalid(`${source}: certificate #${i} is not signed by certificate #${i + 1}`);
    }
  }
}

/** Refuses a chain whose last certificate is not signed by one of `rootsDer`; `sources` name the files. */
export function checkAnchoredAtRoot(
  chainDer: readonly Buffer[],
  rootsDer: readonly Buffer[],
  sources: { readonly chain: string; readonly bundle: string },
): void {
  const top = new X509Certificate(chainDer[chainDer.length - 1]);
  const roots = rootsDer.map((der) => new X509Certificate(der));
  if (!roots.some((root) => top.checkIssued(root) && top.verify(root.publicKey))) {
    throw invalid(`${sources.chain} does not chain to a root in ${sources.bundle}`);
  }
}

/** What the parent may hand on: the intersection of the policies along its own chain. */
export function parentEffectivePolicy(parent: ParentDelegation): Policy {
  return checkDelegationChain(parent.chainDer, {
    trustDomain: parent.trustDomain,
    policyOid: parent.policyOid,
    endsAtDelegation: true,
  }).effective;
}

export interface OfflineRequest {
  /** A delegation (a CA certificate) or a command certificate (a leaf with permissions only). */
  readonly kind: 'delegation' | 'command';
  /** One DNS label below the parent's subtree. */
  readonly name: string;
  /** What it grants; must narrow `effective`. */
  readonly policy: Policy;
  /** The parent's effective policy (parentEffectivePolicy). */
  readonly effective: Policy;
  /** The new certificate's key. */
  readonly publicKey: KeyObject;
  readonly pathLen?: number;
  /** Default: the parent's remaining lifetime. */
  readonly ttlMs?: number;
  /** Names it may certify (delegations only); each list not given is the parent's. */
  readonly grants: { readonly dnsNames?: readonly string[]; readonly ipRanges?: readonly string[] };
}

export interface OfflineIssued {
  readonly certificateDer: Buffer;
  /** What its name constraints permit (none for a command certificate). */
  readonly grants: NameGrants;
}

/** Signs the sub-delegation or command certificate with the parent's key. */
export function signOffline(parent: ParentDelegation, request: OfflineRequest): OfflineIssued {
  const parentDer = parent.chainDer[0];
  const issuer = Issuer.fromCertificate(parentDer, parent.key);
  if (request.kind === 'delegation') {
    const issued = issueDelegation({
      parent: { issuer, certificateDer: parentDer, policy: request.effective, grants: parent.grants },
      trustDomain: parent.trustDomain,
      policyOid: parent.policyOid,
      publicKey: request.publicKey,
      name: request.name,
      policy: request.policy,
      pathLen: request.pathLen,
      ttlMs: request.ttlMs,
      grants: {
        dnsNames: [...(request.grants.dnsNames ?? parent.grants.dnsNames)],
        ipRanges: [...(request.grants.ipRanges ?? parent.grants.ipRanges)],
      },
    });
    return { certificateDer: issued.der, grants: issued.grants };
  }
  const narrowing = isNarrowing(request.policy, request.effective);
  if (!narrowing.ok) {
    throw new SigilError(
      'permission_denied',
      `the command certificate escalates its parent's policy: ${narrowing.reason}`,
    );
  }
  const certificateDer = issueDelegateLeaf({
    parent: { issuer, certificateDer: parentDer },
    trustDomain: parent.trustDomain,
    policyOid: parent.policyOid,
    publicKey: request.publicKey,
    name: request.name,
    policy: request.policy,
    ttlMs: request.ttlMs,
  }).der;
  return { certificateDer, grants: { dnsNames: [], ipRanges: [] } };
}
