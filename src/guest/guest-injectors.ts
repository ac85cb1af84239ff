// vminit's normal mode (firebuild-mmds injectors/*.go): from the metadata
// document, append the users' SSH keys to their existing authorized_keys,
// write the env file, /etc/hostname, /etc/hosts and the entrypoint runner
// script. Every path is a guest path resolved under `root` (guest-paths.ts).
//
// Where sigil differs from firebuild, on purpose: files are truncated before
// writing (firebuild's env and hostname writes could leave old bytes behind);
// values in generated scripts are quoted so the shell reads them verbatim; a
// key already in authorized_keys is not appended again (vminit runs at every
// boot); users with no keys are skipped; a missing /etc/hostname or
// /etc/hosts is created; output is in a fixed order (firebuild iterated Go
// maps); the runner `exec`s the entrypoint, so it gets the runner's signals;
// and it runs CMD alone when there is no ENTRYPOINT, as Docker does.
import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { posix } from 'node:path';
import { invalid, notFound, SigilError } from '../errors.ts';
import { resolveInGuest } from './guest-paths.ts';
import type { MetadataDocument } from './metadata-document.ts';
import { checkVariableName, doubleQuote, shellQuote } from './shell-quote.ts';

export interface InjectorPaths {
  /** `%s` is the user name. */
  readonly authorizedKeysPattern: string;
  readonly entrypointRunnerFile: string;
  readonly envFile: string;
  readonly hostnameFile: string;
  readonly hostsFile: string;
}

/** firebuild's defaults (cmd/vminit/main.go). */
export const DEFAULT_INJECTOR_PATHS: InjectorPaths = Object.freeze({
  authorizedKeysPattern: '/home/%s/.ssh/authorized_keys',
  entrypointRunnerFile: '/usr/bin/firebuild-entrypoint.sh',
  envFile: '/etc/profile.d/run-env.sh',
  hostnameFile: '/etc/hostname',
  hostsFile: '/etc/hosts',
});

/** The /etc/hosts lines every guest gets, in this order (firebuild's defaultHosts). */
export const DEFAULT_HOSTS: readonly (readonly [string, string])[] = [
  ['127.0.0.1', 'localhost'],
  ['::1', 'localhost ip6-localhost ip6-loopback'],
  ['fe00::0', 'ip6-localnet'],
  ['ff00::0', 'ip6-mcastprefix'],
  ['ff02::1', 'ip6-allnodes'],
  ['ff02::2', 'ip6-allrouters'],
];

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const USER_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
const DEFAULT_SHELL = ['/bin/sh', '-c'];

