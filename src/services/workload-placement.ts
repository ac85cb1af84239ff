// sigil.v1.WorkloadPlacement: message → authority call → message. Node
// daemons reserve, release and list their workloads' reservations, register
// where they serve workloads and get their workloads' identities; anyone
// authenticated finds a node's endpoint. Who may do what is the authority's
// decision (authority/workload-placement.ts, workload-identity.ts): the node
// ID always comes from the calling node's certificate, never from a request
// field.
import { fieldError } from '../errors.ts';
import type {
  FindWorkloadNodeRequest,
  IssueWorkloadIdentityRequest,
  ListWorkloadReservationsRequest,
  ListWorkloadReservationsResponse,
  RegisterWorkloadEndpointRequest,
  ReleaseResponse,
  ReleaseWorkloadRequest,
  ReserveWorkloadRequest,
  WorkloadIdentity,
  WorkloadNode,
  WorkloadPlacementServer,
  WorkloadReservation,
} from '../gen/sigil/v1/sigil.ts';
import { WorkloadPlacementService } from '../gen/sigil/v1/sigil.ts';
import { policyMessage } from '../protocol/policy-messages.ts';
import { callerOf } from './caller.ts';
import type { ServiceDependencies } from './certificate-authority.ts';
import { unaryHandler } from './handlers.ts';
import { issuedCertificateMessage } from './messages.ts';
import {
  checkBytes,
  checkPossession,
  checkText,
  MAX_CSR_BYTES,
  MAX_SHORT_TEXT,
  withPossessionField,
} from './validation.ts';

const paths = WorkloadPlacementService;
/** A presented chain: the longest the control plane admits (see delegations.ts). */
const MAX_CHAIN_CERTIFICATES = 9;
const MAX_CPU_IDS = 4096;
/** "host:port" with a 253-character DNS name. */
const MAX_ADDRESS_LENGTH = 261;

export function workloadPlacementService(deps: ServiceDependencies): WorkloadPlacementServer {
  const { authority, onFailure } = deps;
  const td = authority.trustDomain;

  return {
    reserveWorkload: unaryHandler<ReserveWorkloadRequest, WorkloadReservation>(
      { method: paths.reserveWorkload.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkBytes('leaf', request.leaf, MAX_CSR_BYTES);
        if (request.chain.length > MAX_CHAIN_CERTIFICATES) {
          throw fieldError('chain', `at most ${MAX_CHAIN_CERTIFICATES} certificates`);
        }
        for (const [index, der] of request.chain.entries()) {
          checkBytes(`chain[${index}]`, der, MAX_CSR_BYTES, 1);
        }
        checkText('name', request.name, MAX_SHORT_TEXT, { required: true });
        if (request.cpus.length > MAX_CPU_IDS) throw fieldError('cpus', `at most ${MAX_CPU_IDS} cpu ids`);
        const placed = await authority.reserveWorkload(caller, {
          leaf: request.leaf,
          chain: request.chain,
          name: request.name,
          workloads: request.workloads,
          cpus: request.cpus,
          memoryMiB: request.memoryMib,
          blockMiB: request.blockMib,
        });
        return {
          holder: placed.holder,
          subtree: placed.subtree,
          existing: placed.existing,
          ...(placed.policy ? { policy: policyMessage(placed.policy) } : {}),
        };
      },
    ),

    releaseWorkload: unaryHandler<ReleaseWorkloadRequest, ReleaseResponse>(
      { method: paths.releaseWorkload.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('subtree', request.subtree, 1024, { required: true });
        checkText('name', request.name, MAX_SHORT_TEXT, { required: true });
        return { released: await authority.releaseWorkload(caller, request.subtree, request.name) };
      },
    ),

    listWorkloadReservations: unaryHandler<ListWorkloadReservationsRequest, ListWorkloadReservationsResponse>(
      { method: paths.listWorkloadReservations.path, onFailure },
      async (_request, call) => {
        const held = await authority.listWorkloadReservations(callerOf(call, td));
        return {
          reservations: held.map((reservation) => ({
            subtree: reservation.subtree,
            name: reservation.name,
            workloads: reservation.workloads,
            cpus: [...reservation.cpus],
            memoryMib: reservation.memoryMiB,
            blockMib: reservation.blockMiB,
          })),
        };
      },
    ),

    registerWorkloadEndpoint: unaryHandler<RegisterWorkloadEndpointRequest, WorkloadNode>(
      { method: paths.registerWorkloadEndpoint.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('address', request.address, MAX_ADDRESS_LENGTH);
        return authority.registerWorkloadEndpoint(caller, request.address);
      },
    ),

    findWorkloadNode: unaryHandler<FindWorkloadNodeRequest, WorkloadNode>(
      { method: paths.findWorkloadNode.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('node', request.node, MAX_SHORT_TEXT, { required: true });
        return authority.findWorkloadNode(caller, request.node);
      },
    ),

    issueWorkloadIdentity: unaryHandler<IssueWorkloadIdentityRequest, WorkloadIdentity>(
      { method: paths.issueWorkloadIdentity.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('subtree', request.subtree, 1024, { required: true });
        checkText('name', request.name, MAX_SHORT_TEXT, { required: true });
        const key = request.key;
        if (!key) throw fieldError('key', 'give possession or csr');
        if (key.$case === 'possession') checkPossession('possession', key.value);
        else checkBytes('csr', key.value, MAX_CSR_BYTES, 1);
        const issued = await withPossessionField('possession', () =>
          authority.issueWorkloadIdentity(caller, {
            subtree: request.subtree,
            name: request.name,
            ...(key.$case === 'possession' ? { possession: key.value } : { csr: key.value }),
            ttlSeconds: request.ttlSeconds,
          }),
        );
        return {
          certificate: issuedCertificateMessage(issued),
          ownerSpiffeId: issued.owner,
          subtree: issued.subtree,
        };
      },
    ),
  };
}
