// ADD/COPY into a guest root that is a temp directory: modes, parent
// directories, Docker's target naming, ownership (--chown, USER, names from
// the guest's /etc/passwd), directory walks with Go's ModeDir bit, and every
// way out of the guest refused with nothing written anywhere.
import assert from 'node:assert/strict';
import {
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import type { CopyCommand } from '../../src/guest/build-commands.ts';
import { guestPath, resolveInGuest } from '../../src/guest/guest-paths.ts';
import { deployResources, type ReceivedResource } from '../../src/guest/resource-deployer.ts';

const notRoot = process.getuid?.() === 0 ? false : 'ownership needs root';
/** Go's os.ModeDir, which firebuild's directory headers carry. */
const GO_MODE_DIR = 2 ** 31;

function scratch(t: TestContext, prefix = 'sigil-deploy-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function copy(fields: {
  source: string;
  target: string;
  workdir?: string;
  user?: string;
  chown?: string;
}): CopyCommand {
  return {
    OriginalCommand: `COPY ${fields.source} ${fields.target}`,
    OriginalSource: fields.source,
    Source: fields.source,
    Target: fields.target,
    Workdir: { OriginalCommand: '', Value: fields.workdir ?? '/' },
    User: { OriginalCommand: '', Value: fields.user ?? '0:0' },
    UserFromLocalChown: fields.chown === undefined ? null : { OriginalCommand: '', Value: fields.chown },
    Stage: '',
  };
}

function file(sourcePath: string, targetPath: string, content: string, fileMode = 0o644): ReceivedResource {
  return {
    header: {
      id: `id-${sourcePath}`,
      sourcePath,
      targetPath,
      fileMode,
      isDir: false,
      targetUser: '',
      targetWorkdir: '',
    },
    data: Buffer.from(content),
  };
}

function directory(sourcePath: string, targetPath: string, permissions: number): ReceivedResource {
  return {
    header: {
      id: `id-${sourcePath}`,
      sourcePath,
      targetPath,
      fileMode: GO_MODE_DIR + permissions,
      isDir: true,
      targetUser: '',
      targetWorkdir: '',
    },
    data: Buffer.alloc(0),
  };
}

async function* stream(...entries: ReceivedResource[]): AsyncIterable<ReceivedResource> {
  yield* entries;
}

const modeOf = (path: string): number => statSync(path).mode & 0o7777;

/** Every path under `dir` with its type, to show that nothing changed. */
function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .map(
      (entry) => `${join(entry.parentPath, entry.name).slice(dir.length)}${entry.isDirectory() ? '/' : ''}`,
    )
    .sort();
}

describe('guest paths', () => {
  test('relative to the WORKDIR, `..` applied, absolute as written', () => {
    assert.equal(guestPath('conf/a.txt', '/app'), '/app/conf/a.txt');
    assert.equal(guestPath('../etc/x', '/app'), '/etc/x');
    assert.equal(guestPath('/etc/x', '/app'), '/etc/x');
    assert.equal(guestPath('.', '/app'), '/app');
  });

  test('refused: `..` above the guest root', () => {
    assert.throws(() => guestPath('../../x', '/app'), { code: 'permission_denied' });
  });

  test('symlinks are followed inside the guest: an absolute target is the guest root', async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    symlinkSync('usr/bin', join(root, 'bin'));
    symlinkSync('/usr', join(root, 'abs'));
    assert.equal(await resolveInGuest(root, '/bin/tool'), join(root, 'usr/bin/tool'));
    assert.equal(await resolveInGuest(root, '/abs/bin/x'), join(root, 'usr/bin/x'));
  });
});

