// Client-side server checks: SPIFFE ID (exact, trust-domain-wide, no CN
// fallback, no partial wildcards), pinned fingerprints and composition,
// exercised over real TLS connections with grpc-js clients.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { dnsName, type GeneralName, ipAddress, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { EmbeddedCA, type IssuedLeaf } from '../../src/transport/embedded-ca.ts';
import {
  parseFingerprint,
  type ServerVerification,
  verifyAll,
  verifyPinnedFingerprint,
  verifyServerName,
  verifySpiffeId,
} from '../../src/transport/server-verification.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { sha256 } from '../support/fingerprint.ts';
import { refusal } from '../support/refusals.ts';
import { startTlsGrpcPeer, type TlsGrpcPeer, whoAmI, whoAmIClient, whoAmIError } from './client-fixtures.ts';

const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate: true });
const otherCa = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'] });
after(() => {
  ca.close();
  otherCa.close();
});
const clientSource = new StaticMaterialSource({ ...ca.issueClient(), trustBundle: ca.chainPem() });

const certificates = (pem: string): X509Certificate[] =>
  pem
    .split(/(?<=-----END CERTIFICATE-----\n)/)
    .filter((block) => block.includes('BEGIN'))
    .map((block) => new X509Certificate(block));

async function peerWith(server: { certificateChain: string; privateKey: string }): Promise<TlsGrpcPeer> {
  return startTlsGrpcPeer({ cert: server.certificateChain, key: server.privateKey, ca: ca.chainPem() });
}

/** Calls the peer with `verify` and returns the call's outcome. */
async function callWith(
  t: { after(fn: () => void): void },
  peer: TlsGrpcPeer,
  verify: ServerVerification,
): Promise<{ ok: true } | { ok: false; details: string }> {
  const client = whoAmIClient(peer.port, channelCredentials({ material: clientSource, verify }));
  t.after(() => client.close());
  try {
    await whoAmI(client);
    return { ok: true };
  } catch (error) {
    const e = error as grpc.ServiceError;
    assert.equal(e.code, grpc.status.UNAVAILABLE);
    return { ok: false, details: e.details };
  }
}

/**
 * A server leaf with exactly the SANs and subject given, signed by a
 * throwaway root the test controls (EmbeddedCA always adds a SPIFFE ID).
 */
function customLeaf(
  sans: GeneralName[],
  commonName: string,
): {
  certificateChain: string;
  privateKey: string;
  trustBundle: string;
} {
  const rootKeys = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey: rootKeys.privateKey,
    subject: { commonName: 'custom root' },
  });
  const keys = generateKeyPair('p256');
  const leaf = Issuer.fromCertificate(root.der, rootKeys.privateKey).issue({
    publicKey: keys.publicKey,
    profile: 'server',
    subject: { commonName },
    sans,
    ttlMs: 3_600_000,
  });
  return {
    certificateChain: encodePem('CERTIFICATE', leaf.der),
    privateKey: privateKeyToPem(keys.privateKey),
    trustBundle: encodePem('CERTIFICATE', root.der),
  };
}

async function customPeer(leaf: ReturnType<typeof customLeaf>): Promise<TlsGrpcPeer> {
  return startTlsGrpcPeer({ cert: leaf.certificateChain, key: leaf.privateKey, ca: ca.chainPem() });
}

async function callCustom(
  t: { after(fn: () => void): void },
  leaf: ReturnType<typeof customLeaf>,
  verify: ServerVerification,
) {
  const peer = await customPeer(leaf);
  t.after(() => peer.close());
  const material = new StaticMaterialSource({ ...ca.issueClient(), trustBundle: leaf.trustBundle });
  const client = whoAmIClient(peer.port, channelCredentials({ material, verify }));
  t.after(() => client.close());
  return whoAmIError(client);
}

