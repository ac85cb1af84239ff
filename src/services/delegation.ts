// sigil.v1.Delegation: message → authority call → message. Who may do what
// is the authority's decision (delegations.ts); delegate calls arrive here
// only after DelegateGrants admitted their chain, and the handlers fetch that
// grant (cached) to act on it.
import type * as grpc from '@grpc/grpc-js';
import type { DelegateGrant, DelegationStatusView, DelegationTreeNode } from '../authority/delegations.ts';
import type { Caller } from '../authority/identities.ts';
import { fieldError, invalid } from '../errors.ts';
import type {
  CreateDelegationRequest,
  DelegationCertificate,
  DelegationNode,
  DelegationServer,
  DelegationStatus,
  GetDelegationStatusRequest,
  ReleaseRequest,
  ReleaseResponse,
  Reservation,
  ReserveRequest,
  RevokeDelegatedRequest,
  RevokeResponse,
} from '../gen/sigil/v1/sigil.ts';
import { DelegationService } from '../gen/sigil/v1/sigil.ts';
import { policyFromMessage, policyMessage } from '../protocol/policy-messages.ts';
import { callerOf } from './caller.ts';
import type { ServiceDependencies } from './certificate-authority.ts';
import { requireGrant } from './delegate-grants.ts';
import { unaryHandler } from './handlers.ts';
import { issuedCertificateMessage } from './messages.ts';
import { holdUntilReplied } from './self-revocation.ts';
import {
  checkBytes,
  checkList,
  checkPossession,
  checkText,
  MAX_CSR_BYTES,
  MAX_DNS_NAME_LENGTH,
  MAX_SHORT_TEXT,
  withPossessionField,
} from './validation.ts';

const paths = DelegationService;
const MAX_CHAIN_CERTIFICATES = 9;

export function delegationNodeMessage(node: DelegationTreeNode): DelegationNode {
  return {
    spiffeId: node.spiffeId,
    serial: node.serial,
    fingerprint: node.fingerprint,
    ...(node.policy ? { policy: policyMessage(node.policy) } : {}),
    isCa: node.isCa,
    origin: node.origin,
    notAfterUnixMs: node.notAfter.getTime(),
    revokedAtUnixMs: node.revokedAt ? node.revokedAt.getTime() : 0,
    children: node.children.map(delegationNodeMessage),
  };
}

function statusMessage(view: DelegationStatusView): DelegationStatus {
  return {
    spiffeId: view.spiffeId,
    policy: policyMessage(view.policy),
    usage: {
      workloads: view.usage.workloads,
      cpus: [...view.usage.cpus],
      memoryMib: view.usage.memoryMiB,
      blockMib: view.usage.blockMiB,
      reservations: view.usage.reservations,
      issuedLastHour: view.issuedLastHour,
    },
    delegated: view.delegated.map(delegationNodeMessage),
  };
}

export function delegationService(deps: ServiceDependencies): DelegationServer {
  const { authority, onFailure } = deps;
  const td = authority.trustDomain;

  /** The caller and, for a delegate, its admitted grant. */
  async function who(
    call: grpc.ServerUnaryCall<unknown, unknown>,
  ): Promise<{ caller: Caller; grant: DelegateGrant | null }> {
    const caller = callerOf(call, td);
    if (caller.role !== 'delegate') return { caller, grant: null };
    return { caller, grant: await requireGrant(deps, call) };
  }

  async function delegateGrant(call: grpc.ServerUnaryCall<unknown, unknown>): Promise<DelegateGrant> {
    const { grant } = await who(call);
    if (!grant)
      throw invalid('this call is for delegates: call with a delegation identity (sigil delegate --out)');
    return grant;
  }

  return {
    createDelegation: unaryHandler<CreateDelegationRequest, DelegationCertificate>(
      { method: paths.createDelegation.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('name', request.name, 64, { required: true });
        checkList('dns_names', request.dnsNames, MAX_DNS_NAME_LENGTH);
        if (request.dnsNames.length > 64) throw fieldError('dns_names', 'at most 64 names');
        checkList('ip_ranges', request.ipRanges, 64);
        if (request.ipRanges.length > 64) throw fieldError('ip_ranges', 'at most 64 ranges');
        const possession = checkPossession('possession', request.possession);
        const policy = policyFromMessage(request.policy);
        if (!Number.isInteger(request.pathLen) || request.pathLen < -1 || request.pathLen > 16) {
          throw fieldError('path_len', 'must be -1 (default) or 0 to 16');
        }
        const created = await withPossessionField('possession', () =>
          authority.createDelegation(caller, {
            name: request.name,
            policy,
            ...(request.pathLen >= 0 ? { pathLen: request.pathLen } : {}),
            ...(request.ttlSeconds > 0 ? { ttlMs: request.ttlSeconds * 1000 } : {}),
            grants: { dnsNames: request.dnsNames, ipRanges: request.ipRanges },
            command: request.command,
            possession,
          }),
        );
        return {
          certificate: issuedCertificateMessage({ ...created, certificate: created.certificate }),
          spiffeId: created.spiffeId,
          policy: policyMessage(created.policy),
          dnsNames: [...created.grants.dnsNames],
          ipRanges: [...created.grants.ipRanges],
          policyOid: authority.policyOid.text,
        };
      },
    ),

    getDelegationStatus: unaryHandler<GetDelegationStatusRequest, DelegationStatus>(
      { method: paths.getDelegationStatus.path, onFailure },
      async (_request, call) => statusMessage(await authority.delegationStatus(await delegateGrant(call))),
    ),

    reserve: unaryHandler<ReserveRequest, Reservation>(
      { method: paths.reserve.path, onFailure },
      async (request, call) => {
        const grant = await delegateGrant(call);
        checkText('holder', request.holder, MAX_SHORT_TEXT, { required: true });
        if (request.cpus.length > 4096) throw fieldError('cpus', 'at most 4096 cpu ids');
        const { reservation, existing } = await authority.reserve(grant, {
          holder: request.holder,
          workloads: request.workloads,
          cpus: request.cpus,
          memoryMiB: request.memoryMib,
          blockMiB: request.blockMib,
        });
        return { holder: reservation.holder, spiffeId: grant.spiffeId, existing };
      },
    ),

    release: unaryHandler<ReleaseRequest, ReleaseResponse>(
      { method: paths.release.path, onFailure },
      async (request, call) => {
        const grant = await delegateGrant(call);
        checkText('holder', request.holder, MAX_SHORT_TEXT, { required: true });
        return { released: await authority.release(grant, request.holder) };
      },
    ),

    revokeDelegated: unaryHandler<RevokeDelegatedRequest, RevokeResponse>(
      { method: paths.revokeDelegated.path, onFailure },
      async (request, call) => {
        const { caller, grant } = await who(call);
        checkBytes('certificate', request.certificate, MAX_CSR_BYTES, 1);
        if (request.chain.length > MAX_CHAIN_CERTIFICATES) {
          throw fieldError('chain', `at most ${MAX_CHAIN_CERTIFICATES} certificates`);
        }
        for (const [index, der] of request.chain.entries()) {
          checkBytes(`chain[${index}]`, der, MAX_CSR_BYTES, 1);
        }
        checkText('reason', request.reason, 32);
        // A delegate revoking itself must get this reply before its connection is cut.
        holdUntilReplied(call);
        return authority.revokeDelegated(caller, grant, {
          certificate: request.certificate,
          chain: request.chain,
          reason: request.reason,
        });
      },
    ),
  };
}
