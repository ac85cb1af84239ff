// Issuing delegation certificates, in the spirit of Albatross's delegation
// certificates. A delegation is an intermediate CA that carries
//   - the sigil policy extension (policy-extension.ts), under the
//     deployment's OID: what it may do and how much it may use, always a
//     narrowing of its parent's;
//   - basicConstraints with a pathLen strictly below its parent's;
//   - the SPIFFE ID of its subtree host, spiffe://carol.alice.d.<td>
//     (delegation-names.ts);
//   - name constraints, the part every plain TLS peer checks:
//       URI  its own host and every host beneath it, nothing else;
//       DNS  what it was granted, or the reserved TLD "invalid" (nothing);
//       IP   what it was granted; with no grant, every IPv4 and IPv6
//            address is excluded.
// The leaves a delegate's own code needs (its identity leaf, command
// certificates) are issued here too, with the checks a presented chain gets
// (delegation-chain.ts), so nothing is issued that a server would refuse.
//
// Pure decisions, no I/O. Refusals are SigilError('permission_denied') for
// escalations and 'invalid_argument' for malformed requests.
import type { KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, id_ce_nameConstraints, NameConstraints } from '@peculiar/asn1-x509';
import { invalid, SigilError } from '../errors.ts';
import { parseCertificate } from './certificate.ts';
import { policyOf } from './delegation-chain.ts';
import {
  checkDelegationName,
  delegatedId,
  parseDelegatedId,
  permittedUriHosts,
  type Subtree,
} from './delegation-names.ts';
import type { Issuer, SignedCertificate } from './issuer.ts';
import { dnsName, type IpRange, ipRange, parseTrustDomain } from './names.ts';
import { isNarrowing, type Policy, type PolicyOid, policyExtension } from './policy-extension.ts';
import { SubjectAlternativeNameExtension, X509Certificate } from './x509-library.ts';

/** DNS constraint used when a delegation was given no DNS names: RFC 2606's reserved TLD, so nothing matches. */
export const NO_DNS = 'invalid';

/** With no IP grant every address is excluded, in both families. */
const NO_IP: readonly IpRange[] = [ipRange('0.0.0.0/0'), ipRange('::/0')];

const denied = (message: string): SigilError => new SigilError('permission_denied', message);

/** The host names and address ranges a delegation may put in certificates. */
export interface NameGrants {
  /** DNS names (a leading "." means subdomains only); none when empty. */
  readonly dnsNames: readonly string[];
  /** CIDR ranges ("10.1.0.0/16", "fd00::/8"); none when empty. */
  readonly ipRanges: readonly string[];
}

export const NO_GRANTS: NameGrants = Object.freeze({ dnsNames: [], ipRanges: [] });

function dnsWithin(child: string, parent: string): boolean {
  if (parent.startsWith('.')) return child.endsWith(parent) && child.length > parent.length;
  return child === parent || child.endsWith(`.${parent}`);
}

function rangeWithin(child: IpRange, parent: IpRange): boolean {
  const length = child.bytes.length / 2;
  if (parent.bytes.length !== child.bytes.length) return false;
  for (let i = 0; i < length; i++) {
    const parentMask = parent.bytes[length + i];
    // The child's mask covers the parent's, and its network lies in the parent's.
    if ((child.bytes[length + i] & parentMask) !== parentMask) return false;
    if ((child.bytes[i] & parentMask) !== parent.bytes[i]) return false;
  }
  return true;
}

/** Canonical grants; refuses malformed names and ranges. */
export function parseGrants(grants: Partial<NameGrants> | undefined): NameGrants {
  const dnsNames = (grants?.dnsNames ?? []).map((name) => {
    const subdomainsOnly = name.startsWith('.');
    const parsed = dnsName(subdomainsOnly ? name.slice(1) : name).value.toLowerCase();
    if (parsed.startsWith('*'))
      throw invalid(`DNS grant ${JSON.stringify(name)}: no wildcards (use ".${parsed.slice(2)}")`);
    return subdomainsOnly ? `.${parsed}` : parsed;
  });
  const ipRanges = (grants?.ipRanges ?? []).map((text) => ipRange(text).value);
  return { dnsNames: [...new Set(dnsNames)], ipRanges: [...new Set(ipRanges)] };
}

