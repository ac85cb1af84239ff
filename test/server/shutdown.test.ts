// Graceful shutdown of sigil's mTLS server: close() stops accepting, lets a
// call that is already running finish within the grace period, and only then
// ends the connections; a call still running when the grace period is over
// is cut off.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { bytes } from '../support/raw-methods.ts';
import { echoService, ManualMaterialSource, mtlsClient, TestCa } from '../transport/fixtures.ts';

const ca = new TestCa('sigil shutdown test CA');
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function slowServer(
  handlerMs: number,
): Promise<{ server: MtlsServer; port: number; started: Promise<void> }> {
  let markStarted: () => void = () => {};
  const started = new Promise<void>((resolve) => {
    markStarted = resolve;
  });
  const server = new MtlsServer({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
  server.addService(echoService, {
    unary: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      markStarted();
      setTimeout(() => callback(null, Buffer.from('done')), handlerMs);
    },
    ticks: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.end(),
  });
  const port = await server.listen();
  cleanups.push(() => server.close(0));
  return { server, port, started };
}

function unary(client: grpc.Client): Promise<string> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(echoService.unary.path, bytes, bytes, Buffer.from('x'), (error, response) =>
      resolve(error ? `error ${error.code}` : (response?.toString() ?? '')),
    );
  });
}

describe('graceful shutdown', () => {
  test('close() drains a running call before ending its connection', async () => {
    const { server, port, started } = await slowServer(300);
    const client = mtlsClient(port, ca.rootPem, ca.issueClient());
    cleanups.push(() => client.close());
    const result = unary(client);
    await started;
    let closed = false;
    const closing = server.close(5_000).then(() => {
      closed = true;
    });
    assert.equal(await result, 'done');
    await closing;
    assert.ok(closed);
    assert.equal(server.connections.size, 0);
  });

  test('a call still running after the grace period is cut off', async () => {
    const { server, port, started } = await slowServer(5_000);
    const client = mtlsClient(port, ca.rootPem, ca.issueClient());
    cleanups.push(() => client.close());
    const result = unary(client);
    await started;
    await server.close(200);
    assert.match(await result, /^error /);
  });
});
