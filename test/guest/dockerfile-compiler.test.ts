// Dockerfile → firebuild build commands and image metadata: the commands'
// exact JSON (what the guest receives), the state ARG/ENV/USER/WORKDIR/SHELL
// carry, VOLUME's mkdir, the final image's configuration, and every refusal
// naming its instruction and line.
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile text is full of ${VAR}, never a template
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type BuildCommand,
  parseBuildCommand,
  serializeBuildCommand,
} from '../../src/guest/build-commands.ts';
import { compileDockerfile, MAX_DOCKERFILE_BYTES } from '../../src/guest/dockerfile-compiler.ts';
import type { CompiledDockerfile, ImageMetadata } from '../../src/guest/dockerfile-image.ts';
import { entrypointJson, rootfsMetadata } from '../../src/guest/dockerfile-metadata.ts';
import { refusal } from '../support/refusals.ts';

const MULTI_STAGE = `# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
ARG BASE=acme/base:1

FROM golang/go:\${GO_VERSION} AS builder
ARG TARGET=app
ENV CGO_ENABLED=0 OUT=/out/\${TARGET}
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -o "$OUT" ./cmd/\${TARGET}

FROM \${BASE}
LABEL org.opencontainers.image.title="demo app"
ENV APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY --from=builder --chown=app:app /out/app bin/
USER app
VOLUME ["/data"]
EXPOSE 8080 53/udp
ENTRYPOINT ["/srv/app/bin/app"]
CMD ["--listen", ":8080"]
`;

/** The JSON the guest receives for each command of a stage. */
function jsonOf(compiled: CompiledDockerfile, stage: number): unknown[] {
  return compiled.stages[stage].commands.map((command) => JSON.parse(serializeBuildCommand(command)));
}

function onlyStage(text: string, buildArgs?: Record<string, string>) {
  const compiled = compileDockerfile(text, { buildArgs });
  assert.equal(compiled.stages.length, 1);
  return compiled.stages[0];
}

function runs(commands: readonly BuildCommand[]) {
  return commands.flatMap((command) => (command.kind === 'run' ? [command.command] : []));
}

function copies(commands: readonly BuildCommand[]) {
  return commands.flatMap((command) => (command.kind === 'copy' ? [command.command] : []));
}

const DEFAULT_SHELL = { OriginalCommand: '', Commands: ['/bin/sh', '-c'] };
const ROOT = { OriginalCommand: '', Value: '0:0' };

