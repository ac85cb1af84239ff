// Issue #10 on the real control plane: a revoked node, an expired client, a
// client of another CA, a CA certificate as client and a forged delegate
// leaf each get a TLS alert saying why, a distinct line from sigil's client
// code (client/rpc.ts, as every command uses it), and a server log line at
// info with the verification code, the peer address, and the serial and
// SPIFFE ID of what was presented. Before, all five read "cannot reach the
// sigil server … Failed to connect" and the log said "UNSPECIFIED" at debug.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { enrol } from '../../src/agent/enrol.ts';
import { RpcError, unary } from '../../src/client/rpc.ts';
import { CertificateAuthorityClient } from '../../src/gen/sigil/v1/sigil.ts';
import { createLogger } from '../../src/logging.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { uriName } from '../../src/pki/names.ts';
import type { RunningServer } from '../../src/server/start-server.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { pemOf } from '../support/pem.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';
import { TestCa } from '../transport/fixtures.ts';
import { Delegates, type Held, policy } from './delegation-fixtures.ts';
import { adminIdentity, adminJoinToken, call, clients, credentialsFor, startTestServer } from './helpers.ts';

const hour = 3_600_000;

interface Identity {
  readonly certificateChain: string;
  readonly privateKey: string;
}

interface LogLine {
  readonly level: string;
  readonly msg: string;
  readonly reason?: string;
  readonly remote?: string;
  readonly serial?: string;
  readonly spiffeId?: string;
  readonly alert?: string;
}

