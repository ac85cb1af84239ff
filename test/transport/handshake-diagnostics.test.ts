// Issue #10, "a handshake refused for a certificate reason tells the client
// why": a forged, revoked, expired, foreign or CA client used to see only
// "UNAVAILABLE: Failed to connect" / "socket hang up", and the server logged
// "UNSPECIFIED". Now MtlsServer sends the TLS alert that says why
// (tls-alert.ts) and reports the verification code, the peer address, and
// the serial and SPIFFE ID of what was presented; sigil's clients turn the
// alert into one line a person can act on (client/rpc.ts), and say so when
// it is this client that refused the server. Each case is checked from a
// real client: sigil's channelCredentials, plain grpc-js, Node's TLS and the
// system's `openssl s_client`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { RpcError, rpcError } from '../../src/client/rpc.ts';
import { issueDelegation } from '../../src/pki/delegation-certificates.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { MaterialSource } from '../../src/pki/material.ts';
import { uriName } from '../../src/pki/names.ts';
import { DEFAULT_POLICY_OID, PERMISSIONS, type Policy } from '../../src/pki/policy-extension.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { alertFor, verificationCode } from '../../src/transport/handshake-refusal.ts';
import type { HandshakeFailure } from '../../src/transport/mtls-server.ts';
import { RevocationSet } from '../../src/transport/revocation-set.ts';
import { verifySpiffeId } from '../../src/transport/server-verification.ts';
import { sealAlertRecord } from '../../src/transport/tls-alert.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { pemOf } from '../support/pem.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';
import {
  callUnary,
  closedAfterTests,
  EchoClient,
  ManualMaterialSource,
  mtlsClient,
  type RunningServer,
  TestCa,
  TRUST_DOMAIN,
} from './fixtures.ts';

const hour = 3_600_000;
const ca = new TestCa('sigil handshake-diagnostics test CA', { intermediate: true });
const otherCa = new TestCa('another deployment');
const { start, closeLater } = closedAfterTests();
const work = tempDir('sigil-diagnostics-');

interface Identity {
  readonly certificateChain: string;
  readonly privateKey: string;
}

function policy(): Policy {
  return {
    version: 1,
    permissions: new Set(PERMISSIONS),
    limits: { workloads: 2, cpus: [0], memoryMiB: 1024, blockMiB: 0, bridges: [], issuancePerHour: 100 },
  };
}

// A delegation the deployment issued to "alice": a CA whose name constraints permit only alice's host.
const delegationKeys = generateKeyPair('p256');
const delegation = issueDelegation({
  parent: {
    issuer: Issuer.fromCertificate(ca.signerDer, ca.signerKey),
    certificateDer: ca.signerDer,
    policy: policy(),
  },
  trustDomain: TRUST_DOMAIN,
  policyOid: DEFAULT_POLICY_OID,
  publicKey: delegationKeys.publicKey,
  name: 'alice',
  policy: policy(),
  ttlMs: 2 * hour,
});

/** What alice's delegation key signs: an admin's name, outside alice's host. */
function forgedDelegateLeaf(): Identity {
  const keys = generateKeyPair('p256');
  const leaf = Issuer.fromCertificate(delegation.der, delegationKeys.privateKey).issue({
    publicKey: keys.publicKey,
    profile: 'client',
    subject: { commonName: 'mallory' },
    sans: [uriName(`spiffe://${TRUST_DOMAIN}/admin/mallory`)],
    ttlMs: hour,
  });
  return {
    certificateChain: pemOf(leaf.der, delegation.der, ca.signerDer),
    privateKey: privateKeyToPem(keys.privateKey),
  };
}

/** The delegation certificate itself, with its key, presented as a client. */
const delegationAsClient: Identity = {
  certificateChain: pemOf(delegation.der, ca.signerDer),
  privateKey: privateKeyToPem(delegationKeys.privateKey),
};

/** A sigil client (channelCredentials) calling with `identity`; the grpc-js error of a call that must fail. */
async function sigilClientError(
  port: number,
  identity: Identity,
  verify?: ReturnType<typeof verifySpiffeId>,
) {
  const material: MaterialSource = new ManualMaterialSource({ ...identity, trustBundle: ca.rootPem });
  const channel = new EchoClient(
    `127.0.0.1:${port}`,
    channelCredentials({ material, serverName: 'localhost', ...(verify ? { verify } : {}) }),
    { 'grpc.use_local_subchannel_pool': 1 },
  );
  const error = await failureOf(callUnary(channel));
  // A refused channel keeps reconnecting in the background: close it, so it causes no more refusals.
  channel.close();
  return error;
}

