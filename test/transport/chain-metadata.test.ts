import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import {
  CHAIN_METADATA_KEY,
  chainMetadataInterceptor,
  MAX_PRESENTED_CERTIFICATE_BYTES,
  MAX_PRESENTED_CERTIFICATES,
  presentedIntermediates,
  readPresentedChain,
} from '../../src/protocol/chain-metadata.ts';
import { pemOf } from '../support/pem.ts';
import { invalid } from '../support/refusals.ts';
import { echoService } from './fixtures.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const rootKey = generateKeyPair('p256');
const root = createRootCertificate({
  privateKey: rootKey.privateKey,
  subject: { commonName: 'chain-metadata test root' },
  ttlMs: DAY,
});
const rootIssuer = Issuer.fromIssued(root, rootKey.privateKey);
const upperKey = generateKeyPair('p256');
const upper = rootIssuer.issue({
  publicKey: upperKey.publicKey,
  profile: 'intermediate',
  subject: { commonName: 'chain-metadata upper' },
  ttlMs: DAY,
});
const lowerKey = generateKeyPair('p256');
const lower = Issuer.fromIssued(upper, upperKey.privateKey).issue({
  publicKey: lowerKey.publicKey,
  profile: 'intermediate',
  subject: { commonName: 'chain-metadata lower' },
  ttlMs: DAY,
});
const leaf = Issuer.fromIssued(lower, lowerKey.privateKey).issue({
  publicKey: generateKeyPair('p256').publicKey,
  profile: 'client',
  sans: [{ type: 'uri', value: 'spiffe://example.test/d/alice/web' }],
  ttlMs: HOUR,
});
// Another self-signed root, to sit in the middle of a chain.
const otherRootKey = generateKeyPair('p256');
const otherRoot = createRootCertificate({
  privateKey: otherRootKey.privateKey,
  subject: { commonName: 'chain-metadata other root' },
  ttlMs: DAY,
});

describe('presentedIntermediates', () => {
  it('drops the leaf and self-signed roots, keeping the order of the rest', () => {
    assert.deepEqual(presentedIntermediates(pemOf(leaf.der, lower.der, upper.der, root.der)), [
      lower.der,
      upper.der,
    ]);
    assert.deepEqual(presentedIntermediates(pemOf(leaf.der, upper.der, lower.der)), [upper.der, lower.der]);
    // A self-signed root anywhere after the leaf is left out.
    assert.deepEqual(presentedIntermediates(pemOf(leaf.der, otherRoot.der, lower.der, root.der, upper.der)), [
      lower.der,
      upper.der,
    ]);
  });

  it('no intermediates: a bare leaf, or a leaf and its root', () => {
    assert.deepEqual(presentedIntermediates(pemOf(leaf.der)), []);
    assert.deepEqual(presentedIntermediates(pemOf(leaf.der, root.der)), []);
    assert.deepEqual(presentedIntermediates(''), []);
  });

  it('only CERTIFICATE blocks count: the leaf is the first certificate even after a key block', () => {
    const keyPem = privateKeyToPem(generateKeyPair('p256').privateKey);
    assert.match(keyPem, /BEGIN PRIVATE KEY/);
    assert.deepEqual(presentedIntermediates(keyPem + pemOf(leaf.der, lower.der)), [lower.der]);
    assert.deepEqual(presentedIntermediates(pemOf(leaf.der) + keyPem + pemOf(lower.der, root.der)), [
      lower.der,
    ]);
  });
});

describe('chainMetadataInterceptor', () => {
  it('is null when the chain has no intermediates', () => {
    assert.equal(chainMetadataInterceptor(pemOf(leaf.der)), null);
    assert.equal(chainMetadataInterceptor(pemOf(leaf.der, root.der)), null);
  });

  it('is an interceptor when it has some', () => {
    assert.equal(
      typeof chainMetadataInterceptor(pemOf(leaf.der, lower.der, upper.der, root.der)),
      'function',
    );
  });
});

