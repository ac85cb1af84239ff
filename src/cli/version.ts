// `sigil version` and `sigil --version`: the version in package.json (read at
// run time, so a release bumps it in one place), and for `sigil version` the
// Node.js and OpenSSL it runs on, which decide what TLS and X.509 can do.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { printResult } from './output.ts';

let cached: string | undefined;

/** The `version` of sigil's package.json (two levels above src/cli/ and dist/cli/ alike). */
export function packageVersion(): string {
  if (cached === undefined) {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    const version = (JSON.parse(text) as { version?: unknown }).version;
    cached = typeof version === 'string' ? version : 'unknown';
  }
  return cached;
}

export function registerVersionCommand(program: Command): void {
  program
    .command('version')
    .description('Print the version of sigil, and of the Node.js and OpenSSL it runs on')
    .option('--json', 'print JSON')
    .action((flags: { json?: boolean }) => {
      const info = {
        sigil: packageVersion(),
        node: process.versions.node,
        openssl: process.versions.openssl,
      };
      printResult(flags, info, () => `sigil ${info.sigil} (Node.js ${info.node}, OpenSSL ${info.openssl})`);
    });
}
