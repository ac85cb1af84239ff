// How client commands find the server and their identity, without a server:
// server.json parsing, wildcard listen addresses, and the precedence of
// explicit flags over the files.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { connectableAddress, parseServerInfo, resolveClientContext } from '../../src/cli/client-context.ts';
import { tempDir } from '../support/temp-dir.ts';

const fingerprint = 'ab'.repeat(32);

function dataDir(info: Record<string, unknown>): string {
  const dir = tempDir('sigil-context-');
  writeFileSync(join(dir, 'server.json'), JSON.stringify(info));
  writeFileSync(join(dir, 'admin.pem'), 'CERT');
  writeFileSync(join(dir, 'admin.key'), 'KEY');
  return dir;
}

describe('client context', () => {
  test('server.json gives the address, the pinned fingerprint and the trust domain', () => {
    const info = parseServerInfo(
      JSON.stringify({
        listen: '127.0.0.1:7443',
        rootFingerprint: fingerprint.toUpperCase(),
        trustDomain: 'td',
      }),
      'server.json',
    );
    assert.equal(info.listen, '127.0.0.1:7443');
    assert.equal(info.rootFingerprint, fingerprint);
    assert.equal(info.trustDomain, 'td');
  });

  test('server.json refusals name the file and the field', () => {
    assert.throws(() => parseServerInfo('{', 's.json'), /s\.json is not valid JSON/);
    assert.throws(() => parseServerInfo('{}', 's.json'), /names no server address/);
    assert.throws(
      () => parseServerInfo(JSON.stringify({ listen: '127.0.0.1:1' }), 's.json'),
      /names no CA fingerprint/,
    );
    assert.throws(
      () => parseServerInfo(JSON.stringify({ listen: '127.0.0.1:1', rootFingerprint: 'abc' }), 's.json'),
      /invalid CA fingerprint in s\.json/,
    );
    assert.throws(
      () => parseServerInfo(JSON.stringify({ listen: 'nowhere', rootFingerprint: fingerprint }), 's.json'),
      /invalid server address "nowhere" in s\.json/,
    );
  });

  test('a wildcard listen address is dialled on loopback', () => {
    assert.equal(connectableAddress('0.0.0.0:7443'), '127.0.0.1:7443');
    assert.equal(connectableAddress('[::]:7443'), '[::1]:7443');
    assert.equal(connectableAddress('[::1]:7443'), '[::1]:7443');
    assert.equal(connectableAddress('ca.example.com:7443'), 'ca.example.com:7443');
  });

  test('--server and --ca-fingerprint win over server.json', async () => {
    const dir = dataDir({ listen: '127.0.0.1:7443', rootFingerprint: fingerprint, trustDomain: 'td' });
    const fromFiles = await resolveClientContext({ data: dir });
    assert.equal(fromFiles.address, '127.0.0.1:7443');
    assert.equal(fromFiles.rootFingerprint, fingerprint);
    const fromFlags = await resolveClientContext({
      data: dir,
      server: '10.0.0.1:9000',
      caFingerprint: 'cd'.repeat(32),
    });
    assert.equal(fromFlags.address, '10.0.0.1:9000');
    assert.equal(fromFlags.rootFingerprint, 'cd'.repeat(32));
    assert.equal(fromFlags.certificateChain, 'CERT');
  });

  test('a data directory without the admin identity is named', async () => {
    const dir = tempDir('sigil-context-');
    writeFileSync(
      join(dir, 'server.json'),
      JSON.stringify({ listen: '127.0.0.1:1', rootFingerprint: fingerprint }),
    );
    await assert.rejects(
      resolveClientContext({ data: dir }),
      /admin certificate \S+admin\.pem does not exist/,
    );
  });

  test('an identity directory without node.json needs --server', async () => {
    const dir = tempDir('sigil-context-');
    for (const file of ['cert.pem', 'key.pem', 'bundle.pem']) writeFileSync(join(dir, file), 'x');
    await assert.rejects(
      resolveClientContext({ identity: dir }),
      /has no node\.json naming the server: give --server/,
    );
  });
});
