// Workload networks: bridges the daemon configures (`br0=10.77.0.1/24`), and
// one veth pair per attached workload. The bridges live in a network
// namespace the daemon owns (created here as `sigil-<id>`, or one named by the
// operator), so nothing of the host's own interfaces, routes or firewall is
// touched: a workload reaches its bridge's peers and the bridge address, and
// whatever the operator connects to that namespace.
//
// Per workload:
//   daemon netns:   BRIDGE ── sgvXXXXXXXXXXXX (host end, named from the key)
//   workload netns: eth0 (deterministic MAC, address from the bridge's range),
//                   lo up, default route via the bridge address
// The peer is created directly inside the workload's namespace as eth0 (`ip
// link add … peer name eth0 netns PID`), so no temporary name can clash.
//
// Everything goes through iproute2's `ip` (and util-linux `nsenter` to act in
// the workload's namespace), run with argument arrays, never a shell.
//
// A VM workload gets a tap instead (attachTap): made in the daemon's
// namespace on the bridge, its address from the same pool as the veths, and
// guarded (vm-spoof-guard.ts) before qemu opens it, since the VM's own kernel
// could otherwise claim another workload's address. Its address reaches the
// guest on the kernel command line (vm-launcher.ts).
//
// Not done yet: bridges in the host's namespace (configured otherwise),
// adopting attachments after a daemon restart (the host end's name is derived
// from the key, so a restart can find and remove stale ones), IPv6, and any
// uplink/NAT out of the daemon's namespace.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { alreadyExists, invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { AddressPool, type BridgeConfig, parseBridgeConfig, rangesOverlap } from './address-pool.ts';
import { macAddressFor } from './mac-address.ts';
import { guardInterface, removeGuard } from './vm-spoof-guard.ts';
import { createTapOnBridge, removeTap, tapNameFor } from './vm-tap.ts';

export interface WorkloadNetworksOptions {
  /** Bridge configurations, `NAME=ADDRESS/PREFIX` each, e.g. `br0=10.77.0.1/24`. */
  readonly bridges: readonly string[];
  /**
   * Where the bridges live: `{ create: id }` makes (and on close removes) the
   * namespace `sigil-<id>`; `{ existing: name }` uses a named namespace the
   * operator made (only our interfaces are removed on close). Default: create
   * with a random id.
   */
  readonly namespace?: { readonly create: string } | { readonly existing: string };
}

/** One workload's place on a bridge. */
export interface Attachment {
  readonly workloadKey: string;
  readonly workloadPid: number;
  readonly bridge: string;
  /** The workload's address on the bridge (without prefix). */
  readonly address: string;
  readonly prefixLength: number;
  /** The bridge's address: the workload's default route. */
  readonly gateway: string;
  readonly mac: string;
  /** The veth end on the bridge, in the daemon's namespace (for statistics). */
  readonly hostInterface: string;
  /** The interface inside the workload's namespace. */
  readonly workloadInterface: 'eth0';
}

/** A VM workload's place on a bridge: a guarded tap in the daemon's namespace that qemu opens. */
export interface TapAttachment {
  readonly workloadKey: string;
  readonly bridge: string;
  /** The guest's address on the bridge (without prefix). */
  readonly address: string;
  readonly prefixLength: number;
  /** The bridge's address: the guest's default route. */
  readonly gateway: string;
  /** The guest NIC's MAC: the only source MAC the tap may send. */
  readonly mac: string;
  /** The tap, in `namespace`. */
  readonly tap: string;
  /** The daemon's bridges' namespace, where qemu must run to open the tap. */
  readonly namespace: string;
}

export const MAX_WORKLOAD_KEY_LENGTH = 256;
const NAMESPACE_PREFIX = 'sigil-';
const NAMESPACE_ID = /^[a-z0-9][a-z0-9-]{0,31}$/;
const EXISTING_NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// Host-end names: 'sgv' + 12 hex digits = 15, the kernel's limit; bridges may not take the prefix.
const HOST_END_PREFIX = 'sgv';
const TAP_PREFIX = 'sgt';
const IP_CANDIDATES = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];
const NSENTER_CANDIDATES = ['/usr/bin/nsenter', '/bin/nsenter', '/usr/sbin/nsenter'];
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TOOL_TIMEOUT_MS = 10_000;
const NETNS_DIR = '/run/netns';
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** A value quoted for a one-line message, cut when long. */
function quoted(value: string): string {
  return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
}