describe('verifySpiffeId', () => {
  test('the expected SPIFFE ID is accepted, even when no name matches', async (t) => {
    const server: IssuedLeaf = ca.issueServer({ addresses: ['api.internal'] });
    assert.equal(server.spiffeId, 'spiffe://sigil.internal/server/api.internal');
    const peer = await peerWith(server);
    t.after(() => peer.close());
    assert.deepEqual(await callWith(t, peer, verifySpiffeId(server.spiffeId)), { ok: true });
    assert.deepEqual(
      await callWith(t, peer, verifySpiffeId(['spiffe://sigil.internal/x', server.spiffeId])),
      {
        ok: true,
      },
    );
  });

  test('expected SPIFFE ID mismatch refused', async (t) => {
    const peer = await peerWith(ca.issueServer({ addresses: ['api.internal'] }));
    t.after(() => peer.close());
    const outcome = await callWith(t, peer, verifySpiffeId('spiffe://sigil.internal/server/billing'));
    assert.equal(outcome.ok, false);
    assert.match(
      outcome.ok ? '' : outcome.details,
      /expected SPIFFE ID "spiffe:\/\/sigil\.internal\/server\/billing", the server presented "spiffe:\/\/sigil\.internal\/server\/api\.internal"/,
    );
  });

  test('a trust-domain-wide pattern accepts workloads of that domain only', async (t) => {
    const peer = await peerWith(ca.issueServer());
    t.after(() => peer.close());
    assert.deepEqual(await callWith(t, peer, verifySpiffeId('spiffe://sigil.internal/*')), { ok: true });
    const outcome = await callWith(t, peer, verifySpiffeId('spiffe://other.domain/*'));
    assert.equal(outcome.ok, false);
    assert.match(outcome.ok ? '' : outcome.details, /expected SPIFFE ID "spiffe:\/\/other\.domain\/\*"/);
  });

  test('partial-wildcard SPIFFE pattern refused at configuration time', () => {
    for (const pattern of [
      'spiffe://sigil.internal/svc-*',
      'spiffe://sigil.internal/server/*',
      'spiffe://*.internal/server/a',
      'spiffe://sigil.internal/*/a',
      'spiffe://sigil.internal*',
    ]) {
      assert.throws(() => verifySpiffeId(pattern), refusal('invalid_argument'), pattern);
    }
    assert.throws(() => verifySpiffeId('spiffe://sigil.internal/svc-*'), /partial wildcards/);
    assert.throws(() => verifySpiffeId('https://example.com/a'), /invalid SPIFFE ID/);
    assert.throws(() => verifySpiffeId([]), /at least one/);
    verifySpiffeId('spiffe://sigil.internal/*');
  });

  test('the common name is never used as the SPIFFE ID', async (t) => {
    const leaf = customLeaf([dnsName('localhost'), ipAddress('127.0.0.1')], 'spiffe://sigil.internal/api');
    const error = await callCustom(t, leaf, verifySpiffeId('spiffe://sigil.internal/api'));
    assert.match(error.details, /has 0 URI SANs/);
  });

  test('a certificate with two URI SANs is refused', async (t) => {
    const leaf = customLeaf(
      [uriName('spiffe://sigil.internal/api'), uriName('spiffe://sigil.internal/admin')],
      'two ids',
    );
    const error = await callCustom(t, leaf, verifySpiffeId('spiffe://sigil.internal/api'));
    assert.match(error.details, /has 2 URI SANs/);
  });
});

describe('verifyPinnedFingerprint', () => {
  test('pinned fingerprint mismatch refused and match accepted', async (t) => {
    const server = ca.issueServer();
    const peer = await peerWith(server);
    t.after(() => peer.close());
    const [leaf, intermediate] = certificates(server.certificateChain);
    const [, root] = certificates(ca.chainPem());
    // The leaf, the intermediate and the root (which the server may not even send) all pin.
    assert.deepEqual(await callWith(t, peer, verifyPinnedFingerprint(leaf.fingerprint256)), { ok: true });
    assert.deepEqual(await callWith(t, peer, verifyPinnedFingerprint(sha256(intermediate.raw))), {
      ok: true,
    });
    assert.deepEqual(await callWith(t, peer, verifyPinnedFingerprint(root.fingerprint256.toLowerCase())), {
      ok: true,
    });

    const [otherRoot] = certificates(otherCa.chainPem());
    const outcome = await callWith(t, peer, verifyPinnedFingerprint(otherRoot.fingerprint256));
    assert.equal(outcome.ok, false);
    const details = outcome.ok ? '' : outcome.details;
    assert.match(
      details,
      new RegExp(`expected a certificate with SHA-256 fingerprint ${sha256(otherRoot.raw)}`),
    );
    assert.match(details, new RegExp(`presented "localhost" ${sha256(leaf.raw)}`));
    assert.doesNotMatch(details, /PRIVATE KEY/);
  });

  test('fingerprints are read with or without colons, in either case; malformed ones are refused', () => {
    const hex = 'ab'.repeat(32);
    const colons = Array.from({ length: 32 }, () => 'AB').join(':');
    assert.equal(parseFingerprint(hex), hex);
    assert.equal(parseFingerprint(hex.toUpperCase()), hex);
    assert.equal(parseFingerprint(colons), hex);
    assert.equal(parseFingerprint(` ${colons}\n`), hex);
    for (const bad of [
      '',
      'ab'.repeat(31),
      'ab'.repeat(33),
      'zz'.repeat(32),
      `${colons.slice(0, -3)}AB`,
      'a:b'.repeat(32),
    ]) {
      assert.throws(() => parseFingerprint(bad), /invalid SHA-256 fingerprint/, bad);
    }
    assert.throws(() => verifyPinnedFingerprint([]), /at least one/);
  });
});

describe('verifyAll and verifyServerName', () => {
  test('every check must pass', async (t) => {
    const server = ca.issueServer();
    const peer = await peerWith(server);
    t.after(() => peer.close());
    const [leaf] = certificates(server.certificateChain);
    const both = verifyAll(verifyServerName('localhost'), verifyPinnedFingerprint(leaf.fingerprint256));
    assert.deepEqual(await callWith(t, peer, both), { ok: true });
    const wrongName = verifyAll(
      verifyServerName('example.com'),
      verifyPinnedFingerprint(leaf.fingerprint256),
    );
    const outcome = await callWith(t, peer, wrongName);
    assert.match(outcome.ok ? '' : outcome.details, /not valid for "example\.com"/);
    assert.match(both.description, /server name "localhost" and a certificate with SHA-256 fingerprint/);
  });
});
