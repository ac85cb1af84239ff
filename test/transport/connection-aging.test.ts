// Issue #10, "Rotation must not lose calls": connection aging under load lost
// calls (UNAVAILABLE "Write error: write ECANCELED"), a whole channel's calls
// in flight at once. The load runs in a child process (aging-load-client.ts)
// and is bounded by counts: at least N calls over at least M connections,
// each connection aged out by the server; never by time. The GOAWAY sequence
// itself is checked frame by frame with Node's own HTTP/2 client.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { ConnectionAging } from '../../src/transport/connection-aging.ts';
import type { LoadResult, LoadSpec } from './aging-load-client.ts';
import { echoService, ManualMaterialSource, startEchoServer, TestCa } from './fixtures.ts';

const CHILD = join(fileURLToPath(new URL('.', import.meta.url)), 'aging-load-client.ts');
const ca = new TestCa('connection aging test CA', { intermediate: true });
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CHILD, JSON.stringify(spec)],
      { timeout: 240_000, maxBuffer: 1 << 20 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${error.message}\n${stderr}`));
        else resolve(JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as LoadResult);
      },
    );
  });
}

const clientMaterial = () => {
  const pair = ca.issueClient({ name: 'load' });
  return { certificateChain: pair.certificateChain, privateKey: pair.privateKey, trustBundle: ca.rootPem };
};

/** 16 KiB requests: a refused call's request write is still pending far more often than with small ones. */
const LOAD = { payloadBytes: 16 * 1024, concurrency: 32, minCalls: 4000, minConnections: 9 } as const;

describe('aging connections under load', () => {
  test('MtlsServer aging every 250 ms loses no call of a sigil client (≥ 4,000 calls of 16 KiB, 32 in flight, over ≥ 9 connections)', {
    timeout: 300_000,
  }, async () => {
    const running = await startEchoServer({
      material: new ManualMaterialSource(ca.material(ca.issueServer())),
      maxConnectionAgeMs: 250,
      maxConnectionAgeGraceMs: 5000,
    });
    cleanups.push(() => running.close());
    const result = await runLoad({
      ...LOAD,
      port: running.port,
      credentials: 'sigil',
      material: clientMaterial(),
      path: echoService.unary.path,
    });
    console.log(`MtlsServer, sigil client: ${JSON.stringify(result)}`);
    assert.ok(result.connections >= LOAD.minConnections, `${result.connections} connections`);
    assert.equal(result.failed, 0, `failed calls: ${result.errors.join('; ')}`);
    assert.ok(result.ok >= LOAD.minCalls);
  });

  test("sigil's channelCredentials lose no call to a write error against a grpc-js server aging connections every 250 ms (createSsl, grpc.max_connection_age_ms)", {
    timeout: 300_000,
  }, async () => {
    const pair = ca.issueServer();
    const server = new grpc.Server({
      'grpc.max_connection_age_ms': 250,
      'grpc.max_connection_age_grace_ms': 5000,
    });
    server.addService(echoService, {
      unary: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        callback(null, Buffer.from('ok')),
      ticks: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.end(),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        '127.0.0.1:0',
        grpc.ServerCredentials.createSsl(
          Buffer.from(ca.rootPem),
          [{ cert_chain: Buffer.from(pair.certificateChain), private_key: Buffer.from(pair.privateKey) }],
          true,
        ),
        (error, bound) => (error ? reject(error) : resolve(bound)),
      ),
    );
    cleanups.push(() => server.forceShutdown());
    const result = await runLoad({
      ...LOAD,
      port,
      credentials: 'sigil',
      material: clientMaterial(),
      path: echoService.unary.path,
    });
    console.log(`grpc-js createSsl server, sigil client: ${JSON.stringify(result)}`);
    assert.ok(result.connections >= LOAD.minConnections, `${result.connections} connections`);
    // What sigil's client fixes: no call fails with the write error that ended every call in
    // flight. A grpc-js server's own aging sends its last-stream-id GOAWAY in the same flush as
    // the first, so it can refuse a call the client started just before reading it; grpc-js
    // retries a refused call once, and on a loaded machine the retry can be refused by the next
    // connection's GOAWAY too (seen: 6 calls in one CI run). Only MtlsServer's aging (above) is exact.
    const otherThanRefusedTwice = result.errors.filter((error) => !/Stream refused by server$/.test(error));
    assert.deepEqual(otherThanRefusedTwice, [], `failed calls: ${result.errors.join('; ')}`);
    if (result.failed > 0) console.log(`${result.failed} calls refused twice by grpc-js's own aging`);
    assert.ok(result.ok >= LOAD.minCalls);
  });
});

// --- the GOAWAY sequence, seen by Node's HTTP/2 client ----------------------------

interface H2Server {
  readonly port: number;
  /** Streams the server answered, by id. */
  readonly answered: number[];
  /** Streams the server holds until `release()`. */
  hold: boolean;
  release(): void;
}

