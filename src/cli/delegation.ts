// `sigil delegation status|reserve|release|revoke`: a delegate acting inside
// its own subtree over the Delegation service, called with the identity in
// `--identity DIR` (as `sigil delegate` writes it) or an admin's. `sigil
// status` shows the same delegation status when its identity is a delegate.
//
// Also the plain-JSON and text shapes of policies and delegation trees that
// `sigil delegate` prints. This module is imported when commands are
// registered, so it loads nothing heavy at the top (gRPC, X.509).
import type { Command } from 'commander';
import { invalid } from '../errors.ts';
import type {
  DelegationNode,
  DelegationStatus,
  Policy as PolicyMessage,
  Usage,
} from '../gen/sigil/v1/sigil.ts';
import type { PolicyJson } from '../pki/policy-extension.ts';
import {
  addClientOptions,
  type ClientOptionValues,
  type Clients,
  clientFlags,
  DELEGATION_INFO_FILE,
  withClients,
} from './client-context.ts';
import { examples, instant, relative } from './operator-output.ts';
import { printResult } from './output.ts';

// --- policies in JSON and text --------------------------------------------------

/** A policy from the server, as plain JSON for printing (not validated); null when absent. */
export function policyJsonFromMessage(message: PolicyMessage | undefined): PolicyJson | null {
  if (message === undefined) return null;
  const { limits } = message;
  return {
    version: message.version,
    permissions: [...message.permissions],
    limits:
      limits === undefined
        ? null
        : {
            workloads: limits.workloads,
            cpus: [...limits.cpus],
            memoryMiB: limits.memoryMib,
            blockMiB: limits.blockMib,
            bridges: [...limits.bridges],
            issuancePerHour: limits.issuancePerHour,
          },
  };
}

const list = (items: readonly (string | number)[]): string => (items.length > 0 ? items.join(',') : 'none');

export function permissionsText(policy: PolicyJson): string {
  return policy.permissions.length > 0 ? policy.permissions.join(', ') : 'none';
}

