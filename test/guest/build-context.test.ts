// The build context as ADD/COPY resources, on real files and symlinks: a
// file, a directory walk, a glob, .dockerignore, a stage root for
// `COPY --from`, the resolver bound to a command list, and the refusals for
// paths that leave the root ('..', absolute, symlinks to a file or a
// directory outside), each checking nothing outside was served or changed.
import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ResourceEntry } from '../../src/guest/build-commands.ts';
import { BuildContext, GO_MODE_DIR, type ResourceTarget } from '../../src/guest/build-context.ts';
import { compileDockerfile } from '../../src/guest/dockerfile-compiler.ts';
import { DockerIgnore } from '../../src/guest/dockerignore.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const TARGET: ResourceTarget = { targetPath: '/dst/', targetWorkdir: '/work', targetUser: '1000:1000' };
const SECRET = 'outside secret: never served\n';

function write(path: string, text: string, mode = 0o644): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  chmodSync(path, mode);
}

/** A context with ignored files, symlinks inside and (unless `escapes` is false) out, and a directory outside it. */
function makeContext({ escapes = true } = {}) {
  const base = tempDir('sigil-context-');
  const outside = join(base, 'outside');
  write(join(outside, 'secret.txt'), SECRET);
  write(join(outside, 'dir', 'secret2.txt'), SECRET);
  const context = join(base, 'context');
  write(join(context, 'Dockerfile'), 'FROM scratch\n');
  write(join(context, 'a.txt'), 'alpha\n', 0o640);
  write(join(context, 'b.txt'), 'bravo\n');
  write(join(context, 'notes.md'), 'notes\n');
  write(join(context, 'sub', 'c.txt'), 'charlie\n', 0o755);
  write(join(context, 'sub', 'deep', 'd.txt'), 'delta\n');
  write(join(context, 'sub', 'deep', 'ignored.txt'), 'ignored\n');
  write(join(context, 'sub', 'tmp', 't.txt'), 'temporary\n');
  chmodSync(join(context, 'sub'), 0o750);
  write(join(context, 'x.log'), 'log\n');
  write(join(context, 'keep.log'), 'kept log\n');
  write(join(context, 'secret', 's.txt'), 'excluded\n');
  write(join(context, 'build', 'out.bin'), 'binary\n');
  write(
    join(context, '.dockerignore'),
    '# comments are skipped\n*.log\n!keep.log\nsecret/\n/build\n**/tmp\nsub/deep/ignored.txt\n',
  );
  symlinkSync('a.txt', join(context, 'link-inside'));
  symlinkSync('sub', join(context, 'link-dir-inside'));
  if (escapes) {
    symlinkSync('../outside/secret.txt', join(context, 'escape-file'));
    symlinkSync(join(outside, 'dir'), join(context, 'escape-dir'));
    write(join(context, 'mixed', 'ok.txt'), 'fine\n');
    symlinkSync('../../outside/secret.txt', join(context, 'mixed', 'bad'));
  }
  const stageRoot = join(base, 'stage-root');
  write(join(stageRoot, 'out', 'app'), '#!/bin/sh\necho app\n', 0o755);
  return { base, outside, context, stageRoot };
}

