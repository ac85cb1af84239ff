import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Authority, JoinReplicaRequest } from '../../src/authority/authority.ts';
import type { SigilError } from '../../src/errors.ts';
import { generateKeyPair, keysMatch, privateKeyToPem, readPrivateKey } from '../../src/pki/keys.ts';
import { possessionFor, replicaChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { generateStoreKey } from '../../src/server/store-key.ts';
import { refusal } from '../support/refusals.ts';
import { DAY, type Fixture, HOUR, newFixture, opensslVerify } from './helpers.ts';

async function joinRequest(f: Fixture, replicaId: string, key = generateKeyPair('p256')) {
  const { token } = await f.authority.createToken(f.admin, { replica: true });
  const parsed = parseJoinToken(token);
  const request: JoinReplicaRequest = {
    tokenId: parsed.id,
    tokenSecret: parsed.secret,
    replicaId,
    possession: possessionFor(key.privateKey, replicaChallenge(parsed.id, parsed.secret, replicaId)),
  };
  return { key, request };
}

/** A second replica on the same store: joins through r1 with its own store key. */
async function joinSecondReplica(f: Fixture): Promise<Authority> {
  const { key, request } = await joinRequest(f, 'r2');
  const joined = await f.authority.joinReplica(request);
  const opened = await f.reopen({
    replicaId: 'r2',
    storeKey: generateStoreKey(),
    serverAddresses: ['127.0.0.2:7443'],
    join: { intermediate: joined.intermediate.certificate, privateKey: key.privateKey },
  });
  assert.equal(opened.mode, 'join');
  assert.equal(opened.bootstrapped, undefined);
  return opened.authority;
}

const proof = (f: Fixture, authority: Authority) => ({
  possession: possessionFor(
    generateKeyPair('p256').privateKey,
    signChallenge(f.admin.fingerprint, f.clock.now()),
  ),
  profile: 'client',
  commonName: `from-${authority.replicaId}`,
});

describe('replicas', () => {
  it('a replica joins with a replica token and gets its own intermediate; no CA key is shared', async () => {
    const f = await newFixture();
    try {
      const r2 = await joinSecondReplica(f);
      const cas = await f.store.listCas();
      const own = cas.find((ca) => ca.id === 'replica:r2:1');
      assert.ok(own?.encryptedKey, 'r2 stored its key, encrypted with its own store key');
      assert.equal(own.replicaId, 'r2');
      await f.authority.maintain(); // r1 has seen the new CA
      assert.equal(f.authority.trustBundle().intermediates.length, 2);
      const issued = await r2.sign(f.admin, proof(f, r2));
      assert.ok(new X509Certificate(issued.chain[0]).subject.includes('sigil r2 #1'));
      assert.match(
        opensslVerify(f, issued, f.authority.trustBundle().roots, ['-purpose', 'sslclient']),
        /: OK/,
      );
      const serverChain = r2.serverMaterial().current().certificateChain;
      assert.match(serverChain, /BEGIN CERTIFICATE/);
      // r2 cannot decrypt r1's keys, nor the root's.
      assert.equal((await r2.status(f.admin)).rootKeyHere, false);
      await assert.rejects(
        r2.crl('replica:r1:1'),
        refusal('failed_precondition', /signed by replica "r1"; fetch it from that replica/),
      );
      await assert.rejects(
        r2.joinReplica((await joinRequest(f, 'r3')).request),
        refusal('failed_precondition', /root key is not online on replica "r2"/),
      );
      // A revocation on r2 reaches r1's revoked set through the store's events.
      await r2.revoke(f.admin, issued.serial);
      assert.ok(f.authority.revokedSerials().includes(issued.serial));
    } finally {
      await f.close();
    }
  });

  it('JoinReplica is idempotent for the same key and refuses another key for the same replica ID', async () => {
    const f = await newFixture();
    try {
      const { key, request } = await joinRequest(f, 'r2');
      const first = await f.authority.joinReplica(request);
      const again = await f.authority.joinReplica(request);
      assert.ok(new X509Certificate(again.intermediate.certificate).publicKey.equals(key.publicKey));
      assert.equal(first.bundle.rootFingerprint, f.authority.rootFingerprint);
      await f.reopen({
        replicaId: 'r2',
        storeKey: generateStoreKey(),
        join: { intermediate: first.intermediate.certificate, privateKey: key.privateKey },
      });
      await assert.rejects(
        f.authority.joinReplica((await joinRequest(f, 'r2')).request),
        refusal('already_exists', /replica "r2" already has an intermediate CA with another key/),
      );
      const nodeToken = parseJoinToken((await f.authority.createToken(f.admin)).token);
      const wrongKind = {
        tokenId: nodeToken.id,
        tokenSecret: nodeToken.secret,
        replicaId: 'r4',
        possession: possessionFor(key.privateKey, replicaChallenge(nodeToken.id, nodeToken.secret, 'r4')),
      };
      await assert.rejects(
        f.authority.joinReplica(wrongKind),
        refusal('permission_denied', /node join token; a replica needs a replica join token/),
      );
      // Replica enrolments are not nodes.
      assert.deepEqual(await f.authority.listNodes(f.admin), []);
    } finally {
      await f.close();
    }
  });

  it('after the root is exported, issuing still works but joinReplica refuses; importing it brings it back', async () => {
    const f = await newFixture();
    try {
      const exported = await f.authority.exportRoot(f.admin, { passphrase: 'correct horse' });
      assert.match(exported.privateKeyPem, /BEGIN ENCRYPTED PRIVATE KEY/);
      const rootKey = readPrivateKey(exported.privateKeyPem, { passphrase: 'correct horse' });
      assert.ok(keysMatch(rootKey, new X509Certificate(exported.certificatePem).publicKey));
      const root = (await f.store.listCas()).find((ca) => ca.id === 'root');
      assert.equal(root?.encryptedKey, null, 'the encrypted root key is gone from the store');
      const status = await f.authority.status(f.admin);
      assert.equal(status.rootKeyOnline, false);
      const issued = await f.authority.sign(f.admin, proof(f, f.authority));
      assert.match(opensslVerify(f, issued, f.authority.trustBundle().roots), /: OK/);
      await assert.rejects(
        f.authority.joinReplica((await joinRequest(f, 'r2')).request),
        refusal('failed_precondition', /root key is not online on replica "r1"/),
      );
      await assert.rejects(
        f.authority.exportRoot(f.admin),
        refusal('failed_precondition', /already offline/),
      );
      assert.ok(
        (await f.authority.crl('root')).length > 0,
        'the root CRL published before export still serves',
      );
      const restarted = await f.reopen();
      assert.equal(restarted.mode, 'serve');
      await restarted.authority.sign(f.admin, proof(f, restarted.authority));
      await assert.rejects(
        f.authority.importRoot(f.admin, {
          privateKeyPem: exported.privateKeyPem,
          passphrase: 'hunter2-guess',
        }),
        (error: SigilError) => {
          assert.match(error.message, /wrong passphrase for root key/);
          assert.ok(!error.message.includes('hunter2') && !error.message.includes('correct horse'));
          return true;
        },
      );
      await assert.rejects(
        f.authority.importRoot(f.admin, {
          privateKeyPem: privateKeyToPem(generateKeyPair('p256').privateKey),
        }),
        refusal('failed_precondition', /does not belong to this store's root CA/),
      );
      await f.authority.importRoot(f.admin, {
        privateKeyPem: exported.privateKeyPem,
        passphrase: 'correct horse',
      });
      const joined = await f.authority.joinReplica((await joinRequest(f, 'r2')).request);
      assert.ok(joined.intermediate.certificate.length > 0);
    } finally {
      await f.close();
    }
  });

  it('intermediates rotate at 2/3 of their life and the old one stays trusted until it expires', async () => {
    const f = await newFixture({ intermediateTtlMs: 3 * DAY });
    try {
      const r2 = await joinSecondReplica(f);
      f.clock.advance(2 * DAY - HOUR);
      const before = await f.authority.sign(f.admin, proof(f, f.authority));
      const beforeR2 = await r2.sign(f.admin, proof(f, r2));
      f.clock.advance(2 * HOUR);
      await f.authority.maintain(); // the root holder: its own with a new key, r2's re-certified
      await r2.maintain();
      const cas = await f.store.listCas();
      const byId = new Map(cas.map((ca) => [ca.id, ca]));
      assert.ok(byId.get('replica:r1:1')?.retiredAt, 'old r1 intermediate retired');
      assert.ok(byId.get('replica:r2:1')?.retiredAt, 'old r2 intermediate retired');
      assert.ok(byId.get('replica:r1:2')?.encryptedKey, 'new r1 intermediate has a new key');
      assert.equal(
        byId.get('replica:r2:2')?.encryptedKey,
        null,
        'r2 keeps its key; the new record is key-less',
      );
      const r2Old = new X509Certificate(byId.get('replica:r2:1')!.certificate);
      const r2New = new X509Certificate(byId.get('replica:r2:2')!.certificate);
      assert.ok(r2Old.publicKey.equals(r2New.publicKey));
      // Overlap: both generations are in the bundle.
      assert.equal(f.authority.trustBundle().intermediates.length, 4);
      const after = await f.authority.sign(f.admin, proof(f, f.authority));
      const afterR2 = await r2.sign(f.admin, proof(f, r2));
      assert.ok(new X509Certificate(after.chain[0]).subject.includes('#2'));
      assert.ok(new X509Certificate(afterR2.chain[0]).subject.includes('sigil r2 #2'));
      const at = ['-attime', String(Math.floor(f.clock.ms / 1000))];
      const roots = f.authority.trustBundle().roots;
      for (const issued of [before, beforeR2, after, afterR2]) {
        assert.match(opensslVerify(f, issued, roots, at), /: OK/);
      }
      // The server certificate moved to the new intermediate.
      const serverChain = f.authority.serverMaterial().current().certificateChain;
      assert.ok(serverChain.includes(after.chain[0].toString('base64').slice(0, 60)));
      // The retired intermediate still has a CRL while it is valid.
      assert.ok((await f.authority.crl('replica:r1:1')).length > 0);
      // Once the old intermediates expire they leave the bundle.
      f.clock.advance(DAY);
      await f.authority.maintain();
      assert.equal(f.authority.trustBundle().intermediates.length, 2);
    } finally {
      await f.close();
    }
  });

  it('without the root key a due intermediate is not rotated, and the problem is reported', async () => {
    const warnings: string[] = [];
    const f = await newFixture({
      intermediateTtlMs: 3 * DAY,
      onWarning: (message) => warnings.push(message),
    });
    try {
      await f.authority.exportRoot(f.admin);
      f.clock.advance(2 * DAY + HOUR);
      await f.authority.maintain();
      assert.deepEqual((await f.store.listCas()).map((ca) => ca.id).sort(), ['replica:r1:1', 'root']);
      assert.equal(warnings.length, 1);
      assert.match(
        warnings[0],
        /intermediate replica:r1:1 expires at .* the root key is not on this replica/,
      );
    } finally {
      await f.close();
    }
  });
});
