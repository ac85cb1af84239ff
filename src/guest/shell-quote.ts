// Values written into shell scripts vminit generates (the RUN script, the env
// file, the entrypoint runner): quoted so the shell reads them back verbatim,
// whatever they hold. Names are checked, never quoted.
import { invalid } from '../errors.ts';

const BARE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;
const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `text` as one shell word: bare when that is safe, else in single quotes. */
export function shellQuote(text: string): string {
  if (BARE_WORD.test(text)) return text;
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** `text` inside double quotes with everything the shell would expand there escaped. */
export function doubleQuote(text: string): string {
  return `"${text.replace(/[\\"$`]/g, (char) => `\\${char}`)}"`;
}

/** `name` if the shell accepts it as a variable name; invalid_argument otherwise. */
export function checkVariableName(name: string, where: string): string {
  if (!VARIABLE_NAME.test(name))
    throw invalid(`${where}: ${JSON.stringify(name)} is not a valid variable name`);
  return name;
}
