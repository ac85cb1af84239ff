// The embedded CA: in-memory root (+ intermediate), leaves checked by the
// real openssl CLI, DNS/IP/SPIFFE names, mTLS over grpc-js with its own
// credentials, existing CAs, lifetime refusals, renewal (cold start is measured by
// `npm run bench -- transport`, in fresh processes).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';
import { canonicalSerial } from '../support/serials.ts';
import { startCredentialsPeer, whoAmI, whoAmIClient, whoAmIError } from './client-fixtures.ts';

const certificates = (pem: string): X509Certificate[] =>
  pem
    .split(/(?<=-----END CERTIFICATE-----\n)/)
    .filter((block) => block.includes('BEGIN'))
    .map((block) => new X509Certificate(block));

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sigil-embedded-ca-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileCount = 0;
async function tempFile(content: string): Promise<string> {
  const path = join(dir, `file-${fileCount++}.pem`);
  await writeFile(path, content);
  return path;
}

/** `openssl verify -x509_strict`, returning its output; throws (with openssl's message) on failure. */
async function opensslVerify(options: {
  trusted: string;
  untrusted?: string;
  leaf: string;
  purpose: 'sslserver' | 'sslclient';
}): Promise<string> {
  const args = [
    'verify',
    '-x509_strict',
    '-purpose',
    options.purpose,
    '-CAfile',
    await tempFile(options.trusted),
  ];
  if (options.untrusted) args.push('-untrusted', await tempFile(options.untrusted));
  args.push(await tempFile(options.leaf));
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A plain TLS handshake; resolves to the negotiated protocol and the server's certificate serial. */
function handshake(
  port: number,
  options: tls.ConnectionOptions,
): Promise<{ protocol: string | null; serial: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...options }, () => {
      const result = {
        protocol: socket.getProtocol(),
        serial: canonicalSerial(socket.getPeerCertificate().serialNumber),
      };
      socket.destroy();
      resolve(result);
    });
    socket.on('error', reject);
  });
}