describe('compiling a multi-stage Dockerfile', () => {
  const compiled = compileDockerfile(MULTI_STAGE, { buildArgs: { TARGET: 'server' } });

  test('returns each stage with its name, index and base', () => {
    assert.deepEqual(
      compiled.stages.map(({ name, index, from }) => ({ name, index, from })),
      [
        { name: 'builder', index: 0, from: { kind: 'image', reference: 'golang/go:1.22' } },
        { name: '1', index: 1, from: { kind: 'image', reference: 'acme/base:1' } },
      ],
    );
  });

  test('the builder stage: one COPY per source, then RUN with Args, Env and the WORKDIR', () => {
    const srcWorkdir = { OriginalCommand: 'WORKDIR /src', Value: '/src' };
    assert.deepEqual(jsonOf(compiled, 0), [
      {
        OriginalCommand: 'COPY go.mod go.sum ./',
        OriginalSource: 'go.mod',
        Source: 'go.mod',
        Target: './',
        Workdir: srcWorkdir,
        User: ROOT,
        UserFromLocalChown: null,
        Stage: '',
      },
      {
        OriginalCommand: 'COPY go.mod go.sum ./',
        OriginalSource: 'go.sum',
        Source: 'go.sum',
        Target: './',
        Workdir: srcWorkdir,
        User: ROOT,
        UserFromLocalChown: null,
        Stage: '',
      },
      {
        OriginalCommand: 'RUN go mod download',
        Args: { TARGET: 'server' },
        Command: 'go mod download',
        Env: { CGO_ENABLED: '0', OUT: '/out/server' },
        Shell: DEFAULT_SHELL,
        Workdir: srcWorkdir,
        User: ROOT,
      },
      {
        OriginalCommand: 'COPY . .',
        OriginalSource: '.',
        Source: '.',
        Target: '.',
        Workdir: srcWorkdir,
        User: ROOT,
        UserFromLocalChown: null,
        Stage: '',
      },
      {
        // RUN text is left for the guest to expand with Args and Env.
        OriginalCommand: 'RUN go build -o "$OUT" ./cmd/${TARGET}',
        Args: { TARGET: 'server' },
        Command: 'go build -o "$OUT" ./cmd/${TARGET}',
        Env: { CGO_ENABLED: '0', OUT: '/out/server' },
        Shell: DEFAULT_SHELL,
        Workdir: srcWorkdir,
        User: ROOT,
      },
    ]);
  });

  test('the final stage: COPY --from with --chown, then VOLUME as a mkdir RUN', () => {
    const appWorkdir = { OriginalCommand: 'WORKDIR $APP_HOME', Value: '/srv/app' };
    assert.deepEqual(jsonOf(compiled, 1), [
      {
        OriginalCommand: 'COPY --from=builder --chown=app:app /out/app bin/',
        OriginalSource: '/out/app',
        Source: '/out/app',
        Target: 'bin/',
        Workdir: appWorkdir,
        User: ROOT,
        UserFromLocalChown: {
          OriginalCommand: 'COPY --from=builder --chown=app:app /out/app bin/',
          Value: 'app:app',
        },
        Stage: 'builder',
      },
      {
        OriginalCommand: "RUN mkdir -p '/data'",
        Args: {},
        Command: "mkdir -p '/data'",
        Env: {},
        Shell: DEFAULT_SHELL,
        Workdir: appWorkdir,
        User: ROOT,
      },
    ]);
  });

  test('every command round-trips through the guest-side parser', () => {
    for (const stage of compiled.stages) {
      stage.commands.forEach((command, index) => {
        assert.deepEqual(parseBuildCommand(serializeBuildCommand(command), index), command);
      });
    }
  });

  test("the image metadata is the final stage's configuration", () => {
    assert.deepEqual(compiled.metadata, {
      entrypoint: {
        Cmd: ['--listen', ':8080'],
        EntryPoint: ['/srv/app/bin/app'],
        Env: { APP_HOME: '/srv/app' },
        Shell: ['/bin/sh', '-c'],
        User: 'app',
        Workdir: '/srv/app',
      },
      env: { APP_HOME: '/srv/app' },
      labels: { 'org.opencontainers.image.title': 'demo app' },
      ports: ['8080', '53/udp'],
      volumes: ['/data'],
      user: 'app',
      workdir: '/srv/app',
      shell: ['/bin/sh', '-c'],
      stopSignal: null,
    } satisfies ImageMetadata);
    assert.deepEqual(compiled.stages[1].metadata, compiled.metadata);
  });

  test("firebuild's MDRootfs metadata and EntrypointJSON", () => {
    const metadata = rootfsMetadata(compiled.metadata, {
      tag: 'acme/demo:1.0',
      dockerfile: 'Dockerfile',
      buildArgs: { TARGET: 'server' },
      createdAtUtc: 1_700_000_000,
    });
    assert.deepEqual(JSON.parse(JSON.stringify(metadata)), {
      BuildConfig: {
        BuildArgs: { TARGET: 'server' },
        Dockerfile: 'Dockerfile',
        DockerImage: '',
        DockerImageBase: '',
        PreBuildCommands: [],
        PostBuildCommands: [],
      },
      CreatedAtUTC: 1_700_000_000,
      EntrypointInfo: compiled.metadata.entrypoint,
      Image: { Org: 'acme', Image: 'demo', Version: '1.0' },
      Labels: { 'org.opencontainers.image.title': 'demo app' },
      Parent: null,
      Ports: ['8080', '53/udp'],
      Tag: 'acme/demo:1.0',
      Type: 'rootfs',
      Volumes: ['/data'],
    });
    assert.equal(
      entrypointJson(compiled.metadata.entrypoint),
      '{"Cmd":["--listen",":8080"],"EntryPoint":["/srv/app/bin/app"],"Env":{"APP_HOME":"/srv/app"},' +
        '"Shell":["/bin/sh","-c"],"User":"app","Workdir":"/srv/app"}',
    );
  });
});

