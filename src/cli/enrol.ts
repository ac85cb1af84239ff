// `sigil enrol TOKEN --dir DIR`: turn a machine into a node of the control
// plane with a join token (the work is in src/agent/enrol.ts). Exit 0 when
// the node is UP (files written) or NEW (waiting for approval, which the
// output says how to give); 1 with one line for every refusal.
import { type Command, Option } from 'commander';
import { KEY_TYPES } from '../pki/keys.ts';
import { examples } from './operator-output.ts';
import { printResult, progress } from './output.ts';
import { usageError } from './usage.ts';

interface EnrolFlags {
  dir: string;
  name?: string;
  keyType?: string;
  wait?: boolean;
  waitTimeout: string;
  json?: boolean;
}

/** The token from the argument, "-" (standard input) or $SIGIL_JOIN_TOKEN. */
async function tokenFrom(argument: string | undefined): Promise<string> {
  if (argument === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8').trim();
  }
  const token = argument ?? process.env.SIGIL_JOIN_TOKEN;
  if (token === undefined || token.trim() === '') {
    throw usageError(
      'give the join token as an argument, "-" to read it from standard input, or in $SIGIL_JOIN_TOKEN',
    );
  }
  return token;
}

async function runEnrol(tokenArgument: string | undefined, flags: EnrolFlags): Promise<void> {
  const tokenText = await tokenFrom(tokenArgument);
  const { parseDuration } = await import('../pki/duration.ts');
  const { parseKeyType } = await import('../pki/keys.ts');
  const { enrol } = await import('../agent/enrol.ts');
  const result = await enrol({
    token: tokenText,
    dir: flags.dir,
    name: flags.name,
    keyType: flags.keyType === undefined ? undefined : parseKeyType(flags.keyType),
    wait: flags.wait,
    waitTimeoutMs: parseDuration(flags.waitTimeout),
    onProgress: progress,
  });
  printResult(flags, result, () => {
    if (result.state === 'NEW') {
      return [
        `registered node ${result.nodeId} with ${result.server}`,
        `waiting for approval (sigil node approve ${result.nodeId})`,
        `then run this command again, or run it with --wait; the key is kept in ${result.dir}`,
      ].join('\n');
    }
    const certificate = result.certificate;
    return [
      `enrolled node ${result.nodeId} with ${result.server}: UP`,
      `  SPIFFE ID:   ${certificate?.spiffeId ?? '-'}`,
      `  serial:      ${certificate?.serial ?? '-'}`,
      `  valid:       ${certificate?.notBefore ?? '-'} to ${certificate?.notAfter ?? '-'}`,
      `  key:         ${result.keyType}${result.reusedKey ? ' (kept from an earlier run)' : ''}`,
      result.files.length > 0 ? `wrote ${result.files.join(', ')}` : `${result.dir} was already up to date`,
      `keep it fresh with: sigil agent --dir ${result.dir}`,
    ].join('\n');
  });
}

export function registerEnrolCommand(program: Command): void {
  program
    .command('enrol')
    .alias('enroll')
    .description(
      'Enrol this machine as a node with a join token: pins the CA by the fingerprint in the token, ' +
        'generates a key, proves possession of it and writes cert.pem, key.pem, bundle.pem and node.json',
    )
    .argument(
      '[token]',
      'the join token from sigil token create; "-" reads it from standard input (default: $SIGIL_JOIN_TOKEN)',
    )
    .addOption(
      new Option('--dir <dir>', 'identity directory to write (created 0700)')
        .env('SIGIL_NODE_DIR')
        .makeOptionMandatory(),
    )
    .option('--name <name>', 'a name for the node in listings')
    .addOption(
      new Option(
        '--key-type <type>',
        `key type of the node key: ${KEY_TYPES.join(', ')} (default: ed25519)`,
      ).env('SIGIL_KEY_TYPE'),
    )
    .option('--wait', 'wait until an operator approves the node (polls with backoff)')
    .option('--wait-timeout <duration>', 'give up waiting after this long', '15m')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      examples(
        '$ sigil enrol sigil1.AAAA… --dir /etc/sigil/node',
        '$ sigil enrol "$TOKEN" --dir ./node --name web-1 --wait',
        '$ sigil enrol "$TOKEN" --dir ./node --key-type p256 --json',
        '$ sigil enrol - --dir ./node < token.txt    (keeps the secret out of the process list)',
      ),
    )
    .action((token: string | undefined, flags: EnrolFlags) => runEnrol(token, flags));
}
