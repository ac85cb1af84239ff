// Per-method authorization on top of a verified chain. OpenSSL has already
// decided that the peer's certificate is genuine; this decides whether that
// peer may call this method, from a table written by the service owner:
//
//   authorizationInterceptor({
//     '/casino.Casino/*':     { spiffePatterns: ['spiffe://casino.example/client/*'] },
//     '/casino.Casino/Audit': { spiffeIds: ['spiffe://casino.example/auditor'] },
//     '/casino.Casino/PayIt': { spiffePatterns: ['spiffe://casino.example/*'], requirePermission: 'pay' },
//     '/grpc.health.v1.Health/*': { allow: 'any-authenticated' },
//   })
//
// Decisions, in order:
//   - the rule is the exact method's, else its service wildcard's; a method
//     with neither is denied (default deny);
//   - no client certificate (or one whose names cannot be read) → UNAUTHENTICATED;
//   - the peer must match one of the rule's identity lists when the rule has
//     any, and must hold `requirePermission` when the rule names one → else
//     PERMISSION_DENIED. SPIFFE IDs, patterns and DNS names match only
//     deployment identities (leaves the deployment's own CAs issued); a
//     delegate (a leaf beneath a delegation, which could carry any name) only
//     ever matches `delegates`, and holds the permissions of its chain. A
//     workload identity (spiffe://<owner's delegation host>/workload/<name>,
//     issued by the deployment: peer-identity.ts `workload`) is a deployment
//     identity: it matches the IDs and patterns that name it, never
//     `delegates`, and holds no permissions.
// A denial is sent before the handler runs, before any request message is read,
// with a message naming the method and the rule that failed. The table is
// checked once, at construction: a malformed method path, SPIFFE ID, DNS name
// or pattern (partial wildcards included) is refused there, not at call time.

import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { invalid, SigilError } from '../errors.ts';
import { issuedDirectlyBy } from '../pki/issued-by.ts';
import { dnsName, parseSpiffeId } from '../pki/names.ts';
import { type PeerCall, type PeerIdentity, peerIdentity } from './peer-identity.ts';

/** A rule that admits or refuses every authenticated peer, whoever it is. */
export interface BlanketRule {
  readonly allow: 'any-authenticated' | 'none';
}

/**
 * A rule that admits peers by identity and/or permission. The identity lists
 * are alternatives (a peer matching any entry of any list passes); when none
 * is given, any authenticated peer passes the identity check. When
 * `requirePermission` is given the peer must also hold that permission.
 */
export interface IdentityRule {
  /** Exact SPIFFE IDs. */
  readonly spiffeIds?: readonly string[];
  /**
   * "spiffe://td/a/b/*": any ID below /a/b (at least one more segment; not
   * /a/b itself). "spiffe://td/*": any ID in trust domain td. A wildcard is
   * only ever a whole last segment: "spiffe://td/a*", "spiffe://td/*\/b" and
   * "spiffe://*" are refused.
   */
  readonly spiffePatterns?: readonly string[];
  /** Exact DNS SANs of the peer certificate (no wildcards). */
  readonly dnsNames?: readonly string[];
  /**
   * Admitted delegates: 'any', or delegation subtrees given by their SPIFFE
   * ID ("spiffe://alice.d.example.org" admits Alice and everything beneath
   * her). The other lists never match a delegate, whatever name it carries.
   */
  readonly delegates?: 'any' | readonly string[];
  /** A permission the peer must hold, read through `permissionsOf`. */
  readonly requirePermission?: string;
}

export type AuthorizationRule = BlanketRule | IdentityRule;

/** Method path ("/pkg.Service/Method") or service wildcard ("/pkg.Service/*") → rule. */
export type AuthorizationRules = Readonly<Record<string, AuthorizationRule>>;

/** The permissions a peer holds (the sigil policy extension is one source). */
export type PermissionSource = (identity: PeerIdentity) => ReadonlySet<string>;

export interface AuthorizationDenial {
  readonly method: string;
  /** The table key of the rule that failed; null when no rule matched. */
  readonly rule: string | null;
  readonly code: grpc.status.UNAUTHENTICATED | grpc.status.PERMISSION_DENIED;
  readonly message: string;
}

