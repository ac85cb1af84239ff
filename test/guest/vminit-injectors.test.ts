// vminit's normal mode, injector by injector, into a guest root that is a
// temp directory: the exact bytes of every file it writes, the runner script
// actually run by /bin/sh, and the refusals (a missing authorized_keys, a
// user name that is a path, a file that is a symlink out of the guest), each
// leaving everything as it was.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
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
import {
  DEFAULT_INJECTOR_PATHS,
  entrypointRunnerContent,
  envFileContent,
  hostsFileContent,
  injectAll,
  injectEntrypointRunner,
  injectEnvironment,
  injectHostname,
  injectHosts,
  injectSshKeys,
  parseEntrypointInfo,
} from '../../src/guest/guest-injectors.ts';
import type { MetadataDocument } from '../../src/guest/metadata-document.ts';

function scratch(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-inject-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA+alice alice@laptop';
const KEY_B = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+alice alice@desk';

function documentWith(fields: Partial<MetadataDocument> = {}): MetadataDocument {
  return {
    VMMID: 'vmm-1',
    Drives: {},
    EntrypointJSON: JSON.stringify({
      Cmd: ['--help', 'two words'],
      EntryPoint: ['/usr/bin/start.sh'],
      Env: { ETCD_VERSION: '3.4.0' },
      Shell: ['/bin/sh', '-c'],
      User: '0:0',
      Workdir: '/',
    }),
    Env: { ENV_VAR: 'a value', TRICKY: 'say "hi" $HOME `id` \\ done' },
    LocalHostname: 'focused-edison',
    ImageTag: 'acme/etcd:3.4.0',
    Machine: { CPU: '1', CPUTemplate: '', HTEnabled: 'false', KernelArgs: '', Mem: '128', VMLinux: '' },
    Network: {
      CniNetworkName: 'br0',
      Interfaces: {
        'c6:15:a7:48:76:16': {
          HostDeviceName: 'tap0',
          Gateway: '192.168.127.1',
          IfName: '',
          IP: '192.168.127.54',
          IPAddr: '192.168.127.54/24',
          IPMask: 'ffffff00',
          IPNet: 'ip+net',
          NameServers: '',
        },
      },
    },
    Users: { alice: { SSHKeys: `${KEY_A}\n${KEY_B}\n` }, root: { SSHKeys: '' } },
    ...fields,
  };
}

/** Every path under `dir` with its content, to show that nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    out[path.slice(dir.length)] = entry.isFile()
      ? readFileSync(path, 'utf8')
      : entry.isSymbolicLink()
        ? '->'
        : '/';
  }
  return out;
}

describe('env file', () => {
  test('one `export NAME="value"` a line, everything the shell would expand escaped', () => {
    assert.equal(
      envFileContent(documentWith().Env),
      'export ENV_VAR="a value"\nexport TRICKY="say \\"hi\\" \\$HOME \\`id\\` \\\\ done"\n',
    );
  });

  test('sourced by sh, every value comes back verbatim', async (t) => {
    const root = scratch(t);
    await injectEnvironment(documentWith(), '/etc/profile.d/run-env.sh', root);
    const file = join(root, 'etc/profile.d/run-env.sh');
    const out = execFileSync('/bin/sh', ['-c', `. '${file}'; printf '%s\\n' "$ENV_VAR" "$TRICKY"`], {
      encoding: 'utf8',
    });
    assert.equal(out, 'a value\nsay "hi" $HOME `id` \\ done\n');
    assert.equal(statSync(file).mode & 0o777, 0o644);
  });

  test('no Env, no file', async (t) => {
    const root = scratch(t);
    assert.deepEqual(
      await injectEnvironment(documentWith({ Env: {} }), '/etc/profile.d/run-env.sh', root),
      [],
    );
    assert.deepEqual(readdirSync(root), []);
  });

  test('refused: a name the shell cannot take; no file written', async (t) => {
    const root = scratch(t);
    await assert.rejects(
      injectEnvironment(documentWith({ Env: { 'A;rm -rf /': 'x' } }), '/etc/env.sh', root),
      /not a valid variable name/,
    );
    assert.deepEqual(readdirSync(root), []);
  });
});

describe('hostname and hosts', () => {
  test('/etc/hostname is the name and a newline, replacing a longer old one', async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/hostname'), 'a-much-longer-previous-name\n');
    await injectHostname(documentWith(), '/etc/hostname', root);
    assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'focused-edison\n');
  });

  test('/etc/hosts with interfaces: the defaults, then IP<TAB>hostname', () => {
    assert.equal(
      hostsFileContent(documentWith()),
      '127.0.0.1\tlocalhost\n' +
        '::1\tlocalhost ip6-localhost ip6-loopback\n' +
        'fe00::0\tip6-localnet\n' +
        'ff00::0\tip6-mcastprefix\n' +
        'ff02::1\tip6-allnodes\n' +
        'ff02::2\tip6-allrouters\n' +
        '192.168.127.54\tfocused-edison\n',
    );
  });

  test('/etc/hosts without interfaces: localhost answers to the hostname', async (t) => {
    const root = scratch(t);
    await injectHosts(documentWith({ Network: { CniNetworkName: '', Interfaces: {} } }), '/etc/hosts', root);
    assert.equal(
      readFileSync(join(root, 'etc/hosts'), 'utf8'),
      '127.0.0.1\tlocalhost focused-edison\n' +
        '::1\tlocalhost ip6-localhost ip6-loopback focused-edison\n' +
        'fe00::0\tip6-localnet\n' +
        'ff00::0\tip6-mcastprefix\n' +
        'ff02::1\tip6-allnodes\n' +
        'ff02::2\tip6-allrouters\n',
    );
  });

  test('refused: a hostname that is not one, an interface address that is not one', () => {
    assert.throws(
      () => hostsFileContent(documentWith({ LocalHostname: 'evil\n1.2.3.4 bank' })),
      /not a valid host name/,
    );
    const interfaces = documentWith().Network.Interfaces;
    const bad = { ...interfaces['c6:15:a7:48:76:16'], IP: '1.2.3.4 bank.example' };
    assert.throws(
      () => hostsFileContent(documentWith({ Network: { CniNetworkName: '', Interfaces: { m: bad } } })),
      /not an IP address/,
    );
  });

  test('refused: /etc/hosts a symlink that climbs out of the guest; nothing outside changes', async (t) => {
    const parent = scratch(t);
    const root = join(parent, 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(parent, 'hosts'), 'host machine hosts\n');
    symlinkSync('../../hosts', join(root, 'etc/hosts'));
    const before = snapshot(parent);
    await assert.rejects(injectHosts(documentWith(), '/etc/hosts', root), { code: 'permission_denied' });
    assert.deepEqual(snapshot(parent), before);
  });
});

describe('SSH keys', () => {
  test('appended to the existing authorized_keys once, its mode kept; users without keys skipped', async (t) => {
    const root = scratch(t);
    const keys = join(root, 'home/alice/.ssh/authorized_keys');
    mkdirSync(join(root, 'home/alice/.ssh'), { recursive: true });
    writeFileSync(keys, `ssh-rsa AAAAold old@key\n${KEY_B}`);
    chmodSync(keys, 0o400);
    const changed = await injectSshKeys(documentWith(), '/home/%s/.ssh/authorized_keys', root);
    assert.deepEqual(changed, ['/home/alice/.ssh/authorized_keys']);
    assert.equal(readFileSync(keys, 'utf8'), `ssh-rsa AAAAold old@key\n${KEY_B}\n${KEY_A}\n`);
    assert.equal(statSync(keys).mode & 0o777, 0o400);
    // At the next boot nothing is added again.
    assert.deepEqual(await injectSshKeys(documentWith(), '/home/%s/.ssh/authorized_keys', root), []);
    assert.equal(readFileSync(keys, 'utf8'), `ssh-rsa AAAAold old@key\n${KEY_B}\n${KEY_A}\n`);
  });

  test('refused: a user whose authorized_keys does not exist; nothing created', async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'home/alice'), { recursive: true });
    await assert.rejects(injectSshKeys(documentWith(), '/home/%s/.ssh/authorized_keys', root), {
      code: 'not_found',
      message: '/home/alice/.ssh/authorized_keys does not exist',
    });
    assert.deepEqual(snapshot(root), { '/home': '/', '/home/alice': '/' });
  });

  test('refused: a user name that is a path; nothing changed', async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/shadow'), 'secret\n');
    const before = snapshot(root);
    await assert.rejects(
      injectSshKeys(documentWith({ Users: { '../../etc/shadow#': { SSHKeys: KEY_A } } }), '/home/%s', root),
      /not a valid user name/,
    );
    assert.deepEqual(snapshot(root), before);
  });
});

describe('entrypoint runner', () => {
  test("firebuild's shape, every word quoted, exec'ing the entrypoint", () => {
    const info = parseEntrypointInfo(documentWith().EntrypointJSON);
    assert.equal(
      entrypointRunnerContent(info, '/etc/profile.d/run-env.sh'),
      "#!/bin/sh\n\n/bin/sh -c 'export ETCD_VERSION=3.4.0; if [ -f /etc/profile.d/run-env.sh ]; then . /etc/profile.d/run-env.sh; fi; " +
        "export PATH=$PATH:/; cd / && exec /usr/bin/start.sh --help '\\''two words'\\'''\n",
    );
  });

  test('written 0755 and run by sh: the env file, the image env, the workdir and the arguments arrive intact', async (t) => {
    const root = scratch(t);
    const envFile = join(root, 'etc/profile.d/run-env.sh');
    const workdir = join(root, 'srv');
    mkdirSync(workdir);
    const document = documentWith({
      Env: { FROM_ENV_FILE: "it's here" },
      EntrypointJSON: JSON.stringify({
        Cmd: ['$FROM_ENV_FILE', "a 'quoted' arg"],
        EntryPoint: ['/bin/sh', '-c', 'echo "$IMAGE_ENV|$FROM_ENV_FILE|$(pwd)|$0|$1"'],
        Env: { IMAGE_ENV: 'x y' },
        Shell: [],
        User: '',
        Workdir: workdir,
      }),
    });
    // The runner names guest paths; here the guest root is a temp dir, so the env file is given by its host path.
    await injectEnvironment(document, envFile.slice(root.length), root);
    await injectEntrypointRunner(document, '/usr/bin/firebuild-entrypoint.sh', envFile, root);
    const runner = join(root, 'usr/bin/firebuild-entrypoint.sh');
    assert.equal(statSync(runner).mode & 0o777, 0o755);
    const out = execFileSync(runner, { encoding: 'utf8' });
    assert.equal(out, `x y|it's here|${workdir}|$FROM_ENV_FILE|a 'quoted' arg\n`);
  });

  test('CMD alone runs when there is no ENTRYPOINT; nothing at all writes no runner', async (t) => {
    const root = scratch(t);
    const cmdOnly = parseEntrypointInfo(JSON.stringify({ Cmd: ['serve'] }));
    assert.match(entrypointRunnerContent(cmdOnly, '/e') ?? '', /cd \/ && exec serve'\n$/);
    const empty = documentWith({ EntrypointJSON: JSON.stringify({ Cmd: [], EntryPoint: [] }) });
    assert.deepEqual(await injectEntrypointRunner(empty, '/usr/bin/run.sh', '/e', root), []);
    assert.deepEqual(readdirSync(root), []);
  });

  test('refused: EntrypointJSON that is not JSON of the right shape', () => {
    assert.throws(() => parseEntrypointInfo('{not json'), /EntrypointJSON is not JSON/);
    assert.throws(() => parseEntrypointInfo('{"Cmd":"serve"}'), /Cmd must be a list of strings/);
  });
});

describe('injectAll', () => {
  test("every injector with firebuild's default paths, in its order", async (t) => {
    const root = scratch(t);
    mkdirSync(join(root, 'home/alice/.ssh'), { recursive: true });
    writeFileSync(join(root, 'home/alice/.ssh/authorized_keys'), '');
    const written = await injectAll(documentWith(), DEFAULT_INJECTOR_PATHS, root);
    assert.deepEqual(written, [
      '/home/alice/.ssh/authorized_keys',
      '/etc/profile.d/run-env.sh',
      '/etc/hostname',
      '/etc/hosts',
      '/usr/bin/firebuild-entrypoint.sh',
    ]);
    assert.equal(readFileSync(join(root, 'home/alice/.ssh/authorized_keys'), 'utf8'), `${KEY_A}\n${KEY_B}\n`);
  });

  test('a failure names its injector', async (t) => {
    const root = scratch(t);
    await assert.rejects(injectAll(documentWith(), DEFAULT_INJECTOR_PATHS, root), {
      message: /^injecting SSH keys: \/home\/alice\/.ssh\/authorized_keys does not exist$/,
    });
  });
});
