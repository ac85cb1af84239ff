// `sigil pki quickstart`: the files it writes verify with openssl and carry
// a real TLS 1.3 handshake with a required client certificate, between Node's
// TLS (the server) and both openssl s_client and Node's TLS (the clients).
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { openssl, sigil } from '../support/cli.ts';
import { tempDir } from '../support/temp-dir.ts';
import { snapshot } from './pki-helpers.ts';

const mode = (path: string) => statSync(path).mode & 0o777;

interface Peer {
  readonly authorized: boolean;
  readonly subjectaltname: string | undefined;
}

/** A TLS 1.3 server on 127.0.0.1 that requires and verifies client certificates. */
async function mtlsServer(dir: string) {
  const peers: Peer[] = [];
  const server = createServer(
    {
      cert: readFileSync(join(dir, 'server.pem')),
      key: readFileSync(join(dir, 'server.key')),
      ca: readFileSync(join(dir, 'ca.pem')),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (socket: TLSSocket) => {
      peers.push({
        authorized: socket.authorized,
        subjectaltname: socket.getPeerCertificate().subjectaltname,
      });
      socket.end('hello over mTLS\n');
    },
  );
  server.on('tlsClientError', () => {}); // rejected clients are the tests' business
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { port, peers, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('pki quickstart', { concurrency: 2 }, () => {
  test('writes a verifiable PKI that carries a TLS 1.3 handshake with client certificates', async () => {
    const dir = join(tempDir(), 'certs');
    const result = await sigil(['pki', 'quickstart', '--out', dir, '--json']);
    assert.equal(result.code, 0, result.stderr);
    const written = JSON.parse(result.stdout);
    assert.equal(written.server.spiffeId, 'spiffe://sigil.internal/server/localhost');
    assert.equal(written.client.spiffeId, 'spiffe://sigil.internal/client/client');
    assert.deepEqual(Object.keys(snapshot(dir)).sort(), [
      'ca.pem',
      'ca/',
      'ca/ca.pem',
      'ca/root.key',
      'ca/root.pem',
      'ca/sigil-ca.json',
      'client.key',
      'client.pem',
      'server.key',
      'server.pem',
    ]);
    for (const key of ['server.key', 'client.key', 'ca/root.key']) assert.equal(mode(join(dir, key)), 0o600);
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(join(dir, 'ca')), 0o700);

    for (const [file, purpose] of [
      ['server.pem', 'sslserver'],
      ['client.pem', 'sslclient'],
    ]) {
      const verify = await openssl([
        'verify',
        '-x509_strict',
        '-purpose',
        purpose,
        '-CAfile',
        join(dir, 'ca.pem'),
        join(dir, file),
      ]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    }
    const server = await openssl(['x509', '-in', join(dir, 'server.pem'), '-noout', '-text']);
    assert.match(
      server.stdout,
      /URI:spiffe:\/\/sigil\.internal\/server\/localhost, DNS:localhost, IP Address:127\.0\.0\.1/,
    );
    assert.match(server.stdout, /TLS Web Server Authentication/);
    assert.doesNotMatch(server.stdout, /TLS Web Client Authentication/);
    const client = await openssl(['x509', '-in', join(dir, 'client.pem'), '-noout', '-text']);
    assert.match(client.stdout, /Subject: CN = client/);
    assert.match(client.stdout, /URI:spiffe:\/\/sigil\.internal\/client\/client/);
    assert.match(client.stdout, /TLS Web Client Authentication/);
    assert.doesNotMatch(client.stdout, /TLS Web Server Authentication/);

    const tls = await mtlsServer(dir);
    try {
      // openssl as the client; -ign_eof keeps it reading until the server closes.
      // Its exit status is not checked: when the server's close races its last
      // read it reports 1 after a perfect exchange. What counts is what it read
      // and what the server saw (tls.peers, below).
      const sClient = await openssl(
        [
          's_client',
          '-connect',
          `127.0.0.1:${tls.port}`,
          '-tls1_3',
          '-servername',
          'localhost',
          '-verify_return_error',
          '-ign_eof',
          '-cert',
          join(dir, 'client.pem'),
          '-key',
          join(dir, 'client.key'),
          '-CAfile',
          join(dir, 'ca.pem'),
        ],
        '',
      );
      assert.match(sClient.stdout, /New, TLSv1\.3, Cipher is/, sClient.stdout + sClient.stderr);
      assert.match(sClient.stdout, /Verify return code: 0 \(ok\)/);
      assert.match(sClient.stdout, /^hello over mTLS$/m);

      // Node as the client, checking the server's name against its DNS SAN.
      const received = await new Promise<string>((resolve, reject) => {
        const socket = connect({
          host: '127.0.0.1',
          port: tls.port,
          servername: 'localhost',
          cert: readFileSync(join(dir, 'client.pem')),
          key: readFileSync(join(dir, 'client.key')),
          ca: readFileSync(join(dir, 'ca.pem')),
          minVersion: 'TLSv1.3',
        });
        let data = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => {
          data += chunk;
        });
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
        socket.on('secureConnect', () => {
          assert.equal(socket.authorized, true, String(socket.authorizationError));
          assert.equal(socket.getProtocol(), 'TLSv1.3');
        });
      });
      assert.equal(received, 'hello over mTLS\n');

      // A client without a certificate gets nothing.
      const anonymous = await new Promise<string>((resolve) => {
        const socket = connect({
          host: '127.0.0.1',
          port: tls.port,
          servername: 'localhost',
          ca: readFileSync(join(dir, 'ca.pem')),
        });
        let data = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => {
          data += chunk;
        });
        socket.on('error', () => resolve(`error:${data}`));
        socket.on('close', () => resolve(data));
      });
      assert.doesNotMatch(anonymous, /hello/);
    } finally {
      await tls.close();
    }
    assert.equal(tls.peers.length, 2);
    for (const peer of tls.peers) {
      assert.equal(peer.authorized, true);
      assert.equal(peer.subjectaltname, 'URI:spiffe://sigil.internal/client/client');
    }

    // The CA directory issues more.
    const more = await sigil([
      'pki',
      'issue',
      '--dir',
      join(dir, 'ca'),
      '--server',
      '--dns',
      'more.internal',
      '--out',
      join(dir, 'more'),
    ]);
    assert.equal(more.code, 0, more.stderr);
    const verify = await openssl(['verify', '-CAfile', join(dir, 'ca.pem'), join(dir, 'more.pem')]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  });

  test('names from --dns, --ip and --client-name; text output with the openssl hints', async () => {
    const dir = join(tempDir(), 'certs');
    const result = await sigil([
      'pki',
      'quickstart',
      '--out',
      dir,
      '--dns',
      'api.internal,localhost',
      '--ip',
      '127.0.0.1',
      '--client-name',
      'web frontend',
      '--key-type',
      'ed25519',
      '--trust-domain',
      'example.org',
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /openssl verify -CAfile \S+ca\.pem \S+server\.pem \S+client\.pem/);
    assert.match(result.stdout, /openssl s_server .*-Verify 1/);
    assert.match(result.stdout, /openssl s_client .*-cert \S+client\.pem/);
    assert.doesNotMatch(result.stdout, /PRIVATE KEY/);
    const server = await openssl(['x509', '-in', join(dir, 'server.pem'), '-noout', '-text']);
    assert.match(
      server.stdout,
      /URI:spiffe:\/\/example\.org\/server\/api\.internal, DNS:api\.internal, DNS:localhost, IP Address:127\.0\.0\.1/,
    );
    assert.match(server.stdout, /ED25519/);
    const client = await openssl([
      'x509',
      '-in',
      join(dir, 'client.pem'),
      '-noout',
      '-subject',
      '-ext',
      'subjectAltName',
    ]);
    assert.match(client.stdout, /subject=CN = web frontend/);
    assert.match(client.stdout, /URI:spiffe:\/\/example\.org\/client\/web-frontend/);
    const metadata = JSON.parse(readFileSync(join(dir, 'ca', 'sigil-ca.json'), 'utf8'));
    assert.equal(metadata.trustDomain, 'example.org');
    assert.equal(metadata.keyType, 'ed25519');
  });

  test('refuses to overwrite an earlier quickstart without --force, changing nothing', async () => {
    const root = tempDir();
    const dir = join(root, 'certs');
    const first = await sigil(['pki', 'quickstart', '--out', dir]);
    assert.equal(first.code, 0, first.stderr);
    const before = snapshot(root);
    const again = await sigil(['pki', 'quickstart', '--out', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^sigil: \S+ already exists \(use --force to overwrite\)\n$/);
    assert.deepEqual(snapshot(root), before);
    const forced = await sigil(['pki', 'quickstart', '--out', dir, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notDeepEqual(snapshot(root), before);
  });
});