export interface AuthorizationOptions {
  /**
   * Where `requirePermission` is checked. Without it, a delegate holds the
   * permissions of its chain and every other peer none.
   */
  readonly permissionsOf?: PermissionSource;
  /**
   * On a plain grpc-js server (not MtlsServer), which cannot tell who issued
   * a peer's leaf: the deployment's CAs, so that a leaf they signed directly
   * counts as a deployment identity. Without it such peers match no
   * identity list (fail closed).
   */
  readonly deploymentAuthorities?: readonly X509Certificate[];
  /** Called for every denied call (audit logs). Must not throw; errors are ignored. */
  readonly onDenied?: (denial: AuthorizationDenial) => void;
}

export type AuthorizationDecision =
  | { readonly allowed: true; readonly rule: string }
  | AuthorizationDenialResult;

export type AuthorizationDenialResult = { readonly allowed: false } & AuthorizationDenial;

interface CompiledRule {
  readonly name: string;
  readonly blanket: BlanketRule['allow'] | null;
  readonly spiffeIds: ReadonlySet<string>;
  /** Each pattern as its prefix up to and including the "/" before "*": "spiffe://td/a/". */
  readonly spiffePrefixes: readonly string[];
  readonly dnsNames: ReadonlySet<string>;
  /** 'any', or the hosts of admitted subtrees. */
  readonly delegates: 'any' | readonly string[];
  readonly requirePermission: string | null;
}

const IDENTIFIER = '[A-Za-z_][A-Za-z0-9_]*';
const METHOD_KEY = new RegExp(`^/(${IDENTIFIER}(?:\\.${IDENTIFIER})*)/(${IDENTIFIER}|\\*)$`);
const RULE_FIELDS = new Set([
  'allow',
  'spiffeIds',
  'spiffePatterns',
  'dnsNames',
  'delegates',
  'requirePermission',
]);

function quote(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

function checkMethodKey(key: string): void {
  if (METHOD_KEY.test(key)) return;
  let why = 'expected "/package.Service/Method" or "/package.Service/*"';
  if (key.includes('*') && !key.endsWith('/*'))
    why = 'a wildcard may only stand for the whole method name, as in "/package.Service/*"';
  else if (key.startsWith('/*')) why = 'the service name may not be a wildcard; list each service';
  throw invalid(`authorization rule ${quote(key)}: invalid method path: ${why}`);
}

function stringList(key: string, field: string, value: unknown): readonly string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw invalid(`authorization rule ${quote(key)}: ${field} must be an array of strings`);
  }
  return value;
}

/** "spiffe://td/a/*" → "spiffe://td/a/"; refuses anything else with a wildcard. */
function compilePattern(key: string, pattern: string): string {
  const fail = (why: string) =>
    invalid(`authorization rule ${quote(key)}: invalid SPIFFE ID pattern ${quote(pattern)}: ${why}`);
  if (!pattern.endsWith('/*')) {
    throw fail(
      pattern.includes('*')
        ? 'a wildcard may only be the whole last segment ("spiffe://td/path/*") or the whole path ("spiffe://td/*")'
        : 'a pattern must end in "/*" (put exact IDs in spiffeIds)',
    );
  }
  const base = pattern.slice(0, -2);
  if (base.includes('*')) {
    throw fail(
      'a wildcard may only be the whole last segment ("spiffe://td/path/*") or the whole path ("spiffe://td/*")',
    );
  }
  try {
    parseSpiffeId(base);
  } catch (error) {
    throw fail(error instanceof SigilError ? error.message : 'it is not a SPIFFE ID followed by "/*"');
  }
  return `${base}/`;
}