/** The veth end on the bridge for `workloadKey`: stable, so a restarted daemon can find stale ones. */
export function hostInterfaceFor(workloadKey: string): string {
  return (
    HOST_END_PREFIX + createHash('sha256').update(`sigil-veth:${workloadKey}`).digest('hex').slice(0, 12)
  );
}

interface Tools {
  ip: string;
  nsenter: string;
}

function findTools(): Tools {
  const ip = IP_CANDIDATES.find((path) => existsSync(path));
  if (!ip)
    throw preconditionFailed(
      'iproute2 `ip` is not installed: workload networks need it (apt-get install iproute2)',
    );
  const nsenter = NSENTER_CANDIDATES.find((path) => existsSync(path));
  if (!nsenter) throw preconditionFailed('util-linux `nsenter` is not installed: workload networks need it');
  return { ip, nsenter };
}

/** Runs a tool; a failure is an internal SigilError with its first stderr line. */
function run(program: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      program,
      args,
      { env: TOOL_ENV, timeout: TOOL_TIMEOUT_MS, maxBuffer: 1024 * 1024 },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        const reason = String(stderr).trim().split('\n')[0] || messageOf(error).split('\n')[0];
        reject(
          new SigilError('internal', `${program.split('/').pop()} ${args.join(' ')}: ${reason}`, {
            cause: error,
          }),
        );
      },
    );
  });
}

function checkedBridges(specs: readonly string[]): Map<string, BridgeConfig> {
  if (!Array.isArray(specs)) throw invalid('bridges: must be a list of NAME=ADDRESS/PREFIX');
  const bridges = new Map<string, BridgeConfig>();
  for (const spec of specs) {
    const bridge = parseBridgeConfig(spec);
    for (const prefix of [HOST_END_PREFIX, TAP_PREFIX]) {
      if (bridge.name.startsWith(prefix)) {
        throw invalid(
          `bridge ${quoted(bridge.name)}: names starting with "${prefix}" are sigil's ${prefix === TAP_PREFIX ? 'taps' : 'veth ends'}`,
        );
      }
    }
    if (bridge.name === 'lo' || bridge.name === 'eth0') {
      throw invalid(`bridge ${quoted(bridge.name)}: the name is taken by a standard interface`);
    }
    if (bridges.has(bridge.name)) throw invalid(`bridge ${quoted(bridge.name)}: configured twice`);
    for (const other of bridges.values()) {
      if (rangesOverlap(bridge, other)) {
        throw invalid(
          `bridge ${bridge.name}: its range ${bridge.network} overlaps ${other.name}'s ${other.network}`,
        );
      }
    }
    bridges.set(bridge.name, bridge);
  }
  return bridges;
}

function checkedNamespace(choice: WorkloadNetworksOptions['namespace']): { name: string; owned: boolean } {
  if (choice === undefined) return { name: NAMESPACE_PREFIX + randomBytes(6).toString('hex'), owned: true };
  if ('create' in choice) {
    if (typeof choice.create !== 'string' || !NAMESPACE_ID.test(choice.create)) {
      throw invalid(
        `namespace id ${quoted(String(choice.create))}: must be 1–32 lowercase letters, digits and "-", starting with a letter or digit`,
      );
    }
    return { name: NAMESPACE_PREFIX + choice.create, owned: true };
  }
  if (typeof choice.existing !== 'string' || !EXISTING_NAMESPACE.test(choice.existing)) {
    throw invalid(`namespace ${quoted(String(choice.existing))}: not a valid network namespace name`);
  }
  if (!existsSync(`${NETNS_DIR}/${choice.existing}`)) {
    throw notFound(`namespace ${quoted(choice.existing)}: no such network namespace (ip netns list)`);
  }
  return { name: choice.existing, owned: false };
}