describe('EmbeddedCA', () => {
  test('create with intermediate', () => {
    const ca = EmbeddedCA.create({ addresses: ['localhost'], intermediate: true });
    const [intermediate, root] = certificates(ca.chainPem());
    assert.ok(intermediate && root);
    assert.match(root.subject, /CN=sigil embedded root CA [0-9a-f]{6}/);
    assert.match(intermediate.subject, /CN=sigil embedded intermediate CA [0-9a-f]{6}/);
    assert.equal(intermediate.issuer, root.subject);
    assert.ok(intermediate.checkIssued(root) && intermediate.verify(root.publicKey));
    assert.ok(root.ca && intermediate.ca);

    const server = ca.issueServer();
    const chain = certificates(server.certificateChain);
    assert.equal(chain.length, 2, 'the leaf is sent with its intermediate');
    assert.equal(chain[1].fingerprint256, intermediate.fingerprint256);
    assert.ok(chain[0].checkIssued(intermediate));
    assert.equal(server.serial, canonicalSerial(chain[0].serialNumber));
    assert.equal(server.spiffeId, 'spiffe://sigil.internal/server/localhost');
    assert.ok(new X509Certificate(chain[0].raw).checkPrivateKey(createPrivateKey(server.privateKey)));
    // CAs outlive the leaves they issue.
    assert.ok(new Date(intermediate.validTo) > server.notAfter);
    assert.ok(ca.notAfter > server.notAfter);
  });

  test('openssl verify -x509_strict accepts issued leaves against chainPem', async () => {
    for (const intermediate of [false, true]) {
      const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate });
      const server = ca.issueServer();
      const client = ca.issueClient('builder');
      const [serverLeaf] = certificates(server.certificateChain);
      const [clientLeaf] = certificates(client.certificateChain);
      // The whole chain as trust bundle, exactly as peers of the CA use it…
      assert.match(
        await opensslVerify({ trusted: ca.chainPem(), leaf: serverLeaf.toString(), purpose: 'sslserver' }),
        /: OK/,
      );
      assert.match(
        await opensslVerify({ trusted: ca.chainPem(), leaf: clientLeaf.toString(), purpose: 'sslclient' }),
        /: OK/,
      );
      // …and with only the root trusted and the sent chain as untrusted intermediates.
      const chain = certificates(ca.chainPem());
      const rootPem = chain[chain.length - 1].toString();
      assert.match(
        await opensslVerify({
          trusted: rootPem,
          untrusted: server.certificateChain,
          leaf: serverLeaf.toString(),
          purpose: 'sslserver',
        }),
        /: OK/,
      );
      // A client certificate is not a server certificate.
      await assert.rejects(
        opensslVerify({ trusted: ca.chainPem(), leaf: clientLeaf.toString(), purpose: 'sslserver' }),
        /unsuitable certificate purpose/,
      );
    }
  });

  test('addresses split to DNS/IP SANs, and every leaf has a SPIFFE ID', () => {
    const ca = EmbeddedCA.create({
      addresses: ['Build.Example.COM', '10.0.0.7', '::1', 'localhost', '10.0.0.7'],
      trustDomain: 'builds.example',
    });
    assert.deepEqual(ca.addresses, ['build.example.com', '10.0.0.7', '::1', 'localhost']);
    const server = ca.issueServer();
    const [leaf] = certificates(server.certificateChain);
    assert.equal(
      leaf.subjectAltName,
      'DNS:build.example.com, IP Address:10.0.0.7, IP Address:0:0:0:0:0:0:0:1, DNS:localhost, ' +
        'URI:spiffe://builds.example/server/build.example.com',
    );
    assert.equal(leaf.subject, 'CN=build.example.com');
    assert.ok(leaf.checkHost('localhost') && leaf.checkIP('::1') && leaf.checkIP('10.0.0.7'));

    const v6 = EmbeddedCA.create({ addresses: ['::1'] }).issueServer();
    assert.equal(v6.spiffeId, 'spiffe://sigil.internal/server/__1');

    const client = ca.issueClient('vm-42');
    const [clientLeaf] = certificates(client.certificateChain);
    assert.equal(clientLeaf.subjectAltName, 'URI:spiffe://builds.example/client/vm-42');
    assert.equal(client.spiffeId, 'spiffe://builds.example/client/vm-42');
    assert.equal(clientLeaf.subject, 'CN=vm-42');
    assert.equal(ca.issueClient().spiffeId, 'spiffe://builds.example/client/client');

    const other = ca.issueServer({ addresses: ['api.internal', '192.0.2.1'] });
    assert.equal(certificates(other.certificateChain)[0].subjectAltName?.split(', ').length, 3);
    assert.equal(other.spiffeId, 'spiffe://builds.example/server/api.internal');
  });

  test('bad addresses, names and key types are refused', () => {
    const refused = (fn: () => unknown, pattern: RegExp) => assertThrowsRefusal(fn, null, pattern);
    refused(() => EmbeddedCA.create({ addresses: [] }), /at least one address/);
    refused(() => EmbeddedCA.create({ addresses: ['not a name'] }), /invalid DNS name/);
    refused(() => EmbeddedCA.create({ addresses: ['01.2.3.4'] }), /leading zeros|invalid DNS name/);
    refused(() => EmbeddedCA.create({ addresses: ['localhost'], trustDomain: 'Bad Domain' }), /trust domain/);
    refused(
      () => EmbeddedCA.create({ addresses: ['localhost'], keyType: 'dsa' as unknown as 'p256' }),
      /unknown key type/,
    );
    const ca = EmbeddedCA.create({ addresses: ['localhost'] });
    refused(() => ca.issueClient('a/b'), /SPIFFE ID path segment/);
    refused(() => ca.clientMaterial('has space'), /SPIFFE ID path segment/);
    refused(() => ca.issueServer({ ttl: 0 }), /positive/);
    refused(() => EmbeddedCA.create({ addresses: ['localhost'], leafTtl: '1 hour' }), /invalid duration/);
  });

  test('end-to-end mTLS gRPC call using serverCredentials() + channelCredentials()', async (t) => {
    const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate: true });
    t.after(() => ca.close());
    const peer = await startCredentialsPeer(ca.serverCredentials());
    t.after(() => peer.close());

    const client = whoAmIClient(peer.port, ca.channelCredentials({ name: 'builder' }));
    t.after(() => client.close());
    const serial = await whoAmI(client);
    const expected = certificates(ca.clientMaterial('builder').current().certificateChain)[0];
    assert.equal(serial, canonicalSerial(expected.serialNumber));

    // A TLS client without a certificate is refused by the server.
    const [root] = certificates(ca.chainPem()).slice(-1);
    const anonymous = whoAmIClient(peer.port, grpc.credentials.createSsl(Buffer.from(root.toString())), {
      'grpc.ssl_target_name_override': 'localhost',
    });
    t.after(() => anonymous.close());
    const refused = await whoAmIError(anonymous);
    assert.equal(refused.code, grpc.status.UNAVAILABLE);
    assert.match(refused.details, /certificate required/);

    // A client certificate from another CA is refused by the server.
    const stranger = EmbeddedCA.create({ addresses: ['localhost'] });
    t.after(() => stranger.close());
    const strangerLeaf = stranger.issueClient('builder');
    const foreign = whoAmIClient(
      peer.port,
      channelCredentials({
        material: new StaticMaterialSource({ ...strangerLeaf, trustBundle: ca.chainPem() }),
        serverName: 'localhost',
      }),
    );
    t.after(() => foreign.close());
    const unknown = await whoAmIError(foreign);
    // (In TLS 1.3 the server judges the client certificate after the client
    // considers the handshake done, so the client's error text varies.)
    assert.equal(unknown.code, grpc.status.UNAVAILABLE);

    // A TLS 1.2-only client is refused.
    await assert.rejects(
      handshake(peer.port, {
        ...ca.tlsClientOptions({ name: 'builder' }),
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
      }),
      /protocol version|unsupported protocol/i,
    );
  });

  test('serverCredentials() renew the server leaf in place and stay TLS 1.3 only', async (t) => {
    const ca = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'] });
    t.after(() => ca.close());
    const peer = await startCredentialsPeer(ca.serverCredentials());
    t.after(() => peer.close());
    const before = await handshake(peer.port, ca.tlsClientOptions());
    assert.equal(before.protocol, 'TLSv1.3');
    assert.equal(before.serial, canonicalSerial(serialOf(ca.serverMaterial().current())));

    const renewed = ca.serverMaterial().renew();
    const afterRenewal = await handshake(peer.port, ca.tlsClientOptions());
    assert.equal(afterRenewal.serial, canonicalSerial(serialOf(renewed)));
    assert.notEqual(afterRenewal.serial, before.serial);
    // Node's setSecureContext drops minVersion unless it is passed again; sigil passes it.
    await assert.rejects(
      handshake(peer.port, { ...ca.tlsClientOptions(), minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }),
      /protocol version|unsupported protocol/i,
    );
  });

  test('serverMaterial() renews on its own at about 2/3 of the leaf lifetime', async (t) => {
    const ca = EmbeddedCA.create({ addresses: ['localhost'], leafTtl: 3000 });
    t.after(() => ca.close());
    const source = ca.serverMaterial();
    assert.equal(ca.serverMaterial(), source, 'one server source per CA');
    const first = serialOf(source.current());
    const [renewed] = (await once(subscribeEmitter(source), 'material')) as [TlsMaterial];
    assert.notEqual(serialOf(renewed), first);
    assert.equal(source.current(), renewed);
  });

  test('tlsOptions() and tlsClientOptions() give a mutual TLS 1.3 handshake', async (t) => {
    const ca = EmbeddedCA.create({ addresses: ['localhost'] });
    t.after(() => ca.close());
    const options = ca.tlsOptions();
    assert.equal(options.minVersion, 'TLSv1.3');
    assert.equal(options.requestCert, true);
    assert.equal(options.rejectUnauthorized, true);
    const clientSerials: string[] = [];
    const server = tls.createServer(options, (socket) => {
      clientSerials.push(canonicalSerial(socket.getPeerCertificate().serialNumber));
      socket.end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const port = (server.address() as AddressInfo).port;
    const result = await handshake(port, ca.tlsClientOptions({ name: 'plain' }));
    assert.equal(result.protocol, 'TLSv1.3');
    await assert.rejects(
      handshake(port, ca.tlsClientOptions({ serverName: 'elsewhere.example' })),
      /elsewhere\.example/,
    );
  });

  test('existing CA accepted', async () => {
    const rootKeys = generateKeyPair('p256');
    const root = createRootCertificate({
      privateKey: rootKeys.privateKey,
      subject: { commonName: 'corporate root', organization: 'Example' },
      ttlMs: 30 * 86_400_000,
    });
    const rootPem = encodePem('CERTIFICATE', root.der);
    const ca = EmbeddedCA.create({
      addresses: ['localhost'],
      ca: { certificate: rootPem, privateKey: privateKeyToPem(rootKeys.privateKey) },
    });
    assert.equal(ca.chainPem(), rootPem);
    const server = ca.issueServer();
    assert.match(
      await opensslVerify({ trusted: rootPem, leaf: server.certificateChain, purpose: 'sslserver' }),
      /: OK/,
    );

    // An existing intermediate with its root, plus a generated intermediate below it.
    const midKeys = generateKeyPair('p256');
    const mid = Issuer.fromCertificate(root.der, rootKeys.privateKey).issue({
      publicKey: midKeys.publicKey,
      profile: 'intermediate',
      subject: { commonName: 'corporate issuing CA' },
      ttlMs: 20 * 86_400_000,
      pathLen: 1,
    });
    const midPem = encodePem('CERTIFICATE', mid.der);
    const deep = EmbeddedCA.create({
      addresses: ['localhost'],
      intermediate: true,
      caTtl: '7d',
      ca: { certificate: midPem + rootPem, privateKey: privateKeyToPem(midKeys.privateKey) },
    });
    const chain = certificates(deep.chainPem());
    assert.equal(chain.length, 3);
    assert.equal(chain[1].subject, 'CN=corporate issuing CA');
    const leaf = deep.issueClient();
    assert.equal(
      certificates(leaf.certificateChain).length,
      3,
      'leaf, generated intermediate, given intermediate',
    );
    const [leafCert] = certificates(leaf.certificateChain);
    assert.match(
      await opensslVerify({
        trusted: rootPem,
        untrusted: leaf.certificateChain,
        leaf: leafCert.toString(),
        purpose: 'sslclient',
      }),
      /: OK/,
    );

    // Refusals: a chain that does not reach its root, a key of another CA, a non-CA.
    assert.throws(
      () =>
        EmbeddedCA.create({
          addresses: ['localhost'],
          ca: { certificate: midPem, privateKey: privateKeyToPem(midKeys.privateKey) },
        }),
      /must end with its self-signed root/,
    );
    assert.throws(
      () =>
        EmbeddedCA.create({
          addresses: ['localhost'],
          ca: { certificate: rootPem, privateKey: privateKeyToPem(midKeys.privateKey) },
        }),
      /private key does not match/,
    );
    const leafOnly = certificates(server.certificateChain)[0].toString();
    assert.throws(
      () =>
        EmbeddedCA.create({
          addresses: ['localhost'],
          ca: { certificate: leafOnly + rootPem, privateKey: server.privateKey },
        }),
      /not a CA certificate/,
    );
  });

  test('caTtl ≤ leafTtl refused', () => {
    const refused = (options: Parameters<typeof EmbeddedCA.create>[0], pattern: RegExp) =>
      assertThrowsRefusal(() => EmbeddedCA.create(options), null, pattern);
    refused(
      { addresses: ['localhost'], leafTtl: '1h', caTtl: '1h' },
      /caTtl \(1h\) must be longer than leafTtl \(1h\)/,
    );
    refused({ addresses: ['localhost'], leafTtl: '2h', caTtl: '30m' }, /must be longer than leafTtl/);
    refused(
      { addresses: ['localhost'], leafTtl: 7_200_000, caTtl: 3_600_000 },
      /must be longer than leafTtl/,
    );
    // An existing CA that ends before a new leaf would.
    const keys = generateKeyPair('p256');
    const root = createRootCertificate({
      privateKey: keys.privateKey,
      subject: { commonName: 'short root' },
      ttlMs: 1_800_000,
    });
    refused(
      {
        addresses: ['localhost'],
        leafTtl: '1h',
        ca: { certificate: encodePem('CERTIFICATE', root.der), privateKey: privateKeyToPem(keys.privateKey) },
      },
      /a CA has to outlive its leaves/,
    );
    // Long leaves get a CA that outlives them by default.
    const long = EmbeddedCA.create({ addresses: ['localhost'], leafTtl: '400d' });
    assert.ok(long.notAfter > long.issueServer().notAfter);
  });

  test('RSA-4096 is available (not the default)', () => {
    const ca = EmbeddedCA.create({ addresses: ['localhost'], keyType: 'rsa4096' });
    const [leaf] = certificates(ca.issueServer().certificateChain);
    assert.equal(leaf.publicKey.asymmetricKeyDetails?.modulusLength, 4096);
    assert.equal(EmbeddedCA.create({ addresses: ['localhost'] }).keyType, 'p256');
  });
});

function serialOf(material: TlsMaterial): string {
  return certificates(material.certificateChain)[0].serialNumber;
}

function subscribeEmitter(source: {
  subscribe(listener: (material: TlsMaterial) => void): () => void;
}): EventEmitter {
  const emitter = new EventEmitter();
  source.subscribe((material) => emitter.emit('material', material));
  return emitter;
}
