// Delegation: handing a slice of authority down an X.509 chain, in the
// spirit of Albatross's delegation certificates. A delegation is an
// intermediate CA that carries
//   - the sigil policy extension (src/pki/policy-extension.ts): what it may
//     do and how much it may use, always a narrowing of its parent's;
//   - basicConstraints with a pathLen strictly below its parent's;
//   - its own SPIFFE ID as a URI SAN, spiffe://<td>/d/<alice>/<carol>/…,
//     which names its subtree;
//   - name constraints: URI SANs confined to the trust domain's host, DNS
//     SANs confined to what it was given (or to the reserved ".invalid" TLD,
//     i.e. nothing, when it was given none).
//
// Why a chain check of our own on top of OpenSSL's path validation: RFC 5280
// URI name constraints compare the host only, so OpenSSL cannot confine a
// delegate to its PATH subtree, and it knows nothing of the policy
// extension. OpenSSL verifies signatures, validity, pathLen and name
// constraints; checkDelegationChain then checks, on the verified chain,
// that every link narrows its parent's policy, stays inside its parent's
// subtree and does not outlive it, and computes the effective policy.
//
// Pure decisions, no I/O. Every refusal is a SigilError('permission_denied')
// whose message names what was refused.
import type { KeyObject } from 'node:crypto';
import { SigilError } from '../errors.ts';
import { parseCertificate } from '../pki/certificate.ts';
import type { IssuedCertificate, Issuer } from '../pki/issuer.ts';
import { parseSpiffeId, parseTrustDomain } from '../pki/names.ts';
import {
  intersectPolicies,
  isNarrowing,
  type Permission,
  type Policy,
  policyExtension,
  readPolicy,
} from '../pki/policy-extension.ts';
import { SubjectAlternativeNameExtension, X509Certificate } from '../pki/x509-library.ts';

/** The first path segment of every delegation's SPIFFE ID: spiffe://<td>/d/… */
export const DELEGATION_PREFIX = 'd';

/** Chains longer than this (leaf first, root excluded) are refused. */
export const DEFAULT_MAX_CHAIN_LENGTH = 9;

/** DNS constraint used when a delegation was given no DNS names: RFC 2606's reserved TLD, so nothing matches. */
export const NO_DNS = 'invalid';

const SEGMENT = /^[a-z0-9._-]+$/;

const denied = (message: string, cause?: unknown): SigilError =>
  new SigilError('permission_denied', message, cause === undefined ? undefined : { cause });

function checkSegment(segment: string): void {
  if (typeof segment !== 'string' || !SEGMENT.test(segment) || segment === '.' || segment === '..') {
    throw new SigilError(
      'invalid_argument',
      `delegation name "${String(segment)}" must be lower-case letters, digits, ".", "_" or "-" (not "." or "..")`,
    );
  }
}

/** spiffe://<td>/d/<seg1>/<seg2>…; each segment is [a-z0-9._-]+. */
export function delegationPath(trustDomain: string, segments: readonly string[]): string {
  const td = parseTrustDomain(trustDomain);
  if (segments.length === 0) throw new SigilError('invalid_argument', 'a delegation path needs a name');
  for (const segment of segments) checkSegment(segment);
  return parseSpiffeId(`spiffe://${td}/${DELEGATION_PREFIX}/${segments.join('/')}`).id;
}

/** The spiffe: URI SANs of a DER certificate. */
function spiffeSans(der: Buffer): string[] {
  let names: readonly { type: string; value: string }[];
  try {
    const san = new X509Certificate(der).getExtension(SubjectAlternativeNameExtension);
    names = san?.names.items ?? [];
  } catch (error) {
    throw denied('certificate: unreadable subjectAltName', error);
  }
  return names.filter((n) => n.type === 'url' && n.value.startsWith('spiffe:')).map((n) => n.value);
}

/**
 * The SPIFFE path segments of a certificate in `trustDomain` (["d", "alice"]),
 * or null when it has no SPIFFE ID. Refuses more than one, another trust
 * domain, or a malformed one.
 */
