// The namespaced process launcher against real namespaces and a busybox root
// filesystem: what the workload sees inside (PID 1, its hostname, only a
// loopback interface, its env, workdir and user), how its end is reported,
// that kill leaves no process behind, and every refusal before anything runs.
import assert from 'node:assert/strict';
import {
  existsSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { hostname as hostHostname } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, type TestContext, test } from 'node:test';
import {
  DEFAULT_PATH,
  type NamespacedProcess,
  type NamespaceProcessOptions,
  type ProcessExit,
  resolveInRoot,
  spawnInNamespaces,
} from '../../src/workloads/namespace-process.ts';
import { refusal } from '../support/refusals.ts';
import { answersFrom, busyboxRootfsFor, NOBODY, tempDirFor, workloadsUnavailable } from './rootfs-fixture.ts';

const unavailable = workloadsUnavailable();

/** Everything a stream carries until it ends ('' for none). */
async function textOf(stream: Readable | null): Promise<string> {
  if (!stream) return '';
  let text = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) text += chunk;
  return text;
}

interface Finished {
  stdout: string;
  stderr: string;
  exit: ProcessExit;
  process: NamespacedProcess;
}

/** Runs a workload to its end. */
async function run(options: NamespaceProcessOptions): Promise<Finished> {
  const process = await spawnInNamespaces(options);
  const [stdout, stderr, exit] = await Promise.all([
    textOf(process.stdout),
    textOf(process.stderr),
    process.exited,
  ]);
  return { stdout, stderr, exit, process };
}

