// Variant (b), server: the Casino over mutual TLS with certificates from PEM
// files (`sigil pki quickstart`, the openssl CLI, cert-manager, …). The files
// are watched: replace them (all three, in any order) and new connections get
// the new material without a restart; a half-written set is refused and the
// old one keeps serving.
//
//   npx node examples/casino/server.ts --ca certs/ca.pem --cert certs/server.pem --key certs/server.key
//
// Flags (or the environment): --ca (CASINO_CA) the CA bundle client
// certificates must chain to; --cert (CASINO_CERT) the server certificate,
// then any intermediates; --key (CASINO_KEY) its private key; --host
// (CASINO_HOST, default 127.0.0.1); --port (CASINO_PORT, default 50051, 0 for
// any free port). Prints "casino listening on HOST:PORT" once it is serving;
// SIGINT/SIGTERM stop it.
import { parseArgs } from 'node:util';
import { FileMaterialSource } from '../../src/transport/file-source.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { CasinoService, casino, describeFailure, setting } from './casino.ts';

const USAGE =
  'usage: server.ts --ca FILE --cert FILE --key FILE [--host 127.0.0.1] [--port 50051]\n' +
  '       (or CASINO_CA, CASINO_CERT, CASINO_KEY, CASINO_HOST, CASINO_PORT)';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
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
    process.stderr.write(`casino server: --ca, --cert and --key are required\n${USAGE}\n`);
    return 1;
  }
  const host = setting(values.host, 'CASINO_HOST') ?? '127.0.0.1';
  const portText = setting(values.port, 'CASINO_PORT') ?? '50051';
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`casino server: --port must be an integer from 0 to 65535 (got "${portText}")\n`);
    return 1;
  }

  const material = await FileMaterialSource.open({
    certificateChain: cert,
    privateKey: key,
    trustBundle: ca,
    onError: (error) => process.stderr.write(`casino server: ${error.message}\n`),
  });
  const server = new MtlsServer({
    material,
    onError: (error) => process.stderr.write(`casino server: ${error.message}\n`),
    onRotated: (validated) =>
      process.stderr.write(`casino server: now serving certificate "${validated.leaf.subject}"\n`),
    onHandshakeError: (failure) =>
      process.stderr.write(
        `casino server: refused a connection from ${failure.remoteAddress ?? 'unknown'}: ${failure.reason}\n`,
      ),
  });
  const { implementation, totals } = casino();
  server.addService(CasinoService, implementation);
  const bound = await server.listen(host, port);
  process.stdout.write(`casino listening on ${host}:${bound}\n`);

  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close(2000);
  material.close();
  for (const [client, total] of totals) process.stderr.write(`casino server: ${client} paid ${total}\n`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`casino server: ${describeFailure(error)}\n`);
    process.exitCode = 1;
  },
);
