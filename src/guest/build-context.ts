// The files a build's ADD and COPY read: the build context directory (stage
// "") and, for `COPY --from`, the root directories of earlier stages. A
// request names a path relative to one of those roots; whatever it reaches
// must stay inside that root, lexically ('..', absolute paths) and through
// symlinks (checked on the real path), and nothing .dockerignore excludes is
// ever served. A directory is served as one entry per directory and file,
// as firebuild's directory walk does; a '*' or '?' in the last path element
// is a glob. Where each entry goes (target path, workdir, owner) comes from
// the ADD/COPY command that asked for it.
import { constants, type Dirent, type Stats } from 'node:fs';
import { open, readdir, realpath, stat } from 'node:fs/promises';
import { join, posix, sep } from 'node:path';
import { invalid, SigilError } from '../errors.ts';
import type { AddCommand, BuildCommand, ResourceEntry, ResourceResolver } from './build-commands.ts';
import { DockerIgnore } from './dockerignore.ts';

/** Go's os.ModeDir, set in a directory entry's fileMode as firebuild's os.FileMode would carry it. */
export const GO_MODE_DIR = 0x80000000;
/** More entries than this for one request is refused (a context that large is a mistake). */
export const MAX_ENTRIES_PER_RESOURCE = 100_000;
const MAX_PATH_LENGTH = 4096;

/** Where a command's files go, as each ResourceEntry carries it. */
export interface ResourceTarget {
  readonly targetPath: string;
  readonly targetWorkdir: string;
  readonly targetUser: string;
}

/** The target of an ADD/COPY: its Target, its WORKDIR, and `--chown`'s user else the USER in effect (as firebuild). */
export function targetOf(command: AddCommand): ResourceTarget {
  return {
    targetPath: command.Target,
    targetWorkdir: command.Workdir.Value,
    targetUser: command.UserFromLocalChown?.Value || command.User.Value,
  };
}

const quoted = (path: string): string => JSON.stringify(path.length > 120 ? `${path.slice(0, 120)}…` : path);
const denied = (message: string): SigilError => new SigilError('permission_denied', message);
const isMissing = (error: unknown): boolean =>
  ['ENOENT', 'ENOTDIR'].includes((error as NodeJS.ErrnoException).code ?? '');

interface Root {
  /** The root's real path (no symlinks), the containment boundary. */
  readonly real: string;
  /** The context's .dockerignore; stage roots have none. */
  readonly ignore: DockerIgnore | null;
  readonly label: string;
}

export class BuildContext {
  readonly #roots = new Map<string, Root>();

  private constructor(context: Root) {
    this.#roots.set('', context);
  }

  /** The context at `directory`, with its .dockerignore. */
  static async open(directory: string): Promise<BuildContext> {
    const real = await realDirectory(directory, 'build context');
    return new BuildContext({ real, ignore: await DockerIgnore.read(real), label: 'the build context' });
  }

