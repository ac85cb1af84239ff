// Node lifecycle and abuse limits through the real server (in process, real
// TLS, SQLite): revoked keys stay revoked, issuance per node is bounded,
// a caller revoking itself gets its reply before its connection is cut, a
// revoked delegation's reservations are released, the audit trail and the
// metrics count every CA operation, the HTTP side takes the bearer scheme in
// any case, and private files with loose modes stop the server from starting.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { IssuedCertificate, RegisterRequest } from '../../src/gen/sigil/v1/sigil.ts';
import { createLogger } from '../../src/logging.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import {
  possessionFor,
  registerChallenge,
  rejoinChallenge,
  signChallenge,
} from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import type { RunningServer } from '../../src/server/start-server.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { sha256 } from '../support/fingerprint.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';
import { Delegates, policy } from './delegation-fixtures.ts';
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
  statusName,
} from './helpers.ts';

type KeyPair = ReturnType<typeof generateKeyPair>;

/** The gRPC status code of a call (0 for OK). */
async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'OK';
  } catch (error) {
    return statusName((error as grpc.ServiceError).code);
  }
}

describe('node lifecycle and abuse limits through the server', () => {
  const dataDir = join(tempDir(), 'data');
  const logs = new PassThrough();
  let logText = '';
  logs.on('data', (chunk: Buffer) => {
    logText += chunk.toString();
  });
  let running: RunningServer;
  let admin: Clients;
  let anonymous: Clients;
  let delegates: Delegates;
  const opened: Clients[] = [];
  /** Secrets handed out during the run: none may appear in the log. */
  const secrets: string[] = [];

  const open = (identity: Identity | null): Clients => {
    const made = clients(
      running.address,
      identity ? credentialsFor(dataDir, identity) : anonymousCredentials(dataDir),
    );
    opened.push(made);
    return made;
  };

  /** A node enrolled with an auto-approved single-use token: its key, Register request and certificate. */
  async function enrol(): Promise<{
    key: KeyPair;
    request: RegisterRequest;
    nodeId: string;
    issued: IssuedCertificate;
  }> {
    const created = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: true,
      name: 'edge',
      replica: false,
    });
    const token = parseJoinToken(created.token);
    secrets.push(
      created.token,
      token.secret.toString('base64url'),
      token.secret.toString('base64'),
      token.secret.toString('hex'),
    );
    const key = generateKeyPair('ed25519');
    secrets.push(privateKeyToPem(key.privateKey).split('\n')[1]);
    const request = {
      tokenId: token.id,
      tokenSecret: token.secret,
      possession: possessionFor(key.privateKey, registerChallenge(token.id, token.secret)),
      name: 'edge',
    };
    const registered = await call(anonymous.enrolment, anonymous.enrolment.register, request);
    assert.ok(registered.certificate);
    return { key, request, nodeId: registered.nodeId, issued: registered.certificate };
  }

  const rejoin = (key: KeyPair) =>
    call(anonymous.enrolment, anonymous.enrolment.rejoin, {
      possession: possessionFor(key.privateKey, rejoinChallenge(new Date())),
    });

  /** The node's certificates as the admin lists them: all, and the valid ones. */
  async function nodeCertificates(nodeId: string) {
    const page = await call(admin.ca, admin.ca.listCertificates, {
      pageSize: 1000,
      pageToken: '',
      requester: nodeId,
      profile: 'node',
      revoked: '',
    });
    const valid = page.certificates.filter((c) => c.revokedAtUnixMs === 0 && c.notAfterUnixMs > Date.now());
    return { all: page.certificates, valid };
  }

  const metrics = async (): Promise<string> => (await fetch(`${running.httpUrl}/metrics`)).text();

  before(async () => {
    running = await startTestServer({ dataDir, logger: createLogger({ destination: logs, level: 'info' }) });
    admin = open(adminIdentity(dataDir));
    anonymous = open(null);
    delegates = new Delegates(
      running.address,
      dataDir,
      running.authority.trustDomain,
      running.authority.policyOid,
    );
    secrets.push(adminIdentity(dataDir).privateKey.split('\n')[1]);
  });

  after(async () => {
    for (const made of opened) made.close();
    delegates?.close();
    await running?.close(1000);
  });

  test('revoked keys stay revoked: after keyCompromise, Rejoin and a repeated Register get PERMISSION_DENIED naming why', async () => {
    const node = await enrol();
    const revoked = await call(admin.ca, admin.ca.revoke, {
      serial: node.issued.serial,
      reason: 'keyCompromise',
    });
    assert.equal(revoked.alreadyRevoked, false);
    const before = await nodeCertificates(node.nodeId);
    const why = /this key was revoked for key compromise .*enrol again with a new join token and a new key/;
    assertStatus(await failureOf(rejoin(node.key)), grpc.status.PERMISSION_DENIED, why);
    assertStatus(
      await failureOf(call(anonymous.enrolment, anonymous.enrolment.register, node.request)),
      grpc.status.PERMISSION_DENIED,
      why,
    );
    assert.deepEqual(await nodeCertificates(node.nodeId), before, 'nothing was issued');

    // Any key of a revoked node, likewise.
    const other = await enrol();
    await call(admin.admin, admin.admin.revokeNode, { id: other.nodeId, reason: '' });
    assertStatus(
      await failureOf(rejoin(other.key)),
      grpc.status.PERMISSION_DENIED,
      new RegExp(`node ${other.nodeId} has been revoked`),
    );
    assertStatus(
      await failureOf(call(anonymous.enrolment, anonymous.enrolment.register, other.request)),
      grpc.status.PERMISSION_DENIED,
      /has been revoked; none of its keys gets another certificate: enrol again with a new join token and a new key/,
    );
  });

  test('issuance per node is bounded: 50 Rejoin calls with one key give one new certificate, then RESOURCE_EXHAUSTED', async () => {
    const node = await enrol();
    const outcomes: string[] = [];
    let details = '';
    for (let i = 0; i < 50; i++) {
      try {
        await rejoin(node.key);
        outcomes.push('OK');
      } catch (error) {
        outcomes.push(statusName((error as grpc.ServiceError).code));
        details = (error as grpc.ServiceError).details;
      }
    }
    assert.deepEqual(outcomes, ['OK', ...Array(49).fill('RESOURCE_EXHAUSTED')]);
    assert.match(details, /already holds 2 valid certificates \(current and next, the most it may hold\)/);
    const { all, valid } = await nodeCertificates(node.nodeId);
    assert.equal(all.length, 2);
    assert.equal(valid.length, 2);

    // The node renewing early over mutual TLS: refused alike, 50 times over.
    const asNode = open(identityOf(node.issued, privateKeyToPem(node.key.privateKey)));
    const renewals = await Promise.all(
      Array.from({ length: 50 }, () => outcome(call(asNode.ca, asNode.ca.renew, {}))),
    );
    assert.deepEqual(renewals, Array(50).fill('RESOURCE_EXHAUSTED'));
    assert.equal((await nodeCertificates(node.nodeId)).all.length, 2, 'storage did not grow');
  });

  test('a node revoking its own certificate over its own connection gets the reply before the connection is cut', async () => {
    const node = await enrol();
    const asNode = open(identityOf(node.issued, privateKeyToPem(node.key.privateKey)));
    const reply = await call(asNode.ca, asNode.ca.revoke, {
      serial: node.issued.serial,
      reason: 'superseded',
    });
    assert.equal(reply.alreadyRevoked, false);
    // Afterwards the revoked certificate gets nothing more.
    const next = await failureOf(call(asNode.ca, asNode.ca.getTrustBundle, {}));
    assert.ok([grpc.status.UNAVAILABLE, grpc.status.UNAUTHENTICATED].includes(next.code), next.details);
  });

  test('a delegate revoking its own delegation gets its reply (Revoke by serial, and RevokeDelegated without "revoke")', async () => {
    const alice = await delegates.adminDelegates(
      'self-alice',
      policy('info,create,delegate,issue', { workloads: 2 }),
    );
    const asAlice = delegates.as(alice);
    await call(asAlice.delegation, asAlice.delegation.getDelegationStatus, {});
    const serial = serialOf(alice.ca);
    const reply = await call(asAlice.ca, asAlice.ca.revoke, { serial, reason: 'cessationOfOperation' });
    assert.equal(reply.alreadyRevoked, false);
    assert.notEqual(
      await outcome(call(asAlice.delegation, asAlice.delegation.getDelegationStatus, {})),
      'OK',
    );

    // Carol holds no "revoke" permission; revoking herself needs none.
    const bob = await delegates.adminDelegates(
      'self-bob',
      policy('info,create,delegate,issue,revoke', { workloads: 2 }),
    );
    const carol = delegates.subDelegate(bob, 'carol', policy('info,create', { workloads: 1 }));
    const asCarol = delegates.as(carol);
    await call(asCarol.delegation, asCarol.delegation.getDelegationStatus, {});
    const revoked = await call(asCarol.delegation, asCarol.delegation.revokeDelegated, {
      certificate: carol.ca,
      chain: [bob.ca],
      reason: '',
    });
    assert.equal(revoked.alreadyRevoked, false);
    assert.notEqual(
      await outcome(call(asCarol.delegation, asCarol.delegation.getDelegationStatus, {})),
      'OK',
    );
    const record = await running.authority.delegationTree();
    const found = JSON.stringify(record);
    assert.ok(found.includes(sha256(carol.ca)));
    // Bob, above her, is untouched.
    const asBob = delegates.as(bob);
    assert.equal(await outcome(call(asBob.delegation, asBob.delegation.getDelegationStatus, {})), 'OK');
  });

  test("revoking a delegation releases its subtree's reservations: Alice's usage goes down by Carol's", async () => {
    const alice = await delegates.adminDelegates(
      'usage-alice',
      policy('info,create,destroy,delegate,revoke,issue', { workloads: 2, memoryMiB: 4096 }),
    );
    const carol = delegates.subDelegate(
      alice,
      'carol',
      policy('info,create,destroy', { workloads: 1, memoryMiB: 1024 }),
    );
    const dan = delegates.subDelegate(
      alice,
      'dan',
      policy('info,create,destroy', { workloads: 1, memoryMiB: 1024 }),
    );
    const asAlice = delegates.as(alice).delegation;
    const asCarol = delegates.as(carol).delegation;
    const asDan = delegates.as(dan).delegation;
    await call(asCarol, asCarol.reserve, {
      holder: 'web-1',
      workloads: 1,
      cpus: [],
      memoryMib: 512,
      blockMib: 0,
    });
    await call(asDan, asDan.reserve, { holder: 'db-1', workloads: 1, cpus: [], memoryMib: 256, blockMib: 0 });
    const full = await call(asAlice, asAlice.getDelegationStatus, {});
    assert.equal(full.usage?.workloads, 2, 'Alice is at 2 of 2');
    assert.equal(full.usage?.memoryMib, 768);
    assertStatus(
      await failureOf(
        call(asAlice, asAlice.reserve, { holder: 'more', workloads: 1, cpus: [], memoryMib: 0, blockMib: 0 }),
      ),
      grpc.status.RESOURCE_EXHAUSTED,
    );

    await call(asAlice, asAlice.revokeDelegated, { certificate: carol.ca, chain: [], reason: '' });
    const after = await call(asAlice, asAlice.getDelegationStatus, {});
    assert.equal(after.usage?.workloads, 1, "Carol's workload is released");
    assert.equal(after.usage?.memoryMib, 256);
    assert.equal(after.usage?.reservations, 1);
    // The freed capacity can be used again.
    await call(asAlice, asAlice.reserve, {
      holder: 'more',
      workloads: 1,
      cpus: [],
      memoryMib: 0,
      blockMib: 0,
    });
  });

  test('/delegations takes the bearer scheme in any case (RFC 7235)', async () => {
    const token = readFileSync(join(dataDir, 'http-admin.token'), 'utf8').trim();
    const get = (authorization: string) =>
      fetch(`${running.httpUrl}/delegations`, { headers: { authorization } }).then((r) => r.status);
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
      assert.equal(await get(`${scheme} ${token}`), 200, scheme);
    }
    assert.equal(await get(`Bearer   ${token}`), 200, 'several spaces');
    assert.equal(await get(`bearer ${'0'.repeat(64)}`), 403);
    assert.equal(await get(`Basic ${token}`), 401);
    assert.equal(await get(`Bearer${token}`), 401);
  });

  test('the certificate counters include delegation and command certificates (/metrics)', async () => {
    const counter = (text: string, pattern: RegExp): number => Number(pattern.exec(text)?.[1] ?? 0);
    const issued = /^sigil_certificates_issued_total\{kind="delegate",profile="delegation"\} (\d+)$/m;
    const commands = /^sigil_certificates_issued_total\{kind="delegate",profile="command"\} (\d+)$/m;
    const revoked = /^sigil_certificates_revoked_total\{by="delegation"\} (\d+)$/m;
    const before = await metrics();
    const held = await delegates.adminDelegates(
      'counted',
      policy('info,delegate,revoke,issue', { workloads: 1 }),
    );
    await delegates.adminDelegates('ops', policy('info,log', null), true);
    const sub = delegates.subDelegate(held, 'sub', policy('info', { workloads: 0 }));
    const asHeld = delegates.as(held).delegation;
    await call(asHeld, asHeld.revokeDelegated, { certificate: sub.ca, chain: [], reason: '' });
    await call(admin.delegation, admin.delegation.revokeDelegated, {
      certificate: held.ca,
      chain: [...held.above],
      reason: '',
    });
    const text = await metrics();
    assert.equal(counter(text, issued), counter(before, issued) + 1);
    assert.equal(counter(text, commands), counter(before, commands) + 1);
    assert.equal(counter(text, revoked), counter(before, revoked) + 2, 'a sub-delegation and a direct one');
    assert.match(text, /^sigil_certificates_revoked_total\{by="superseded"\} \d+$/m);
  });

  test('an audit line at info for every CA operation, with who and which serial, and never a secret', async () => {
    // Operations of the tests above, plus an approval, a renewal and a token revocation.
    const created = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: false,
      name: 'manual',
      replica: false,
    });
    const token = parseJoinToken(created.token);
    secrets.push(created.token, token.secret.toString('base64url'));
    const key = generateKeyPair('ed25519');
    const request = {
      tokenId: token.id,
      tokenSecret: token.secret,
      possession: possessionFor(key.privateKey, registerChallenge(token.id, token.secret)),
      name: '',
    };
    const registered = await call(anonymous.enrolment, anonymous.enrolment.register, request);
    await call(admin.admin, admin.admin.approveNode, { id: registered.nodeId });
    const up = await call(anonymous.enrolment, anonymous.enrolment.register, request);
    assert.ok(up.certificate);
    const asNode = open(identityOf(up.certificate, privateKeyToPem(key.privateKey)));
    const renewed = await call(asNode.ca, asNode.ca.renew, {});
    const spare = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 60,
      uses: 1,
      autoApprove: false,
      name: '',
      replica: false,
    });
    secrets.push(spare.token);
    await call(admin.admin, admin.admin.revokeToken, { id: spare.summary?.id ?? '' });
    const signKey = generateKeyPair('p256');
    const adminFingerprint = sha256(new X509Certificate(adminIdentity(dataDir).certificateChain).raw);
    const signed = await call(admin.ca, admin.ca.sign, {
      key: { $case: 'possession', value: possessionFor(signKey.privateKey, signChallenge(adminFingerprint)) },
      profile: 'client',
      commonName: 'audited',
      dnsNames: [],
      ipAddresses: [],
      uris: [],
      ttlSeconds: 600,
    });
    await call(admin.ca, admin.ca.revoke, { serial: signed.serial, reason: '' });

    const lines = await eventually('the audit lines', () => {
      const parsed = logText
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => typeof line.audit === 'string');
      return (
        parsed.some((line) => line.audit === 'certificate.revoked' && line.serial === signed.serial) && parsed
      );
    });
    for (const line of lines) assert.equal(line.level, 'info');
    const has = (fields: Record<string, unknown>, what: string): void => {
      assert.ok(
        lines.some((line) => Object.entries(fields).every(([name, value]) => line[name] === value)),
        `no audit line ${what}: ${JSON.stringify(fields)}`,
      );
    };
    const adminId = 'spiffe://sigil.internal/admin/admin';
    const nodeId = `spiffe://sigil.internal/node/${registered.nodeId}`;
    has({ audit: 'token.created', by: adminId, tokenId: token.id }, 'token created');
    has({ audit: 'token.spent', by: nodeId, tokenId: token.id }, 'token spent');
    has({ audit: 'token.revoked', by: adminId, tokenId: spare.summary?.id }, 'token revoked');
    has({ audit: 'node.registered', by: nodeId, nodeId: registered.nodeId }, 'node registered');
    has({ audit: 'node.approved', by: adminId, nodeId: registered.nodeId }, 'node approved');
    has(
      { audit: 'certificate.issued', by: adminId, serial: up.certificate.serial, issuance: 'approve' },
      'approval',
    );
    has({ audit: 'certificate.issued', by: nodeId, serial: renewed.serial, issuance: 'renew' }, 'renewal');
    has({ audit: 'certificate.issued', by: adminId, serial: signed.serial, issuance: 'sign' }, 'Sign');
    has(
      { audit: 'certificate.revoked', by: adminId, serial: signed.serial, revocation: 'certificate' },
      'Revoke',
    );
    has({ audit: 'certificate.revoked', by: adminId, revocation: 'node' }, 'with a node');
    has({ audit: 'node.revoked', by: adminId }, 'node revoked');
    has({ audit: 'key.revoked', by: adminId, reason: 'keyCompromise' }, 'key ended');
    has(
      { audit: 'delegation.created', by: adminId, issuance: 'delegate', profile: 'delegation' },
      'delegation',
    );
    has({ audit: 'delegation.created', by: adminId, profile: 'command' }, 'command certificate');
    has(
      { audit: 'delegation.revoked', by: adminId, revocation: 'delegation' },
      'delegation revoked by the admin',
    );
    has(
      { audit: 'delegation.revoked', by: 'spiffe://usage-alice.d.sigil.internal' },
      'delegation revoked by a delegate',
    );
    has({ audit: 'reservations.released', subtree: '/usage-alice/carol', count: 1 }, 'reservations released');
    assert.ok(secrets.length > 8);
    for (const secret of secrets) assert.ok(!logText.includes(secret), 'a secret reached the log');
  });
});

describe('private files with loose modes are refused at start', () => {
  test('admin.key, store.key and http-admin.token: one line naming the file, its mode and chmod 600; nothing changes', async () => {
    const dataDir = join(tempDir(), 'data');
    const first = await startTestServer({ dataDir });
    await first.close(0);
    for (const [name, mode] of [
      ['admin.key', 0o644],
      ['store.key', 0o640],
      ['http-admin.token', 0o604],
    ] as const) {
      const path = join(dataDir, name);
      const info = readFileSync(join(dataDir, 'server.json'), 'utf8');
      chmodSync(path, mode);
      await assert.rejects(startTestServer({ dataDir }), (error: Error) => {
        assert.equal(
          error.message,
          `${path} is a private file open to group or others (mode 0${mode.toString(8)}): run chmod 600 ${path}`,
        );
        assert.doesNotMatch(error.message, /\n/);
        return true;
      });
      assert.equal(statSync(path).mode & 0o777, mode, 'the mode is left as it was');
      assert.equal(readFileSync(join(dataDir, 'server.json'), 'utf8'), info, 'server.json untouched');
      chmodSync(path, 0o600);
    }
    const again = await startTestServer({ dataDir });
    assert.equal(again.mode, 'serve');
    await again.close(0);
  });
});