function compileRule(key: string, rule: AuthorizationRule): CompiledRule {
  if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) {
    throw invalid(`authorization rule ${quote(key)}: a rule must be an object`);
  }
  for (const field of Object.keys(rule)) {
    if (!RULE_FIELDS.has(field)) {
      throw invalid(
        `authorization rule ${quote(key)}: unknown field ${quote(field)} (known: ${[...RULE_FIELDS].join(', ')})`,
      );
    }
  }
  if ('allow' in rule) {
    if (rule.allow !== 'any-authenticated' && rule.allow !== 'none') {
      throw invalid(`authorization rule ${quote(key)}: allow must be "any-authenticated" or "none"`);
    }
    if (Object.keys(rule).length > 1) {
      throw invalid(`authorization rule ${quote(key)}: "allow" cannot be combined with other fields`);
    }
    return {
      name: key,
      blanket: rule.allow,
      spiffeIds: new Set(),
      spiffePrefixes: [],
      dnsNames: new Set(),
      delegates: [],
      requirePermission: null,
    };
  }
  const spiffeIds = stringList(key, 'spiffeIds', rule.spiffeIds).map((id) => {
    try {
      return parseSpiffeId(id).id;
    } catch (error) {
      const hint = id.includes('*') ? ' (wildcards go in spiffePatterns)' : '';
      throw invalid(
        `authorization rule ${quote(key)}: ${error instanceof Error ? error.message : 'invalid SPIFFE ID'}${hint}`,
      );
    }
  });
  const spiffePrefixes = stringList(key, 'spiffePatterns', rule.spiffePatterns).map((pattern) =>
    compilePattern(key, pattern),
  );
  const dnsNames = stringList(key, 'dnsNames', rule.dnsNames).map((name) => {
    if (name.includes('*')) {
      throw invalid(
        `authorization rule ${quote(key)}: DNS name ${quote(name)}: wildcards are not allowed here`,
      );
    }
    try {
      return dnsName(name).value;
    } catch (error) {
      throw invalid(
        `authorization rule ${quote(key)}: ${error instanceof Error ? error.message : 'invalid DNS name'}`,
      );
    }
  });
  const delegates = compileDelegates(key, rule.delegates);
  let requirePermission: string | null = null;
  if (rule.requirePermission !== undefined) {
    if (typeof rule.requirePermission !== 'string' || rule.requirePermission.trim() === '') {
      throw invalid(`authorization rule ${quote(key)}: requirePermission must be a non-empty string`);
    }
    requirePermission = rule.requirePermission;
  }
  const listed =
    rule.spiffeIds !== undefined ||
    rule.spiffePatterns !== undefined ||
    rule.dnsNames !== undefined ||
    rule.delegates !== undefined;
  if (
    listed &&
    spiffeIds.length + spiffePrefixes.length + dnsNames.length === 0 &&
    delegates !== 'any' &&
    delegates.length === 0
  ) {
    throw invalid(
      `authorization rule ${quote(key)}: its identity lists are all empty, so it would admit nobody; ` +
        'leave the method out of the table (denied by default) or use { allow: "none" }',
    );
  }
  if (!listed && requirePermission === null) {
    throw invalid(
      `authorization rule ${quote(key)}: a rule needs spiffeIds, spiffePatterns, dnsNames, delegates or requirePermission, ` +
        'or allow: "any-authenticated" | "none"',
    );
  }
  return {
    name: key,
    blanket: null,
    spiffeIds: new Set(spiffeIds),
    spiffePrefixes,
    dnsNames: new Set(dnsNames),
    delegates,
    requirePermission,
  };
}

/** 'any', or each delegation subtree's host ("alice.d.example.org"). */
function compileDelegates(key: string, value: unknown): 'any' | readonly string[] {
  if (value === undefined) return [];
  if (value === 'any') return 'any';
  return stringList(key, 'delegates', value).map((id) => {
    let parsed: ReturnType<typeof parseSpiffeId>;
    try {
      parsed = parseSpiffeId(id);
    } catch (error) {
      throw invalid(
        `authorization rule ${quote(key)}: ${error instanceof Error ? error.message : 'invalid SPIFFE ID'}`,
      );
    }
    if (parsed.path !== '') {
      throw invalid(
        `authorization rule ${quote(key)}: delegates lists delegation subtrees by their SPIFFE ID without a path (e.g. "spiffe://alice.d.example.org"), not ${quote(id)}`,
      );
    }
    return parsed.trustDomain;
  });
}

function hasIdentityLists(rule: CompiledRule): boolean {
  return (
    rule.spiffeIds.size + rule.spiffePrefixes.length + rule.dnsNames.size > 0 ||
    rule.delegates === 'any' ||
    rule.delegates.length > 0
  );
}

