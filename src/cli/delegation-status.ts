// What `sigil delegation status` and `sigil status` (as a delegate) print,
// and the text forms of a policy `sigil delegate` prints: a delegate's
// effective policy, its subtree's usage and the tree of what it delegated.
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { unary } from '../client/rpc.ts';
import type { DelegationNode, DelegationStatus, Usage } from '../gen/sigil/v1/sigil.ts';
import { DELEGATION_LABEL, parseDelegatedId } from '../pki/delegation-names.ts';
import type { PolicyJson } from '../pki/policy-extension.ts';
import { policyJsonFromMessage } from '../protocol/policy-messages.ts';
import { type Clients, DELEGATION_INFO_FILE } from './client-context.ts';
import { instant, relative } from './operator-output.ts';
import { printResult } from './output.ts';

export const listText = (items: readonly (string | number)[]): string =>
  items.length > 0 ? items.join(',') : 'none';

export function permissionsText(policy: PolicyJson): string {
  return policy.permissions.length > 0 ? policy.permissions.join(', ') : 'none';
}

/** "2 workloads, cpus 0,1, 4096 MiB memory, …" or "no resources (a command certificate)". */
export function limitsText(policy: PolicyJson): string {
  const { limits } = policy;
  if (limits === null) return 'no resources (permissions only)';
  return [
    `${limits.workloads} workload${limits.workloads === 1 ? '' : 's'}`,
    `cpus ${listText(limits.cpus)}`,
    `${limits.memoryMiB} MiB memory`,
    `${limits.blockMiB} MiB block`,
    `bridges ${listText(limits.bridges)}`,
    `${limits.issuancePerHour} issuances/hour`,
  ].join(', ');
}

// --- status -----------------------------------------------------------------------

interface UsageJson {
  readonly workloads: number;
  readonly cpus: readonly number[];
  readonly memoryMiB: number;
  readonly blockMiB: number;
  readonly reservations: number;
  readonly issuedLastHour: number;
}

export interface DelegationNodeJson {
  readonly spiffeId: string;
  readonly serial: string;
  readonly fingerprint: string;
  readonly isCa: boolean;
  /** "issued" (by the server) or "seen" (in a chain a delegate presented). */
  readonly origin: string;
  readonly policy: PolicyJson | null;
  readonly notAfter: string | null;
  readonly revokedAt: string | null;
  readonly children: readonly DelegationNodeJson[];
}

export interface DelegationStatusJson {
  readonly server: string;
  readonly spiffeId: string;
  /** Effective: the intersection along the caller's chain. */
  readonly policy: PolicyJson | null;
  /** The whole subtree's. */
  readonly usage: UsageJson | null;
  readonly delegated: readonly DelegationNodeJson[];
}

function usageJson(usage: Usage | undefined): UsageJson | null {
  if (usage === undefined) return null;
  return {
    workloads: usage.workloads,
    cpus: [...usage.cpus],
    memoryMiB: usage.memoryMib,
    blockMiB: usage.blockMib,
    reservations: usage.reservations,
    issuedLastHour: usage.issuedLastHour,
  };
}

function nodeJson(node: DelegationNode): DelegationNodeJson {
  return {
    spiffeId: node.spiffeId,
    serial: node.serial,
    fingerprint: node.fingerprint,
    isCa: node.isCa,
    origin: node.origin,
    policy: policyJsonFromMessage(node.policy),
    notAfter: instant(node.notAfterUnixMs),
    revokedAt: instant(node.revokedAtUnixMs),
    children: node.children.map(nodeJson),
  };
}

export function delegationStatusJson(status: DelegationStatus, server: string): DelegationStatusJson {
  return {
    server,
    spiffeId: status.spiffeId,
    policy: policyJsonFromMessage(status.policy),
    usage: usageJson(status.usage),
    delegated: status.delegated.map(nodeJson),
  };
}