function checkedKey(workloadKey: unknown): string {
  if (typeof workloadKey !== 'string' || workloadKey === '')
    throw invalid('workload key: must be a non-empty string');
  if (workloadKey.length > MAX_WORKLOAD_KEY_LENGTH) {
    throw invalid(`workload key: longer than ${MAX_WORKLOAD_KEY_LENGTH} characters`);
  }
  if (CONTROL.test(workloadKey))
    throw invalid(`workload key ${quoted(workloadKey)}: contains a control character`);
  return workloadKey;
}

function checkedPid(pid: unknown): number {
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid < 2) {
    throw invalid(`workload pid ${quoted(String(pid))}: must be a process id above 1`);
  }
  if (!existsSync(`/proc/${pid}/ns/net`)) throw notFound(`workload pid ${pid}: no such process`);
  return pid;
}

/**
 * The daemon's bridges and the workloads attached to them. Make one with
 * openWorkloadNetworks; close() removes every interface it made and the
 * namespace if it made it.
 */
export class WorkloadNetworks {
  /** The network namespace holding the bridges (`ip netns` name). */
  readonly namespace: string;
  readonly #ownsNamespace: boolean;
  readonly #tools: Tools;
  readonly #pools: Map<string, AddressPool>;
  readonly #attachments = new Map<string, Attachment>();
  readonly #taps = new Map<string, TapAttachment>();
  /** Keys with an attach or detach under way: a second call for the same key is refused meanwhile. */
  readonly #busy = new Set<string>();
  #createdBridges: string[] = [];
  #closed = false;

  private constructor(namespace: string, owned: boolean, tools: Tools, bridges: Map<string, BridgeConfig>) {
    this.namespace = namespace;
    this.#ownsNamespace = owned;
    this.#tools = tools;
    this.#pools = new Map([...bridges].map(([name, config]) => [name, new AddressPool(config)]));
  }

  /** Checks the configuration, then makes the namespace (when owned) and the bridges in it. */
  static async open(options: WorkloadNetworksOptions): Promise<WorkloadNetworks> {
    const bridges = checkedBridges(options.bridges);
    const { name, owned } = checkedNamespace(options.namespace);
    if (process.getuid?.() !== 0)
      throw preconditionFailed('workload networks need root (network namespaces)');
    const tools = findTools();
    if (owned && existsSync(`${NETNS_DIR}/${name}`)) {
      throw alreadyExists(
        `namespace ${quoted(name)}: already exists; pick another id or remove it (ip netns del)`,
      );
    }
    const networks = new WorkloadNetworks(name, owned, tools, bridges);
    try {
      await networks.#setUp();
    } catch (error) {
      await networks.close().catch(() => undefined);
      throw error;
    }
    return networks;
  }

