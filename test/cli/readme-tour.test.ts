// The README's tour, run as written: its shell blocks (the tour, the
// delegation walk, the pki quickstart and verify lines, and the stop block),
// in bash from the repository root, on free ports (SIGIL_LISTEN and
// SIGIL_HTTP_LISTEN, which the tour itself never names). Every command must
// do what its comment says, and the repository must not gain a single file:
// everything goes into the tour's scratch directory.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../support/cli.ts';
import { workloadsUnavailable } from '../workloads/rootfs-fixture.ts';

const unavailable = workloadsUnavailable();

function shellBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]);
}

function tourScript(): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const blocks = shellBlocks(readme);
  const tour = blocks.find((block) => block.startsWith('alias sigil=') && block.includes('export T='));
  const delegation = blocks.find((block) => block.startsWith('sigil delegate --to alice'));
  const stop = blocks.find((block) => block.startsWith('kill $SERVER'));
  const workloads = blocks.find((block) => block.startsWith('mkdir -p "$T/rootfs/bin"'));
  const guests = blocks.find((block) => block.startsWith('mkdir -p "$T/hello"'));
  assert.ok(
    tour && delegation && stop && workloads && guests,
    'the README has its tour, delegation, workloads, guests and stop blocks',
  );
  const pki = [...readme.matchAll(/`(sigil pki (?:quickstart|verify) [^`]*\$T[^`]*)`/g)].map(
    (match) => match[1],
  );
  assert.equal(pki.length, 2, 'the pki quickstart and verify lines');
  return [
    'shopt -s expand_aliases',
    tour,
    'echo "--- tour: node $NODE"',
    delegation,
    ...pki,
    ...(unavailable ? [] : ['echo "--- workloads"', workloads, 'echo "--- guests"', guests]),
    'echo "--- scratch: $T"',
    stop,
    'echo "--- stopped"',
  ].join('\n');
}

/** Top-level entries of the repository that git does not track (ignored ones included). */
function untracked(): string[] {
  const tracked = spawnSync('git', ['ls-files'], { cwd: repoRoot, encoding: 'utf8' });
  if (tracked.status !== 0) return [];
  const top = new Set(tracked.stdout.split('\n').map((path) => path.split('/')[0]));
  return readdirSync(repoRoot)
    .filter((name) => !top.has(name) && name !== '.git')
    .sort();
}

test('the README tour runs as written and writes nothing into the repository', () => {
  const before = untracked();
  const result = spawnSync('bash', ['-c', tourScript()], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 420_000,
    env: {
      ...process.env,
      SIGIL_LISTEN: '127.0.0.1:0',
      SIGIL_HTTP_LISTEN: '127.0.0.1:0',
      SIGIL_WORKLOADS_LISTEN: '127.0.0.1:0',
    },
  });
  const output = `${result.stdout}\n${result.stderr}`;
  assert.equal(result.status, 0, output);
  assert.match(result.stdout, /sigil: bootstrapped trust domain sigil\.internal/);
  assert.match(result.stdout, /enrolled node n[0-9a-f]+ with 127\.0\.0\.1:\d+: UP/);
  assert.match(result.stdout, /web-1 +UP/);
  assert.match(result.stdout, /--- tour: node n[0-9a-f]{32}\n/);
  assert.match(result.stdout, /revoked node n[0-9a-f]+/);
  assert.match(result.stdout, /created delegation spiffe:\/\/carol\.alice\.d\.sigil\.internal/);
  assert.match(result.stdout, /reserved db-1 in spiffe:\/\/dan\.alice\.d\.sigil\.internal/);
  assert.match(result.stderr, /sigil: reserving this would exceed the workloads limit/);
  assert.match(result.stdout, /revoked CN=sigil delegation alice\/carol/);
  assert.match(result.stdout, /created command certificate spiffe:\/\/ops\.d\.sigil\.internal/);
  assert.match(result.stdout, /server\.pem: OK \(OpenSSL verified it\)/);
  if (unavailable) {
    console.log(`# the README's workloads block was not run: ${unavailable}`);
  } else {
    const workloadsOutput = result.stdout.slice(result.stdout.indexOf('--- workloads'));
    assert.match(workloadsOutput, /created workload web/);
    assert.match(result.stderr, /workloads limit/);
    assert.match(workloadsOutput, /^hello from web$/m);
    assert.match(workloadsOutput, /destroyed workload web/);
    assert.match(workloadsOutput, /hog +oom-killed/);
    assert.match(workloadsOutput, /hog +restarted/);
    assert.match(workloadsOutput, /destroyed-by-revocation/);
    const guestsOutput = result.stdout.slice(result.stdout.indexOf('--- guests'));
    assert.match(guestsOutput, /built demo\/hello:1/);
    assert.match(
      guestsOutput,
      /I am spiffe:\/\/bea\.d\.sigil\.internal\/workload\/hello/,
      'the identity, read inside',
    );
    assert.match(
      guestsOutput,
      /"client":"spiffe:\/\/bea\.d\.sigil\.internal\/workload\/hello","amount":10/,
      'the casino saw the workload identity',
    );
    assert.match(guestsOutput, /destroyed workload hello/);
  }
  assert.match(result.stdout, /--- stopped/);
  assert.deepEqual(untracked(), before, 'the tour wrote into the repository');
});
