import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/authority/audit.ts';
import { Authority } from '../../src/authority/authority.ts';
import { SETTING_POLICY_OID } from '../../src/authority/bootstrap.ts';
import { MAINTENANCE_INTERVAL_MS } from '../../src/authority/lifetimes.ts';
import type { SigilError } from '../../src/errors.ts';
import { readCertificates } from '../../src/pki/certificate.ts';
import { DEFAULT_POLICY_OID, DEFAULT_POLICY_OID_TEXT } from '../../src/pki/policy-extension.ts';
import { generateStoreKey } from '../../src/server/store-key.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { type Fixture, HOUR, newFixture, opensslVerify } from './helpers.ts';

describe('bootstrap on an empty store', () => {
  let f: Fixture;
  before(async () => {
    f = await newFixture();
  });
  after(() => f.close());

  it('creates a root, this replica intermediate and an admin that openssl verify -x509_strict accepts', async () => {
    assert.equal(f.opened.mode, 'bootstrap');
    const out = f.opened.bootstrapped;
    assert.ok(out);
    assert.equal(out.adminSpiffeId, 'spiffe://example.test/admin/admin');
    assert.equal(f.admin.role, 'admin');
    const cas = await f.store.listCas();
    assert.deepEqual(cas.map((ca) => ca.id).sort(), ['replica:r1:1', 'root']);
    for (const ca of cas)
      assert.ok(ca.encryptedKey && ca.encryptedKey.length > 32, `${ca.id} key is encrypted`);
    const [leaf, intermediate] = readCertificates(out.adminCertificatePem);
    const bundle = f.authority.trustBundle();
    assert.equal(bundle.roots.length, 1);
    assert.equal(bundle.intermediates.length, 1);
    assert.equal(bundle.rootFingerprint, out.rootFingerprint);
    const result = opensslVerify(f, { certificate: leaf, chain: [intermediate] }, bundle.roots, [
      '-purpose',
      'sslclient',
    ]);
    assert.match(result, /: OK/);
    const x509 = new X509Certificate(leaf);
    assert.match(x509.subjectAltName ?? '', /URI:spiffe:\/\/example\.test\/admin\/admin/);
    assert.ok(!x509.ca);
    // The admin certificate is recorded like every other.
    const record = await f.store.getCertificate(f.admin.serial);
    assert.equal(record?.profile, 'admin');
  });

  it("the replica's server material verifies as a TLS server for its addresses", () => {
    const material = f.authority.serverMaterial().current();
    const [leaf, intermediate] = readCertificates(material.certificateChain);
    const result = opensslVerify(
      f,
      { certificate: leaf, chain: [intermediate] },
      f.authority.trustBundle().roots,
      ['-purpose', 'sslserver', '-verify_ip', '127.0.0.1'],
    );
    assert.match(result, /: OK/);
    assert.match(new X509Certificate(leaf).subjectAltName ?? '', /URI:spiffe:\/\/example\.test\/replica\/r1/);
    assert.match(material.privateKey, /BEGIN PRIVATE KEY/);
  });

  it('restart serves the same CA: same fingerprint, nothing regenerated', async () => {
    const before = await f.store.listCas();
    await f.authority.confirmBootstrap();
    const again = await f.reopen();
    assert.equal(again.mode, 'serve');
    assert.equal(again.bootstrapped, undefined, 'no second admin identity once delivered');
    assert.equal(again.authority.rootFingerprint, f.authority.rootFingerprint);
    const afterRestart = await f.store.listCas();
    assert.deepEqual(
      afterRestart.map((ca) => [ca.id, ca.certificate.toString('hex')]),
      before.map((ca) => [ca.id, ca.certificate.toString('hex')]),
    );
  });

  it('a different trust domain on restart is refused', async () => {
    await assert.rejects(f.reopen({ trustDomain: 'other.test' }), (error: SigilError) => {
      assert.equal(error.code, 'failed_precondition');
      assert.match(error.message, /trust domain "example\.test", not "other\.test"/);
      return true;
    });
  });

  it('a second replica without join material is refused, naming what to do', async () => {
    await assert.rejects(f.reopen({ replicaId: 'r2', storeKey: generateStoreKey() }), (error: SigilError) => {
      assert.equal(error.code, 'failed_precondition');
      assert.match(
        error.message,
        /replica "r2" has no intermediate CA in this store; join it with a replica join token/,
      );
      return true;
    });
  });

  it('the wrong store key is refused with a clear error that shows no key', async () => {
    const wrong = generateStoreKey();
    await assert.rejects(f.reopen({ storeKey: wrong }), (error: SigilError) => {
      assert.equal(error.code, 'failed_precondition');
      assert.match(error.message, /cannot decrypt the private key of CA "replica:r1:1": wrong store key/);
      assert.ok(!error.message.includes(wrong.toString('base64')));
      assert.ok(!error.message.includes(f.storeKey.toString('base64')));
      return true;
    });
  });

  it('invalid options are refused before touching the store', async () => {
    await assert.rejects(
      Authority.open({ store: f.store, replicaId: 'bad/id', storeKey: f.storeKey, serverAddresses: ['a:1'] }),
      /invalid replica ID/,
    );
    await assert.rejects(
      Authority.open({
        store: f.store,
        replicaId: 'r1',
        storeKey: Buffer.alloc(5),
        serverAddresses: ['a:1'],
      }),
      /store key must be 32 bytes/,
    );
    await assert.rejects(
      Authority.open({ store: f.store, replicaId: 'r1', storeKey: f.storeKey, serverAddresses: ['no-port'] }),
      /must be host:port/,
    );
  });
});