  /** The configured bridges. */
  get bridges(): BridgeConfig[] {
    return [...this.#pools.values()].map((pool) => pool.bridge);
  }

  /** The attachment of `workloadKey`, if any. */
  attachmentOf(workloadKey: string): Attachment | undefined {
    return this.#attachments.get(workloadKey);
  }

  get attachments(): Attachment[] {
    return [...this.#attachments.values()];
  }

  /** The tap of VM workload `workloadKey`, if any. */
  tapOf(workloadKey: string): TapAttachment | undefined {
    return this.#taps.get(workloadKey);
  }

  async #setUp(): Promise<void> {
    if (this.#ownsNamespace) await this.#ip('netns', 'add', this.namespace);
    await this.#ipIn('link', 'set', 'lo', 'up');
    for (const pool of this.#pools.values()) {
      const { name, gateway, prefixLength } = pool.bridge;
      await this.#ipIn('link', 'add', name, 'type', 'bridge');
      this.#createdBridges.push(name);
      await this.#ipIn('address', 'add', `${gateway}/${prefixLength}`, 'brd', '+', 'dev', name);
      await this.#ipIn('link', 'set', name, 'up');
    }
  }

  /** The refusals attach and attachTap share: closed, unknown bridge, not allowed, already attached. */
  #checkedAttach(
    bridgeName: string,
    workloadKey: string,
    allowed: readonly string[],
  ): { key: string; pool: AddressPool } {
    if (this.#closed) throw preconditionFailed('workload networks are closed');
    const key = checkedKey(workloadKey);
    const pool = this.#pools.get(bridgeName);
    if (!pool) throw notFound(`bridge ${quoted(String(bridgeName))}: not configured on this node`);
    if (!Array.isArray(allowed) || !allowed.includes(bridgeName)) {
      throw new SigilError(
        'permission_denied',
        `bridge ${bridgeName}: not among the bridges your policy allows`,
      );
    }
    if (this.#attachments.has(key) || this.#taps.has(key) || this.#busy.has(key)) {
      throw alreadyExists(`workload ${quoted(key)}: already attached to a network`);
    }
    return { key, pool };
  }

  /**
   * Puts the workload whose init has host PID `workloadPid` on `bridgeName`,
   * which must be configured and in `allowed` (the caller's policy). Refusals
   * change nothing; a failure half-way undoes what was done.
   */
  async attach(
    workloadPid: number,
    bridgeName: string,
    workloadKey: string,
    allowed: readonly string[],
  ): Promise<Attachment> {
    const { key, pool } = this.#checkedAttach(bridgeName, workloadKey, allowed);
    const pid = checkedPid(workloadPid);
    const hostInterface = hostInterfaceFor(key);
    for (const other of this.#attachments.values()) {
      // Two keys sharing 48 bits of SHA-256: astronomically unlikely, but refused rather than confused.
      if (other.hostInterface === hostInterface)
        throw alreadyExists(`veth ${hostInterface}: taken by another workload`);
    }

    const address = pool.allocate(key);
    this.#busy.add(key);
    const attachment: Attachment = {
      workloadKey: key,
      workloadPid: pid,
      bridge: bridgeName,
      address,
      prefixLength: pool.bridge.prefixLength,
      gateway: pool.bridge.gateway,
      mac: macAddressFor(key),
      hostInterface,
      workloadInterface: 'eth0',
    };
    let created = false;
    try {
      await this.#ipIn(
        'link',
        'add',
        hostInterface,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'address',
        attachment.mac,
        'netns',
        String(pid),
      );
      created = true;
      await this.#ipIn('link', 'set', hostInterface, 'master', bridgeName);
      await this.#ipIn('link', 'set', hostInterface, 'up');
      await this.#ipInWorkload(pid, 'link', 'set', 'lo', 'up');
      await this.#ipInWorkload(
        pid,
        'address',
        'add',
        `${address}/${attachment.prefixLength}`,
        'brd',
        '+',
        'dev',
        'eth0',
      );
      await this.#ipInWorkload(pid, 'link', 'set', 'eth0', 'up');
      await this.#ipInWorkload(pid, 'route', 'add', 'default', 'via', attachment.gateway, 'dev', 'eth0');
    } catch (error) {
      if (created) await this.#deleteHostEnd(hostInterface).catch(() => undefined);
      pool.release(address);
      throw error;
    } finally {
      this.#busy.delete(key);
    }
    this.#attachments.set(key, attachment);
    return attachment;
  }

  /**
   * Puts VM workload `workloadKey` on `bridgeName` (configured, and in
   * `allowed`): a tap on the bridge, an address from its pool, and the
   * anti-spoofing guard for both, all before qemu (started in `namespace`)
   * opens the tap. Refusals change nothing; a failure half-way undoes what
   * was done.
   */
  async attachTap(
    bridgeName: string,
    workloadKey: string,
    allowed: readonly string[],
  ): Promise<TapAttachment> {
    const { key, pool } = this.#checkedAttach(bridgeName, workloadKey, allowed);
    const tap = tapNameFor(key);
    for (const other of this.#taps.values()) {
      if (other.tap === tap) throw alreadyExists(`tap ${tap}: taken by another workload`);
    }
    const address = pool.allocate(key);
    this.#busy.add(key);
    const attachment: TapAttachment = {
      workloadKey: key,
      bridge: bridgeName,
      address,
      prefixLength: pool.bridge.prefixLength,
      gateway: pool.bridge.gateway,
      mac: macAddressFor(key),
      tap,
      namespace: this.namespace,
    };
    let created = false;
    try {
      // A tap left by a daemon that died goes first: its name is ours.
      await removeTap(this.namespace, tap);
      await createTapOnBridge(this.namespace, bridgeName, tap);
      created = true;
      await guardInterface({ namespace: this.namespace, iface: tap, mac: attachment.mac, address });
    } catch (error) {
      if (created) await removeTap(this.namespace, tap).catch(() => undefined);
      pool.release(address);
      throw error;
    } finally {
      this.#busy.delete(key);
    }
    this.#taps.set(key, attachment);
    return attachment;
  }

