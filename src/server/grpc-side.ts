// The gRPC side: sigil's API (CertificateAuthority, Enrolment, Admin,
// Delegation, WorkloadPlacement, plus grpc.health.v1 and reflection) on one
// mTLS port.
// Enrolment is callable without a client certificate; everything else is
// authorized by role (services/authorization-rules.ts), a role coming from
// who issued the caller's leaf.
import type { Authority } from '../authority/authority.ts';
import { firstLineOf, SigilError } from '../errors.ts';
import {
  AdminService,
  CertificateAuthorityService,
  DelegationService,
  EnrolmentService,
  WorkloadPlacementService,
} from '../gen/sigil/v1/sigil.ts';
import type { Logger } from '../logging.ts';
import type { MaterialSource } from '../pki/material.ts';
import { adminService } from '../services/admin.ts';
import { PUBLIC_METHODS, sigilAuthorizationInterceptor } from '../services/authorization-rules.ts';
import { certificateAuthorityService } from '../services/certificate-authority.ts';
import { DelegateGrants } from '../services/delegate-grants.ts';
import { delegationService } from '../services/delegation.ts';
import { enrolmentService } from '../services/enrolment.ts';
import { type FailureReporter, INTERNAL_ERROR_MESSAGE } from '../services/handlers.ts';
import { addStandardServices } from '../services/standard-services.ts';
import { MAX_MESSAGE_BYTES } from '../services/validation.ts';
import { workloadPlacementService } from '../services/workload-placement.ts';
import { MtlsServer } from '../transport/mtls-server.ts';
import { formatAddress, type ListenAddress } from './listen-address.ts';
import type { ServerMetricSet } from './metrics-registry.ts';

/**
 * What one peer may hold of the control plane (transport/peer-limits.ts).
 * Its clients make short unary calls and at most a few long-lived streams
 * (WatchRevocations, health Watch): a node's agent holds one connection and
 * one stream; an operator tool or service one connection with up to a few
 * dozen calls in flight.
 */
export const CONTROL_PLANE_PEER_LIMITS = Object.freeze({
  maxStreamsPerConnection: 64,
  maxStreamsPerIdentity: 128,
  maxConnectionsPerIdentity: 32,
});

export interface GrpcSide {
  /** The bound port (the real one when started with port 0). */
  readonly port: number;
  /** Ends the long-lived streams (revocation watchers, health watches) with a final status. */
  endStreams(): void;
  /** Stops accepting, drains running calls for up to `graceMs`, then cuts them. */
  close(graceMs: number): Promise<void>;
}

/** Builds the mTLS server with sigil's services and listens; resolves once listening. */
export async function startGrpcSide(options: {
  readonly authority: Authority;
  readonly metrics: ServerMetricSet;
  readonly listen: ListenAddress;
  readonly log: Logger;
  /** Share the port with the other processes of `--workers` (SO_REUSEPORT). */
  readonly reusePort?: boolean;
  /** The TLS identity served; default the authority's own (a worker serves the primary's, worker-process.ts). */
  readonly material?: MaterialSource;
}): Promise<GrpcSide> {
  const { authority, listen, log } = options;
  const onFailure: FailureReporter = (method, error, status) => {
    if (status.details === INTERNAL_ERROR_MESSAGE) log.error({ err: error, method }, 'call failed');
    else log.debug({ method, code: status.code, details: status.details }, 'call refused');
  };
  const grants = new DelegateGrants(authority);
  const deps = { authority, metrics: options.metrics.server, onFailure, delegateGrants: grants };
  const ca = certificateAuthorityService(deps);

  const mtls = new MtlsServer({
    material: options.material ?? authority.serverMaterial(),
    revocation: authority.revocationSource(),
    metrics: options.metrics.transport,
    publicMethods: PUBLIC_METHODS,
    // Roles come from who issued a leaf: the deployment's CAs, or a delegation admitted by the authority.
    deploymentAuthorities: () => authority.deploymentAuthorities(),
    delegation: { trustDomain: authority.trustDomain, policyOid: authority.policyOid },
    delegates: grants.admitter,
    interceptors: [
      sigilAuthorizationInterceptor(authority.trustDomain, {
        onDenied: (denial) => log.info({ method: denial.method, rule: denial.rule }, denial.message),
      }),
    ],
    grpcOptions: {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
    },
    onError: (error) => log.warn({ err: error }, 'transport problem'),
    peerLimits: CONTROL_PLANE_PEER_LIMITS,
    // A certificate refused is something an operator acts on (which one, from where, why): info.
    // A connection that never got as far as a certificate (port scans, plaintext, TLS 1.2): debug.
    onHandshakeError: (failure) =>
      log[failure.serial !== undefined || failure.alert !== undefined ? 'info' : 'debug'](
        {
          reason: failure.reason,
          remote: formatAddress(failure.remoteAddress ?? 'unknown', failure.remotePort ?? 0),
          ...(failure.serial !== undefined ? { serial: failure.serial } : {}),
          ...(failure.spiffeId ? { spiffeId: failure.spiffeId } : {}),
          ...(failure.alert ? { alert: failure.alert } : {}),
        },
        `handshake refused: ${failure.message}`,
      ),
    onRotated: (material) => log.info({ serial: material.leaf.serialHex }, 'server certificate rotated'),
  });
  mtls.addService(CertificateAuthorityService, ca.implementation);
  mtls.addService(EnrolmentService, enrolmentService(deps));
  mtls.addService(AdminService, adminService(deps));
  mtls.addService(DelegationService, delegationService(deps));
  mtls.addService(WorkloadPlacementService, workloadPlacementService(deps));
  // grpc.health.v1 and server reflection, behind the same mTLS and authorization.
  const standard = addStandardServices(mtls, [
    'sigil.v1.CertificateAuthority',
    'sigil.v1.Enrolment',
    'sigil.v1.Admin',
    'sigil.v1.Delegation',
    'sigil.v1.WorkloadPlacement',
  ]);
  let port: number;
  try {
    port = await mtls.listen(listen.host, listen.port, { reusePort: options.reusePort === true });
  } catch (error) {
    await mtls.close(0);
    throw new SigilError(
      'failed_precondition',
      `cannot listen on ${formatAddress(listen.host, listen.port)}: ${firstLineOf(error)}`,
      { cause: error },
    );
  }
  return {
    port,
    endStreams: () => {
      ca.closeWatchers();
      standard.close();
    },
    close: (graceMs) => mtls.close(graceMs),
  };
}
