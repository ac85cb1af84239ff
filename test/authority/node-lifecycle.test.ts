// Node lifecycle and issuance limits in the authority, with a clock the test
// moves: revoked keys stay revoked (keyCompromise and node revocation end a
// key, other reasons do not), a node holds at most two valid certificates,
// early renewals and fast loops are refused with RESOURCE_EXHAUSTED, and
// every refusal changes nothing in the store.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/authority/audit.ts';
import type { CreateTokenRequest, RegisterRequest } from '../../src/authority/authority.ts';
import type { Caller } from '../../src/authority/identities.ts';
import type { IssuedCertificateView } from '../../src/authority/issuance.ts';
import { CERTIFICATES_PER_DAY, MAX_VALID_CERTIFICATES } from '../../src/authority/issuance-limits.ts';
import { keyHashOf } from '../../src/authority/revoked-keys.ts';
import { SigilError } from '../../src/errors.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import {
  possessionFor,
  registerChallenge,
  rejoinChallenge,
  signChallenge,
} from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import type { CertificateRecord } from '../../src/store/store.ts';
import { refusal } from '../support/refusals.ts';
import { callerFromIssued, DAY, type Fixture, HOUR, newFixture } from './helpers.ts';

type KeyPair = ReturnType<typeof generateKeyPair>;

