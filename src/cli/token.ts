// `sigil token create|list|revoke`: join tokens, managed by an admin over the
// Admin API. `create` prints exactly one line on stdout, the token, so it can
// be captured (`TOKEN=$(sigil token create)`); a hint for the person at the
// terminal goes to stderr. The token holds a secret: it is shown once, and
// never appears in any other output.
import type { Command } from 'commander';
import { invalid } from '../errors.ts';
import { addClientOptions, type ClientOptionValues, clientFlags, withClients } from './client-context.ts';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';

interface CreateFlags extends ClientOptionValues {
  ttl: string;
  uses: string;
  autoApprove?: boolean;
  name?: string;
  replica?: boolean;
  json?: boolean;
}

interface ListFlags extends ClientOptionValues {
  json?: boolean;
}

function positiveInteger(text: string, what: string, max: number): number {
  if (!/^[0-9]+$/.test(text.trim()) || Number(text) < 1 || Number(text) > max) {
    throw invalid(`${what} must be a whole number from 1 to ${max}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

async function runCreate(flags: CreateFlags): Promise<void> {
  const { parseDuration, formatDuration } = await import('../pki/duration.ts');
  const { unary } = await import('../client/rpc.ts');
  const { tokenJson } = await import('./operator-output.ts');
  const ttlMs = parseDuration(flags.ttl);
  if (ttlMs < 1000) throw invalid(`--ttl ${flags.ttl} is shorter than one second`);
  const ttlSeconds = Math.ceil(ttlMs / 1000);
  if (ttlSeconds > 0xffffffff) throw invalid(`--ttl ${flags.ttl} is too long`);
  const uses = positiveInteger(flags.uses, '--uses', 0xffffffff);
  const response = await withClients(await clientFlags(flags), ({ admin, target, context }) =>
    unary(
      admin,
      admin.createToken,
      {
        ttlSeconds,
        uses,
        autoApprove: flags.autoApprove ?? false,
        name: flags.name ?? '',
        replica: flags.replica ?? false,
      },
      { target, timeoutMs: context.timeoutMs },
    ),
  );
  if (!response.summary) throw invalid('the server answered CreateToken without a token summary');
  const summary = tokenJson(response.summary);
  if (flags.json) {
    printResult(flags, { token: response.token, ...summary }, () => '');
    return;
  }
  process.stdout.write(`${response.token}\n`);
  if (process.stderr.isTTY) {
    const expires = summary.expiresAt
      ? ` expires in ${formatDuration(Date.parse(summary.expiresAt) - Date.now())}`
      : '';
    const what = summary.replica ? 'replica join token' : 'join token';
    const next = summary.replica
      ? 'start the new replica with it'
      : `on the node: sigil enrol <token> --dir DIR${summary.autoApprove ? '' : `, then sigil node approve <node id>`}`;
    process.stderr.write(
      `${what} ${summary.id}: ${summary.usesTotal} use${summary.usesTotal === 1 ? '' : 's'},${expires}${summary.autoApprove ? ', auto-approved' : ''}; ${next}\n`,
    );
  }
}

async function runList(flags: ListFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const { relative, table, tokenJson } = await import('./operator-output.ts');
  const response = await withClients(await clientFlags(flags), ({ admin, target, context }) =>
    unary(admin, admin.listTokens, {}, { target, timeoutMs: context.timeoutMs }),
  );
  const now = Date.now();
  const tokens = response.tokens.map((token) => tokenJson(token, now));
  printResult(flags, { tokens }, () => {
    if (tokens.length === 0) return 'no tokens';
    return table(
      ['ID', 'NAME', 'STATE', 'USES LEFT', 'EXPIRES', 'AUTO-APPROVE', 'KIND'],
      response.tokens.map((token, i) => [
        token.id,
        token.name || '-',
        tokens[i].state,
        `${token.usesLeft}/${token.usesTotal}`,
        relative(token.expiresAtUnixMs, now),
        token.autoApprove ? 'yes' : 'no',
        token.replica ? 'replica' : 'node',
      ]),
    );
  });
}

async function runRevoke(id: string, flags: ListFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const response = await withClients(await clientFlags(flags), ({ admin, target, context }) =>
    unary(admin, admin.revokeToken, { id: id.trim() }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, { id: id.trim(), revoked: true, alreadyRevoked: response.alreadyRevoked }, () =>
    response.alreadyRevoked ? `token ${id.trim()} was already revoked` : `revoked token ${id.trim()}`,
  );
}

export function registerTokenCommands(program: Command): void {
  const token = program
    .command('token')
    .description('Join tokens: one-time strings that let a node (or a new replica) enrol');

  addClientOptions(
    token
      .command('create')
      .description(
        'Create a join token and print it (one line on stdout); it carries the server addresses, ' +
          'the CA fingerprint and a secret',
      )
      .option('--ttl <duration>', 'how long the token can be used', '15m')
      .option('--uses <n>', 'how many nodes may enrol with it', '1')
      .option('--auto-approve', 'nodes enrolling with it are UP at once (no sigil node approve)')
      .option('--name <name>', 'a label for listings')
      .option('--replica', 'a token for joining a new server replica instead of a node')
      .option('--json', 'print the token and its summary as JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil token create',
        '$ TOKEN=$(sigil token create --ttl 1h --uses 10 --auto-approve --name rack-4)',
        '$ sigil token create --data /var/lib/sigil --json',
        '$ sigil token create --replica --ttl 10m',
      ),
    )
    .action((flags: CreateFlags) => runCreate(flags));

  addClientOptions(
    token
      .command('list')
      .description('List join tokens (never their secrets)')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil token list', '$ sigil token list --json'))
    .action((flags: ListFlags) => runList(flags));

  addClientOptions(
    token
      .command('revoke')
      .description('Revoke a join token so that no one can enrol with it any more')
      .argument('<id>', 'the token ID (from sigil token list)')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil token revoke tn3f9a0c1d2e4b5a67'))
    .action((id: string, flags: ListFlags) => runRevoke(id, flags));
}
