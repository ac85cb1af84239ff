// The values of the workload, image and block commands' flags, checked
// before anything connects: a bad one is bad usage (exit 2). Light on
// purpose (no gRPC, no X.509): flag-values.ts may check them while the
// command line is parsed, and the commands check them again through
// usageChecked() when they run, so the exit code is 2 either way.
import { invalid, SigilError } from '../errors.ts';
import { isDnsLabel } from '../pki/delegation-names.ts';
import { parseDuration } from '../pki/duration.ts';
import { parseImageReference } from '../protocol/image-names.ts';
import { checkInterfaceName } from '../workloads/address-pool.ts';
import { checkRestartPolicy } from '../workloads/restart-policy.ts';
import { splitHostPort } from './client-context.ts';
import { parseCpuList, wholeNumber } from './resource-flags.ts';
import { UsageError } from './usage.ts';

const U32 = 0xffffffff;
/** One DNS label, as workload and block names are. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const CONTROL = /\p{Cc}/u;
/** Longest path a workload's --workdir or a mount point may be. */
const MAX_PATH = 4096;

const quote = (text: string): string => JSON.stringify(text.length > 70 ? `${text.slice(0, 70)}…` : text);

/** Runs `parse`, turning its invalid_argument into bad usage (exit 2). */
export function usageChecked<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof SigilError && error.code === 'invalid_argument' && !(error instanceof UsageError)) {
      throw new UsageError(error.message);
    }
    throw error;
  }
}

/** A workload or block name: one DNS label. */
export function parseResourceName(text: string, what: 'workload' | 'block device'): string {
  if (!isDnsLabel(text)) {
    throw invalid(
      `${what} name ${quote(text)} must be 1 to 63 lower-case letters, digits or inner hyphens (one DNS label)`,
    );
  }
  return text;
}

/** --memory: MiB, at least 1. */
export function parseMemoryMiB(text: string, flag = '--memory'): number {
  const value = wholeNumber(text, flag);
  if (value < 1) throw invalid(`${flag} must be at least 1 (MiB), got ${quote(text)}`);
  return value;
}

/** A count flag (--lines, --limit): 1 .. 2^32-1. */
export function parseCount(text: string, flag: string): number {
  const value = wholeNumber(text, flag, U32);
  if (value < 1) throw invalid(`${flag} must be a whole number from 1 to ${U32}, got ${quote(text)}`);
  return value;
}

/** --cpus for a workload: ids and ranges (resource-flags.ts). */
export const parseCpus = (text: string): number[] => parseCpuList(text);

/** --net: a bridge name the caller's policy allows (the node decides which). */
export function parseNetwork(text: string): string {
  return checkInterfaceName(text, '--net bridge name');
}

/** --block NAME:/mount/point. */
export function parseBlockMount(text: string): string {
  const colon = text.indexOf(':');
  if (colon < 1) throw invalid(`--block ${quote(text)}: expected NAME:/mount/point, e.g. data:/data`);
  const name = text.slice(0, colon);
  const mount = text.slice(colon + 1);
  if (!isDnsLabel(name)) {
    throw invalid(`--block ${quote(text)}: the block device name ${quote(name)} must be one DNS label`);
  }
  checkAbsolutePath(mount, `--block ${quote(text)}: the mount point`);
  if (mount === '/') throw invalid(`--block ${quote(text)}: cannot mount over the workload's root`);
  return `${name}:${mount}`;
}

function checkAbsolutePath(path: string, what: string): void {
  if (!path.startsWith('/')) throw invalid(`${what} ${quote(path)} must be an absolute path`);
  if (path.length > MAX_PATH) throw invalid(`${what} is longer than ${MAX_PATH} characters`);
  if (CONTROL.test(path)) throw invalid(`${what} ${quote(path)} contains a control character`);
  if (path.split('/').includes('..')) throw invalid(`${what} ${quote(path)} climbs with '..'`);
}

/** --restart no | always | on-failure[:codes], as the node takes it (codes 1-255, comma-separated). */
export function parseRestart(text: string): string {
  const spec = text.trim();
  const usage = `--restart ${quote(text)}: expected no, always, on-failure or on-failure:CODES (e.g. on-failure:1,137)`;
  if (spec === 'no' || spec === 'always') return spec;
  const match = /^on-failure(?::(.*))?$/.exec(spec);
  if (match === null) throw invalid(usage);
  if (match[1] === undefined) return 'on-failure';
  const codes = match[1].split(',').map((code) => {
    if (!/^[0-9]{1,3}$/.test(code.trim())) throw invalid(usage);
    return Number(code.trim());
  });
  try {
    checkRestartPolicy({ onFailure: { codes } });
  } catch (error) {
    throw invalid(`--restart ${quote(text)}: ${error instanceof Error ? error.message : String(error)}`);
  }
  return `on-failure:${[...new Set(codes)].join(',')}`;
}