describe('node lifecycle: revoked keys and issuance limits', () => {
  let f: Fixture;
  before(async () => {
    f = await newFixture();
  });
  after(() => f.close());

  async function token(request: CreateTokenRequest = {}) {
    return parseJoinToken((await f.authority.createToken(f.admin, { autoApprove: true, ...request })).token);
  }

  function registration(parsed: { id: string; secret: Buffer }, key: KeyPair): RegisterRequest {
    return {
      tokenId: parsed.id,
      tokenSecret: parsed.secret,
      possession: possessionFor(key.privateKey, registerChallenge(parsed.id, parsed.secret)),
    };
  }

  /** A freshly enrolled, UP node: its key, its first certificate and the Register request (token spent). */
  async function enrolled() {
    const key = generateKeyPair('ed25519');
    const request = registration(await token(), key);
    const result = await f.authority.register(request);
    assert.ok(result.certificate);
    return { key, request, nodeId: result.node.id, certificate: result.certificate };
  }

  const rejoin = (key: KeyPair) =>
    f.authority.rejoin({ possession: possessionFor(key.privateKey, rejoinChallenge(f.clock.now())) });

  /** Every certificate the store holds for a node, and those valid now. */
  async function nodeCertificates(nodeId: string): Promise<{ all: CertificateRecord[]; valid: string[] }> {
    const page = await f.store.listCertificates({ requester: nodeId, pageSize: 1000 });
    const all = [...page.items];
    const valid = all
      .filter((record) => record.revokedAt === null && record.notAfter.getTime() > f.clock.ms)
      .map((record) => record.serial);
    return { all, valid };
  }

  async function totalCertificates(): Promise<number> {
    return (await f.authority.status(f.admin)).certificatesIssued;
  }

  // --- revoked keys stay revoked ------------------------------------------------------

  it('after `cert revoke --reason keyCompromise` on a node certificate, Rejoin and a repeated Register with the spent token are refused, naming why; nothing changes', async () => {
    const node = await enrolled();
    // A second valid certificate with the same key (an early renewal).
    const caller = callerFromIssued(node.certificate, f.authority);
    const next = await f.authority.renew(caller);
    await f.authority.revoke(f.admin, node.certificate.serial, 'keyCompromise');
    const key = await f.store.getRevokedKey(
      keyHashOf(new X509Certificate(node.certificate.certificate).publicKey),
    );
    assert.equal(key?.reason, 'keyCompromise');
    assert.equal(key?.serial, node.certificate.serial);
    // The other certificate with the compromised key is revoked too.
    assert.equal((await f.store.getCertificate(next.serial))?.revocationReason, 'keyCompromise');

    const before = await totalCertificates();
    const tokenBefore = await f.store.getToken(node.request.tokenId);
    const why = /revoked for key compromise.*enrol again with a new join token and a new key/;
    await assert.rejects(rejoin(node.key), refusal('permission_denied', why));
    await assert.rejects(f.authority.register(node.request), refusal('permission_denied', why));
    // A new token does not help either: the key is what ended.
    await assert.rejects(
      f.authority.register(registration(await token(), node.key)),
      refusal('permission_denied', why),
    );
    // Nor Renew, from a certificate of that key, nor Sign for it.
    await assert.rejects(
      f.authority.renew(callerFromIssued(next, f.authority)),
      refusal('permission_denied', /revoked/),
    );
    await assert.rejects(
      f.authority.sign(f.admin, {
        possession: possessionFor(node.key.privateKey, signChallenge(f.admin.fingerprint, f.clock.now())),
        profile: 'client',
        commonName: 'reused',
      }),
      refusal('permission_denied', why),
    );
    assert.equal(await totalCertificates(), before, 'no certificate was issued');
    assert.deepEqual(await f.store.getToken(node.request.tokenId), tokenBefore);
    assert.equal((await f.store.getNode(node.nodeId))?.state, 'UP', 'the node record is left as it was');

    // Enrolling again with a new token and a new key works.
    const fresh = await enrolled();
    assert.notEqual(fresh.nodeId, node.nodeId);
  });

  it('revocations for other reasons end the certificate, not the key: the node rejoins', async () => {
    for (const reason of ['superseded', 'cessationOfOperation', 'affiliationChanged', 'unspecified']) {
      const node = await enrolled();
      await f.authority.revoke(f.admin, node.certificate.serial, reason);
      const rejoined = await rejoin(node.key);
      assert.ok(rejoined.certificate, reason);
      assert.notEqual(rejoined.certificate.serial, node.certificate.serial);
    }
  });

  it('a revoked node: its enrolled key and the keys it rotated to never get another certificate', async () => {
    const node = await enrolled();
    const rotated = generateKeyPair('p256');
    const caller = callerFromIssued(node.certificate, f.authority);
    await f.authority.renew(caller, {
      possession: possessionFor(rotated.privateKey, signChallenge(caller.fingerprint, f.clock.now())),
    });
    await f.authority.revokeNode(f.admin, node.nodeId, 'unspecified');
    const why = new RegExp(`node ${node.nodeId} has been revoked`);
    await assert.rejects(rejoin(node.key), refusal('permission_denied', why));
    await assert.rejects(f.authority.register(node.request), refusal('permission_denied', why));
    // The rotated key, presented with a new token as if it were a new node, is refused too.
    const parsed = await token();
    await assert.rejects(
      f.authority.register(registration(parsed, rotated)),
      refusal(
        'permission_denied',
        /node .* has been revoked; none of its keys gets another certificate: enrol again/,
      ),
    );
    assert.equal((await f.store.getToken(parsed.id))?.usesLeft, 1, 'the refused Register spent nothing');
    for (const pair of [node.key, rotated]) {
      assert.equal((await f.store.getRevokedKey(keyHashOf(pair.publicKey)))?.reason, 'nodeRevoked');
    }
  });

  // --- issuance limits ----------------------------------------------------------------

  it(`50 Rejoin calls with one key: one new certificate, ${MAX_VALID_CERTIFICATES} valid, the rest RESOURCE_EXHAUSTED naming the limit`, async () => {
    const node = await enrolled();
    const outcomes: string[] = [];
    for (let i = 0; i < 50; i++) {
      try {
        await rejoin(node.key);
        outcomes.push('ok');
      } catch (error) {
        assert.ok(error instanceof SigilError);
        assert.equal(error.code, 'resource_exhausted', error.message);
        assert.match(
          error.message,
          /already holds 2 valid certificates \(current and next, the most it may hold\)/,
        );
        assert.match(error.message, /can be renewed from .*half of its lifetime/);
        outcomes.push(error.code);
      }
    }
    assert.deepEqual(outcomes, ['ok', ...Array(49).fill('resource_exhausted')]);
    const { all, valid } = await nodeCertificates(node.nodeId);
    assert.equal(all.length, 2, 'the enrolment certificate and one more');
    assert.equal(valid.length, 2);
  });

  it('50 Renew calls: the first early renewal passes, the rest are refused until half the new lifetime; then the oldest is superseded', async () => {
    const node = await enrolled();
    const caller = callerFromIssued(node.certificate, f.authority);
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => f.authority.renew(caller)));
    const fulfilled = results.filter(
      (r) => r.status === 'fulfilled',
    ) as PromiseFulfilledResult<IssuedCertificateView>[];
    assert.equal(fulfilled.length, 1, 'concurrent calls are decided one at a time');
    for (const result of results) {
      if (result.status === 'rejected')
        assert.equal((result.reason as SigilError).code, 'resource_exhausted');
    }
    const next = fulfilled[0].value;
    assert.equal((await nodeCertificates(node.nodeId)).valid.length, 2);

    // Half of the new certificate's life later (less a minute): still refused.
    f.clock.advance(12 * HOUR - 60_000);
    await assert.rejects(
      f.authority.renew(callerFromIssued(next, f.authority)),
      refusal('resource_exhausted', /half/),
    );
    f.clock.advance(2 * 60_000);
    const third = await f.authority.renew(callerFromIssued(next, f.authority));
    const { valid } = await nodeCertificates(node.nodeId);
    assert.deepEqual(new Set(valid), new Set([next.serial, third.serial]));
    const first = await f.store.getCertificate(node.certificate.serial);
    assert.equal(first?.revocationReason, 'superseded');
    assert.ok(f.authority.revokedSerials().includes(node.certificate.serial));
  });

  it(`key rotation is not held back by the early-renewal rule, only by the rate: ${CERTIFICATES_PER_DAY} certificates a day`, async () => {
    const node = await enrolled();
    let current: IssuedCertificateView = node.certificate;
    const outcomes: string[] = [];
    for (let i = 0; i < 10; i++) {
      const caller: Caller = callerFromIssued(current, f.authority);
      const next = generateKeyPair('p256');
      try {
        current = await f.authority.renew(caller, {
          possession: possessionFor(next.privateKey, signChallenge(caller.fingerprint, f.clock.now())),
        });
        outcomes.push('ok');
      } catch (error) {
        assert.ok(error instanceof SigilError);
        assert.match(
          error.message,
          /issued 6 certificates in the last 24 hours: the limit is 6 a day; the next one can be issued from /,
        );
        outcomes.push(error.code);
      }
      f.clock.advance(60_000);
    }
    // The enrolment certificate counts: 5 rotations fit in the day.
    assert.deepEqual(outcomes, [...Array(5).fill('ok'), ...Array(5).fill('resource_exhausted')]);
    const { all, valid } = await nodeCertificates(node.nodeId);
    assert.equal(all.length, CERTIFICATES_PER_DAY);
    assert.equal(valid.length, MAX_VALID_CERTIFICATES, 'each rotation superseded the one before the caller');
    // A day later the rate allows certificates again (Rejoin proves the enrolled key).
    f.clock.advance(DAY);
    assert.ok((await rejoin(node.key)).certificate);
  });

  it('revoking a node certificate and registering again in a loop cannot flood the store: the rate stops it at six a day', async () => {
    const node = await enrolled();
    let serial = node.certificate.serial;
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      await f.authority.revoke(f.admin, serial, 'unspecified');
      try {
        const again = await f.authority.register(node.request);
        assert.ok(again.certificate);
        serial = again.certificate.serial;
        outcomes.push('ok');
      } catch (error) {
        assert.equal((error as SigilError).code, 'resource_exhausted', String(error));
        outcomes.push('resource_exhausted');
      }
    }
    assert.deepEqual(outcomes, [...Array(5).fill('ok'), ...Array(3).fill('resource_exhausted')]);
    assert.equal((await nodeCertificates(node.nodeId)).all.length, CERTIFICATES_PER_DAY);
  });

  it('a holder of a Sign certificate is limited along its line of renewals, not by its SPIFFE ID', async () => {
    const sign = (name: string) =>
      f.authority.sign(f.admin, {
        possession: possessionFor(
          generateKeyPair('p256').privateKey,
          signChallenge(f.admin.fingerprint, f.clock.now()),
        ),
        profile: 'client',
        uris: [`spiffe://example.test/client/${name}`],
      });
    // Two machines share one SPIFFE ID; each renews independently.
    const a = await sign('shared');
    const b = await sign('shared');
    const renewedA = await f.authority.renew(callerFromIssued(a, f.authority));
    const renewedB = await f.authority.renew(callerFromIssued(b, f.authority));
    for (const serial of [a.serial, b.serial, renewedA.serial, renewedB.serial]) {
      assert.equal((await f.store.getCertificate(serial))?.revokedAt, null, `${serial} is still valid`);
    }
    await assert.rejects(
      f.authority.renew(callerFromIssued(renewedA, f.authority)),
      refusal(
        'resource_exhausted',
        /spiffe:\/\/example\.test\/client\/shared \(renewals of certificate [0-9a-f]+\) already holds 2/,
      ),
    );
    await assert.rejects(
      f.authority.renew(callerFromIssued(a, f.authority)),
      refusal('resource_exhausted', /already holds 2/),
    );
    assert.equal((await f.store.getLineage(renewedA.serial))?.lineage, `certificate:${a.serial}`);
  });

  it('admins are not limited', async () => {
    let admin = f.admin;
    for (let i = 0; i < 3; i++) {
      const renewed = await f.authority.renew(admin);
      admin = callerFromIssued(renewed, f.authority);
      assert.equal(admin.role, 'admin');
    }
  });

  it('an audit event for each certificate issued, superseded and key ended (onAudit)', async () => {
    const events: AuditEvent[] = [];
    const other = await f.reopen({ onAudit: (event) => events.push(event) });
    const authority = other.authority;
    // Opening: the replica's own server certificate (and, as this fixture never confirms its
    // bootstrap, another bootstrap admin).
    assert.ok(events.some((event) => event.action === 'certificate.issued' && event.issuance === 'server'));
    assert.ok(events.every((event) => event.action === 'certificate.issued'));
    events.length = 0;
    const created = await authority.createToken(f.admin, { autoApprove: true });
    const parsed = parseJoinToken(created.token);
    const key = generateKeyPair('ed25519');
    const registered = await authority.register(registration(parsed, key));
    await authority.revoke(f.admin, registered.certificate!.serial, 'keyCompromise');
    const actions = events.map((event) => event.action);
    assert.deepEqual(actions, [
      'token.created',
      'token.spent',
      'node.registered',
      'node.approved',
      'certificate.issued',
      'key.revoked',
      'certificate.revoked',
    ]);
    const issued = events.find((event) => event.action === 'certificate.issued');
    assert.equal(issued?.serial, registered.certificate!.serial);
    assert.equal(issued?.issuance, 'approve');
    assert.equal(events.find((event) => event.action === 'certificate.revoked')?.by, f.admin.spiffeId);
    const text = JSON.stringify(events);
    assert.ok(!text.includes(parsed.secret.toString('base64url')), 'no token secret');
    assert.ok(!text.includes(created.token), 'no token string');
  });
});
