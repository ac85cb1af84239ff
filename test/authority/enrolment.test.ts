import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { CreateTokenRequest, RegisterRequest } from '../../src/authority/authority.ts';
import { nodeIdFor } from '../../src/authority/node-id.ts';
import type { SigilError } from '../../src/errors.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { possessionFor, registerChallenge, rejoinChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { refusal } from '../support/refusals.ts';
import { callerFromIssued, DAY, type Fixture, HOUR, newFixture, opensslVerify } from './helpers.ts';

describe('enrolment: tokens, register, approve, rejoin, revoke', () => {
  let f: Fixture;
  before(async () => {
    f = await newFixture();
  });
  after(() => f.close());

  async function token(request: CreateTokenRequest = {}) {
    const created = await f.authority.createToken(f.admin, request);
    return { ...created, parsed: parseJoinToken(created.token) };
  }

  function registration(
    parsed: { id: string; secret: Buffer },
    key = generateKeyPair('ed25519'),
    name?: string,
  ): { key: ReturnType<typeof generateKeyPair>; request: RegisterRequest } {
    return {
      key,
      request: {
        tokenId: parsed.id,
        tokenSecret: parsed.secret,
        possession: possessionFor(key.privateKey, registerChallenge(parsed.id, parsed.secret)),
        ...(name ? { name } : {}),
      },
    };
  }

  it('a token carries the server addresses and the root fingerprint; only its hash is stored', async () => {
    const { parsed, summary } = await token({ name: 'rack 1', uses: 3 });
    assert.deepEqual(parsed.addresses, ['127.0.0.1:7443', 'localhost:7443']);
    assert.equal(parsed.rootFingerprint, f.authority.rootFingerprint);
    assert.equal(summary.usesLeft, 3);
    assert.equal(summary.replica, false);
    assert.equal(summary.createdBy, 'spiffe://example.test/admin/admin');
    assert.equal(summary.expiresAt.getTime() - summary.createdAt.getTime(), 15 * 60_000);
    const record = await f.store.getToken(parsed.id);
    assert.ok(record && !record.secretHash.equals(parsed.secret) && record.secretHash.length === 32);
    const listed = await f.authority.listTokens(f.admin);
    assert.ok(listed.some((t) => t.id === parsed.id && t.name === 'rack 1'));
    await assert.rejects(
      f.authority.createToken(f.admin, { uses: 10 ** 6 }),
      refusal('invalid_argument', /uses must be at most/),
    );
    await assert.rejects(
      f.authority.createToken(f.admin, { replica: true, autoApprove: true }),
      refusal('invalid_argument', /auto-approve/),
    );
  });

  it('an auto-approve token puts the node straight UP with a 24 h node certificate', async () => {
    const { parsed } = await token({ autoApprove: true });
    const { key, request } = registration(parsed, undefined, 'worker-1');
    const result = await f.authority.register(request);
    assert.equal(result.node.state, 'UP');
    assert.equal(result.node.id, nodeIdFor(key.publicKey));
    assert.equal(result.node.name, 'worker-1');
    assert.ok(result.certificate);
    assert.equal(result.certificate.spiffeId, `spiffe://example.test/node/${result.node.id}`);
    assert.equal(
      result.certificate.notAfter.getTime() - result.certificate.notBefore.getTime(),
      DAY + 30_000,
    );
    for (const purpose of ['sslclient', 'sslserver']) {
      assert.match(
        opensslVerify(f, result.certificate, f.authority.trustBundle().roots, ['-purpose', purpose]),
        /: OK/,
      );
    }
    assert.ok(new X509Certificate(result.certificate.certificate).publicKey.equals(key.publicKey));
    assert.equal((await f.store.getNode(result.node.id))?.certificateSerial, result.certificate.serial);
  });

  it('register is idempotent: the same key gets its node back, and its still-valid certificate', async () => {
    const { parsed } = await token({ autoApprove: true });
    const { key, request } = registration(parsed);
    const first = await f.authority.register(request);
    const again = await f.authority.register(request); // the token is used up by now
    assert.equal(again.node.id, first.node.id);
    assert.equal(again.certificate?.serial, first.certificate?.serial);
    // Past 2/3 of its life, a repeat brings a fresh certificate instead.
    f.clock.advance(17 * HOUR);
    const later = await f.authority.register(registration(parsed, key).request);
    assert.notEqual(later.certificate?.serial, first.certificate?.serial);
  });

  it('without auto-approve a node waits in NEW; approve issues its certificate for the next Register', async () => {
    const { parsed } = await token();
    const { request } = registration(parsed);
    const registered = await f.authority.register(request);
    assert.equal(registered.node.state, 'NEW');
    assert.equal(registered.certificate, undefined);
    assert.equal((await f.authority.register(request)).node.state, 'NEW', 'still waiting');
    const approved = await f.authority.approveNode(f.admin, registered.node.id);
    assert.equal(approved.state, 'UP');
    assert.ok(approved.certificateSerial);
    const fetched = await f.authority.register(request);
    assert.equal(fetched.node.state, 'UP');
    assert.equal(fetched.certificate?.serial, approved.certificateSerial);
    assert.equal(
      (await f.authority.approveNode(f.admin, registered.node.id)).state,
      'UP',
      'UP → UP is idempotent',
    );
    const nodes = await f.authority.listNodes(f.admin, { state: 'UP' });
    assert.ok(nodes.some((node) => node.id === registered.node.id));
    assert.equal((await f.authority.getNode(f.admin, registered.node.id)).state, 'UP');
  });

  it('reused token refused (permission_denied, naming it as used)', async () => {
    const { parsed } = await token();
    await f.authority.register(registration(parsed).request);
    await assert.rejects(
      f.authority.register(registration(parsed).request),
      refusal('permission_denied', /has already been used \(1 of 1 uses\)/),
    );
  });

  it('expired token refused (unauthenticated, naming the expiry)', async () => {
    const { parsed } = await token({ ttlSeconds: 60 });
    f.clock.advance(61_000);
    await assert.rejects(
      f.authority.register(registration(parsed).request),
      refusal('unauthenticated', /join token tn[0-9a-f]{16} expired at/),
    );
  });

  it('unknown token refused with the same message as a wrong secret', async () => {
    const { parsed } = await token();
    const unknown = { ...parsed, id: 'tn0000000000000000' };
    const wrongSecret = { ...parsed, secret: Buffer.alloc(32, 9) };
    const messages: string[] = [];
    for (const attempt of [unknown, wrongSecret]) {
      await assert.rejects(f.authority.register(registration(attempt).request), (error: SigilError) => {
        assert.equal(error.code, 'unauthenticated');
        messages.push(error.message);
        return true;
      });
    }
    assert.deepEqual(messages, ['invalid join token', 'invalid join token']);
    await assert.rejects(
      f.authority.register({ ...registration(parsed).request, tokenSecret: Buffer.alloc(3) }),
      refusal('unauthenticated', /secret must be 32 bytes/),
    );
  });

  it('revoked token refused (permission_denied)', async () => {
    const { parsed } = await token();
    assert.deepEqual(await f.authority.revokeToken(f.admin, parsed.id), { alreadyRevoked: false });
    assert.deepEqual(await f.authority.revokeToken(f.admin, parsed.id), { alreadyRevoked: true });
    await assert.rejects(
      f.authority.register(registration(parsed).request),
      refusal('permission_denied', /has been revoked/),
    );
    await assert.rejects(
      f.authority.revokeToken(f.admin, 'tn1111111111111111'),
      refusal('not_found', /not found/),
    );
  });

  it('wrong proof on register refused (unauthenticated), token not consumed', async () => {
    const { parsed } = await token();
    const { request } = registration(parsed);
    const other = generateKeyPair('ed25519');
    const forged = {
      ...request,
      possession: {
        ...request.possession!,
        signature: possessionFor(other.privateKey, request.possession!.challenge).signature,
      },
    };
    await assert.rejects(
      f.authority.register(forged),
      refusal('unauthenticated', /signature does not verify/),
    );
    const unbound = { ...request, possession: possessionFor(other.privateKey, Buffer.alloc(32, 1)) };
    await assert.rejects(
      f.authority.register(unbound),
      refusal('unauthenticated', /not bound to this join token/),
    );
    assert.equal((await f.store.getToken(parsed.id))?.usesLeft, 1);
  });

  it('a replica token cannot register a node', async () => {
    const { parsed } = await token({ replica: true });
    await assert.rejects(
      f.authority.register(registration(parsed).request),
      refusal('permission_denied', /replica join token/),
    );
  });

  it('20 concurrent registers on a single-use token admit exactly one node', async () => {
    const { parsed } = await token();
    const attempts = Array.from({ length: 20 }, () => registration(parsed).request);
    const results = await Promise.allSettled(attempts.map((request) => f.authority.register(request)));
    const ok = results.filter((r) => r.status === 'fulfilled');
    assert.equal(ok.length, 1);
    for (const r of results) {
      if (r.status === 'rejected') assert.match((r.reason as Error).message, /has already been used/);
    }
    const nodes = (await f.store.listNodes()).filter((node) => node.tokenId === parsed.id);
    assert.equal(nodes.length, 1);
    assert.equal((await f.store.getToken(parsed.id))?.usesLeft, 0);
  });

  it('every wrong node transition is refused by name', async () => {
    const { parsed } = await token();
    const { request } = registration(parsed);
    const { node } = await f.authority.register(request);
    const revoked = await f.authority.revokeNode(f.admin, node.id, 'cessationOfOperation');
    assert.equal(revoked.state, 'REVOKED');
    await assert.rejects(
      f.authority.approveNode(f.admin, node.id),
      refusal('failed_precondition', /is REVOKED and cannot be approved \(only NEW → UP/),
    );
    assert.equal((await f.authority.revokeNode(f.admin, node.id)).state, 'REVOKED', 'revoking again is safe');
    await assert.rejects(f.authority.register(request), refusal('permission_denied', /has been revoked/));
    await assert.rejects(
      f.authority.approveNode(f.admin, 'n'.padEnd(33, '0')),
      refusal('not_found', /not found/),
    );
    await assert.rejects(
      f.authority.approveNode(f.admin, 'bogus'),
      refusal('invalid_argument', /is not a node ID/),
    );
    await assert.rejects(
      f.authority.revokeNode(f.admin, 'n'.padEnd(33, '0')),
      refusal('not_found', /not found/),
    );
    const rejoinNew = await token();
    const waiting = registration(rejoinNew.parsed);
    await f.authority.register(waiting.request);
    await assert.rejects(
      f.authority.rejoin({
        possession: possessionFor(waiting.key.privateKey, rejoinChallenge(f.clock.now())),
      }),
      refusal('failed_precondition', /not approved yet \(state NEW\)/),
    );
  });

  it('revoking a node revokes all its certificates, and they reach revokedSerials', async () => {
    const { parsed } = await token({ autoApprove: true });
    const { key, request } = registration(parsed);
    const first = await f.authority.register(request);
    const second = await f.authority.rejoin({
      possession: possessionFor(key.privateKey, rejoinChallenge(f.clock.now())),
    });
    await f.authority.revokeNode(f.admin, first.node.id);
    for (const serial of [first.certificate!.serial, second.certificate!.serial]) {
      assert.ok(f.authority.revokedSerials().includes(serial));
      assert.ok((await f.store.getCertificate(serial))?.revokedAt);
    }
    const nodeCaller = callerFromIssued(second.certificate!, f.authority);
    await assert.rejects(f.authority.renew(nodeCaller), refusal('permission_denied', /revoked/));
  });

  it('rejoin after the certificate expired gets a new one; a revoked node is refused; an unknown key is not found', async () => {
    const { parsed } = await token({ autoApprove: true });
    const { key, request } = registration(parsed);
    const first = await f.authority.register(request);
    f.clock.advance(3 * DAY);
    const rejoined = await f.authority.rejoin({
      possession: possessionFor(key.privateKey, rejoinChallenge(f.clock.now())),
    });
    assert.equal(rejoined.node.id, first.node.id);
    assert.ok(rejoined.certificate && rejoined.certificate.notAfter.getTime() > f.clock.ms);
    const stale = possessionFor(key.privateKey, rejoinChallenge(new Date(f.clock.ms - HOUR)));
    await assert.rejects(f.authority.rejoin({ possession: stale }), refusal('unauthenticated', /stale/));
    const stranger = generateKeyPair('ed25519');
    await assert.rejects(
      f.authority.rejoin({ possession: possessionFor(stranger.privateKey, rejoinChallenge(f.clock.now())) }),
      refusal('not_found', /no node is enrolled with this key/),
    );
    await f.authority.revokeNode(f.admin, first.node.id);
    await assert.rejects(
      f.authority.rejoin({ possession: possessionFor(key.privateKey, rejoinChallenge(f.clock.now())) }),
      refusal('permission_denied', /has been revoked/),
    );
  });

  it('a node renews itself keeping its identity, and revokes its own certificates only', async () => {
    const { parsed } = await token({ autoApprove: true });
    const { request } = registration(parsed);
    const { node, certificate } = await f.authority.register(request);
    const caller = callerFromIssued(certificate!, f.authority);
    assert.equal(caller.role, 'node');
    const renewed = await f.authority.renew(caller);
    assert.equal(renewed.spiffeId, certificate!.spiffeId);
    assert.equal((await f.store.getNode(node.id))?.certificateSerial, renewed.serial);
    assert.equal((await f.store.getCertificate(renewed.serial))?.requester, node.id);
    await assert.rejects(
      f.authority.approveNode(caller, node.id),
      refusal('permission_denied', /only an admin may approve nodes/),
    );
    await assert.rejects(
      f.authority.revoke(caller, f.admin.serial),
      refusal('not_found', /not found among the certificates you may revoke/),
    );
    assert.deepEqual(await f.authority.revoke(caller, certificate!.serial), { alreadyRevoked: false });
  });

  it('status counts nodes and certificates for admins', async () => {
    const status = await f.authority.status(f.admin);
    assert.equal(status.trustDomain, 'example.test');
    assert.equal(status.replicaId, 'r1');
    assert.equal(status.rootFingerprint, f.authority.rootFingerprint);
    assert.equal(status.store, 'sqlite');
    assert.equal(status.rootKeyOnline, true);
    assert.equal(status.rootKeyHere, true);
    assert.deepEqual(
      status.replicas.map((r) => r.replicaId),
      ['r1'],
    );
    assert.ok(status.nodesUp >= 1 && status.nodesRevoked >= 2 && status.nodesNew >= 1);
    assert.ok(status.certificatesIssued > status.certificatesRevoked && status.certificatesRevoked > 0);
  });
});
