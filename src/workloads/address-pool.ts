// A bridge's configuration (`br0=10.77.0.1/24`) and the IPv4 addresses it
// hands to workloads. The bridge's own address is the workloads' gateway; the
// network and broadcast addresses are never handed out. A workload key gets
// the same address every time it is free (so a restarted workload keeps its
// address), else the next free one.
import { createHash } from 'node:crypto';
import { invalid, SigilError } from '../errors.ts';

/** The kernel's limit for an interface name is 15 bytes (IFNAMSIZ - 1). */
export const MAX_INTERFACE_NAME_LENGTH = 15;
/** /30 is the smallest range with room for a gateway and one workload. */
export const MAX_BRIDGE_PREFIX_LENGTH = 30;
const INTERFACE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const IPV4 = /^(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$/;
const PREFIX = /^(0|[1-9][0-9]?)$/;

/** A bridge as configured on the daemon: its name, its address (the gateway) and its range. */
export interface BridgeConfig {
  readonly name: string;
  /** The bridge's address: the workloads' default route. */
  readonly gateway: string;
  readonly prefixLength: number;
  /** The range in CIDR form, e.g. `10.77.0.0/24`. */
  readonly network: string;
}

/** A value quoted for a one-line message, cut when long. */
function quoted(value: string): string {
  return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
}

/** `name` if the kernel would accept it as an interface name, else an invalid_argument. */
export function checkInterfaceName(name: unknown, what = 'interface name'): string {
  if (typeof name !== 'string' || name === '') throw invalid(`${what}: must be a non-empty string`);
  if (name.length > MAX_INTERFACE_NAME_LENGTH) {
    throw invalid(
      `${what} ${quoted(name)}: is ${name.length} characters, an interface name has at most ${MAX_INTERFACE_NAME_LENGTH}`,
    );
  }
  if (!INTERFACE_NAME.test(name)) {
    throw invalid(
      `${what} ${quoted(name)}: may hold only letters, digits, ".", "_" and "-", and starts with a letter or digit`,
    );
  }
  return name;
}

/** A dotted-quad IPv4 address as a 32-bit number; null when it is not one. */
export function parseIpv4(text: string): number | null {
  const match = IPV4.exec(text);
  if (!match) return null;
  const octets = match.slice(1).map(Number);
  if (octets.some((octet) => octet > 255)) return null;
  return ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

function maskOf(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/** Parses `NAME=A.B.C.D/PREFIX`; anything else is an invalid_argument naming the problem. */
export function parseBridgeConfig(spec: unknown): BridgeConfig {
  if (typeof spec !== 'string') throw invalid('bridge: must be a string NAME=ADDRESS/PREFIX');
  const shown = quoted(spec);
  const equals = spec.indexOf('=');
  if (equals < 0) throw invalid(`bridge ${shown}: expected NAME=ADDRESS/PREFIX, e.g. br0=10.77.0.1/24`);
  const name = checkInterfaceName(spec.slice(0, equals), 'bridge name');
  const cidr = spec.slice(equals + 1);
  const slash = cidr.indexOf('/');
  if (slash < 0) throw invalid(`bridge ${shown}: the address needs a prefix length, e.g. 10.77.0.1/24`);
  const address = parseIpv4(cidr.slice(0, slash));
  if (address === null)
    throw invalid(`bridge ${shown}: ${quoted(cidr.slice(0, slash))} is not an IPv4 address`);
  const prefixText = cidr.slice(slash + 1);
  if (!PREFIX.test(prefixText) || Number(prefixText) > 32) {
    throw invalid(`bridge ${shown}: the prefix length must be 0–32 (IPv4), got ${quoted(prefixText)}`);
  }
  const prefixLength = Number(prefixText);
  if (prefixLength > MAX_BRIDGE_PREFIX_LENGTH) {
    throw invalid(
      `bridge ${shown}: a /${prefixLength} leaves no address for a workload; use /${MAX_BRIDGE_PREFIX_LENGTH} or wider`,
    );
  }
  if (prefixLength < 8)
    throw invalid(`bridge ${shown}: a /${prefixLength} is wider than sigil supports (/8 at most)`);
  const mask = maskOf(prefixLength);
  const network = (address & mask) >>> 0;
  const broadcast = (network | ~mask) >>> 0;
  if (address === network || address === broadcast) {
    throw invalid(`bridge ${shown}: the bridge address must not be the range's network or broadcast address`);
  }
  return {
    name,
    gateway: formatIpv4(address),
    prefixLength,
    network: `${formatIpv4(network)}/${prefixLength}`,
  };
}

/** Whether two configured ranges share any address (a namespace routes each range to one bridge). */
export function rangesOverlap(a: BridgeConfig, b: BridgeConfig): boolean {
  const mask = maskOf(Math.min(a.prefixLength, b.prefixLength));
  return (parseIpv4(a.gateway)! & mask) >>> 0 === (parseIpv4(b.gateway)! & mask) >>> 0;
}

/** The addresses of one bridge's range, handed out per workload key. */
export class AddressPool {
  readonly bridge: BridgeConfig;
  readonly #first: number;
  readonly #gateway: number;
  /** Usable addresses: the range without network, broadcast and gateway. */
  readonly #size: number;
  readonly #taken = new Map<number, string>();

  constructor(bridge: BridgeConfig) {
    this.bridge = bridge;
    const gateway = parseIpv4(bridge.gateway)!;
    const mask = maskOf(bridge.prefixLength);
    this.#first = ((gateway & mask) >>> 0) + 1;
    this.#gateway = gateway;
    this.#size = 2 ** (32 - bridge.prefixLength) - 3;
  }

  /** The workload key's own address when free, else the next free one; resource_exhausted when full. */
  allocate(key: string): string {
    if (this.#taken.size >= this.#size) {
      throw new SigilError(
        'resource_exhausted',
        `bridge ${this.bridge.name}: all ${this.#size} addresses of ${this.bridge.network} are in use`,
      );
    }
    const start = createHash('sha256').update(`sigil-address:${key}`).digest().readUInt32BE(0) % this.#size;
    for (let step = 0; step < this.#size; step++) {
      const address = this.#addressAt((start + step) % this.#size);
      if (!this.#taken.has(address)) {
        this.#taken.set(address, key);
        return formatIpv4(address);
      }
    }
    throw new SigilError('internal', `bridge ${this.bridge.name}: no free address found although not full`);
  }

  /** Frees `address` (no-op when it is not taken). */
  release(address: string): void {
    const value = parseIpv4(address);
    if (value !== null) this.#taken.delete(value);
  }

  get inUse(): number {
    return this.#taken.size;
  }

  get capacity(): number {
    return this.#size;
  }

  /** The index-th usable address: the range's hosts in order, the gateway skipped. */
  #addressAt(index: number): number {
    const address = this.#first + index;
    return address >= this.#gateway ? address + 1 : address;
  }
}
