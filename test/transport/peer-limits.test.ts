// Issue #10, "streams and connections are bounded per peer": one node opened
// 20,000 WatchRevocations streams on one connection. MtlsServer now counts
// calls per connection and per identity, and connections per identity, and
// refuses what is over a limit (RESOURCE_EXHAUSTED naming the limit; a
// connection with the TLS alert access_denied), never queueing it. Each
// test opens a bounded number (cap 16, open 20) and checks that the streams
// already running keep working.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { dnsName, uriName } from '../../src/pki/names.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import {
  anonymousPeerKey,
  http2StreamLimit,
  PeerLimits,
  peerKeyOf,
} from '../../src/transport/peer-limits.ts';
import { eventually } from '../support/eventually.ts';
import { bytes } from '../support/raw-methods.ts';
import { refusal } from '../support/refusals.ts';
import {
  callUnary,
  closedAfterTests,
  echoService,
  type IssuedPair,
  ManualMaterialSource,
  TestCa,
} from './fixtures.ts';

const ca = new TestCa('sigil peer-limits test CA', { intermediate: true });
const serverPair = ca.issueServer();
const { start, client, closeLater } = closedAfterTests();

interface OpenStream {
  /** Resolves on the first message, rejects with the refusal. */
  readonly first: Promise<void>;
  /** Messages received so far. */
  received(): number;
  cancel(): void;
}

/** A server stream of the echo service (it ticks every 20 ms until cancelled). */
function openTicks(channel: grpc.Client): OpenStream {
  const stream = channel.makeServerStreamRequest(echoService.ticks.path, bytes, bytes, Buffer.alloc(0));
  let count = 0;
  let cancelled = false;
  const first = new Promise<void>((resolve, reject) => {
    stream.on('data', () => {
      count++;
      resolve();
    });
    stream.on('error', (error: grpc.ServiceError) => {
      if (!cancelled) reject(error);
    });
  });
  first.catch(() => {}); // observed by the test through `first` itself
  return {
    first,
    received: () => count,
    cancel: () => {
      cancelled = true;
      stream.cancel();
    },
  };
}

/** Splits streams into those that run and the refusals, once each has either sent data or failed. */
async function settle(streams: readonly OpenStream[]) {
  const outcomes = await Promise.all(
    streams.map((s) =>
      s.first.then(
        () => null,
        (error: grpc.ServiceError) => error,
      ),
    ),
  );
  return {
    running: streams.filter((_s, i) => outcomes[i] === null),
    refused: outcomes.filter((o): o is grpc.ServiceError => o !== null),
  };
}

/** Waits until every stream in `streams` has received more messages than it had. */
async function stillTicking(streams: readonly OpenStream[]): Promise<void> {
  const before = streams.map((s) => s.received());
  await eventually('the running streams to keep receiving', () =>
    streams.every((s, i) => s.received() > before[i]) ? true : undefined,
  );
}

function channelFor(port: number, pair: IssuedPair): grpc.Client {
  // A channel of its own (its own connection) per call site.
  return client(port, ca.rootPem, pair, { 'grpc.use_local_subchannel_pool': 1 });
}

describe('peer limits: calls per connection', () => {
  test('cap 16, 20 streams on one connection: 16 run, 4 are refused with RESOURCE_EXHAUSTED naming maxStreamsPerConnection, and the 16 keep working', async () => {
    const running = await start({
      material: new ManualMaterialSource(ca.material(serverPair)),
      peerLimits: { maxStreamsPerConnection: 16, maxStreamsPerIdentity: 1000 },
    });
    const channel = channelFor(running.port, ca.issueClient({ name: 'greedy' }));
    // Open one first so that the channel is connected and the rest share its connection.
    const opener = openTicks(channel);
    await opener.first;
    const streams = [opener, ...Array.from({ length: 19 }, () => openTicks(channel))];
    const { running: ok, refused } = await settle(streams);
    assert.equal(ok.length, 16, `${ok.length} streams run`);
    assert.equal(refused.length, 4);
    for (const error of refused) {
      assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED, error.details);
      assert.match(error.details, /16 calls in progress.*maxStreamsPerConnection/);
    }
    assert.equal(running.server.connections.size, 1, 'all on one connection');
    await stillTicking(ok);
    // A unary call on the same connection is refused too while 16 are running…
    const unary = await callUnary(channel).then(
      () => assert.fail('a 17th call ran'),
      (error: grpc.ServiceError) => error,
    );
    assert.equal(unary.code, grpc.status.RESOURCE_EXHAUSTED);
    // …and runs once one of them ends.
    ok[0].cancel();
    await eventually('a slot to free up', () =>
      running.server.peerLimits.trackedStreams === 15 ? true : undefined,
    );
    await callUnary(channel);
    for (const s of ok) s.cancel();
    await eventually('every call to be released', () =>
      running.server.peerLimits.trackedStreams === 0 ? true : undefined,
    );
  });

  test('the server announces SETTINGS_MAX_CONCURRENT_STREAMS above the cap, so HTTP/2 itself refuses a client that ignores the refusals', async () => {
    const running = await start({
      material: new ManualMaterialSource(ca.material(serverPair)),
      peerLimits: { maxStreamsPerConnection: 16 },
    });
    const pair = ca.issueClient({ name: 'raw-http2' });
    const session = http2.connect(`https://localhost:${running.port}`, {
      ca: ca.rootPem,
      cert: pair.certificateChain,
      key: pair.privateKey,
      minVersion: 'TLSv1.3',
    });
    closeLater(() => session.destroy());
    const [settings] = (await once(session, 'remoteSettings')) as [http2.Settings];
    assert.equal(settings.maxConcurrentStreams, http2StreamLimit(16));
    assert.equal(http2StreamLimit(16), 32);
  });
});

