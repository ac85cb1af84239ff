// Flag values are checked while the command line is parsed, so a malformed
// value is bad usage: exit 2, commander's line naming the option and why
// ("option '--ttl <duration>' argument '5x' is invalid. invalid duration …"),
// and nothing runs. The commands check the same values again when they use
// them; these checks use the same functions, so they never refuse a value the
// command would take.
//
// One table for the whole program, applied to the commander tree after every
// command has registered (checkFlagValues): a flag's kind of value is the same
// wherever it appears (--ttl is always a duration), with a few per-command
// ranges. Every option that takes a value is either checked here or listed in
// FREE_TEXT (names, paths, things only a CA or the server can judge), and a
// test keeps that true for options added later.
import { type Argument, type Command, InvalidArgumentError, type Option } from 'commander';
import { SigilError } from '../errors.ts';
import { parseDuration } from '../pki/duration.ts';
import { parseKeyType } from '../pki/keys.ts';
import { parseTrustDomain } from '../pki/names.ts';
import { parsePolicyOid } from '../pki/policy-oid.ts';
import { parseRevocationReason } from '../pki/revocation-reasons.ts';
import { parseSerial } from '../pki/serial.ts';
import { parseListenAddress } from '../server/listen-address.ts';
import { parseBridgeConfig } from '../workloads/address-pool.ts';
import { checkCgroupName } from '../workloads/cgroups/names.ts';
import { parseBaseSource } from '../workloads/image-base.ts';
import { fingerprintFrom, splitHostPort } from './client-context.ts';
import { parseCpuList, wholeNumber } from './resource-flags.ts';
import { VMINIT_FREE_TEXT_FLAGS } from './vminit.ts';
import { WORKLOAD_COMMAND_GROUPS, WORKLOAD_FLAG_CHECKS } from './workload-flags.ts';

type Check = (text: string) => void;

const U32 = 0xffffffff;

function duration(limits: { minMs?: number; maxSeconds?: number } = {}): Check {
  return (text) => {
    const ms = parseDuration(text);
    if (limits.minMs !== undefined && ms < limits.minMs) {
      throw new InvalidArgumentError(`shorter than ${limits.minMs / 1000} s`);
    }
    if (limits.maxSeconds !== undefined && Math.ceil(ms / 1000) > limits.maxSeconds) {
      throw new InvalidArgumentError('too long');
    }
  };
}

function whole(flag: string, min: number, max: number): Check {
  return (text) => {
    const value = wholeNumber(text, flag, max);
    if (value < min) {
      throw new InvalidArgumentError(
        `${flag} must be a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`,
      );
    }
  };
}

/** By flag, for every command that has it. */
const BY_FLAG: Readonly<Record<string, Check>> = {
  '--ttl': duration(),
  '--ca-ttl': duration(),
  '--next-update': duration(),
  '--wait-timeout': duration(),
  '--bundle-refresh': duration(),
  '--timeout': duration(),
  '--key-type': (text) => void parseKeyType(text),
  '--trust-domain': (text) => void parseTrustDomain(text),
  '--ca-fingerprint': (text) => void fingerprintFrom(text, '--ca-fingerprint'),
  '--server': (text) => void splitHostPort(text, '--server'),
  '--cpus': (text) => void parseCpuList(text),
  '--listen': (text) => void parseListenAddress(text, '--listen'),
  '--http-listen': (text) => void parseListenAddress(text, '--http-listen'),
  '--policy-oid': (text) => void parsePolicyOid(text),
  // Empty means unspecified; removeFromCRL is a reason, refused by the command (a revocation is final).
  '--reason': (text) => void (text.trim() === '' || parseRevocationReason(text)),
};