/** What a parent may name, per kind; null: that kind is not constrained (anything). */
interface HeldGrants {
  readonly dnsNames: readonly string[] | null;
  readonly ipRanges: readonly string[] | null;
}

/** Refuses a grant the parent does not hold. */
function checkGrantsWithin(child: NameGrants, parent: HeldGrants, whose = "its parent's"): void {
  const { dnsNames, ipRanges } = parent;
  for (const name of child.dnsNames) {
    if (dnsNames !== null && !dnsNames.some((held) => dnsWithin(name, held))) {
      throw denied(
        `the delegation escalates ${whose} DNS names: ${name} is not within ${dnsNames.join(', ') || 'nothing'}`,
      );
    }
  }
  for (const text of child.ipRanges) {
    if (ipRanges !== null && !ipRanges.some((held) => rangeWithin(ipRange(text), ipRange(held)))) {
      throw denied(
        `the delegation escalates ${whose} IP ranges: ${text} is not within ${ipRanges.join(', ') || 'nothing'}`,
      );
    }
  }
}

/**
 * What a CA certificate's own name constraints let it name: its permitted DNS
 * names (NO_DNS meaning none) and IP ranges. A kind with no permitted subtree
 * is unconstrained (null), unless the certificate excludes names of that kind,
 * which sigil only ever does to exclude every address: then it holds none.
 * A certificate without name constraints (a deployment CA) holds anything.
 */
function grantsCarried(der: Buffer): HeldGrants {
  let constraints: NameConstraints | null = null;
  try {
    const extension = AsnConvert.parse(der, Certificate).tbsCertificate.extensions?.find(
      (candidate) => candidate.extnID === id_ce_nameConstraints,
    );
    if (extension) constraints = AsnConvert.parse(extension.extnValue, NameConstraints);
  } catch (error) {
    throw invalid('the parent certificate has unreadable name constraints', error);
  }
  if (constraints === null) return { dnsNames: null, ipRanges: null };
  const permitted = [...(constraints.permittedSubtrees ?? [])].map((subtree) => subtree.base);
  const excluded = [...(constraints.excludedSubtrees ?? [])].map((subtree) => subtree.base);
  const kind = (pick: (name: (typeof permitted)[number]) => string | undefined): string[] | null => {
    const held = permitted.map(pick).filter((value): value is string => value !== undefined);
    if (held.length > 0) return held;
    return excluded.some((name) => pick(name) !== undefined) ? [] : null;
  };
  const dnsNames = kind((name) => name.dNSName);
  const ipRanges = kind((name) => name.iPAddress);
  return {
    dnsNames: dnsNames === null ? null : dnsNames.filter((name) => name.toLowerCase() !== NO_DNS),
    ipRanges: ipRanges === null ? null : ipRanges.map((range) => ipRange(range).value),
  };
}

/** The subtree a parent certificate names, or [] for one of the deployment's own CAs. */
function parentSubtree(der: Buffer, trustDomain: string): Subtree {
  let uris: readonly string[];
  try {
    uris =
      new X509Certificate(der)
        .getExtension(SubjectAlternativeNameExtension)
        ?.names.items.filter((n) => n.type === 'url')
        .map((n) => n.value) ?? [];
  } catch {
    throw invalid('the parent certificate has an unreadable subjectAltName');
  }
  for (const uri of uris) {
    const delegated = parseDelegatedId(uri, trustDomain);
    if (delegated) {
      if (delegated.path !== '') throw denied('the parent is a workload certificate, not a delegation');
      return delegated.subtree;
    }
  }
  return [];
}

