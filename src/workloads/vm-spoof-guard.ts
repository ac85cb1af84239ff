// Anti-spoofing for a VM's tap. A VM runs its own kernel: nothing stops it
// from giving itself another workload's address (or MAC) and asking the
// metadata service, which picks its document by source address, for that
// workload's identity. So every frame the tap brings into the bridge must
// carry the VM's own MAC and, for IPv4 and ARP, its own address; anything
// else (another address, another MAC, IPv6, VLAN-tagged frames, other
// protocols) is dropped as it enters the bridge: in PREROUTING, before the
// bridge learns its source MAC (a frame dropped later, in INPUT or FORWARD,
// would already have taught the bridge to send another workload's frames,
// its metadata answers included, to the tap), and so before it reaches a
// peer or the namespace's own stack, where the metadata relay listens.
//
// The rules are ebtables (the nf_tables flavour here: iptables' ebtables-nft),
// in the bridges' namespace, table nat, in a chain of the tap's own that
// PREROUTING jumps to for frames in from the tap; removing the guard removes
// the jump and the chain, so nothing is left when the tap goes.
//
//   -s ! MAC                         → DROP
//   -p IPv4 --ip-src ADDRESS         → RETURN (accepted by the rest)
//   -p ARP --arp-ip-src ADDRESS --arp-mac-src MAC → RETURN
//   anything else                    → DROP
//
// Chosen over nft's bridge family (no `nft` here) and over a routed /32 tap
// with rp_filter (the VM would no longer be a peer on its bridge like a
// process workload).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';

const EBTABLES_CANDIDATES = ['/usr/sbin/ebtables', '/sbin/ebtables', '/usr/bin/ebtables'];
const NSENTER_CANDIDATES = ['/usr/bin/nsenter', '/bin/nsenter', '/usr/sbin/nsenter'];
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TOOL_TIMEOUT_MS = 10_000;
const NETNS_DIR = '/run/netns';
const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const INTERFACE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const CHAIN_PREFIX = 'SIGIL-';
const HOOK = 'PREROUTING';

export interface SpoofGuard {
  /** The bridges' network namespace (`ip netns` name). */
  readonly namespace: string;
  /** The tap (a port of a bridge in that namespace). */
  readonly iface: string;
  /** The only source MAC the tap may send. */
  readonly mac: string;
  /** The only source IPv4 address it may send or claim in ARP. */
  readonly address: string;
}

/** The guard's chain: the interface's name after a fixed prefix (at most 21 characters). */
export function guardChainFor(iface: string): string {
  return CHAIN_PREFIX + iface;
}

interface Tools {
  ebtables: string;
  nsenter: string;
}

function findTools(): Tools {
  const ebtables = EBTABLES_CANDIDATES.find((path) => existsSync(path));
  if (!ebtables)
    throw preconditionFailed(
      'ebtables is not installed: VM networking needs it to stop address spoofing (apt-get install iptables)',
    );
  const nsenter = NSENTER_CANDIDATES.find((path) => existsSync(path));
  if (!nsenter) throw preconditionFailed('util-linux `nsenter` is not installed: VM networking needs it');
  return { ebtables, nsenter };
}

/** ebtables calls of this process, one at a time: each reads the table, changes it and writes it back. */
let queue: Promise<unknown> = Promise.resolve();

function ebtablesIn(tools: Tools, namespace: string, args: readonly string[]): Promise<string> {
  const next = queue.then(() => ebtablesNow(tools, namespace, args));
  queue = next.catch(() => undefined);
  return next;
}

function ebtablesNow(tools: Tools, namespace: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      tools.nsenter,
      [`--net=${NETNS_DIR}/${namespace}`, '--', tools.ebtables, '-t', 'nat', ...args],
      { env: TOOL_ENV, timeout: TOOL_TIMEOUT_MS, maxBuffer: 1024 * 1024 },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        const reason = String(stderr).trim().split('\n')[0] || messageOf(error).split('\n')[0];
        reject(new SigilError('internal', `ebtables ${args.join(' ')}: ${reason}`, { cause: error }));
      },
    );
  });
}

