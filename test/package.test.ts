// The package as others consume it: the public entry points export what the
// README promises, and a build produces every file package.json points at.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const root = new URL('..', import.meta.url).pathname;

test('the main entry point exports the transport and agent API', async () => {
  const sigil = await import('../src/index.ts');
  for (const name of [
    'EmbeddedCA',
    'MtlsServer',
    'channelCredentials',
    'peerIdentity',
    'NodeAgent',
    'SigilError',
  ]) {
    assert.ok(name in sigil, `sigil exports ${name}`);
  }
});

test('sigil/pki exports the PKI core', async () => {
  const pki = await import('../src/pki/index.ts');
  for (const name of [
    'Issuer',
    'createRootCertificate',
    'generateKeyPair',
    'readCsr',
    'createCrl',
    'readPolicy',
  ]) {
    assert.ok(name in pki, `sigil/pki exports ${name}`);
  }
});

test('npm run build emits every file package.json exports, and the bin finds its entry', () => {
  const out = mkdtempSync(join(tmpdir(), 'sigil-build-'));
  try {
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', out], {
      cwd: root,
      encoding: 'utf8',
      timeout: 180_000,
    });
    assert.equal(result.status, 0, `build failed:\n${result.stdout}${result.stderr}`);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      exports: Record<string, { types: string; default: string }>;
    };
    const targets = Object.values(pkg.exports).flatMap((entry) => [entry.types, entry.default]);
    targets.push('./dist/cli/main.js'); // what bin/sigil.js imports when installed
    for (const target of targets) {
      const built = join(out, target.replace(/^\.\/dist\//, ''));
      assert.ok(existsSync(built), `${target} is built`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
