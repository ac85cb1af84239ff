// channelCredentials(): TLS 1.3 only, client identity from a MaterialSource,
// server checked by name, and identity and trust bundle rotation without
// recreating the grpc-js client. The peers are plain node:tls servers.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { EmbeddedCA, type IssuedLeaf } from '../../src/transport/embedded-ca.ts';
import { MaterialProvider } from '../../src/transport/material-provider.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import {
  startTlsGrpcPeer,
  type TlsGrpcPeer,
  waitUntilDisconnected,
  whoAmI,
  whoAmIClient,
  whoAmIError,
} from './client-fixtures.ts';

const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'] });
const otherCa = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'] });
after(() => {
  ca.close();
  otherCa.close();
});

function clientMaterial(leaf: IssuedLeaf, trustBundle = ca.chainPem()): TlsMaterial {
  return { certificateChain: leaf.certificateChain, privateKey: leaf.privateKey, trustBundle };
}

async function peerWith(server: IssuedLeaf, trusted = ca.chainPem()): Promise<TlsGrpcPeer> {
  return startTlsGrpcPeer({ cert: server.certificateChain, key: server.privateKey, ca: trusted });
}

describe('channelCredentials', () => {
  test('a mutual TLS 1.3 call presents the client certificate', async (t) => {
    const peer = await peerWith(ca.issueServer());
    t.after(() => peer.close());
    const client = ca.issueClient('alice');
    const grpcClient = whoAmIClient(
      peer.port,
      channelCredentials({ material: new StaticMaterialSource(clientMaterial(client)) }),
    );
    t.after(() => grpcClient.close());
    assert.equal(await whoAmI(grpcClient), client.serial);
  });

  test('a server certificate for another name is refused by the client', async (t) => {
    const peer = await peerWith(ca.issueServer({ addresses: ['other.example'] }));
    t.after(() => peer.close());
    const material = new StaticMaterialSource(clientMaterial(ca.issueClient()));
    const grpcClient = whoAmIClient(peer.port, channelCredentials({ material }));
    t.after(() => grpcClient.close());
    const error = await whoAmIError(grpcClient);
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    assert.match(error.details, /not valid for "127\.0\.0\.1"/);
    assert.match(error.details, /other\.example/);
  });

  test('the serverName option and grpc.ssl_target_name_override choose the name checked', async (t) => {
    const peer = await peerWith(ca.issueServer({ addresses: ['api.internal'] }));
    t.after(() => peer.close());
    const material = new StaticMaterialSource(clientMaterial(ca.issueClient()));
    const byOption = whoAmIClient(peer.port, channelCredentials({ material, serverName: 'api.internal' }));
    const byChannelOption = whoAmIClient(peer.port, channelCredentials({ material }), {
      'grpc.ssl_target_name_override': 'api.internal',
    });
    const wrong = whoAmIClient(peer.port, channelCredentials({ material, serverName: 'web.internal' }));
    t.after(() => {
      byOption.close();
      byChannelOption.close();
      wrong.close();
    });
    assert.ok(await whoAmI(byOption));
    assert.ok(await whoAmI(byChannelOption));
    assert.match((await whoAmIError(wrong)).details, /not valid for "web\.internal"/);
  });

  test('a server certificate from another CA is refused', async (t) => {
    const peer = await peerWith(otherCa.issueServer(), ca.chainPem());
    t.after(() => peer.close());
    const material = new StaticMaterialSource(clientMaterial(ca.issueClient()));
    const grpcClient = whoAmIClient(peer.port, channelCredentials({ material }));
    t.after(() => grpcClient.close());
    const error = await whoAmIError(grpcClient);
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    assert.match(
      error.details,
      /unable to (get local issuer|verify)|self-signed certificate in certificate chain/i,
    );
  });

  test("a TLS 1.2-only server is refused by sigil's client", async (t) => {
    const server = ca.issueServer();
    const peer = await startTlsGrpcPeer({
      cert: server.certificateChain,
      key: server.privateKey,
      ca: ca.chainPem(),
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
    });
    t.after(() => peer.close());
    const material = new StaticMaterialSource(clientMaterial(ca.issueClient()));
    const grpcClient = whoAmIClient(peer.port, channelCredentials({ material }));
    t.after(() => grpcClient.close());
    const error = await whoAmIError(grpcClient);
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    assert.match(error.details, /protocol version/i);
    // The server saw a client that offered nothing below TLS 1.3.
    assert.ok(peer.handshakeErrors.some((e) => /unsupported protocol/i.test(e.message)));
  });

  test('client identity rotation without recreating the client', async (t) => {
    const peer = await peerWith(ca.issueServer());
    t.after(() => peer.close());
    const first = ca.issueClient('rotating');
    const provider = new MaterialProvider(clientMaterial(first));
    const grpcClient = whoAmIClient(peer.port, channelCredentials({ material: provider }));
    t.after(() => grpcClient.close());
    assert.equal(await whoAmI(grpcClient), first.serial);

    const second = ca.issueClient('rotating');
    provider.set(clientMaterial(second));
    // The established connection is left alone…
    assert.equal(await whoAmI(grpcClient), first.serial);
    // …and the next connection presents the new certificate.
    peer.drain();
    await waitUntilDisconnected(grpcClient);
    assert.equal(await whoAmI(grpcClient), second.serial);
  });

  test('trust bundle rotation', async (t) => {
    // The server moves to a certificate from a new CA; a client whose bundle
    // was rotated to old+new follows, a client with the old bundle cannot.
    const both = ca.chainPem() + otherCa.chainPem();
    const peer = await peerWith(ca.issueServer(), both);
    t.after(() => peer.close());
    const leaf = ca.issueClient('bundle');
    const provider = new MaterialProvider(clientMaterial(leaf));
    const rotated = whoAmIClient(peer.port, channelCredentials({ material: provider }));
    const stale = whoAmIClient(
      peer.port,
      channelCredentials({ material: new StaticMaterialSource(clientMaterial(leaf)) }),
    );
    t.after(() => {
      rotated.close();
      stale.close();
    });
    assert.equal(await whoAmI(rotated), leaf.serial);

    provider.set(clientMaterial(leaf, both));
    const next = otherCa.issueServer();
    peer.tlsServer.setSecureContext({
      cert: next.certificateChain,
      key: next.privateKey,
      ca: both,
      minVersion: 'TLSv1.3',
    });
    peer.drain();
    await waitUntilDisconnected(rotated);
    assert.equal(await whoAmI(rotated), leaf.serial);
    assert.match(
      (await whoAmIError(stale)).details,
      /unable to (get local issuer|verify)|self-signed certificate in certificate chain/i,
    );
  });

  test('invalid material from a hand-written source fails the connection with a named error', async (t) => {
    const peer = await peerWith(ca.issueServer());
    t.after(() => peer.close());
    const a = ca.issueClient('a');
    const b = ca.issueClient('b');
    const mismatched: TlsMaterial = {
      certificateChain: a.certificateChain,
      privateKey: b.privateKey,
      trustBundle: ca.chainPem(),
    };
    const source = { current: () => mismatched, subscribe: () => () => {} };
    const grpcClient = whoAmIClient(peer.port, channelCredentials({ material: source }));
    t.after(() => grpcClient.close());
    const error = await whoAmIError(grpcClient);
    assert.match(error.details, /private key does not match/);
    assert.doesNotMatch(error.details, /PRIVATE KEY/);
  });
});
