// `sigil version` / `--version` come from package.json; `sigil completion
// bash|zsh` is generated from the commander tree and completes commands,
// aliases, options, choices and files in a real bash (and zsh, when present).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.ts';
import { KEY_TYPES } from '../../src/pki/keys.ts';
import { repoRoot, sigil } from '../support/cli.ts';
import { tempDir } from '../support/temp-dir.ts';
import { jsonOf } from './pki-helpers.ts';

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };

describe('sigil version', () => {
  test('--version and -V print package.json version', async () => {
    for (const flag of ['--version', '-V']) {
      const result = await sigil([flag]);
      assert.equal(result.code, 0);
      assert.equal(result.stdout, `${pkg.version}\n`);
    }
  });

  test('npm run sigil runs the CLI (it printed nothing when the script named main.ts)', (t) => {
    const result = spawnSync('npm', ['run', '--silent', 'sigil', '--', '--version'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (result.error) {
      console.log(`# skipping "${t.name}": npm is not on the PATH`);
      t.skip('npm is not on the PATH');
      return;
    }
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${pkg.version}\n`);
  });

  test('version prints sigil, Node.js and OpenSSL versions; --json too', async () => {
    const text = await sigil(['version']);
    assert.equal(text.code, 0);
    assert.equal(
      text.stdout,
      `sigil ${pkg.version} (Node.js ${process.versions.node}, OpenSSL ${process.versions.openssl})\n`,
    );
    const json = jsonOf<{ sigil: string; node: string; openssl: string }>(
      await sigil(['version', '--json']),
      'version',
    );
    assert.deepEqual(json, {
      sigil: pkg.version,
      node: process.versions.node,
      openssl: process.versions.openssl,
    });
  });
});

/** Runs `sigil completion SHELL` and then `script` in that shell with the completion loaded. */
function inShell(shell: 'bash' | 'zsh', completion: string, script: string, cwd: string) {
  const file = join(cwd, `completion.${shell}`);
  writeFileSync(file, completion);
  const prelude = shell === 'zsh' ? 'autoload -Uz compinit; compinit -u -D; ' : '';
  return spawnSync(shell, ['-c', `${prelude}source ${JSON.stringify(file)}; ${script}`], {
    cwd,
    encoding: 'utf8',
    timeout: 30_000,
  });
}

/** What bash's completion offers for the words typed (the last one being completed). */
function bashComplete(completion: string, cwd: string, words: string[]): string[] {
  const array = words.map((word) => JSON.stringify(word)).join(' ');
  const result = inShell(
    'bash',
    completion,
    `COMP_WORDS=(${array}); COMP_CWORD=${words.length - 1}; _sigil; printf '%s\\n' "\${COMPREPLY[@]}"`,
    cwd,
  );
  assert.equal(result.status, 0, result.stderr);
  return result.stdout.split('\n').filter((line) => line !== '');
}

describe('sigil completion', () => {
  test('bash: commands, aliases, options, choices, key types and files, in a real bash', async () => {
    const result = await sigil(['completion', 'bash']);
    assert.equal(result.code, 0, result.stderr);
    const script = result.stdout;
    const cwd = tempDir();
    writeFileSync(join(cwd, 'ca.pem'), '');
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'pki', 'i']).sort(), ['init', 'inspect', 'issue']);
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'comp']), ['completion']);
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'completion', '']).sort(), ['bash', 'zsh']);
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'token', 'create', '--u']), ['--uses']);
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'enroll', '--wait-t']), ['--wait-timeout']);
    assert.deepEqual(
      bashComplete(script, cwd, ['sigil', 'pki', 'init', '--key-type', '']).sort(),
      [...KEY_TYPES].sort(),
    );
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'node', 'list', '--state', 'U']), ['UP']);
    // An option's value is skipped: "--ttl 1h" does not confuse the walk.
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'pki', 'issue', '--ttl', '1h', '--cs']), ['--csr']);
    assert.deepEqual(bashComplete(script, cwd, ['sigil', 'pki', 'verify', 'x', '--ca', 'ca']), ['ca.pem']);
  });

  test('the script lists every command and subcommand of the tree', async () => {
    const script = (await sigil(['completion', 'bash'])).stdout;
    const cwd = tempDir();
    const visit = (command: Command, path: string[]): void => {
      const expected = command.commands.flatMap((sub) => [sub.name(), ...sub.aliases()]);
      if (expected.length > 0) {
        const words = bashComplete(script, cwd, ['sigil', ...path, '']);
        for (const name of expected) assert.ok(words.includes(name), `sigil ${path.join(' ')} → ${name}`);
      }
      for (const sub of command.commands) visit(sub, [...path, sub.name()]);
    };
    visit(buildProgram(), []);
  });

  test('zsh: the script parses and completes the same words', async (t) => {
    const zsh = spawnSync('zsh', ['-c', 'exit 0']);
    if (zsh.error) {
      const reason = 'zsh is not installed (apt-get install zsh)';
      console.log(`# skipping "${t.name}": ${reason}`);
      t.skip(reason);
      return;
    }
    const script = (await sigil(['completion', 'zsh'])).stdout;
    assert.match(script, /^#compdef sigil\n/);
    const cwd = tempDir();
    const syntax = spawnSync('zsh', ['-n'], { input: script, encoding: 'utf8' });
    assert.equal(syntax.status, 0, syntax.stderr);
    // One zsh (compinit is slow): each query's words on one line, in order.
    const queries = ['pki ""', 'pki init --key-type ""', 'token create --', 'pki verify x --ca ""'];
    const result = inShell(
      'zsh',
      script,
      `${queries.map((words) => `print -r -- "$(__sigil_candidates ${words})"`).join('; ')}; print -r -- "$_comps[sigil]"`,
      cwd,
    );
    assert.equal(result.status, 0, result.stderr);
    const [pki, keyTypes, tokenCreate, verifyCa, defined] = result.stdout
      .split('\n')
      .map((line) => line.split(/\s+/).filter((word) => word !== ''));
    assert.ok(pki.includes('verify'));
    assert.deepEqual([...keyTypes].sort(), [...KEY_TYPES].sort());
    assert.ok(tokenCreate.includes('--auto-approve'));
    assert.deepEqual(verifyCa, ['__files__']);
    // Loading it defines the completion for sigil.
    assert.deepEqual(defined, ['_sigil']);
  });
});