describe('handshake refusals on the control plane: the client line and the server log line', () => {
  const work = tempDir('sigil-diagnostics-');
  const dataDir = join(work, 'data');
  const out = new PassThrough();
  const logged: string[] = [];
  out.on('data', (chunk: Buffer) => logged.push(chunk.toString()));
  let running: RunningServer;
  let delegates: Delegates;
  let alice: Held;
  let td: string;
  const open: grpc.Client[] = [];
  const lines = new Map<string, string>();

  before(async () => {
    running = await startTestServer({ dataDir, logger: createLogger({ destination: out, level: 'info' }) });
    td = running.authority.trustDomain;
    delegates = new Delegates(running.address, dataDir, td, running.authority.policyOid);
    alice = await delegates.adminDelegates('alice', policy('info,issue', null));
  });

  after(async () => {
    for (const client of open) client.close();
    delegates?.close();
    await running?.close(0);
  });

  const refusals = (): LogLine[] =>
    logged
      .join('')
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as LogLine)
      .filter((line) => line.msg.startsWith('handshake refused'));

  /** A leaf alice's delegation key signs, presented with alice's chain. */
  function mintedByAlice(uri: string, validity: { now?: Date; ttlMs?: number } = {}): Identity {
    const keys = generateKeyPair('p256');
    const leaf = Issuer.fromCertificate(alice.ca, alice.key).issue({
      publicKey: keys.publicKey,
      profile: 'client',
      subject: { commonName: 'mallory' },
      sans: [uriName(uri)],
      ttlMs: validity.ttlMs ?? hour,
      ...(validity.now ? { now: validity.now } : {}),
    });
    return {
      certificateChain: pemOf(leaf.der, alice.ca, ...alice.above),
      privateKey: privateKeyToPem(keys.privateKey),
    };
  }

  /** A CA client calling with `identity`: sigil's credentials, or (`plain`) grpc-js createSsl, which presents anything. */
  function caClient(identity: Identity, plain = false): CertificateAuthorityClient {
    const trustBundle = readFileSync(join(dataDir, 'ca.pem'), 'utf8');
    const credentials = plain
      ? grpc.credentials.createSsl(
          Buffer.from(trustBundle),
          Buffer.from(identity.privateKey),
          Buffer.from(identity.certificateChain),
        )
      : channelCredentials({ material: new StaticMaterialSource({ ...identity, trustBundle }) });
    const client = new CertificateAuthorityClient(running.address, credentials, {
      'grpc.use_local_subchannel_pool': 1,
    });
    open.push(client);
    return client;
  }

  /** The one line sigil prints for the failed call, and the server's log line about it. */
  async function refused(
    identity: Identity,
    expected: { reason: RegExp | string; alert: string; serial: string; spiffeId: string },
    plain = false,
  ): Promise<string> {
    const before = refusals().length;
    const client = caClient(identity, plain);
    const error = await failureOf<unknown>(
      unary(client, client.getTrustBundle, {}, { target: running.address }),
    );
    // A refused channel keeps reconnecting in the background: close it, so it logs no more refusals.
    client.close();
    assert.ok(error instanceof RpcError, String(error));
    assert.equal(error.statusName, 'UNAVAILABLE');
    assert.equal(error.refusal?.kind, 'server-refused-client');
    assert.equal(error.refusal?.alert, expected.alert);
    assert.doesNotMatch(error.message, /cannot reach|Failed to connect|socket hang up|\n/);
    const line = await eventually('the server to log the refusal', () =>
      refusals()
        .slice(before)
        .find((l) => l.serial === expected.serial),
    );
    assert.equal(line.level, 'info');
    if (typeof expected.reason === 'string') assert.equal(line.reason, expected.reason);
    else assert.match(String(line.reason), expected.reason);
    assert.match(String(line.remote), /^127\.0\.0\.1:\d+$/);
    assert.equal(line.serial, expected.serial);
    assert.equal(line.spiffeId, expected.spiffeId);
    assert.equal(line.alert, expected.alert);
    return error.message;
  }

  test('a revoked node: "the server … refused this client\'s certificate: it has been revoked", CERT_REVOKED logged', async () => {
    const dir = join(work, 'node');
    const result = await enrol({
      token: await adminJoinToken(running.address, dataDir, 'victim', false),
      dir,
      keyType: 'p256',
    });
    assert.ok(result.certificate);
    const node: Identity = {
      certificateChain: readFileSync(join(dir, 'cert.pem'), 'utf8'),
      privateKey: readFileSync(join(dir, 'key.pem'), 'utf8'),
    };
    const admin = clients(running.address, credentialsFor(dataDir, adminIdentity(dataDir)));
    try {
      await call(admin.ca, admin.ca.revoke, { serial: result.certificate.serial, reason: 'keyCompromise' });
    } finally {
      admin.close();
    }
    const line = await refused(node, {
      reason: 'CERT_REVOKED',
      alert: 'certificate_revoked',
      serial: result.certificate.serial,
      spiffeId: `spiffe://${td}/node/${result.nodeId}`,
    });
    assert.match(
      line,
      new RegExp(`^the server at ${running.address} refused this client's certificate: it has been revoked`),
    );
    lines.set('revoked', line);
  });

  test('an expired client (presented by plain grpc-js; sigil refuses to present it): CERT_HAS_EXPIRED', async () => {
    // Issued when alice's delegation starts (30 s back-dated for clock skew), valid for 5 s: long over.
    const start = new Date(new X509Certificate(alice.ca).validFrom);
    const expired = mintedByAlice(`spiffe://alice.d.${td}/old`, { now: start, ttlMs: 5_000 });
    assert.ok(new Date(new X509Certificate(expired.certificateChain).validTo) < new Date());
    const line = await refused(
      expired,
      {
        reason: 'CERT_HAS_EXPIRED',
        alert: 'certificate_expired',
        serial: serialOf(expired.certificateChain),
        spiffeId: `spiffe://alice.d.${td}/old`,
      },
      true,
    );
    assert.match(line, /it has expired/);
    lines.set('expired', line);
  });

  test('a client of another CA: unknown_ca', async () => {
    const other = new TestCa('someone else').issueClient({ name: 'stranger' });
    const line = await refused(other, {
      reason: /^UNABLE_TO_(GET_ISSUER_CERT_LOCALLY|VERIFY_LEAF_SIGNATURE)$/,
      alert: 'unknown_ca',
      serial: other.serialHex,
      spiffeId: other.spiffeId,
    });
    assert.match(line, /not issued by a CA the server trusts/);
    lines.set('another CA', line);
  });

  test("a CA certificate as client (alice's delegation certificate with its key): CA_CERTIFICATE_AS_CLIENT", async () => {
    const identity: Identity = {
      certificateChain: pemOf(alice.ca, ...alice.above),
      privateKey: privateKeyToPem(alice.key),
    };
    const line = await refused(identity, {
      reason: 'CA_CERTIFICATE_AS_CLIENT',
      alert: 'unsupported_certificate',
      serial: serialOf(identity.certificateChain),
      spiffeId: `spiffe://alice.d.${td}`,
    });
    assert.match(line, /cannot authenticate a client/);
    lines.set('CA certificate', line);
  });

  test('a forged delegate leaf (an admin name under alice): PERMITTED_SUBTREE_VIOLATION, not UNSPECIFIED', async () => {
    const forged = mintedByAlice(`spiffe://${td}/admin/mallory`);
    const line = await refused(forged, {
      reason: 'PERMITTED_SUBTREE_VIOLATION',
      alert: 'bad_certificate',
      serial: serialOf(forged.certificateChain),
      spiffeId: `spiffe://${td}/admin/mallory`,
    });
    assert.match(line, /as invalid: a name outside what its issuer may certify/);
    lines.set('forged delegate leaf', line);
  });

  test('each refusal reads differently', () => {
    assert.equal(lines.size, 5);
    for (const [what, line] of lines) console.log(`${what}: ${line}`);
    assert.equal(new Set(lines.values()).size, 5, [...lines.values()].join('\n'));
  });

  test('connections that never presented a certificate (a bare TCP connect) are not logged at info', async () => {
    const before = refusals().length;
    const { connect } = await import('node:net');
    const socket = connect(running.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.destroy();
    // A valid call after it: by then the server has seen the bare connection close.
    const admin = clients(running.address, credentialsFor(dataDir, adminIdentity(dataDir)));
    try {
      await call(admin.ca, admin.ca.getTrustBundle, {});
    } finally {
      admin.close();
    }
    assert.equal(refusals().length, before);
  });
});