  /** Serves `directory` as the files of stage `stage` (a `COPY --from` source). */
  async addStage(stage: string, directory: string): Promise<void> {
    if (stage === '') throw invalid('stage root: the stage needs a name');
    if (this.#roots.has(stage)) throw invalid(`stage root: ${quoted(stage)} is already registered`);
    const real = await realDirectory(directory, `stage ${quoted(stage)} root`);
    this.#roots.set(stage, { real, ignore: null, label: `stage ${quoted(stage)}` });
  }

  /**
   * The entries `path` names in `stage`'s root, going to `target`; null when nothing
   * (not excluded) is there. Refuses permission_denied for a path leaving the root.
   */
  async entries(path: string, stage: string, target: ResourceTarget): Promise<ResourceEntry[] | null> {
    const root = this.#roots.get(stage);
    const relative = checkedPath(path, stage, root?.label ?? `stage ${quoted(stage)}`);
    if (root === undefined) return null;
    const slash = relative.lastIndexOf('/');
    const directory = slash === -1 ? '.' : relative.slice(0, slash);
    const last = relative.slice(slash + 1);
    if (/[*?[\]]/.test(directory))
      throw invalid(`resource ${quoted(path)}: wildcards are supported only in the last path element`);
    if (last.includes('[') || last.includes(']'))
      throw invalid(`resource ${quoted(path)}: character classes ([…]) are not supported`);
    const walk = new Walk(root, path, target);
    if (/[*?]/.test(last)) await walk.glob(directory, last);
    else await walk.source(relative);
    return walk.found.length === 0 ? null : walk.found;
  }

  /**
   * A resolver for the bootstrap service serving `commands`: a request must name the Source (and
   * Stage) of one of them, and gets that command's target. When several commands name the same
   * source, requests take their targets in command order (the guest asks once per command).
   */
  resolverFor(commands: readonly BuildCommand[]): ResourceResolver {
    const targets = new Map<string, ResourceTarget[]>();
    for (const command of commands) {
      if (command.kind === 'run') continue;
      const stage = command.kind === 'copy' ? command.command.Stage : '';
      const key = `${stage}\0${command.command.Source}`;
      targets.set(key, [...(targets.get(key) ?? []), targetOf(command.command)]);
    }
    const asked = new Map<string, number>();
    return async (path, stage) => {
      checkedPath(path, stage, this.#roots.get(stage)?.label ?? `stage ${quoted(stage)}`);
      const key = `${stage}\0${path}`;
      const list = targets.get(key);
      if (list === undefined) return null;
      const times = asked.get(key) ?? 0;
      asked.set(key, times + 1);
      return this.entries(path, stage, list[Math.min(times, list.length - 1)]);
    };
  }
}

async function realDirectory(directory: string, what: string): Promise<string> {
  let real: string;
  try {
    real = await realpath(directory);
  } catch (error) {
    if (isMissing(error)) throw new SigilError('not_found', `${what} ${quoted(directory)} does not exist`);
    throw error;
  }
  if (!(await stat(real)).isDirectory()) throw invalid(`${what} ${quoted(directory)} is not a directory`);
  return real;
}

/**
 * `path` normalized relative to its root ('.' for the root itself); refuses one that is empty,
 * absolute in the build context, or that leaves the root with '..'. A stage's paths are inside
 * its own filesystem, so a leading '/' there means its root.
 */
function checkedPath(path: string, stage: string, label: string): string {
  if (typeof path !== 'string' || path === '') throw invalid('resource: the path is empty');
  if (path.length > MAX_PATH_LENGTH) throw invalid(`resource: the path is longer than ${MAX_PATH_LENGTH}`);
  if (path.includes('\0')) throw invalid('resource: the path contains a NUL byte');
  if (stage === '' && path.startsWith('/'))
    throw denied(`resource ${quoted(path)}: absolute paths are refused; name files relative to ${label}`);
  const relative = posix.normalize(path.replace(/^\/+/, '')).replace(/\/+$/, '') || '.';
  if (relative === '..' || relative.startsWith('../'))
    throw denied(`resource ${quoted(path)}: leaves ${label} through '..'`);
  return relative;
}

const contains = (root: string, real: string): boolean => real === root || real.startsWith(root + sep);

/** One request's walk: collects entries, refusing anything whose real path leaves the root. */
class Walk {
  readonly found: ResourceEntry[] = [];
  readonly #root: Root;
  readonly #asked: string;
  readonly #target: ResourceTarget;
  /** Real paths of the directories being walked (the current branch), so a symlink loop ends. */
  readonly #ancestors = new Set<string>();

  constructor(root: Root, asked: string, target: ResourceTarget) {
    this.#root = root;
    this.#asked = asked;
    this.#target = target;
  }

  async glob(directory: string, pattern: string): Promise<void> {
    const real = await this.#real(directory);
    if (real === null || !(await stat(real)).isDirectory() || this.#ignored(directory)) return;
    const matcher = globRegex(pattern);
    const names = (await readdir(real)).filter((name) => matcher.test(name)).sort();
    for (const name of names) await this.source(directory === '.' ? name : `${directory}/${name}`);
  }

  /** A file or directory the request names directly (or through a glob match). */
  async source(relative: string): Promise<void> {
    const real = await this.#real(relative);
    if (real === null) return;
    const ignored = this.#ignored(relative) || this.#ignored(this.#relativeOf(real));
    const stats = await stat(real);
    // An excluded directory is still entered when an exception could re-include something in it.
    if (stats.isDirectory()) {
      if (!ignored || this.#root.ignore?.hasExceptions) await this.#directory(real, relative, '');
    } else if (!ignored) this.#file(real, stats, relative, this.#target.targetPath);
  }

  async #directory(real: string, sourcePath: string, below: string): Promise<void> {
    if (this.#ancestors.has(real)) return;
    this.#ancestors.add(real);
    const excluded = this.#ignored(sourcePath);
    if (!excluded) {
      const stats = await stat(real);
      this.#push({
        ...this.#entryBase(sourcePath, below),
        fileMode: GO_MODE_DIR | (stats.mode & 0o777),
        isDir: true,
      });
    }
    const children = (await readdir(real, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    );
    for (const child of children) await this.#child(real, sourcePath, below, child);
    this.#ancestors.delete(real);
  }

  async #child(parentReal: string, parentSource: string, parentBelow: string, child: Dirent): Promise<void> {
    const sourcePath = parentSource === '.' ? child.name : `${parentSource}/${child.name}`;
    const below = parentBelow === '' ? child.name : `${parentBelow}/${child.name}`;
    const ignored = this.#ignored(sourcePath);
    // An excluded directory is still entered when an exception could re-include something in it.
    if (ignored && !(child.isDirectory() && this.#root.ignore?.hasExceptions)) return;
    let real = join(parentReal, child.name);
    if (child.isSymbolicLink()) {
      const resolved = await this.#real(sourcePath);
      if (resolved === null) return; // a dangling link: nothing to serve
      if (this.#ignored(this.#relativeOf(resolved))) return;
      real = resolved;
    }
    const stats = await stat(real);
    if (stats.isDirectory()) await this.#directory(real, sourcePath, below);
    else if (!ignored) this.#file(real, stats, sourcePath, posix.join(this.#target.targetPath, below));
  }

  #file(real: string, stats: Stats, sourcePath: string, targetPath: string): void {
    if (!stats.isFile())
      throw invalid(
        `resource ${quoted(this.#asked)}: ${quoted(sourcePath)} is not a regular file or directory`,
      );
    this.#push({
      sourcePath,
      targetPath,
      fileMode: stats.mode & 0o777,
      isDir: false,
      targetUser: this.#target.targetUser,
      targetWorkdir: this.#target.targetWorkdir,
      read: () => readUnchanged(real, stats, sourcePath),
    });
  }

  #entryBase(sourcePath: string, below: string) {
    return {
      sourcePath,
      targetPath: below === '' ? this.#target.targetPath : posix.join(this.#target.targetPath, below),
      targetUser: this.#target.targetUser,
      targetWorkdir: this.#target.targetWorkdir,
    };
  }

  #push(entry: ResourceEntry): void {
    if (this.found.length >= MAX_ENTRIES_PER_RESOURCE)
      throw new SigilError(
        'resource_exhausted',
        `resource ${quoted(this.#asked)}: more than ${MAX_ENTRIES_PER_RESOURCE} files and directories`,
      );
    this.found.push(entry);
  }