describe('peer limits: calls per identity', () => {
  test('cap 16 across two connections of one identity: 4 of 20 refused naming maxStreamsPerIdentity; another identity is unaffected', async () => {
    const running = await start({
      material: new ManualMaterialSource(ca.material(serverPair)),
      peerLimits: { maxStreamsPerConnection: 100, maxStreamsPerIdentity: 16 },
    });
    const node = ca.issueClient({ name: 'node/7' });
    // The same SPIFFE ID on its next certificate: one identity, one budget.
    const renewed = ca.issueClient({ name: 'node/7' });
    const a = channelFor(running.port, node);
    const b = channelFor(running.port, renewed);
    const firstA = openTicks(a);
    const firstB = openTicks(b);
    await Promise.all([firstA.first, firstB.first]);
    const streams = [
      firstA,
      firstB,
      ...Array.from({ length: 9 }, () => openTicks(a)),
      ...Array.from({ length: 9 }, () => openTicks(b)),
    ];
    const { running: ok, refused } = await settle(streams);
    assert.equal(ok.length, 16);
    assert.equal(refused.length, 4);
    for (const error of refused) {
      assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED, error.details);
      assert.match(
        error.details,
        /spiffe:\/\/test\.sigil\/node\/7 already has 16 calls in progress.*maxStreamsPerIdentity/,
      );
    }
    assert.equal(running.server.connections.size, 2);
    assert.equal(running.server.peerLimits.streamsOf('id spiffe://test.sigil/node/7'), 16);
    // Someone else still gets in.
    const other = openTicks(channelFor(running.port, ca.issueClient({ name: 'node/8' })));
    await other.first;
    await stillTicking(ok);
    for (const s of [...ok, other]) s.cancel();
    await eventually('every call to be released', () =>
      running.server.peerLimits.trackedStreams === 0 ? true : undefined,
    );
  });
});

