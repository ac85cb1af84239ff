// One fresh process of the embedded-ca-cold-start case (bench/transport.ts):
// what a service pays on its first start, with nothing warmed up.
//
//   sigil   import src/transport/embedded-ca.ts, then the first
//           EmbeddedCA.create (root + intermediate, P-256) + issueServer() +
//           issueClient() of the process
//   floor   import @grpc/grpc-js (what any grpc-js service imports anyway),
//           then the process's first four P-256 key pairs and four
//           signatures with node:crypto
//
// Prints one JSON line: {"importMs": …, "firstMs": …}.
import { performance } from 'node:perf_hooks';

const mode = process.argv[2];
const start = performance.now();
let importMs: number;
let firstMs: number;
if (mode === 'sigil') {
  const { EmbeddedCA } = await import('../../src/transport/embedded-ca.ts');
  importMs = performance.now() - start;
  const begin = performance.now();
  const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate: true });
  ca.issueServer();
  ca.issueClient();
  firstMs = performance.now() - begin;
  ca.close();
} else if (mode === 'floor') {
  await import('@grpc/grpc-js');
  const { generateKeyPairSync, randomBytes, sign } = await import('node:crypto');
  importMs = performance.now() - start;
  const message = randomBytes(500);
  const begin = performance.now();
  for (let i = 0; i < 4; i++) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    sign('sha256', message, privateKey);
  }
  firstMs = performance.now() - begin;
} else {
  throw new Error('usage: cold-start.ts sigil|floor');
}
process.stdout.write(`${JSON.stringify({ importMs, firstMs })}\n`);
