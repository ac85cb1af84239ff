// RUN as vminit runs it, with real processes: the build's ARG and ENV on top
// of vminit's environment, firebuild's `${VAR}`/`$VAR` expansion, the
// WORKDIR, the USER (nobody, 65534: these tests run as root), output line by
// line to the sink, and "command exited with code: N".
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are shell and Dockerfile text, not templates
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { parseBuildCommand, type RunCommand } from '../../src/guest/build-commands.ts';
import { expandBuildEnv } from '../../src/guest/build-env-expand.ts';
import { LineSplitter, type OutputSink, runBuildCommand, runScript } from '../../src/guest/command-runner.ts';

const asRoot = process.getuid?.() === 0 ? false : 'switching users needs root';

function scratch(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-run-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A RUN in firebuild's JSON, through the shared parser. */
function run(fields: {
  command: string;
  workdir: string;
  user?: string;
  args?: Record<string, string>;
  env?: Record<string, string>;
  shell?: string[];
}): RunCommand {
  const parsed = parseBuildCommand(
    JSON.stringify({
      OriginalCommand: `RUN ${fields.command}`,
      Args: fields.args ?? {},
      Command: fields.command,
      Env: fields.env ?? {},
      Shell: { OriginalCommand: '', Commands: fields.shell ?? ['/bin/sh', '-c'] },
      Workdir: { OriginalCommand: '', Value: fields.workdir },
      User: { OriginalCommand: '', Value: fields.user ?? '0:0' },
    }),
  );
  assert.equal(parsed.kind, 'run');
  return parsed.command as RunCommand;
}

/** A sink that keeps every line it is sent. */
function recordingSink(): OutputSink & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    stdout: async (lines) => void out.push(...lines),
    stderr: async (lines) => void err.push(...lines),
  };
}

const BASE_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin', FROM_VMINIT: 'inherited' };

describe('firebuild expansion of RUN commands', () => {
  test('known names are replaced, unknown ones left for the shell as written', () => {
    const values = { NAME: 'world', EMPTY: '', V1: 'one' };
    assert.equal(expandBuildEnv('hello $NAME and ${NAME}!', values), 'hello world and world!');
    assert.equal(expandBuildEnv('$UNKNOWN ${UNKNOWN} $EMPTY.', values), '$UNKNOWN ${UNKNOWN} .');
    assert.equal(expandBuildEnv('$V1x ${V1}x', values), '$V1x onex');
  });

  test("Go's edge cases: a lone $, ${}, an unclosed ${, special names", () => {
    assert.equal(expandBuildEnv('cost: 5$', {}), 'cost: 5$');
    assert.equal(expandBuildEnv('a $ b', {}), 'a $ b');
    assert.equal(expandBuildEnv('a${}b', {}), 'ab');
    assert.equal(expandBuildEnv('a${b', {}), 'ab');
    assert.equal(expandBuildEnv('$1 ${?} $$', { '1': 'first' }), 'first ${?} $$');
  });

  test('the script exports each build variable quoted, ENV over ARG, then the expanded command', () => {
    const command = run({
      command: 'echo ${GREETING} $WHO',
      workdir: '/',
      args: { WHO: 'arg', GREETING: 'hi' },
      env: { WHO: "it's me" },
    });
    assert.equal(runScript(command), "export WHO='it'\\''s me'\nexport GREETING=hi\necho hi it's me\n");
  });

  test('a variable name the shell cannot take is refused', () => {
    assert.throws(
      () => runScript(run({ command: 'true', workdir: '/', env: { 'BAD-NAME': 'x' } })),
      /BAD-NAME/,
    );
  });
});

describe('LineSplitter', () => {
  test('lines across chunks, a multi-byte character split between chunks, the last line without newline', () => {
    const splitter = new LineSplitter();
    const euro = Buffer.from('€');
    assert.deepEqual(splitter.push(Buffer.from('one\ntw')), ['one']);
    assert.deepEqual(splitter.push(Buffer.concat([Buffer.from('o '), euro.subarray(0, 1)])), []);
    assert.deepEqual(splitter.push(Buffer.concat([euro.subarray(1), Buffer.from('\nthree')])), ['two €']);
    assert.deepEqual(splitter.end(), ['three']);
  });
});