function identityMatches(rule: CompiledRule, identity: PeerIdentity): boolean {
  if (identity.delegate !== null) {
    if (rule.delegates === 'any') return true;
    let host: string;
    try {
      host = parseSpiffeId(identity.delegate.spiffeId).trustDomain;
    } catch {
      return false;
    }
    return rule.delegates.some((base) => host === base || host.endsWith(`.${base}`));
  }
  // Names bind only when the deployment itself issued them.
  if (identity.issuedBy !== 'deployment') return false;
  const id = identity.spiffeId;
  if (id !== null) {
    if (rule.spiffeIds.has(id)) return true;
    for (const prefix of rule.spiffePrefixes)
      if (id.length > prefix.length && id.startsWith(prefix)) return true;
  }
  for (const name of identity.dnsNames) if (rule.dnsNames.has(name)) return true;
  return false;
}

/** How a peer is named in a denial: its SPIFFE ID, else its DNS names, else its serial. */
function describePeer(identity: PeerIdentity): string {
  if (identity.delegate !== null) return `delegate ${identity.delegate.spiffeId}`;
  if (identity.issuedBy === 'delegated')
    return `${identity.spiffeId ?? identity.serial} (beneath a delegation, not admitted)`;
  if (identity.issuedBy === 'unknown') {
    return `${identity.spiffeId ?? identity.serial} (issuer unknown on this server: pass deploymentAuthorities)`;
  }
  if (identity.workload !== null)
    return `${identity.workload.spiffeId} (a workload of ${identity.workload.owner})`;
  if (identity.spiffeId !== null) return identity.spiffeId;
  if (identity.dnsNames.length > 0) return `${identity.dnsNames.join(', ')} (no SPIFFE ID)`;
  return `with certificate serial ${identity.serial} (no SPIFFE ID, no DNS name)`;
}

function listKinds(rule: CompiledRule): string {
  const kinds: string[] = [];
  if (rule.spiffeIds.size > 0) kinds.push('SPIFFE IDs');
  if (rule.spiffePrefixes.length > 0) kinds.push('SPIFFE ID patterns');
  if (rule.dnsNames.size > 0) kinds.push('DNS names');
  if (rule.delegates === 'any' || rule.delegates.length > 0) kinds.push('delegates');
  return kinds.join(' or ');
}

/** A rule table, validated and indexed once. Pure: no I/O, no gRPC calls. */
export class AuthorizationPolicy {
  readonly #exact = new Map<string, CompiledRule>();
  readonly #services = new Map<string, CompiledRule>();
  readonly #permissionsOf: PermissionSource | undefined;

  constructor(rules: AuthorizationRules, options: { permissionsOf?: PermissionSource } = {}) {
    if (typeof rules !== 'object' || rules === null || Array.isArray(rules)) {
      throw invalid('authorization rules must be an object mapping method paths to rules');
    }
    for (const [key, rule] of Object.entries(rules)) {
      checkMethodKey(key);
      const compiled = compileRule(key, rule);
      if (key.endsWith('/*')) this.#services.set(key.slice(0, -1), compiled);
      else this.#exact.set(key, compiled);
    }
    if (options.permissionsOf !== undefined && typeof options.permissionsOf !== 'function') {
      throw invalid('permissionsOf must be a function');
    }
    this.#permissionsOf = options.permissionsOf;
  }

  /** The table key of the rule governing `method`, or null: exact rules win over service wildcards. */
  ruleFor(method: string): string | null {
    return this.#find(method)?.name ?? null;
  }