describe('deployResources', () => {
  test('a file into a directory target ("/" at the end): parents 0755, the file its mode and bytes', async (t) => {
    const root = scratch(t);
    const result = await deployResources(
      copy({ source: 'app.conf', target: '/etc/app/conf.d/' }),
      stream(file('app.conf', '/etc/app/conf.d/', 'key=value\n', 0o640)),
      { root },
    );
    assert.deepEqual(result, { files: 1, directories: 0 });
    const written = join(root, 'etc/app/conf.d/app.conf');
    assert.equal(readFileSync(written, 'utf8'), 'key=value\n');
    assert.equal(modeOf(written), 0o640);
    for (const parent of ['etc', 'etc/app', 'etc/app/conf.d'])
      assert.equal(modeOf(join(root, parent)), 0o755);
  });

  test('target naming: a file name is the file, an existing directory or "." takes the source name', async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'opt'));
    mkdirSync(join(root, 'work'));
    await deployResources(
      copy({ source: 'a.txt', target: '/etc/b.txt' }),
      stream(file('a.txt', '/etc/b.txt', 'renamed')),
      { root },
    );
    await deployResources(
      copy({ source: 'a.txt', target: '/opt' }),
      stream(file('a.txt', '/opt', 'into dir')),
      { root },
    );
    await deployResources(
      copy({ source: 'dir/a.txt', target: '.', workdir: '/work' }),
      stream(file('dir/a.txt', '.', 'dot')),
      { root },
    );
    await deployResources(
      copy({ source: 'a.txt', target: 'rel/', workdir: '/work' }),
      stream(file('a.txt', 'rel/', 'relative')),
      { root },
    );
    assert.equal(readFileSync(join(root, 'etc/b.txt'), 'utf8'), 'renamed');
    assert.equal(readFileSync(join(root, 'opt/a.txt'), 'utf8'), 'into dir');
    assert.equal(readFileSync(join(root, 'work/a.txt'), 'utf8'), 'dot');
    assert.equal(readFileSync(join(root, 'work/rel/a.txt'), 'utf8'), 'relative');
  });

  test('a directory walk: directories with their modes (Go ModeDir bit ignored), files at their own paths', async (t) => {
    const root = scratch(t);
    const result = await deployResources(
      copy({ source: 'site', target: '/srv/www/' }),
      stream(
        directory('site', '/srv/www/', 0o750),
        file('site/index.html', '/srv/www/index.html', '<h1>hi</h1>'),
        directory('site/img', '/srv/www/img', 0o700),
        file('site/img/logo.svg', '/srv/www/img/logo.svg', '<svg/>', 0o600),
      ),
      { root },
    );
    assert.deepEqual(result, { files: 2, directories: 2 });
    assert.equal(modeOf(join(root, 'srv')), 0o755);
    assert.equal(modeOf(join(root, 'srv/www')), 0o750);
    assert.equal(modeOf(join(root, 'srv/www/img')), 0o700);
    assert.equal(readFileSync(join(root, 'srv/www/index.html'), 'utf8'), '<h1>hi</h1>');
    assert.equal(readFileSync(join(root, 'srv/www/img/logo.svg'), 'utf8'), '<svg/>');
    assert.equal(modeOf(join(root, 'srv/www/img/logo.svg')), 0o600);
  });

  test('a file written again is replaced whole, and takes the new mode', async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/motd'), 'a much longer old content\n', { mode: 0o600 });
    await deployResources(
      copy({ source: 'motd', target: '/etc/motd' }),
      stream(file('motd', '/etc/motd', 'new\n', 0o644)),
      {
        root,
      },
    );
    assert.equal(readFileSync(join(root, 'etc/motd'), 'utf8'), 'new\n');
    assert.equal(modeOf(join(root, 'etc/motd')), 0o644);
  });

  test('ownership: --chown uid:gid, a USER name from the guest /etc/passwd, none for 0:0', {
    skip: notRoot,
  }, async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'etc'));
    writeFileSync(
      join(root, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n',
    );
    await deployResources(
      copy({ source: 'a', target: '/data/', user: 'app', chown: '1234:2345' }),
      stream(file('a', '/data/', 'x', 0o4755)),
      { root },
    );
    const chowned = statSync(join(root, 'data/a'));
    assert.deepEqual([chowned.uid, chowned.gid], [1234, 2345]);
    // chown clears set-user-ID; the mode is applied after it.
    assert.equal(chowned.mode & 0o7777, 0o4755);
    await deployResources(
      copy({ source: 'dir', target: '/home/app/', user: 'app' }),
      stream(directory('dir', '/home/app/', 0o700), file('dir/b', '/home/app/b', 'y')),
      { root },
    );
    const byUser = statSync(join(root, 'home/app/b'));
    assert.deepEqual([byUser.uid, byUser.gid], [1000, 1001]);
    assert.deepEqual(
      [statSync(join(root, 'home/app')).uid, statSync(join(root, 'home/app')).gid],
      [1000, 1001],
    );
    // A --chown uid alone takes the same number as its group (Docker).
    await deployResources(copy({ source: 'c', target: '/c', chown: '4321' }), stream(file('c', '/c', 'z')), {
      root,
    });
    assert.deepEqual([statSync(join(root, 'c')).uid, statSync(join(root, 'c')).gid], [4321, 4321]);
    // Root's files are not chowned: an existing owner stays.
    writeFileSync(join(root, 'kept'), 'old');
    chownSync(join(root, 'kept'), 5, 5);
    await deployResources(copy({ source: 'kept', target: '/kept' }), stream(file('kept', '/kept', 'new')), {
      root,
    });
    assert.deepEqual([statSync(join(root, 'kept')).uid, statSync(join(root, 'kept')).gid], [5, 5]);
  });

  test('refused: nothing received for the source (it does not exist); nothing created', async (t) => {
    const root = scratch(t);
    await assert.rejects(deployResources(copy({ source: 'missing', target: '/x/' }), stream(), { root }), {
      code: 'not_found',
      message: 'nothing received for "missing"',
    });
    assert.deepEqual(listing(root), []);
  });

  test('refused: a target whose `..` leaves the guest root; nothing written inside or beside it', async (t) => {
    const parent = scratch(t);
    const root = join(parent, 'root');
    mkdirSync(join(root, 'app'), { recursive: true });
    const before = listing(parent);
    await assert.rejects(
      deployResources(
        copy({ source: 'a', target: '../../../escaped', workdir: '/app' }),
        stream(file('a', '../../../escaped', 'x')),
        { root },
      ),
      { code: 'permission_denied', message: /leaves the guest's root directory/ },
    );
    await assert.rejects(
      deployResources(copy({ source: 'a', target: '/../x' }), stream(file('a', '/../x', 'x')), { root }),
      { code: 'permission_denied' },
    );
    assert.deepEqual(listing(parent), before);
  });

  test('refused: a symlink in the guest that climbs out of it, as a directory or as the file; nothing written outside', async (t) => {
    const parent = scratch(t);
    const root = join(parent, 'root');
    const outside = join(parent, 'outside');
    mkdirSync(join(root, 'etc'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(outside, 'passwd'), 'host file\n');
    symlinkSync('../../outside', join(root, 'escape'));
    symlinkSync('../../outside/passwd', join(root, 'etc/passwd-link'));
    const before = listing(parent);
    await assert.rejects(
      deployResources(copy({ source: 'a', target: '/escape/a' }), stream(file('a', '/escape/a', 'x')), {
        root,
      }),
      { code: 'permission_denied' },
    );
    await assert.rejects(
      deployResources(
        copy({ source: 'p', target: '/etc/passwd-link' }),
        stream(file('p', '/etc/passwd-link', 'owned')),
        {
          root,
        },
      ),
      { code: 'permission_denied' },
    );
    await assert.rejects(
      deployResources(
        copy({ source: 'd', target: '/escape/d' }),
        stream(directory('d', '/escape/d', 0o755)),
        { root },
      ),
      { code: 'permission_denied' },
    );
    assert.deepEqual(listing(parent), before);
    assert.equal(readFileSync(join(outside, 'passwd'), 'utf8'), 'host file\n');
  });

  test('an absolute symlink means the guest root: the file lands inside it, the host path is untouched', async (t) => {
    const parent = scratch(t);
    const root = join(parent, 'root');
    const outside = join(parent, 'outside');
    mkdirSync(root);
    mkdirSync(outside);
    symlinkSync(outside, join(root, 'link'));
    await deployResources(copy({ source: 'a', target: '/link/a' }), stream(file('a', '/link/a', 'inside')), {
      root,
    });
    assert.deepEqual(readdirSync(outside), []);
    assert.equal(readFileSync(join(root, outside, 'a'), 'utf8'), 'inside');
  });
});
