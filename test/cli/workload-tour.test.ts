// The workload tour of the README, with the real `sigil` command against a
// real control plane and a node daemon (test/agent/workload-daemon-fixture.ts:
// an enrolled node with a busybox image, its daemon registered with the
// control plane, so --node finds it by ID through FindWorkloadNode): Alice's
// delegation with 1 workload and 256 MiB creates a busybox workload, reads
// its console, is refused a second workload, reads events and statistics,
// destroys it; a workload over its memory limit is OOM-killed and restarted
// (the event log shows both); revoking Alice destroys what she left.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pty from '@lydell/node-pty';
import { nodeFile } from '../agent/server-fixture.ts';
import { type DaemonHarness, IMAGE, startDaemonHarness } from '../agent/workload-daemon-fixture.ts';
import { type RunResult, run, SIGIL_BIN, sigil, startSigil } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { assertRefused } from '../support/refusals.ts';
import { workloadsUnavailable } from '../workloads/rootfs-fixture.ts';

const unavailable = workloadsUnavailable();
if (unavailable) process.stderr.write(`workload tour skipped: ${unavailable}\n`);

function ok(result: RunResult, what: string): RunResult {
  assert.equal(result.code, 0, `${what}: ${result.stderr}`);
  return result;
}

interface EventJson {
  workload: string;
  kind: string;
  exitCode: number;
  signal: string;
}

// Started at the top level, so that the fixture's after() hooks close the
// control plane and the daemon when the file ends (inside a before() hook
// they ran as soon as that hook ended).
let harness: DaemonHarness;
let node = '';
let alice = '';
if (!unavailable) {
  harness = await startDaemonHarness();
  node = nodeFile(harness.nodeDir).nodeId;
  alice = await harness.delegate('alice', [
    '--permissions',
    'info,create,destroy,console,log,stats',
    '--workloads',
    '1',
    '--memory',
    '256',
  ]);
}