describe('runBuildCommand', () => {
  test("environment: vminit's own, ARG values, ENV values (ENV wins)", async (t) => {
    const sink = recordingSink();
    await runBuildCommand(
      run({
        command: 'printenv FROM_VMINIT ONLY_ARG BOTH SPACED',
        workdir: scratch(t),
        args: { ONLY_ARG: 'from arg', BOTH: 'arg' },
        env: { BOTH: 'env', SPACED: ' two  spaces "and quotes" ' },
      }),
      sink,
      { baseEnv: BASE_ENV },
    );
    assert.deepEqual(sink.out, ['inherited', 'from arg', 'env', ' two  spaces "and quotes" ']);
    assert.deepEqual(sink.err, []);
  });

  test('the command is expanded with the build variables before the shell reads it', async (t) => {
    const sink = recordingSink();
    await runBuildCommand(
      run({
        command: 'echo "${VERSION}-$SUFFIX-${NOT_A_BUILD_VAR:-shell}"',
        workdir: scratch(t),
        args: { VERSION: '1.2' },
        env: { SUFFIX: 'rc' },
      }),
      sink,
      { baseEnv: BASE_ENV },
    );
    assert.deepEqual(sink.out, ['1.2-rc-shell']);
  });

  test('runs in WORKDIR, creating it when missing', async (t) => {
    const workdir = join(scratch(t), 'made', 'by', 'run');
    const sink = recordingSink();
    await runBuildCommand(run({ command: 'pwd', workdir }), sink, { baseEnv: BASE_ENV });
    assert.deepEqual(sink.out, [workdir]);
  });

  test('runs as USER: numeric 65534, and the name nobody with its group from /etc/passwd', {
    skip: asRoot,
  }, async (t) => {
    const workdir = scratch(t);
    chmodSync(workdir, 0o755);
    const numeric = recordingSink();
    await runBuildCommand(run({ command: 'id -u; id -g; id -G', workdir, user: '65534' }), numeric, {
      baseEnv: BASE_ENV,
    });
    // A uid without a passwd group would be gid 0; nobody's entry says 65534. No supplementary groups remain.
    assert.deepEqual(numeric.out, ['65534', '65534', '65534']);
    const named = recordingSink();
    await runBuildCommand(run({ command: 'id -un; echo "$HOME"', workdir, user: 'nobody' }), named, {
      baseEnv: BASE_ENV,
    });
    assert.deepEqual(named.out, ['nobody', '/nonexistent']);
    const withGroup = recordingSink();
    await runBuildCommand(run({ command: 'id -u; id -g', workdir, user: '65534:0' }), withGroup, {
      baseEnv: BASE_ENV,
    });
    assert.deepEqual(withGroup.out, ['65534', '0']);
  });

  test('stdout and stderr go to the sink line by line, a last line without newline included', async (t) => {
    const sink = recordingSink();
    await runBuildCommand(
      run({
        command: "echo one; echo two >&2; echo three; printf 'four'; printf 'err-end' >&2",
        workdir: scratch(t),
      }),
      sink,
      { baseEnv: BASE_ENV },
    );
    assert.deepEqual(sink.out, ['one', 'three', 'four']);
    assert.deepEqual(sink.err, ['two', 'err-end']);
  });

  test('a non-zero exit is "command exited with code: N", after its output was sent', async (t) => {
    const sink = recordingSink();
    await assert.rejects(
      runBuildCommand(run({ command: 'echo before; exit 7', workdir: scratch(t) }), sink, {
        baseEnv: BASE_ENV,
      }),
      { message: 'command exited with code: 7' },
    );
    assert.deepEqual(sink.out, ['before']);
  });

  test('what the command leaves running in the background is stopped when it exits', async (t) => {
    const workdir = scratch(t);
    const sink = recordingSink();
    await runBuildCommand(
      run({ command: `(sleep 30; touch ${join(workdir, 'late')}) & echo started`, workdir }),
      sink,
      {
        baseEnv: BASE_ENV,
      },
    );
    assert.deepEqual(sink.out, ['started']);
    assert.equal(existsSync(join(workdir, 'late')), false);
  });

  test('the temp script is removed afterwards, also when the command fails', async (t) => {
    const scripts = scratch(t);
    const sink = recordingSink();
    await runBuildCommand(run({ command: 'true', workdir: scratch(t) }), sink, {
      baseEnv: BASE_ENV,
      scriptDirectory: scripts,
    });
    await assert.rejects(
      runBuildCommand(run({ command: 'false', workdir: scratch(t) }), sink, {
        baseEnv: BASE_ENV,
        scriptDirectory: scripts,
      }),
    );
    assert.deepEqual(readdirSync(scripts), []);
  });

  test('refused: a USER name the guest does not know; nothing runs', async (t) => {
    const workdir = scratch(t);
    const marker = join(workdir, 'ran');
    await assert.rejects(
      runBuildCommand(
        run({ command: `touch ${marker}`, workdir, user: 'no-such-user-here' }),
        recordingSink(),
        { baseEnv: BASE_ENV },
      ),
      /no-such-user-here.*not in the guest's \/etc\/passwd/,
    );
    assert.equal(existsSync(marker), false);
  });

  test('a shell that does not exist fails with its name', async (t) => {
    await assert.rejects(
      runBuildCommand(
        run({ command: 'true', workdir: scratch(t), shell: ['/no/such/shell', '-c'] }),
        recordingSink(),
        { baseEnv: BASE_ENV },
      ),
      /cannot start \/no\/such\/shell/,
    );
  });

  test('when the output cannot be sent the command is stopped and the RUN fails', async (t) => {
    const workdir = scratch(t);
    const sink: OutputSink = {
      stdout: async () => {
        throw new Error('peer gone');
      },
      stderr: async () => undefined,
    };
    await assert.rejects(
      runBuildCommand(
        run({ command: `echo first; sleep 30; touch ${join(workdir, 'late')}`, workdir }),
        sink,
        { baseEnv: BASE_ENV },
      ),
      /sending the command's output failed: peer gone/,
    );
    assert.equal(existsSync(join(workdir, 'late')), false);
  });
});