function spiffeSegments(der: Buffer, trustDomain: string, what: string): string[] | null {
  const ids = spiffeSans(der);
  if (ids.length === 0) return null;
  if (ids.length > 1) throw denied(`${what} carries ${ids.length} SPIFFE IDs; a delegation link has one`);
  let parsed: ReturnType<typeof parseSpiffeId>;
  try {
    parsed = parseSpiffeId(ids[0]);
  } catch (error) {
    throw denied(`${what}: ${error instanceof Error ? error.message : 'malformed SPIFFE ID'}`, error);
  }
  if (parsed.trustDomain !== trustDomain) {
    throw denied(`${what} ${parsed.id} is outside the trust domain ${trustDomain}`);
  }
  return parsed.path === '' ? [] : parsed.path.slice(1).split('/');
}

const segmentsToId = (trustDomain: string, segments: readonly string[] | null): string | null =>
  segments === null ? null : `spiffe://${trustDomain}${segments.map((segment) => `/${segment}`).join('')}`;

/**
 * The SPIFFE ID of a certificate in `trustDomain`, or null when it has none;
 * refuses (permission_denied) several, another trust domain or a malformed one.
 */
export function spiffeIdIn(der: Buffer, trustDomain: string, what: string): string | null {
  return segmentsToId(trustDomain, spiffeSegments(der, trustDomain, what));
}

const isDelegationPath = (segments: readonly string[] | null): segments is string[] =>
  segments !== null && segments.length >= 2 && segments[0] === DELEGATION_PREFIX;

const sameSegments = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((segment, i) => segment === b[i]);

/** Whether `child` lies strictly below `parent`, segment by segment. */
function strictlyInside(child: readonly string[], parent: readonly string[]): boolean {
  return child.length > parent.length && parent.every((segment, i) => child[i] === segment);
}

/** readPolicy, with its refusals (malformed, critical) reported as permission_denied naming the link. */
function policyOf(der: Buffer, what: string): Policy | null {
  try {
    return readPolicy(der);
  } catch (error) {
    throw denied(
      `${what}: policy extension refused: ${error instanceof Error ? error.message : String(error)}`,
      error,
    );
  }
}

// --- issuance -----------------------------------------------------------------

export interface DelegationParent {
  /** Signs the delegation: the parent's CA certificate and key. */
  readonly issuer: Issuer;
  readonly certificateDer: Buffer;
  /**
   * The parent's effective policy. For a delegation this is what its chain
   * grants (checkDelegationChain's `effective`); for the operator's own CA
   * (no policy extension) the admin policy.
   */
  readonly policy: Policy;
}

export interface DelegationRequest {
  readonly parent: DelegationParent;
  readonly trustDomain: string;
  /** The delegate's public key. */
  readonly publicKey: KeyObject;
  /** One path segment, appended to the parent's delegation path. */
  readonly name: string;
  readonly policy: Policy;
  /** Must be below the parent's pathLen; defaults to one below it (or unlimited under an unlimited parent). */
  readonly pathLen?: number;
  /** Defaults to the parent's remaining lifetime. Outliving the parent is refused, never clamped. */
  readonly ttlMs?: number;
  /** DNS names the delegate may put in certificates; none when absent. */
  readonly dnsNames?: readonly string[];
  readonly now?: Date;
}

export interface IssuedDelegation extends IssuedCertificate {
  /** The delegation's SPIFFE ID, spiffe://<td>/d/…  */
  readonly id: string;
  readonly segments: readonly string[];
  readonly policy: Policy;
}

/**
 * Issues a delegation certificate under `parent`. Refuses (permission_denied)
 * a parent without the 'delegate' permission, a policy that does not narrow
 * the parent's, a pathLen not below the parent's, and a lifetime past the
 * parent's notAfter.
 */
