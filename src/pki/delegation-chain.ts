// Authorization on a delegation chain that OpenSSL has already verified
// (signatures, validity, pathLen, name constraints). This is not a second
// path validation: it reads what the certificates say sigil-wise and decides
// what the leaf may do.
//
// From the topmost delegation down, every CA is a delegation: it carries the
// policy extension and exactly the SPIFFE ID of its subtree host
// (delegation-names.ts), one name below its parent's; its policy narrows its
// parent's and it does not outlive it. The leaf is one of
//   spiffe://<host of S>          the delegate S itself (its identity leaf)
//   spiffe://<host of S>/<path>   a workload or service S issued ("issue")
//   spiffe://<name>.<host of S>   a command certificate S issued ("issue")
// where S is the subtree of the delegation that signed it; a CA beneath a
// delegation needs "delegate" above it. Nothing beneath a delegation may carry
// another URI, or a common name that passes for a host name or an IP address
// it does not also carry as a SAN (clients that still fall back to the CN
// would otherwise take it for a name the constraints never saw).
//
// Pure: no I/O. Every refusal is a SigilError('permission_denied') naming the
// certificate and the rule.
import { messageOf, SigilError } from '../errors.ts';
import { parseCertificate } from './certificate.ts';
import { certificateNames, commonNameLooksLikeHost } from './certificate-names.ts';
import { parseDelegatedId, type Subtree, subtreeKey } from './delegation-names.ts';
import { ipAddress, parseSpiffeId } from './names.ts';
import {
  intersectPolicies,
  isNarrowing,
  type Permission,
  type Policy,
  type PolicyOid,
  readPolicy,
} from './policy-extension.ts';

/** Chains longer than this (leaf first, root excluded) are refused. */
export const DEFAULT_MAX_CHAIN_LENGTH = 9;

const denied = (message: string, cause?: unknown): SigilError =>
  new SigilError('permission_denied', message, cause === undefined ? undefined : { cause });

export interface DelegationChainOptions {
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  /** Longest chain accepted, leaf first, root excluded. Default 9: ten or more are refused. */
  readonly maxLength?: number;
  /**
   * The chain ends at a delegation, not at a leaf: a delegate reading what
   * its own delegation grants (never for a peer: a CA does not call).
   */
  readonly endsAtDelegation?: boolean;
}

/** What one certificate of a checked chain carries. */
export interface ChainLink {
  /** Its SPIFFE ID; null when it has none (a deployment CA above the delegations). */
  readonly spiffeId: string | null;
  /** Its own policy extension; null when it carries none. */
  readonly policy: Policy | null;
  /** The subtree it names; null above the delegations. */
  readonly subtree: Subtree | null;
}

export interface DelegationChainResult {
  /** The intersection of every policy along the chain. */
  readonly effective: Policy;
  /** The leaf's SPIFFE ID. */
  readonly spiffeId: string;
  /** The subtree the leaf acts for: its delegation's, or the command certificate's own. */
  readonly subtree: Subtree;
  /** The leaf's SPIFFE path ("" for a delegate or command identity). */
  readonly path: string;
  /**
   * Where the leaf sits, as the store keys it: the subtree key, and for a
   * workload leaf its path after a "/" ("/alice/carol//web"), so that it is
   * beneath its delegation and apart from any sub-delegation.
   */
  readonly key: string;
  /** One per certificate of the chain, in the same order (leaf first). */
  readonly links: readonly ChainLink[];
}

/** The store key of a delegated identity: see DelegationChainResult.key. */
export function delegatedKey(subtree: Subtree, path: string): string {
  return path === '' ? subtreeKey(subtree) : `${subtreeKey(subtree)}/${path}`;
}

/** readPolicy, with its refusals (malformed, critical) reported as permission_denied naming the link. */
export function policyOf(der: Buffer, policyOid: PolicyOid, what: string): Policy | null {
  try {
    return readPolicy(der, policyOid);
  } catch (error) {
    throw denied(`${what}: policy extension refused: ${messageOf(error)}`, error);
  }
}

interface LinkNames {
  readonly spiffeId: string | null;
  readonly delegated: { readonly subtree: Subtree; readonly path: string } | null;
}