describe('ARG and ENV', () => {
  test('an ARG before FROM sets the base; a --build-arg overrides it; a bare ARG in the stage takes it', () => {
    const text = 'ARG TAG=1\nFROM acme/base:${TAG}\nARG TAG\nRUN echo\n';
    assert.deepEqual(onlyStage(text).from, { kind: 'image', reference: 'acme/base:1' });
    const stage = onlyStage(text, { TAG: '2' });
    assert.deepEqual(stage.from, { kind: 'image', reference: 'acme/base:2' });
    assert.deepEqual(runs(stage.commands)[0].Args, { TAG: '2' });
  });

  test('a global ARG is not in scope inside a stage until declared there', () => {
    const stage = onlyStage('ARG V=1\nFROM scratch\nENV A=[$V]\nARG V\nENV B=[$V]\n');
    assert.deepEqual(stage.from, { kind: 'scratch' });
    assert.deepEqual(stage.metadata.env, { A: '[]', B: '[1]' });
  });

  test('an ARG without a value and no --build-arg is unset; with one it is set', () => {
    const text = 'FROM scratch\nARG MODE\nRUN make\n';
    assert.deepEqual(runs(onlyStage(text).commands)[0].Args, {});
    assert.deepEqual(runs(onlyStage(text, { MODE: 'fast' }).commands)[0].Args, { MODE: 'fast' });
  });

  test('ENV expands ${VAR}, $VAR, defaults and alternatives, honouring quotes and escapes', () => {
    const text = [
      'FROM scratch',
      'ARG NAME=world',
      'ENV GREETING="hello $NAME" RAW=\'$NAME\' ESCAPED=\\$NAME BRACED=${NAME}s',
      'ENV DEFAULTED=${MISSING:-fallback} ALTERNATE=${NAME:+set} EMPTY=${MISSING:+set}',
      'ENV SPACED=a\\ b',
    ].join('\n');
    assert.deepEqual(onlyStage(text).metadata.env, {
      GREETING: 'hello world',
      RAW: '$NAME',
      ESCAPED: '$NAME',
      BRACED: 'worlds',
      DEFAULTED: 'fallback',
      ALTERNATE: 'set',
      EMPTY: '',
      SPACED: 'a b',
    });
  });

  test('the values of one ENV see the variables as they were before it (as Docker)', () => {
    const stage = onlyStage('FROM scratch\nENV A=old\nENV A=new B=$A\n');
    assert.deepEqual(stage.metadata.env, { A: 'new', B: 'old' });
  });

  test('ENV wins over an ARG of the same name in expansion; RUN carries both', () => {
    const stage = onlyStage('FROM scratch\nARG X=arg\nENV X=env\nWORKDIR /$X\nRUN echo $X\n');
    assert.equal(stage.metadata.workdir, '/env');
    const run = runs(stage.commands)[0];
    assert.deepEqual(run.Args, { X: 'arg' });
    assert.deepEqual(run.Env, { X: 'env' });
  });

  test('COPY sources and destination are expanded; OriginalSource keeps what was written', () => {
    const copy = copies(
      onlyStage('FROM scratch\nARG DIR=conf\nCOPY ${DIR}/app.ini /etc/$DIR/\n').commands,
    )[0];
    assert.equal(copy.OriginalSource, '${DIR}/app.ini');
    assert.equal(copy.Source, 'conf/app.ini');
    assert.equal(copy.Target, '/etc/conf/');
  });

  test('a `# escape=` directive switches the escape character', () => {
    const stage = onlyStage('# escape=`\nFROM scratch\nENV A=`$HOME B="c:\\dir"\n');
    assert.deepEqual(stage.metadata.env, { A: '$HOME', B: 'c:\\dir' });
  });
});