/** Host PIDs of every process in the PID namespace `namespace` (as /proc/PID/ns/pid names it). */
function processesIn(namespace: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/pid`) === namespace) found.push(Number(entry));
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return found;
}

/** Reads `stream` until a line equal to `line` arrives. */
function untilLine(stream: Readable, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      if (buffered.split('\n').includes(line)) {
        stream.off('data', onData);
        resolve();
      }
    };
    stream.on('data', onData);
    stream.once('end', () => reject(new Error(`ended before ${JSON.stringify(line)}: ${buffered}`)));
  });
}

/** A started workload that is killed (if still running) when `t` ends. */
async function started(t: TestContext, options: NamespaceProcessOptions): Promise<NamespacedProcess> {
  const process = await spawnInNamespaces(options);
  t.after(async () => {
    process.kill('SIGKILL');
    await process.exited;
  });
  return process;
}

describe('a workload in its own namespaces', { concurrency: true }, () => {
  test('its program is PID 1 inside, and the host sees it as the launcher child', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const { stdout, exit, process } = await run({
      rootfs,
      hostname: 'web',
      command: ['/bin/sh', '-c', 'echo $$'],
    });
    assert.equal(stdout, '1\n');
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.notEqual(process.pid, process.launcherPid);
    assert.match(process.pidNamespace, /^pid:\[\d+\]$/);
    assert.notEqual(process.pidNamespace, readlinkSync('/proc/self/ns/pid'));
  });

  test('its hostname is the workload name, and the host keeps its own', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const before = hostHostname();
    const { stdout } = await run({ rootfs, hostname: 'web-1.example', command: ['/bin/hostname'] });
    assert.equal(stdout, 'web-1.example\n');
    assert.equal(hostHostname(), before);
  });

  test('it has its own network namespace holding only lo', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const { stdout } = await run({
      rootfs,
      hostname: 'net',
      command: ['/bin/sh', '-c', "ip -o link | cut -d: -f2 | tr -d ' '; echo --; tail -n +3 /proc/net/dev"],
    });
    const [links, devices] = stdout.split('--\n');
    assert.deepEqual(links.trim().split('\n'), ['lo']);
    assert.deepEqual(
      devices
        .trim()
        .split('\n')
        .map((line) => line.split(':')[0].trim()),
      ['lo'],
    );
  });

  test('loopbackUp brings lo up before the program runs; without it lo stays down', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const probe = ['/bin/sh', '-c', `${answersFrom('127.0.0.1')} && echo up || echo down`];
    const up = await run({ rootfs, hostname: 'lo', command: probe, loopbackUp: true });
    assert.equal(up.stdout.trim(), 'up');
    const down = await run({ rootfs, hostname: 'lo', command: probe });
    assert.equal(down.stdout.trim(), 'down');
  });

  test('no descriptor of the daemon above stderr reaches the workload, even without close-on-exec', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    // A pty from @lydell/node-pty's openpty: both descriptors lack close-on-exec.
    const { openPseudoTerminal } = await import('../../src/workloads/pseudo-terminal.ts');
    const terminal = openPseudoTerminal();
    t.after(() => terminal.close());
    const { stdout } = await run({ rootfs, hostname: 'fds', command: ['/bin/ls', '/proc/self/fd'] });
    // ls's own directory descriptor is the 3 it lists.
    assert.deepEqual(stdout.trim().split('\n').sort(), ['0', '1', '2', '3']);
  });

  test("with a pty and controllingTerminal, the terminal is the workload's controlling one", async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const { openPseudoTerminal } = await import('../../src/workloads/pseudo-terminal.ts');
    const terminal = openPseudoTerminal();
    t.after(() => terminal.close());
    let output = '';
    terminal.output.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    const fd = terminal.slaveFd;
    const process = await spawnInNamespaces({
      rootfs,
      hostname: 'tty',
      command: ['/bin/sh', '-c', 'cat /proc/self/stat; read x; echo "in:$x"'],
      stdio: { stdin: fd, stdout: fd, stderr: fd },
      controllingTerminal: true,
    });
    terminal.closeSlave();
    terminal.write(Buffer.from('typed\n'));
    assert.deepEqual(await process.exited, { code: 0, signal: null });
    await new Promise<void>((resolve) =>
      terminal.output.destroyed ? resolve() : terminal.output.once('close', resolve),
    );
    assert.match(output, /in:typed\r\n/);
    const stat = output.split('\r\n').find((line) => /^\d+ \(cat\)/.test(line)) ?? '';
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    assert.notEqual(fields[4] ?? '0', '0', `tty_nr of ${stat}`);
  });

  test('its PID, mount, UTS, IPC and network namespaces all differ from the host', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const process = await started(t, {
      rootfs,
      hostname: 'ns',
      command: ['/bin/sh', '-c', 'echo ready; exec sleep 1000'],
    });
    await untilLine(process.stdout!, 'ready'); // the init has become the workload: all namespaces are in place
    for (const kind of ['pid', 'mnt', 'uts', 'ipc', 'net']) {
      assert.notEqual(
        readlinkSync(`/proc/${process.pid}/ns/${kind}`),
        readlinkSync(`/proc/self/ns/${kind}`),
        `${kind} namespace is the host's`,
      );
    }
  });

  test('env, workdir and user are applied, PATH defaults, and nothing of the host leaks into env', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const { stdout } = await run({
      rootfs,
      hostname: 'env',
      command: ['/bin/env'],
      // SHLVL and PWD are the workload's to set: no shell of the launcher adds or changes them.
      env: { GREETING: 'hello world', EMPTY: '', SHLVL: '7', PWD: '/x' },
    });
    assert.deepEqual(stdout.trim().split('\n').sort(), [
      'EMPTY=',
      'GREETING=hello world',
      `PATH=${DEFAULT_PATH}`,
      'PWD=/x',
      'SHLVL=7',
    ]);

    const asNobody = await run({
      rootfs,
      hostname: 'user',
      command: ['/bin/sh', '-c', 'echo "$(id -u):$(id -g):$(id -G):$(pwd)"'],
      workdir: '/srv',
      user: 'nobody',
    });
    assert.equal(asNobody.stdout, `${NOBODY}:${NOBODY}:${NOBODY}:/srv\n`);

    const numeric = await run({
      rootfs,
      hostname: 'user',
      command: ['/bin/sh', '-c', 'echo "$(id -u):$(id -g)"'],
      user: '1000:1001',
    });
    assert.equal(numeric.stdout, '1000:1001\n');

    const byGroupName = await run({
      rootfs,
      hostname: 'user',
      command: ['/bin/sh', '-c', 'echo "$(id -u):$(id -g)"'],
      user: 'root:nogroup',
    });
    assert.equal(byGroupName.stdout, `0:${NOBODY}\n`);
  });

  test('stdin can be a pipe, and stderr is the workload s own stream', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const process = await spawnInNamespaces({
      rootfs,
      hostname: 'cat',
      command: ['/bin/sh', '-c', 'cat; echo oops >&2'],
      stdio: { stdin: 'pipe' },
    });
    process.stdin!.end('through the namespace\n');
    const [stdout, stderr, exit] = await Promise.all([
      textOf(process.stdout),
      textOf(process.stderr),
      process.exited,
    ]);
    assert.equal(stdout, 'through the namespace\n');
    assert.equal(stderr, 'oops\n');
    assert.deepEqual(exit, { code: 0, signal: null });
  });

  test('an exit code is reported as the program gave it', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    assert.deepEqual((await run({ rootfs, hostname: 'x', command: ['/bin/sh', '-c', 'exit 7'] })).exit, {
      code: 7,
      signal: null,
    });
    // 1 is also what unshare uses for its own SIGKILL trouble: a plain exit 1 must stay an exit code.
    assert.deepEqual((await run({ rootfs, hostname: 'x', command: ['/bin/false'] })).exit, {
      code: 1,
      signal: null,
    });
  });

  test('a signal the init handles reaches it', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const process = await started(t, {
      rootfs,
      hostname: 'trap',
      command: ['/bin/sh', '-c', 'trap "exit 3" TERM; echo ready; while :; do sleep 1 & wait $!; done'],
    });
    await untilLine(process.stdout!, 'ready');
    assert.equal(process.kill('SIGTERM'), true);
    assert.deepEqual(await process.exited, { code: 3, signal: null });
  });

  test('kill ends the namespace: SIGKILL is reported and no process of it is left', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    const process = await started(t, {
      rootfs,
      hostname: 'many',
      command: ['/bin/sh', '-c', 'sleep 1000 & sleep 1000 & echo ready; wait'],
    });
    await untilLine(process.stdout!, 'ready');
    assert.equal(processesIn(process.pidNamespace).length, 3, 'init and two sleeps');
    assert.equal(process.kill(), true);
    assert.deepEqual(await process.exited, { code: null, signal: 'SIGKILL' });
    assert.deepEqual(processesIn(process.pidNamespace), []);
    assert.equal(process.kill(), false, 'nothing left to signal');
  });

  test('onSpawned gets the init PID before the workload program runs', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    let seen: { pid: number; program: string } | undefined;
    const process = await started(t, {
      rootfs,
      hostname: 'hook',
      command: ['/bin/sleep', '1000'],
      onSpawned: (pid) => {
        seen = { pid, program: readlinkSync(`/proc/${pid}/exe`) };
      },
    });
    assert.equal(seen?.pid, process.pid);
    // Still the host's shell (bash) waiting for the go-ahead, not the image's busybox.
    assert.equal(seen?.program, realpathSync('/bin/bash'));
  });

  test('a throwing onSpawned stops the launch and leaves no process', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    let namespace = '';
    await assert.rejects(
      spawnInNamespaces({
        rootfs,
        hostname: 'hook',
        command: ['/bin/sleep', '1000'],
        onSpawned: (pid) => {
          namespace = readlinkSync(`/proc/${pid}/ns/pid`);
          throw new Error('cgroup refused');
        },
      }),
      /cgroup refused/,
    );
    assert.match(namespace, /^pid:/);
    assert.deepEqual(processesIn(namespace), []);
  });
});

