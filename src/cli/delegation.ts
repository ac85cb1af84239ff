// `sigil delegation status|reserve|release|revoke`: a delegate acting inside
// its own subtree over the Delegation service, called with the identity in
// `--identity DIR` (as `sigil delegate` writes it) or an admin's. `sigil
// status` shows the same delegation status when its identity is a delegate.
// This file only registers the commands; the work is in delegation-run.ts.
import type { Command } from 'commander';
import { addClientOptions } from './client-context.ts';
import type { JsonFlags, ReserveFlags, RevokeFlags } from './delegation-run.ts';
import { examples } from './operator-output.ts';

/** The run-time half, loaded when a command runs. */
const run = () => import('./delegation-run.ts');

export function registerDelegationCommands(program: Command): void {
  const delegation = program
    .command('delegation')
    .description(
      "A delegate's own subtree: its policy and usage, reserving and releasing resources, revoking what it delegated",
    );

  addClientOptions(
    delegation
      .command('status')
      .description(
        "The caller's effective policy, its subtree's usage and the tree of what it delegated (as seen by the server)",
      )
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil delegation status --identity ./alice',
        '$ sigil delegation status --identity ./alice --json',
      ),
    )
    .action(async (flags: JsonFlags) => (await run()).runStatus(flags));

  addClientOptions(
    delegation
      .command('reserve')
      .description(
        "Reserve resources in the caller's subtree, counted against every ancestor's limits; " +
          'reserving the same holder again changes nothing',
      )
      .argument('<holder>', 'a name for what the resources are for, unique in the subtree')
      .option('--workloads <n>', 'workloads to reserve')
      .option('--cpus <ids>', 'cpu ids to reserve, e.g. 0,1 or 0-3')
      .option('--memory <MiB>', 'memory to reserve, in MiB')
      .option('--block <MiB>', 'block storage to reserve, in MiB')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples('$ sigil delegation reserve web-1 --workloads 1 --cpus 0 --memory 512 --identity ./carol'),
    )
    .action(async (holder: string, flags: ReserveFlags) => (await run()).runReserve(holder, flags));

  addClientOptions(
    delegation
      .command('release')
      .description("Release what a holder reserved in the caller's subtree")
      .argument('<holder>', 'the name given to sigil delegation reserve')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil delegation release web-1 --identity ./carol'))
    .action(async (holder: string, flags: JsonFlags) => (await run()).runRelease(holder, flags));

  addClientOptions(
    delegation
      .command('revoke')
      .description(
        "Revoke a certificate inside the caller's subtree, also one the server never issued: " +
          "FILE holds it first, then its chain (e.g. a delegation directory's delegation.pem or cert.pem). " +
          'Revoking a delegation revokes everything beneath it',
      )
      .argument('<file>', 'PEM: the certificate to revoke, then its chain')
      .option('--reason <reason>', 'RFC 5280 reason, e.g. keyCompromise, superseded (default: unspecified)')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil delegation revoke ./carol/delegation.pem --identity ./alice',
        '$ sigil delegation revoke ./carol/cert.pem --identity ./alice --reason keyCompromise',
      ),
    )
    .action(async (file: string, flags: RevokeFlags) => (await run()).runRevoke(file, flags));
}
