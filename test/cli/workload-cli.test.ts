// The command-line side of workloads and block devices without a node: every
// bad usage exits 2 with one line naming the flag and connects to nothing
// (no server runs here: a command that tried would fail with exit 1 instead),
// the help texts carry examples, and the flag parsers take what they should.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  parseBlockMount,
  parseEnv,
  parseRestart,
  parseSince,
  parseUser,
} from '../../src/cli/workload-flags.ts';
import { cpusText } from '../../src/cli/workload-output.ts';
import { sigil } from '../support/cli.ts';
import { assertRefused, assertUsageError } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const CREATE = ['workload', 'create', 'web', '--node', 'web-1', '--image', 'demo/busybox:1'];

// Each case is its own `sigil` process (~1 s to start): the tests run side by side.
describe('workload commands: bad usage exits 2 before connecting', { concurrency: 4 }, () => {
  test('a missing --node, for every command that needs one', async () => {
    const commands = [
      ['workload', 'create', 'web', '--image', 'demo/busybox:1'],
      ['workload', 'list'],
      ['workload', 'info', 'web'],
      ['workload', 'destroy', 'web'],
      ['workload', 'restart', 'web'],
      ['workload', 'console', 'web'],
      ['workload', 'events'],
      ['workload', 'stats', 'web'],
      ['block', 'create', 'data', '--size', '16'],
      ['block', 'list'],
      ['block', 'destroy', 'data'],
      ['block', 'upload', 'data', 'file'],
      ['block', 'download', 'data', 'file'],
    ];
    const results = await Promise.all(commands.map((args) => sigil(args)));
    for (const result of results) assertUsageError(result, /required option '--node <node>' not specified/);
  });

  test('a missing --image (create) and --size (block create)', async () => {
    assertUsageError(
      await sigil(['workload', 'create', 'web', '--node', 'web-1']),
      /required option '--image <tag>' not specified/,
    );
    assertUsageError(
      await sigil(['block', 'create', 'data', '--node', 'web-1']),
      /required option '--size <MiB>' not specified/,
    );
  });

  test('bad --memory, --cpus, --restart, --env, --block, --user, --workdir, --image, --net', async () => {
    const cases: [string[], RegExp][] = [
      [['--memory', '0'], /--memory must be at least 1/],
      [['--memory', 'lots'], /--memory must be a whole number/],
      [['--cpus', '3-1'], /--cpus "3-1"/],
      [['--restart', 'sometimes'], /--restart "sometimes": expected no, always, on-failure/],
      [['--restart', 'on-failure:0'], /not a failing exit code \(1 to 255\)/],
      [['--restart', 'on-failure:1,x'], /--restart "on-failure:1,x"/],
      [['--env', '=x'], /--env "=x": expected NAME=VALUE/],
      [['--env', 'A B=1'], /is not a variable name/],
      [['--env', 'A=1', '--env', 'A=2'], /--env A is given twice/],
      [['--block', 'data'], /expected NAME:\/mount\/point/],
      [['--block', 'Data:/data'], /block device name "Data" must be one DNS label/],
      [['--block', 'data:relative'], /must be an absolute path/],
      [['--block', 'data:/a/../etc'], /climbs with '\.\.'/],
      [['--block', 'data:/'], /cannot mount over the workload's root/],
      [['--user', 'root'], /--user "root": expected a numeric UID/],
      [['--workdir', 'srv'], /--workdir "srv" must be an absolute path/],
      [['--net', 'bad/bridge'], /--net bridge name "bad\/bridge"/],
      [['--node-address', 'no-port'], /--node-address/],
    ];
    const results = await Promise.all(cases.map(([flags]) => sigil([...CREATE, ...flags])));
    cases.forEach(([, pattern], index) => {
      assertUsageError(results[index], pattern);
    });
    assertUsageError(
      await sigil(['workload', 'create', 'web', '--node', 'web-1', '--image', 'busybox']),
      /image "busybox": needs a :version/,
    );
  });

  test('bad names: a workload or block name that is not one DNS label', async () => {
    assertUsageError(
      await sigil(['workload', 'create', 'Web', '--node', 'web-1', '--image', 'demo/busybox:1']),
      /workload name "Web" must be 1 to 63 lower-case letters/,
    );
    assertUsageError(
      await sigil(['workload', 'info', '../web', '--node', 'web-1']),
      /workload name "\.\.\/web"/,
    );
    assertUsageError(
      await sigil(['workload', 'destroy', '-web', '--node', 'web-1']),
      /unknown option|workload name/,
    );
    assertUsageError(
      await sigil(['block', 'create', '../../etc', '--size', '1', '--node', 'web-1']),
      /block device name "\.\.\/\.\.\/etc"/,
    );
    assertUsageError(
      await sigil(['block', 'create', 'data', '--size', '0', '--node', 'web-1']),
      /--size must be at least 1/,
    );
  });

  test('console: --since with --lines, bad values, --interactive with history flags', async () => {
    const consoleOf = (...flags: string[]) =>
      sigil(['workload', 'console', 'web', '--node', 'web-1', ...flags]);
    assertUsageError(await consoleOf('--since', '10m', '--lines', '3'), /give --since or --lines, not both/);
    assertUsageError(await consoleOf('--since', 'yesterday'), /--since "yesterday": expected a duration ago/);
    assertUsageError(await consoleOf('--lines', '0'), /--lines must be a whole number from 1/);
    assertUsageError(
      await consoleOf('--interactive', '--lines', '5'),
      /--interactive attaches to the live console/,
    );
    assertUsageError(await consoleOf('--interactive', '--json'), /it has no --json/);
  });

  test('events and stats: bad --limit, --since, --watch', async () => {
    assertUsageError(await sigil(['workload', 'events', '--node', 'web-1', '--limit', '-3']), /--limit/);
    assertUsageError(await sigil(['workload', 'events', '--node', 'web-1', '--since', '5x']), /--since "5x"/);
    assertUsageError(
      await sigil(['workload', 'stats', 'web', '--node', 'web-1', '--watch', '10ms']),
      /--watch|invalid duration/,
    );
    assertUsageError(
      await sigil(['workload', 'stats', 'web', '--node', 'web-1', '--watch', 'often']),
      /invalid duration "often"/,
    );
  });

  test('--node-address needs --node to be a node ID', async () => {
    assertUsageError(
      await sigil([
        'workload',
        'list',
        '--node',
        'web-1',
        '--node-address',
        '127.0.0.1:7543',
        '--data',
        tempDir(),
      ]),
      /with --node-address, --node must be the node's ID/,
    );
  });
});

describe('workload commands: refusals that are not usage', { concurrency: 3 }, () => {
  test('no identity to call with: one line naming what is missing, exit 1', async () => {
    const dir = tempDir();
    assertRefused(
      await sigil(['workload', 'list', '--node', 'web-1', '--data', dir]),
      /server file .*server\.json does not exist/,
    );
    assertRefused(
      await sigil(['workload', 'list', '--node', 'web-1', '--identity', join(dir, 'nobody')]),
      /certificate file .*cert\.pem does not exist/,
    );
  });

  test('block download refuses a FILE that exists, and touches nothing', async () => {
    const dir = tempDir();
    const file = join(dir, 'exists');
    const { writeFileSync, readFileSync } = await import('node:fs');
    writeFileSync(file, 'keep me');
    assertRefused(
      await sigil(['block', 'download', 'data', file, '--node', 'web-1', '--data', dir]),
      /already exists; remove it or give another file name/,
    );
    assert.equal(readFileSync(file, 'utf8'), 'keep me');
  });

  test('block upload refuses a missing source before connecting', async () => {
    const dir = tempDir();
    assertRefused(
      await sigil(['block', 'upload', 'data', join(dir, 'missing'), '--node', 'web-1', '--data', dir]),
      /upload source .*missing does not exist/,
    );
    assert.equal(existsSync(join(dir, 'missing')), false);
  });
});

describe('help', { concurrency: 2 }, () => {
  test('every workload, image and block command has examples', async () => {
    const commands = [
      ['workload', 'create'],
      ['workload', 'list'],
      ['workload', 'info'],
      ['workload', 'destroy'],
      ['workload', 'restart'],
      ['workload', 'console'],
      ['workload', 'events'],
      ['workload', 'stats'],
      ['image', 'import'],
      ['image', 'list'],
      ['image', 'remove'],
      ['block', 'create'],
      ['block', 'list'],
      ['block', 'destroy'],
      ['block', 'upload'],
      ['block', 'download'],
    ];
    const results = await Promise.all(commands.map((command) => sigil([...command, '--help'])));
    for (const [index, command] of commands.entries()) {
      const result = results[index];
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, new RegExp(`Usage: sigil ${command.join(' ')}`));
      assert.match(result.stdout, new RegExp(`Examples:\\n {2}\\$ (sudo )?sigil ${command.join(' ')}`));
    }
  });

  test('workload --help lists the commands', async () => {
    const result = await sigil(['workload', '--help']);
    assert.equal(result.code, 0);
    for (const name of ['create', 'list', 'info', 'destroy', 'restart', 'console', 'events', 'stats']) {
      assert.match(result.stdout, new RegExp(`\\n  ${name} `));
    }
  });
});