/** A TLS + HTTP/2 server whose connections `aging` ages; each stream is answered with 200 and its body. */
async function agedH2Server(aging: ConnectionAging): Promise<H2Server> {
  const pair = ca.issueServer();
  const h2 = http2.createServer();
  const held: (() => void)[] = [];
  const server: H2Server = {
    port: 0,
    answered: [],
    hold: false,
    release: () => {
      for (const answer of held.splice(0)) answer();
    },
  };
  h2.on('stream', (stream) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const answer = () => {
        if (stream.destroyed) return;
        server.answered.push(stream.id ?? -1);
        stream.respond({ ':status': 200 });
        stream.end(Buffer.concat(chunks));
      };
      if (server.hold) held.push(answer);
      else answer();
    });
  });
  const listener = tls.createServer({
    cert: pair.certificateChain,
    key: pair.privateKey,
    ca: ca.rootPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    ALPNProtocols: ['h2'],
  });
  listener.on('secureConnection', (socket) => {
    h2.emit('connection', socket);
    aging.track(socket);
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        aging.stop();
        listener.close(() => resolve());
      }),
  );
  return Object.assign(server, { port: (listener.address() as AddressInfo).port });
}

function connect(port: number): http2.ClientHttp2Session {
  const pair = ca.issueClient({ name: 'h2' });
  const session = http2.connect(`https://localhost:${port}`, {
    ca: ca.rootPem,
    cert: pair.certificateChain,
    key: pair.privateKey,
    minVersion: 'TLSv1.3',
  });
  session.on('error', () => {});
  cleanups.push(() => session.destroy());
  return session;
}

/** One request; resolves with its stream id and status once its response has ended. */
function request(
  session: http2.ClientHttp2Session,
  events: string[],
  body = 'hello',
): Promise<{ id: number; status: number | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': '/echo' });
    let status: number | undefined;
    const chunks: Buffer[] = [];
    stream.on('response', (headers) => {
      status = headers[':status'];
      events.push(`response ${stream.id}`);
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve({ id: stream.id ?? -1, status, body: Buffer.concat(chunks).toString() }));
    stream.on('error', reject);
    stream.end(body);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the GOAWAY sequence of an aged connection', () => {
  test('a due connection gets GOAWAY(2^31-1) when its next request arrives, then GOAWAY naming that request as the last stream, and serves it', async () => {
    // The quiet period is long: the only GOAWAY trigger in this test is the request.
    const aging = new ConnectionAging({ maxAgeMs: 100, graceMs: 10_000, quietMs: 600_000 });
    const server = await agedH2Server(aging);
    const session = connect(server.port);
    const events: string[] = [];
    const goaways = (count: number) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (events.filter((event) => event.startsWith('goaway')).length >= count) resolve();
        };
        session.on('goaway', check);
        check();
      });
    session.on('goaway', (code: number, lastStreamID: number) =>
      events.push(`goaway ${code} ${lastStreamID}`),
    );
    const first = await request(session, events);
    assert.equal(first.status, 200);
    // Past the age (at most 110 ms): the connection is due and waits for its next request.
    await sleep(400);
    assert.deepEqual(events, [`response ${first.id}`], 'no GOAWAY before the next request');
    // The server holds the answer, so the client stays to see both GOAWAYs first.
    server.hold = true;
    const second = request(session, events, 'after the age');
    await goaways(2);
    server.release();
    const served = await second;
    assert.equal(served.status, 200, 'the request that met the aging is served');
    assert.equal(served.body, 'after the age');
    assert.deepEqual(events, [
      `response ${first.id}`,
      `goaway 0 ${2 ** 31 - 1}`,
      `goaway 0 ${served.id}`,
      `response ${served.id}`,
    ]);
    assert.deepEqual(server.answered, [first.id, served.id]);
    await once(session, 'close');
  });

  test('the GOAWAY goes out ahead of the response to the request that met the aging', async () => {
    const aging = new ConnectionAging({ maxAgeMs: 100, graceMs: 10_000, quietMs: 600_000 });
    const server = await agedH2Server(aging);
    const session = connect(server.port);
    const events: string[] = [];
    session.on('goaway', (code: number, lastStreamID: number) =>
      events.push(`goaway ${code} ${lastStreamID}`),
    );
    const first = await request(session, events);
    await sleep(400);
    const second = await request(session, events, 'answered at once');
    assert.equal(second.status, 200);
    assert.deepEqual(events.slice(0, 3), [
      `response ${first.id}`,
      `goaway 0 ${2 ** 31 - 1}`,
      `response ${second.id}`,
    ]);
    assert.deepEqual(server.answered, [first.id, second.id]);
  });

  test('a connection with only a call in progress gets its GOAWAY after the quiet period, and the call finishes within the grace', async () => {
    const aging = new ConnectionAging({ maxAgeMs: 50, graceMs: 10_000, quietMs: 50 });
    const server = await agedH2Server(aging);
    const session = connect(server.port);
    const events: string[] = [];
    session.on('goaway', (code: number, lastStreamID: number) =>
      events.push(`goaway ${code} ${lastStreamID}`),
    );
    server.hold = true;
    const call = request(session, events, 'long');
    // No new request arrives: the GOAWAYs go out after the age and the quiet period.
    await new Promise<void>((resolve) => session.once('goaway', () => resolve()));
    server.release();
    const answered = await call;
    assert.equal(answered.status, 200, 'the call in progress finishes');
    assert.equal(answered.body, 'long');
    await once(session, 'close');
    assert.equal(events[0], `goaway 0 ${2 ** 31 - 1}`);
    assert.ok(events.includes(`goaway 0 ${answered.id}`), events.join(', '));
  });
});
