import type { KeyObject } from 'node:crypto';
import {
  type DelegateLeafRequest,
  type IssuedDelegateLeaf,
  type IssuedDelegation,
  issueDelegateLeaf,
  issueDelegation,
  type NameGrants,
} from '../../src/pki/delegation-certificates.ts';
import { checkDelegationChain, type DelegationChainResult } from '../../src/pki/delegation-chain.ts';
import { delegatedId, type Subtree } from '../../src/pki/delegation-names.ts';
import { createRootCertificate, Issuer, type SignedCertificate } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import type { GeneralName } from '../../src/pki/names.ts';
import {
  type Limits,
  PERMISSIONS,
  type Permission,
  type Policy,
  type PolicyOid,
  parsePolicyOid,
  policyExtension,
} from '../../src/pki/policy-extension.ts';
import { type OpensslVerdict, type Usage, verifyWithOpenssl } from '../support/peers.ts';
import { pemOf } from '../support/pem.ts';

export const TD = 'example.test';
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

/** The deployment's policy OID in these tests. */
export const OID: PolicyOid = parsePolicyOid('2.999.42.7');

export const policy = (permissions: Permission[], limits: Limits | null): Policy => ({
  version: 1,
  permissions: new Set(permissions),
  limits,
});
export const limits = (over: Partial<Limits> = {}): Limits => ({
  workloads: 2,
  cpus: [0, 1],
  memoryMiB: 4096,
  blockMiB: 1024,
  bridges: ['br0', 'lan'],
  issuancePerHour: 60,
  ...over,
});

export const ADMIN = policy(
  [...PERMISSIONS],
  limits({ workloads: 100, cpus: [0, 1, 2, 3], memoryMiB: 65536 }),
);
export const ALICE = policy(['info', 'create', 'destroy', 'delegate', 'issue'], limits());
export const CAROL = policy(
  ['info', 'create', 'issue'],
  limits({ workloads: 1, cpus: [1], bridges: ['br0'] }),
);

/** May delegate but not issue leaves. */
export const DAVE = policy(['info', 'create', 'delegate'], limits({ workloads: 1 }));

/**
 * Policies that escalate ALICE, each with what it is and the reason it is
 * refused: every limit raised past hers, and every permission she lacks.
 */
export const ALICE_ESCALATIONS: readonly (readonly [string, Policy, RegExp])[] = [
  ['workloads', policy([], limits({ workloads: 3 })), /workloads 3 exceeds/],
  ['memoryMiB', policy([], limits({ memoryMiB: 4097 })), /memoryMiB 4097 exceeds/],
  ['blockMiB', policy([], limits({ blockMiB: 1025 })), /blockMiB 1025 exceeds/],
  ['issuancePerHour', policy([], limits({ issuancePerHour: 61 })), /issuancePerHour 61 exceeds/],
  ['cpus', policy([], limits({ cpus: [0, 2] })), /cpus 2 not granted/],
  ['bridges', policy([], limits({ bridges: ['wan'] })), /bridges wan not granted/],
  ...PERMISSIONS.filter((p) => !ALICE.permissions.has(p)).map(
    (permission) =>
      [permission, policy([permission], null), new RegExp(`permission ${permission} not held`)] as const,
  ),
];

/** A CA made for a test: its certificate, private key and an Issuer over both. */
export interface TestCa {
  readonly certificate: SignedCertificate;
  readonly key: KeyObject;
  readonly issuer: Issuer;
}

/** A self-signed root CA valid for 30 days. */
export function testRoot(commonName: string): TestCa {
  const key = generateKeyPair('p256');
  const certificate = createRootCertificate({
    privateKey: key.privateKey,
    subject: { commonName },
    ttlMs: 30 * DAY,
  });
  return { certificate, key: key.privateKey, issuer: Issuer.fromIssued(certificate, key.privateKey) };
}

/** An intermediate CA (no policy, no SPIFFE ID) under `parent`, valid for 20 days. */
export function testIntermediate(parent: Issuer, commonName: string): TestCa {
  const key = generateKeyPair('p256');
  const certificate = parent.issue({
    publicKey: key.publicKey,
    profile: 'intermediate',
    subject: { commonName },
    ttlMs: 20 * DAY,
  });
  return { certificate, key: key.privateKey, issuer: Issuer.fromIssued(certificate, key.privateKey) };
}

export interface Parent {
  issuer: Issuer;
  certificateDer: Buffer;
  policy: Policy;
  grants?: NameGrants;
}
export interface Delegate {
  readonly issued: IssuedDelegation;
  readonly key: KeyObject;
  readonly issuer: Issuer;
  /** To delegate further: carries the delegation's policy and grants. */
  readonly parent: Parent;
}

export interface DelegateOptions {
  pathLen?: number;
  ttlMs?: number;
  dnsNames?: readonly string[];
  ipRanges?: readonly string[];
  policyOid?: PolicyOid;
}

/**
 * A test file's deployment: a root and a replica intermediate (no policy, no
 * delegated name), the admin's parent on the replica, alice under it (pathLen
 * 2, 10 days) and under her carol (pathLen 0) and dave (pathLen 1), both for
 * 5 days.
 */
