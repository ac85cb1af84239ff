// Who may call what on sigil's own gRPC API. The table is read by the
// transport's authorizationInterceptor (default deny: a method missing here
// cannot be called). Identity comes from the verified client certificate only,
// and a SPIFFE pattern matches only leaves the deployment's own CAs issued; a
// delegate matches only `delegates` (see transport/authorization.ts).
//
//   Admin/*                                 admins (spiffe://<td>/admin/*)
//   CertificateAuthority Sign, ListCertificates   admins
//   CertificateAuthority Renew, Revoke, GetTrustBundle, WatchRevocations
//                                           any deployment peer of the trust
//                                           domain, and delegates; the
//                                           authority decides ownership (a node
//                                           renews and revokes only itself)
//   Delegation/*                            the same; the authority decides
//                                           (admins create, delegates act in
//                                           their subtree)
//   WorkloadPlacement ReserveWorkload, ReleaseWorkload,
//     ListWorkloadReservations, RegisterWorkloadEndpoint,
//     IssueWorkloadIdentity                 nodes (spiffe://<td>/node/*) and
//                                           admins; the authority admits nodes
//                                           only, each acting for itself
//   WorkloadPlacement FindWorkloadNode      any deployment peer and delegates
//   Enrolment/*                             public: callable without a client
//                                           certificate (MtlsServer publicMethods);
//                                           with one, as for Delegation
//   grpc.health.v1.Health/*                 any authenticated peer: every
//   grpc.reflection.v1{,alpha}.ServerReflection/*   deployment identity of the
//                                           trust domain, and admitted
//                                           delegates. Not anonymous: a probe
//                                           presents a certificate like any
//                                           client (the HTTP side's /healthz and
//                                           /readyz need none, on loopback).
//                                           They reveal only what the public
//                                           .proto files and "is it up" say.
//
// Workload identities (spiffe://<owner's delegation host>/workload/<name>,
// issued by the deployment; see authority/workload-identity.ts) match no rule
// here: their host is not the trust domain, so spiffe://<td>/* does not name
// them, and they are not delegates. A workload calls other services as
// itself, never the control plane; its node renews it.
import type * as grpc from '@grpc/grpc-js';
import {
  AdminService,
  CertificateAuthorityService,
  DelegationService,
  EnrolmentService,
  WorkloadPlacementService,
} from '../gen/sigil/v1/sigil.ts';
import {
  type AuthorizationOptions,
  type AuthorizationRules,
  authorizationInterceptor,
} from '../transport/authorization.ts';
import { exemptAnonymousPublicCalls, publicMethodSet } from '../transport/public-methods.ts';

/** The SPIFFE ID pattern of admin (operator) identities. */
export function adminPattern(trustDomain: string): string {
  return `spiffe://${trustDomain}/admin/*`;
}

/** Every method of the Enrolment service: the only ones callable without a client certificate. */
export const PUBLIC_METHODS: readonly string[] = Object.freeze(
  Object.values(EnrolmentService).map((method) => method.path),
);

/** The standard gRPC services the control plane also serves: health, and reflection v1 and v1alpha. */
export const STANDARD_SERVICES: readonly string[] = Object.freeze([
  'grpc.health.v1.Health',
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
]);

/** For tests and docs: every method of the standard services. */
export const STANDARD_METHODS: readonly string[] = Object.freeze([
  '/grpc.health.v1.Health/Check',
  '/grpc.health.v1.Health/Watch',
  '/grpc.health.v1.Health/List',
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
  '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
]);

export function sigilAuthorizationRules(trustDomain: string): AuthorizationRules {
  const admins = { spiffePatterns: [adminPattern(trustDomain)] };
  const members = { spiffePatterns: [`spiffe://${trustDomain}/*`], delegates: 'any' as const };
  const nodes = { spiffePatterns: [`spiffe://${trustDomain}/node/*`, adminPattern(trustDomain)] };
  const ca = CertificateAuthorityService;
  const wp = WorkloadPlacementService;
  return {
    '/sigil.v1.Admin/*': admins,
    [ca.sign.path]: admins,
    [ca.listCertificates.path]: admins,
    [ca.renew.path]: members,
    [ca.revoke.path]: members,
    [ca.getTrustBundle.path]: members,
    [ca.watchRevocations.path]: members,
    '/sigil.v1.Enrolment/*': members,
    // Admins create delegations; delegates act in their subtrees. The
    // authority decides, on the chain DelegateGrants admitted.
    '/sigil.v1.Delegation/*': members,
    // Workload placement: the node-only methods admit nodes (and admins, who
    // reach every method; the authority refuses them, as it refuses a node
    // acting for another node); any peer or delegate may find a node.
    [wp.reserveWorkload.path]: nodes,
    [wp.releaseWorkload.path]: nodes,
    [wp.listWorkloadReservations.path]: nodes,
    [wp.registerWorkloadEndpoint.path]: nodes,
    [wp.issueWorkloadIdentity.path]: nodes,
    [wp.findWorkloadNode.path]: members,
    // The standard services (standard-services.ts): health and reflection.
    ...Object.fromEntries(STANDARD_SERVICES.map((service) => [`/${service}/*`, members])),
  };
}

/**
 * The authorization interceptor for sigil's services. Anonymous calls to the
 * public methods skip it (they have no identity to authorize; MtlsServer's
 * publicMethods check already limited anonymous connections to them).
 */
export function sigilAuthorizationInterceptor(
  trustDomain: string,
  options: AuthorizationOptions = {},
): grpc.ServerInterceptor {
  return exemptAnonymousPublicCalls(
    authorizationInterceptor(sigilAuthorizationRules(trustDomain), options),
    publicMethodSet(PUBLIC_METHODS),
  );
}

/** For tests and docs: every method of sigil's API. */
export const ALL_METHODS: readonly string[] = Object.freeze([
  ...Object.values(CertificateAuthorityService).map((method) => method.path),
  ...Object.values(EnrolmentService).map((method) => method.path),
  ...Object.values(AdminService).map((method) => method.path),
  ...Object.values(DelegationService).map((method) => method.path),
  ...Object.values(WorkloadPlacementService).map((method) => method.path),
]);
