// Reading who the peer is: identityFromChain on certificates made by src/pki,
// and peerIdentity() on a plain grpc-js TLS server (no sigil registry: the
// identity comes from the leaf grpc-js exposes).
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { dnsName, ipAddress, uriName } from '../../src/pki/names.ts';
import { identityFromChain } from '../../src/transport/peer-identity.ts';
import { failureOf } from '../support/failure.ts';
import { refusal } from '../support/refusals.ts';
import {
  callUnary,
  echoImplementation,
  echoService,
  mtlsClient,
  type SeenIdentity,
  TestCa,
} from './fixtures.ts';

const ca = new TestCa('sigil peer-identity test CA', { intermediate: true });

describe('identityFromChain', () => {
  test('reads the SPIFFE ID, DNS and IP names, serial, fingerprint, expiry and extensions', () => {
    const pair = ca.issue({
      name: 'api/replica-1',
      profile: 'server+client',
      sans: [
        dnsName('API.example.org'),
        ipAddress('10.0.0.7'),
        ipAddress('2001:db8::1'),
        uriName('https://x.test/'),
      ],
    });
    const identity = identityFromChain([pair.der]);
    assert.equal(identity.spiffeId, 'spiffe://test.sigil/api/replica-1');
    assert.deepEqual(identity.dnsNames, ['api.example.org']);
    assert.deepEqual(identity.ipAddresses, ['10.0.0.7', '2001:db8::1']);
    assert.equal(identity.serial, pair.serialHex);
    assert.equal(identity.fingerprint, createHash('sha256').update(pair.der).digest('hex'));
    assert.equal(identity.notAfter.getTime(), new Date(new X509Certificate(pair.der).validTo).getTime());
    assert.deepEqual(identity.chain, [pair.der]);
    const san = identity.extensions.find((e) => e.oid === '2.5.29.17');
    assert.ok(san && !san.critical && san.value.length > 0);
    assert.ok(
      identity.extensions.some((e) => e.oid === '2.5.29.19'),
      'basicConstraints is listed',
    );
  });

  test('a certificate without a SPIFFE ID has spiffeId null', () => {
    const pair = ca.issue({
      name: 'plain',
      profile: 'client',
      withoutSpiffeId: true,
      sans: [dnsName('plain.test')],
    });
    assert.equal(identityFromChain([pair.der]).spiffeId, null);
  });

  test('refuses a certificate with two SPIFFE IDs', () => {
    const pair = ca.issue({ name: 'one', profile: 'client', sans: [uriName('spiffe://test.sigil/two')] });
    assert.throws(
      () => identityFromChain([pair.der]),
      refusal('unauthenticated', /has 2 SPIFFE IDs; at most one/),
    );
  });

  test('refuses a malformed SPIFFE ID rather than ignoring it', () => {
    const pair = ca.issue({
      name: 'x',
      profile: 'client',
      withoutSpiffeId: true,
      sans: [{ type: 'uri', value: 'SPIFFE://test.sigil/upper' }],
    });
    assert.throws(() => identityFromChain([pair.der]), refusal('unauthenticated', /invalid SPIFFE ID/));
  });

  test('refuses an empty chain', () => {
    assert.throws(() => identityFromChain([]), refusal('unauthenticated', /no client certificate/));
  });
});

describe('peerIdentity on a plain grpc-js TLS server', () => {
  const servers: grpc.Server[] = [];
  const clients: grpc.Client[] = [];
  after(() => {
    for (const c of clients) c.close();
    for (const s of servers) s.forceShutdown();
  });

  async function plainServer(checkClientCertificate: boolean): Promise<number> {
    const pair = ca.issueServer();
    const server = new grpc.Server();
    server.addService(echoService, echoImplementation);
    servers.push(server);
    const credentials = grpc.ServerCredentials.createSsl(
      Buffer.from(ca.rootPem),
      [{ cert_chain: Buffer.from(pair.certificateChain), private_key: Buffer.from(pair.privateKey) }],
      checkClientCertificate,
    );
    return new Promise((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', credentials, (error, port) => (error ? reject(error) : resolve(port))),
    );
  }

  test('falls back to the leaf grpc-js exposes', async () => {
    const port = await plainServer(true);
    const alice = ca.issueClient({ name: 'alice' });
    const channel = mtlsClient(port, ca.rootPem, alice);
    clients.push(channel);
    const seen = JSON.parse((await callUnary(channel)).response.toString()) as SeenIdentity;
    assert.equal(seen.spiffeId, 'spiffe://test.sigil/alice');
    assert.equal(seen.serial, alice.serialHex);
    assert.equal(seen.chainLength, 1);
    assert.equal(seen.parsedOnce, false, 'no registry entry: parsed from the call');
    assert.equal(seen.leafDerHex, alice.der.toString('hex'));
  });

  test('throws unauthenticated when the call has no client certificate', async () => {
    const port = await plainServer(false);
    const channel = mtlsClient(port, ca.rootPem, null);
    clients.push(channel);
    const error = await failureOf(callUnary(channel));
    assert.equal(error.code, grpc.status.UNAUTHENTICATED);
    assert.equal(error.details, 'no client certificate on this call');
  });
});