/**
 * The failure the server reported, after `since` failures, for the certificate
 * with `serial` (a refused grpc-js channel keeps reconnecting in the
 * background, so the next report may be an earlier client's); without a
 * serial, the next one.
 */
function nextFailure(running: RunningServer, since: number, serial?: string): Promise<HandshakeFailure> {
  return eventually('the server to report the refusal', () =>
    running.failures.slice(since).find((f) => serial === undefined || f.serial === serial),
  );
}

/** What `openssl s_client` (the system's OpenSSL) prints when it connects with `identity`. */
function opensslClient(port: number, identity: Identity): Promise<string> {
  const dir = mkdtempSync(join(work, 's_client-'));
  writeFileSync(join(dir, 'root.pem'), ca.rootPem);
  // s_client sends only the first certificate of -cert; the rest goes in -cert_chain.
  const [leaf, ...issuers] = identity.certificateChain.split(/(?<=-----END CERTIFICATE-----\n)/);
  writeFileSync(join(dir, 'cert.pem'), leaf);
  writeFileSync(join(dir, 'chain.pem'), issuers.join('') || leaf);
  writeFileSync(join(dir, 'key.pem'), identity.privateKey, { mode: 0o600 });
  return new Promise((resolve, reject) => {
    const child = execFile(
      'openssl',
      [
        's_client',
        '-connect',
        `127.0.0.1:${port}`,
        '-servername',
        'localhost',
        '-CAfile',
        join(dir, 'root.pem'),
        '-cert',
        join(dir, 'cert.pem'),
        '-key',
        join(dir, 'key.pem'),
        '-cert_chain',
        join(dir, 'chain.pem'),
        '-tls1_3',
        '-ign_eof',
      ],
      { timeout: 10_000 },
      (error, stdout, stderr) => {
        const output = `${stdout}${stderr}`;
        if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') reject(error);
        else resolve(output);
      },
    );
    child.stdin?.end();
  });
}

