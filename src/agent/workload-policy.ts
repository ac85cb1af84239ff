// The spec of a create, checked against the caller's effective policy (CPU
// ids, memory and bridges within it; a certificate without resources cannot
// create) and against this node (its bridges). The caller sees its own
// figures only. Admins have no policy: only the node's own checks apply.
import { invalid, SigilError } from '../errors.ts';
import type { CreateWorkloadRequest } from '../gen/sigil/v1/workloads.ts';
import { checkDesiredSpec, type DesiredSpec } from '../workloads/desired-state.ts';
import { parseBlockMount } from './workload-blocks.ts';
import type { WorkloadCaller } from './workload-callers.ts';
import { parseRestart } from './workload-messages.ts';

function exhausted(message: string): SigilError {
  return new SigilError('resource_exhausted', message);
}

function denied(message: string): SigilError {
  return new SigilError('permission_denied', message);
}

/** The request's runtime: "" or "process" runs in namespaces (recorded as nothing), "vm" as a qemu VM. */
function runtimeOf(runtime: string): { runtime?: 'vm' } {
  if (runtime === '' || runtime === 'process') return {};
  if (runtime === 'vm') return { runtime: 'vm' };
  throw invalid(`runtime ${JSON.stringify(runtime.slice(0, 40))}: expected process or vm`);
}

/** The spec of a create, checked against the caller's policy and this node. */
export function createSpec(
  caller: WorkloadCaller,
  name: string,
  image: string,
  request: CreateWorkloadRequest,
  node: { readonly nodeName: string; readonly bridges: readonly string[] },
): DesiredSpec {
  const runtime = runtimeOf(request.runtime);
  const cpus = [...new Set(request.cpus)].sort((a, b) => a - b);
  const networks = [...new Set(request.networks)];
  const limits = caller.policy?.limits;
  let memoryMiB = request.memoryMib;
  if (caller.policy !== null) {
    if (!limits || limits.memoryMiB === 0)
      throw exhausted(
        'your certificate grants no memory (it carries no resources): it cannot create workloads',
      );
    if (memoryMiB === 0) memoryMiB = limits.memoryMiB;
    if (memoryMiB > limits.memoryMiB)
      throw exhausted(`memory ${memoryMiB} MiB is over your policy's ${limits.memoryMiB} MiB`);
    const outside = cpus.filter((cpu) => !limits.cpus.includes(cpu));
    if (outside.length > 0)
      throw denied(
        `cpu ${outside.join(',')} is not in your policy's cpus (${limits.cpus.join(',') || 'none'})`,
      );
    const bridges = networks.filter((bridge) => !limits.bridges.includes(bridge));
    if (bridges.length > 0)
      throw denied(
        `bridge ${bridges.join(',')} is not in your policy's bridges (${limits.bridges.join(',') || 'none'})`,
      );
  }
  const unknown = networks.filter((bridge) => !node.bridges.includes(bridge));
  if (unknown.length > 0)
    throw new SigilError(
      'failed_precondition',
      `bridge ${unknown.join(',')} is not configured on node ${node.nodeName} (it has ${node.bridges.join(',') || 'none'})`,
    );
  const blocks = request.blocks.map(parseBlockMount);
  if (request.pidsMax < 0) throw invalid('pids_max must be 0 or more');
  return checkDesiredSpec({
    name,
    image,
    command: request.command.length > 0 ? [...request.command] : ['/bin/sh'],
    ...(Object.keys(request.env).length > 0 ? { env: { ...request.env } } : {}),
    ...(request.workdir ? { workdir: request.workdir } : {}),
    ...(request.user ? { user: request.user } : {}),
    limits: {
      ...(memoryMiB > 0 ? { memoryMiB } : {}),
      ...(cpus.length > 0 ? { cpus } : {}),
      ...(request.pidsMax > 0 ? { pidsMax: request.pidsMax } : {}),
    },
    restart: parseRestart(request.restart),
    ...(networks.length > 0 ? { networks } : {}),
    ...(blocks.length > 0 ? { blocks } : {}),
    // Every workload gets a pseudo-terminal: its console, and what an interactive attach types into.
    tty: true,
    ...runtime,
  });
}
