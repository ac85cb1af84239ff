// CRLs done properly (issue #10): leaves carry a CRL distribution point when
// the server has an HTTP URL to advertise; /crl lists the issuer IDs; CRLs
// say nextUpdate in days (24 h for intermediates, 7 days for the root) rather
// than the root's ten years, and are re-signed well before it, so they never
// expire under a running server; the last root CRL before the root key goes
// offline lasts a year and the authority warns before it ends. openssl reads
// the extension and the CRLs; the clock of the authority tests is moved by hand.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { readCertificates } from '../../src/pki/certificate.ts';
import { parseCrl } from '../../src/pki/crl.ts';
import { startServer } from '../../src/server/start-server.ts';
import type { Store } from '../../src/store/store.ts';
import { startTestServer } from '../agent/server-fixture.ts';
import { DAY, HOUR, newFixture } from '../authority/helpers.ts';
import { openssl } from '../support/cli.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';

const server = await startTestServer();

/** The CRL distribution point URIs of a PEM certificate, as `openssl x509 -text` shows them. */
async function distributionPoints(pemFile: string): Promise<string[]> {
  const text = await openssl(['x509', '-in', pemFile, '-noout', '-text']);
  assert.equal(text.code, 0, text.stderr);
  const section =
    /X509v3 CRL Distribution Points:\s*\n([\s\S]*?)\n\s*X509v3|X509v3 CRL Distribution Points:\s*\n([\s\S]*)$/.exec(
      text.stdout,
    );
  if (!section) return [];
  return [...(section[1] ?? section[2]).matchAll(/URI:(\S+)/g)].map((match) => match[1]);
}

async function fetchCrl(
  url: string,
  file: string,
): Promise<{ lastUpdate: Date; nextUpdate: Date; text: string }> {
  const response = await fetch(url);
  assert.equal(response.status, 200, `${url}: ${response.status}`);
  assert.equal(response.headers.get('content-type'), 'application/pkix-crl');
  writeFileSync(file, Buffer.from(await response.arrayBuffer()));
  const shown = await openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-text']);
  assert.equal(shown.code, 0, shown.stderr);
  const last = /Last Update: (.+)/.exec(shown.stdout)?.[1];
  const next = /Next Update: (.+)/.exec(shown.stdout)?.[1];
  assert.ok(last && next, shown.stdout);
  return { lastUpdate: new Date(last), nextUpdate: new Date(next), text: shown.stdout };
}