export interface DelegationParent {
  /** Signs the delegation: the parent's CA certificate and key. */
  readonly issuer: Issuer;
  readonly certificateDer: Buffer;
  /**
   * The parent's effective policy: what its chain grants, or for the
   * deployment's own CA (no policy extension) everything.
   */
  readonly policy: Policy;
  /** What the parent may name; absent for the deployment's own CA (anything). */
  readonly grants?: NameGrants;
}

export interface DelegationRequest {
  readonly parent: DelegationParent;
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  /** The delegate's public key. */
  readonly publicKey: KeyObject;
  /** One DNS label, appended to the parent's subtree. */
  readonly name: string;
  readonly policy: Policy;
  /** Must be below the parent's pathLen; defaults to one below it (or unlimited under an unlimited parent). */
  readonly pathLen?: number;
  /** Defaults to the parent's remaining lifetime. Outliving the parent is refused, never clamped. */
  readonly ttlMs?: number;
  /** DNS names and IP ranges the delegate may put in certificates; none when absent. */
  readonly grants?: Partial<NameGrants>;
  readonly now?: Date;
}

export interface IssuedDelegation extends SignedCertificate {
  /** The delegation's SPIFFE ID, spiffe://<name>.….d.<td> */
  readonly id: string;
  readonly subtree: Subtree;
  readonly policy: Policy;
  readonly grants: NameGrants;
}

/**
 * Issues a delegation certificate under `parent`. Refuses (permission_denied)
 * a parent without the 'delegate' permission, a policy or name grant that
 * does not narrow the parent's, a pathLen not below the parent's, and a
 * lifetime past the parent's notAfter.
 */
export function issueDelegation(request: DelegationRequest): IssuedDelegation {
  const { parent, policyOid } = request;
  const trustDomain = parseTrustDomain(request.trustDomain);
  checkDelegationName(request.name);
  const parentCert = parseCertificate(parent.certificateDer, 'parent certificate');
  if (!parentCert.isCa) throw denied(`the parent "${parentCert.subject}" is not a CA; it cannot delegate`);

  // The stated parent policy may not exceed what the parent's certificate carries.
  const carried = policyOf(parent.certificateDer, policyOid, 'the parent certificate');
  if (carried !== null) {
    const check = isNarrowing(parent.policy, carried);
    if (!check.ok) throw denied(`the parent policy exceeds the parent certificate's: ${check.reason}`);
  }
  if (!parent.policy.permissions.has('delegate')) {
    throw denied('the parent lacks the "delegate" permission; it may not create delegations');
  }
  const narrowing = isNarrowing(request.policy, parent.policy);
  if (!narrowing.ok) throw denied(`the delegation escalates its parent's policy: ${narrowing.reason}`);
  const grants = parseGrants(request.grants);
  if (parent.grants) checkGrantsWithin(grants, parent.grants);
  // And within what the parent's certificate itself permits, whatever is stated.
  checkGrantsWithin(grants, grantsCarried(parent.certificateDer), "its parent certificate's");

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
  const notAfter = lifetimeWithin(parentCert.notAfter, request.ttlMs, request.now, 'delegation');

  const subtree = [...parentSubtree(parent.certificateDer, trustDomain), request.name];
  const id = delegatedId(trustDomain, subtree);
  const issued = parent.issuer.issue({
    publicKey: request.publicKey,
    profile: 'intermediate',
    subject: { commonName: `sigil delegation ${subtree.join('/')}`.slice(0, 64) },
    sans: [{ type: 'uri', value: id }],
    notAfter,
    pathLen,
    nameConstraints: {
      permittedUri: permittedUriHosts(trustDomain, subtree),
      permittedDns: grants.dnsNames.length > 0 ? grants.dnsNames : [NO_DNS],
      ...(grants.ipRanges.length > 0 ? { permittedIp: grants.ipRanges.map(ipRange) } : { excludedIp: NO_IP }),
    },
    extensions: [policyExtension(request.policy, policyOid)],
    now: request.now,
  });
  if (issued.clamped) throw denied('the delegation would outlive its parent');
  return { ...issued, id, subtree: Object.freeze(subtree), policy: request.policy, grants };
}

