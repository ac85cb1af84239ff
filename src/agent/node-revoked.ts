// How a node learns that it has been revoked, and the error that says so.
//
// A revoked node's certificate is refused in the TLS handshake: the server
// closes the connection (a TLS alert may say why, but its text depends on the
// TLS stack and reaches a grpc-js client only as part of a "cannot reach"
// message). That alone cannot tell "revoked" from "server restarting". So when
// a call over mutual TLS cannot get through, the agent asks the control plane
// itself, anonymously, over the enrolment channel (server authenticated by
// the node's pinned roots): Enrolment.Rejoin with a proof of possession of
// the node's key. The authority's answer is the decision:
//   - a certificate: only this certificate was refused (revoked as
//     superseded, say, or its CA rotated away); the key is still good and the
//     node carries on with the new certificate;
//   - PERMISSION_DENIED: the node, or its key, has been revoked; no
//     certificate will ever be issued for this key again (NodeRevokedError);
//   - no answer either: the server is down, and the agent keeps retrying.
// This needs neither the HTTP side (CRLs) nor any particular TLS alert, works
// through every replica, and never sends anything secret to an unauthenticated
// server.

import { RpcError, STATUS_PERMISSION_DENIED } from '../client/rpc.ts';
import { SigilError } from '../errors.ts';

/** The control plane refuses every certificate for this node's key: the node must enrol again. */
export class NodeRevokedError extends SigilError {
  readonly nodeId: string;
  constructor(nodeId: string, detail: string, cause?: unknown) {
    const hint = /enrol/i.test(detail) ? '' : '; enrol again with a new join token and a new --dir';
    super('permission_denied', `this node's certificate has been revoked: ${detail}${hint}`, { cause });
    this.name = 'NodeRevokedError';
    this.nodeId = nodeId;
  }
}

/** True for a refusal of the control plane (not a transport failure) saying the caller may not have a certificate. */
export function isPermissionDenied(error: unknown): error is RpcError {
  return error instanceof RpcError && error.status === STATUS_PERMISSION_DENIED;
}

/** A Rejoin refusal as the NodeRevokedError it means; anything else unchanged. */
export function asRevocation(error: unknown, nodeId: string): unknown {
  if (error instanceof NodeRevokedError || !isPermissionDenied(error)) return error;
  return new NodeRevokedError(nodeId, error.message, error);
}
