// Variant (a): the Casino over mutual TLS with sigil's embedded CA and zero
// files. One process holds the CA in memory, serves the Casino on 127.0.0.1
// and pays in as two clients, alice and bob, each with its own certificate:
//
//   npx node examples/casino/embedded.ts
//
// Prints one JSON line per payment: who paid (the SPIFFE ID the server saw in
// the client certificate), how much, and that client's running total.
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { CasinoClient, CasinoService, casino, describeFailure, pay } from './casino.ts';

const PAYMENTS: readonly [client: string, amount: number][] = [
  ['alice', 10],
  ['bob', 5],
  ['alice', 20],
  ['bob', 7],
  ['alice', 1],
];

async function main(): Promise<void> {
  // Root + intermediate + leaves, P-256, all in memory; leaves renew themselves.
  const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate: true });
  const server = new MtlsServer({ material: ca.serverMaterial() });
  server.addService(CasinoService, casino().implementation);
  const port = await server.listen('127.0.0.1', 0);
  process.stderr.write(
    `casino (embedded CA, trust domain ${ca.trustDomain}) listening on 127.0.0.1:${port}\n`,
  );

  const clients = new Map<string, CasinoClient>();
  try {
    for (const [name, amount] of PAYMENTS) {
      let client = clients.get(name);
      if (client === undefined) {
        // A client identity of this CA; only this CA's chain is trusted for the server.
        client = new CasinoClient(`127.0.0.1:${port}`, ca.channelCredentials({ name }));
        clients.set(name, client);
      }
      const response = await pay(client, amount);
      process.stdout.write(`${JSON.stringify({ client: response.client, amount, total: response.total })}\n`);
    }
  } finally {
    for (const client of clients.values()) client.close();
    await server.close(1000);
    ca.close();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`casino: ${describeFailure(error)}\n`);
  process.exitCode = 1;
});
