// The sigil policy on the wire (proto sigil.v1.Policy) and back: one
// conversion for the server (validated on the way in) and for clients.
import type { Policy as PolicyMessage } from '../gen/sigil/v1/sigil.ts';
import {
  encodePolicy,
  isPermission,
  type Permission,
  type Policy,
  type PolicyJson,
  policyToJson,
} from '../pki/policy-extension.ts';
import { fieldError } from './validation.ts';

/** A policy from the wire, validated (encodePolicy checks every field). */
export function policyFromMessage(message: PolicyMessage | undefined, field = 'policy'): Policy {
  if (!message) throw fieldError(field, 'required');
  if (message.version !== 1) throw fieldError(`${field}.version`, `must be 1, not ${message.version}`);
  const permissions = new Set<Permission>();
  for (const name of message.permissions) {
    if (!isPermission(name))
      throw fieldError(`${field}.permissions`, `unknown permission ${JSON.stringify(name.slice(0, 32))}`);
    permissions.add(name);
  }
  const limits = message.limits
    ? {
        workloads: message.limits.workloads,
        cpus: message.limits.cpus,
        memoryMiB: message.limits.memoryMib,
        blockMiB: message.limits.blockMib,
        bridges: message.limits.bridges,
        issuancePerHour: message.limits.issuancePerHour,
      }
    : null;
  const policy: Policy = { version: 1, permissions, limits };
  encodePolicy(policy);
  return policy;
}

export function policyMessage(policy: Policy | PolicyJson): PolicyMessage {
  const json: PolicyJson =
    policy.permissions instanceof Set ? policyToJson(policy as Policy) : (policy as PolicyJson);
  const { limits } = json;
  return {
    version: json.version,
    permissions: [...json.permissions],
    ...(limits
      ? {
          limits: {
            workloads: limits.workloads,
            cpus: [...limits.cpus],
            memoryMib: limits.memoryMiB,
            blockMib: limits.blockMiB,
            bridges: [...limits.bridges],
            issuancePerHour: limits.issuancePerHour,
          },
        }
      : {}),
  };
}
