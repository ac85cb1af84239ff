// Shared set-up for the delegation tests: policies and limits, a root and an
// intermediate CA to issue under, and delegations made with issueDelegation.
import type { KeyObject } from 'node:crypto';
import { type IssuedDelegation, issueDelegation } from '../../src/authority/delegation.ts';
import { createRootCertificate, type IssuedCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { type Limits, PERMISSIONS, type Permission, type Policy } from '../../src/pki/policy-extension.ts';

export const TD = 'example.test';
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

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

/** A CA made for a test: its certificate, private key and an Issuer over both. */
export interface TestCa {
  readonly certificate: IssuedCertificate;
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
}
export interface Delegate {
  readonly issued: IssuedDelegation;
  readonly key: KeyObject;
  readonly issuer: Issuer;
  readonly parent: Parent;
}

/** A delegation `name` under `parent` in TD, made by issueDelegation with a fresh key. */
export function delegate(
  parent: Parent,
  name: string,
  p: Policy,
  extra: { pathLen?: number; ttlMs?: number; dnsNames?: string[] } = {},
): Delegate {
  const key = generateKeyPair('p256');
  const issued = issueDelegation({
    parent,
    trustDomain: TD,
    publicKey: key.publicKey,
    name,
    policy: p,
    ...extra,
  });
  const issuer = Issuer.fromIssued(issued, key.privateKey);
  return { issued, key: key.privateKey, issuer, parent: { issuer, certificateDer: issued.der, policy: p } };
}
