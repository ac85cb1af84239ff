// `sigil pki inspect`: what is in certificate, chain, CSR, CRL and key files.
// The reading and describing is src/pki/inspect.ts; this only reads the files.

import { readInputFile } from '../files/file-sets.ts';
import { formatInspection, type Inspected, inspect } from '../pki/inspect.ts';
import { printResult } from './output.ts';
import { passphraseFrom } from './passphrase.ts';

export interface InspectCommandOptions {
  readonly passphraseFile?: string;
  readonly json?: boolean;
}

export interface InspectedFile {
  readonly file: string;
  readonly items: readonly Inspected[];
}

export function runInspect(files: readonly string[], options: InspectCommandOptions): void {
  const passphrase = passphraseFrom(options.passphraseFile);
  // Read and understand every file before printing anything.
  const inspected: InspectedFile[] = files.map((file) => ({
    file,
    items: inspect(readInputFile(file), { source: file, passphrase }),
  }));
  printResult(options, inspected, () =>
    inspected.map(({ file, items }) => formatInspection([...items], file).replace(/\n+$/, '')).join('\n\n'),
  );
}