  /** The real path of `relative` under the root; null when missing; refused when it resolves outside. */
  async #real(relative: string): Promise<string | null> {
    let real: string;
    try {
      real = await realpath(join(this.#root.real, relative));
    } catch (error) {
      if (isMissing(error) || (error as NodeJS.ErrnoException).code === 'ELOOP') return null;
      throw error;
    }
    if (!contains(this.#root.real, real))
      throw denied(
        `resource ${quoted(this.#asked)}: ${quoted(relative)} leads outside ${this.#root.label} through a symlink`,
      );
    return real;
  }

  #relativeOf(real: string): string {
    return real === this.#root.real
      ? '.'
      : real
          .slice(this.#root.real.length + 1)
          .split(sep)
          .join('/');
  }

  #ignored(relative: string): boolean {
    return this.#root.ignore?.ignores(relative) ?? false;
  }
}

/** A last path element with '*' and '?' as a whole-name matcher ('*' and '?' never match '/'). */
function globRegex(pattern: string): RegExp {
  const source = [...pattern]
    .map((ch) => (ch === '*' ? '[^/]*' : ch === '?' ? '[^/]' : ch.replace(/[\\^$.+()|{}]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`, 'u');
}

/**
 * The file's bytes, opened without following a final symlink and only if it is still the
 * file that was checked (same device and inode): a swap after the check is refused.
 */
async function* readUnchanged(real: string, checked: Stats, sourcePath: string): AsyncGenerator<Buffer> {
  const handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const now = await handle.stat();
    if (!now.isFile() || now.dev !== checked.dev || now.ino !== checked.ino)
      throw denied(`resource ${quoted(sourcePath)}: changed after it was checked`);
    for await (const chunk of handle.createReadStream({ autoClose: false, start: 0 })) yield chunk as Buffer;
  } finally {
    await handle.close();
  }
}