describe('handshake refusals: the alert, the server report and the client line', () => {
  const revocation = new RevocationSet();
  const revoked = ca.issueClient({ name: 'node/revoked' });
  const crlRevoked = ca.issueClient({ name: 'node/crl-revoked' });
  let running: RunningServer;

  test('setup', async () => {
    revocation.revoke(revoked.serialHex);
    const crls = ca.crls([
      { serialHex: crlRevoked.serialHex, revokedAt: new Date(), reason: 'keyCompromise' },
    ]);
    running = await start({
      material: new ManualMaterialSource(ca.material(ca.issueServer(), { crls })),
      revocation,
    });
  });

  /** Checks the server's report of the last refusal and returns the client line of a sigil client. */
  async function refusal(
    identity: Identity,
    expected: { reason: RegExp | string; alert: string; spiffeId: string | null },
  ): Promise<string> {
    const since = running.failures.length;
    const error = await sigilClientError(running.port, identity);
    assert.equal(error.code, grpc.status.UNAVAILABLE, error.details);
    const failure = await nextFailure(running, since, serialOf(identity.certificateChain));
    if (typeof expected.reason === 'string') assert.equal(failure.reason, expected.reason);
    else assert.match(failure.reason, expected.reason);
    assert.equal(failure.alert, expected.alert, 'the alert the server sent');
    assert.equal(failure.remoteAddress, '127.0.0.1');
    assert.ok(Number.isInteger(failure.remotePort) && (failure.remotePort ?? 0) > 0, 'the peer port');
    assert.equal(failure.serial, serialOf(identity.certificateChain));
    assert.equal(failure.spiffeId, expected.spiffeId);
    const line = rpcError(error, `127.0.0.1:${running.port}`);
    assert.ok(line instanceof RpcError);
    assert.equal(line.refusal?.kind, 'server-refused-client');
    assert.equal(line.refusal?.alert, expected.alert);
    assert.doesNotMatch(line.message, /cannot reach|Failed to connect|socket hang up/);
    assert.doesNotMatch(line.message, /\n/, 'one line');
    return line.message;
  }

  const lines = new Map<string, string>();

  test('a revoked client (sigil revocation source): certificate_revoked, reason CERT_REVOKED', async () => {
    const line = await refusal(revoked, {
      reason: 'CERT_REVOKED',
      alert: 'certificate_revoked',
      spiffeId: revoked.spiffeId,
    });
    assert.match(
      line,
      /refused this client's certificate: it has been revoked \(TLS alert certificate_revoked\)/,
    );
    lines.set('revoked', line);
  });

  test('a client revoked by a CRL in the material (OpenSSL refuses it): the same alert and reason', async () => {
    const line = await refusal(crlRevoked, {
      reason: 'CERT_REVOKED',
      alert: 'certificate_revoked',
      spiffeId: crlRevoked.spiffeId,
    });
    assert.equal(line.replace(/127\.0\.0\.1:\d+/, ''), lines.get('revoked')?.replace(/127\.0\.0\.1:\d+/, ''));
  });

  test('an expired client: certificate_expired from the server; sigil itself refuses to present it', async () => {
    const expired = ca.issueClient({
      name: 'node/expired',
      now: new Date(Date.now() - 2 * hour),
      ttlMs: hour,
    });
    // A client that presents it anyway (plain grpc-js) is told why.
    const since = running.failures.length;
    const plain = mtlsClient(running.port, ca.rootPem, expired, { 'grpc.use_local_subchannel_pool': 1 });
    closeLater(() => plain.close());
    const error = await callUnary(plain).then(
      () => assert.fail('the expired client got in'),
      (e: grpc.ServiceError) => e,
    );
    plain.close();
    const failure = await nextFailure(running, since, expired.serialHex);
    assert.equal(failure.reason, 'CERT_HAS_EXPIRED');
    assert.equal(failure.alert, 'certificate_expired');
    assert.equal(failure.serial, expired.serialHex);
    assert.equal(failure.spiffeId, expired.spiffeId);
    const line = rpcError(error, 'the server').message;
    assert.match(
      line,
      /refused this client's certificate: it has expired; renew it \(TLS alert certificate_expired\)/,
    );
    lines.set('expired', line);
    // sigil's own client does not send it: its own line, and nothing reaches the server.
    const before = running.failures.length;
    const own = rpcError(await sigilClientError(running.port, expired), 'the server');
    assert.equal((own as RpcError).refusal?.kind, 'client-certificate-unusable');
    assert.match(
      own.message,
      /^cannot connect to the server: this client's certificate cannot be used: .*expired/,
    );
    assert.equal(running.failures.length, before);
  });

  test('a client from another CA: unknown_ca', async () => {
    const stranger = otherCa.issueClient({ name: 'stranger' });
    const line = await refusal(stranger, {
      reason: /^UNABLE_TO_(GET_ISSUER_CERT_LOCALLY|VERIFY_LEAF_SIGNATURE)$/,
      alert: 'unknown_ca',
      spiffeId: stranger.spiffeId,
    });
    assert.match(line, /not issued by a CA the server trusts/);
    lines.set('another CA', line);
  });

  test('a CA certificate as client (a delegation certificate and its key): unsupported_certificate, reason CA_CERTIFICATE_AS_CLIENT', async () => {
    const line = await refusal(delegationAsClient, {
      reason: 'CA_CERTIFICATE_AS_CLIENT',
      alert: 'unsupported_certificate',
      spiffeId: `spiffe://alice.d.${TRUST_DOMAIN}`,
    });
    assert.match(line, /cannot authenticate a client \(a CA certificate/);
    lines.set('CA certificate', line);
  });

  test("a forged delegate leaf (an admin's name under alice's delegation): bad_certificate, reason PERMITTED_SUBTREE_VIOLATION where Node says UNSPECIFIED", async () => {
    const forged = forgedDelegateLeaf();
    const line = await refusal(forged, {
      reason: 'PERMITTED_SUBTREE_VIOLATION',
      alert: 'bad_certificate',
      spiffeId: `spiffe://${TRUST_DOMAIN}/admin/mallory`,
    });
    assert.match(
      line,
      /refused this client's certificate as invalid: a name outside what its issuer may certify/,
    );
    lines.set('forged delegate leaf', line);
  });

  test('the five refusals read differently', () => {
    assert.deepEqual(
      [...lines.keys()],
      ['revoked', 'expired', 'another CA', 'CA certificate', 'forged delegate leaf'],
    );
    const texts = [...lines.values()].map((line) => line.replace(/at \S+ /, ''));
    assert.equal(new Set(texts).size, 5, texts.join('\n'));
  });

  test('a client with a serverAuth-only certificate: unsupported_certificate, reason INVALID_PURPOSE', async () => {
    const serverOnly = ca.issue({ name: 'server-only', profile: 'server' });
    await refusal(serverOnly, {
      reason: 'INVALID_PURPOSE',
      alert: 'unsupported_certificate',
      spiffeId: serverOnly.spiffeId,
    });
  });

  test('Node and the system OpenSSL (s_client) read the alert too', async () => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: running.port,
      servername: 'localhost',
      ca: ca.rootPem,
      cert: revoked.certificateChain,
      key: revoked.privateKey,
      ALPNProtocols: ['h2'],
    });
    socket.resume();
    const [error] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
    assert.match(String(error.code), /ALERT_CERTIFICATE_REVOKED$/);
    const printed = await opensslClient(running.port, forgedDelegateLeaf());
    assert.match(printed, /alert bad certificate/i);
    const revokedPrinted = await opensslClient(running.port, revoked);
    assert.match(revokedPrinted, /alert certificate revoked/i);
  });

  test('a valid client still gets in after the refusals', async () => {
    const fine = ca.issueClient({ name: 'node/fine' });
    const channel = mtlsClient(running.port, ca.rootPem, fine);
    closeLater(() => channel.close());
    const result = await callUnary(channel);
    assert.equal(JSON.parse(result.response.toString()).serial, fine.serialHex);
  });
});