/** "2 workloads, cpus 0,1, 4096 MiB memory, …" or "no resources (a command certificate)". */
export function limitsText(policy: PolicyJson): string {
  const { limits } = policy;
  if (limits === null) return 'no resources (permissions only)';
  return [
    `${limits.workloads} workload${limits.workloads === 1 ? '' : 's'}`,
    `cpus ${list(limits.cpus)}`,
    `${limits.memoryMiB} MiB memory`,
    `${limits.blockMiB} MiB block`,
    `bridges ${list(limits.bridges)}`,
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
    `cpus ${list(usage.cpus)}${limits ? ` of ${list(limits.cpus)}` : ''}`,
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
  const { unary } = await import('../client/rpc.ts');
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
  const { existsSync } = await import('node:fs');
  const { join } = await import('node:path');
  if (identityDir !== undefined && existsSync(join(identityDir, DELEGATION_INFO_FILE))) return true;
  const { X509Certificate } = await import('node:crypto');
  const { DELEGATION_LABEL, parseDelegatedId } = await import('../pki/delegation-names.ts');
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

// --- commands -----------------------------------------------------------------------

interface JsonFlags extends ClientOptionValues {
  json?: boolean;
}

interface ReserveFlags extends JsonFlags {
  workloads?: string;
  cpus?: string;
  memory?: string;
  block?: string;
}

interface RevokeFlags extends JsonFlags {
  reason?: string;
}

/** A whole number 0 .. max from a flag, refused with a line naming the flag. */
export function wholeNumber(text: string, flag: string, max = Number.MAX_SAFE_INTEGER): number {
  const trimmed = text.trim();
  if (!/^[0-9]+$/.test(trimmed) || !Number.isSafeInteger(Number(trimmed)) || Number(trimmed) > max) {
    throw invalid(`${flag} must be a whole number from 0 to ${max}, got ${JSON.stringify(text)}`);
  }
  return Number(trimmed);
}

/** CPU ids: "0,1", "0-3,8", or "" (none); sorted, without duplicates. */
/** maxCpu: MAX_CPU_ID of pki/policy-extension.ts, not imported here so the CLI starts without ASN.1. */
export function parseCpuList(text: string, flag = '--cpus', maxCpu = 4095): number[] {
  const cpus = new Set<number>();
  if (text.trim() === '') return [];
  const usage = `use cpu ids from 0 to ${maxCpu}, comma-separated, with ranges like 0-3`;
  for (const raw of text.split(',')) {
    const item = raw.trim();
    const match = /^([0-9]+)(?:-([0-9]+))?$/.exec(item);
    if (match === null) {
      throw invalid(
        `${flag} ${JSON.stringify(text)}: ${JSON.stringify(item)} is not a cpu id or range (${usage})`,
      );
    }
    const first = Number(match[1]);
    const last = match[2] === undefined ? first : Number(match[2]);
    if (first > maxCpu || last > maxCpu || last < first) {
      throw invalid(`${flag} ${JSON.stringify(text)}: ${JSON.stringify(item)} is out of range (${usage})`);
    }
    for (let cpu = first; cpu <= last; cpu++) cpus.add(cpu);
  }
  return [...cpus].sort((a, b) => a - b);
}

async function runStatus(flags: JsonFlags): Promise<void> {
  await withClients(await clientFlags(flags), (clients) => showDelegationStatus(clients, flags));
}

async function runReserve(holder: string, flags: ReserveFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const name = holder.trim();
  if (name === '') throw invalid('give the holder: a name for what the resources are reserved for');
  const request = {
    holder: name,
    workloads: flags.workloads === undefined ? 0 : wholeNumber(flags.workloads, '--workloads', 0xffffffff),
    cpus: flags.cpus === undefined ? [] : parseCpuList(flags.cpus),
    memoryMib: flags.memory === undefined ? 0 : wholeNumber(flags.memory, '--memory'),
    blockMib: flags.block === undefined ? 0 : wholeNumber(flags.block, '--block'),
  };
  const reservation = await withClients(await clientFlags(flags), ({ delegation, target, context }) =>
    unary(delegation, delegation.reserve, request, { target, timeoutMs: context.timeoutMs }),
  );
  const json = {
    holder: reservation.holder || name,
    spiffeId: reservation.spiffeId,
    existing: reservation.existing,
    workloads: request.workloads,
    cpus: request.cpus,
    memoryMiB: request.memoryMib,
    blockMiB: request.blockMib,
  };
  printResult(flags, json, () =>
    reservation.existing
      ? `${json.holder} was already reserved in ${json.spiffeId || 'your subtree'}`
      : `reserved ${json.holder} in ${json.spiffeId || 'your subtree'}: ${json.workloads} workload${json.workloads === 1 ? '' : 's'}, cpus ${list(json.cpus)}, ${json.memoryMiB} MiB memory, ${json.blockMiB} MiB block`,
  );
}

async function runRelease(holder: string, flags: JsonFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const name = holder.trim();
  if (name === '') throw invalid('give the holder to release');
  const response = await withClients(await clientFlags(flags), ({ delegation, target, context }) =>
    unary(delegation, delegation.release, { holder: name }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, { holder: name, released: response.released }, () =>
    response.released ? `released ${name}` : `nothing was held as ${name}`,
  );
}

async function runRevoke(file: string, flags: RevokeFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const { readInputFile } = await import('../files/file-sets.ts');
  const { readCertificates, parseCertificate } = await import('../pki/certificate.ts');
  const { X509Certificate } = await import('node:crypto');
  const certificates = readCertificates(readInputFile(file, 'certificate file'), file);
  const [certificate, ...above] = certificates;
  const target = parseCertificate(certificate, file);
  // Roots are the server's own; only the links between them and the certificate travel.
  const chain = above.filter((der) => {
    const x = new X509Certificate(der);
    return !x.checkIssued(x);
  });
  const spiffeIds = (new X509Certificate(certificate).subjectAltName ?? '')
    .split(/,\s*/)
    .filter((name) => name.startsWith('URI:spiffe://'))
    .map((name) => name.slice('URI:'.length));
  const response = await withClients(await clientFlags(flags), ({ delegation, target: server, context }) => {
    // The chain goes up to the caller's own certificate and no further.
    const own = new Set(
      readCertificates(context.certificateChain, context.identitySource).map((der) => der.toString('base64')),
    );
    const cut = chain.findIndex((der) => own.has(der.toString('base64')));
    return unary(
      delegation,
      delegation.revokeDelegated,
      {
        certificate,
        chain: cut < 0 ? chain : chain.slice(0, cut + 1),
        reason: flags.reason ?? '',
      },
      { target: server, timeoutMs: context.timeoutMs },
    );
  });
  const json = {
    serial: target.serialHex,
    spiffeId: spiffeIds[0] ?? null,
    subject: target.subject,
    revoked: true,
    alreadyRevoked: response.alreadyRevoked,
    reason: flags.reason ?? 'unspecified',
  };
  printResult(flags, json, () => {
    const what = `${target.subject} (serial ${target.serialHex}${json.spiffeId ? `, ${json.spiffeId}` : ''})`;
    return response.alreadyRevoked
      ? `${what} was already revoked`
      : `revoked ${what}${target.isCa ? ' and everything beneath it' : ''}`;
  });
}

export function registerDelegationCommands(program: Command): void {
  const delegation = program
    .command('delegation')
    .description(
      "A delegate's own subtree: its policy and usage, reserving and releasing resources, revoking what it delegated",
    );

  addClientOptions(
    delegation
      .command('status')
      .description(
        "The caller's effective policy, its subtree's usage and the tree of what it delegated (as seen by the server)",
      )
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil delegation status --identity ./alice',
        '$ sigil delegation status --identity ./alice --json',
      ),
    )
    .action((flags: JsonFlags) => runStatus(flags));

  addClientOptions(
    delegation
      .command('reserve')
      .description(
        "Reserve resources in the caller's subtree, counted against every ancestor's limits; " +
          'reserving the same holder again changes nothing',
      )
      .argument('<holder>', 'a name for what the resources are for, unique in the subtree')
      .option('--workloads <n>', 'workloads to reserve')
      .option('--cpus <ids>', 'cpu ids to reserve, e.g. 0,1 or 0-3')
      .option('--memory <MiB>', 'memory to reserve, in MiB')
      .option('--block <MiB>', 'block storage to reserve, in MiB')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples('$ sigil delegation reserve web-1 --workloads 1 --cpus 0 --memory 512 --identity ./carol'),
    )
    .action((holder: string, flags: ReserveFlags) => runReserve(holder, flags));

  addClientOptions(
    delegation
      .command('release')
      .description("Release what a holder reserved in the caller's subtree")
      .argument('<holder>', 'the name given to sigil delegation reserve')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil delegation release web-1 --identity ./carol'))
    .action((holder: string, flags: JsonFlags) => runRelease(holder, flags));

  addClientOptions(
    delegation
      .command('revoke')
      .description(
        "Revoke a certificate inside the caller's subtree, also one the server never issued: " +
          "FILE holds it first, then its chain (e.g. a delegation directory's delegation.pem or cert.pem). " +
          'Revoking a delegation revokes everything beneath it',
      )
      .argument('<file>', 'PEM: the certificate to revoke, then its chain')
      .option('--reason <reason>', 'RFC 5280 reason, e.g. keyCompromise, superseded (default: unspecified)')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil delegation revoke ./carol/delegation.pem --identity ./alice',
        '$ sigil delegation revoke ./carol/cert.pem --identity ./alice --reason keyCompromise',
      ),
    )
    .action((file: string, flags: RevokeFlags) => runRevoke(file, flags));
}
