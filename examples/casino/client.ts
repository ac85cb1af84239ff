// Variant (b), client: pays into the Casino with a client certificate from
// PEM files, trusting only the given CA for the server.
//
//   npx node examples/casino/client.ts --ca certs/ca.pem --cert certs/client.pem --key certs/client.key 10 20
//
// Flags (or the environment): --ca (CASINO_CA), --cert (CASINO_CERT), --key
// (CASINO_KEY), --target (CASINO_TARGET, default 127.0.0.1:50051) and
// --server-name (CASINO_SERVER_NAME, default: the target's host), the name
// the server certificate must be valid for. The arguments are the amounts to
// pay, in order. Prints one JSON line per payment; exits 1 with a one-line
// error when a call fails.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { CasinoClient, describeFailure, pay, setting } from './casino.ts';

const USAGE =
  'usage: client.ts --ca FILE --cert FILE --key FILE [--target 127.0.0.1:50051] [--server-name NAME] AMOUNT...\n' +
  '       (or CASINO_CA, CASINO_CERT, CASINO_KEY, CASINO_TARGET, CASINO_SERVER_NAME)';

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as { code?: string }).code ?? 'read failed';
    throw new Error(`cannot read the ${what} file ${JSON.stringify(path)} (${code})`);
  }
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    options: {
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      target: { type: 'string' },
      'server-name': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const ca = setting(values.ca, 'CASINO_CA');
  const cert = setting(values.cert, 'CASINO_CERT');
  const key = setting(values.key, 'CASINO_KEY');
  if (ca === undefined || cert === undefined || key === undefined) {
    process.stderr.write(`casino client: --ca, --cert and --key are required\n${USAGE}\n`);
    return 1;
  }
  const amounts = positionals.map(Number);
  const bad = positionals.find((_text, i) => !Number.isSafeInteger(amounts[i]) || amounts[i] <= 0);
  if (positionals.length === 0 || bad !== undefined) {
    process.stderr.write(
      `casino client: ${bad === undefined ? 'no amount given' : `"${bad}" is not a positive integer amount`}\n${USAGE}\n`,
    );
    return 1;
  }
  const target = setting(values.target, 'CASINO_TARGET') ?? '127.0.0.1:50051';

  // Read once: a short-lived client needs no watching (server.ts shows FileMaterialSource).
  const material = new StaticMaterialSource({
    certificateChain: readPem(cert, 'certificate'),
    privateKey: readPem(key, 'private key'),
    trustBundle: readPem(ca, 'CA'),
  });
  const client = new CasinoClient(
    target,
    channelCredentials({ material, serverName: setting(values['server-name'], 'CASINO_SERVER_NAME') }),
  );
  try {
    for (const amount of amounts) {
      const response = await pay(client, amount);
      process.stdout.write(`${JSON.stringify({ client: response.client, amount, total: response.total })}\n`);
    }
  } finally {
    client.close();
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`casino client: ${describeFailure(error)}\n`);
    process.exitCode = 1;
  },
);
