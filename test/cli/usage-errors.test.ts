// Exit code 2 for every bad usage, invalid flag values included: each example
// runs the real CLI, which must exit 2 with one line naming the flag (or the
// missing argument) and change nothing. And the table in flag-values.ts covers
// every option that takes a value, so an option added later gets a decision.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { Command } from 'commander';
import { checkFor, FREE_TEXT } from '../../src/cli/flag-values.ts';
import { buildProgram } from '../../src/cli/main.ts';
import { MAX_WORKERS } from '../../src/server/start-server.ts';
import { sigil } from '../support/cli.ts';
import { assertUsageError } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { snapshot } from './pki-helpers.ts';

describe('bad usage exits 2 and changes nothing', () => {
  test('--key-type dsa (pki init): named, and no CA directory is created', async () => {
    const dir = join(tempDir(), 'ca');
    assertUsageError(
      await sigil(['pki', 'init', '--dir', dir, '--key-type', 'dsa']),
      /option '--key-type <type>' argument 'dsa' is invalid\. unknown key type "dsa"/,
    );
    assert.equal(existsSync(dir), false);
  });

  test('--key-type from $SIGIL_KEY_TYPE is checked too', async () => {
    const dir = join(tempDir(), 'ca');
    assertUsageError(
      await sigil(['pki', 'init', '--dir', dir], { SIGIL_KEY_TYPE: 'dsa' }),
      /option '--key-type <type>' value 'dsa' from env 'SIGIL_KEY_TYPE' is invalid/,
    );
    assert.equal(existsSync(dir), false);
  });

  test('--ttl 5x (token create, pki issue, pki quickstart)', async () => {
    const out = tempDir();
    const before = snapshot(out);
    assertUsageError(
      await sigil(['token', 'create', '--ttl', '5x']),
      /option '--ttl <duration>' argument '5x' is invalid\. invalid duration "5x"/,
    );
    assertUsageError(
      await sigil(['pki', 'quickstart', '--out', join(out, 'q'), '--ttl', '5x']),
      /option '--ttl <duration>' argument '5x' is invalid/,
    );
    assertUsageError(
      await sigil(['pki', 'issue', '--dir', out, '--out', join(out, 'x'), '--client', '--ttl', '5x']),
      /option '--ttl <duration>' argument '5x' is invalid/,
    );
    assert.deepEqual(snapshot(out), before);
  });

  test('token create --ttl below a second', async () => {
    assertUsageError(
      await sigil(['token', 'create', '--ttl', '0s']),
      /--ttl <duration>' argument '0s' is invalid/,
    );
  });

  test('--uses 0 and --uses abc (token create)', async () => {
    assertUsageError(
      await sigil(['token', 'create', '--uses', '0']),
      /option '--uses <n>' argument '0' is invalid\. .*from 1 to 4294967295/,
    );
    assertUsageError(await sigil(['token', 'create', '--uses', 'abc']), /option '--uses <n>' argument 'abc'/);
  });

  test('a missing token (enrol without an argument or $SIGIL_JOIN_TOKEN): nothing written', async () => {
    const dir = join(tempDir(), 'node');
    assertUsageError(await sigil(['enrol', '--dir', dir]), /give the join token as an argument/);
    assert.equal(existsSync(dir), false);
  });

  test('other malformed values: --page-size, --cpus, --workloads, --timeout, --server, --ca-fingerprint, a serial', async () => {
    const cases: [string[], RegExp][] = [
      [['cert', 'list', '--page-size', '0'], /'--page-size <n>' argument '0' is invalid/],
      [['delegation', 'reserve', 'web', '--cpus', '3-1'], /'--cpus <ids>' argument '3-1' is invalid/],
      [['delegate', '--to', 'bob', '--out', '/nonexistent/x', '--workloads', '-1'], /'--workloads <n>'/],
      [['status', '--timeout', 'soon'], /'--timeout <duration>' argument 'soon' is invalid/],
      [['status', '--server', 'no-port'], /'--server <host:port>' argument 'no-port' is invalid/],
      [['status', '--ca-fingerprint', 'abc'], /'--ca-fingerprint <hex>' argument 'abc' is invalid/],
      [['cert', 'show', 'not-hex'], /value 'not-hex' is invalid for argument 'serial'/],
      [['completion', 'fish'], /'fish' is invalid for argument 'shell'\. Allowed choices are bash, zsh/],
      [
        ['pki', 'verify', 'x.pem', '--ca', 'ca.pem', '--purpose', 'mail'],
        /Allowed choices are server, client, any/,
      ],
    ];
    for (const [args, pattern] of cases) assertUsageError(await sigil(args), pattern);
  });

  test('commander usage errors stay 2: unknown option, unknown command, missing required option', async () => {
    assertUsageError(await sigil(['token', 'create', '--bogus']), /unknown option '--bogus'/);
    assertUsageError(await sigil(['tokens']), /unknown command 'tokens'/);
    assertUsageError(await sigil(['pki', 'verify', 'x.pem']), /required option '--ca <file>' not specified/);
  });
});

describe('every option that takes a value has a decision', () => {
  test('checked at parse time, a choice, or listed as free text', () => {
    const unclassified: string[] = [];
    const visit = (command: Command, path: string): void => {
      for (const option of command.options) {
        if (!option.required && !option.optional) continue;
        if (option.argChoices || checkFor(command, option) || FREE_TEXT.has(option.long ?? '')) continue;
        unclassified.push(`${path} ${option.flags}`);
      }
      for (const sub of command.commands) visit(sub, `${path} ${sub.name()}`);
    };
    visit(buildProgram(), 'sigil');
    assert.deepEqual(unclassified, []);
  });

  test('server --workers is checked against the range the server itself takes', () => {
    const server = buildProgram().commands.find((command) => command.name() === 'server');
    const option = server?.options.find((each) => each.long === '--workers');
    assert.ok(server && option, 'sigil server --workers exists');
    const check = checkFor(server, option);
    assert.ok(check, '--workers is checked at parse time');
    check(String(MAX_WORKERS));
    assert.throws(() => check(String(MAX_WORKERS + 1)), /whole number from [01] to 256/);
    assert.throws(() => check('0'), /whole number from [01] to 256/);
  });

  test('the defaults pass their own checks (a check never refuses what a command takes)', () => {
    const failures: string[] = [];
    const visit = (command: Command): void => {
      for (const option of command.options) {
        const check = checkFor(command, option);
        if (check && typeof option.defaultValue === 'string') {
          try {
            check(option.defaultValue);
          } catch (error) {
            failures.push(`${command.name()} ${option.long} ${option.defaultValue}: ${String(error)}`);
          }
        }
      }
      for (const sub of command.commands) visit(sub);
    };
    visit(buildProgram());
    assert.deepEqual(failures, []);
  });
});

describe('switches that share a name with a checked option are left alone', () => {
  test('pki issue --server (a switch) is not read as status --server (an address)', async () => {
    const dir = tempDir();
    const result = await sigil([
      'pki',
      'issue',
      '--dir',
      join(dir, 'nope'),
      '--server',
      '--dns',
      'a.internal',
      '--out',
      join(dir, 'a'),
    ]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^sigil: ca directory \S+nope does not exist/);
  });
});
