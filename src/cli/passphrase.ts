// Where CA passphrases come from: --passphrase-file FILE (its first line,
// trailing newline stripped) or else the SIGIL_CA_PASSPHRASE environment
// variable. A passphrase is never echoed, logged or put in an error message.
import { invalid } from '../errors.ts';
import { readInputFile } from '../files/file-sets.ts';

export const PASSPHRASE_ENV = 'SIGIL_CA_PASSPHRASE';

/** The passphrase in `file`: its first line without the line ending; empty is refused. */
export function readPassphraseFile(file: string): string {
  const text = readInputFile(file, 'passphrase file').toString('utf8');
  const firstLine = text.split(/\r?\n/, 1)[0] ?? '';
  if (firstLine.length === 0)
    throw invalid(`passphrase file ${file} is empty (the first line is the passphrase)`);
  return firstLine;
}

/** --passphrase-file wins over SIGIL_CA_PASSPHRASE; undefined when neither is given. */
export function passphraseFrom(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (file !== undefined) return readPassphraseFile(file);
  const fromEnv = env[PASSPHRASE_ENV];
  if (fromEnv === undefined) return undefined;
  if (fromEnv.length === 0) throw invalid(`${PASSPHRASE_ENV} is set but empty`);
  return fromEnv;
}