describe('the policy extension OID', () => {
  it('defaults to DEFAULT_POLICY_OID_TEXT, recorded on first start and kept on restart', async () => {
    const f = await newFixture();
    try {
      assert.equal(await f.store.getSetting(SETTING_POLICY_OID), DEFAULT_POLICY_OID_TEXT);
      assert.deepEqual(f.authority.policyOid, DEFAULT_POLICY_OID);
      assert.equal(f.authority.trustBundle().policyOid, DEFAULT_POLICY_OID_TEXT);
      // A restart that names none, or names the same, keeps it.
      await f.authority.confirmBootstrap();
      assert.equal((await f.reopen()).authority.policyOid.text, DEFAULT_POLICY_OID_TEXT);
      assert.equal(
        (await f.reopen({ policyOid: DEFAULT_POLICY_OID_TEXT })).authority.policyOid.text,
        DEFAULT_POLICY_OID_TEXT,
      );
    } finally {
      await f.close();
    }
  });

  it('is given by `policyOid` at bootstrap, recorded, and a later different one is refused naming both', async () => {
    const f = await newFixture({ policyOid: '1.3.6.1.4.1.99999.7.1' });
    try {
      assert.equal(await f.store.getSetting(SETTING_POLICY_OID), '1.3.6.1.4.1.99999.7.1');
      assert.equal(f.authority.policyOid.text, '1.3.6.1.4.1.99999.7.1');
      assert.equal(f.authority.policyOid.der.toString('hex'), '060a2b0601040186 8d1f0701'.replace(' ', ''));
      assert.equal(f.authority.trustBundle().policyOid, '1.3.6.1.4.1.99999.7.1');
      await f.authority.confirmBootstrap();
      // A restart without the option keeps the recorded one (not the default).
      assert.equal((await f.reopen()).authority.policyOid.text, '1.3.6.1.4.1.99999.7.1');
      for (const other of [DEFAULT_POLICY_OID_TEXT, '1.3.6.1.4.1.99999.7.2']) {
        await assert.rejects(f.reopen({ policyOid: other }), (error: SigilError) => {
          assert.equal(error.code, 'failed_precondition');
          assert.match(
            error.message,
            new RegExp(
              `policy extension OID is 1\\.3\\.6\\.1\\.4\\.1\\.99999\\.7\\.1, not ${other.replaceAll('.', '\\.')}: it is fixed when the deployment is bootstrapped`,
            ),
          );
          return true;
        });
      }
      // The refusal changed nothing.
      assert.equal(await f.store.getSetting(SETTING_POLICY_OID), '1.3.6.1.4.1.99999.7.1');
    } finally {
      await f.close();
    }
  });

  it('a malformed policyOid is refused before anything is recorded', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sigil-policy-oid-'));
    const store = await openSqliteStore(join(dir, 'sigil.db'));
    try {
      await store.migrate();
      for (const [bad, reason] of [
        ['2.25.55506409673561962886091138008118191280', /every arc must be below 2\^28/],
        ['1.3', /at least three arcs/],
        ['not-an-oid', /dotted decimal/],
      ] as const) {
        await assert.rejects(
          Authority.open({
            store,
            replicaId: 'r1',
            storeKey: generateStoreKey(),
            serverAddresses: ['127.0.0.1:7443'],
            timers: false,
            onWarning: () => {},
            policyOid: bad,
          }),
          (error: SigilError) => {
            assert.equal(error.code, 'invalid_argument');
            assert.match(error.message, reason);
            return true;
          },
        );
      }
      assert.equal(await store.getSetting(SETTING_POLICY_OID), null);
      assert.deepEqual(await store.listCas(), []);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('an unconfirmed bootstrap', () => {
  it('hands out an admin identity again after a crash before it was written', async () => {
    const f = await newFixture();
    try {
      const again = await f.reopen();
      assert.equal(again.mode, 'serve');
      assert.ok(again.bootstrapped, 'a new admin identity, since the first was never confirmed');
      assert.notEqual(again.bootstrapped.adminCertificatePem, f.opened.bootstrapped?.adminCertificatePem);
      await again.authority.confirmBootstrap();
      assert.equal((await f.reopen()).bootstrapped, undefined);
    } finally {
      await f.close();
    }
  });
});

describe('the maintenance timer', () => {
  /** Timers that keep the event loop alive (an unref'd timer is not listed). */
  const refTimers = () => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;

  it('is unref’d: an authority with timers keeps the process alive no longer', async () => {
    const f = await newFixture();
    try {
      await f.authority.confirmBootstrap();
      const before = refTimers();
      const { authority } = await f.reopen({ timers: true });
      assert.equal(refTimers(), before, 'the maintenance timer holds the event loop');
      await authority.close();
    } finally {
      await f.close();
    }
  });

  it('runs maintenance when due, and close() stops it', async (t) => {
    const f = await newFixture();
    try {
      await f.authority.confirmBootstrap();
      t.mock.timers.enable({ apis: ['setTimeout'] });
      const renewals: AuditEvent[] = [];
      let renewed = (): void => {};
      const { authority } = await f.reopen({
        timers: true,
        onAudit: (event) => {
          if (event.issuance !== 'server') return;
          renewals.push(event);
          renewed();
        },
      });
      assert.equal(renewals.length, 1, 'the server certificate of the start');
      // 20 h on, the 24 h server certificate is due; the timer fires within the hour.
      f.clock.advance(20 * HOUR);
      const renewal = new Promise<void>((resolve) => {
        renewed = resolve;
      });
      t.mock.timers.tick(MAINTENANCE_INTERVAL_MS);
      await renewal;
      assert.equal(renewals.length, 2, 'the timer renewed the server certificate');

      await authority.close();
      const issued = (await f.store.listCertificates({ pageSize: 1000 })).items.length;
      f.clock.advance(20 * HOUR);
      t.mock.timers.tick(2 * MAINTENANCE_INTERVAL_MS);
      await authority.maintain(); // a no-op once closed
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(renewals.length, 2, 'maintenance ran after close()');
      assert.equal(
        (await f.store.listCertificates({ pageSize: 1000 })).items.length,
        issued,
        'a certificate was issued after close()',
      );
    } finally {
      await f.close();
    }
  });
});