describe('CRL distribution points and /crl', { concurrency: 2 }, () => {
  test('a node certificate names its issuer CRL; the URL serves it, signed, with a nextUpdate of a day', async () => {
    const dir = await server.enrolledNode();
    const points = await distributionPoints(join(dir, 'cert.pem'));
    assert.equal(points.length, 1, `CRL distribution points: ${points.join(', ')}`);
    const [url] = points;
    assert.ok(url.startsWith(`${server.running.httpUrl}/crl/`), url);
    const crlFile = join(dir, 'issuer.crl');
    const crl = await fetchCrl(url, crlFile);
    const validity = crl.nextUpdate.getTime() - crl.lastUpdate.getTime();
    assert.ok(validity > HOUR && validity <= DAY, `nextUpdate ${validity / HOUR} h after lastUpdate`);
    // Signed by the intermediate in the node's chain, which the bundle anchors.
    const chainFile = join(dir, 'chain-and-bundle.pem');
    writeFileSync(
      chainFile,
      readFileSync(join(dir, 'cert.pem'), 'utf8').replace(/^[\s\S]*?-----END CERTIFICATE-----\n/, '') +
        readFileSync(join(dir, 'bundle.pem'), 'utf8'),
    );
    const verified = await openssl(['crl', '-inform', 'DER', '-in', crlFile, '-CAfile', chainFile, '-noout']);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stderr + verified.stdout, /verify OK/);
  });

  test('a revoked certificate appears in the CRL at its distribution point, and openssl refuses it', async () => {
    const dir = await server.enrolledNode();
    const certificate = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
    const serial = certificate.serialNumber.toUpperCase().replace(/^0+(?=.)/, '');
    await server.json(['cert', 'revoke', serial.toLowerCase(), '--reason', 'superseded']);
    const [url] = await distributionPoints(join(dir, 'cert.pem'));
    const crlFile = join(dir, 'issuer.crl');
    const crl = await fetchCrl(url, crlFile);
    assert.match(crl.text, new RegExp(`Serial Number: 0*${serial}`, 'i'));
    assert.match(crl.text, /Superseded/);
    const pem = join(dir, 'issuer-crl.pem');
    const converted = await openssl(['crl', '-inform', 'DER', '-in', crlFile, '-out', pem]);
    assert.equal(converted.code, 0, converted.stderr);
    const verify = await openssl([
      'verify',
      '-crl_check',
      '-CAfile',
      join(dir, 'bundle.pem'),
      '-untrusted',
      join(dir, 'cert.pem'),
      '-CRLfile',
      pem,
      join(dir, 'cert.pem'),
    ]);
    assert.notEqual(verify.code, 0);
    assert.match(verify.stdout + verify.stderr, /certificate revoked/);
  });

  test('GET /crl lists the issuer IDs as JSON, and each path serves that CRL', async () => {
    const response = await fetch(`${server.running.httpUrl}/crl`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/json');
    const { issuers } = (await response.json()) as { issuers: { id: string; path: string }[] };
    const ids = issuers.map((issuer) => issuer.id);
    assert.ok(ids.includes('root'), ids.join(', '));
    assert.ok(ids.length >= 2, "the root and this replica's intermediate");
    assert.deepEqual(ids, server.running.authority.crlIssuers());
    for (const issuer of issuers) {
      assert.equal(issuer.path, `/crl/${encodeURIComponent(issuer.id)}`);
      const crl = await fetchCrl(
        `${server.running.httpUrl}${issuer.path}`,
        join(tempDir('sigil-crl-'), 'x.crl'),
      );
      assert.ok(crl.nextUpdate > crl.lastUpdate);
    }
    assert.equal(
      (await fetch(`${server.running.httpUrl}/crl/`)).status,
      404,
      'an empty issuer ID is unknown',
    );
  });

  test("the root CRL says nextUpdate in days, not the root's lifetime", async () => {
    const crl = await fetchCrl(`${server.running.httpUrl}/crl/root`, join(tempDir('sigil-crl-'), 'root.crl'));
    const validity = crl.nextUpdate.getTime() - crl.lastUpdate.getTime();
    assert.ok(validity <= 7 * DAY && validity > DAY, `root CRL valid for ${validity / DAY} days`);
  });
});

