// `sigil server`: run the control plane. Flags win over SIGIL_* environment
// variables. This file only registers the command; server-run.ts runs it
// (server/start-server.ts startServer), loaded when the command runs so other
// commands start quickly.
import { availableParallelism } from 'node:os';
import { type Command, Option } from 'commander';
import { DEFAULT_DATA_DIR } from '../files/data-directory-names.ts';
import { DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN } from '../server/listen-address.ts';
import type { ServerFlags } from './server-run.ts';

function collect(value: string, previous: string[] | undefined): string[] {
  return [
    ...(previous ?? []),
    ...value
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== ''),
  ];
}

function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((line) => `  ${line}`).join('\n')}\n`;
}

export function registerServerCommand(program: Command): void {
  program
    .command('server')
    .description(
      'Run the control plane: bootstrap a new trust domain in an empty data directory, serve an existing one, or join as another replica',
    )
    .addOption(
      new Option(
        '--data <dir>',
        'data directory (created 0700): store key, SQLite store, admin identity, server.json',
      )
        .env('SIGIL_DATA')
        .default(DEFAULT_DATA_DIR, `./${DEFAULT_DATA_DIR}`),
    )
    .addOption(
      new Option('--listen <host:port>', 'gRPC address (mTLS; port 0 picks a free port, see server.json)')
        .env('SIGIL_LISTEN')
        .default(DEFAULT_LISTEN),
    )
    .addOption(
      new Option(
        '--http-listen <host:port>',
        'HTTP address for /crl, /metrics, /healthz, /readyz (loopback only)',
      )
        .env('SIGIL_HTTP_LISTEN')
        .default(DEFAULT_HTTP_LISTEN),
    )
    .addOption(
      new Option(
        '--advertise <host:port>',
        'address clients dial, put in join tokens and the server certificate (repeatable, or comma-separated; default: the --listen address)',
      )
        .env('SIGIL_ADVERTISE')
        .argParser(collect),
    )
    .addOption(
      new Option(
        '--http-advertise <url>',
        'URL where a proxy publishes the HTTP side: certificates name <url>/crl/<issuer> as their CRL ' +
          'distribution point (default: the --http-listen URL when clients dial a loopback address, else none)',
      ).env('SIGIL_HTTP_ADVERTISE'),
    )
    .addOption(
      new Option('--store <spec>', 'sqlite (in the data directory) or a postgres:// URL')
        .env('SIGIL_STORE')
        .default('sqlite'),
    )
    .addOption(
      new Option('--trust-domain <name>', 'trust domain of a new deployment (default: sigil.internal)').env(
        'SIGIL_TRUST_DOMAIN',
      ),
    )
    .addOption(
      new Option(
        '--policy-oid <oid>',
        "OID of sigil's policy extension in a new deployment's delegation certificates: an arc under your " +
          "organisation's IANA enterprise number, e.g. 1.3.6.1.4.1.<PEN>.1 (default: 2.999.7445.1; fixed at bootstrap)",
      ).env('SIGIL_POLICY_OID'),
    )
    .addOption(
      new Option(
        '--replica-id <id>',
        "this replica's ID (default: recorded in the data directory, else random)",
      ).env('SIGIL_REPLICA_ID'),
    )
    .addOption(
      new Option(
        '--join <token>',
        'join an existing deployment on the same PostgreSQL store with a replica join token (sigil token create --replica)',
      ).env('SIGIL_JOIN'),
    )
    .addOption(
      new Option(
        '--workers <n>',
        'processes serving the gRPC port (SO_REUSEPORT; the first also runs the HTTP side and maintenance)',
      )
        .env('SIGIL_SERVER_WORKERS')
        .default(String(availableParallelism()), 'the number of cores'),
    )
    .addOption(
      new Option('--log-level <level>', 'fatal, error, warn, info, debug or trace')
        .env('SIGIL_LOG_LEVEL')
        .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    )
    .addHelpText(
      'after',
      examples(
        '$ sigil server                                   # ./.sigil, 127.0.0.1:7443, SQLite',
        '$ sigil server --data /var/lib/sigil --listen 0.0.0.0:7443 --advertise ca.example.com:7443',
        '$ sigil server --workers 1                       # one process (default: one per core)',
        '$ sigil server --store postgres://sigil@db/sigil --data ./replica-a',
        '$ sigil server --store postgres://sigil@db/sigil --data ./replica-b --join sigil1.…',
      ),
    )
    .action(async (flags: ServerFlags) => {
      const { runServer } = await import('./server-run.ts');
      await runServer(flags);
    });
}
