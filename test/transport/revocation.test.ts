// Revocation reaching live sessions: new handshakes refused, calls on open
// connections refused, open connections (running streams included) cut, and
// the two RevocationSources (a serial set, CRLs).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { RevocationSource } from '../../src/pki/revocation-source.ts';
import { CrlRevocationSource } from '../../src/transport/crl-revocation-source.ts';
import { normalizeSerial, RevocationSet } from '../../src/transport/revocation-set.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { refusal } from '../support/refusals.ts';
import {
  callUnary,
  closedAfterTests,
  echoService,
  ManualMaterialSource,
  type SeenIdentity,
  TestCa,
} from './fixtures.ts';

const hour = 3_600_000;
const ca = new TestCa('sigil revocation test CA', { intermediate: true });
const otherCa = new TestCa('some other CA');

const { start, client } = closedAfterTests();

function ticks(channel: grpc.Client): grpc.ClientReadableStream<Buffer> {
  return channel.makeServerStreamRequest(
    echoService.ticks.path,
    (b: Buffer) => b,
    (b: Buffer) => b,
    Buffer.alloc(0),
  );
}

describe('revocation enforcement', () => {
  test('revoking an intermediate by serial cuts the connections of the leaves beneath it, and refuses new ones', async () => {
    const revocations = new RevocationSet();
    const running = await start({
      material: new ManualMaterialSource(ca.material(ca.issueServer())),
      revocation: revocations,
    });
    const alice = ca.issueClient({ name: 'alice' });
    await callUnary(client(running.port, ca.rootPem, alice));
    const connection = running.server.connections.list().find((c) => c.chainSerials[0] === alice.serialHex);
    assert.ok(connection, 'the connection is tracked');
    // Node reports only the leaf on the server side (nodejs/node#65579); the
    // chain is completed from the CAs the server knows.
    assert.equal(connection.chainSerials[1], ca.intermediateSerial);
    const closed = once(connection.socket, 'close');
    revocations.revoke(ca.intermediateSerial!);
    await closed;
    const bob = ca.issueClient({ name: 'bob' });
    await assert.rejects(callUnary(client(running.port, ca.rootPem, bob)), { code: grpc.status.UNAVAILABLE });
  });

  test('a client revoked mid-stream: the stream ends with an error and the socket is closed', async () => {
    const revocations = new RevocationSet();
    const running = await start({
      material: new ManualMaterialSource(ca.material(ca.issueServer())),
      revocation: revocations,
    });
    const mallory = ca.issueClient({ name: 'mallory' });
    const channel = client(running.port, ca.rootPem, mallory);
    const stream = ticks(channel);
    const [first] = (await once(stream, 'data')) as [Buffer];
    assert.equal((JSON.parse(first.toString()) as SeenIdentity).serial, mallory.serialHex);
    await once(stream, 'data'); // the stream is really running

    const connection = running.server.connections.list().find((c) => c.chainSerials[0] === mallory.serialHex);
    assert.ok(connection, 'the connection is tracked');
    const streamError = new Promise<{ error: grpc.ServiceError; at: number }>((resolve) =>
      stream.on('error', (error: grpc.ServiceError) => resolve({ error, at: performance.now() })),
    );
    const socketClosed = new Promise<number>((resolve) =>
      connection.socket.once('close', () => resolve(performance.now())),
    );

    const revokedAt = performance.now();
    revocations.revoke(mallory.serialHex);
    assert.ok(connection.socket.destroyed, 'the socket is destroyed in the notification itself');
    assert.equal(running.server.connections.size, 0);

    const [{ error, at: errorAt }, closedAt] = await Promise.all([streamError, socketClosed]);
    assert.notEqual(error.code, grpc.status.OK);
    console.log(
      `revoke → server socket closed: ${(closedAt - revokedAt).toFixed(2)} ms; ` +
        `revoke → client stream error: ${(errorAt - revokedAt).toFixed(2)} ms ` +
        `(${grpc.status[error.code]}: ${error.details})`,
    );

    // And mallory cannot come back.
    const since = running.failures.length;
    await assert.rejects(callUnary(channel), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE);
    const failure = await eventually('a refused reconnection', () => running.failures[since]);
    assert.equal(failure.reason, 'CERT_REVOKED');
    assert.match(failure.message, new RegExp(mallory.serialHex));
  });

  test('revocation closes only the revoked client’s connections', async () => {
    const revocations = new RevocationSet();
    const running = await start({
      material: new ManualMaterialSource(ca.material(ca.issueServer())),
      revocation: revocations,
    });
    const alice = ca.issueClient({ name: 'alice' });
    const bob = ca.issueClient({ name: 'bob' });
    const aliceChannel = client(running.port, ca.rootPem, alice);
    const bobChannel = client(running.port, ca.rootPem, bob);
    await Promise.all([callUnary(aliceChannel), callUnary(bobChannel)]);
    assert.equal(running.server.connections.size, 2);
    revocations.revoke(bob.serialHex);
    assert.deepEqual(
      running.server.connections.list().map((c) => c.chainSerials[0]),
      [alice.serialHex],
    );
    await callUnary(aliceChannel);
  });

  test('calls on an existing connection from a revoked certificate fail with UNAUTHENTICATED naming the serial', async () => {
    // A source that never announces: only the per-call check can catch the revocation.
    const revoked = new Set<string>();
    const silent: RevocationSource = {
      isRevoked: (serial) => revoked.has(serial),
      subscribe: () => () => {},
    };
    let userInterceptorCalls = 0;
    const countingInterceptor: grpc.ServerInterceptor = (_method, call) =>
      new grpc.ServerInterceptingCall(call, {
        start: (next) =>
          next({
            onReceiveMetadata: (metadata, nextMetadata) => {
              userInterceptorCalls++;
              nextMetadata(metadata);
            },
          }),
      });
    const running = await start({
      material: new ManualMaterialSource(ca.material(ca.issueServer())),
      revocation: silent,
      interceptors: [countingInterceptor],
    });
    const eve = ca.issueClient({ name: 'eve' });
    const channel = client(running.port, ca.rootPem, eve);
    await callUnary(channel);
    assert.equal(userInterceptorCalls, 1);

    revoked.add(eve.serialHex);
    const error = await failureOf(callUnary(channel), 'a call from a revoked certificate');
    assert.equal(error.code, grpc.status.UNAUTHENTICATED);
    assert.equal(error.details, `certificate serial ${eve.serialHex} is revoked`);
    assert.equal(userInterceptorCalls, 1, "the user's interceptor did not run for the refused call");
    assert.equal(running.server.connections.size, 1, 'the connection itself was not cut by the interceptor');
  });

  test('a CRL source update cuts the connections of newly revoked certificates', async () => {
    const crlSource = new CrlRevocationSource({
      issuers: [ca.rootPem, ca.intermediatePem!],
      crls: ca.crls(),
    });
    const running = await start({
      material: new ManualMaterialSource(ca.material(ca.issueServer())),
      revocation: crlSource,
    });
    const trent = ca.issueClient({ name: 'trent' });
    const channel = client(running.port, ca.rootPem, trent);
    await callUnary(channel);
    const [connection] = running.server.connections.list();
    const fresh = crlSource.update(
      ca.crls([{ serialHex: trent.serialHex, revokedAt: new Date(), reason: 'keyCompromise' }]),
    );
    assert.deepEqual(fresh, [trent.serialHex]);
    assert.ok(connection.socket.destroyed);
    await assert.rejects(callUnary(channel));
  });
});