export function issueDelegation(request: DelegationRequest): IssuedDelegation {
  const { parent } = request;
  const trustDomain = parseTrustDomain(request.trustDomain);
  checkSegment(request.name);
  const parentCert = parseCertificate(parent.certificateDer, 'parent certificate');
  if (!parentCert.isCa) throw denied(`the parent "${parentCert.subject}" is not a CA; it cannot delegate`);

  // The stated parent policy may not exceed what the parent's certificate carries.
  const carried = policyOf(parent.certificateDer, 'the parent certificate');
  if (carried !== null) {
    const check = isNarrowing(parent.policy, carried);
    if (!check.ok) throw denied(`the parent policy exceeds the parent certificate's: ${check.reason}`);
  }
  if (!parent.policy.permissions.has('delegate')) {
    throw denied('the parent lacks the "delegate" permission; it may not create delegations');
  }
  const narrowing = isNarrowing(request.policy, parent.policy);
  if (!narrowing.ok) throw denied(`the delegation escalates its parent's policy: ${narrowing.reason}`);

  const parentPathLen = parentCert.pathLen;
  let pathLen = request.pathLen;
  if (parentPathLen !== null) {
    if (pathLen === undefined) {
      if (parentPathLen === 0) {
        throw denied('pathLen overflow: the parent has pathLen 0, so no CA may be issued beneath it');
      }
      pathLen = parentPathLen - 1;
    } else if (pathLen >= parentPathLen) {
      throw denied(
        `pathLen overflow: the requested pathLen ${pathLen} is not below the parent's pathLen ${parentPathLen}`,
      );
    }
  }

  const nowMs = (request.now ?? new Date()).getTime();
  const parentEnd = parentCert.notAfter.getTime();
  let notAfter: Date;
  if (request.ttlMs === undefined) {
    notAfter = new Date(parentEnd);
  } else {
    const wanted = nowMs + request.ttlMs;
    if (wanted > parentEnd) {
      throw denied(
        `the delegation would outlive its parent: it would end ${new Date(wanted).toISOString()}, the parent ends ${parentCert.notAfter.toISOString()}`,
      );
    }
    notAfter = new Date(wanted);
  }

  const parentSegments = spiffeSegments(parent.certificateDer, trustDomain, 'the parent certificate');
  const base = isDelegationPath(parentSegments) ? parentSegments.slice(1) : [];
  const segments = [...base, request.name];
  const id = delegationPath(trustDomain, segments);

  const dnsNames = request.dnsNames ?? [];
  const issued = request.parent.issuer.issue({
    publicKey: request.publicKey,
    profile: 'intermediate',
    subject: { commonName: `sigil delegation ${segments.join('/')}`.slice(0, 64) },
    sans: [{ type: 'uri', value: id }],
    notAfter,
    pathLen,
    nameConstraints: {
      permittedUri: [trustDomain],
      permittedDns: dnsNames.length > 0 ? dnsNames : [NO_DNS],
    },
    extensions: [policyExtension(request.policy)],
    now: request.now,
  });
  if (issued.clamped) throw denied('the delegation would outlive its parent');
  return { ...issued, id, segments: Object.freeze([DELEGATION_PREFIX, ...segments]), policy: request.policy };
}

export interface DelegateLeafRequest {
  /** The issuing CA: a delegation, or (for an admin's command certificate) a replica intermediate. */
  readonly parent: { readonly issuer: Issuer; readonly certificateDer: Buffer };
  readonly trustDomain: string;
  readonly publicKey: KeyObject;
  /**
   * One path segment appended to the parent's delegation path. Absent: the
   * delegate's own identity leaf, carrying the parent's SPIFFE ID (the parent
   * must then be a delegation).
   */
  readonly name?: string;
  /** A command certificate's permissions (limits must be null: it holds no resources). */
  readonly policy?: Policy;
  /** Defaults to the parent's remaining lifetime; outliving it is refused. */
  readonly ttlMs?: number;
  readonly now?: Date;
}

