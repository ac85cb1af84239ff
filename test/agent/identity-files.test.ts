// The identity directory: node.json refusals, atomic replacement with the
// right modes, and unchanged files left alone.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  identityPaths,
  type NodeInfo,
  parseNodeInfo,
  readIdentity,
  writeIdentity,
} from '../../src/agent/identity-files.ts';
import { tempDir } from '../support/temp-dir.ts';

const info: NodeInfo = {
  nodeId: `n${'ab'.repeat(16)}`,
  state: 'UP',
  name: 'web-1',
  addresses: ['127.0.0.1:7443'],
  rootFingerprint: 'cd'.repeat(32),
  trustDomain: 'sigil.internal',
  spiffeId: `spiffe://sigil.internal/node/n${'ab'.repeat(16)}`,
};

describe('identity files', () => {
  test('node.json round-trips', () => {
    const dir = tempDir();
    writeIdentity(dir, { info });
    assert.deepEqual(parseNodeInfo(readFileSync(identityPaths(dir).node, 'utf8'), 'node.json'), info);
  });

  test('node.json refusals name the problem', () => {
    assert.throws(() => parseNodeInfo('{', 'n.json'), /n\.json is not valid JSON/);
    assert.throws(() => parseNodeInfo('[]', 'n.json'), /not a JSON object/);
    assert.throws(
      () => parseNodeInfo(JSON.stringify({ ...info, nodeId: 7 }), 'n.json'),
      /"nodeId" is missing/,
    );
    assert.throws(
      () => parseNodeInfo(JSON.stringify({ ...info, state: 'UPP' }), 'n.json'),
      /unknown state "UPP"/,
    );
    assert.throws(() => parseNodeInfo(JSON.stringify({ ...info, addresses: [] }), 'n.json'), /"addresses"/);
  });

  test('the key is written 0600, the rest 0644, and no temporary file remains', () => {
    const dir = tempDir();
    writeIdentity(dir, {
      privateKey: 'KEY\n',
      certificateChain: 'CERT\n',
      trustBundle: 'BUNDLE\n',
      info,
    });
    const paths = identityPaths(dir);
    assert.equal(statSync(paths.key).mode & 0o777, 0o600);
    assert.equal(statSync(paths.certificate).mode & 0o777, 0o644);
    assert.equal(statSync(paths.bundle).mode & 0o777, 0o644);
    assert.deepEqual(readdirSync(dir).sort(), ['bundle.pem', 'cert.pem', 'key.pem', 'node.json']);
  });

  test('a loose key file is replaced by a 0600 one', () => {
    const dir = tempDir();
    writeFileSync(identityPaths(dir).key, 'OLD\n', { mode: 0o644 });
    writeIdentity(dir, { privateKey: 'NEW\n' });
    assert.equal(readFileSync(identityPaths(dir).key, 'utf8'), 'NEW\n');
    assert.equal(statSync(identityPaths(dir).key).mode & 0o777, 0o600);
  });

  test('files whose content does not change are not rewritten', () => {
    const dir = tempDir();
    writeIdentity(dir, { certificateChain: 'CERT\n' });
    const before = statSync(identityPaths(dir).certificate).ino;
    writeIdentity(dir, { certificateChain: 'CERT\n' });
    assert.equal(statSync(identityPaths(dir).certificate).ino, before);
  });

  test('a directory still waiting for approval is refused with the command that helps', () => {
    const dir = tempDir();
    writeIdentity(dir, { info: { ...info, state: 'NEW', spiffeId: null } });
    assert.throws(() => readIdentity(dir), /waiting for approval \(sigil node approve n[0-9a-f]{32}\)/);
  });

  test('a missing certificate is named', () => {
    const dir = tempDir();
    writeIdentity(dir, { info });
    assert.throws(() => readIdentity(dir), /certificate file \S+cert\.pem does not exist/);
  });
});