describe('RevocationSet', () => {
  test('normalizes serials and announces only newly revoked ones', () => {
    const set = new RevocationSet(['00AB']);
    const heard: (readonly string[])[] = [];
    const unsubscribe = set.subscribe((serials) => heard.push(serials));
    assert.ok(set.isRevoked('ab'));
    assert.deepEqual(set.revoke(['ab', '0C:D0', 'cd0']), ['cd0']);
    assert.deepEqual(heard, [['cd0']]);
    assert.deepEqual(set.revoke('cd0'), []);
    assert.equal(heard.length, 1, 'nothing new, nothing announced');
    unsubscribe();
    set.revoke('ef');
    assert.equal(heard.length, 1);
    assert.equal(set.size, 3);
  });

  test('refuses something that is not a serial, and changes nothing', () => {
    const set = new RevocationSet();
    assert.throws(() => set.revoke(['ab', 'not-a-serial']), refusal('invalid_argument'));
    assert.equal(set.size, 0);
    assert.equal(normalizeSerial('00:0A:1B'), 'a1b');
  });

  test('a failing listener does not keep revocation from the others', () => {
    const set = new RevocationSet();
    const heard: string[] = [];
    set.subscribe(() => {
      throw new Error('broken listener');
    });
    set.subscribe((serials) => heard.push(...serials));
    assert.throws(() => set.revoke('ab'), /broken listener/);
    assert.deepEqual(heard, ['ab']);
    assert.ok(set.isRevoked('ab'));
  });
});

describe('CrlRevocationSource', () => {
  const issuers = [ca.rootPem, ca.intermediatePem!];
  const entry = (serialHex: string) => ({
    serialHex,
    revokedAt: new Date(),
    reason: 'keyCompromise' as const,
  });

  test('answers from the CRLs and announces newly revoked serials', () => {
    const source = new CrlRevocationSource({ issuers, crls: ca.crls([entry('0a1b')]) });
    assert.ok(source.isRevoked('a1b'));
    const heard: (readonly string[])[] = [];
    source.subscribe((serials) => heard.push(serials));
    assert.deepEqual(source.update(ca.crls([entry('a1b'), entry('c2d')])), ['c2d']);
    assert.deepEqual(heard, [['c2d']]);
  });

  test('refuses an expired CRL; the previous CRL stays', () => {
    const source = new CrlRevocationSource({ issuers, crls: ca.crls([entry('a1')]) });
    const expired = ca.crls([entry('a1'), entry('b2')], {
      thisUpdate: new Date(Date.now() - 2 * hour),
      nextUpdate: new Date(Date.now() - hour),
    });
    assert.throws(
      () => source.update(expired),
      refusal('failed_precondition', /CRL #1 from ".*intermediate.*" expired at .*keeping the previous CRL/),
    );
    assert.ok(source.isRevoked('a1'));
    assert.ok(!source.isRevoked('b2'), 'nothing from the refused CRL was applied');
  });

  test('refuses a CRL not signed by the configured CA; the previous CRL stays', () => {
    const source = new CrlRevocationSource({ issuers, crls: ca.crls([entry('a1')]) });
    assert.throws(
      () => source.update(otherCa.crls([entry('b2')])),
      refusal(null, /CRL #1 from ".*other CA" is not signed by any configured CA/),
    );
    assert.ok(source.isRevoked('a1'));
    assert.ok(!source.isRevoked('b2'));
  });

  test('refuses an older CRL than the one in use (a replay would un-revoke)', () => {
    const older = ca.crls([]);
    const newer = ca.crls([entry('a1')]);
    const source = new CrlRevocationSource({ issuers, crls: newer });
    assert.throws(() => source.update(older), /older than the .* in use/);
    assert.ok(source.isRevoked('a1'));
  });
});