export interface IssuedDelegateLeaf extends IssuedCertificate {
  readonly id: string;
}

/**
 * A client leaf inside a delegation subtree: the delegate's own identity (no
 * name) or a command certificate (a name and a policy without resources).
 * The checks a presented chain gets are applied here too, so nothing is
 * issued that the server would refuse.
 */
export function issueDelegateLeaf(request: DelegateLeafRequest): IssuedDelegateLeaf {
  const trustDomain = parseTrustDomain(request.trustDomain);
  const parentSegments = spiffeSegments(request.parent.certificateDer, trustDomain, 'the parent certificate');
  const base = isDelegationPath(parentSegments) ? parentSegments.slice(1) : [];
  if (request.name === undefined && base.length === 0) {
    throw denied('an identity leaf needs a delegation as its parent');
  }
  if (request.name !== undefined) checkSegment(request.name);
  if (request.policy !== undefined && request.policy.limits !== null) {
    throw new SigilError(
      'invalid_argument',
      'a command certificate carries permissions only, no resource limits',
    );
  }
  const parentPolicy = policyOf(request.parent.certificateDer, 'the parent certificate');
  if (request.name !== undefined && parentPolicy !== null && !parentPolicy.permissions.has('issue')) {
    throw denied('the parent lacks the "issue" permission; it may not issue certificates in its subtree');
  }
  if (request.policy !== undefined && parentPolicy !== null) {
    const narrowing = isNarrowing(request.policy, parentPolicy);
    if (!narrowing.ok)
      throw denied(`the command certificate escalates its parent's policy: ${narrowing.reason}`);
  }
  const segments = request.name === undefined ? base : [...base, request.name];
  const id = delegationPath(trustDomain, segments);
  const parentCert = parseCertificate(request.parent.certificateDer, 'parent certificate');
  const nowMs = (request.now ?? new Date()).getTime();
  const wanted = request.ttlMs === undefined ? parentCert.notAfter.getTime() : nowMs + request.ttlMs;
  if (wanted > parentCert.notAfter.getTime()) {
    throw denied(
      `the certificate would outlive its parent: it would end ${new Date(wanted).toISOString()}, the parent ends ${parentCert.notAfter.toISOString()}`,
    );
  }
  const issued = request.parent.issuer.issue({
    publicKey: request.publicKey,
    profile: 'client',
    subject: {
      commonName: `sigil ${request.policy ? 'command' : 'delegate'} ${segments.join('/')}`.slice(0, 64),
    },
    sans: [{ type: 'uri', value: id }],
    notAfter: new Date(wanted),
    extensions: request.policy ? [policyExtension(request.policy)] : [],
    now: request.now,
  });
  return { ...issued, id };
}

// --- checking a presented chain -------------------------------------------------

export interface DelegationChainOptions {
  readonly trustDomain: string;
  /** Longest chain accepted, leaf first, root excluded. Default 9: ten or more are refused. */
  readonly maxLength?: number;
  /** What the topmost delegation is checked against (the operator's grant); nothing when absent. */
  readonly adminPolicy?: Policy;
}

/** What one certificate of a checked chain carries. */
export interface ChainLink {
  /** Its SPIFFE ID; null when it has none (an operator or replica CA). */
  readonly spiffeId: string | null;
  /** Its own policy extension; null when it carries none. */
  readonly policy: Policy | null;
}

export interface DelegationChainResult {
  /** The intersection of every policy along the chain. */
  readonly effective: Policy;
  /** The SPIFFE path segments of the leaf, e.g. ["d", "alice", "carol", "web"]. */
  readonly path: readonly string[];
  /** One per certificate of the chain, in the same order (leaf first). */
  readonly links: readonly ChainLink[];
}