/** notAfter for a certificate under a parent ending `parentEnd`: refused, never clamped, past it. */
function lifetimeWithin(
  parentEnd: Date,
  ttlMs: number | undefined,
  now: Date | undefined,
  what: string,
): Date {
  if (ttlMs === undefined) return new Date(parentEnd.getTime());
  const wanted = (now ?? new Date()).getTime() + ttlMs;
  if (wanted > parentEnd.getTime()) {
    throw denied(
      `the ${what} would outlive its parent: it would end ${new Date(wanted).toISOString()}, the parent ends ${parentEnd.toISOString()}`,
    );
  }
  return new Date(wanted);
}

export interface DelegateLeafRequest {
  /** The issuing CA: a delegation, or (for an admin's command certificate) a replica intermediate. */
  readonly parent: { readonly issuer: Issuer; readonly certificateDer: Buffer };
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  readonly publicKey: KeyObject;
  /**
   * A command certificate's name (one DNS label beneath the parent's
   * subtree). Absent: the delegate's own identity leaf, carrying the
   * parent's SPIFFE ID (the parent must then be a delegation).
   */
  readonly name?: string;
  /** A command certificate's permissions (limits must be null: it holds no resources). */
  readonly policy?: Policy;
  /** Defaults to the parent's remaining lifetime; outliving it is refused. */
  readonly ttlMs?: number;
  readonly now?: Date;
}

export interface IssuedDelegateLeaf extends SignedCertificate {
  readonly id: string;
}

/**
 * A client leaf inside a delegation subtree: the delegate's own identity (no
 * name) or a command certificate (a name and a policy without resources).
 */
export function issueDelegateLeaf(request: DelegateLeafRequest): IssuedDelegateLeaf {
  const trustDomain = parseTrustDomain(request.trustDomain);
  const base = parentSubtree(request.parent.certificateDer, trustDomain);
  if (request.name === undefined && base.length === 0) {
    throw denied('an identity leaf needs a delegation as its parent');
  }
  if (request.name !== undefined) checkDelegationName(request.name);
  if (request.policy !== undefined && request.policy.limits !== null) {
    throw invalid('a command certificate carries permissions only, no resource limits');
  }
  const parentPolicy = policyOf(request.parent.certificateDer, request.policyOid, 'the parent certificate');
  if (request.name !== undefined && parentPolicy !== null && !parentPolicy.permissions.has('issue')) {
    throw denied('the parent lacks the "issue" permission; it may not issue certificates in its subtree');
  }
  if (request.policy !== undefined && parentPolicy !== null) {
    const narrowing = isNarrowing(request.policy, parentPolicy);
    if (!narrowing.ok)
      throw denied(`the command certificate escalates its parent's policy: ${narrowing.reason}`);
  }
  const subtree = request.name === undefined ? base : [...base, request.name];
  const id = delegatedId(trustDomain, subtree);
  const parentCert = parseCertificate(request.parent.certificateDer, 'parent certificate');
  const notAfter = lifetimeWithin(parentCert.notAfter, request.ttlMs, request.now, 'certificate');
  const issued = request.parent.issuer.issue({
    publicKey: request.publicKey,
    profile: 'client',
    subject: {
      commonName: `sigil ${request.policy ? 'command' : 'delegate'} ${subtree.join('/')}`.slice(0, 64),
    },
    sans: [{ type: 'uri', value: id }],
    notAfter,
    extensions: request.policy ? [policyExtension(request.policy, request.policyOid)] : [],
    now: request.now,
  });
  return { ...issued, id };
}