/** By command path and flag: ranges that differ between commands. */
const BY_COMMAND: Readonly<Record<string, Check>> = {
  'token create --ttl': duration({ minMs: 1000, maxSeconds: U32 }),
  'token create --uses': whole('--uses', 1, U32),
  'vminit --guest-mmds-port': whole('--guest-mmds-port', 1, 65535),
  'cert list --page-size': whole('--page-size', 1, 1000),
  // server/start-server.ts MAX_WORKERS (not imported: this file stays light; usage-errors.test.ts compares them).
  'server --workers': whole('--workers', 1, 256),
  'delegate --ttl': duration({ maxSeconds: U32 }),
  'delegate --workloads': whole('--workloads', 0, Number.MAX_SAFE_INTEGER),
  'delegate --memory': whole('--memory', 0, Number.MAX_SAFE_INTEGER),
  'delegate --block': whole('--block', 0, Number.MAX_SAFE_INTEGER),
  'delegate --issuance-per-hour': whole('--issuance-per-hour', 0, Number.MAX_SAFE_INTEGER),
  'delegate --path-len': whole('--path-len', 0, 32),
  'delegation reserve --workloads': whole('--workloads', 0, U32),
  'delegation reserve --memory': whole('--memory', 0, Number.MAX_SAFE_INTEGER),
  'delegation reserve --block': whole('--block', 0, Number.MAX_SAFE_INTEGER),
  'agent --bridge': (text) => void parseBridgeConfig(text),
  'agent --metrics-listen': (text) => void parseListenAddress(text, '--metrics-listen'),
  'agent --cgroup-base': (text) => void checkCgroupName(text, '--cgroup-base'),
};

/** Positional arguments, by command path and argument name. */
const BY_ARGUMENT: Readonly<Record<string, Check>> = {
  'cert show <serial>': (text) => void parseSerial(text),
  'cert revoke <serial>': (text) => void parseSerial(text),
  'image base <source>': (text) => void parseBaseSource(text),
};

/** Options whose value is a file or directory (shell completion offers file names). */
export const PATH_OPTIONS: ReadonlySet<string> = new Set([
  '--dir',
  '--out',
  '--data',
  '--identity',
  '--from',
  '--passphrase-file',
  '--csr',
  '--crl',
  '--ca',
  '--untrusted',
]);

/**
 * Options whose value is free text, a path, or something only a CA, a file
 * or the server can judge (names for certificates, serials in a CRL, store
 * URLs): the commands refuse bad ones when they run (exit 1). Options with
 * commander `.choices()` are checked by commander and need no entry.
 */
export const FREE_TEXT: ReadonlySet<string> = new Set([
  ...VMINIT_FREE_TEXT_FLAGS,
  // sigil build: the Dockerfile's path, and build arguments (any text the Dockerfile's ARGs take).
  '--file',
  '--build-arg',
  ...PATH_OPTIONS,
  '--name',
  '--intermediate-name',
  '--client-name',
  '--to',
  '--dns',
  '--ip',
  '--uri',
  '--email',
  '--spiffe-id',
  '--revoke',
  '--permissions',
  '--bridges',
  '--requester',
  '--profile',
  '--page-token',
  '--store',
  '--replica-id',
  '--join',
  '--advertise',
  '--http-advertise',
  '--exec',
]);

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let at: Command | null = command; at?.parent; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

function reason(error: unknown): string {
  if (error instanceof InvalidArgumentError) return error.message;
  if (error instanceof SigilError) return error.message;
  throw error;
}

function wrap<T extends Option | Argument>(target: T, check: Check): void {
  const original = target.parseArg as ((value: string, previous: unknown) => unknown) | undefined;
  target.argParser((value: string, previous: unknown) => {
    try {
      check(value);
    } catch (error) {
      throw new InvalidArgumentError(reason(error));
    }
    return original ? original(value, previous) : value;
  });
}

/** What checkFlagValues would check for this option of `command`; undefined: unchecked. */
export function checkFor(command: Command, option: Option): Check | undefined {
  // Only options that take a value: `pki issue --server` is a switch, `status --server` an address.
  if (!option.long || !(option.required || option.optional)) return undefined;
  const path = commandPath(command);
  return BY_COMMAND[`${path} ${option.long}`] ?? workloadCheck(path, option.long) ?? BY_FLAG[option.long];
}

/** The workload, image and block commands' own flags (workload-flags.ts). */
function workloadCheck(path: string, flag: string): Check | undefined {
  const check = WORKLOAD_COMMAND_GROUPS.has(path.split(' ')[0]) ? WORKLOAD_FLAG_CHECKS[flag] : undefined;
  return check === undefined ? undefined : (text) => void check(text);
}

/** Adds the value checks to every command of `program`. */
export function checkFlagValues(program: Command): void {
  const visit = (command: Command): void => {
    const path = commandPath(command);
    for (const option of command.options) {
      const check = checkFor(command, option);
      if (check) wrap(option, check);
    }
    for (const argument of command.registeredArguments) {
      const check = BY_ARGUMENT[`${path} <${argument.name()}>`];
      if (check) wrap(argument, check);
    }
    for (const sub of command.commands) visit(sub);
  };
  visit(program);
}
