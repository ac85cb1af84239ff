// The control plane in process (startServer): bootstrap files, the gRPC API
// as operators, workloads, nodes and strangers see it, the HTTP side, bad
// input, restart and graceful shutdown. Real sockets, real SQLite, the real
// authority.
import assert from 'node:assert/strict';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { IssuedCertificate, RevocationEvent } from '../../src/gen/sigil/v1/sigil.ts';
import { parseCrl } from '../../src/pki/crl.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { possessionFor, registerChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import type { RunningServer } from '../../src/server/start-server.ts';
import { CLIENT_CERTIFICATE_REQUIRED } from '../../src/transport/public-methods.ts';
import { cancellationOnly } from '../support/cancellation.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { sha256 } from '../support/fingerprint.ts';
import { tempDir } from '../support/temp-dir.ts';
import {
  adminIdentity,
  anonymousCredentials,
  assertStatus,
  type Clients,
  call,
  clients,
  credentialsFor,
  type Identity,
  identityOf,
  startTestServer,
} from './helpers.ts';

const leafDer = (pem: string): Buffer => new X509Certificate(pem).raw;

describe('sigil server in process', () => {
  const dataDir = join(tempDir(), 'data');
  let running: RunningServer;
  let admin: Clients;
  let anonymous: Clients;
  const opened: Clients[] = [];

  const open = (identity: Identity | null): Clients => {
    const made = clients(
      running.address,
      identity ? credentialsFor(dataDir, identity) : anonymousCredentials(dataDir),
    );
    opened.push(made);
    return made;
  };

  /** A client certificate issued by the admin through Sign (possession of a fresh key). */
  async function signClient(
    name: string,
    profile = 'client',
  ): Promise<{ identity: Identity; issued: IssuedCertificate }> {
    const { privateKey } = generateKeyPair('p256');
    const adminFingerprint = sha256(leafDer(adminIdentity(dataDir).certificateChain));
    const issued = await call(admin.ca, admin.ca.sign, {
      key: { $case: 'possession', value: possessionFor(privateKey, signChallenge(adminFingerprint)) },
      profile,
      commonName: name,
      dnsNames: [],
      ipAddresses: [],
      uris: [],
      ttlSeconds: 3600,
    });
    return { identity: identityOf(issued, privateKeyToPem(privateKey)), issued };
  }

  before(async () => {
    running = await startTestServer({ dataDir });
    admin = open(adminIdentity(dataDir));
    anonymous = open(null);
  });

  after(async () => {
    for (const made of opened) made.close();
    await running?.close(1000);
  });

  test('bootstrap creates the data directory 0700 with admin.pem/admin.key 0600 and server.json', () => {
    assert.equal(running.mode, 'bootstrap');
    assert.ok(running.bootstrapped);
    const mode = (name: string) => statSync(join(dataDir, name)).mode & 0o777;
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
    assert.equal(mode('admin.pem'), 0o600);
    assert.equal(mode('admin.key'), 0o600);
    assert.equal(mode('store.key'), 0o600);
    const root = new X509Certificate(readFileSync(join(dataDir, 'ca.pem')));
    const fingerprint = sha256(root.raw);
    assert.equal(running.bootstrapped.rootFingerprint, fingerprint);
    const admin = new X509Certificate(readFileSync(join(dataDir, 'admin.pem')));
    assert.equal(admin.subjectAltName, 'URI:spiffe://sigil.internal/admin/admin');

    const info = JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8'));
    assert.equal(info.listen, `127.0.0.1:${running.port}`);
    assert.notEqual(running.port, 0);
    assert.equal(info.httpUrl, running.httpUrl);
    assert.equal(info.rootFingerprint, fingerprint);
    assert.equal(info.trustDomain, 'sigil.internal');
    assert.equal(info.store, 'sqlite');
    assert.deepEqual(info.advertise, [`127.0.0.1:${running.port}`]);
    assert.match(info.replicaId, /^replica-[0-9a-f]{8}$/);
    assert.equal(readFileSync(join(dataDir, 'replica-id'), 'utf8').trim(), info.replicaId);
  });

  test('an admin can Sign (proof of possession and CSR), ListCertificates and GetStatus', async () => {
    const { issued } = await signClient('alice');
    assert.equal(issued.spiffeId, 'spiffe://sigil.internal/client/alice');
    assert.ok(issued.notAfterUnixMs > Date.now());

    const { privateKey } = generateKeyPair('ed25519');
    const fromCsr = await call(admin.ca, admin.ca.sign, {
      key: { $case: 'csr', value: createCsr(privateKey, { commonName: 'api' }) },
      profile: 'server',
      commonName: 'api',
      dnsNames: ['api.internal'],
      ipAddresses: ['10.0.0.5'],
      uris: [],
      ttlSeconds: 0,
    });
    const certificate = new X509Certificate(fromCsr.certificate);
    assert.match(certificate.subjectAltName ?? '', /DNS:api\.internal/);
    assert.match(certificate.subjectAltName ?? '', /IP Address:10\.0\.0\.5/);

    const page = await call(admin.ca, admin.ca.listCertificates, {
      pageSize: 1000,
      pageToken: '',
      requester: '',
      profile: '',
      revoked: '',
    });
    const serials = page.certificates.map((summary) => summary.serial);
    assert.ok(serials.includes(issued.serial));
    assert.ok(serials.includes(fromCsr.serial));

    const status = await call(admin.admin, admin.admin.getStatus, {});
    assert.equal(status.trustDomain, 'sigil.internal');
    assert.equal(status.rootFingerprint, running.info.rootFingerprint);
    assert.equal(status.replicaId, running.info.replicaId);
    assert.equal(status.store, 'sqlite');
    assert.ok(status.certificatesIssued >= 4, `issued ${status.certificatesIssued}`);
    assert.equal(status.replicas.length, 1);
  });

  test('a non-admin gets PERMISSION_DENIED for Admin, Sign and ListCertificates, and may Renew itself', async () => {
    const { identity, issued } = await signClient('bob');
    const bob = open(identity);
    const status = await failureOf(call(bob.admin, bob.admin.getStatus, {}));
    assertStatus(status, grpc.status.PERMISSION_DENIED, /spiffe:\/\/sigil\.internal\/client\/bob/);
    const token = await failureOf(
      call(bob.admin, bob.admin.createToken, {
        ttlSeconds: 0,
        uses: 0,
        autoApprove: false,
        name: '',
        replica: false,
      }),
    );
    assertStatus(token, grpc.status.PERMISSION_DENIED);
    const list = await failureOf(
      call(bob.ca, bob.ca.listCertificates, {
        pageSize: 0,
        pageToken: '',
        requester: '',
        profile: '',
        revoked: '',
      }),
    );
    assertStatus(list, grpc.status.PERMISSION_DENIED);
    const sign = await failureOf(
      call(bob.ca, bob.ca.sign, {
        key: { $case: 'csr', value: Buffer.from('x') },
        profile: 'client',
        commonName: 'mallory',
        dnsNames: [],
        ipAddresses: [],
        uris: [],
        ttlSeconds: 0,
      }),
    );
    assertStatus(sign, grpc.status.PERMISSION_DENIED);

    const bundle = await call(bob.ca, bob.ca.getTrustBundle, {});
    assert.equal(bundle.rootFingerprint, running.info.rootFingerprint);
    const renewed = await call(bob.ca, bob.ca.renew, {});
    assert.equal(renewed.spiffeId, issued.spiffeId);
    assert.notEqual(renewed.serial, issued.serial);
  });

  test('a client without a certificate can call Enrolment only', async () => {
    const bundle = await call(anonymous.enrolment, anonymous.enrolment.getTrustBundle, {});
    assert.equal(bundle.rootFingerprint, running.info.rootFingerprint);
    assert.equal(bundle.trustDomain, 'sigil.internal');
    for (const attempt of [
      call(anonymous.admin, anonymous.admin.getStatus, {}),
      call(anonymous.admin, anonymous.admin.listTokens, {}),
      call(anonymous.ca, anonymous.ca.getTrustBundle, {}),
      call(anonymous.ca, anonymous.ca.renew, {}),
    ]) {
      assertStatus(
        await failureOf(attempt),
        grpc.status.UNAUTHENTICATED,
        new RegExp(CLIENT_CERTIFICATE_REQUIRED),
      );
    }
  });

  test('enrolment over gRPC: CreateToken, anonymous Register (NEW), ApproveNode, Register again (UP), then Renew as the node', async () => {
    const created = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: false,
      name: 'edge-1',
      replica: false,
    });
    const token = parseJoinToken(created.token);
    assert.deepEqual(token.addresses, [`127.0.0.1:${running.port}`]);
    assert.equal(token.rootFingerprint, running.info.rootFingerprint);
    const { privateKey } = generateKeyPair('ed25519');
    const request = {
      tokenId: token.id,
      tokenSecret: token.secret,
      possession: possessionFor(privateKey, registerChallenge(token.id, token.secret)),
      name: 'edge-1',
    };
    const first = await call(anonymous.enrolment, anonymous.enrolment.register, request);
    assert.equal(first.state, 'NEW');
    assert.equal(first.certificate, undefined);

    const approved = await call(admin.admin, admin.admin.approveNode, { id: first.nodeId });
    assert.equal(approved.state, 'UP');
    const again = await call(anonymous.enrolment, anonymous.enrolment.register, request);
    assert.equal(again.state, 'UP');
    assert.ok(again.certificate);
    assert.equal(again.certificate.spiffeId, `spiffe://sigil.internal/node/${first.nodeId}`);

    const node = open(identityOf(again.certificate, privateKeyToPem(privateKey)));
    const renewed = await call(node.ca, node.ca.renew, {});
    assert.equal(renewed.spiffeId, again.certificate.spiffeId);
    assertStatus(
      await failureOf(call(node.admin, node.admin.listNodes, { state: '' })),
      grpc.status.PERMISSION_DENIED,
    );

    const nodes = await call(admin.admin, admin.admin.listNodes, { state: 'UP' });
    assert.ok(nodes.nodes.some((listed) => listed.id === first.nodeId && listed.name === 'edge-1'));
    const tokens = await call(admin.admin, admin.admin.listTokens, {});
    const summary = tokens.tokens.find((listed) => listed.id === token.id);
    assert.equal(summary?.usesLeft, 0);
    const reused = await failureOf(
      call(anonymous.enrolment, anonymous.enrolment.register, {
        ...request,
        possession: possessionFor(
          generateKeyPair('ed25519').privateKey,
          registerChallenge(token.id, token.secret),
        ),
      }),
    );
    assertStatus(reused, grpc.status.PERMISSION_DENIED, /already been used/);
  });

  test('malformed SPKI → INVALID_ARGUMENT naming possession.spki (Sign, Register, Rejoin)', async () => {
    const possession = {
      spki: Buffer.from('not a key'),
      challenge: Buffer.alloc(32, 1),
      signature: Buffer.alloc(64, 2),
    };
    const sign = await failureOf(
      call(admin.ca, admin.ca.sign, {
        key: { $case: 'possession', value: possession },
        profile: 'client',
        commonName: 'x',
        dnsNames: [],
        ipAddresses: [],
        uris: [],
        ttlSeconds: 0,
      }),
    );
    assertStatus(sign, grpc.status.INVALID_ARGUMENT, /^possession\.spki: /);
    const register = await failureOf(
      call(anonymous.enrolment, anonymous.enrolment.register, {
        tokenId: 'tn0000000000000000',
        tokenSecret: Buffer.alloc(32),
        possession,
        name: '',
      }),
    );
    assertStatus(register, grpc.status.INVALID_ARGUMENT, /^possession\.spki: /);
    const rejoin = await failureOf(call(anonymous.enrolment, anonymous.enrolment.rejoin, { possession }));
    assertStatus(rejoin, grpc.status.INVALID_ARGUMENT, /^possession\.spki: /);
    // Well framed, but not a key OpenSSL reads, or a key type sigil does not take: named too.
    const adminFingerprint = sha256(leafDer(adminIdentity(dataDir).certificateChain));
    for (const spki of [
      Buffer.from('300c300506032a030403030000ff', 'hex').subarray(0, 14),
      generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'der' }),
    ]) {
      const error = await failureOf(
        call(admin.ca, admin.ca.sign, {
          key: {
            $case: 'possession',
            value: { spki, challenge: signChallenge(adminFingerprint), signature: Buffer.alloc(64, 2) },
          },
          profile: 'client',
          commonName: 'x',
          dnsNames: [],
          ipAddresses: [],
          uris: [],
          ttlSeconds: 0,
        }),
      );
      assertStatus(
        error,
        grpc.status.INVALID_ARGUMENT,
        /^possession\.spki: (malformed SubjectPublicKeyInfo|unsupported key)/,
      );
    }
    const missing = await failureOf(call(anonymous.enrolment, anonymous.enrolment.rejoin, {}));
    assertStatus(missing, grpc.status.INVALID_ARGUMENT, /^possession: is required/);
  });

  test('field limits: too many names, an oversized SPKI and a garbage CSR are INVALID_ARGUMENT naming the field', async () => {
    const base = {
      profile: 'server',
      commonName: 'x',
      dnsNames: [] as string[],
      ipAddresses: [] as string[],
      uris: [] as string[],
      ttlSeconds: 0,
    };
    const names = await failureOf(
      call(admin.ca, admin.ca.sign, {
        ...base,
        key: { $case: 'csr', value: Buffer.from('x') },
        dnsNames: Array.from({ length: 65 }, (_, i) => `h${i}.example`),
      }),
    );
    assertStatus(names, grpc.status.INVALID_ARGUMENT, /^dns_names: 65 entries is over the limit of 64/);
    const spki = await failureOf(
      call(admin.ca, admin.ca.sign, {
        ...base,
        key: {
          $case: 'possession',
          value: { spki: Buffer.alloc(4096), challenge: Buffer.alloc(32), signature: Buffer.alloc(64) },
        },
      }),
    );
    assertStatus(
      spki,
      grpc.status.INVALID_ARGUMENT,
      /^possession\.spki: 4096 bytes is over the limit of 2048/,
    );
    const csr = await failureOf(
      call(admin.ca, admin.ca.sign, { ...base, key: { $case: 'csr', value: Buffer.from('garbage') } }),
    );
    assertStatus(csr, grpc.status.INVALID_ARGUMENT);
    const serial = await failureOf(call(admin.ca, admin.ca.revoke, { serial: 'zz-not-hex', reason: '' }));
    assertStatus(serial, grpc.status.INVALID_ARGUMENT, /^serial: /);
    const revoked = await failureOf(
      call(admin.ca, admin.ca.listCertificates, {
        pageSize: 0,
        pageToken: '',
        requester: '',
        profile: '',
        revoked: 'maybe',
      }),
    );
    assertStatus(revoked, grpc.status.INVALID_ARGUMENT, /^revoked: /);
    const unknown = await failureOf(call(admin.admin, admin.admin.getNode, { id: 'no-such-node' }));
    assert.ok([grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND].includes(unknown.code), unknown.details);
  });

  test('an oversized message → RESOURCE_EXHAUSTED, with or without a client certificate', async () => {
    const huge = Buffer.alloc(200 * 1024, 7);
    const sign = await failureOf(
      call(admin.ca, admin.ca.sign, {
        key: { $case: 'csr', value: huge },
        profile: 'client',
        commonName: 'x',
        dnsNames: [],
        ipAddresses: [],
        uris: [],
        ttlSeconds: 0,
      }),
    );
    assertStatus(sign, grpc.status.RESOURCE_EXHAUSTED);
    const register = await failureOf(
      call(anonymous.enrolment, anonymous.enrolment.register, {
        tokenId: 'tn0000000000000000',
        tokenSecret: huge,
        possession: undefined,
        name: '',
      }),
    );
    assertStatus(register, grpc.status.RESOURCE_EXHAUSTED);
    // The server is still fine afterwards.
    await call(admin.admin, admin.admin.getStatus, {});
  });

  test('WatchRevocations: a snapshot first, then the delta of a Revoke; cancel ends it cleanly', async () => {
    const { issued } = await signClient('carol');
    const events: RevocationEvent[] = [];
    const stream = admin.ca.watchRevocations({});
    stream.on('data', (event: RevocationEvent) => events.push(event));
    const ended = new Promise<grpc.StatusObject>((resolve) => stream.on('status', resolve));
    const streamErrors = cancellationOnly(stream);
    await eventually('the snapshot', () => events.length >= 1);
    assert.equal(events[0].snapshot, true);
    assert.ok(!events[0].serials.includes(issued.serial));

    const result = await call(admin.ca, admin.ca.revoke, { serial: issued.serial, reason: 'keyCompromise' });
    assert.equal(result.alreadyRevoked, false);
    const delta = await eventually('the revocation delta', () =>
      events.find((event) => !event.snapshot && event.serials.includes(issued.serial)),
    );
    assert.equal(delta.snapshot, false);
    const again = await call(admin.ca, admin.ca.revoke, { serial: issued.serial, reason: '' });
    assert.equal(again.alreadyRevoked, true);

    stream.cancel();
    assert.equal((await ended).code, grpc.status.CANCELLED);
    assert.deepEqual(streamErrors, [], 'the watch stream failed');
    await eventually('the watcher gauge back to 0', async () => {
      const text = await (await fetch(`${running.httpUrl}/metrics`)).text();
      return /^sigil_revocation_watchers 0$/m.test(text);
    });
  });

  test('HTTP side: /healthz, /readyz, /metrics, /crl/<issuer> (DER and PEM), 404 and 405', async () => {
    const get = (path: string, init?: RequestInit) => fetch(`${running.httpUrl}${path}`, init);
    assert.equal((await get('/healthz')).status, 200);
    const ready = await get('/readyz');
    assert.equal(ready.status, 200);
    assert.equal((await ready.text()).trim(), 'ready');

    const metrics = await get('/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await metrics.text();
    assert.match(text, /^sigil_certificates_issued_total\{kind="sign",profile="client"\} [1-9]/m);
    assert.match(text, /^sigil_grpc_server_handled_total\{.*grpc_method="GetStatus".*\} [1-9]/m);
    assert.match(text, /^sigil_tokens_consumed_total [1-9]/m);
    assert.match(text, /^sigil_tls_handshake_failures_total/m);

    const issuers = running.authority.crlIssuers();
    assert.ok(issuers.includes('root'), issuers.join(', '));
    const intermediate = issuers.find((id) => id !== 'root');
    assert.ok(intermediate, 'an intermediate CRL is served');
    for (const issuer of issuers) {
      const der = await get(`/crl/${encodeURIComponent(issuer)}`);
      assert.equal(der.status, 200, issuer);
      assert.equal(der.headers.get('content-type'), 'application/pkix-crl');
      const crl = parseCrl(Buffer.from(await der.arrayBuffer()));
      assert.ok(crl.nextUpdate && crl.nextUpdate.getTime() > Date.now());
      const pem = await get(`/crl/${encodeURIComponent(issuer)}?format=pem`);
      assert.equal(pem.status, 200);
      assert.match(await pem.text(), /^-----BEGIN X509 CRL-----\n/);
    }
    // The revoked serial from the WatchRevocations test is in its issuer's CRL.
    const crl = parseCrl(
      Buffer.from(await (await get(`/crl/${encodeURIComponent(intermediate)}`)).arrayBuffer()),
    );
    assert.ok(crl.entries.length >= 1);

    assert.equal((await get('/crl/no-such-issuer')).status, 404);
    assert.equal((await get('/crl/')).status, 404);
    assert.equal((await get('/crl/root?format=xml')).status, 400);
    assert.equal((await get('/')).status, 404);
    assert.equal((await get('/admin')).status, 404);
    const post = await get('/metrics', { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const head = await get('/healthz', { method: 'HEAD' });
    assert.equal(head.status, 200);
  });

  test('graceful shutdown ends open watch streams with OK; a restart serves the same CA without bootstrapping', async () => {
    const stream = admin.ca.watchRevocations({});
    const events: RevocationEvent[] = [];
    stream.on('data', (event: RevocationEvent) => events.push(event));
    const streamErrors = cancellationOnly(stream);
    const ended = new Promise<grpc.StatusObject>((resolve) => stream.on('status', resolve));
    await eventually('the snapshot', () => events.length >= 1);
    const before = running.info;
    await running.close(5000);
    const endStatus = await ended;
    assert.equal(endStatus.code, grpc.status.OK, endStatus.details);
    assert.deepEqual(streamErrors, [], 'the watch stream failed');
    await assert.rejects(fetch(`${running.httpUrl}/healthz`));

    running = await startTestServer({ dataDir });
    assert.equal(running.mode, 'serve');
    assert.equal(running.bootstrapped, null);
    assert.equal(running.info.rootFingerprint, before.rootFingerprint);
    assert.equal(running.info.replicaId, before.replicaId);
    const again = open(adminIdentity(dataDir));
    const status = await call(again.admin, again.admin.getStatus, {});
    assert.equal(status.rootFingerprint, before.rootFingerprint);
    // The revocation from before the restart is still in force.
    assert.ok(events[0].serials.length >= 1);
    assert.deepEqual(running.authority.revokedSerials().sort(), [...events[0].serials].sort());
  });

  test('a port in use is refused with a message naming it, and nothing is left open', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as AddressInfo).port;
    try {
      const other = join(tempDir(), 'busy');
      await assert.rejects(
        startTestServer({ dataDir: other, listen: `127.0.0.1:${port}` }),
        new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(--listen\\): .*EADDRINUSE`),
      );
      await assert.rejects(
        startTestServer({ dataDir: other, httpListen: `127.0.0.1:${port}` }),
        new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(--http-listen\\)`),
      );
      // The store was closed on the way out: the same data directory starts fine.
      const started = await startTestServer({ dataDir: other });
      await started.close(100);
    } finally {
      blocker.close();
    }
  });

  test('a second start with another --replica-id on the same data directory is refused', async () => {
    await assert.rejects(startTestServer({ dataDir, replicaId: 'someone-else' }), /belongs to replica/);
  });
});
