// Workload networks against real network namespaces: the daemon's namespace
// is one each test creates (`sigil-test-…`), and a workload is an `unshare
// --net sleep` process with a namespace of its own. Asserts what the workload
// sees (eth0, its address and MAC, a default route), that the bridge and two
// workloads reach each other (busybox ping), that detach and close leave
// nothing behind, and every refusal. The host's own interfaces are never
// touched.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readlinkSync } from 'node:fs';
import { after, describe, type TestContext, test } from 'node:test';
import {
  AddressPool,
  checkInterfaceName,
  parseBridgeConfig,
  parseIpv4,
} from '../../src/workloads/address-pool.ts';
import { macAddressFor } from '../../src/workloads/mac-address.ts';
import { spawnInNamespaces } from '../../src/workloads/namespace-process.ts';
import {
  type Attachment,
  hostInterfaceFor,
  openWorkloadNetworks,
  type WorkloadNetworks,
  type WorkloadNetworksOptions,
} from '../../src/workloads/networks.ts';
import { refusal } from '../support/refusals.ts';
import { answersFrom, busyboxRootfsFor } from './rootfs-fixture.ts';

const BUSYBOX = '/bin/busybox';

function unavailableReason(): string | null {
  if (process.getuid?.() !== 0) return 'workload networks need root (network namespaces)';
  if (!['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].some((path) => existsSync(path))) {
    return 'iproute2 `ip` is not installed';
  }
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} is missing (apt-get install busybox-static): needed for ping`;
  return null;
}
const unavailable = unavailableReason();

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** `ip` inside the network namespace of `pid`. */
function ipInPid(pid: number, ...args: string[]): string {
  return execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, '--', 'ip', ...args], { encoding: 'utf8' });
}

/** Whether one busybox ping from the namespace of `pid` (or the named netns) to `address` is answered. */
function pingsFrom(from: { pid: number } | { netns: string }, address: string): boolean {
  const enter =
    'pid' in from ? ['nsenter', `--net=/proc/${from.pid}/ns/net`, '--'] : ['ip', 'netns', 'exec', from.netns];
  try {
    execFileSync(enter[0], [...enter.slice(1), BUSYBOX, 'ping', '-c', '1', '-W', '2', address], {
      stdio: 'ignore',
    });
    return true;
  } catch {
    return false;
  }
}

function sigilTestNamespaces(): string[] {
  return ip('netns', 'list')
    .split('\n')
    .map((line) => line.split(' ')[0])
    .filter((name) => name.startsWith('sigil-test-'));
}

/** A fresh id, so parallel runs never share a namespace. */
const issuedIds: string[] = [];
function testId(): string {
  const id = `test-${randomBytes(4).toString('hex')}`;
  issuedIds.push(id);
  return id;
}

/** Opens networks in a fresh `sigil-test-…` namespace, closed (and the namespace removed) when `t` ends. */
async function openFor(
  t: TestContext,
  bridges: readonly string[],
  extra: Partial<WorkloadNetworksOptions> = {},
): Promise<WorkloadNetworks> {
  const id = testId();
  // One hook, registered before open (so a half-made namespace goes too); hooks run in order, not reversed.
  let networks: WorkloadNetworks | undefined;
  t.after(async () => {
    try {
      await networks?.close();
    } finally {
      if (existsSync(`/run/netns/sigil-${id}`)) ip('netns', 'delete', `sigil-${id}`);
    }
  });
  networks = await openWorkloadNetworks({ bridges, namespace: { create: id }, ...extra });
  return networks;
}

/** A stand-in workload: a sleeping process in its own network namespace, killed when `t` ends. */
async function workloadFor(t: TestContext): Promise<number> {
  const child: ChildProcess = spawn('unshare', ['--net', '--', 'sh', '-c', 'echo ready; exec sleep 30'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`unshare exited early (${code})`)));
    child.stdout!.once('data', () => resolve());
  });
  const pid = child.pid!;
  assert.notEqual(readlinkSync(`/proc/${pid}/ns/net`), readlinkSync('/proc/self/ns/net'));
  return pid;
}

describe('bridge configuration and addresses (no root needed)', () => {
  test('parses NAME=ADDRESS/PREFIX', () => {
    assert.deepEqual(parseBridgeConfig('br0=10.77.0.1/24'), {
      name: 'br0',
      gateway: '10.77.0.1',
      prefixLength: 24,
      network: '10.77.0.0/24',
    });
  });

  test('refuses a prefix length over 32', () => {
    assert.throws(() => parseBridgeConfig('br0=10.77.0.1/33'), refusal('invalid_argument', /prefix length/));
  });

  test('refuses a /31 or /32: no room for a workload', () => {
    assert.throws(() => parseBridgeConfig('br0=10.77.0.1/31'), refusal('invalid_argument', /no address/));
    assert.throws(() => parseBridgeConfig('br0=10.77.0.1/32'), refusal('invalid_argument', /no address/));
  });

  test('refuses a non-IPv4 address', () => {
    for (const spec of ['br0=fd00::1/64', 'br0=10.77.0.256/24', 'br0=10.77.0/24', 'br0=010.77.0.1/24']) {
      assert.throws(() => parseBridgeConfig(spec), refusal('invalid_argument', /not an IPv4 address/), spec);
    }
  });

  test('refuses a bridge address that is the network or broadcast address', () => {
    assert.throws(
      () => parseBridgeConfig('br0=10.77.0.0/24'),
      refusal('invalid_argument', /network or broadcast/),
    );
    assert.throws(
      () => parseBridgeConfig('br0=10.77.0.255/24'),
      refusal('invalid_argument', /network or broadcast/),
    );
  });

  test('refuses a malformed spec', () => {
    for (const spec of ['br0', 'br0=10.77.0.1', '=10.77.0.1/24', 'br0=10.77.0.1/x']) {
      assert.throws(() => parseBridgeConfig(spec), refusal('invalid_argument'), spec);
    }
  });

  test('refuses an interface name over 15 characters or with odd characters', () => {
    assert.throws(
      () => parseBridgeConfig('bridge-too-long-0=10.77.0.1/24'),
      refusal('invalid_argument', /at most 15/),
    );
    for (const name of ['br/0', 'br 0', '..', '-br', 'br:0', 'br\n0']) {
      assert.throws(() => checkInterfaceName(name), refusal('invalid_argument'), JSON.stringify(name));
    }
    assert.equal(checkInterfaceName('br0'), 'br0');
  });

  test('allocates deterministically per key, skips the gateway, and reuses freed addresses', () => {
    const config = parseBridgeConfig('br0=10.77.0.1/24');
    const first = new AddressPool(config);
    const second = new AddressPool(config);
    const address = first.allocate('carol/web');
    assert.equal(second.allocate('carol/web'), address, 'the same key gets the same address in a fresh pool');
    assert.notEqual(address, '10.77.0.0');
    assert.notEqual(address, '10.77.0.1');
    assert.notEqual(address, '10.77.0.255');
    first.release(address);
    assert.equal(first.inUse, 0);
    assert.equal(first.allocate('carol/web'), address);
  });

  test('hands every usable address out once, then refuses (resource_exhausted)', () => {
    // A /29 around gateway .4: network .0 and broadcast .7 excluded, 5 for workloads.
    const pool = new AddressPool(parseBridgeConfig('br0=10.1.2.4/29'));
    assert.equal(pool.capacity, 5);
    const handed = new Set<string>();
    for (let n = 0; n < 5; n++) handed.add(pool.allocate(`w${n}`));
    assert.deepEqual([...handed].sort(), ['10.1.2.1', '10.1.2.2', '10.1.2.3', '10.1.2.5', '10.1.2.6']);
    assert.throws(() => pool.allocate('w5'), refusal('resource_exhausted', /all 5 addresses/));
  });

  test('a deterministic, locally administered unicast MAC per key', () => {
    const mac = macAddressFor('carol/web');
    assert.match(mac, /^02(:[0-9a-f]{2}){5}$/);
    assert.equal(macAddressFor('carol/web'), mac);
    assert.notEqual(macAddressFor('dan/web'), mac);
  });

  test('host veth names fit the kernel limit', () => {
    const name = hostInterfaceFor('carol/a-very-long-workload-name-indeed');
    assert.match(name, /^sgv[0-9a-f]{12}$/);
    assert.equal(parseIpv4('10.0.0.1'), 0x0a000001);
  });
});

describe('workload networks in real namespaces', { skip: unavailable ?? false }, () => {
  test('attaches a workload: eth0 with its address, MAC and default route, reachable from the bridge', async (t) => {
    const networks = await openFor(t, ['br0=10.77.0.1/24']);
    assert.match(networks.namespace, /^sigil-test-/);
    assert.match(ip('-netns', networks.namespace, 'address', 'show', 'br0'), /inet 10\.77\.0\.1\/24/);

    const pid = await workloadFor(t);
    const attachment = await networks.attach(pid, 'br0', 'carol/web', ['br0']);
    assert.equal(attachment.mac, macAddressFor('carol/web'));
    assert.equal(attachment.gateway, '10.77.0.1');
    assert.equal(attachment.prefixLength, 24);

    const eth0 = ipInPid(pid, 'address', 'show', 'eth0');
    assert.match(eth0, new RegExp(`link/ether ${attachment.mac} `));
    assert.ok(eth0.includes(`inet ${attachment.address}/24`), eth0);
    assert.match(eth0, /state UP|LOWER_UP/);
    assert.match(ipInPid(pid, 'link', 'show', 'lo'), /LOOPBACK,UP/);
    assert.match(ipInPid(pid, 'route', 'show', 'default'), /default via 10\.77\.0\.1 dev eth0/);
    // The host end sits on the bridge in the daemon's namespace, not in the host's.
    assert.match(ip('-netns', networks.namespace, 'link', 'show', attachment.hostInterface), /master br0/);
    assert.doesNotMatch(ip('link', 'show'), new RegExp(attachment.hostInterface));

    assert.ok(
      pingsFrom({ netns: networks.namespace }, attachment.address),
      'the bridge reaches the workload',
    );
    assert.ok(pingsFrom({ pid }, '10.77.0.1'), 'the workload reaches its gateway');
  });

  test('two workloads on one bridge reach each other', async (t) => {
    const networks = await openFor(t, ['br0=10.78.0.1/24']);
    const [pidA, pidB] = [await workloadFor(t), await workloadFor(t)];
    const a = await networks.attach(pidA, 'br0', 'carol/a', ['br0']);
    const b = await networks.attach(pidB, 'br0', 'carol/b', ['br0']);
    assert.notEqual(a.address, b.address);
    assert.notEqual(a.mac, b.mac);
    assert.ok(pingsFrom({ pid: pidA }, b.address), 'a reaches b');
    assert.ok(pingsFrom({ pid: pidB }, a.address), 'b reaches a');
  });

  test('detach removes both veth ends and frees the address', async (t) => {
    const networks = await openFor(t, ['br0=10.79.0.1/30']);
    const pid = await workloadFor(t);
    const attachment = await networks.attach(pid, 'br0', 'carol/web', ['br0']);
    assert.equal(attachment.address, '10.79.0.2');
    await networks.detach('carol/web');
    assert.doesNotMatch(
      ip('-netns', networks.namespace, 'link', 'show'),
      new RegExp(attachment.hostInterface),
    );
    assert.doesNotMatch(ipInPid(pid, 'link', 'show'), /eth0/);
    assert.equal(networks.attachmentOf('carol/web'), undefined);
    // The /30's one address is free again: another workload gets it.
    const other = await workloadFor(t);
    assert.equal((await networks.attach(other, 'br0', 'dan/web', ['br0'])).address, '10.79.0.2');
  });

  test('a workload that ended takes its veth with it; detach still frees the address', async (t) => {
    const networks = await openFor(t, ['br0=10.80.0.1/30']);
    const child = spawn('unshare', ['--net', '--', 'sh', '-c', 'echo ready; exec sleep 30'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.after(() => child.kill('SIGKILL'));
    await new Promise((resolve) => child.stdout!.once('data', resolve));
    const attachment = await networks.attach(child.pid!, 'br0', 'carol/web', ['br0']);
    const ended = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await ended;
    await networks.detach('carol/web');
    assert.doesNotMatch(
      ip('-netns', networks.namespace, 'link', 'show'),
      new RegExp(attachment.hostInterface),
    );
    const next = await workloadFor(t);
    assert.equal((await networks.attach(next, 'br0', 'dan/web', ['br0'])).address, '10.80.0.2');
  });

  test('close removes every interface and the namespace it created', async (t) => {
    const networks = await openFor(t, ['br0=10.81.0.1/24', 'br1=10.82.0.1/24']);
    const pid = await workloadFor(t);
    await networks.attach(pid, 'br1', 'carol/web', ['br0', 'br1']);
    assert.ok(sigilTestNamespaces().includes(networks.namespace));
    await networks.close();
    assert.ok(!sigilTestNamespaces().includes(networks.namespace), 'the namespace is gone');
    assert.doesNotMatch(ipInPid(pid, 'link', 'show'), /eth0/, 'the workload end is gone');
    await networks.close(); // idempotent
    await assert.rejects(networks.attach(pid, 'br0', 'x', ['br0']), refusal('failed_precondition', /closed/));
  });

  test('in a namespace given by the operator, close removes only its own interfaces', async (t) => {
    const name = `sigil-${testId()}`;
    let networks: WorkloadNetworks | undefined;
    t.after(async () => {
      try {
        await networks?.close();
      } finally {
        if (existsSync(`/run/netns/${name}`)) ip('netns', 'delete', name);
      }
    });
    ip('netns', 'add', name);
    ip('-netns', name, 'link', 'add', 'keepme', 'type', 'bridge');
    networks = await openWorkloadNetworks({ bridges: ['br0=10.83.0.1/24'], namespace: { existing: name } });
    const pid = await workloadFor(t);
    await networks.attach(pid, 'br0', 'carol/web', ['br0']);
    await networks.close();
    const links = ip('-netns', name, 'link', 'show');
    assert.match(links, /keepme/);
    assert.doesNotMatch(links, /br0|sgv/);
    assert.ok(existsSync(`/run/netns/${name}`), "the operator's namespace stays");
  });

  test('a workload started by spawnInNamespaces, attached from onSpawned, sees its network from inside', async (t) => {
    const networks = await openFor(t, ['br0=10.91.0.1/24']);
    let attachment: Attachment | undefined;
    const workload = await spawnInNamespaces({
      rootfs: busyboxRootfsFor(t),
      hostname: 'web',
      command: [
        '/bin/sh',
        '-c',
        `ip -o -4 address show dev eth0; ip route; ${answersFrom('10.91.0.1')} && echo reached`,
      ],
      onSpawned: async (pid) => {
        attachment = await networks.attach(pid, 'br0', 'carol/web', ['br0']);
      },
    });
    t.after(() => workload.kill('SIGKILL'));
    let stdout = '';
    workload.stdout!.setEncoding('utf8');
    for await (const chunk of workload.stdout!) stdout += chunk;
    const exit = await workload.exited;
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, stdout);
    assert.ok(attachment);
    assert.ok(stdout.includes(`inet ${attachment.address}/24`), stdout);
    assert.match(stdout, /default via 10\.91\.0\.1 dev eth0/);
    assert.match(stdout, /^reached$/m);
    // The workload's namespace ended with it; detach still frees the address.
    await networks.detach('carol/web');
    assert.equal(networks.attachments.length, 0);
  });

  test('a failure half-way through attach undoes it: no veth left, address free', async (t) => {
    const networks = await openFor(t, ['br0=10.92.0.1/30']);
    const pid = await workloadFor(t);
    // An eth0 already in the workload's namespace makes creating the peer fail.
    ipInPid(pid, 'link', 'add', 'eth0', 'type', 'bridge');
    await assert.rejects(
      networks.attach(pid, 'br0', 'carol/web', ['br0']),
      refusal('internal', /eth0|exists/),
    );
    assert.doesNotMatch(ip('-netns', networks.namespace, 'link', 'show'), /sgv/);
    assert.equal(networks.attachments.length, 0);
    const other = await workloadFor(t);
    assert.equal((await networks.attach(other, 'br0', 'carol/web', ['br0'])).address, '10.92.0.2');
  });

  describe('refusals (change nothing)', () => {
    test('unknown bridge', async (t) => {
      const networks = await openFor(t, ['br0=10.84.0.1/24']);
      const pid = await workloadFor(t);
      await assert.rejects(
        networks.attach(pid, 'br9', 'carol/web', ['br9']),
        refusal('not_found', /br9.*not configured/),
      );
      assert.doesNotMatch(ipInPid(pid, 'link', 'show'), /eth0/);
    });

    test("bridge not in the caller's allowed list", async (t) => {
      const networks = await openFor(t, ['br0=10.85.0.1/24', 'br1=10.86.0.1/24']);
      const pid = await workloadFor(t);
      await assert.rejects(
        networks.attach(pid, 'br1', 'carol/web', ['br0']),
        refusal('permission_denied', /br1.*policy/),
      );
      assert.doesNotMatch(ipInPid(pid, 'link', 'show'), /eth0/);
      assert.equal(networks.attachments.length, 0);
    });

    test('range exhausted: a /30 has one address after the gateway', async (t) => {
      const networks = await openFor(t, ['br0=10.87.0.1/30']);
      const [pidA, pidB] = [await workloadFor(t), await workloadFor(t)];
      assert.equal((await networks.attach(pidA, 'br0', 'carol/a', ['br0'])).address, '10.87.0.2');
      await assert.rejects(
        networks.attach(pidB, 'br0', 'carol/b', ['br0']),
        refusal('resource_exhausted', /in use/),
      );
      assert.doesNotMatch(ipInPid(pidB, 'link', 'show'), /eth0/);
    });

    test('invalid bridge configuration refuses before any namespace exists', async () => {
      const before = sigilTestNamespaces();
      for (const bridges of [
        ['br0=10.77.0.1/33'],
        ['br0=fd00::1/64'],
        ['bridge-name-too-long=10.77.0.1/24'],
        ['br/0=10.77.0.1/24'],
        ['br0=10.77.0.1/24', 'br0=10.78.0.1/24'],
        ['br0=10.77.0.1/24', 'br1=10.77.0.129/25'],
        ['sgv0=10.77.0.1/24'],
      ]) {
        await assert.rejects(
          openWorkloadNetworks({ bridges, namespace: { create: testId() } }),
          refusal('invalid_argument'),
          bridges.join(' '),
        );
      }
      await assert.rejects(
        openWorkloadNetworks({ bridges: ['br0=10.77.0.1/24'], namespace: { create: '../host' } }),
        refusal('invalid_argument', /namespace id/),
      );
      await assert.rejects(
        openWorkloadNetworks({ bridges: ['br0=10.77.0.1/24'], namespace: { existing: `sigil-${testId()}` } }),
        refusal('not_found', /no such network namespace/),
      );
      assert.deepEqual(sigilTestNamespaces(), before);
    });

    test('attaching the same workload twice', async (t) => {
      const networks = await openFor(t, ['br0=10.88.0.1/24', 'br1=10.89.0.1/24']);
      const pid = await workloadFor(t);
      const first = await networks.attach(pid, 'br0', 'carol/web', ['br0', 'br1']);
      await assert.rejects(
        networks.attach(pid, 'br1', 'carol/web', ['br0', 'br1']),
        refusal('already_exists', /already attached/),
      );
      assert.deepEqual(networks.attachmentOf('carol/web'), first);
      assert.ok(ipInPid(pid, 'address', 'show', 'eth0').includes(`inet ${first.address}/24`));
    });

    test('the same workload attached twice at once: one wins', async (t) => {
      const networks = await openFor(t, ['br0=10.93.0.1/24']);
      const pid = await workloadFor(t);
      const results = await Promise.allSettled([
        networks.attach(pid, 'br0', 'carol/web', ['br0']),
        networks.attach(pid, 'br0', 'carol/web', ['br0']),
      ]);
      assert.deepEqual(results.map((result) => result.status).sort(), ['fulfilled', 'rejected']);
      const rejected = results.find((result) => result.status === 'rejected');
      assert.ok(refusal('already_exists', /already attached/)(rejected?.reason));
      assert.equal(networks.attachments.length, 1);
    });

    test('a bad workload key or pid', async (t) => {
      const networks = await openFor(t, ['br0=10.90.0.1/24']);
      const pid = await workloadFor(t);
      await assert.rejects(
        networks.attach(pid, 'br0', '', ['br0']),
        refusal('invalid_argument', /workload key/),
      );
      await assert.rejects(
        networks.attach(pid, 'br0', 'a\nb', ['br0']),
        refusal('invalid_argument', /control/),
      );
      await assert.rejects(
        networks.attach(pid, 'br0', 'x'.repeat(257), ['br0']),
        refusal('invalid_argument'),
      );
      await assert.rejects(
        networks.attach(1, 'br0', 'carol/web', ['br0']),
        refusal('invalid_argument', /pid/),
      );
      await assert.rejects(networks.attach(2 ** 22 + 7, 'br0', 'carol/web', ['br0']), refusal('not_found'));
      await assert.rejects(networks.detach('nobody/web'), refusal('not_found', /not attached/));
      assert.equal(networks.attachments.length, 0);
    });
  });

  after(() => {
    const left = sigilTestNamespaces().filter((name) => issuedIds.some((id) => name === `sigil-${id}`));
    assert.deepEqual(left, [], 'every namespace this file made is gone');
  });
});
