// `sigil delegate`'s flags, checked and turned into what the delegation
// asks for. Limits and permissions not given come from a base: the server's
// defaults, or (offline) the parent's effective policy, so that a flag
// narrows exactly what it names.
import { resolve } from 'node:path';
import { invalid, SigilError } from '../errors.ts';
import { parseGrants } from '../pki/delegation-certificates.ts';
import { checkDelegationName } from '../pki/delegation-names.ts';
import { parseDuration } from '../pki/duration.ts';
import { type KeyType, parseKeyType } from '../pki/keys.ts';
import { isBridgeName, type Limits, type Permission, parsePermissions } from '../pki/policy-extension.ts';
import type { ClientOptionValues } from './client-context.ts';
import type { DelegationKind } from './delegation-directory.ts';
import { parseCpuList, wholeNumber } from './resource-flags.ts';

export interface DelegateFlags extends ClientOptionValues {
  to: string;
  out: string;
  from?: string;
  permissions?: string;
  workloads?: string;
  memory?: string;
  cpus?: string;
  block?: string;
  bridges?: string;
  issuancePerHour?: string;
  pathLen?: string;
  ttl?: string;
  dns?: string;
  ip?: string;
  command?: boolean;
  keyType?: string;
  force?: boolean;
  json?: boolean;
}

/** Defaults of a delegation made by the server when a flag is not given. */
export const SERVER_DEFAULT_LIMITS: Limits = Object.freeze({
  workloads: 0,
  cpus: Object.freeze([]),
  memoryMiB: 0,
  blockMiB: 0,
  bridges: Object.freeze([]),
  issuancePerHour: 1000,
});

/** Under a parent without limits, a limit flag starts from nothing (and issuance refuses it). */
const NO_LIMITS: Limits = Object.freeze({ ...SERVER_DEFAULT_LIMITS, issuancePerHour: 0 });

const DEFAULT_KEY_TYPE: KeyType = 'p256';
const MAX_PATH_LEN = 32;

const LIMIT_FLAGS = [
  ['workloads', '--workloads'],
  ['cpus', '--cpus'],
  ['memory', '--memory'],
  ['block', '--block'],
  ['bridges', '--bridges'],
  ['issuancePerHour', '--issuance-per-hour'],
] as const;

function parseBridges(text: string): string[] {
  if (text.trim() === '') return [];
  const names = text.split(',').map((item) => item.trim());
  for (const name of names) {
    if (!isBridgeName(name)) {
      throw invalid(
        `--bridges ${JSON.stringify(text)}: ${JSON.stringify(name)} is not a bridge name (1 to 64 of A-Z a-z 0-9 . _ -)`,
      );
    }
  }
  return [...new Set(names)].sort();
}

/** A comma-separated flag value (--dns, --ip) as a list; undefined when the flag is absent. */
function parseList(flag: string, text: string | undefined): string[] | undefined {
  if (text === undefined) return undefined;
  if (text.trim() === '') return [];
  const items = text.split(',').map((item) => item.trim());
  if (items.some((item) => item === ''))
    throw invalid(`${flag} ${JSON.stringify(text)} contains an empty entry`);
  return items;
}

/** Limits from the flags; what a flag does not name comes from `base`. Null: no limits at all. */
export function limitsFrom(flags: DelegateFlags, base: Limits | null): Limits | null {
  const given = LIMIT_FLAGS.some(([name]) => flags[name] !== undefined);
  if (!given && base === null) return null;
  const from = base ?? NO_LIMITS;
  return {
    workloads: flags.workloads === undefined ? from.workloads : wholeNumber(flags.workloads, '--workloads'),
    cpus: flags.cpus === undefined ? [...from.cpus] : parseCpuList(flags.cpus),
    memoryMiB: flags.memory === undefined ? from.memoryMiB : wholeNumber(flags.memory, '--memory'),
    blockMiB: flags.block === undefined ? from.blockMiB : wholeNumber(flags.block, '--block'),
    bridges: flags.bridges === undefined ? [...from.bridges] : parseBridges(flags.bridges),
    issuancePerHour:
      flags.issuancePerHour === undefined
        ? from.issuancePerHour
        : wholeNumber(flags.issuancePerHour, '--issuance-per-hour'),
  };
}

/** --command takes permissions only: every resource or CA flag is refused by name. */
function refuseCommandLimits(flags: DelegateFlags): void {
  const given = [
    ...LIMIT_FLAGS.filter(([name]) => flags[name] !== undefined).map(([, flag]) => flag),
    ...(flags.pathLen !== undefined ? ['--path-len'] : []),
    ...(flags.dns !== undefined ? ['--dns'] : []),
    ...(flags.ip !== undefined ? ['--ip'] : []),
  ];
  if (given.length > 0) {
    throw invalid(
      `--command makes a command certificate, which carries permissions only (no resources, not a CA): drop ${given.join(', ')}`,
    );
  }
}

/** What every delegation asks for, whoever signs it. */
export interface DelegateRequest {
  readonly name: string;
  readonly kind: DelegationKind;
  readonly keyType: KeyType;
  readonly ttlMs: number | undefined;
  readonly pathLen: number | undefined;
  /** --dns and --ip as given (each undefined when absent), checked. */
  readonly grants: { readonly dnsNames?: string[]; readonly ipRanges?: string[] };
  /** --out, absolute. */
  readonly out: string;
}

export function delegateRequest(flags: DelegateFlags): DelegateRequest {
  const name = flags.to.trim();
  try {
    checkDelegationName(name);
  } catch (error) {
    // A dotted or underscored name is the likeliest slip: the parent's names are added as labels.
    const hint = /[._]/.test(name)
      ? `; no "." or "_" (e.g. ${name.replaceAll(/[._]/g, '-')}): the name is one label of the host NAME.<parent's host>`
      : '';
    throw invalid(`--to: ${error instanceof Error ? error.message : String(error)}${hint}`, error);
  }
  const dnsNames = parseList('--dns', flags.dns);
  const ipRanges = parseList('--ip', flags.ip);
  for (const [flag, grants] of [
    ['--dns', { dnsNames: dnsNames ?? [] }],
    ['--ip', { ipRanges: ipRanges ?? [] }],
  ] as const) {
    try {
      parseGrants(grants);
    } catch (error) {
      throw invalid(`${flag}: ${error instanceof Error ? error.message : String(error)}`, error);
    }
  }
  const kind: DelegationKind = flags.command ? 'command' : 'delegation';
  if (kind === 'command') refuseCommandLimits(flags);
  return {
    name,
    kind,
    keyType: flags.keyType === undefined ? DEFAULT_KEY_TYPE : parseKeyType(flags.keyType),
    ttlMs: flags.ttl === undefined ? undefined : parseDuration(flags.ttl),
    pathLen: flags.pathLen === undefined ? undefined : wholeNumber(flags.pathLen, '--path-len', MAX_PATH_LEN),
    grants: { ...(dnsNames ? { dnsNames } : {}), ...(ipRanges ? { ipRanges } : {}) },
    out: resolve(flags.out),
  };
}

/** --permissions, its errors naming the flag. */
export function permissionsFrom(text: string): ReadonlySet<Permission> {
  try {
    return parsePermissions(text);
  } catch (error) {
    if (error instanceof SigilError) throw invalid(`--permissions: ${error.message}`, error);
    throw error;
  }
}
