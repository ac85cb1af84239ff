// The anti-spoofing guard of a VM's tap (vm-spoof-guard.ts) against the
// attack it exists for: a guest that takes another workload's address to
// read that workload's metadata document (the relay at 169.254.169.254 tells
// the daemon the source address it saw). The rules match frames by the
// interface they come in on, so they are shown here on a veth host end,
// whose far side a test process can readdress at will (a VM's kernel does
// the same on its tap: vm-network.test.ts); first without the guard (the
// attack works), then with it (it does not, while the victim's own requests
// still do). Also: every refusal installs nothing, and removing the guard
// leaves no rule or chain. Namespaces, processes and sockets are removed
// even on failure.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { promisify } from 'node:util';
import { startMetadataRelay } from '../../src/guest/metadata-relay.ts';
import { macAddressFor } from '../../src/workloads/mac-address.ts';
import { openWorkloadNetworks, type WorkloadNetworks } from '../../src/workloads/networks.ts';
import {
  guardChainFor,
  guardInterface,
  guardRulesOf,
  removeGuard,
} from '../../src/workloads/vm-spoof-guard.ts';
import { failInCi } from '../support/ci.ts';
import { refusal } from '../support/refusals.ts';

const BUSYBOX = '/bin/busybox';
const EBTABLES = '/usr/sbin/ebtables';
const run = promisify(execFile);

function unavailableReason(): string {
  if (process.getuid?.() !== 0) return 'the guard needs root (network namespaces, ebtables)';
  for (const [path, apt] of [
    [BUSYBOX, 'busybox-static'],
    [EBTABLES, 'iptables'],
  ] as const) {
    if (!existsSync(path)) {
      failInCi(`${path} is missing`);
      return `${path} is missing (apt-get install ${apt})`;
    }
  }
  return '';
}
const skip = unavailableReason();
if (skip) console.log(`# vm-spoof-guard: skipping: ${skip}`);

/** Bridges in a fresh namespace, closed (namespace removed) when `t` ends. */
async function networksFor(t: TestContext, bridge: string): Promise<WorkloadNetworks> {
  const id = `test-${randomBytes(4).toString('hex')}`;
  let networks: WorkloadNetworks | undefined;
  t.after(async () => {
    try {
      await networks?.close();
    } finally {
      if (existsSync(`/run/netns/sigil-${id}`)) execFileSync('ip', ['netns', 'delete', `sigil-${id}`]);
    }
  });
  networks = await openWorkloadNetworks({ bridges: [bridge], namespace: { create: id } });
  return networks;
}