describe('WORKDIR, USER, SHELL, CMD, ENTRYPOINT', () => {
  test('a relative WORKDIR is joined to the current one and normalized', () => {
    const stage = onlyStage('FROM scratch\nWORKDIR app\nWORKDIR src/\nWORKDIR ../lib\nRUN pwd\n');
    assert.equal(stage.metadata.workdir, '/app/lib');
    assert.deepEqual(runs(stage.commands)[0].Workdir, {
      OriginalCommand: 'WORKDIR ../lib',
      Value: '/app/lib',
    });
  });

  test('USER applies to later RUNs and COPYs; --chown is expanded and carried separately', () => {
    const stage = onlyStage(
      'FROM scratch\nARG UID=1000\nRUN id\nUSER $UID:100\nRUN id\nCOPY --chown=${UID} a /a\n',
    );
    const [before, after] = runs(stage.commands);
    assert.equal(before.User.Value, '0:0');
    assert.deepEqual(after.User, { OriginalCommand: 'USER $UID:100', Value: '1000:100' });
    const copy = copies(stage.commands)[0];
    assert.equal(copy.User.Value, '1000:100');
    assert.deepEqual(copy.UserFromLocalChown, { OriginalCommand: 'COPY --chown=${UID} a /a', Value: '1000' });
  });

  test('SHELL changes the shell of later RUNs', () => {
    const stage = onlyStage('FROM scratch\nSHELL ["/bin/bash", "-eu", "-c"]\nRUN echo\n');
    assert.deepEqual(runs(stage.commands)[0].Shell, {
      OriginalCommand: 'SHELL ["/bin/bash", "-eu", "-c"]',
      Commands: ['/bin/bash', '-eu', '-c'],
    });
    assert.deepEqual(stage.metadata.shell, ['/bin/bash', '-eu', '-c']);
  });

  test('an exec-form RUN becomes one shell-quoted command line', () => {
    const stage = onlyStage('FROM scratch\nRUN ["/bin/echo", "two  words", "it\'s", "$HOME"]\n');
    assert.equal(runs(stage.commands)[0].Command, "/bin/echo 'two  words' 'it'\\''s' '$HOME'");
  });

  test('a shell-form RUN keeps its text, continuation lines joined', () => {
    const stage = onlyStage('FROM scratch\nRUN apk add \\\n    curl && echo done\n');
    assert.equal(runs(stage.commands)[0].Command, 'apk add     curl && echo done');
  });

  test('CMD and ENTRYPOINT: exec form as elements, shell form as one element; STOPSIGNAL recorded', () => {
    const stage = onlyStage('FROM scratch\nENTRYPOINT exec /app --flag\nCMD ["a b"]\nSTOPSIGNAL SIGQUIT\n');
    assert.deepEqual(stage.metadata.entrypoint.EntryPoint, ['exec /app --flag']);
    assert.deepEqual(stage.metadata.entrypoint.Cmd, ['a b']);
    assert.equal(stage.metadata.stopSignal, 'SIGQUIT');
  });

  test('a stage FROM an earlier one inherits its configuration; its ENTRYPOINT empties the inherited CMD', () => {
    const compiled = compileDockerfile(
      'FROM scratch AS base\nENV A=1\nWORKDIR /w\nUSER u\nCMD ["x"]\nFROM base\nENTRYPOINT ["/e"]\nRUN true\n',
    );
    const last = compiled.stages[1];
    assert.deepEqual(last.from, { kind: 'stage', name: 'base', index: 0 });
    assert.deepEqual(compiled.metadata.env, { A: '1' });
    assert.equal(compiled.metadata.workdir, '/w');
    assert.equal(compiled.metadata.user, 'u');
    assert.deepEqual(compiled.metadata.entrypoint.Cmd, []);
    const run = runs(last.commands)[0];
    assert.deepEqual([run.Env, run.Workdir.Value, run.User.Value], [{ A: '1' }, '/w', 'u']);
  });

  test("an image's configuration, when the caller supplies it, is the stage's start", () => {
    const compiled = compileDockerfile('FROM acme/base:1\nENV PATH=/app/bin:$PATH\n', {
      imageConfig: (reference) =>
        reference === 'acme/base:1'
          ? { ...compileDockerfile('FROM scratch\nENV PATH=/usr/bin:/bin\n').metadata, workdir: '/home' }
          : undefined,
    });
    assert.deepEqual(compiled.metadata.env, { PATH: '/app/bin:/usr/bin:/bin' });
    assert.equal(compiled.metadata.workdir, '/home');
  });
});