describe('refusals before anything starts', { concurrency: true }, () => {
  const base = (rootfs: string): NamespaceProcessOptions => ({
    rootfs,
    hostname: 'web',
    command: ['/bin/true'],
  });

  test('a missing root filesystem', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const dir = tempDirFor(t, 'sigil-missing-');
    await assert.rejects(
      spawnInNamespaces(base(join(dir, 'nope'))),
      refusal('not_found', /rootfs .*no such/),
    );
  });

  test('a relative root filesystem path', async () => {
    await assert.rejects(spawnInNamespaces(base('images/x')), refusal('invalid_argument', /absolute/));
  });

  test('a root filesystem that is a file', async (t) => {
    const dir = tempDirFor(t, 'sigil-file-');
    writeFileSync(join(dir, 'f'), '');
    await assert.rejects(
      spawnInNamespaces(base(join(dir, 'f'))),
      refusal('invalid_argument', /not a directory/),
    );
  });

  test('a root filesystem without /proc', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    rmSync(join(rootfs, 'proc'), { recursive: true });
    await assert.rejects(spawnInNamespaces(base(rootfs)), refusal('failed_precondition', /no \/proc/));
  });

  test('an empty or relative command', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), command: [] }),
      refusal('invalid_argument', /must name a program/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), command: ['sh', '-c', 'true'] }),
      refusal('invalid_argument', /command "sh": must be an absolute path/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), command: ['/bin/../../bin/sh'] }),
      refusal('invalid_argument', /must not contain '\.\.'/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), command: ['/bin/echo', 'a\0b'] }),
      refusal('invalid_argument', /NUL/),
    );
  });

  test('a command the root filesystem does not have, or cannot execute', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), command: ['/bin/nope'] }),
      refusal('not_found', /command "\/bin\/nope": not found/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), command: ['/etc/passwd'] }),
      refusal('invalid_argument', /not an executable file/),
    );
  });

  test('a command symlink is followed inside the root filesystem, never onto the host', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    // /usr/bin/unshare exists on the host but not in the image: the workload could not run it.
    symlinkSync('/usr/bin/unshare', join(rootfs, 'bin', 'host-only'));
    symlinkSync('../../../../../../usr/bin/unshare', join(rootfs, 'bin', 'climbing'));
    for (const program of ['/bin/host-only', '/bin/climbing']) {
      await assert.rejects(
        spawnInNamespaces({ ...base(rootfs), command: [program] }),
        refusal('not_found', /not found in the root filesystem/),
      );
    }
    assert.equal(resolveInRoot(rootfs, '/bin/sh')?.hostPath, join(rootfs, 'bin', 'busybox'));
  });

  test('invalid env names, host loader variables and NUL values', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    for (const name of ['1BAD', 'A=B', 'WITH SPACE', '', 'X'.repeat(300)]) {
      await assert.rejects(
        spawnInNamespaces({ ...base(rootfs), env: { [name]: 'v' } }),
        refusal('invalid_argument', /^env .*a name is/),
      );
    }
    for (const name of ['LD_PRELOAD', 'LD_LIBRARY_PATH', 'GLIBC_TUNABLES', 'GCONV_PATH']) {
      await assert.rejects(
        spawnInNamespaces({ ...base(rootfs), env: { [name]: '/x' } }),
        refusal('invalid_argument', /host's dynamic loader/),
      );
    }
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), env: { A: 'x\0y' } }),
      refusal('invalid_argument', /env A: the value contains a NUL/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), env: { A: 'x'.repeat(40_000) } }),
      refusal('invalid_argument', /env A: the value is longer/),
    );
  });

  test('a workdir outside the root filesystem, missing or not a directory', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), workdir: '/../etc' }),
      refusal('invalid_argument', /workdir .*must not contain '\.\.'/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), workdir: 'srv' }),
      refusal('invalid_argument', /workdir "srv": must be an absolute path/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), workdir: '/nope' }),
      refusal('not_found', /workdir "\/nope": no such directory/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), workdir: '/etc/passwd' }),
      refusal('invalid_argument', /not a directory/),
    );
  });

  test('an unknown or malformed user or group', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), user: 'alice' }),
      refusal('not_found', /user "alice": not in the root filesystem's \/etc\/passwd/),
    );
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), user: 'root:wheel' }),
      refusal('not_found', /group "wheel"/),
    );
    for (const user of ['a:b:c', '', '-1', 'root:', '../etc']) {
      await assert.rejects(
        spawnInNamespaces({ ...base(rootfs), user }),
        refusal('invalid_argument', /expected uid\[:gid\]/),
      );
    }
    await assert.rejects(
      spawnInNamespaces({ ...base(rootfs), user: '4294967295' }),
      refusal('invalid_argument', /above/),
    );
  });

  test('an /etc/passwd symlink is followed inside the root filesystem, not on the host', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    assert.equal(
      existsSync('/srv/passwd'),
      false,
      'the host must not have /srv/passwd for this test to mean anything',
    );
    writeFileSync(join(rootfs, 'srv', 'passwd'), 'imageuser:x:4242:4343::/:/bin/sh\n');
    rmSync(join(rootfs, 'etc', 'passwd'));
    symlinkSync('/srv/passwd', join(rootfs, 'etc', 'passwd'));
    const { stdout } = await run({
      rootfs,
      hostname: 'user',
      command: ['/bin/sh', '-c', 'echo "$(id -u):$(id -g)"'],
      user: 'imageuser',
    });
    assert.equal(stdout, '4242:4343\n');
  });

  test('an invalid hostname', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rootfs = busyboxRootfsFor(t);
    for (const hostname of ['', '-web', 'web_1', 'a'.repeat(65), 'web\n', 'a..b']) {
      await assert.rejects(
        spawnInNamespaces({ ...base(rootfs), hostname }),
        refusal('invalid_argument', /hostname .*RFC 1123/),
      );
    }
  });
});