describe('chainMetadataInterceptor: a round trip through grpc-js', () => {
  const seen: grpc.Metadata[] = [];
  const server = new grpc.Server();
  let port = 0;

  before(async () => {
    server.addService(echoService, {
      unary: ((call, callback) => {
        seen.push(call.metadata);
        callback(null, call.request);
      }) satisfies grpc.handleUnaryCall<Buffer, Buffer>,
      ticks: ((call) => call.end()) satisfies grpc.handleServerStreamingCall<Buffer, Buffer>,
    });
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
  });
  after(() => server.forceShutdown());

  const call = (client: grpc.Client, metadata = new grpc.Metadata()): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        echoService.unary.path,
        (value: Buffer) => value,
        (value: Buffer) => value,
        Buffer.from('ping'),
        metadata,
        { deadline: Date.now() + 10_000 },
        (error, response) =>
          error || !response ? reject(error ?? new Error('no response')) : resolve(response),
      );
    });

  it(`the server sees ${CHAIN_METADATA_KEY} values equal to the intermediates' DER, on every call`, async () => {
    const interceptor = chainMetadataInterceptor(pemOf(leaf.der, lower.der, upper.der, root.der));
    assert.ok(interceptor);
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      interceptors: [interceptor],
    });
    try {
      seen.length = 0;
      const mine = new grpc.Metadata();
      mine.set('x-caller', 'kept');
      assert.deepEqual(await call(client, mine), Buffer.from('ping'));
      assert.deepEqual(await call(client), Buffer.from('ping'));
      assert.equal(seen.length, 2);
      for (const metadata of seen) {
        // Exactly the intermediates, in order, once each (no accumulation across calls).
        assert.deepEqual(metadata.get(CHAIN_METADATA_KEY), [lower.der, upper.der]);
        assert.deepEqual(readPresentedChain(metadata), [lower.der, upper.der]);
      }
      assert.deepEqual(seen[0].get('x-caller'), ['kept'], "the caller's own metadata is kept");
    } finally {
      client.close();
    }
  });

  it('a full-length chain (a leaf and 8 CAs, as many as a 9-link chain holds) makes the trip intact', async () => {
    let issuer = rootIssuer;
    const cas: Buffer[] = [];
    for (let i = 0; i < 8; i++) {
      const key = generateKeyPair('p256');
      const ca = issuer.issue({
        publicKey: key.publicKey,
        profile: 'intermediate',
        subject: { commonName: `chain-metadata tower ${i} ${'x'.repeat(40)}` },
        sans: [{ type: 'uri', value: `spiffe://example.test/d/${'n/'.repeat(i)}n${i}` }],
        nameConstraints: { permittedUri: ['example.test'], permittedDns: ['invalid'] },
        ttlMs: HOUR,
      });
      cas.unshift(ca.der);
      issuer = Issuer.fromIssued(ca, key.privateKey);
    }
    const bottom = issuer.issue({
      publicKey: generateKeyPair('p256').publicKey,
      profile: 'client',
      sans: [{ type: 'uri', value: 'spiffe://example.test/d/tower/web' }],
      ttlMs: HOUR,
    });
    const interceptor = chainMetadataInterceptor(pemOf(bottom.der, ...cas, root.der));
    assert.ok(interceptor);
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      interceptors: [interceptor],
    });
    try {
      seen.length = 0;
      await call(client);
      assert.equal(seen.length, 1);
      assert.deepEqual(readPresentedChain(seen[0]), cas);
    } finally {
      client.close();
    }
  });

  it(`a client without the interceptor sends no ${CHAIN_METADATA_KEY}`, async () => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      seen.length = 0;
      await call(client);
      assert.equal(seen.length, 1);
      assert.deepEqual(seen[0].get(CHAIN_METADATA_KEY), []);
      assert.deepEqual(readPresentedChain(seen[0]), []);
    } finally {
      client.close();
    }
  });
});

describe('readPresentedChain', () => {
  const withValues = (values: Buffer[]): grpc.Metadata => {
    const metadata = new grpc.Metadata();
    for (const value of values) metadata.add(CHAIN_METADATA_KEY, value);
    return metadata;
  };

  it('0 entries: an empty chain', () => {
    assert.deepEqual(readPresentedChain(new grpc.Metadata()), []);
  });

  it('2 entries: both, in order', () => {
    assert.deepEqual(readPresentedChain(withValues([lower.der, upper.der])), [lower.der, upper.der]);
    assert.deepEqual(readPresentedChain(withValues([upper.der, lower.der])), [upper.der, lower.der]);
  });

  it(`${MAX_PRESENTED_CERTIFICATES} entries are accepted, 10 are invalid_argument`, () => {
    assert.equal(MAX_PRESENTED_CERTIFICATES, 9);
    const nine = Array.from({ length: 9 }, (_, i) => Buffer.from([i]));
    assert.deepEqual(readPresentedChain(withValues(nine)), nine);
    const ten = Array.from({ length: 10 }, () => lower.der);
    assert.throws(
      () => readPresentedChain(withValues(ten)),
      invalid(/sigil-chain-bin carries 10 certificates; a chain of at most 10 is accepted/),
    );
  });

  it(`an entry over ${MAX_PRESENTED_CERTIFICATE_BYTES} bytes is invalid_argument`, () => {
    const atLimit = Buffer.alloc(MAX_PRESENTED_CERTIFICATE_BYTES, 1);
    const over = Buffer.alloc(MAX_PRESENTED_CERTIFICATE_BYTES + 1, 1);
    assert.deepEqual(readPresentedChain(withValues([lower.der, atLimit])), [lower.der, atLimit]);
    assert.throws(
      () => readPresentedChain(withValues([lower.der, over])),
      invalid(new RegExp(`sigil-chain-bin #1 is over ${MAX_PRESENTED_CERTIFICATE_BYTES} bytes`)),
    );
  });
});