describe('VOLUME, EXPOSE, LABEL, COPY --from', () => {
  test('each VOLUME path is a mkdir RUN as root in the current WORKDIR, and a volume in the metadata', () => {
    const stage = onlyStage(
      'FROM scratch\nWORKDIR /srv\nUSER app\nVOLUME /var/lib/db rel "it\'s"\nVOLUME ["/x y"]\n',
    );
    assert.deepEqual(
      runs(stage.commands).map((run) => [
        run.OriginalCommand,
        run.Command,
        run.User.Value,
        run.Workdir.Value,
      ]),
      [
        ["RUN mkdir -p '/var/lib/db'", "mkdir -p '/var/lib/db'", '0:0', '/srv'],
        ["RUN mkdir -p '/srv/rel'", "mkdir -p '/srv/rel'", '0:0', '/srv'],
        ["RUN mkdir -p '/srv/it'\\''s'", "mkdir -p '/srv/it'\\''s'", '0:0', '/srv'],
        ["RUN mkdir -p '/x y'", "mkdir -p '/x y'", '0:0', '/srv'],
      ],
    );
    assert.deepEqual(stage.metadata.volumes, ['/var/lib/db', '/srv/rel', "/srv/it's", '/x y']);
  });

  test('EXPOSE keeps ports in order without duplicates; LABEL values are expanded', () => {
    const stage = onlyStage('FROM scratch\nARG P=80\nEXPOSE $P 443/TCP\nEXPOSE 80\nLABEL "a b"=$P c=d\n');
    assert.deepEqual(stage.metadata.ports, ['80', '443/tcp']);
    assert.deepEqual(stage.metadata.labels, { 'a b': '80', c: 'd' });
  });

  test('COPY --from by index names the stage; an unnamed stage is named by its index', () => {
    const compiled = compileDockerfile(
      'FROM scratch\nRUN a\nFROM scratch AS two\nCOPY --from=0 /x /y\nFROM scratch\nCOPY --from=TWO /x /y\n',
    );
    assert.equal(copies(compiled.stages[1].commands)[0].Stage, '0');
    assert.equal(copies(compiled.stages[2].commands)[0].Stage, 'two');
  });

  test('ADD of a local file is an ADD command (no archive extraction)', () => {
    const stage = onlyStage('FROM scratch\nADD --chown=1:1 app.tar.gz /opt/\n');
    assert.equal(stage.commands[0].kind, 'add');
    assert.deepEqual(JSON.parse(serializeBuildCommand(stage.commands[0])), {
      OriginalCommand: 'ADD --chown=1:1 app.tar.gz /opt/',
      OriginalSource: 'app.tar.gz',
      Source: 'app.tar.gz',
      Target: '/opt/',
      Workdir: { OriginalCommand: '', Value: '/' },
      User: ROOT,
      UserFromLocalChown: { OriginalCommand: 'ADD --chown=1:1 app.tar.gz /opt/', Value: '1:1' },
    });
  });
});