  /** Removes the workload's veth pair (both ends go with one) or its tap and guard, and frees its address. */
  async detach(workloadKey: string): Promise<void> {
    const key = checkedKey(workloadKey);
    const tapAttachment = this.#taps.get(key);
    if (tapAttachment) return this.#detachTap(tapAttachment);
    const attachment = this.#attachments.get(key);
    if (!attachment) throw notFound(`workload ${quoted(key)}: not attached to a network`);
    this.#attachments.delete(key);
    this.#busy.add(key);
    try {
      await this.#deleteHostEnd(attachment.hostInterface);
    } finally {
      this.#busy.delete(key);
      this.#pools.get(attachment.bridge)?.release(attachment.address);
    }
  }

  /** The tap first (so it never carries a frame unguarded), then its guard, then the address. */
  async #detachTap(attachment: TapAttachment): Promise<void> {
    const key = attachment.workloadKey;
    this.#taps.delete(key);
    this.#busy.add(key);
    try {
      await removeTap(this.namespace, attachment.tap);
      await removeGuard(this.namespace, attachment.tap);
    } finally {
      this.#busy.delete(key);
      this.#pools.get(attachment.bridge)?.release(attachment.address);
    }
  }

  /** Detaches everything, removes the bridges, and the namespace if this made it. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    const failures: string[] = [];
    for (const key of [...this.#attachments.keys(), ...this.#taps.keys()]) {
      await this.detach(key).catch((error) => failures.push(messageOf(error)));
    }
    // A namespace already gone took its interfaces with it.
    const bridges = this.#createdBridges.splice(0).reverse();
    if (existsSync(`${NETNS_DIR}/${this.namespace}`)) {
      for (const bridge of bridges) {
        await this.#ipIn('link', 'delete', bridge).catch((error) => failures.push(messageOf(error)));
      }
    }
    if (this.#ownsNamespace && existsSync(`${NETNS_DIR}/${this.namespace}`)) {
      await this.#ip('netns', 'delete', this.namespace).catch((error) => failures.push(messageOf(error)));
    }
    if (failures.length > 0) {
      throw new SigilError('internal', `closing workload networks: ${failures.join('; ')}`);
    }
  }

  /** Deletes a host end; one already gone (its workload's namespace ended, taking the pair) is fine. */
  async #deleteHostEnd(hostInterface: string): Promise<void> {
    try {
      await this.#ipIn('link', 'delete', hostInterface);
    } catch (error) {
      const gone = await this.#ipIn('link', 'show', hostInterface).then(
        () => false,
        () => true,
      );
      if (!gone) throw error;
    }
  }

  #ip(...args: string[]): Promise<string> {
    return run(this.#tools.ip, args);
  }

  /** `ip` in the daemon's namespace. */
  #ipIn(...args: string[]): Promise<string> {
    return run(this.#tools.ip, ['-netns', this.namespace, ...args]);
  }

  /** `ip` in the workload's network namespace, entered through its init's PID. */
  #ipInWorkload(pid: number, ...args: string[]): Promise<string> {
    return run(this.#tools.nsenter, [`--net=/proc/${pid}/ns/net`, '--', this.#tools.ip, ...args]);
  }
}

/** Opens the daemon's workload networks (see WorkloadNetworks). */
export function openWorkloadNetworks(options: WorkloadNetworksOptions): Promise<WorkloadNetworks> {
  return WorkloadNetworks.open(options);
}