describe('handshake refusals: other cases', () => {
  test('no client certificate where one is required: certificate_required', async () => {
    const running = await start({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
    const since = running.failures.length;
    const plain = mtlsClient(running.port, ca.rootPem, null, { 'grpc.use_local_subchannel_pool': 1 });
    closeLater(() => plain.close());
    const error = await callUnary(plain).then(
      () => assert.fail('got in without a certificate'),
      (e: grpc.ServiceError) => e,
    );
    const failure = await nextFailure(running, since);
    assert.equal(failure.reason, 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
    assert.equal(failure.alert, 'certificate_required');
    assert.equal(failure.serial, undefined);
    assert.match(rpcError(error, 'x').message, /requires a client certificate and this client sent none/);
  });

  test('when this client refuses the server, it says so (not "cannot reach")', async () => {
    const running = await start({ material: new ManualMaterialSource(ca.material(ca.issueServer())) });
    const error = await sigilClientError(
      running.port,
      ca.issueClient({ name: 'careful' }),
      verifySpiffeId(`spiffe://${TRUST_DOMAIN}/replica/expected`),
    );
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    const line = rpcError(error, `127.0.0.1:${running.port}`);
    assert.equal((line as RpcError).refusal?.kind, 'client-refused-server');
    assert.match(
      line.message,
      new RegExp(
        `^this client refused the certificate of the server at 127\\.0\\.0\\.1:${running.port}: .*spiffe://${TRUST_DOMAIN}/replica/expected`,
      ),
    );
    assert.doesNotMatch(line.message, /cannot reach|SigilError/);
  });

  test('a server chain this client cannot verify (another CA): the client says it refused the server', async () => {
    const running = await start({
      material: new ManualMaterialSource(
        otherCa.material(otherCa.issueServer(), { trustBundle: ca.rootPem }),
      ),
    });
    const error = await sigilClientError(running.port, ca.issueClient({ name: 'careful' }));
    const line = rpcError(error, 'there');
    assert.equal((line as RpcError).refusal?.kind, 'client-refused-server');
    assert.match(line.message, /^this client refused the certificate of the server at there: UNABLE_TO_/);
  });
});

describe('handshake refusals: pieces', () => {
  test('sealAlertRecord: one 24-byte application_data record for each TLS 1.3 suite Node enables, none for a suite it does not know', async () => {
    // Checked against OpenSSL itself by the tests above; here only that the suites and alerts are wired.
    for (const suite of [
      'TLS_AES_128_GCM_SHA256',
      'TLS_AES_256_GCM_SHA384',
      'TLS_CHACHA20_POLY1305_SHA256',
    ]) {
      const record = sealAlertRecord(Buffer.alloc(48, 7), suite, 'certificate_revoked');
      assert.ok(record);
      assert.deepEqual([...record.subarray(0, 5)], [23, 3, 3, 0, 19]);
      assert.equal(record.length, 24);
    }
    assert.equal(sealAlertRecord(Buffer.alloc(32), 'TLS_AES_128_CCM_SHA256', 'bad_certificate'), null);
  });

  test("OpenSSL's text names what Node calls UNSPECIFIED", () => {
    const socket = (code: unknown, text?: string) =>
      ({
        authorizationError: code,
        _handle: { verifyError: () => (text === undefined ? null : new Error(text)) },
      }) as unknown as tls.TLSSocket;
    assert.equal(
      verificationCode(socket('UNSPECIFIED', 'permitted subtree violation')),
      'PERMITTED_SUBTREE_VIOLATION',
    );
    assert.equal(
      verificationCode(socket('UNSPECIFIED', 'excluded subtree violation')),
      'EXCLUDED_SUBTREE_VIOLATION',
    );
    assert.equal(verificationCode(socket('CERT_HAS_EXPIRED')), 'CERT_HAS_EXPIRED');
    assert.equal(verificationCode(socket('UNSPECIFIED')), 'UNSPECIFIED');
    assert.equal(alertFor('PERMITTED_SUBTREE_VIOLATION'), 'bad_certificate');
    assert.equal(alertFor('SOMETHING_NEW'), 'certificate_unknown');
  });
});
