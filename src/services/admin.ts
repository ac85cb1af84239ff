// sigil.v1.Admin: operator calls. The authorization table already limits
// this service to admin identities; the authority checks the role again.

import { fieldError } from '../errors.ts';
import type {
  AdminServer,
  ApproveNodeRequest,
  CreateTokenRequest,
  CreateTokenResponse,
  GetNodeRequest,
  GetStatusRequest,
  ListNodesRequest,
  ListNodesResponse,
  ListTokensRequest,
  ListTokensResponse,
  Node,
  RevokeNodeRequest,
  RevokeTokenRequest,
  RevokeTokenResponse,
  Status,
} from '../gen/sigil/v1/sigil.ts';
import { AdminService } from '../gen/sigil/v1/sigil.ts';
import type { NodeState } from '../store/store.ts';
import { callerOf } from './caller.ts';
import type { ServiceDependencies } from './certificate-authority.ts';
import { unaryHandler } from './handlers.ts';
import { nodeMessage, statusMessage, tokenSummaryMessage } from './messages.ts';
import { checkText, MAX_SHORT_TEXT } from './validation.ts';

const paths = AdminService;
const NODE_STATES = new Set<string>(['NEW', 'UP', 'REVOKED']);

export function adminService(deps: ServiceDependencies): AdminServer {
  const { authority, onFailure } = deps;
  const td = authority.trustDomain;
  return {
    createToken: unaryHandler<CreateTokenRequest, CreateTokenResponse>(
      { method: paths.createToken.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('name', request.name, MAX_SHORT_TEXT);
        const created = await authority.createToken(caller, {
          ttlSeconds: request.ttlSeconds,
          uses: request.uses,
          autoApprove: request.autoApprove,
          ...(request.name ? { name: request.name } : {}),
          replica: request.replica,
        });
        return { token: created.token, summary: tokenSummaryMessage(created.summary) };
      },
    ),

    listTokens: unaryHandler<ListTokensRequest, ListTokensResponse>(
      { method: paths.listTokens.path, onFailure },
      async (_request, call) => {
        const tokens = await authority.listTokens(callerOf(call, td));
        return { tokens: tokens.map(tokenSummaryMessage) };
      },
    ),

    revokeToken: unaryHandler<RevokeTokenRequest, RevokeTokenResponse>(
      { method: paths.revokeToken.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('id', request.id, MAX_SHORT_TEXT, { required: true });
        return authority.revokeToken(caller, request.id);
      },
    ),

    listNodes: unaryHandler<ListNodesRequest, ListNodesResponse>(
      { method: paths.listNodes.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('state', request.state, 16);
        if (request.state !== '' && !NODE_STATES.has(request.state)) {
          throw fieldError('state', `${JSON.stringify(request.state)} is not "", "NEW", "UP" or "REVOKED"`);
        }
        const nodes = await authority.listNodes(
          caller,
          request.state === '' ? {} : { state: request.state as NodeState },
        );
        return { nodes: nodes.map(nodeMessage) };
      },
    ),

    getNode: unaryHandler<GetNodeRequest, Node>(
      { method: paths.getNode.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('id', request.id, MAX_SHORT_TEXT, { required: true });
        return nodeMessage(await authority.getNode(caller, request.id));
      },
    ),

    approveNode: unaryHandler<ApproveNodeRequest, Node>(
      { method: paths.approveNode.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('id', request.id, MAX_SHORT_TEXT, { required: true });
        return nodeMessage(await authority.approveNode(caller, request.id));
      },
    ),

    revokeNode: unaryHandler<RevokeNodeRequest, Node>(
      { method: paths.revokeNode.path, onFailure },
      async (request, call) => {
        const caller = callerOf(call, td);
        checkText('id', request.id, MAX_SHORT_TEXT, { required: true });
        checkText('reason', request.reason, MAX_SHORT_TEXT);
        const node = await authority.revokeNode(
          caller,
          request.id,
          request.reason === '' ? undefined : request.reason,
        );
        return nodeMessage(node);
      },
    ),

    getStatus: unaryHandler<GetStatusRequest, Status>(
      { method: paths.getStatus.path, onFailure },
      async (_request, call) => statusMessage(await authority.status(callerOf(call, td))),
    ),
  };
}
