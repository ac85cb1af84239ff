// The sigil policy on the wire (proto sigil.v1.Policy) and back: one
// conversion for the server (validated on the way in) and for clients
// (policyJsonFromMessage: what a server said, for printing).
import { fieldError } from '../errors.ts';
import type { Limits as LimitsMessage, Policy as PolicyMessage } from '../gen/sigil/v1/sigil.ts';
import {
  encodePolicy,
  isPermission,
  type Permission,
  type Policy,
  type PolicyJson,
  policyToJson,
} from '../pki/policy-extension.ts';

/** Limits from the wire as sigil spells them (MiB), not validated. */
function limitsFromMessage(limits: LimitsMessage): NonNullable<PolicyJson['limits']> {
  return {
    workloads: limits.workloads,
    cpus: [...limits.cpus],
    memoryMiB: limits.memoryMib,
    blockMiB: limits.blockMib,
    bridges: [...limits.bridges],
    issuancePerHour: limits.issuancePerHour,
  };
}

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
  const limits = message.limits ? limitsFromMessage(message.limits) : null;
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

/** A policy from the server, as plain JSON for printing (not validated); null when absent. */
export function policyJsonFromMessage(message: PolicyMessage | undefined): PolicyJson | null {
  if (message === undefined) return null;
  return {
    version: message.version,
    permissions: [...message.permissions],
    limits: message.limits === undefined ? null : limitsFromMessage(message.limits),
  };
}