/** A process in a network namespace of its own, killed when `t` ends. */
async function netnsProcessFor(t: TestContext): Promise<number> {
  const child: ChildProcess = spawn('unshare', ['--net', '--', 'sh', '-c', 'echo ready; exec sleep 60'], {
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
  return child.pid!;
}

/** Runs a program in the network namespace of `pid`. */
function inPid(pid: number, program: string, ...args: string[]): Promise<{ stdout: string }> {
  return run('nsenter', [`--net=/proc/${pid}/ns/net`, '--', program, ...args], { timeout: 20_000 });
}

/**
 * A stand-in for the daemon's metadata socket: answers each relayed
 * connection with the source address the relay saw, and remembers them.
 */
async function metadataSocketFor(t: TestContext): Promise<{ path: string; sources: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-guard-'));
  const path = join(dir, 'metadata.sock');
  const sources: string[] = [];
  const server: Server = createServer((socket) => {
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const line = /^SIGIL-SOURCE (\S+)\n/.exec(text);
      if (line && !socket.writableEnded) {
        sources.push(line[1]);
        socket.end(`document-of ${line[1]}\n`);
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, sources };
}

/** What the metadata service answers the namespace of `pid`; "" when it cannot be reached. */
async function metadataFrom(pid: number): Promise<string> {
  try {
    const { stdout } = await run(
      'sh',
      [
        '-c',
        `printf 'GET /\\n' | nsenter --net=/proc/${pid}/ns/net -- ${BUSYBOX} nc -w 3 169.254.169.254 80`,
      ],
      { timeout: 20_000 },
    );
    return stdout.trim();
  } catch {
    return '';
  }
}

/** Gives the namespace of `pid` another address (and MAC), with a static neighbour for the gateway. */
async function readdress(
  pid: number,
  address: string,
  gateway: string,
  bridgeMac: string,
  mac?: string,
): Promise<void> {
  await inPid(pid, 'ip', 'address', 'flush', 'dev', 'eth0');
  if (mac) await inPid(pid, 'ip', 'link', 'set', 'eth0', 'address', mac);
  await inPid(pid, 'ip', 'address', 'add', `${address}/24`, 'dev', 'eth0');
  await inPid(pid, 'ip', 'route', 'replace', 'default', 'via', gateway, 'dev', 'eth0');
  // Without ARP: the IPv4 rule, not the ARP rule, is what has to stop the request.
  await inPid(pid, 'ip', 'neigh', 'replace', gateway, 'lladdr', bridgeMac, 'dev', 'eth0');
}

/** The jump (nat PREROUTING) and the chain's four rules, in order. */
export function assertGuarded(rules: readonly string[], iface: string, mac: string, address: string): void {
  const chain = guardChainFor(iface);
  assert.deepEqual(
    rules.map((line) => line.replace(/\s+,\s*pcnt.*$/, '').trim()),
    [
      `-i ${iface} -j ${chain}`,
      `-s ! ${mac} -j DROP`,
      `-p IPv4 --ip-src ${address} -j RETURN`,
      `-p ARP --arp-ip-src ${address} --arp-mac-src ${mac} -j RETURN`,
      '-j DROP',
    ],
  );
}

test('guardInterface refuses a bad namespace, interface, MAC or address, and installs nothing', async (t) => {
  if (skip) return t.skip(skip);
  const networks = await networksFor(t, 'br0=10.213.11.1/24');
  const good = {
    namespace: networks.namespace,
    iface: 'sgt000000000001',
    mac: '02:00:00:00:00:01',
    address: '10.213.11.2',
  };
  const cases: [Partial<typeof good>, ReturnType<typeof refusal>][] = [
    [{ namespace: 'sigil-no-such' }, refusal('not_found', /no such network namespace/)],
    [{ namespace: '../x' }, refusal('invalid_argument', /not a valid network namespace name/)],
    [{ iface: 'a name' }, refusal('invalid_argument', /not a valid interface name/)],
    [{ mac: '02:00:00:00:00:0G' }, refusal('invalid_argument', /MAC .*six lowercase hex octets/)],
    [{ address: '10.213.11.256' }, refusal('invalid_argument', /expected an IPv4 address/)],
    [{ address: '10.213.11.2/24' }, refusal('invalid_argument', /expected an IPv4 address/)],
  ];
  for (const [change, expected] of cases) {
    await assert.rejects(guardInterface({ ...good, ...change }), expected);
    assert.deepEqual(await guardRulesOf(networks.namespace, good.iface), []);
  }
});

test('a process that takes another workload address cannot reach the metadata relay with it once its interface is guarded', async (t) => {
  if (skip) return t.skip(skip);
  const networks = await networksFor(t, 'br0=10.213.12.1/24');
  const socket = await metadataSocketFor(t);
  const relay = await startMetadataRelay({ namespace: networks.namespace, socketPath: socket.path });
  t.after(() => relay.close());
  const victimPid = await netnsProcessFor(t);
  const attackerPid = await netnsProcessFor(t);
  const victim = await networks.attach(victimPid, 'br0', '/alice//victim', ['br0']);
  const attacker = await networks.attach(attackerPid, 'br0', '/mallory//attacker', ['br0']);
  // The bridge is in the daemon's namespace, not the host's: its MAC is read there.
  const bridgeMacInNamespace = execFileSync(
    'ip',
    ['netns', 'exec', networks.namespace, 'cat', '/sys/class/net/br0/address'],
    { encoding: 'utf8' },
  ).trim();
  assert.notEqual(bridgeMacInNamespace, '');

  // Each gets its own document.
  assert.equal(await metadataFrom(victimPid), `document-of ${victim.address}`);
  assert.equal(await metadataFrom(attackerPid), `document-of ${attacker.address}`);

  const namespaceIp = (...args: string[]) =>
    execFileSync('ip', ['-netns', networks.namespace, ...args], { encoding: 'utf8' });
  /** The attacker takes `address` (and `mac`) and announces it: an ARP request to the gateway from it. */
  const takeAddress = async (address: string, mac?: string) => {
    await readdress(attackerPid, address, victim.gateway, bridgeMacInNamespace, mac);
    namespaceIp('neigh', 'flush', 'to', address);
    await inPid(
      attackerPid,
      BUSYBOX,
      'arping',
      '-c',
      '1',
      '-w',
      '2',
      '-I',
      'eth0',
      '-s',
      address,
      victim.gateway,
    ).catch(() => undefined);
  };

  // Unguarded, the attack works: the attacker gets the victim's document.
  await takeAddress(victim.address);
  assert.equal(await metadataFrom(attackerPid), `document-of ${victim.address}`, 'the attack is real');
  await readdress(attackerPid, attacker.address, attacker.gateway, bridgeMacInNamespace);
  namespaceIp('neigh', 'flush', 'to', victim.address);

  // Guarded, its own address still reaches the service.
  await guardInterface({
    namespace: networks.namespace,
    iface: attacker.hostInterface,
    mac: attacker.mac,
    address: attacker.address,
  });
  assertGuarded(
    await guardRulesOf(networks.namespace, attacker.hostInterface),
    attacker.hostInterface,
    attacker.mac,
    attacker.address,
  );
  assert.equal(await metadataFrom(attackerPid), `document-of ${attacker.address}`);
  const seenBefore = socket.sources.length;

  // Another address: its ARP teaches the namespace nothing, and its requests are dropped.
  await takeAddress(victim.address);
  assert.doesNotMatch(namespaceIp('neigh', 'show', victim.address), new RegExp(attacker.mac));
  assert.equal(await metadataFrom(attackerPid), '', 'another address is dropped');
  // Even with the namespace's ARP entry already pointing at the attacker, IPv4 from that address is dropped.
  namespaceIp('neigh', 'replace', victim.address, 'lladdr', attacker.mac, 'dev', 'br0', 'nud', 'permanent');
  assert.equal(await metadataFrom(attackerPid), '', 'another address with ARP already poisoned is dropped');
  namespaceIp('neigh', 'del', victim.address, 'dev', 'br0');
  // Another MAC too (the victim's, with its address): dropped before the bridge learns it on the attacker's port.
  await takeAddress(victim.address, victim.mac);
  assert.equal(await metadataFrom(attackerPid), '', 'another MAC is dropped');
  assert.doesNotMatch(
    execFileSync('bridge', ['-n', networks.namespace, 'fdb', 'show', 'brport', attacker.hostInterface], {
      encoding: 'utf8',
    }),
    new RegExp(victim.mac),
  );
  assert.deepEqual(socket.sources.slice(seenBefore), [], 'the relay saw nothing from the attacker');

  // The victim is unaffected.
  namespaceIp('neigh', 'flush', 'to', victim.address);
  assert.equal(await metadataFrom(victimPid), `document-of ${victim.address}`);
  assert.equal(victim.mac, macAddressFor('/alice//victim'));

  await removeGuard(networks.namespace, attacker.hostInterface);
  assert.deepEqual(await guardRulesOf(networks.namespace, attacker.hostInterface), []);
  const listing = execFileSync('ip', ['netns', 'exec', networks.namespace, EBTABLES, '-t', 'nat', '-L'], {
    encoding: 'utf8',
  });
  assert.doesNotMatch(listing, new RegExp(guardChainFor(attacker.hostInterface)));
  // Removing it twice is fine.
  await removeGuard(networks.namespace, attacker.hostInterface);
});

test('attachTap makes a guarded tap with an address from the pool; detach removes tap, rules and frees the address', async (t) => {
  if (skip) return t.skip(skip);
  const networks = await networksFor(t, 'br0=10.213.13.1/24');
  await assert.rejects(
    networks.attachTap('br0', '/c//vm', []),
    refusal('permission_denied', /not among the bridges your policy allows/),
  );
  await assert.rejects(networks.attachTap('br9', '/c//vm', ['br9']), refusal('not_found', /not configured/));
  assert.equal(networks.tapOf('/c//vm'), undefined);

  const tap = await networks.attachTap('br0', '/c//vm', ['br0']);
  assert.equal(tap.mac, macAddressFor('/c//vm'));
  assert.equal(tap.gateway, '10.213.13.1');
  assert.equal(tap.namespace, networks.namespace);
  assert.match(tap.address, /^10\.213\.13\.\d+$/);
  assert.match(
    execFileSync('ip', ['-netns', networks.namespace, 'link', 'show', tap.tap], { encoding: 'utf8' }),
    /master br0/,
  );
  assertGuarded(await guardRulesOf(networks.namespace, tap.tap), tap.tap, tap.mac, tap.address);
  await assert.rejects(
    networks.attachTap('br0', '/c//vm', ['br0']),
    refusal('already_exists', /already attached/),
  );
  // A veth workload never gets the tap's address.
  const pid = await netnsProcessFor(t);
  const veth = await networks.attach(pid, 'br0', '/c//web', ['br0']);
  assert.notEqual(veth.address, tap.address);

  await networks.detach('/c//vm');
  assert.equal(networks.tapOf('/c//vm'), undefined);
  assert.throws(() =>
    execFileSync('ip', ['-netns', networks.namespace, 'link', 'show', tap.tap], { stdio: 'ignore' }),
  );
  assert.deepEqual(await guardRulesOf(networks.namespace, tap.tap), []);
  // The address is free again: the same key gets it back.
  const again = await networks.attachTap('br0', '/c//vm', ['br0']);
  assert.equal(again.address, tap.address);
  // close() removes it too.
  await networks.close();
  assert.equal(existsSync(`/run/netns/${networks.namespace}`), false);
});