/** The host path of guest file `path`, refusing anything there that is not a regular file. */
async function regularFile(
  root: string,
  path: string,
  mustExist: boolean,
): Promise<{ onHost: string; exists: boolean }> {
  const onHost = await resolveInGuest(root, path);
  try {
    if (!(await lstat(onHost)).isFile()) throw invalid(`${path} is not a regular file`);
    return { onHost, exists: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    if (mustExist) throw notFound(`${path} does not exist`);
    return { onHost, exists: false };
  }
}

/** Writes `content` to guest file `path` in place (it may be a bind mount): parents 0755, `mode` when created. */
async function writeGuestText(root: string, path: string, content: string, mode: number): Promise<void> {
  await mkdir(await resolveInGuest(root, posix.dirname(path)), { recursive: true, mode: 0o755 });
  const { onHost } = await regularFile(root, path, false);
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  const handle = await open(onHost, flags, mode);
  try {
    await handle.writeFile(content);
  } finally {
    await handle.close();
  }
}

/** The authorized_keys of each user with keys, the new keys appended; returns the files changed. */
export async function injectSshKeys(
  document: MetadataDocument,
  pattern: string,
  root: string,
): Promise<string[]> {
  const changed: string[] = [];
  for (const name of Object.keys(document.Users).sort()) {
    const keys = String(document.Users[name]?.SSHKeys ?? '')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '');
    if (keys.length === 0) continue;
    if (!USER_NAME.test(name)) throw invalid(`Users: ${JSON.stringify(name)} is not a valid user name`);
    const path = pattern.replace('%s', name);
    const { onHost } = await regularFile(root, path, true);
    const existing = await readFile(onHost, 'utf8');
    const present = new Set(existing.split('\n').map((line) => line.trim()));
    const added = keys.filter((key) => !present.has(key));
    if (added.length === 0) continue;
    const separator = existing === '' || existing.endsWith('\n') ? '' : '\n';
    const handle = await open(onHost, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
    try {
      await handle.writeFile(`${separator}${added.join('\n')}\n`);
    } finally {
      await handle.close();
    }
    changed.push(path);
  }
  return changed;
}

/** The env file: one `export NAME="value"` a line, values escaped for double quotes. */
export function envFileContent(env: Readonly<Record<string, string>>): string {
  return Object.entries(env)
    .map(([name, value]) => `export ${checkVariableName(name, 'Env')}=${doubleQuote(value)}\n`)
    .join('');
}

export async function injectEnvironment(
  document: MetadataDocument,
  envFile: string,
  root: string,
): Promise<string[]> {
  if (Object.keys(document.Env).length === 0) return [];
  await writeGuestText(root, envFile, envFileContent(document.Env), 0o644);
  return [envFile];
}

function checkHostname(hostname: string): string {
  if (!HOSTNAME.test(hostname))
    throw invalid(`LocalHostname ${JSON.stringify(hostname.slice(0, 64))} is not a valid host name`);
  return hostname;
}

export async function injectHostname(
  document: MetadataDocument,
  hostnameFile: string,
  root: string,
): Promise<string[]> {
  if (document.LocalHostname === '') return [];
  await writeGuestText(root, hostnameFile, `${checkHostname(document.LocalHostname)}\n`, 0o644);
  return [hostnameFile];
}

/** /etc/hosts: the defaults, then `IP<TAB>hostname` for each interface (by MAC); without interfaces the hostname is localhost's. */
export function hostsFileContent(document: MetadataDocument): string {
  const hostname = document.LocalHostname === '' ? '' : checkHostname(document.LocalHostname);
  const interfaces = Object.keys(document.Network.Interfaces ?? {})
    .sort()
    .map((mac) => String(document.Network.Interfaces[mac]?.IP ?? ''))
    .filter((ip) => ip !== '');
  for (const ip of interfaces)
    if (isIP(ip) === 0)
      throw invalid(`Network: interface address ${JSON.stringify(ip)} is not an IP address`);
  const lines = DEFAULT_HOSTS.map(([ip, names]) =>
    hostname !== '' && interfaces.length === 0 && (ip === '127.0.0.1' || ip === '::1')
      ? `${ip}\t${names} ${hostname}`
      : `${ip}\t${names}`,
  );
  if (hostname !== '') for (const ip of new Set(interfaces)) lines.push(`${ip}\t${hostname}`);
  return `${lines.join('\n')}\n`;
}

export async function injectHosts(
  document: MetadataDocument,
  hostsFile: string,
  root: string,
): Promise<string[]> {
  await writeGuestText(root, hostsFile, hostsFileContent(document), 0o644);
  return [hostsFile];
}

/** firebuild's EntrypointJSON: {Cmd, EntryPoint, Env, Shell, User, Workdir}. */
export interface EntrypointInfo {
  readonly Cmd: readonly string[];
  readonly EntryPoint: readonly string[];
  readonly Env: Readonly<Record<string, string>>;
  readonly Shell: readonly string[];
  readonly User: string;
  readonly Workdir: string;
}

export function parseEntrypointInfo(json: string): EntrypointInfo {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw invalid('EntrypointJSON is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw invalid('EntrypointJSON is not a JSON object');
  const object = parsed as Record<string, unknown>;
  const list = (key: string): string[] => {
    const value = object[key] ?? [];
    if (!Array.isArray(value) || value.some((item) => typeof item !== 'string'))
      throw invalid(`EntrypointJSON: ${key} must be a list of strings`);
    return value as string[];
  };
  const text = (key: string): string => {
    const value = object[key] ?? '';
    if (typeof value !== 'string') throw invalid(`EntrypointJSON: ${key} must be a string`);
    return value;
  };
  const env = object.Env ?? {};
  if (
    typeof env !== 'object' ||
    env === null ||
    Array.isArray(env) ||
    Object.values(env).some((value) => typeof value !== 'string')
  )
    throw invalid('EntrypointJSON: Env must be an object of strings');
  return {
    Cmd: list('Cmd'),
    EntryPoint: list('EntryPoint'),
    Env: env as Record<string, string>,
    Shell: list('Shell'),
    User: text('User'),
    Workdir: text('Workdir'),
  };
}

/** The runner script, in firebuild's shape: `#!/bin/sh`, then SHELL running env, the env file, PATH, cd and the entrypoint; null when there is nothing to run. */
export function entrypointRunnerContent(info: EntrypointInfo, envFile: string): string | null {
  const argv = [...info.EntryPoint, ...info.Cmd];
  if (argv.length === 0) return null;
  const workdir = info.Workdir || '/';
  const exports = Object.entries(info.Env)
    .map(([name, value]) => `export ${checkVariableName(name, 'EntrypointJSON Env')}=${shellQuote(value)}; `)
    .join('');
  const env = shellQuote(envFile);
  const inner =
    `${exports}if [ -f ${env} ]; then . ${env}; fi; ` +
    `export PATH=$PATH:${shellQuote(workdir)}; cd ${shellQuote(workdir)} && exec ${argv.map(shellQuote).join(' ')}`;
  const shell = (info.Shell.length > 0 ? info.Shell : DEFAULT_SHELL).map(shellQuote).join(' ');
  return `#!/bin/sh\n\n${shell} ${shellQuote(inner)}\n`;
}

export async function injectEntrypointRunner(
  document: MetadataDocument,
  runnerFile: string,
  envFile: string,
  root: string,
): Promise<string[]> {
  if (document.EntrypointJSON === '') return [];
  const content = entrypointRunnerContent(parseEntrypointInfo(document.EntrypointJSON), envFile);
  if (content === null) return [];
  await writeGuestText(root, runnerFile, content, 0o755);
  await chmod(await resolveInGuest(root, runnerFile), 0o755);
  return [runnerFile];
}

/** Every injector, in firebuild's order; returns the guest files written. Fails on the first that fails, naming it. */
export async function injectAll(
  document: MetadataDocument,
  paths: InjectorPaths,
  root: string,
): Promise<string[]> {
  const steps: [string, () => Promise<string[]>][] = [
    ['SSH keys', () => injectSshKeys(document, paths.authorizedKeysPattern, root)],
    ['environment', () => injectEnvironment(document, paths.envFile, root)],
    ['hostname', () => injectHostname(document, paths.hostnameFile, root)],
    ['hosts', () => injectHosts(document, paths.hostsFile, root)],
    [
      'entrypoint runner',
      () => injectEntrypointRunner(document, paths.entrypointRunnerFile, paths.envFile, root),
    ],
  ];
  const written: string[] = [];
  for (const [what, step] of steps) {
    try {
      written.push(...(await step()));
    } catch (error) {
      const cause =
        error instanceof SigilError
          ? error
          : new SigilError('internal', String((error as Error).message ?? error));
      throw new SigilError(cause.code, `injecting ${what}: ${cause.message}`, { cause: error });
    }
  }
  return written;
}
