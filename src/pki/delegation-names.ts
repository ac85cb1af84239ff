// Where delegated identities live. A delegation's subtree is a DNS-style host
// of its own beneath the trust domain, child label first:
//
//   Alice (granted by an admin)      spiffe://alice.d.<td>
//   Carol (granted by Alice)         spiffe://carol.alice.d.<td>
//   a workload Carol names "web"     spiffe://carol.alice.d.<td>/web
//   Carol's command certificate "ci" spiffe://ci.carol.alice.d.<td>
//
// Why hosts and not paths: RFC 5280 URI name constraints bind the host of a
// URI, never its path, and they are the only thing a plain TLS peer (OpenSSL,
// Go's crypto/x509, BoringSSL) checks. A delegation is constrained to
// `permitted URI <host>` and `.<host>`, so every verifier that enforces URI
// constraints refuses a delegate-minted `spiffe://<td>/admin/…`; a peer that
// authorizes IDs of spiffe://<td>/… never matches a delegated identity, and a
// delegated identity is recognisable by its host alone.
//
// Inside sigil a subtree is its list of names, parent first (["alice",
// "carol"]), and the store keys it as "/alice/carol" so that "at or under"
// stays a prefix match. Pure: no I/O.
import { invalid } from '../errors.ts';
import { parseSpiffeId, parseTrustDomain } from './names.ts';

/** The label between delegated hosts and the trust domain: <names>.d.<td>. */
export const DELEGATION_LABEL = 'd';

/** A DNS label: lower-case letters, digits and inner hyphens, 1 to 63 characters. */
const NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Whether `text` is one DNS label. Every name sigil puts in a subtree is one:
 * delegations, and the workloads and block devices that live in it.
 */
export function isDnsLabel(text: unknown): boolean {
  return typeof text === 'string' && NAME.test(text);
}

/** RFC 1035's longest host name. */
const MAX_HOST_LENGTH = 253;

/** A subtree: delegation names from the topmost delegation down. */
export type Subtree = readonly string[];

/** Refuses a delegation (or command) name that is not one DNS label. */
export function checkDelegationName(name: string): string {
  if (!isDnsLabel(name)) {
    const shown = String(name).length > 70 ? `${String(name).slice(0, 70)}…` : String(name);
    throw invalid(
      `delegation name ${JSON.stringify(shown)} must be 1 to 63 lower-case letters, digits or inner hyphens (it becomes a DNS label)`,
    );
  }
  return name;
}

/** The host of a subtree: "carol.alice.d.<td>". Refuses bad names and hosts over 253 characters. */
export function delegationHost(trustDomain: string, subtree: Subtree): string {
  const td = parseTrustDomain(trustDomain);
  if (subtree.length === 0) throw invalid('a delegation subtree needs at least one name');
  for (const name of subtree) checkDelegationName(name);
  const host = `${[...subtree].reverse().join('.')}.${DELEGATION_LABEL}.${td}`;
  if (host.length > MAX_HOST_LENGTH) {
    throw invalid(
      `the delegation ${subtree.join('/')} would have a host of ${host.length} characters; at most ${MAX_HOST_LENGTH} fit (use shorter names)`,
    );
  }
  return host;
}

/** The SPIFFE ID of a subtree (`path` empty) or of a workload in it ("/web"). */
export function delegatedId(trustDomain: string, subtree: Subtree, path = ''): string {
  return parseSpiffeId(`spiffe://${delegationHost(trustDomain, subtree)}${path}`).id;
}

/** The store's key of a subtree: "/alice/carol" (at-or-under is a prefix match on "/"). */
export function subtreeKey(subtree: Subtree): string {
  return subtree.map((name) => `/${name}`).join('');
}

/** The subtree of a store key ("/alice/carol" → ["alice", "carol"]). */
export function subtreeOfKey(key: string): Subtree {
  return key === '' ? [] : key.slice(1).split('/');
}

export interface DelegatedName {
  /** Names from the topmost delegation down. */
  readonly subtree: Subtree;
  /** The SPIFFE path ("" for the subtree itself, "/web" for a workload in it). */
  readonly path: string;
}

/**
 * The subtree a host belongs to, or null when it is not beneath
 * `.d.<trustDomain>` (a deployment identity's host is the trust domain itself).
 */
export function subtreeOfHost(host: string, trustDomain: string): Subtree | null {
  const suffix = `.${DELEGATION_LABEL}.${trustDomain}`;
  if (!host.endsWith(suffix)) return null;
  const labels = host.slice(0, -suffix.length).split('.');
  if (labels.some((label) => !NAME.test(label))) return null;
  return labels.reverse();
}

/**
 * The subtree and path of a delegated SPIFFE ID, or null when the ID is not
 * delegated in `trustDomain` (or is not a valid SPIFFE ID at all).
 */
export function parseDelegatedId(spiffeId: string, trustDomain: string): DelegatedName | null {
  let parsed: ReturnType<typeof parseSpiffeId>;
  try {
    parsed = parseSpiffeId(spiffeId);
  } catch {
    return null;
  }
  const subtree = subtreeOfHost(parsed.trustDomain, trustDomain);
  return subtree === null ? null : { subtree, path: parsed.path };
}

/** Whether `inner` is `outer` or lies beneath it. */
export function isWithinSubtree(inner: Subtree, outer: Subtree): boolean {
  return inner.length >= outer.length && outer.every((name, index) => inner[index] === name);
}

/** The name constraints of a delegation over `subtree`: its host and every host beneath it. */
export function permittedUriHosts(trustDomain: string, subtree: Subtree): readonly string[] {
  const host = delegationHost(trustDomain, subtree);
  return [host, `.${host}`];
}
