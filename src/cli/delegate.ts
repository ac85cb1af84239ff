// `sigil delegate --to NAME … --out DIR`: hand a slice of authority to NAME,
// issued by the server (an admin) or signed offline with a delegation's own
// key (--from DIR). This file only registers the command, so every command
// starts quickly; the work is in delegate-run.ts, the directory it writes is
// described in delegation-directory.ts.
import type { Command } from 'commander';
import { KEY_TYPES } from '../pki/keys.ts';
import { addClientOptions } from './client-context.ts';
import type { DelegateFlags } from './delegate-request.ts';
import { examples } from './operator-output.ts';

export function registerDelegateCommand(program: Command): void {
  addClientOptions(
    program
      .command('delegate')
      .description(
        'Hand a slice of authority to NAME: a delegation (a CA certificate with a policy that can only ' +
          'narrow) or, with --command, a command certificate (permissions, no resources). Without --from ' +
          'the server issues it (admin); with --from DIR a delegate signs it offline with its own delegation key. ' +
          'Writes delegation.pem/.key, cert.pem/key.pem (the identity to call with), bundle.pem and delegation.json',
      )
      .requiredOption(
        '--to <name>',
        'the delegate: one DNS label (a-z, 0-9, inner "-"); its subtree is spiffe://NAME.<parent>.d.<trust domain>',
      )
      .requiredOption('--out <dir>', 'directory to write (created 0700; keys 0600)')
      .option(
        '--from <dir>',
        'sign offline with the delegation in DIR (as sigil delegate wrote it); never contacts the server',
      )
      .option(
        '--permissions <list>',
        'comma-separated: info, create, destroy, console, log, stats, block, delegate, revoke, issue, admin ' +
          "(required without --from; with --from: the parent's)",
      )
      .option('--workloads <n>', "workloads (default 0; with --from: the parent's)")
      .option('--memory <MiB>', "memory in MiB (default 0; with --from: the parent's)")
      .option('--cpus <ids>', "cpu ids, e.g. 0,1 or 0-3 (default none; with --from: the parent's)")
      .option('--block <MiB>', "block storage in MiB (default 0; with --from: the parent's)")
      .option('--bridges <names>', "comma-separated bridge names (default none; with --from: the parent's)")
      .option(
        '--issuance-per-hour <n>',
        "certificates the subtree may have issued per hour (default 1000; with --from: the parent's)",
      )
      .option(
        '--path-len <n>',
        "how many delegation levels may follow below it (default: one less than the parent's)",
      )
      .option(
        '--ttl <duration>',
        "lifetime, e.g. 30d (default: the server's, 30 days or 1 hour for --command; with --from: the parent's remaining)",
      )
      .option(
        '--dns <names>',
        'comma-separated DNS names the delegate may certify, ".example.org" for subdomains only (default: none; with --from: the parent\'s)',
      )
      .option(
        '--ip <ranges>',
        "comma-separated CIDR ranges the delegate may certify, e.g. 10.1.0.0/16 (default: none; with --from: the parent's)",
      )
      .option('--command', 'a command certificate: a leaf with permissions only, for interactive use')
      .option('--key-type <type>', `key type of the new keys: ${KEY_TYPES.join(', ')} (default: p256)`)
      .option('--force', 'overwrite the files of an earlier run in --out')
      .option('--json', 'print the result as JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil delegate --to alice --permissions info,create,destroy,delegate,issue --workloads 2 --cpus 0,1 --memory 4096 --out ./alice',
        '$ sigil delegate --from ./alice --to carol --workloads 1 --cpus 1 --permissions info,create --out ./carol',
        '$ sigil delegate --to ops --command --permissions info,log,stats --ttl 8h --out ./ops',
        '$ sigil status --identity ./carol',
      ),
    )
    .action(async (flags: DelegateFlags) => {
      const { runDelegate } = await import('./delegate-run.ts');
      await runDelegate(flags);
    });
}
