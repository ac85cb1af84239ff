// sigil's mTLS server over real sockets with real grpc-js clients: who gets
// in, what handlers see, and how material is replaced while it serves.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { SigilError } from '../../src/errors.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { peerIdentity } from '../../src/transport/peer-identity.ts';
import { cancellationOnly } from '../support/cancellation.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { refusal } from '../support/refusals.ts';
import {
  callUnary,
  closedAfterTests,
  describeIdentity,
  EchoClient,
  echoImplementation,
  echoService,
  ManualMaterialSource,
  type RunningServer,
  type SeenIdentity,
  TestCa,
} from './fixtures.ts';

const hour = 3_600_000;
const ca = new TestCa('sigil mtls-server test CA', { intermediate: true });
const otherCa = new TestCa('some other CA');

const { start, client, closeLater } = closedAfterTests();

function seen(response: Buffer): SeenIdentity {
  return JSON.parse(response.toString()) as SeenIdentity;
}

/** A unary call that must fail; returns its error. */
async function refusedCall(target: grpc.Client): Promise<grpc.ServiceError> {
  const error = await failureOf(callUnary(target));
  assert.equal(error.code, grpc.status.UNAVAILABLE, `unexpected status: ${error.code} ${error.details}`);
  return error;
}

describe('MtlsServer: peer identity', () => {
  test('unary and streaming handlers and interceptors see the client SPIFFE ID, serial and chain', async () => {
    const interceptorSaw: SeenIdentity[] = [];
    const recordIdentity: grpc.ServerInterceptor = (_method, call) =>
      new grpc.ServerInterceptingCall(call, {
        start: (next) =>
          next({
            onReceiveMetadata: (metadata, nextMetadata) => {
              interceptorSaw.push(describeIdentity(peerIdentity(call)));
              nextMetadata(metadata);
            },
          }),
      });
    const running = await start({
      material: new ManualMaterialSource(ca.material(ca.issueServer())),
      interceptors: [recordIdentity],
    });
    const alice = ca.issueClient({ name: 'alice' });
    const channel = client(running.port, ca.rootPem, alice);

    const unary = seen((await callUnary(channel)).response);
    assert.equal(unary.spiffeId, 'spiffe://test.sigil/alice');
    assert.equal(unary.serial, alice.serialHex);
    assert.equal(unary.leafDerHex, alice.der.toString('hex'), 'chain[0] is the client leaf');
    assert.ok(unary.chainLength >= 1);
    assert.ok(unary.parsedOnce, 'the handler found its connection in the registry');

    const stream = channel.makeServerStreamRequest(
      echoService.ticks.path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
    );
    const streamErrors = cancellationOnly(stream);
    const [first] = (await once(stream, 'data')) as [Buffer];
    stream.cancel();
    const streaming = seen(first);
    assert.equal(streaming.spiffeId, 'spiffe://test.sigil/alice');
    assert.equal(streaming.serial, alice.serialHex);
    assert.ok(streaming.parsedOnce);

    assert.equal(interceptorSaw.length, 2, 'the interceptor ran for both calls');
    for (const identity of interceptorSaw) {
      assert.equal(identity.spiffeId, 'spiffe://test.sigil/alice');
      assert.equal(identity.serial, alice.serialHex);
      assert.equal(identity.leafDerHex, alice.der.toString('hex'));
    }
    assert.equal(running.server.connections.size, 1);
    const [connection] = running.server.connections.list();
    assert.equal(connection.chainSerials[0], alice.serialHex);
    assert.deepEqual(streamErrors, [], 'the stream failed');
  });

  test('two clients on one server each see their own identity', async () => {
    const running = await start({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
    const bob = ca.issueClient({ name: 'bob' });
    const carol = ca.issueClient({ name: 'carol' });
    const [b, c] = await Promise.all([
      callUnary(client(running.port, ca.rootPem, bob)),
      callUnary(client(running.port, ca.rootPem, carol)),
    ]);
    assert.equal(seen(b.response).spiffeId, 'spiffe://test.sigil/bob');
    assert.equal(seen(c.response).spiffeId, 'spiffe://test.sigil/carol');
  });
});

describe('MtlsServer: refusals', () => {
  let running: RunningServer;
  const serverPair = ca.issueServer();

  test('setup', async () => {
    running = await start({ material: new ManualMaterialSource(ca.material(serverPair)) });
  });

  /** The reason of the first handshake failure reported after `since` (an index into failures). */
  async function nextFailure(since: number): Promise<string> {
    const failure = await eventually('a handshake failure report', () => running.failures[since]);
    return failure.reason;
  }

  test('refuses a client certificate from another CA', async () => {
    const since = running.failures.length;
    const stranger = otherCa.issueClient({ name: 'stranger' });
    await refusedCall(client(running.port, ca.rootPem, stranger));
    assert.match(await nextFailure(since), /^UNABLE_TO_(GET_ISSUER_CERT_LOCALLY|VERIFY_LEAF_SIGNATURE)$/);
  });

  test('refuses an expired client certificate', async () => {
    const since = running.failures.length;
    const expired = ca.issueClient({ name: 'expired', now: new Date(Date.now() - 2 * hour), ttlMs: hour });
    await refusedCall(client(running.port, ca.rootPem, expired));
    assert.equal(await nextFailure(since), 'CERT_HAS_EXPIRED');
  });

  test('refuses a client certificate with a serverAuth-only EKU', async () => {
    const since = running.failures.length;
    const serverOnly = ca.issue({ name: 'server-only', profile: 'server' });
    await refusedCall(client(running.port, ca.rootPem, serverOnly));
    assert.equal(await nextFailure(since), 'INVALID_PURPOSE');
  });

  test('refuses a client without a certificate', async () => {
    const since = running.failures.length;
    await refusedCall(client(running.port, ca.rootPem, null));
    assert.equal(await nextFailure(since), 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
    assert.equal(running.server.connections.size, 0);
  });

  test('refuses a plaintext client', async () => {
    const since = running.failures.length;
    const plaintext = new EchoClient(`127.0.0.1:${running.port}`, grpc.credentials.createInsecure());
    closeLater(() => plaintext.close());
    const error = await failureOf(callUnary(plaintext), 'a plaintext call');
    assert.notEqual(error.code, grpc.status.OK);
    const reason = await nextFailure(since);
    assert.match(reason, /^ERR_SSL_/);
    console.log(
      `plaintext client refused: ${reason}; client saw ${grpc.status[error.code]}: ${error.details}`,
    );
  });

  test('refuses a TLS 1.2-only client', async () => {
    const since = running.failures.length;
    const alice = ca.issueClient({ name: 'alice' });
    const socket = tls.connect({
      host: '127.0.0.1',
      port: running.port,
      servername: 'localhost',
      ca: ca.rootPem,
      cert: alice.certificateChain,
      key: alice.privateKey,
      ALPNProtocols: ['h2'],
      maxVersion: 'TLSv1.2',
    });
    socket.on('secureConnect', () => assert.fail('a TLS 1.2 handshake completed'));
    const [error] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
    assert.match(String(error.code), /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL/);
    assert.equal(await nextFailure(since), 'ERR_SSL_UNSUPPORTED_PROTOCOL');
  });

  test('a valid client still gets in after all the refusals', async () => {
    const alice = ca.issueClient({ name: 'alice' });
    const result = await callUnary(client(running.port, ca.rootPem, alice));
    assert.equal(seen(result.response).serial, alice.serialHex);
    assert.equal(result.serverSerial, serverPair.serialHex);
  });

  test('does not resume TLS sessions: every connection is verified against current material', async () => {
    const alice = ca.issueClient({ name: 'alice' });
    const connect = (session?: Buffer) =>
      new Promise<{ reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
        let saved: Buffer | undefined;
        const socket = tls.connect({
          host: '127.0.0.1',
          port: running.port,
          servername: 'localhost',
          ca: ca.rootPem,
          cert: alice.certificateChain,
          key: alice.privateKey,
          ALPNProtocols: ['h2'],
          session,
        });
        socket.on('session', (s: Buffer) => {
          saved = s;
        });
        socket.on('error', reject);
        socket.on('secureConnect', () => {
          const reused = socket.isSessionReused();
          // Give a NewSessionTicket time to arrive, then hang up.
          setTimeout(() => socket.end(), 50);
          socket.on('close', () => resolve({ reused, session: saved }));
        });
        socket.resume();
      });
    const first = await connect();
    assert.equal(first.reused, false);
    assert.ok(first.session, 'the client got a session it could try to resume');
    const second = await connect(first.session);
    assert.equal(second.reused, false, 'a session was resumed');
  });
});

describe('MtlsServer: rotation', () => {
  test('hot rotation: established connections keep working, new connections see the new certificate and bundle', async () => {
    const oldPair = ca.issueServer();
    const source = new ManualMaterialSource(ca.material(oldPair));
    const rotated: string[] = [];
    const running = await start({
      material: source,
      onRotated: (material) => rotated.push(material.leaf.serialHex),
    });
    const alice = ca.issueClient({ name: 'alice' });
    const established = client(running.port, ca.rootPem, alice);
    assert.equal((await callUnary(established)).serverSerial, oldPair.serialHex);

    // New server certificate, and a bundle that now also trusts another CA.
    const newPair = ca.issueServer();
    source.push(ca.material(newPair, { trustBundle: ca.rootPem + otherCa.rootPem }));
    assert.deepEqual(rotated, [newPair.serialHex]);
    assert.equal(running.server.material.leaf.serialHex, newPair.serialHex);
    assert.deepEqual(running.errors, []);

    for (let i = 0; i < 5; i++) {
      const result = await callUnary(established);
      assert.equal(result.serverSerial, oldPair.serialHex, 'the established connection was kept');
    }
    assert.equal(running.server.connections.size, 1);

    const fresh = await callUnary(client(running.port, ca.rootPem, ca.issueClient({ name: 'bob' })));
    assert.equal(fresh.serverSerial, newPair.serialHex);
    const stranger = otherCa.issueClient({ name: 'now-trusted' });
    const fromOtherCa = await callUnary(client(running.port, ca.rootPem, stranger));
    assert.equal(seen(fromOtherCa.response).spiffeId, 'spiffe://test.sigil/now-trusted');
    assert.equal(running.server.connections.size, 3);
  });

  test('refuses rotation to a mismatched key and certificate pair; the old material keeps serving', async () => {
    const oldPair = ca.issueServer();
    const source = new ManualMaterialSource(ca.material(oldPair));
    const running = await start({ material: source });
    const newPair = ca.issueServer();
    const unrelated = ca.issueServer();
    source.push({ ...ca.material(newPair), privateKey: unrelated.privateKey });

    assert.equal(running.errors.length, 1);
    const [error] = running.errors;
    assert.ok(error instanceof SigilError);
    assert.equal(error.code, 'failed_precondition');
    assert.match(error.message, /refused new TLS material.*private key does not match/);
    assert.doesNotMatch(error.message, /PRIVATE KEY/, 'no key material in the message');
    assert.equal(running.server.material.leaf.serialHex, oldPair.serialHex);

    const result = await callUnary(client(running.port, ca.rootPem, ca.issueClient({ name: 'alice' })));
    assert.equal(result.serverSerial, oldPair.serialHex, 'a new client sees the OLD certificate');
  });

  test('refuses an expired CRL on rotation; the previous CRL stays', async () => {
    const serverPair = ca.issueServer();
    const source = new ManualMaterialSource(ca.material(serverPair, { crls: ca.crls() }));
    const running = await start({ material: source });
    const alice = ca.issueClient({ name: 'alice' });
    assert.equal(
      seen((await callUnary(client(running.port, ca.rootPem, alice))).response).serial,
      alice.serialHex,
    );

    // An expired CRL (that would also revoke alice): refused, because OpenSSL
    // would reject every handshake with it.
    const expired = ca.crls(
      [{ serialHex: alice.serialHex, revokedAt: new Date(), reason: 'keyCompromise' }],
      {
        thisUpdate: new Date(Date.now() - 2 * hour),
        nextUpdate: new Date(Date.now() - hour),
      },
    );
    source.push(ca.material(serverPair, { crls: expired }));
    assert.equal(running.errors.length, 1);
    assert.match(running.errors[0].message, /refused new TLS material.*CRL #1 .*expired/);
    assert.notEqual(running.server.material.crls[0].nextUpdate, null);
    assert.ok(running.server.material.crls.every((crl) => (crl.nextUpdate?.getTime() ?? 0) > Date.now()));

    // The previous (valid, empty) CRL still governs new handshakes: alice gets in.
    const again = await callUnary(client(running.port, ca.rootPem, alice));
    assert.equal(seen(again.response).serial, alice.serialHex);
  });

  test('CRLs in the material refuse a revoked client at the handshake', async () => {
    const serverPair = ca.issueServer();
    const revoked = ca.issueClient({ name: 'revoked' });
    const crls = ca.crls([{ serialHex: revoked.serialHex, revokedAt: new Date(), reason: 'keyCompromise' }]);
    const running = await start({ material: new ManualMaterialSource(ca.material(serverPair, { crls })) });
    await refusedCall(client(running.port, ca.rootPem, revoked));
    await eventually('CERT_REVOKED', () => running.failures.find((f) => f.reason === 'CERT_REVOKED'));
    const fine = ca.issueClient({ name: 'fine' });
    assert.equal(
      seen((await callUnary(client(running.port, ca.rootPem, fine))).response).serial,
      fine.serialHex,
    );
  });

  test('max connection age closes idle long-lived connections, so clients reconnect and pick up new material', async () => {
    const oldPair = ca.issueServer();
    const source = new ManualMaterialSource(ca.material(oldPair));
    const running = await start({ material: source, maxConnectionAgeMs: 300, maxConnectionAgeGraceMs: 100 });
    assert.equal(running.server.maxConnectionAgeMs, 300);
    const channel = client(running.port, ca.rootPem, ca.issueClient({ name: 'long-lived' }));
    assert.equal((await callUnary(channel)).serverSerial, oldPair.serialHex);
    const [firstConnection] = running.server.connections.list();
    const firstClosed = once(firstConnection.socket, 'close');

    const newPair = ca.issueServer();
    source.push(ca.material(newPair));
    // The same grpc-js client, idle between calls, ends up on a new connection with the new certificate.
    await eventually('the client to reconnect to the new certificate', async () => {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const result = await callUnary(channel);
      return result.serverSerial === newPair.serialHex ? true : undefined;
    });
    await firstClosed;
    assert.ok(!running.server.connections.list().includes(firstConnection));
  });

  test('the default connection age is half the leaf lifetime', async () => {
    const pair = ca.issueServer({ ttlMs: 2 * hour });
    const server = new MtlsServer({ material: new ManualMaterialSource(ca.material(pair)) });
    closeLater(() => server.close(0));
    const leaf = server.material.leaf;
    assert.equal(
      server.maxConnectionAgeMs,
      Math.floor((leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 2),
    );
  });

  test('refuses to start with invalid material', () => {
    const pair = ca.issueServer();
    const unrelated = ca.issueServer();
    assert.throws(
      () =>
        new MtlsServer({
          material: new ManualMaterialSource({ ...ca.material(pair), privateKey: unrelated.privateKey }),
        }),
      refusal(null, /does not match/),
    );
  });
});

describe('MtlsServer: close', () => {
  test('listen rejects when the port is taken', async () => {
    const running = await start({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
    const second = new MtlsServer({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
    closeLater(() => second.close(0));
    await assert.rejects(second.listen('127.0.0.1', running.port), /EADDRINUSE/);
  });

  test('close drains running calls and ends streams after the grace period', async () => {
    const server = new MtlsServer({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
    server.addService(echoService, echoImplementation);
    const port = await server.listen();
    const channel = client(port, ca.rootPem, ca.issueClient({ name: 'alice' }));
    await callUnary(channel);
    const stream = channel.makeServerStreamRequest(
      echoService.ticks.path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
    );
    await once(stream, 'data');
    const ended = new Promise((resolve) => stream.on('error', resolve).on('end', resolve));
    await server.close(100);
    await ended;
    assert.equal(server.connections.size, 0);
    await assert.rejects(server.listen(), /closed/);
  });
});
