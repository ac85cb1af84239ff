// `sigil vminit`: the guest agent, with firebuild's vminit flags and their
// defaults (firebuild-mmds cmd/vminit/main.go), so a guest's init script can
// call either. Its exit codes are firebuild's, not the CLI's usual ones:
// 0 ok, 1 the metadata could not be read, 2 the bootstrap failed, 3 an
// injector failed (src/guest/vminit.ts). Progress goes to stderr; keys and
// tokens are never printed.
import type { Command } from 'commander';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';
import { usageError } from './usage.ts';

/** A command's own exit code, returned by main() as is (the command has already said why). */
export class ExitStatus extends Error {
  readonly exitCode: number;
  constructor(exitCode: number) {
    super(`exit status ${exitCode}`);
    this.name = 'ExitStatus';
    this.exitCode = exitCode;
  }
}

interface VminitFlags {
  guestMmdsIp: string;
  guestMmdsPort: string;
  metadataPath: string;
  pathAuthorizedKeysPattern: string;
  pathEntrypointRunnerFile: string;
  pathEnvFile: string;
  pathHostnameFile: string;
  pathHostsFile: string;
  root: string;
  printFlags?: boolean;
  json?: boolean;
}

/** vminit's flags that take free text (paths and addresses the command checks when it runs). */
export const VMINIT_FREE_TEXT_FLAGS: readonly string[] = [
  '--guest-mmds-ip',
  '--metadata-path',
  '--path-authorized-keys-pattern',
  '--path-entrypoint-runner-file',
  '--path-env-file',
  '--path-hostname-file',
  '--path-hosts-file',
  '--root',
];

function portOf(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65_535)
    throw usageError(`--guest-mmds-port must be a port from 1 to 65535, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** firebuild's --print-flags: one `--flag value` a line, unquoted (its openrc service reads the runner's path from it). */
function flagLines(flags: VminitFlags): [string, string][] {
  return [
    ['--guest-mmds-ip', flags.guestMmdsIp],
    ['--guest-mmds-port', flags.guestMmdsPort],
    ['--metadata-path', flags.metadataPath],
    ['--path-authorized-keys-pattern', flags.pathAuthorizedKeysPattern],
    ['--path-entrypoint-runner-file', flags.pathEntrypointRunnerFile],
    ['--path-env-file', flags.pathEnvFile],
    ['--path-hostname-file', flags.pathHostnameFile],
    ['--path-hosts-file', flags.pathHostsFile],
    ['--root', flags.root],
  ];
}

async function runVminitCommand(flags: VminitFlags): Promise<void> {
  const port = portOf(flags.guestMmdsPort);
  if (flags.printFlags) {
    const lines = flagLines(flags);
    printResult(flags, Object.fromEntries(lines), () =>
      lines.map(([flag, value]) => `${flag} ${value}`).join('\n'),
    );
    return;
  }
  const { runVminit } = await import('../guest/vminit.ts');
  const { BootstrapClient } = await import('../guest/bootstrap-client.ts');
  const outcome = await runVminit({
    metadata: { host: flags.guestMmdsIp, port, path: flags.metadataPath },
    paths: {
      authorizedKeysPattern: flags.pathAuthorizedKeysPattern,
      entrypointRunnerFile: flags.pathEntrypointRunnerFile,
      envFile: flags.pathEnvFile,
      hostnameFile: flags.pathHostnameFile,
      hostsFile: flags.pathHostsFile,
    },
    root: flags.root,
    connect: (options) => BootstrapClient.connect(options),
    log: (line) => process.stderr.write(`vminit: ${line}\n`),
  });
  if (flags.json) printResult(flags, outcome, () => '');
  if (outcome.exitCode !== 0) throw new ExitStatus(outcome.exitCode);
}

export function registerVminitCommand(program: Command): void {
  program
    .command('vminit')
    .description(
      "The guest agent: read this guest's metadata, then run its build (bootstrap mode) or write its hostname, hosts, env file, SSH keys and entrypoint runner (normal mode)",
    )
    .option('--guest-mmds-ip <ip>', 'address of the metadata service', '169.254.169.254')
    .option('--guest-mmds-port <port>', 'port of the metadata service', '80')
    .option('--metadata-path <path>', 'path of the metadata document', 'latest/meta-data')
    .option(
      '--path-authorized-keys-pattern <pattern>',
      "each user's authorized_keys (%s is the user name); the file must exist",
      '/home/%s/.ssh/authorized_keys',
    )
    .option(
      '--path-entrypoint-runner-file <file>',
      'the entrypoint runner script to write',
      '/usr/bin/firebuild-entrypoint.sh',
    )
    .option('--path-env-file <file>', 'the env file to write', '/etc/profile.d/run-env.sh')
    .option('--path-hostname-file <file>', 'the hostname file to write', '/etc/hostname')
    .option('--path-hosts-file <file>', 'the hosts file to write', '/etc/hosts')
    .option('--root <dir>', "the directory holding the guest's root: every path above is inside it", '/')
    .option('--print-flags', "print each flag's value, one '--flag value' a line, and exit")
    .option('--json', 'print the outcome (or, with --print-flags, the flags) as JSON')
    .addHelpText(
      'after',
      "\nExit codes (firebuild's): 0 ok, 1 the metadata could not be read, 2 the bootstrap failed, 3 an injector failed.\n" +
        examples(
          'sigil vminit                          # at boot, inside the guest',
          'sigil vminit --print-flags            # where the entrypoint runner goes',
          'sigil vminit --guest-mmds-port 8080 --root /srv/rootfs',
        ),
    )
    .action((flags: VminitFlags) => runVminitCommand(flags));
}
