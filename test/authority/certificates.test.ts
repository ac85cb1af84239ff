import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Caller } from '../../src/authority/identities.ts';
import type { RevocationUpdate } from '../../src/authority/revocations.ts';
import type { SigilError } from '../../src/errors.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { dnsName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { possessionFor, signChallenge } from '../../src/protocol/challenges.ts';
import { failureOf } from '../support/failure.ts';
import { refusal } from '../support/refusals.ts';
import { callerFromIssued, type Fixture, newFixture, opensslVerify } from './helpers.ts';

describe('Sign, Renew, Revoke', () => {
  let f: Fixture;
  const proofFor = (caller: Caller, key = generateKeyPair('p256')) => ({
    key,
    possession: possessionFor(key.privateKey, signChallenge(caller.fingerprint, f.clock.now())),
  });
  before(async () => {
    f = await newFixture();
  });
  after(() => f.close());

  it('signs a key proven by possession, with the default SPIFFE ID, and openssl accepts it', async () => {
    const { possession } = proofFor(f.admin);
    const issued = await f.authority.sign(f.admin, {
      possession,
      profile: 'server',
      commonName: 'api',
      dnsNames: ['api.example.test'],
      ipAddresses: ['10.0.0.1'],
    });
    assert.equal(issued.spiffeId, 'spiffe://example.test/server/api');
    assert.equal(issued.chain.length, 1);
    assert.equal(issued.notAfter.getTime() - issued.notBefore.getTime(), 24 * 3_600_000 + 30_000);
    const out = opensslVerify(f, issued, f.authority.trustBundle().roots, [
      '-purpose',
      'sslserver',
      '-verify_hostname',
      'api.example.test',
    ]);
    assert.match(out, /: OK/);
    const record = await f.store.getCertificate(issued.serial);
    assert.ok(record, 'stored before it was returned');
    assert.equal(record.requester, f.admin.spiffeId);
    assert.deepEqual(record.sans, [
      'dns:api.example.test',
      'ip:10.0.0.1',
      'uri:spiffe://example.test/server/api',
    ]);
  });

  it('signs a CSR, taking names from the request fields', async () => {
    const key = generateKeyPair('ed25519');
    const csr = createCsr(key.privateKey, { commonName: 'ignored', sans: [dnsName('ignored.example')] });
    const issued = await f.authority.sign(f.admin, {
      csr,
      profile: 'client',
      uris: ['spiffe://example.test/workload/batch'],
      ttlSeconds: 600,
    });
    assert.equal(issued.spiffeId, 'spiffe://example.test/workload/batch');
    assert.ok(issued.notAfter.getTime() - issued.notBefore.getTime() <= 630_000);
    const x509 = new X509Certificate(issued.certificate);
    assert.doesNotMatch(x509.subjectAltName ?? '', /ignored/);
    assert.match(
      opensslVerify(f, issued, f.authority.trustBundle().roots, ['-purpose', 'sslclient']),
      /: OK/,
    );
  });

  it('wrong proof of possession is refused (unauthenticated) and stores nothing', async () => {
    const before = (await f.store.listCertificates({ pageSize: 1000 })).items.length;
    const { possession } = proofFor(f.admin);
    const other = generateKeyPair('p256');
    const forged = {
      ...possession,
      signature: possessionFor(other.privateKey, possession.challenge).signature,
    };
    await assert.rejects(
      f.authority.sign(f.admin, { possession: forged, profile: 'server', commonName: 'x' }),
      refusal('unauthenticated', /signature does not verify/),
    );
    const stolen = possessionFor(other.privateKey, signChallenge('ab'.repeat(32), f.clock.now()));
    await assert.rejects(
      f.authority.sign(f.admin, { possession: stolen, profile: 'server', commonName: 'x' }),
      refusal('unauthenticated', /another caller's certificate/),
    );
    assert.equal((await f.store.listCertificates({ pageSize: 1000 })).items.length, before);
  });

  it('malformed SPKI and malformed CSR are refused (invalid_argument)', async () => {
    const { possession } = proofFor(f.admin);
    await assert.rejects(
      f.authority.sign(f.admin, {
        possession: { ...possession, spki: Buffer.from('3003020100', 'hex') },
        profile: 'server',
        commonName: 'x',
      }),
      refusal('invalid_argument', /malformed SubjectPublicKeyInfo/),
    );
    await assert.rejects(
      f.authority.sign(f.admin, { csr: Buffer.from('not a csr at all'), profile: 'server', commonName: 'x' }),
      refusal('invalid_argument', /CSR/),
    );
  });

  it('bad requests are refused by name', async () => {
    const { possession } = proofFor(f.admin);
    const csr = createCsr(generateKeyPair('p256').privateKey, {});
    const cases: [Parameters<typeof f.authority.sign>[1], RegExp][] = [
      [{ possession, profile: 'intermediate', commonName: 'x' }, /unknown profile "intermediate"/],
      [
        { possession, csr, profile: 'server', commonName: 'x' },
        /exactly one of a proof of possession or a CSR/,
      ],
      [{ profile: 'server', commonName: 'x' }, /exactly one of/],
      [{ possession, profile: 'server' }, /needs a common name or a spiffe:\/\/ URI/],
      [{ possession, profile: 'server', commonName: 'has space' }, /cannot form the default SPIFFE ID/],
      [{ possession, profile: 'server', uris: ['spiffe://other.test/x'] }, /not in this trust domain/],
      [
        { possession, profile: 'server', uris: ['spiffe://example.test/a', 'spiffe://example.test/b'] },
        /at most one spiffe/,
      ],
      [{ possession, profile: 'client', uris: ['spiffe://example.test/node/n00'] }, /reserved/],
      [{ possession, profile: 'server', commonName: 'x', dnsNames: ['bad..name'] }, /invalid DNS name/],
      [
        { possession, profile: 'server', commonName: 'x', ttlSeconds: 10 ** 9 },
        /ttl_seconds must be at most/,
      ],
      [
        { possession, profile: 'server', commonName: 'x', ttlSeconds: 1.5 },
        /ttl_seconds must be a whole positive number/,
      ],
    ];
    for (const [request, pattern] of cases) {
      await assert.rejects(f.authority.sign(f.admin, request), refusal('invalid_argument', pattern));
    }
  });

  it('only admins may sign (permission_denied for anyone else)', async () => {
    const { possession } = proofFor(f.admin);
    const workload = await f.authority.sign(f.admin, { possession, profile: 'client', commonName: 'w1' });
    const caller = callerFromIssued(workload, f.authority);
    assert.equal(caller.role, 'other');
    await assert.rejects(
      f.authority.sign(caller, { ...proofFor(caller), profile: 'client', commonName: 'w2' }),
      refusal('permission_denied', /only an admin may sign certificates/),
    );
  });

  it('renew keeps the identity and gives a new validity; with a proof it replaces the key', async () => {
    const { possession } = proofFor(f.admin);
    const first = await f.authority.sign(f.admin, {
      possession,
      profile: 'server+client',
      commonName: 'svc',
      dnsNames: ['svc.test'],
    });
    const holder = callerFromIssued(first, f.authority);
    f.clock.advance(3_600_000);
    const renewed = await f.authority.renew(holder);
    assert.notEqual(renewed.serial, first.serial);
    assert.equal(renewed.spiffeId, first.spiffeId);
    assert.ok(renewed.notAfter > first.notAfter);
    const a = new X509Certificate(first.certificate);
    const b = new X509Certificate(renewed.certificate);
    assert.equal(b.subjectAltName, a.subjectAltName);
    assert.equal(b.subject, a.subject);
    assert.ok(b.publicKey.equals(a.publicKey), 'same key without a proof');
    const next = generateKeyPair('p256');
    const rekeyed = await f.authority.renew(holder, {
      possession: possessionFor(next.privateKey, signChallenge(holder.fingerprint, f.clock.now())),
    });
    assert.ok(new X509Certificate(rekeyed.certificate).publicKey.equals(next.publicKey));
    const record = await f.store.getCertificate(renewed.serial);
    assert.equal(record?.profile, 'server+client');
    assert.equal(record?.requester, f.admin.spiffeId, 'the lineage is kept');
  });

  it('revoke → store event → revokedSerials → CRL that openssl verifies and lists it', async () => {
    const { possession } = proofFor(f.admin);
    const issued = await f.authority.sign(f.admin, { possession, profile: 'client', commonName: 'doomed' });
    const updates: RevocationUpdate[] = [];
    const stop = f.authority.watchRevocations((update) => updates.push(update));
    const transport: string[][] = [];
    const unsubscribe = f.authority.revocationSource().subscribe((serials) => transport.push([...serials]));
    const crlBefore = await f.authority.crl('replica:r1:1');
    assert.deepEqual(await f.authority.revoke(f.admin, issued.serial, 'keyCompromise'), {
      alreadyRevoked: false,
    });
    stop();
    unsubscribe();
    assert.equal(updates[0].snapshot, true);
    assert.deepEqual(updates.slice(1), [{ snapshot: false, serials: [issued.serial] }]);
    assert.deepEqual(transport, [[issued.serial]]);
    assert.ok(f.authority.revokedSerials().includes(issued.serial));
    assert.ok(f.authority.revocationSource().isRevoked(issued.serial));
    const crl = await f.authority.crl('replica:r1:1');
    assert.notDeepEqual(crl, crlBefore, 'regenerated on the revocation');
    const crlFile = f.write('r1.crl.pem', encodePem('X509 CRL', crl));
    const caFile = f.write('r1.ca.pem', encodePem('CERTIFICATE', f.authority.trustBundle().intermediates[0]));
    assert.match(f.openssl('crl', '-in', crlFile, '-CAfile', caFile, '-verify', '-noout'), /verify OK/);
    const text = f.openssl('crl', '-in', crlFile, '-noout', '-text');
    assert.match(text, new RegExp(`Serial Number: 0*${issued.serial.toUpperCase()}`));
    assert.match(text, /Key Compromise/);
    // Revoking again is idempotent.
    assert.deepEqual(await f.authority.revoke(f.admin, issued.serial), { alreadyRevoked: true });
    // A revoked caller is refused everything.
    const revokedCaller = callerFromIssued(issued, f.authority);
    await assert.rejects(f.authority.renew(revokedCaller), refusal('permission_denied', /is revoked/));
  });

  it('the holder may revoke its own certificate; others may not', async () => {
    const a = await f.authority.sign(f.admin, {
      ...proofFor(f.admin),
      profile: 'client',
      commonName: 'holder-a',
    });
    const b = await f.authority.sign(f.admin, {
      ...proofFor(f.admin),
      profile: 'client',
      commonName: 'holder-b',
    });
    const callerB = callerFromIssued(b, f.authority);
    // Another's certificate is refused exactly as a missing one is: nothing leaks about what exists.
    const othersError = await failureOf<SigilError>(
      f.authority.revoke(callerB, a.serial),
      'revoking another holder’s certificate',
    );
    const missingError = await failureOf<SigilError>(
      f.authority.revoke(callerB, 'ffff0000ffff'),
      'revoking a missing certificate',
    );
    assert.equal(othersError.code, 'not_found');
    assert.equal(
      othersError.message.replace(a.serial, 'S'),
      missingError.message.replace('ffff0000ffff', 'S'),
    );
    const callerA = callerFromIssued(a, f.authority);
    assert.deepEqual(await f.authority.revoke(callerA, a.serial, 'superseded'), { alreadyRevoked: false });
    await assert.rejects(
      f.authority.revoke(f.admin, 'ffff0000ffff'),
      refusal('not_found', /certificate ffff0000ffff not found/),
    );
    await assert.rejects(
      f.authority.revoke(f.admin, 'xyz'),
      refusal('invalid_argument', /is not a certificate serial/),
    );
    await assert.rejects(
      f.authority.revoke(f.admin, b.serial, 'because'),
      refusal('invalid_argument', /unknown revocation reason/),
    );
  });

  it('every CA level has a CRL: the root CRL is published and verifies against the root', async () => {
    const crl = await f.authority.crl('root');
    const crlFile = f.write('root.crl.pem', encodePem('X509 CRL', crl));
    const rootFile = f.write('root.pem', encodePem('CERTIFICATE', f.authority.trustBundle().roots[0]));
    assert.match(f.openssl('crl', '-in', crlFile, '-CAfile', rootFile, '-verify', '-noout'), /verify OK/);
    assert.deepEqual(f.authority.crlIssuers().sort(), ['replica:r1:1', 'root']);
    await assert.rejects(f.authority.crl('replica:nope:1'), refusal('not_found', /no CA "replica:nope:1"/));
  });

  it('lists certificates for admins only, paged and filtered', async () => {
    const page = await f.authority.listCertificates(f.admin, { pageSize: 2 });
    assert.equal(page.items.length, 2);
    assert.notEqual(page.nextPageToken, '');
    const revoked = await f.authority.listCertificates(f.admin, { revoked: true, pageSize: 1000 });
    assert.ok(revoked.items.length >= 2 && revoked.items.every((item) => item.revokedAt !== null));
    assert.ok(!('der' in revoked.items[0]));
    await assert.rejects(
      f.authority.listCertificates(f.admin, { pageSize: 5000 }),
      refusal('invalid_argument', /page_size must be at most 1000/),
    );
    const w = await f.authority.sign(f.admin, {
      ...proofFor(f.admin),
      profile: 'client',
      commonName: 'lister',
    });
    await assert.rejects(
      f.authority.listCertificates(callerFromIssued(w, f.authority)),
      refusal('permission_denied', /only an admin may list certificates/),
    );
  });
});
