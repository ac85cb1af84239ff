// The build commands the bootstrap service hands a guest, in firebuild's JSON
// (combust-labs/firebuild-shared build/commands/commands.go): each element of
// CommandsResponse.command is the JSON of one Run, Add or Copy, and the guest
// tells them apart by the prefix of OriginalCommand ("RUN", "ADD", "COPY").
// The Dockerfile compiler writes these, the bootstrap service serves them and
// vminit parses them back, so all three share this one definition.
import { invalid } from '../errors.ts';

export interface WorkdirValue {
  readonly OriginalCommand: string;
  readonly Value: string;
}

export interface UserValue {
  readonly OriginalCommand: string;
  /** "uid[:gid]" or a name; "0:0" is firebuild's default. */
  readonly Value: string;
}

export interface ShellValue {
  readonly OriginalCommand: string;
  /** argv prefix, e.g. ["/bin/sh", "-c"]. */
  readonly Commands: readonly string[];
}

export interface RunCommand {
  readonly OriginalCommand: string;
  /** Build arguments in scope (ARG), expanded into Command with Env. */
  readonly Args: Readonly<Record<string, string>>;
  readonly Command: string;
  readonly Env: Readonly<Record<string, string>>;
  readonly Shell: ShellValue;
  readonly Workdir: WorkdirValue;
  readonly User: UserValue;
}

export interface AddCommand {
  readonly OriginalCommand: string;
  readonly OriginalSource: string;
  /** The resource path the guest asks the bootstrap service for. */
  readonly Source: string;
  readonly Target: string;
  readonly Workdir: WorkdirValue;
  readonly User: UserValue;
  /** From `--chown=`; null when absent. */
  readonly UserFromLocalChown: UserValue | null;
}

export interface CopyCommand extends AddCommand {
  /** The stage a `COPY --from` reads; "" for the build context. */
  readonly Stage: string;
}

export type BuildCommand =
  | { readonly kind: 'run'; readonly command: RunCommand }
  | { readonly kind: 'add'; readonly command: AddCommand }
  | { readonly kind: 'copy'; readonly command: CopyCommand };

export const DEFAULT_SHELL: readonly string[] = Object.freeze(['/bin/sh', '-c']);
export const DEFAULT_USER = '0:0';
export const DEFAULT_WORKDIR = '/';
/** Commands larger than this are refused by the parser (one message is at most 4 MiB anyway). */
export const MAX_COMMAND_JSON_BYTES = 1024 * 1024;

/** The JSON element for CommandsResponse.command. */
export function serializeBuildCommand(command: BuildCommand): string {
  return JSON.stringify(command.command);
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function stringField(object: Record<string, unknown>, key: string, where: string): string {
  const value = object[key];
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw invalid(`${where}: ${key} must be a string`);
  return value;
}

function stringMap(object: Record<string, unknown>, key: string, where: string): Record<string, string> {
  const value = object[key];
  if (value === undefined || value === null) return {};
  if (!isObject(value)) throw invalid(`${where}: ${key} must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [name, item] of Object.entries(value)) {
    if (typeof item !== 'string') throw invalid(`${where}: ${key}.${name} must be a string`);
    out[name] = item;
  }
  return out;
}

function valueField(object: Record<string, unknown>, key: string, where: string, fallback: string) {
  const value = object[key];
  if (value === undefined || value === null) return { OriginalCommand: '', Value: fallback };
  if (!isObject(value)) throw invalid(`${where}: ${key} must be an object`);
  const text = stringField(value, 'Value', `${where}.${key}`);
  return {
    OriginalCommand: stringField(value, 'OriginalCommand', `${where}.${key}`),
    Value: text || fallback,
  };
}

function shellField(object: Record<string, unknown>, where: string): ShellValue {
  const value = object.Shell;
  if (value === undefined || value === null) return { OriginalCommand: '', Commands: DEFAULT_SHELL };
  if (!isObject(value)) throw invalid(`${where}: Shell must be an object`);
  const commands = value.Commands ?? [];
  if (!Array.isArray(commands) || commands.some((item) => typeof item !== 'string'))
    throw invalid(`${where}: Shell.Commands must be a list of strings`);
  return {
    OriginalCommand: stringField(value, 'OriginalCommand', `${where}.Shell`),
    Commands: commands.length > 0 ? (commands as string[]) : DEFAULT_SHELL,
  };
}

/** One element of CommandsResponse.command, checked; refuses anything that is not RUN, ADD or COPY. */
export function parseBuildCommand(json: string, index = 0): BuildCommand {
  const where = `command ${index + 1}`;
  if (Buffer.byteLength(json) > MAX_COMMAND_JSON_BYTES)
    throw invalid(`${where}: larger than ${MAX_COMMAND_JSON_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw invalid(`${where}: not JSON`);
  }
  if (!isObject(parsed)) throw invalid(`${where}: not a JSON object`);
  const original = stringField(parsed, 'OriginalCommand', where);
  const keyword = /^\s*([A-Za-z]+)/.exec(original)?.[1]?.toUpperCase() ?? '';
  const workdir = valueField(parsed, 'Workdir', where, DEFAULT_WORKDIR);
  const user = valueField(parsed, 'User', where, DEFAULT_USER);
  if (keyword === 'RUN') {
    return {
      kind: 'run',
      command: {
        OriginalCommand: original,
        Args: stringMap(parsed, 'Args', where),
        Command: stringField(parsed, 'Command', where),
        Env: stringMap(parsed, 'Env', where),
        Shell: shellField(parsed, where),
        Workdir: workdir,
        User: user,
      },
    };
  }
  if (keyword === 'ADD' || keyword === 'COPY') {
    const chown = parsed.UserFromLocalChown;
    const add: AddCommand = {
      OriginalCommand: original,
      OriginalSource: stringField(parsed, 'OriginalSource', where),
      Source: stringField(parsed, 'Source', where),
      Target: stringField(parsed, 'Target', where),
      Workdir: workdir,
      User: user,
      UserFromLocalChown:
        chown === undefined || chown === null ? null : valueField(parsed, 'UserFromLocalChown', where, ''),
    };
    if (add.Source === '') throw invalid(`${where}: ${keyword} without a Source`);
    if (add.Target === '') throw invalid(`${where}: ${keyword} without a Target`);
    if (keyword === 'ADD') return { kind: 'add', command: add };
    return { kind: 'copy', command: { ...add, Stage: stringField(parsed, 'Stage', where) } };
  }
  throw invalid(`${where}: OriginalCommand ${JSON.stringify(original.slice(0, 40))} is not RUN, ADD or COPY`);
}

/** What the bootstrap service streams for one resource path: a directory or a file, in firebuild's header shape. */
export interface ResourceEntry {
  /** Path relative to the resource root (the context, or a stage's root), '/'-separated. */
  readonly sourcePath: string;
  /** Where the guest writes it, relative to targetWorkdir (firebuild's targetPath). */
  readonly targetPath: string;
  /** Permission bits (and type bits for a directory, as Go's os.FileMode would have them). */
  readonly fileMode: number;
  readonly isDir: boolean;
  readonly targetUser: string;
  readonly targetWorkdir: string;
  /** The file's bytes, read when streamed; absent for directories. */
  readonly read?: () => AsyncIterable<Buffer>;
}

/**
 * Finds what a resource request names. `stage` is "" for the build context.
 * Returns null when nothing exists there (the service answers NOT_FOUND);
 * throws SigilError invalid/permission_denied for a path that leaves the root.
 */
export type ResourceResolver = (path: string, stage: string) => Promise<readonly ResourceEntry[] | null>;