function checkedGuard(guard: SpoofGuard): SpoofGuard {
  if (typeof guard.namespace !== 'string' || !NAMESPACE.test(guard.namespace))
    throw invalid(`namespace ${JSON.stringify(String(guard.namespace))}: not a valid network namespace name`);
  if (!existsSync(`${NETNS_DIR}/${guard.namespace}`))
    throw notFound(`namespace ${guard.namespace}: no such network namespace`);
  if (typeof guard.iface !== 'string' || !INTERFACE.test(guard.iface))
    throw invalid(`interface ${JSON.stringify(String(guard.iface))}: not a valid interface name`);
  if (typeof guard.mac !== 'string' || !MAC.test(guard.mac))
    throw invalid(`MAC ${JSON.stringify(String(guard.mac))}: expected six lowercase hex octets`);
  const address = IPV4.exec(String(guard.address));
  if (!address || address.slice(1).some((octet) => Number(octet) > 255))
    throw invalid(`address ${JSON.stringify(String(guard.address))}: expected an IPv4 address`);
  return guard;
}

/** Whether the guard's chain exists in `namespace` (ebtables-nft says "incompatible" of a missing chain: the table is listed instead). */
async function chainExists(tools: Tools, namespace: string, chain: string): Promise<boolean> {
  const listing = await ebtablesIn(tools, namespace, ['-L']);
  return listing.split('\n').some((line) => line.startsWith(`Bridge chain: ${chain},`));
}

/**
 * Installs the guard for `iface` (a stale one from an earlier run is
 * replaced). A failure half-way removes what was added.
 */
export async function guardInterface(guard: SpoofGuard): Promise<void> {
  const { namespace, iface, mac, address } = checkedGuard(guard);
  const tools = findTools();
  const chain = guardChainFor(iface);
  await removeGuardWith(tools, namespace, iface);
  try {
    await ebtablesIn(tools, namespace, ['-N', chain]);
    await ebtablesIn(tools, namespace, ['-A', chain, '-s', '!', mac, '-j', 'DROP']);
    await ebtablesIn(tools, namespace, ['-A', chain, '-p', 'IPv4', '--ip-src', address, '-j', 'RETURN']);
    await ebtablesIn(tools, namespace, [
      '-A',
      chain,
      '-p',
      'ARP',
      '--arp-ip-src',
      address,
      '--arp-mac-src',
      mac,
      '-j',
      'RETURN',
    ]);
    // A user chain's policy cannot be DROP under ebtables-nft: the last rule says it.
    await ebtablesIn(tools, namespace, ['-A', chain, '-j', 'DROP']);
    await ebtablesIn(tools, namespace, ['-A', HOOK, '-i', iface, '-j', chain]);
  } catch (error) {
    await removeGuardWith(tools, namespace, iface).catch(() => undefined);
    throw error;
  }
}

/** Removes the guard of `iface`; one already gone (or its namespace) is fine. */
export async function removeGuard(namespace: string, iface: string): Promise<void> {
  if (!existsSync(`${NETNS_DIR}/${namespace}`)) return;
  if (!INTERFACE.test(iface)) throw invalid(`interface ${JSON.stringify(iface)}: not a valid interface name`);
  await removeGuardWith(findTools(), namespace, iface);
}

async function removeGuardWith(tools: Tools, namespace: string, iface: string): Promise<void> {
  const chain = guardChainFor(iface);
  if (!(await chainExists(tools, namespace, chain))) return;
  // Delete every jump (a half-made guard may have none).
  for (let tries = 0; tries < 4; tries += 1) {
    const deleted = await ebtablesIn(tools, namespace, ['-D', HOOK, '-i', iface, '-j', chain]).then(
      () => true,
      () => false,
    );
    if (!deleted) break;
  }
  // ebtables-nft deletes only an empty chain.
  await ebtablesIn(tools, namespace, ['-F', chain]);
  await ebtablesIn(tools, namespace, ['-X', chain]);
}

/** The guard of `iface` as ebtables lists it: the jump to its chain, then the chain's rules (for tests and leftovers). */
export async function guardRulesOf(namespace: string, iface: string): Promise<string[]> {
  if (!existsSync(`${NETNS_DIR}/${namespace}`)) return [];
  const chain = guardChainFor(iface);
  // One listing of the whole table: a consistent view even while a guard is being removed.
  const listing = await ebtablesIn(findTools(), namespace, ['-L']);
  const rules: string[] = [];
  let section = '';
  for (const line of listing.split('\n')) {
    const header = /^Bridge chain: ([^,]+),/.exec(line);
    if (header) section = header[1];
    else if (line.startsWith('-') || line.startsWith('! ')) {
      if (section === chain || (section === HOOK && line.includes(`-j ${chain}`))) rules.push(line);
    }
  }
  // The jump first, then the chain's rules, whatever order the table lists its chains in.
  return [
    ...rules.filter((line) => line.includes(`-j ${chain}`)),
    ...rules.filter((line) => !line.includes(`-j ${chain}`)),
  ];
}