describe('refusals', () => {
  const refuses = (text: string, pattern: RegExp) =>
    assert.throws(() => compileDockerfile(text), refusal('invalid_argument', pattern));

  test('ADD with an http URL is refused naming the line', () => {
    refuses(
      'FROM scratch\nRUN true\nADD http://example.com/a.tgz /a\n',
      /^Dockerfile line 3: ADD: remote sources/,
    );
  });

  test('ADD with an https URL is refused', () => {
    refuses('FROM scratch\nADD https://example.com/a /a\n', /^Dockerfile line 2: ADD: remote sources/);
  });

  test('ADD with a git URL is refused', () => {
    refuses('FROM scratch\nADD git@github.com:acme/x.git /x\n', /^Dockerfile line 2: ADD: remote sources/);
    refuses('FROM scratch\nADD git://example.com/x.git /x\n', /^Dockerfile line 2: ADD: remote sources/);
  });

  test('ONBUILD is refused', () => {
    refuses('FROM scratch\nONBUILD RUN echo\n', /^Dockerfile line 2: ONBUILD is not supported/);
  });

  test('HEALTHCHECK is refused', () => {
    refuses(
      'FROM scratch\n\nHEALTHCHECK CMD curl -f http://localhost/\n',
      /^Dockerfile line 3: HEALTHCHECK is not supported/,
    );
  });

  test('an unknown instruction is refused', () => {
    refuses('FROM scratch\nFETCH http://x\n', /^Dockerfile line 2: FETCH: unknown instruction$/);
  });

  test('COPY --from naming an unknown stage is refused', () => {
    refuses(
      'FROM scratch\nCOPY --from=nginx:latest /etc/nginx /etc/nginx\n',
      /^Dockerfile line 2: COPY: --from=nginx:latest names no stage/,
    );
  });

  test('COPY --from naming a later stage is refused', () => {
    refuses(
      'FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\n',
      /^Dockerfile line 2: COPY: --from=b names this or a later stage/,
    );
    refuses(
      'FROM scratch\nCOPY --from=1 /x /x\nFROM scratch\n',
      /^Dockerfile line 2: COPY: --from=1 names this or a later stage/,
    );
  });

  test('COPY --from naming its own stage is refused', () => {
    refuses(
      'FROM scratch AS a\nCOPY --from=a /x /x\n',
      /^Dockerfile line 2: COPY: --from=a names this or a later stage/,
    );
  });

  test('a Dockerfile without FROM is refused', () => {
    refuses('ARG A=1\n', /^Dockerfile: no FROM instruction$/);
  });

  test('an instruction before the first FROM is refused', () => {
    refuses('RUN true\nFROM scratch\n', /^Dockerfile line 1: RUN: only ARG may come before the first FROM$/);
  });

  test('an empty Dockerfile is refused', () => {
    refuses('', /^Dockerfile: empty/);
    refuses('# only a comment\n\n', /^Dockerfile: empty/);
  });

  test('a Dockerfile over 1 MiB is refused before parsing', () => {
    const text = `FROM scratch\n${'#'.repeat(MAX_DOCKERFILE_BYTES)}\n`;
    refuses(text, new RegExp(`^Dockerfile: larger than ${MAX_DOCKERFILE_BYTES} bytes$`));
  });

  test('RUN flags (--mount, --network) are refused', () => {
    refuses(
      'FROM scratch\nRUN --mount=type=cache,target=/c make\n',
      /^Dockerfile line 2: RUN: --mount is not supported$/,
    );
  });

  test('here-documents are refused', () => {
    refuses('FROM scratch\nCOPY <<EOF /x\nhello\nEOF\n', /^Dockerfile line 2: COPY: here-documents/);
  });

  test('COPY --chmod is refused', () => {
    refuses('FROM scratch\nCOPY --chmod=755 a /a\n', /^Dockerfile line 2: COPY: --chmod is not supported$/);
  });

  test('several sources into a destination without a trailing slash are refused', () => {
    refuses(
      'FROM scratch\nCOPY a b /dst\n',
      /^Dockerfile line 2: COPY: with more than one source the destination must end with '\/'$/,
    );
  });

  test('SHELL in shell form is refused', () => {
    refuses('FROM scratch\nSHELL /bin/bash -c\n', /^Dockerfile line 2: SHELL: must be written in JSON form/);
  });

  test('an unterminated quote is refused', () => {
    refuses('FROM scratch\nENV A="open\n', /^Dockerfile line 2: ENV: unmatched "/);
  });

  test('FROM --platform is refused', () => {
    refuses(
      'FROM --platform=linux/arm64 scratch\n',
      /^Dockerfile line 1: FROM: --platform is not supported$/,
    );
  });
});
