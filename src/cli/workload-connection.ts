// How the workload, image and block commands reach a node's Workloads
// service: the client context as every client command resolves it
// (client-context.ts: --data / --identity / --server / --ca-fingerprint),
// then the node's endpoint from the control plane (FindWorkloadNode by
// --node), or straight from --node-address, where --node must then be the
// node's ID (its SPIFFE ID is spiffe://<trust domain>/node/<id>, still
// verified). The node channel uses the same identity and pinned roots as the
// control-plane channel; see client/workload-channel.ts.

import type { WorkloadEndpoint } from '../client/workload-channel.ts';
import { invalid } from '../errors.ts';
import type { WorkloadsClient } from '../gen/sigil/v1/workloads.ts';
import {
  type ClientContext,
  type ClientOptionValues,
  clientCredentials,
  clientFlags,
  connectableAddress,
  resolveClientContext,
} from './client-context.ts';
import { usageError } from './usage.ts';
import { parseNodeAddress, parseNodeName, usageChecked } from './workload-flags.ts';

/** The flags that say which node: --node, and optionally --node-address. */
export interface NodeFlags extends ClientOptionValues {
  node?: string;
  nodeAddress?: string;
}

export interface WorkloadConnection {
  readonly client: WorkloadsClient;
  readonly endpoint: WorkloadEndpoint;
  /** HOST:PORT of the node, for messages. */
  readonly target: string;
  readonly context: ClientContext;
  close(): void;
}

/**
 * The trust bundle to pin for the node: the identity's own when it holds the
 * pinned root, else the root fetched from the control plane and accepted by
 * its fingerprint (as clientCredentials does for the control plane).
 */
async function pinnedTrustBundle(context: ClientContext): Promise<string> {
  const { rootFingerprints } = await import('../client/trust-bundle.ts');
  if (
    context.trustBundle !== undefined &&
    rootFingerprints(context.trustBundle).includes(context.rootFingerprint)
  ) {
    return context.trustBundle;
  }
  const { fetchPinnedRoot } = await import('../client/control-plane-channel.ts');
  const { encodePem } = await import('../pki/pem.ts');
  return encodePem(
    'CERTIFICATE',
    await fetchPinnedRoot(context.address, context.rootFingerprint, { timeoutMs: context.timeoutMs }),
  );
}

/** --node-address given: the address, and --node as the node's ID (checked before anything connects). */
interface DirectNode {
  readonly address: string;
  readonly nodeId: string;
}

async function directNode(flags: NodeFlags, node: string): Promise<DirectNode | undefined> {
  if (flags.nodeAddress === undefined) return undefined;
  const text = flags.nodeAddress;
  const address = usageChecked(() => connectableAddress(parseNodeAddress(text), '--node-address'));
  const { parseNodeId } = await import('../authority/node-id.ts');
  const nodeId = usageChecked(() => {
    try {
      return parseNodeId(node);
    } catch (error) {
      throw invalid(
        `with --node-address, --node must be the node's ID: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
  });
  return { address, nodeId };
}

/** The node's endpoint: from --node-address and the trust domain, or FindWorkloadNode. */
async function endpointFor(
  direct: DirectNode | undefined,
  node: string,
  context: ClientContext,
): Promise<WorkloadEndpoint> {
  if (direct !== undefined) {
    if (context.trustDomain === undefined) {
      throw invalid(
        `--node-address needs the trust domain to know the node's SPIFFE ID, and ${context.identitySource} does not name it: leave --node-address out to ask the control plane`,
      );
    }
    const { nodeSpiffeId } = await import('../authority/identities.ts');
    return { ...direct, name: '', spiffeId: nodeSpiffeId(context.trustDomain, direct.nodeId) };
  }
  const { WorkloadPlacementClient } = await import('../gen/sigil/v1/sigil.ts');
  const { findWorkloadEndpoint } = await import('../client/workload-channel.ts');
  const placement = new WorkloadPlacementClient(context.address, await clientCredentials(context));
  try {
    return await findWorkloadEndpoint(placement, node, {
      target: context.address,
      timeoutMs: context.timeoutMs,
    });
  } finally {
    placement.close();
  }
}

/** Resolves the identity and the node, and opens a Workloads client to it. */
export async function connectWorkloads(flags: NodeFlags): Promise<WorkloadConnection> {
  if (flags.node === undefined) throw usageError('give the node: --node NAME_OR_ID');
  const node = usageChecked(() => parseNodeName(flags.node!));
  const direct = await directNode(flags, node);
  const context = await resolveClientContext(await clientFlags(flags));
  const endpoint = await endpointFor(direct, node, context);
  const { openWorkloadsClient } = await import('../client/workload-channel.ts');
  const client = openWorkloadsClient({
    material: {
      certificateChain: context.certificateChain,
      privateKey: context.privateKey,
      trustBundle: await pinnedTrustBundle(context),
    },
    rootFingerprint: context.rootFingerprint,
    endpoint,
  });
  return { client, endpoint, target: endpoint.address, context, close: () => client.close() };
}

/** Runs `work` with a connected Workloads client and closes it afterwards. */
export async function withWorkloads<T>(
  flags: NodeFlags,
  work: (connection: WorkloadConnection) => Promise<T>,
): Promise<T> {
  const connection = await connectWorkloads(flags);
  try {
    return await work(connection);
  } finally {
    connection.close();
  }
}

/**
 * The messages of a server stream, its failure as one line naming the
 * problem (rpc.ts rpcError). Ending the loop early cancels the call.
 */
export async function* received<T>(
  call: AsyncIterable<unknown> & { cancel(): void },
  target: string,
): AsyncGenerator<T> {
  const { rpcError } = await import('../client/rpc.ts');
  let done = false;
  try {
    for await (const message of call) yield message as T;
    done = true;
  } catch (error) {
    throw rpcError(error, target);
  } finally {
    if (!done) call.cancel();
  }
}

/** Call options for a stream: a deadline unless it follows live (then it runs until stopped). */
export function streamOptions(context: ClientContext, follow: boolean): { deadline?: Date } {
  if (follow) return {};
  return { deadline: new Date(Date.now() + (context.timeoutMs ?? 15_000)) };
}