/** --runtime process | vm: what the node starts the workload as (namespaces or a qemu VM). */
export function parseRuntime(text: string): 'process' | 'vm' {
  const runtime = text.trim();
  if (runtime === 'process' || runtime === 'vm') return runtime;
  throw invalid(`--runtime ${quote(text)}: expected process or vm`);
}

/** --env NAME=VALUE, repeated; a name given twice is refused. */
export function parseEnv(items: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of items) {
    const equals = item.indexOf('=');
    if (equals < 1) throw invalid(`--env ${quote(item)}: expected NAME=VALUE`);
    const name = item.slice(0, equals);
    if (!ENV_NAME.test(name) || name.length > 255) {
      throw invalid(`--env ${quote(item)}: ${quote(name)} is not a variable name (letters, digits, '_')`);
    }
    const value = item.slice(equals + 1);
    if (value.includes('\0')) throw invalid(`--env ${quote(name)}: the value contains a NUL character`);
    if (Object.hasOwn(env, name)) throw invalid(`--env ${name} is given twice`);
    env[name] = value;
  }
  return env;
}

/** --workdir: an absolute path inside the workload. */
export function parseWorkdir(text: string): string {
  checkAbsolutePath(text, '--workdir');
  return text;
}

/** --user UID[:GID], numeric. */
export function parseUser(text: string): string {
  const match = /^([0-9]{1,10})(?::([0-9]{1,10}))?$/.exec(text.trim());
  const ids = match ? [match[1], match[2]].filter((id) => id !== undefined).map(Number) : [];
  if (!match || ids.some((id) => id > U32 - 1)) {
    throw invalid(`--user ${quote(text)}: expected a numeric UID or UID:GID, e.g. 1000 or 65534:65534`);
  }
  return match[2] === undefined ? match[1] : `${match[1]}:${match[2]}`;
}

/** --since: a duration ago ("10m") or an ISO 8601 time; unix ms. */
export function parseSince(text: string, now = Date.now()): number {
  const trimmed = text.trim();
  if (/^[0-9]+[ywdhms]/.test(trimmed)) {
    try {
      return Math.max(1, now - parseDuration(trimmed));
    } catch {
      // not a duration after all: try a time below
    }
  }
  if (/^\d{4}-\d{2}-\d{2}(?:[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(trimmed)) {
    const ms = Date.parse(trimmed);
    if (!Number.isNaN(ms) && ms > 0) return ms;
  }
  throw invalid(
    `--since ${quote(text)}: expected a duration ago (30s, 10m, 2h, 1d) or an ISO 8601 time (2026-12-07T20:00:00Z)`,
  );
}

/** --watch [INTERVAL]: a duration (whole seconds, at least 1s); ms. */
export function parseInterval(text: string, flag = '--watch'): number {
  const ms = parseDuration(text);
  if (ms > U32) throw invalid(`${flag} ${quote(text)}: too long`);
  return ms;
}

/** --size MiB for a block device, at least 1. */
export const parseSizeMiB = (text: string): number => parseMemoryMiB(text, '--size');

/** --tag org/name:version. */
export function parseTag(text: string): string {
  return parseImageReference(text).reference;
}

/** --node-address HOST:PORT. */
export function parseNodeAddress(text: string): string {
  splitHostPort(text, '--node-address');
  return text.trim();
}

/** --node: a node name or ID (the control plane resolves it), or with --node-address a node ID. */
export function parseNodeName(text: string): string {
  const trimmed = text.trim();
  if (trimmed === '' || trimmed.length > 253 || CONTROL.test(trimmed) || /\s/.test(trimmed)) {
    throw invalid(`--node ${quote(text)}: expected a node name or ID`);
  }
  return trimmed;
}

/** The command groups these flags belong to. */
export const WORKLOAD_COMMAND_GROUPS: ReadonlySet<string> = new Set(['workload', 'image', 'block', 'build']);

/**
 * Parse-time checks of these flags for flag-values.ts, by flag, for the
 * commands of WORKLOAD_COMMAND_GROUPS (where --memory and --block mean a
 * workload's memory and a block mount, not a delegation's quotas).
 */
export const WORKLOAD_FLAG_CHECKS: Readonly<Record<string, (text: string) => unknown>> = {
  '--node': parseNodeName,
  '--node-address': parseNodeAddress,
  '--image': parseTag,
  '--tag': parseTag,
  '--memory': parseMemoryMiB,
  '--net': parseNetwork,
  '--block': parseBlockMount,
  '--restart': parseRestart,
  '--runtime': parseRuntime,
  '--env': (text) => parseEnv([text]),
  '--workdir': parseWorkdir,
  '--user': parseUser,
  '--since': parseSince,
  '--lines': (text) => parseCount(text, '--lines'),
  '--limit': (text) => parseCount(text, '--limit'),
  '--watch': (text) => parseInterval(text),
  '--size': parseSizeMiB,
};