  #find(method: string): CompiledRule | undefined {
    const exact = this.#exact.get(method);
    if (exact) return exact;
    const slash = method.lastIndexOf('/');
    return slash > 0 ? this.#services.get(method.slice(0, slash + 1)) : undefined;
  }

  /**
   * The decision for a call to `method` (a full path) by `identity`; null
   * identity means the call carried no usable client certificate.
   */
  decide(
    method: string,
    identity: PeerIdentity | null,
    unauthenticatedReason?: string,
  ): AuthorizationDecision {
    const rule = this.#find(method);
    const deny = (
      code: AuthorizationDenial['code'],
      name: string | null,
      why: string,
    ): AuthorizationDenialResult => ({
      allowed: false,
      method,
      rule: name,
      code,
      message: `method ${method}: ${why}`,
    });
    // Authentication comes first: an unknown caller learns nothing about the table.
    if (identity === null) {
      return deny(
        grpc.status.UNAUTHENTICATED,
        rule?.name ?? null,
        unauthenticatedReason ?? 'no client certificate on this call',
      );
    }
    if (!rule) {
      return deny(
        grpc.status.PERMISSION_DENIED,
        null,
        'no authorization rule covers this method (methods not in the table are denied)',
      );
    }
    const ruleName = quote(rule.name);
    if (rule.blanket === 'any-authenticated') return { allowed: true, rule: rule.name };
    if (rule.blanket === 'none') {
      return deny(grpc.status.PERMISSION_DENIED, rule.name, `rule ${ruleName} denies every peer`);
    }
    const peer = describePeer(identity);
    if (hasIdentityLists(rule) && !identityMatches(rule, identity)) {
      return deny(
        grpc.status.PERMISSION_DENIED,
        rule.name,
        `peer ${peer} is not in allowed ${listKinds(rule)} of rule ${ruleName}`,
      );
    }
    if (rule.requirePermission !== null) {
      const permission = quote(rule.requirePermission);
      if (!this.#permissionsOf && identity.delegate !== null) {
        if ((identity.delegate.effective.permissions as ReadonlySet<string>).has(rule.requirePermission)) {
          return { allowed: true, rule: rule.name };
        }
        return deny(
          grpc.status.PERMISSION_DENIED,
          rule.name,
          `peer ${peer} lacks permission ${permission} required by rule ${ruleName}`,
        );
      }
      if (!this.#permissionsOf) {
        return deny(
          grpc.status.PERMISSION_DENIED,
          rule.name,
          `rule ${ruleName} requires permission ${permission} but no permission source is configured`,
        );
      }
      let held: ReadonlySet<string>;
      try {
        held = this.#permissionsOf(identity);
      } catch (error) {
        // Fail closed. Our own errors carry safe messages; anything else is not echoed to the peer.
        if (error instanceof SigilError && error.code === 'unauthenticated') {
          return deny(grpc.status.UNAUTHENTICATED, rule.name, error.message);
        }
        const why = error instanceof SigilError ? `: ${error.message}` : '';
        return deny(
          grpc.status.PERMISSION_DENIED,
          rule.name,
          `the permissions of peer ${peer} could not be read for rule ${ruleName}${why}`,
        );
      }
      if (!held?.has(rule.requirePermission)) {
        return deny(
          grpc.status.PERMISSION_DENIED,
          rule.name,
          `peer ${peer} lacks permission ${permission} required by rule ${ruleName}`,
        );
      }
    }
    return { allowed: true, rule: rule.name };
  }
}

function identityOrReason(
  call: PeerCall,
  deploymentAuthorities: readonly X509Certificate[] | undefined,
): PeerIdentity | string {
  try {
    const identity = peerIdentity(call);
    if (identity.issuedBy !== 'unknown' || !deploymentAuthorities) return identity;
    const leaf = new X509Certificate(identity.chain[0]);
    return {
      ...identity,
      issuedBy: issuedDirectlyBy(leaf, deploymentAuthorities) ? 'deployment' : 'delegated',
    };
  } catch (error) {
    if (error instanceof SigilError) return error.message;
    return 'the peer certificate could not be read';
  }
}

/**
 * A server interceptor enforcing `rules`. It denies when the call's metadata
 * arrives, before the handler is invoked and before any request message is
 * read. Place it after sigil's revocation interceptor and after the metrics
 * interceptor (grpc-js runs interceptors in array order from the wire in).
 */
export function authorizationInterceptor(
  rules: AuthorizationRules,
  options: AuthorizationOptions = {},
): grpc.ServerInterceptor {
  const policy = new AuthorizationPolicy(rules, { permissionsOf: options.permissionsOf });
  const onDenied = options.onDenied;
  return (methodDescriptor, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const identity = identityOrReason(call, options.deploymentAuthorities);
            const decision =
              typeof identity === 'string'
                ? policy.decide(methodDescriptor.path, null, identity)
                : policy.decide(methodDescriptor.path, identity);
            if (decision.allowed) {
              nextMetadata(metadata);
              return;
            }
            // Not passing the metadata on keeps the handler from ever starting.
            call.sendStatus({ code: decision.code, details: decision.message });
            if (onDenied) {
              try {
                onDenied({
                  method: decision.method,
                  rule: decision.rule,
                  code: decision.code,
                  message: decision.message,
                });
              } catch {
                // an audit hook must not change the outcome
              }
            }
          },
        });
      },
    });
}
