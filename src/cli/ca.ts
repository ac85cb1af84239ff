// `sigil ca`: the control plane's certificate authority. `sigil ca
// export-root --out DIR` takes the root CA key offline; this file only
// registers the commands, the work is in ca-export-root.ts.
import { type Command, Option } from 'commander';
import type { ExportRootFlags } from './ca-export-root.ts';
import { examples } from './operator-output.ts';

export function registerCaCommands(program: Command): void {
  const ca = program.command('ca').description("The control plane's certificate authority");
  ca.command('export-root')
    .description(
      'Take the root CA key offline: write root.pem and root.key (0600) to --out, then remove the key from the store',
    )
    .addOption(
      new Option('--data <dir>', "the server's data directory (SQLite store; stop the server first)").env(
        'SIGIL_DATA',
      ),
    )
    .requiredOption('--out <dir>', 'directory for root.pem and root.key (created 0700)')
    .option(
      '--passphrase-file <file>',
      'encrypt root.key (PKCS#8) with the passphrase in this file (its first line; else $SIGIL_CA_PASSPHRASE)',
    )
    .option('--force', 'overwrite root.pem and root.key in --out')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      examples(
        '$ sigil ca export-root --data /var/lib/sigil --out /media/offline --passphrase-file ./root-passphrase',
        '$ sigil ca export-root --out ./offline-root --json',
      ) +
        '\nWorks on a local SQLite data directory with the server stopped. PostgreSQL deployments need\n' +
        'the Admin API call for it, which does not exist yet.\n',
    )
    .action(async (flags: ExportRootFlags) => {
      const { runExportRoot } = await import('./ca-export-root.ts');
      await runExportRoot(flags);
    });
}