describe('flag values', () => {
  test('--restart: the three policies, codes deduplicated', () => {
    assert.equal(parseRestart('no'), 'no');
    assert.equal(parseRestart('always'), 'always');
    assert.equal(parseRestart('on-failure'), 'on-failure');
    assert.equal(parseRestart('on-failure:1,137,1'), 'on-failure:1,137');
  });

  test('--env: names and values, "=" inside a value kept', () => {
    assert.deepEqual(parseEnv(['A=1', 'B=x=y', 'EMPTY=']), { A: '1', B: 'x=y', EMPTY: '' });
  });

  test('--block and --user', () => {
    assert.equal(parseBlockMount('data:/data'), 'data:/data');
    assert.equal(parseUser('65534:65534'), '65534:65534');
    assert.equal(parseUser('1000'), '1000');
  });

  test('--since: a duration ago or an ISO time', () => {
    const now = Date.parse('2026-12-07T20:00:00Z');
    assert.equal(parseSince('10m', now), now - 600_000);
    assert.equal(parseSince('2026-12-07T19:00:00Z', now), Date.parse('2026-12-07T19:00:00Z'));
  });

  test('cpu ids print as ranges', () => {
    assert.equal(cpusText([0, 1, 2, 5, 7, 8]), '0-2,5,7-8');
    assert.equal(cpusText([]), '-');
  });
});