async function contentOf(entry: ResourceEntry): Promise<string> {
  assert.ok(entry.read, `${entry.sourcePath} has no read()`);
  const chunks: Buffer[] = [];
  for await (const chunk of entry.read()) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

const shape = (entries: readonly ResourceEntry[] | null) =>
  entries?.map((entry) => [entry.sourcePath, entry.targetPath, entry.isDir]) ?? null;

/** The outside files' bytes and times, to show a refusal changed nothing there. */
function outsideState(outside: string) {
  return ['secret.txt', 'dir/secret2.txt'].map((name) => {
    const path = join(outside, name);
    const stats = statSync(path);
    return [readFileSync(path, 'utf8'), stats.mtimeMs, stats.mode];
  });
}

describe('serving the build context', () => {
  test('a file: one entry with its mode, the target from the command, and its bytes', async () => {
    const { context } = makeContext();
    const build = await BuildContext.open(context);
    const entries = await build.entries('a.txt', '', TARGET);
    assert.equal(entries?.length, 1);
    const [entry] = entries ?? [];
    assert.deepEqual(
      { ...entry, read: undefined },
      {
        sourcePath: 'a.txt',
        targetPath: '/dst/',
        fileMode: 0o640,
        isDir: false,
        targetUser: '1000:1000',
        targetWorkdir: '/work',
        read: undefined,
      },
    );
    assert.equal(await contentOf(entry), 'alpha\n');
  });

  test('a directory: one entry per directory and file, ignored ones left out', async () => {
    const { context } = makeContext();
    const build = await BuildContext.open(context);
    const entries = await build.entries('sub', '', TARGET);
    assert.deepEqual(shape(entries), [
      ['sub', '/dst/', true],
      ['sub/c.txt', '/dst/c.txt', false],
      ['sub/deep', '/dst/deep', true],
      ['sub/deep/d.txt', '/dst/deep/d.txt', false],
    ]);
    assert.equal(entries?.[0].fileMode, GO_MODE_DIR | 0o750);
    assert.equal(entries?.[1].fileMode, 0o755);
    assert.equal(await contentOf(entries?.[3] as ResourceEntry), 'delta\n');
  });

  test('the whole context (".") never includes what .dockerignore excludes', async () => {
    const { context } = makeContext({ escapes: false });
    const build = await BuildContext.open(context);
    const paths = (await build.entries('.', '', TARGET))?.map((entry) => entry.sourcePath) ?? [];
    for (const excluded of [
      'x.log',
      'secret',
      'secret/s.txt',
      'build',
      'build/out.bin',
      'sub/tmp',
      'sub/tmp/t.txt',
    ])
      assert.ok(!paths.includes(excluded), `${excluded} was served`);
    for (const included of ['.', 'a.txt', 'keep.log', 'sub/deep/d.txt', 'Dockerfile', '.dockerignore'])
      assert.ok(paths.includes(included), `${included} was not served`);
    assert.ok(!paths.includes('sub/deep/ignored.txt'));
  });

  test('a glob in the last element matches names in that directory, ignored ones left out', async () => {
    const { context } = makeContext();
    const build = await BuildContext.open(context);
    assert.deepEqual(shape(await build.entries('*.txt', '', TARGET)), [
      ['a.txt', '/dst/', false],
      ['b.txt', '/dst/', false],
    ]);
    assert.deepEqual(shape(await build.entries('*.log', '', TARGET)), [['keep.log', '/dst/', false]]);
    assert.deepEqual(shape(await build.entries('sub/?.txt', '', TARGET)), [['sub/c.txt', '/dst/', false]]);
    assert.equal(await build.entries('*.nothing', '', TARGET), null);
  });

  test('a request for only ignored files is null (NOT_FOUND), as is a missing path', async () => {
    const { context } = makeContext();
    const build = await BuildContext.open(context);
    for (const path of [
      'x.log',
      'secret',
      'secret/s.txt',
      'build/out.bin',
      'build/*',
      'sub/tmp',
      'missing.txt',
    ])
      assert.equal(await build.entries(path, '', TARGET), null, path);
  });

  test('a symlink inside pointing inside is served, as a file or as a directory', async () => {
    const { context } = makeContext();
    const build = await BuildContext.open(context);
    const [file] = (await build.entries('link-inside', '', TARGET)) ?? [];
    assert.equal(file.sourcePath, 'link-inside');
    assert.equal(await contentOf(file), 'alpha\n');
    assert.deepEqual(shape(await build.entries('link-dir-inside', '', TARGET))?.slice(0, 2), [
      ['link-dir-inside', '/dst/', true],
      ['link-dir-inside/c.txt', '/dst/c.txt', false],
    ]);
  });

  test('a symlink loop ends and a dangling symlink is skipped', async () => {
    const { context } = makeContext({ escapes: false });
    symlinkSync('..', join(context, 'sub', 'deep', 'loop'));
    symlinkSync('nowhere', join(context, 'sub', 'dangling'));
    const paths = (await (await BuildContext.open(context)).entries('sub', '', TARGET))?.map(
      (e) => e.sourcePath,
    );
    assert.deepEqual(paths, [
      'sub',
      'sub/c.txt',
      'sub/deep',
      'sub/deep/d.txt',
      // sub/deep/loop is sub again, a directory already being walked: not entered
    ]);
  });

  test('an exception re-includes a file inside an excluded directory', async () => {
    const { context } = makeContext({ escapes: false });
    write(join(context, 'secret', 'public.txt'), 'public\n');
    write(join(context, '.dockerignore'), 'secret\n!secret/public.txt\n');
    const build = await BuildContext.open(context);
    assert.deepEqual(shape(await build.entries('secret', '', TARGET)), [
      ['secret/public.txt', '/dst/public.txt', false],
    ]);
    assert.equal(await build.entries('secret/s.txt', '', TARGET), null);
  });

  test('a file replaced after it was resolved is refused when read', async () => {
    const { context } = makeContext();
    const build = await BuildContext.open(context);
    const [entry] = (await build.entries('b.txt', '', TARGET)) ?? [];
    write(join(context, 'replacement'), 'swapped\n');
    renameSync(join(context, 'replacement'), join(context, 'b.txt'));
    await assert.rejects(
      contentOf(entry),
      refusal('permission_denied', /"b.txt": changed after it was checked/),
    );
  });
});

describe('parsing .dockerignore', () => {
  test("Docker's rules: comments, exceptions, '**', a leading '/', parent directories", () => {
    const ignore = DockerIgnore.parse(' \n# note\n/docs\n**/*.tmp\nlogs/**\n!logs/keep\nsrc/*/gen\n');
    const verdicts = Object.fromEntries(
      [
        'docs',
        'docs/a.md',
        '# note',
        'x.tmp',
        'a/b/c.tmp',
        'logs/a',
        'logs/keep',
        'src/x/gen/f',
        'src/gen',
        'main.go',
      ].map((path) => [path, ignore.ignores(path)]),
    );
    assert.deepEqual(verdicts, {
      docs: true,
      'docs/a.md': true,
      '# note': false,
      'x.tmp': true,
      'a/b/c.tmp': true,
      'logs/a': true,
      'logs/keep': false,
      'src/x/gen/f': true,
      'src/gen': false,
      'main.go': false,
    });
    assert.equal(ignore.ignores('.'), false);
    assert.equal(ignore.hasExceptions, true);
  });
});

describe('stage roots and the resolver', () => {
  test('COPY --from reads the stage root; a leading / there means the stage root', async () => {
    const { context, stageRoot } = makeContext();
    const build = await BuildContext.open(context);
    await build.addStage('builder', stageRoot);
    const [entry] = (await build.entries('/out/app', 'builder', TARGET)) ?? [];
    assert.deepEqual([entry.sourcePath, entry.fileMode], ['out/app', 0o755]);
    assert.equal(await contentOf(entry), '#!/bin/sh\necho app\n');
    assert.equal(await build.entries('/out/app', 'unknown', TARGET), null);
  });

  test("the resolver serves only the commands' sources, with each command's target in order", async () => {
    const { context, stageRoot } = makeContext();
    const build = await BuildContext.open(context);
    await build.addStage('builder', stageRoot);
    const compiled = compileDockerfile(
      'FROM scratch AS builder\nFROM scratch\nWORKDIR /app\nCOPY a.txt /x/\nUSER 7\nCOPY --chown=9:9 a.txt y/\nCOPY --from=builder /out/app /bin/\n',
    );
    const resolve = build.resolverFor(compiled.stages[1].commands);
    const first = (await resolve('a.txt', ''))?.[0];
    const second = (await resolve('a.txt', ''))?.[0];
    assert.deepEqual([first?.targetPath, first?.targetWorkdir, first?.targetUser], ['/x/', '/app', '0:0']);
    assert.deepEqual([second?.targetPath, second?.targetWorkdir, second?.targetUser], ['y/', '/app', '9:9']);
    assert.equal((await resolve('/out/app', 'builder'))?.[0].targetPath, '/bin/');
    assert.equal(await resolve('b.txt', ''), null, 'a path no command names is not served');
    assert.equal(await resolve('a.txt', 'builder'), null, 'nor is one in another stage');
  });
});

describe('refusals: paths that leave the root', () => {
  const cases: [string, string, RegExp][] = [
    [
      'a path with ../ leaving the context',
      '../outside/secret.txt',
      /leaves the build context through '\.\.'/,
    ],
    [
      'a path that climbs back out after going in',
      'sub/../../outside/secret.txt',
      /leaves the build context/,
    ],
    ['an absolute path', '/etc/passwd', /absolute paths are refused/],
    [
      'a symlink to a file outside',
      'escape-file',
      /"escape-file" leads outside the build context through a symlink/,
    ],
    ['a symlink to a directory outside', 'escape-dir', /"escape-dir" leads outside the build context/],
    [
      'a path through a symlinked directory outside',
      'escape-dir/secret2.txt',
      /leads outside the build context/,
    ],
    ['a directory holding a symlink that escapes', 'mixed', /"mixed\/bad" leads outside the build context/],
    ['a glob matching a symlink that escapes', 'escape-*', /leads outside the build context/],
  ];
  for (const [name, path, pattern] of cases) {
    test(`${name} is refused (${path})`, async () => {
      const { context, outside } = makeContext();
      const before = outsideState(outside);
      const build = await BuildContext.open(context);
      await assert.rejects(
        build.entries(path, '', TARGET),
        refusal('permission_denied', pattern, (error) => assert.ok(!error.message.includes(SECRET.trim()))),
      );
      // So does the resolver for a COPY naming it.
      const copy = compileDockerfile(`FROM scratch\nCOPY ${path} /dst/\n`).stages[0].commands;
      await assert.rejects(build.resolverFor(copy)(path, ''), refusal('permission_denied', pattern));
      assert.deepEqual(outsideState(outside), before);
    });
  }

  test('a stage path with ../ is refused; a symlink out of a stage root too', async () => {
    const { context, stageRoot, outside } = makeContext();
    symlinkSync(join(outside, 'secret.txt'), join(stageRoot, 'out', 'link'));
    const build = await BuildContext.open(context);
    await build.addStage('builder', stageRoot);
    await assert.rejects(
      build.entries('/../outside', 'builder', TARGET),
      refusal('permission_denied', /leaves stage "builder"/),
    );
    await assert.rejects(
      build.entries('out', 'builder', TARGET),
      refusal('permission_denied', /"out\/link" leads outside stage "builder"/),
    );
  });

  test('a .dockerignore that is a symlink is refused, and the file it points to is not read', async () => {
    const { context, outside } = makeContext({ escapes: false });
    const before = outsideState(outside);
    unlinkSync(join(context, '.dockerignore'));
    symlinkSync(join(outside, 'secret.txt'), join(context, '.dockerignore'));
    await assert.rejects(
      BuildContext.open(context),
      refusal('invalid_argument', /^\.dockerignore: is a symlink/),
    );
    assert.deepEqual(outsideState(outside), before);
  });

  test('wildcards before the last element and character classes are refused with a clear line', async () => {
    const { context } = makeContext();
    const build = await BuildContext.open(context);
    await assert.rejects(
      build.entries('*/c.txt', '', TARGET),
      refusal('invalid_argument', /only in the last path element/),
    );
    await assert.rejects(
      build.entries('[ab].txt', '', TARGET),
      refusal('invalid_argument', /character classes/),
    );
  });
});