/**
 * Authorization on a chain OpenSSL has already verified: `chainDer` is leaf
 * first, up to but excluding the root. CA certificates above the topmost
 * delegation (the operator's or a replica's intermediate, without a policy
 * extension and outside /d/) are passed over. From the topmost delegation
 * down, every CA carries the policy extension and a SPIFFE ID under /d/;
 * each link's policy narrows its parent's, its SPIFFE ID lies strictly
 * inside its parent's subtree, and it does not outlive its parent. A leaf
 * without the extension inherits the effective policy.
 */
export function checkDelegationChain(
  chainDer: readonly Buffer[],
  options: DelegationChainOptions,
): DelegationChainResult {
  const trustDomain = parseTrustDomain(options.trustDomain);
  const maxLength = options.maxLength ?? DEFAULT_MAX_CHAIN_LENGTH;
  if (chainDer.length === 0) throw denied('the certificate chain is empty');
  if (chainDer.length > maxLength) {
    throw denied(
      `the certificate chain has ${chainDer.length} certificates; at most ${maxLength} are accepted (root excluded)`,
    );
  }

  // adminPolicy bounds the topmost policy but is not itself a grant: a chain
  // carrying no policy at all is refused, not given the admin's.
  let effective: Policy | null = null;
  let parentPolicy: Policy | null = options.adminPolicy ?? null;
  let parentSegments: string[] | null = null;
  let parentNotAfter: number | null = null;
  let parentWhat = '';
  const links: ChainLink[] = new Array(chainDer.length);

  for (let index = chainDer.length - 1; index >= 0; index--) {
    const der = chainDer[index];
    const isLeaf = index === 0;
    let info: ReturnType<typeof parseCertificate>;
    try {
      info = parseCertificate(der, `chain certificate #${index}`);
    } catch (error) {
      throw denied(`chain certificate #${index} is unreadable`, error);
    }
    const what = `${isLeaf ? 'leaf' : 'delegation'} #${index} "${info.subject}"`;
    if (!isLeaf && !info.isCa) throw denied(`${what} is not a CA but is not the leaf`);
    const policy = policyOf(der, what);
    const segments = spiffeSegments(der, trustDomain, what);
    links[index] = { spiffeId: segmentsToId(trustDomain, segments), policy };

    if (parentSegments === null) {
      // Above the topmost delegation: operator / replica intermediates pass.
      if (!isLeaf && policy === null && !isDelegationPath(segments)) continue;
      if (!isLeaf && !isDelegationPath(segments)) {
        throw denied(`${what} carries a policy but its SPIFFE ID is not under /${DELEGATION_PREFIX}/`);
      }
    } else {
      if (segments === null) throw denied(`${what} has no SPIFFE ID`);
      // A delegate's own identity leaf carries its delegation's SPIFFE ID;
      // everything else lies strictly inside the parent's subtree.
      const ownIdentity = isLeaf && sameSegments(segments, parentSegments);
      if (!ownIdentity && !strictlyInside(segments, parentSegments)) {
        throw denied(
          `${what} path /${segments.join('/')} is outside its parent's subtree /${parentSegments.join('/')}`,
        );
      }
      if (!isLeaf && policy === null) throw denied(`${what} is a CA below a delegation without a policy`);
      // Making a sub-delegation needs "delegate", any other leaf "issue".
      const needed: Permission | null = info.isCa ? 'delegate' : ownIdentity ? null : 'issue';
      if (needed !== null && effective !== null && !effective.permissions.has(needed)) {
        throw denied(`${what} was made by ${parentWhat}, which lacks the "${needed}" permission`);
      }
    }
    if (isLeaf && segments === null) throw denied(`${what} has no SPIFFE ID`);

    if (policy !== null) {
      if (parentPolicy !== null) {
        const check = isNarrowing(policy, parentPolicy);
        if (!check.ok) {
          throw denied(`${what} escalates ${parentWhat || 'the admin policy'}: ${check.reason}`);
        }
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
    parentNotAfter = end;
    parentSegments = segments ?? [];
    parentWhat = what;
  }

  if (effective === null) throw denied('the chain carries no delegation policy');
  return { effective, path: Object.freeze([...(parentSegments ?? [])]), links };
}