export function testDeployment() {
  const root = testRoot('sigil delegation test root');
  const replica = testIntermediate(root.issuer, 'sigil delegation test replica');
  const admin: Parent = { issuer: replica.issuer, certificateDer: replica.certificate.der, policy: ADMIN };
  const alice = delegate(admin, 'alice', ALICE, { pathLen: 2, ttlMs: 10 * DAY });
  return {
    root: root.certificate,
    rootIssuer: root.issuer,
    replica: replica.certificate,
    replicaIssuer: replica.issuer,
    admin,
    alice,
    carol: delegate(alice.parent, 'carol', CAROL, { pathLen: 0, ttlMs: 5 * DAY }),
    dave: delegate(alice.parent, 'dave', DAVE, { pathLen: 1, ttlMs: 5 * DAY }),
  };
}

/** A delegation `name` under `parent` in TD, made by issueDelegation with a fresh key. */
export function delegate(parent: Parent, name: string, p: Policy, extra: DelegateOptions = {}): Delegate {
  const key = generateKeyPair('p256');
  const { dnsNames, ipRanges, policyOid, ...rest } = extra;
  const issued = issueDelegation({
    parent,
    trustDomain: TD,
    policyOid: policyOid ?? OID,
    publicKey: key.publicKey,
    name,
    policy: p,
    ...rest,
    ...(dnsNames || ipRanges ? { grants: { dnsNames: dnsNames ?? [], ipRanges: ipRanges ?? [] } } : {}),
  });
  const issuer = Issuer.fromIssued(issued, key.privateKey);
  return {
    issued,
    key: key.privateKey,
    issuer,
    parent: { issuer, certificateDer: issued.der, policy: p, grants: issued.grants },
  };
}

/** issueDelegateLeaf under `parent` in TD under OID (unless `extra` says otherwise), for a fresh key. */
export function delegateLeaf(
  parent: DelegateLeafRequest['parent'],
  extra: Partial<Omit<DelegateLeafRequest, 'parent'>> = {},
): IssuedDelegateLeaf {
  return issueDelegateLeaf({
    parent,
    trustDomain: TD,
    policyOid: OID,
    publicKey: generateKeyPair('p256').publicKey,
    ...extra,
  });
}

/** The SPIFFE ID of `subtree` in TD (a delegation or command host), with an optional path. */
export const idOf = (subtree: Subtree, path = ''): string => delegatedId(TD, subtree, path);

export const uri = (value: string): GeneralName => ({ type: 'uri', value });

export interface LeafOptions {
  /** Extra SANs after the URI (or instead of it, with `uris: []`). */
  sans?: GeneralName[];
  /** URI SANs; default the one given. */
  uris?: string[];
  commonName?: string;
  policy?: Policy;
  profile?: 'client' | 'server';
  ttlMs?: number;
  policyOid?: PolicyOid;
}

/**
 * A leaf signed by `issuer` carrying the SPIFFE ID `spiffeId` (and whatever
 * else `options` says), bypassing issueDelegateLeaf's checks: what a delegate
 * could sign with its own key.
 */
export function signedLeaf(issuer: Issuer, spiffeId: string, options: LeafOptions = {}): SignedCertificate {
  const uris = options.uris ?? [spiffeId];
  return issuer.issue({
    publicKey: generateKeyPair('p256').publicKey,
    profile: options.profile ?? 'client',
    subject: { commonName: options.commonName ?? 'signed leaf' },
    sans: [...uris.map(uri), ...(options.sans ?? [])],
    ttlMs: options.ttlMs ?? HOUR,
    extensions: options.policy ? [policyExtension(options.policy, options.policyOid ?? OID)] : [],
  });
}

export interface SignedCa {
  readonly certificate: SignedCertificate;
  readonly key: KeyObject;
  readonly issuer: Issuer;
}

/** A CA signed by `parent` with the given SANs and policy, bypassing issueDelegation's checks. */
export function signedCa(
  parent: Issuer,
  sans: GeneralName[],
  p: Policy | null,
  options: { commonName?: string; pathLen?: number; ttlMs?: number; policyOid?: PolicyOid } = {},
): SignedCa {
  const key = generateKeyPair('p256');
  const certificate = parent.issue({
    publicKey: key.publicKey,
    profile: 'intermediate',
    subject: { commonName: options.commonName ?? 'signed ca' },
    sans,
    ttlMs: options.ttlMs ?? DAY,
    pathLen: options.pathLen ?? 0,
    extensions: p ? [policyExtension(p, options.policyOid ?? OID)] : [],
  });
  return { certificate, key: key.privateKey, issuer: Issuer.fromIssued(certificate, key.privateKey) };
}

/** checkDelegationChain in TD under OID. */
export const check = (
  chain: readonly Buffer[],
  extra: { endsAtDelegation?: boolean; maxLength?: number; policyOid?: PolicyOid } = {},
): DelegationChainResult => checkDelegationChain(chain, { trustDomain: TD, policyOid: OID, ...extra });

/**
 * `openssl verify -x509_strict` trusting only `root`, for leaves whose chain
 * ends at `replica`: the verdict on `leaf` with `chain` (its issuer first) and
 * then `replica` untrusted, for `usage` (default any) and optionally a host.
 */
export const opensslVerifier =
  (root: SignedCertificate, replica: SignedCertificate) =>
  (
    leaf: Buffer,
    chain: readonly Buffer[],
    options: { dnsName?: string; usage?: Usage } = {},
  ): Promise<OpensslVerdict> =>
    verifyWithOpenssl({
      roots: [pemOf(root.der)],
      intermediates: [pemOf(...chain, replica.der)],
      leaf: pemOf(leaf),
      usage: options.usage ?? 'any',
      strict: true,
      ...(options.dnsName ? { dnsName: options.dnsName } : {}),
    });
