// Docker's word processing for the instructions it expands variables in
// (ENV, LABEL, WORKDIR, USER, ADD, COPY, EXPOSE, VOLUME, STOPSIGNAL, FROM):
// quotes, the escape character, and $VAR / ${VAR} / ${VAR:-word} /
// ${VAR:+word} (with or without the colon), as BuildKit's shell lexer does
// it. RUN is not expanded here: its text goes to the guest with Args and Env.
import { invalid } from '../errors.ts';

/** A variable's value, or undefined when it is not set. */
export type VariableLookup = (name: string) => string | undefined;

export interface WordOptions {
  /** The Dockerfile's escape character: '\\' unless a `# escape=` directive says '`'. */
  readonly escape: string;
  /** Whether quotes are syntax (shell form) or plain characters (a JSON-form element). */
  readonly quotes: boolean;
}

const NAME_START = /[A-Za-z_]/;
const NAME_CHAR = /[A-Za-z0-9_]/;

/** `raw` with its quotes and escapes removed and its variables expanded; throws invalid(`where: …`). */
export function expandWord(raw: string, lookup: VariableLookup, options: WordOptions, where: string): string {
  return new WordReader(raw, lookup, options, where).word();
}

class WordReader {
  #at = 0;
  readonly #text: string;
  readonly #lookup: VariableLookup;
  readonly #options: WordOptions;
  readonly #where: string;

  constructor(text: string, lookup: VariableLookup, options: WordOptions, where: string) {
    this.#text = text;
    this.#lookup = lookup;
    this.#options = options;
    this.#where = where;
  }

  /** Reads up to the end, or (inside ${…}) up to the unmatched '}'. */
  word(stopAtBrace = false): string {
    let out = '';
    const text = this.#text;
    const escapeChar = this.#options.escape;
    while (this.#at < text.length) {
      const ch = text[this.#at];
      if (stopAtBrace && ch === '}') return out;
      if (ch === escapeChar && this.#options.quotes) {
        this.#at += 1;
        if (this.#at < text.length) out += text[this.#at++];
        continue;
      }
      if (ch === "'" && this.#options.quotes) {
        out += this.#singleQuoted();
        continue;
      }
      if (ch === '"' && this.#options.quotes) {
        out += this.#doubleQuoted();
        continue;
      }
      if (ch === '$') {
        out += this.#variable();
        continue;
      }
      out += ch;
      this.#at += 1;
    }
    if (stopAtBrace) throw invalid(`${this.#where}: missing '}' in ${JSON.stringify(text)}`);
    return out;
  }

  #singleQuoted(): string {
    const end = this.#text.indexOf("'", this.#at + 1);
    if (end === -1) throw invalid(`${this.#where}: unmatched ' in ${JSON.stringify(this.#text)}`);
    const inside = this.#text.slice(this.#at + 1, end);
    this.#at = end + 1;
    return inside;
  }

  #doubleQuoted(): string {
    const text = this.#text;
    const escapeChar = this.#options.escape;
    let out = '';
    this.#at += 1;
    while (this.#at < text.length) {
      const ch = text[this.#at];
      if (ch === '"') {
        this.#at += 1;
        return out;
      }
      if (ch === escapeChar) {
        const next = text[this.#at + 1];
        // Inside double quotes the escape only protects `"`, `$` and itself.
        if (next === '"' || next === '$' || next === escapeChar) {
          out += next;
          this.#at += 2;
          continue;
        }
      }
      if (ch === '$') {
        out += this.#variable();
        continue;
      }
      out += ch;
      this.#at += 1;
    }
    throw invalid(`${this.#where}: unmatched " in ${JSON.stringify(text)}`);
  }

  /** At a '$': the expansion, or a literal '$' when no name follows. */
  #variable(): string {
    const text = this.#text;
    this.#at += 1;
    if (text[this.#at] === '{') {
      this.#at += 1;
      const name = this.#name();
      if (name === '') throw invalid(`${this.#where}: bad substitution in ${JSON.stringify(text)}`);
      const value = this.#lookup(name);
      if (text[this.#at] === '}') {
        this.#at += 1;
        return value ?? '';
      }
      const colon = text[this.#at] === ':';
      if (colon) this.#at += 1;
      const operator = text[this.#at];
      if (operator !== '-' && operator !== '+' && operator !== '?')
        throw invalid(`${this.#where}: unsupported modifier in ${JSON.stringify(text)}`);
      this.#at += 1;
      const word = this.word(true);
      this.#at += 1; // the '}'
      const set = colon ? value !== undefined && value !== '' : value !== undefined;
      if (operator === '-') return set ? (value as string) : word;
      if (operator === '+') return set ? word : '';
      if (!set) throw invalid(`${this.#where}: ${name}: ${word || 'is not set'}`);
      return value as string;
    }
    if (!NAME_START.test(text[this.#at] ?? '')) return '$';
    return this.#lookup(this.#name()) ?? '';
  }

  #name(): string {
    const start = this.#at;
    while (this.#at < this.#text.length && NAME_CHAR.test(this.#text[this.#at])) this.#at += 1;
    return this.#text.slice(start, this.#at);
  }
}

/** One argument as POSIX shell text, always single-quoted. */
export function singleQuote(argument: string): string {
  return `'${argument.replaceAll("'", "'\\''")}'`;
}

export { shellQuote } from './shell-quote.ts';
