// The Node.js range sigil runs on: package.json "engines" and bin/sigil.js
// agree, and an unsupported Node gets one line on stderr and exit 1 instead of
// a syntax error or a stack trace (Node 22.0–22.17 cannot strip the types of
// the .ts sources; Node 20 crashed). Versions are pretended with a preloaded
// module that rewrites process.version(s), and the real system Node is tried
// too when it is an unsupported one.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { repoRoot } from '../support/cli.ts';

const bin = join(repoRoot, 'bin', 'sigil.js');
const engines = (
  JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { engines: { node: string } }
).engines.node;

function pretend(version: string, args: string[]) {
  const preload =
    'data:text/javascript,' +
    encodeURIComponent(
      `Object.defineProperty(process,'versions',{value:{...process.versions,node:'${version}'}});` +
        `Object.defineProperty(process,'version',{value:'v${version}'});`,
    );
  return spawnSync(process.execPath, ['--import', preload, bin, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
  });
}

describe('supported Node.js versions', () => {
  test('bin/sigil.js checks the range package.json states', () => {
    const supported = /const SUPPORTED = '([^']+)';/.exec(readFileSync(bin, 'utf8'))?.[1];
    assert.equal(supported, engines);
    assert.equal(engines, '^22.18.0 || >=23.6.0');
  });

  for (const version of ['20.19.0', '22.0.0', '22.17.1', '23.5.0']) {
    test(`Node ${version}: one line naming the range, exit 1`, () => {
      const result = pretend(version, ['--help']);
      assert.equal(result.status, 1, result.stderr);
      assert.equal(result.stdout, '');
      assert.match(
        result.stderr,
        new RegExp(
          `^sigil: needs Node\\.js \\^22\\.18\\.0 \\|\\| >=23\\.6\\.0, this is v${version.replaceAll('.', '\\.')} `,
        ),
      );
      assert.equal(result.stderr.trimEnd().split('\n').length, 1, result.stderr);
    });
  }

  for (const version of ['22.18.0', '23.6.0', '24.0.0']) {
    test(`Node ${version} passes the check`, () => {
      const result = pretend(version, ['--version']);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /^\d+\.\d+\.\d+/);
    });
  }

  test('the system Node, when it is an unsupported one, gets the one line too', (t) => {
    const system = spawnSync('/usr/bin/node', ['-p', 'process.versions.node'], { encoding: 'utf8' });
    const version = system.stdout?.trim() ?? '';
    const [major, minor] = version.split('.').map(Number);
    if (system.error || version === '' || major > 22 || (major === 22 && minor >= 18)) {
      const reason = system.error ? 'no /usr/bin/node' : `/usr/bin/node is ${version}, a supported version`;
      console.log(`# skipping "${t.name}": ${reason}`);
      t.skip(reason);
      return;
    }
    const result = spawnSync('/usr/bin/node', [bin, 'status'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /^sigil: needs Node\.js/);
    assert.equal(result.stderr.trimEnd().split('\n').length, 1, result.stderr);
  });
});
