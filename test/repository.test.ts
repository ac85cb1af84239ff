// The repository's own hygiene, as part of `npm test`: the sources type-check
// under the strict settings and Biome finds nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

const root = new URL('..', import.meta.url).pathname;

function run(command: string, args: string[]) {
  return spawnSync(command, args, { cwd: root, encoding: 'utf8', timeout: 120_000 });
}

test('the sources type-check (tsc --noEmit, strict, erasable syntax only)', () => {
  const result = run(process.execPath, [
    'node_modules/typescript/bin/tsc',
    '-p',
    'tsconfig.json',
    '--noEmit',
  ]);
  assert.equal(result.status, 0, `tsc failed:\n${result.stdout}${result.stderr}`);
});

test('biome check finds no lint or format problems', () => {
  const result = run(process.execPath, ['node_modules/@biomejs/biome/bin/biome', 'check', '.']);
  assert.equal(result.status, 0, `biome check failed:\n${result.stdout}${result.stderr}`);
});