/** The one SPIFFE ID of a certificate and where it lies; refuses several, or a malformed one. */
function linkNames(der: Buffer, trustDomain: string, what: string): LinkNames {
  let uris: readonly string[];
  try {
    uris = certificateNames(der).uris;
  } catch (error) {
    throw denied(`${what}: ${error instanceof Error ? error.message : 'unreadable names'}`, error);
  }
  const spiffe = uris.filter((uri) => uri.slice(0, 7).toLowerCase() === 'spiffe:');
  if (spiffe.length === 0) return { spiffeId: null, delegated: null };
  if (spiffe.length > 1) throw denied(`${what} carries ${spiffe.length} SPIFFE IDs; at most one is allowed`);
  try {
    parseSpiffeId(spiffe[0]);
  } catch (error) {
    throw denied(`${what}: ${error instanceof Error ? error.message : 'malformed SPIFFE ID'}`, error);
  }
  return { spiffeId: spiffe[0], delegated: parseDelegatedId(spiffe[0], trustDomain) };
}

/** Names nothing beneath a delegation may carry: other URIs, host-like CNs that are not SANs. */
function checkNamesBeneath(der: Buffer, what: string): void {
  const names = certificateNames(der);
  if (names.uris.length > 1) {
    throw denied(
      `${what} carries ${names.uris.length} URI SANs; beneath a delegation only the SPIFFE ID is allowed`,
    );
  }
  for (const commonName of names.commonNames) {
    if (!commonNameLooksLikeHost(commonName)) continue;
    if (names.dnsNames.includes(commonName.toLowerCase())) continue;
    // certificateNames gives IP SANs in canonical text ("fd00::1"); compare the CN the same way.
    const address = canonicalAddress(commonName);
    if (address !== null && names.ipAddresses.includes(address)) continue;
    throw denied(
      `${what} has the common name ${JSON.stringify(commonName)}, which looks like a host name or IP address but is not among its SANs`,
    );
  }
}

/** The canonical text of an IP address, or null when `text` is not one. */
function canonicalAddress(text: string): string | null {
  try {
    return ipAddress(text).value;
  } catch {
    return null;
  }
}

const sameSubtree = (a: Subtree, b: Subtree): boolean =>
  a.length === b.length && a.every((name, index) => name === b[index]);

/** `child` is `parent` plus exactly one name. */
const childOf = (child: Subtree, parent: Subtree): boolean =>
  child.length === parent.length + 1 && parent.every((name, index) => child[index] === name);

/**
 * Checks `chainDer` (leaf first, up to but excluding the root; the CAs above
 * the topmost delegation are the deployment's and pass) and computes what
 * the leaf holds. See the top of this file for the rules.
 */