describe('which URL certificates advertise', { concurrency: 2 }, () => {
  const serverLeafDistributionPoints = async (running: Awaited<ReturnType<typeof startServer>>) => {
    const file = join(tempDir('sigil-crl-'), 'server.pem');
    writeFileSync(file, running.authority.serverMaterial().current().certificateChain);
    return distributionPoints(file);
  };

  test('with --http-advertise: that URL, for every leaf from the first one on', async () => {
    const running = await startServer({
      dataDir: join(tempDir(), 'data'),
      listen: '127.0.0.1:0',
      httpListen: '127.0.0.1:0',
      httpAdvertise: 'https://pki.example.com/sigil/',
    });
    after(() => running.close(0));
    const [point, ...rest] = await serverLeafDistributionPoints(running);
    assert.deepEqual(rest, []);
    assert.match(point, /^https:\/\/pki\.example\.com\/sigil\/crl\/replica/);
    const admin = readCertificates(readFileSync(join(running.dataDir, 'admin.pem'), 'utf8'))[0];
    const adminFile = join(tempDir('sigil-crl-'), 'admin.pem');
    writeFileSync(
      adminFile,
      `-----BEGIN CERTIFICATE-----\n${admin.toString('base64')}\n-----END CERTIFICATE-----\n`,
    );
    assert.deepEqual(await distributionPoints(adminFile), [point], 'the bootstrap admin identity too');
  });

  test('clients dialling a non-loopback address and no --http-advertise: no distribution point', async () => {
    const running = await startServer({
      dataDir: join(tempDir(), 'data'),
      listen: '127.0.0.1:0',
      httpListen: '127.0.0.1:0',
      advertise: ['ca.example.com:7443'],
    });
    after(() => running.close(0));
    await running.authority.maintain();
    assert.deepEqual(await serverLeafDistributionPoints(running), []);
  });

  test('a bad --http-advertise is refused before the data directory is created', async () => {
    const dataDir = join(tempDir(), 'data');
    for (const url of [
      'ftp://pki.example.com',
      'not a url',
      'https://user:pw@pki.example.com',
      'https://x.example/?q=1',
    ]) {
      await assert.rejects(
        startServer({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0', httpAdvertise: url }),
        /--http-advertise must/,
      );
    }
    assert.equal(existsSync(dataDir), false);
  });
});

/** The newest root CRL published in the store (settings crl:root:1, 2, …), read without the authority. */
async function newestPublishedRootCrl(store: Store): Promise<Buffer> {
  let newest: string | null = null;
  for (let n = 1; ; n++) {
    const value = await store.getSetting(`crl:root:${n}`);
    if (value === null) break;
    newest = value;
  }
  assert.ok(newest, 'a root CRL is published');
  return Buffer.from(newest, 'base64');
}

describe('CRLs are re-signed before their nextUpdate (authority clock moved by hand)', () => {
  test('the root CRL: 7 days, re-signed once half of that is gone, by a request or the maintenance round', async () => {
    const f = await newFixture();
    after(() => f.close());
    const first = parseCrl(await f.authority.crl('root'));
    assert.ok(first.nextUpdate);
    assert.equal(first.nextUpdate.getTime() - first.thisUpdate.getTime(), 7 * DAY);
    f.clock.advance(DAY);
    assert.deepEqual(parseCrl(await f.authority.crl('root')).der, first.der, 'fresh enough: served as it is');
    f.clock.advance(3 * DAY);
    await f.authority.maintain();
    const second = parseCrl(await f.authority.crl('root'));
    assert.notDeepEqual(second.der, first.der);
    assert.equal(second.thisUpdate.getTime(), Math.floor(f.clock.ms / 1000) * 1000);
    assert.ok((second.crlNumber ?? 0n) > (first.crlNumber ?? 0n), 'the CRL number goes up');
    assert.ok(second.nextUpdate && second.nextUpdate.getTime() > (first.nextUpdate?.getTime() ?? 0));
    // And the maintenance round alone keeps it fresh: four days later the published one is new again.
    f.clock.advance(4 * DAY);
    await f.authority.maintain();
    const third = parseCrl(await newestPublishedRootCrl(f.store));
    assert.equal(third.thisUpdate.getTime(), Math.floor(f.clock.ms / 1000) * 1000);
    assert.ok(third.nextUpdate && third.nextUpdate.getTime() > f.clock.ms + 3 * DAY);
  });

  test('an intermediate CRL says 24 h and is re-signed at 12 h', async () => {
    const f = await newFixture();
    after(() => f.close());
    const id = f.authority.crlIssuers().find((issuer) => issuer !== 'root');
    assert.ok(id);
    const first = parseCrl(await f.authority.crl(id));
    assert.equal((first.nextUpdate?.getTime() ?? 0) - first.thisUpdate.getTime(), DAY);
    f.clock.advance(11 * HOUR);
    assert.deepEqual(parseCrl(await f.authority.crl(id)).der, first.der);
    f.clock.advance(2 * HOUR);
    const second = parseCrl(await f.authority.crl(id));
    assert.ok(second.thisUpdate > first.thisUpdate);
    assert.ok((second.nextUpdate?.getTime() ?? 0) - f.clock.ms > 10 * HOUR);
  });

  test('before the root key goes offline a CRL valid for a year is published; 30 days before it ends, a warning', async () => {
    const warnings: string[] = [];
    const f = await newFixture({ onWarning: (message) => warnings.push(message) });
    after(() => f.close());
    await f.authority.exportRoot(f.admin);
    const offline = parseCrl(await f.authority.crl('root'));
    const validity = (offline.nextUpdate?.getTime() ?? 0) - offline.thisUpdate.getTime();
    assert.ok(
      validity >= 364 * DAY && validity <= 366 * DAY,
      `offline root CRL valid ${validity / DAY} days`,
    );
    f.clock.advance(300 * DAY);
    await f.authority.maintain();
    assert.deepEqual(parseCrl(await f.authority.crl('root')).der, offline.der, 'nobody can sign another');
    assert.ok(!warnings.some((message) => message.includes('root CRL')), warnings.join('\n'));
    f.clock.advance(40 * DAY);
    await f.authority.maintain();
    assert.ok(
      warnings.some((message) => /the root CRL expires at .* and the root key is offline/.test(message)),
      warnings.join('\n'),
    );
  });

  test('removeFromCRL is refused as a reason to revoke: it belongs in delta CRLs only', async () => {
    const f = await newFixture();
    after(() => f.close());
    const admin = readCertificates(f.opened.bootstrapped?.adminCertificatePem ?? '')[0];
    const adminSerial = serialOf(admin);
    await assert.rejects(
      f.authority.revoke(f.admin, adminSerial, 'removeFromCRL'),
      /removeFromCRL is not a reason to revoke/,
    );
    const record = await f.store.getCertificate(adminSerial);
    assert.equal(record?.revokedAt, null, 'nothing was revoked');
  });
});
