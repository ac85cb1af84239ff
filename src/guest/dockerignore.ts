// .dockerignore, read as Docker reads it (moby/buildkit dockerignore +
// moby/patternmatcher): one pattern a line, surrounding spaces trimmed;
// lines starting with '#' are comments; '!' makes an exception that
// re-includes what earlier patterns excluded; patterns are cleaned and a
// leading '/' dropped (everything is relative to the context root); '*' and
// '?' never cross a '/', '**' crosses any number of directories, '[…]' is a
// class and '\' escapes. The last pattern matching a path (or one of its
// parent directories) decides.
import { constants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { invalid } from '../errors.ts';

export const DOCKERIGNORE_FILE = '.dockerignore';

interface IgnorePattern {
  /** As written after cleaning, for messages. */
  readonly text: string;
  readonly exception: boolean;
  readonly regex: RegExp;
}

export class DockerIgnore {
  readonly #patterns: readonly IgnorePattern[];

  private constructor(patterns: readonly IgnorePattern[]) {
    this.#patterns = patterns;
  }

  /** The patterns of a .dockerignore text; invalid(…) names a line whose pattern is malformed. */
  static parse(text: string): DockerIgnore {
    const patterns: IgnorePattern[] = [];
    text.split(/\r?\n/).forEach((raw, index) => {
      if (raw.startsWith('#')) return;
      let line = raw.trim();
      if (line === '') return;
      const exception = line.startsWith('!');
      if (exception) line = line.slice(1).trim();
      if (line === '') return;
      let cleaned = posix.normalize(line);
      if (cleaned.length > 1 && cleaned.endsWith('/')) cleaned = cleaned.slice(0, -1);
      if (cleaned.length > 1 && cleaned.startsWith('/')) cleaned = cleaned.slice(1);
      try {
        patterns.push({ text: cleaned, exception, regex: compile(cleaned) });
      } catch {
        throw invalid(
          `${DOCKERIGNORE_FILE} line ${index + 1}: malformed pattern ${JSON.stringify(raw.trim())}`,
        );
      }
    });
    return new DockerIgnore(patterns);
  }

  /** The context's .dockerignore, or one that ignores nothing when there is none. Never read through a symlink. */
  static async read(contextDirectory: string): Promise<DockerIgnore> {
    let text: string;
    try {
      text = await readFile(join(contextDirectory, DOCKERIGNORE_FILE), {
        encoding: 'utf8',
        flag: constants.O_RDONLY | constants.O_NOFOLLOW,
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return new DockerIgnore([]);
      if (code === 'ELOOP')
        throw invalid(`${DOCKERIGNORE_FILE}: is a symlink; it must be a file in the context`);
      throw error;
    }
    return DockerIgnore.parse(text);
  }

  /** Whether some pattern is an exception, so that an excluded directory may still hold included files. */
  get hasExceptions(): boolean {
    return this.#patterns.some((pattern) => pattern.exception);
  }

  /** Whether `path` ('/'-separated, relative to the context root) is excluded. The root itself never is. */
  ignores(path: string): boolean {
    const file = posix.normalize(path).replace(/^\/+|\/+$/g, '');
    if (file === '' || file === '.') return false;
    const parents = file.split('/').slice(0, -1);
    let excluded = false;
    for (const pattern of this.#patterns) {
      // A pattern can only change the verdict one way: skip those that would not.
      if (pattern.exception !== excluded) continue;
      let matched = pattern.regex.test(file);
      for (let depth = 1; !matched && depth <= parents.length; depth += 1)
        matched = pattern.regex.test(parents.slice(0, depth).join('/'));
      if (matched) excluded = !pattern.exception;
    }
    return excluded;
  }
}

const REGEX_SPECIAL = new Set(['.', '+', '(', ')', '|', '{', '}', '$', '^']);

/** One character matching itself. */
const literal = (ch: string): string => (/[\\^$.*+?()[\]{}|]/.test(ch) ? `\\${ch}` : ch);

/** A cleaned pattern as an anchored regular expression, following patternmatcher's translation. */
function compile(pattern: string): RegExp {
  let source = '^';
  const chars = [...pattern];
  for (let at = 0; at < chars.length; at += 1) {
    const ch = chars[at];
    if (ch === '*' && chars[at + 1] === '*') {
      at += 1;
      if (chars[at + 1] === '/') at += 1; // '**/' is '**'
      source += at + 1 >= chars.length ? '.*' : '(.*/)?';
    } else if (ch === '*') {
      source += '[^/]*';
    } else if (ch === '?') {
      source += '[^/]';
    } else if (ch === '\\') {
      at += 1;
      source += at < chars.length ? literal(chars[at]) : '\\\\';
    } else if (ch === '[' && chars[at + 1] === '!') {
      source += '[^';
      at += 1;
    } else if (REGEX_SPECIAL.has(ch)) {
      source += `\\${ch}`;
    } else {
      source += ch;
    }
  }
  return new RegExp(`${source}$`, 'u');
}