describe('peer limits: connections per identity', () => {
  test('cap 4, 6 connections of one identity: 2 are closed at admission with the alert access_denied and a logged reason; the 4 keep working', async () => {
    const running = await start({
      material: new ManualMaterialSource(ca.material(serverPair)),
      peerLimits: { maxConnectionsPerIdentity: 4 },
    });
    const pair = ca.issueClient({ name: 'many' });
    const channels = Array.from({ length: 6 }, () => channelFor(running.port, pair));
    const results = [];
    // One at a time, so which ones are over the cap is deterministic.
    for (const channel of channels) {
      const result = await callUnary(channel).then(
        () => null,
        (error: grpc.ServiceError) => error,
      );
      // A refused channel would keep reconnecting in the background (and be refused again).
      if (result !== null) channel.close();
      results.push(result);
    }
    assert.deepEqual(
      results.map((r) => r === null),
      [true, true, true, true, false, false],
    );
    for (const error of results.slice(4)) {
      assert.equal(error?.code, grpc.status.UNAVAILABLE);
      assert.match(String(error?.details), /alert access denied/);
    }
    const refusals = running.failures.filter((f) => f.reason === 'TOO_MANY_CONNECTIONS');
    assert.ok(refusals.length >= 2, `${refusals.length} refusals reported`);
    for (const failure of refusals) {
      assert.match(failure.message, /already has 4 open connections.*maxConnectionsPerIdentity/);
      assert.equal(failure.alert, 'access_denied');
      assert.equal(failure.spiffeId, pair.spiffeId);
      assert.equal(failure.serial, pair.serialHex);
    }
    assert.equal(running.server.connections.size, 4);
    for (const channel of channels.slice(0, 4)) await callUnary(channel);
    // Another identity connects; and once one of the four closes, the identity may connect again.
    await callUnary(channelFor(running.port, ca.issueClient({ name: 'someone-else' })));
    channels[0].close();
    await eventually('the closed connection to be forgotten', () =>
      running.server.peerLimits.connectionsOf(`id ${pair.spiffeId}`) === 3 ? true : undefined,
    );
    await callUnary(channelFor(running.port, pair));
  });

  test('clients without a certificate (public methods) are counted per remote address', async () => {
    const running = await start({
      material: new ManualMaterialSource(ca.material(serverPair)),
      publicMethods: [echoService.unary.path],
      peerLimits: { maxConnectionsPerIdentity: 2 },
    });
    const anonymous = () => client(running.port, ca.rootPem, null, { 'grpc.use_local_subchannel_pool': 1 });
    const channels = [anonymous(), anonymous(), anonymous()];
    const results = [];
    for (const channel of channels) {
      const result = await callUnary(channel).then(
        () => null,
        (error: grpc.ServiceError) => error,
      );
      if (result?.code === grpc.status.UNAVAILABLE) channel.close();
      results.push(result);
    }
    // The echo handler refuses anonymous callers (UNAUTHENTICATED) but the first two were let in to call it.
    assert.equal(results[0]?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(results[1]?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(results[2]?.code, grpc.status.UNAVAILABLE);
    assert.match(String(results[2]?.details), /alert access denied/);
    assert.equal(running.server.peerLimits.connectionsOf(anonymousPeerKey('127.0.0.1').key), 2);
    // A client with a certificate is another identity.
    await callUnary(channelFor(running.port, ca.issueClient({ name: 'enrolled' })));
  });
});

describe('peer limits: what one identity is', () => {
  const td = 'test.sigil';
  const delegatedLeaf = (uri: string | null) => {
    const pair = ca.issue({
      name: 'delegated',
      profile: 'client',
      withoutSpiffeId: true,
      sans: uri === null ? [dnsName('unnamed.example')] : [uriName(uri)],
    });
    return { issuedBy: 'delegated' as const, chain: [pair.der], leafFingerprint: pair.serialHex };
  };

  test('every leaf beneath one deployment-issued delegation is the same identity: its whole subtree', () => {
    const keys = [
      `spiffe://alice.d.${td}`,
      `spiffe://alice.d.${td}/web`,
      `spiffe://carol.alice.d.${td}/db`,
      `spiffe://x.dan.alice.d.${td}`,
    ].map((uri) => peerKeyOf(delegatedLeaf(uri), td));
    assert.deepEqual(new Set(keys.map((k) => k.key)), new Set(['delegation alice']));
    assert.match(keys[0].name, /delegation alice/);
    assert.equal(peerKeyOf(delegatedLeaf(`spiffe://bob.d.${td}/web`), td).key, 'delegation bob');
  });

  test('a delegated leaf without a plain SPIFFE ID shares one budget with every other such leaf', () => {
    assert.equal(peerKeyOf(delegatedLeaf(null), td).key, 'delegated');
    assert.equal(peerKeyOf(delegatedLeaf('https://example.com/x'), td).key, 'delegated');
    // Not beneath the delegation label: never its own identity.
    assert.equal(peerKeyOf(delegatedLeaf(`spiffe://${td}/admin/mallory`), td).key, 'delegated');
    assert.equal(peerKeyOf(delegatedLeaf(`spiffe://alice.d.${td}/x`), null).key, 'delegated');
  });

  test('a deployment identity is its SPIFFE ID, else its own certificate', () => {
    const first = ca.issueClient({ name: 'node/1' });
    const second = ca.issueClient({ name: 'node/1' });
    const key = (pair: IssuedPair) =>
      peerKeyOf({ issuedBy: 'deployment', chain: [pair.der], leafFingerprint: pair.serialHex }, td).key;
    assert.equal(key(first), 'id spiffe://test.sigil/node/1');
    assert.equal(key(second), key(first));
    const unnamed = ca.issueClient({ name: 'x', withoutSpiffeId: true, sans: [dnsName('x.example')] });
    assert.equal(key(unnamed), `leaf ${unnamed.serialHex}`);
  });

  test('limits must be positive whole numbers', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      assert.throws(
        () => new PeerLimits({ maxStreamsPerIdentity: bad }),
        refusal(null, /maxStreamsPerIdentity/),
      );
    }
    assert.throws(
      () =>
        new MtlsServer({
          material: new ManualMaterialSource(ca.material(serverPair)),
          peerLimits: { maxConnectionsPerIdentity: 0 },
        }),
      /maxConnectionsPerIdentity/,
    );
  });
});