function usageText(usage: UsageJson, policy: PolicyJson | null): string {
  const limits = policy?.limits ?? null;
  const of = (used: number, limit: number | undefined) =>
    limit === undefined ? `${used}` : `${used} of ${limit}`;
  return [
    `${of(usage.workloads, limits?.workloads)} workloads`,
    `cpus ${listText(usage.cpus)}${limits ? ` of ${listText(limits.cpus)}` : ''}`,
    `${of(usage.memoryMiB, limits?.memoryMiB)} MiB memory`,
    `${of(usage.blockMiB, limits?.blockMiB)} MiB block`,
    `${usage.reservations} reservation${usage.reservations === 1 ? '' : 's'}`,
    `${of(usage.issuedLastHour, limits?.issuancePerHour)} issued in the last hour`,
  ].join(', ');
}

function treeLines(nodes: readonly DelegationNodeJson[], depth: number, now: number): string[] {
  const lines: string[] = [];
  for (const node of nodes) {
    const state = node.revokedAt
      ? `REVOKED ${node.revokedAt}`
      : node.notAfter && Date.parse(node.notAfter) <= now
        ? `expired ${node.notAfter}`
        : `expires ${relative(node.notAfter ? Date.parse(node.notAfter) : 0, now)}`;
    const what = node.isCa ? 'delegation' : 'certificate';
    const permissions = node.policy ? `  [${permissionsText(node.policy)}]` : '';
    lines.push(`${'  '.repeat(depth)}${node.spiffeId}  ${what}, ${node.origin}, ${state}${permissions}`);
    lines.push(...treeLines(node.children, depth + 1, now));
  }
  return lines;
}

export function delegationStatusText(json: DelegationStatusJson, now = Date.now()): string {
  const lines = [`delegate ${json.spiffeId || '-'} at ${json.server}`];
  if (json.policy) {
    lines.push(
      `  permissions:  ${permissionsText(json.policy)}`,
      `  limits:       ${limitsText(json.policy)}`,
    );
  } else {
    lines.push('  policy:       -');
  }
  if (json.usage) lines.push(`  usage:        ${usageText(json.usage, json.policy)}`);
  if (json.delegated.length === 0) lines.push('delegated:      nothing');
  else lines.push('delegated:', ...treeLines(json.delegated, 1, now));
  return lines.join('\n');
}

/** GetDelegationStatus with open clients, printed (`sigil delegation status`, `sigil status` as a delegate). */
export async function showDelegationStatus(clients: Clients, flags: { json?: boolean }): Promise<void> {
  const { delegation, target, context } = clients;
  const status = await unary(
    delegation,
    delegation.getDelegationStatus,
    {},
    { target, timeoutMs: context.timeoutMs },
  );
  const json = delegationStatusJson(status, target);
  printResult(flags, json, () => delegationStatusText(json));
}

/**
 * Whether the identity a client command calls with is a delegate's: its
 * --identity directory has a delegation.json, or its leaf's SPIFFE ID lies
 * in a delegated subtree, beneath <name>.d.<trust domain>. Without a known
 * trust domain, any host with a "d" label below its first one counts (a
 * deployment identity's host is the trust domain itself).
 */
export async function isDelegateIdentity(
  identityDir: string | undefined,
  certificateChainPem: string,
  trustDomain?: string,
): Promise<boolean> {
  if (identityDir !== undefined && existsSync(join(identityDir, DELEGATION_INFO_FILE))) return true;
  const match = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(certificateChainPem);
  if (match === null) return false;
  let names: string;
  try {
    names = new X509Certificate(match[0]).subjectAltName ?? '';
  } catch {
    return false;
  }
  return names
    .split(/,\s*/)
    .filter((name) => name.startsWith('URI:spiffe://'))
    .map((name) => name.slice('URI:'.length))
    .some((id) => {
      if (trustDomain !== undefined) return parseDelegatedId(id, trustDomain) !== null;
      const host = /^spiffe:\/\/([^/]+)/.exec(id)?.[1] ?? '';
      return host.split('.').slice(1, -1).includes(DELEGATION_LABEL);
    });
}