export function checkDelegationChain(
  chainDer: readonly Buffer[],
  options: DelegationChainOptions,
): DelegationChainResult {
  const { trustDomain, policyOid } = options;
  const maxLength = options.maxLength ?? DEFAULT_MAX_CHAIN_LENGTH;
  if (chainDer.length === 0) throw denied('the certificate chain is empty');
  if (chainDer.length > maxLength) {
    throw denied(
      `the certificate chain has ${chainDer.length} certificates; at most ${maxLength} are accepted (root excluded)`,
    );
  }

  let effective: Policy | null = null;
  let parentPolicy: Policy | null = null;
  let parentSubtree: Subtree | null = null;
  let parentNotAfter: number | null = null;
  let parentWhat = '';
  const links: ChainLink[] = new Array(chainDer.length);
  let leaf: { spiffeId: string; subtree: Subtree; path: string } | null = null;

  for (let index = chainDer.length - 1; index >= 0; index--) {
    const der = chainDer[index];
    const isLeaf = index === 0 && options.endsAtDelegation !== true;
    let info: ReturnType<typeof parseCertificate>;
    try {
      info = parseCertificate(der, `chain certificate #${index}`);
    } catch (error) {
      throw denied(`chain certificate #${index} is unreadable`, error);
    }
    const what = `${isLeaf ? 'leaf' : 'CA'} #${index} "${info.subject.replaceAll('\n', ', ')}"`;
    if (!isLeaf && !info.isCa) throw denied(`${what} is not a CA but is not the leaf`);
    const policy = policyOf(der, policyOid, what);
    const names = linkNames(der, trustDomain, what);

    if (parentSubtree === null && !isLeaf) {
      // Above the topmost delegation: the deployment's own CAs carry neither.
      if (policy === null && names.delegated === null) {
        links[index] = { spiffeId: names.spiffeId, policy: null, subtree: null };
        continue;
      }
      if (policy === null) throw denied(`${what} names a delegation subtree but carries no policy`);
      if (names.delegated === null || names.delegated.path !== '' || names.delegated.subtree.length !== 1) {
        throw denied(
          `${what} carries a policy, so it must be a direct delegation named spiffe://<name>.d.${trustDomain} (it names ${names.spiffeId ?? 'nothing'})`,
        );
      }
    }

    let subtree: Subtree;
    let path = '';
    if (parentSubtree === null) {
      // The topmost delegation, or a command certificate the deployment issued directly.
      if (names.delegated === null || names.delegated.path !== '' || names.delegated.subtree.length !== 1) {
        throw denied(
          `${what} is not in a delegation subtree: a delegate's certificate is named spiffe://<name>.d.${trustDomain} (it names ${names.spiffeId ?? 'nothing'})`,
        );
      }
      subtree = names.delegated.subtree;
    } else {
      checkNamesBeneath(der, what);
      if (names.delegated === null) {
        throw denied(
          `${what} ${names.spiffeId === null ? 'has no SPIFFE ID' : `names ${names.spiffeId}`}, outside the subtree of ${parentWhat}`,
        );
      }
      ({ subtree, path } = names.delegated);
      let needed: Permission | null;
      if (!isLeaf) {
        if (path !== '' || !childOf(subtree, parentSubtree)) {
          throw denied(
            `${what} names ${names.spiffeId}, but a delegation beneath ${parentWhat} must be named one level below it`,
          );
        }
        if (policy === null) throw denied(`${what} is a CA beneath a delegation without a policy`);
        needed = 'delegate';
      } else if (path === '' && sameSubtree(subtree, parentSubtree)) {
        needed = null; // the delegate's own identity
      } else if (
        (path !== '' && sameSubtree(subtree, parentSubtree)) ||
        (path === '' && childOf(subtree, parentSubtree))
      ) {
        needed = 'issue';
      } else {
        throw denied(`${what} names ${names.spiffeId}, outside the subtree of ${parentWhat}`);
      }
      if (needed !== null && effective !== null && !effective.permissions.has(needed)) {
        throw denied(`${what} was made by ${parentWhat}, which lacks the "${needed}" permission`);
      }
    }
    if (index === 0 && options.endsAtDelegation === true && !info.isCa) {
      throw denied(`${what} is not a delegation (a CA certificate)`);
    }
    if (isLeaf && info.isCa) {
      throw denied(`${what} is a CA certificate; a delegate calls with its identity leaf, never with a CA`);
    }

    if (policy !== null) {
      if (parentPolicy !== null) {
        const check = isNarrowing(policy, parentPolicy);
        if (!check.ok) throw denied(`${what} escalates ${parentWhat}: ${check.reason}`);
      }
      effective = effective === null ? policy : intersectPolicies(effective, policy);
      parentPolicy = policy;
    }
    const end = info.notAfter.getTime();
    if (parentNotAfter !== null && end > parentNotAfter) {
      throw denied(
        `${what} outlives its parent: it ends ${info.notAfter.toISOString()}, the parent ends ${new Date(parentNotAfter).toISOString()}`,
      );
    }
    links[index] = { spiffeId: names.spiffeId, policy, subtree };
    if (index === 0) leaf = { spiffeId: names.spiffeId as string, subtree, path };
    parentNotAfter = end;
    parentSubtree = subtree;
    parentWhat = what;
  }

  if (effective === null || leaf === null) throw denied('the chain carries no delegation policy');
  return {
    effective,
    spiffeId: leaf.spiffeId,
    subtree: Object.freeze([...leaf.subtree]),
    path: leaf.path,
    key: delegatedKey(leaf.subtree, leaf.path),
    links,
  };
}
