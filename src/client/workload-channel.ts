// Reaching a node's Workloads service (the node daemon, `sigil agent
// --workloads`). The control plane knows where each node serves it:
// WorkloadPlacement.FindWorkloadNode by node name or ID answers with the
// address and the SPIFFE ID the node's certificate carries. The channel to
// the node then uses the caller's own identity (client certificate, and a
// delegate's chain as sigil-chain-bin on every call) and trusts only the
// pinned roots, and the server must be exactly that node: its SPIFFE ID,
// on a certificate the deployment issued itself (a delegate can sign a leaf
// naming any path of its trust domain, so the name alone proves nothing).
import type { ChannelCredentials } from '@grpc/grpc-js';
import { invalid, notFound, unauthenticated } from '../errors.ts';
import type { WorkloadPlacementClient } from '../gen/sigil/v1/sigil.ts';
import { WorkloadsClient } from '../gen/sigil/v1/workloads.ts';
import type { TlsMaterial } from '../pki/material.ts';
import { parseSpiffeId } from '../pki/names.ts';
import { channelCredentials } from '../transport/client-credentials.ts';
import {
  type ServerVerification,
  verifyAll,
  verifyPinnedFingerprint,
  verifySpiffeId,
} from '../transport/server-verification.ts';
import { StaticMaterialSource } from '../transport/static-source.ts';
import { notDeploymentIssued } from './control-plane-channel.ts';
import { type CallSettings, unary } from './rpc.ts';

/** Where a node serves Workloads and who it must be. */
export interface WorkloadEndpoint {
  /** The node's ID, when known (the control plane's answer, or --node with --node-address). */
  readonly nodeId: string;
  /** The node's name, "" when it has none or it is not known. */
  readonly name: string;
  /** HOST:PORT */
  readonly address: string;
  /** spiffe://<td>/node/<id>: what the node's certificate must carry. */
  readonly spiffeId: string;
}

const NODE_PATH = /^\/node\/[A-Za-z0-9._-]+$/;

/** Refuses a SPIFFE ID that is not a node's. */
export function checkNodeSpiffeId(spiffeId: string, where: string): string {
  let path: string;
  try {
    path = parseSpiffeId(spiffeId).path;
  } catch {
    throw invalid(`${where}: ${JSON.stringify(spiffeId)} is not a SPIFFE ID`);
  }
  if (!NODE_PATH.test(path)) {
    throw invalid(
      `${where}: ${JSON.stringify(spiffeId)} is not a node's SPIFFE ID (spiffe://<td>/node/<id>)`,
    );
  }
  return spiffeId;
}

/** Asks the control plane where `node` (a name or an ID) serves Workloads. */
export async function findWorkloadEndpoint(
  placement: WorkloadPlacementClient,
  node: string,
  settings: CallSettings,
): Promise<WorkloadEndpoint> {
  const found = await unary(placement, placement.findWorkloadNode, { node }, settings);
  const shown = found.name && found.name !== found.nodeId ? `${found.name} (${found.nodeId})` : found.nodeId;
  if (found.address === '') {
    throw notFound(
      `node ${shown || node} serves no workloads (run sigil agent --dir NODE --workloads on it)`,
    );
  }
  return {
    nodeId: found.nodeId,
    name: found.name,
    address: found.address,
    spiffeId: checkNodeSpiffeId(found.spiffeId, `the control plane's answer for node ${node}`),
  };
}

/** The server must be the node: the pinned root, its exact SPIFFE ID, issued by the deployment itself. */
export function workloadNodeVerification(rootFingerprint: string, spiffeId: string): ServerVerification {
  const deploymentIssued: ServerVerification = {
    description: `a node certificate issued by the deployment's own CA`,
    check(server) {
      const why = notDeploymentIssued(server);
      if (why === undefined) return undefined;
      return unauthenticated(
        `server identity rejected: ${spiffeId} is not a node certificate: ${why} (a delegate can sign any name; only the deployment's CAs issue nodes)`,
      );
    },
  };
  return verifyAll(verifyPinnedFingerprint(rootFingerprint), verifySpiffeId(spiffeId), deploymentIssued);
}

export interface WorkloadChannelOptions {
  /** The caller's certificate chain and key, and a trust bundle holding the pinned root. */
  readonly material: TlsMaterial;
  readonly rootFingerprint: string;
  readonly endpoint: WorkloadEndpoint;
}

/** Credentials for the node: the caller's identity, the pinned roots, the node's SPIFFE ID. */
export function workloadCredentials(options: WorkloadChannelOptions): ChannelCredentials {
  return channelCredentials({
    material: new StaticMaterialSource(options.material),
    verify: workloadNodeVerification(options.rootFingerprint, options.endpoint.spiffeId),
  });
}

/**
 * A Workloads client for the node. A delegate's every call carries its chain
 * as sigil-chain-bin: the credentials attach it (transport/client-credentials.ts,
 * from the material of the connection), once; a deployment identity sends none.
 */
export function openWorkloadsClient(options: WorkloadChannelOptions): WorkloadsClient {
  return new WorkloadsClient(options.endpoint.address, workloadCredentials(options));
}