describe('the workload tour, with the sigil command', { skip: unavailable ?? false }, () => {
  /** `sigil ARGS… --node NODE --identity ALICE [-- COMMAND…]`: flags before the workload's command. */
  const asAlice = (args: readonly string[], command: readonly string[] = []) =>
    sigil([...args, '--node', node, '--identity', alice, ...(command.length > 0 ? ['--', ...command] : [])]);
  const asAdmin = (args: readonly string[]) =>
    sigil([...args, '--node', node, '--data', harness.server.dataDir]);
  const eventsOf = async (name: string, run = asAlice): Promise<EventJson[]> => {
    const result = ok(await run(['workload', 'events', name, '--json']), 'workload events');
    return (JSON.parse(result.stdout) as { events: EventJson[] }).events;
  };

  test('the node lists its busybox image to Alice (image list --node)', async () => {
    const images = ok(await asAlice(['image', 'list', '--json']), 'image list --node');
    assert.deepEqual(
      (JSON.parse(images.stdout) as { images: { tag: string }[] }).images.map((image) => image.tag),
      [IMAGE],
    );
  });

  test('Alice creates web; it runs, prints to its console, and shows in list and info', async () => {
    const created = ok(
      await asAlice(
        [
          'workload',
          'create',
          'web',
          '--image',
          IMAGE,
          '--memory',
          '64',
          '--env',
          'GREETING=hello',
          '--json',
        ],
        ['/bin/sh', '-c', 'echo "$GREETING from $(hostname)"; while true; do sleep 1; done'],
      ),
      'workload create',
    );
    const workload = JSON.parse(created.stdout) as {
      name: string;
      owner: string;
      state: string;
      memoryMib: number;
    };
    assert.equal(workload.name, 'web');
    assert.equal(workload.owner, '/alice');
    assert.equal(workload.memoryMib, 64);

    const listed = ok(await asAlice(['workload', 'list']), 'workload list');
    assert.match(listed.stdout, /^NAME\s+OWNER\s+STATE\s+IMAGE/);
    assert.match(listed.stdout, new RegExp(`\\nweb\\s+/alice\\s+\\w+\\s+${IMAGE}`));

    const consoleText = await eventually('web to greet on its console', async () => {
      const result = ok(await asAlice(['workload', 'console', 'web', '--lines', '10']), 'workload console');
      return result.stdout.includes('hello from web') && result.stdout;
    });
    assert.match(consoleText, /^hello from web$/m);

    const info = ok(await asAlice(['workload', 'info', 'web']), 'workload info');
    assert.match(info.stdout, /^workload web\n {2}owner: {5}\/alice\n {2}state: {5}running \(pid \d+\)/);
  });

  test('a second workload is over Alice’s quota: refused, naming the limit, nothing created', async () => {
    assertRefused(
      await asAlice(['workload', 'create', 'db', '--image', IMAGE, '--memory', '16']),
      /workloads limit/,
    );
    const listed = JSON.parse(ok(await asAlice(['workload', 'list', '--json']), 'list').stdout) as {
      workloads: { name: string }[];
    };
    assert.deepEqual(
      listed.workloads.map((w) => w.name),
      ['web'],
    );
  });

  test('events and stats', async () => {
    const kinds = (await eventsOf('web')).map((event) => event.kind);
    assert.deepEqual(kinds.slice(0, 2), ['created', 'started']);
    const stats = JSON.parse(ok(await asAlice(['workload', 'stats', 'web', '--json']), 'stats').stdout) as {
      name: string;
      state: string;
      memoryBytes: number;
      pids: number;
    };
    assert.equal(stats.name, 'web');
    assert.equal(stats.state, 'running');
    assert.ok(stats.memoryBytes > 0 && stats.pids >= 1, JSON.stringify(stats));
    const text = ok(await asAlice(['workload', 'stats', 'web']), 'stats');
    assert.match(text.stdout, /^workload web: running \(0 restarts\)\n {2}cpu: /);
  });

  test('console --follow prints lines as they come, until stopped', async () => {
    const follower = startSigil([
      'workload',
      'console',
      'web',
      '--follow',
      '--lines',
      '1',
      '--node',
      node,
      '--identity',
      alice,
    ]);
    await follower.printed('hello from web', 'stdout');
    follower.child.kill('SIGINT');
    await follower.exited;
  });

  test('restart with a new command, then an interactive console with piped input', async () => {
    const restarted = ok(await asAlice(['workload', 'restart', 'web'], ['/bin/sh']), 'restart');
    assert.match(restarted.stdout, /^restarted workload web: running/);
    const info = JSON.parse(ok(await asAlice(['workload', 'info', 'web', '--json']), 'info').stdout) as {
      command: string[];
    };
    assert.deepEqual(info.command, ['/bin/sh']);
    // The shell reads the piped line from its terminal and runs it; only the run prints 42.
    const attached = await run(
      process.execPath,
      [SIGIL_BIN, 'workload', 'console', 'web', '--interactive', '--node', node, '--identity', alice],
      { input: 'echo marker-$((6*7))\n' },
    );
    assert.equal(attached.code, 0, attached.stderr);
    assert.match(attached.stdout, /marker-42/);
  });

  test('on a terminal, --interactive is raw: keys go to the workload, ctrl-] detaches', async () => {
    const session = pty.spawn(
      process.execPath,
      [SIGIL_BIN, 'workload', 'console', 'web', '--interactive', '--node', node, '--identity', alice],
      { cols: 80, rows: 24, env: { ...process.env, NODE_COMPILE_CACHE: '' } },
    );
    let output = '';
    session.onData((data) => {
      output += data;
    });
    const exited = new Promise<number>((resolve) => session.onExit(({ exitCode }) => resolve(exitCode)));
    try {
      await eventually('the attach banner', () => output.includes('ctrl-] detaches'));
      session.write('echo tty-$((6*7))\r');
      await eventually(`the shell's answer (so far ${JSON.stringify(output)})`, () =>
        output.includes('tty-42'),
      );
      session.write('\x1d');
      assert.equal(await exited, 0, output);
      assert.match(output, /detached from web/);
    } finally {
      session.kill();
    }
    // Detaching left the workload running.
    const info = JSON.parse(ok(await asAlice(['workload', 'info', 'web', '--json']), 'info').stdout) as {
      state: string;
    };
    assert.equal(info.state, 'running');
  });

  test('stats --watch and events --follow print as they go, until stopped', async () => {
    const watcher = startSigil([
      'workload',
      'stats',
      'web',
      '--watch',
      '1s',
      '--node',
      node,
      '--identity',
      alice,
    ]);
    await eventually(
      `two samples (so far ${JSON.stringify(watcher.stdout())}, ${JSON.stringify(watcher.stderr())})`,
      () =>
        watcher
          .stdout()
          .split('\n')
          .filter((line) => line.includes('running')).length >= 2,
    );
    assert.match(watcher.stdout(), /^TIME\s+STATE\s+CPU\(s\)/);
    watcher.child.kill('SIGINT');
    await watcher.exited;

    const follower = startSigil([
      'workload',
      'events',
      'web',
      '--follow',
      '--json',
      '--node',
      node,
      '--identity',
      alice,
    ]);
    await follower.printed('"kind":"started"', 'stdout');
    follower.child.kill('SIGINT');
    await follower.exited;
    for (const line of follower.stdout().trim().split('\n')) {
      assert.equal((JSON.parse(line) as EventJson).workload, 'web');
    }
  });

  test('--node-address skips the lookup but still verifies the node by its SPIFFE ID', async () => {
    const direct = ['workload', 'list', '--node', node, '--node-address', harness.daemon.address];
    const listed = ok(await sigil([...direct, '--identity', alice]), '--node-address');
    assert.match(listed.stdout, /\nweb\s+\/alice/);
    // The same address claimed for another node ID: the TLS handshake refuses the server.
    const impostor = `n${'0'.repeat(32)}`;
    const refused = await sigil([
      'workload',
      'list',
      '--node',
      impostor,
      '--node-address',
      harness.daemon.address,
      '--identity',
      alice,
    ]);
    assertRefused(
      refused,
      new RegExp(`server identity rejected: expected SPIFFE ID "spiffe://[^/]+/node/${impostor}"`),
    );
  });

  test('an unknown node, and block devices without the block permission: one line each, exit 1', async () => {
    const unknown = await sigil(['workload', 'list', '--node', 'no-such-node', '--identity', alice]);
    assertRefused(unknown, /no-such-node/);
    assertRefused(
      await asAlice(['block', 'list']),
      /the "block" permission is not in your certificate's policy/,
    );
  });

  test('Alice destroys web: gone from the list, destroyed in the event log', async () => {
    const destroyed = ok(await asAlice(['workload', 'destroy', 'web']), 'destroy');
    assert.equal(destroyed.stdout, 'destroyed workload web\n');
    assert.equal(ok(await asAlice(['workload', 'list']), 'list').stdout, 'no workloads\n');
    assert.ok((await eventsOf('web')).some((event) => event.kind === 'destroyed'));
    assertRefused(await asAlice(['workload', 'info', 'web']), /web/);
  });

  test('a workload over its memory limit is OOM-killed and restarted (on-failure)', async () => {
    ok(
      await asAlice(
        ['workload', 'create', 'hog', '--image', IMAGE, '--memory', '16', '--restart', 'on-failure'],
        ['/bin/sh', '-c', 'echo filling; x=$(head -c 64m /dev/zero | tr "\\0" a); echo survived; sleep 1000'],
      ),
      'create hog',
    );
    const events = await eventually(
      'hog to be OOM-killed and restarted',
      async () => {
        const kinds = (await eventsOf('hog')).map((event) => event.kind);
        return kinds.includes('oom-killed') && kinds.includes('restarted') && kinds;
      },
      60_000,
    );
    assert.ok(events.indexOf('oom-killed') < events.lastIndexOf('restarted'), events.join(', '));
    const text = ok(await asAlice(['workload', 'events', 'hog']), 'events');
    assert.match(text.stdout, /Z {2}hog {2}oom-killed/);
  });

  test('revoking Alice destroys what she left on the node', async () => {
    ok(
      await sigil(['delegation', 'revoke', `${alice}/delegation.pem`, '--data', harness.server.dataDir]),
      'revoke alice',
    );
    await eventually(
      'hog to be destroyed by revocation',
      async () => {
        const result = await asAdmin(['workload', 'list', '--json']);
        if (result.code !== 0) return false;
        const names = (JSON.parse(result.stdout) as { workloads: { name: string }[] }).workloads.map(
          (w) => w.name,
        );
        return !names.some((name) => name.endsWith('hog'));
      },
      30_000,
    );
    const adminEvents = ok(await asAdmin(['workload', 'events', '--json']), 'admin events');
    const events = (JSON.parse(adminEvents.stdout) as { events: EventJson[] }).events;
    assert.ok(
      events.some((event) => event.workload.endsWith('hog') && event.kind === 'destroyed-by-revocation'),
      JSON.stringify(events.map((event) => `${event.workload} ${event.kind}`)),
    );
    // Alice herself can no longer call the node.
    const refused = await asAlice(['workload', 'list']);
    assert.equal(refused.code, 1, refused.stderr);
  });
});
