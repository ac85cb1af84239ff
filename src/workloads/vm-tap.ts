// A VM workload's link to its bridge: a persistent tap device made in the
// daemon's network namespace (where the bridges live, see networks.ts) and
// enslaved to the bridge. qemu, started in that same namespace
// (vm-launcher.ts), opens it by name; the guest's virtio NIC is then a port
// of the bridge like a container's veth.
//
//   daemon netns:  BRIDGE ── sgtXXXXXXXXXXXX (tap, named from the key) ── qemu ── guest eth0
//
// The tap's name is derived from the workload key like the veth host ends
// ('sgt' + 12 hex digits = 15, the kernel's limit), so a restarted daemon can
// find stale ones.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { alreadyExists, invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';

export interface TapOnBridge {
  /** The network namespace (`ip netns` name) holding the bridge and the tap. */
  readonly namespace: string;
  readonly bridge: string;
  readonly tap: string;
}

const TAP_PREFIX = 'sgt';
const NETNS_DIR = '/run/netns';
const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const INTERFACE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const IP_CANDIDATES = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TOOL_TIMEOUT_MS = 10_000;

/** The tap for `workloadKey`: stable, so a restarted daemon can find stale ones. */
export function tapNameFor(workloadKey: string): string {
  return TAP_PREFIX + createHash('sha256').update(`sigil-tap:${workloadKey}`).digest('hex').slice(0, 12);
}

function ipTool(): string {
  const ip = IP_CANDIDATES.find((path) => existsSync(path));
  if (!ip) throw preconditionFailed('iproute2 `ip` is not installed: VM networking needs it');
  return ip;
}

function ipIn(namespace: string, ...args: string[]): Promise<string> {
  const ip = ipTool();
  return new Promise((resolve, reject) => {
    execFile(
      ip,
      ['-netns', namespace, ...args],
      { env: TOOL_ENV, timeout: TOOL_TIMEOUT_MS },
      (error, out, err) => {
        if (!error) return resolve(out);
        const reason = String(err).trim().split('\n')[0] || messageOf(error).split('\n')[0];
        reject(
          new SigilError('internal', `ip -netns ${namespace} ${args.join(' ')}: ${reason}`, { cause: error }),
        );
      },
    );
  });
}

function checkedNames(namespace: string, bridge: string, tap: string): void {
  if (typeof namespace !== 'string' || !NAMESPACE.test(namespace)) {
    throw invalid(`namespace ${JSON.stringify(String(namespace))}: not a valid network namespace name`);
  }
  if (!existsSync(`${NETNS_DIR}/${namespace}`))
    throw notFound(`namespace ${namespace}: no such network namespace`);
  for (const [field, name] of [
    ['bridge', bridge],
    ['tap', tap],
  ] as const) {
    if (typeof name !== 'string' || !INTERFACE.test(name)) {
      throw invalid(`${field} ${JSON.stringify(String(name))}: not a valid interface name (1–15 characters)`);
    }
  }
}

/**
 * Makes `tap` in `namespace`, on `bridge`, up. Refused when the bridge is
 * missing or the tap already exists; a failure half-way removes the tap.
 */
export async function createTapOnBridge(
  namespace: string,
  bridge: string,
  tap: string,
): Promise<TapOnBridge> {
  checkedNames(namespace, bridge, tap);
  if (process.getuid?.() !== 0) throw preconditionFailed('VM networking needs root (tap devices)');
  const bridgeKind = await ipIn(namespace, '-details', 'link', 'show', bridge).catch(() => '');
  if (!/\bbridge\b/.test(bridgeKind)) throw notFound(`bridge ${bridge}: not in namespace ${namespace}`);
  const exists = await ipIn(namespace, 'link', 'show', tap).then(
    () => true,
    () => false,
  );
  if (exists) throw alreadyExists(`tap ${tap}: already exists in namespace ${namespace}`);
  await ipIn(namespace, 'tuntap', 'add', 'dev', tap, 'mode', 'tap', 'vnet_hdr');
  try {
    await ipIn(namespace, 'link', 'set', tap, 'master', bridge);
    await ipIn(namespace, 'link', 'set', tap, 'up');
  } catch (error) {
    await ipIn(namespace, 'link', 'delete', tap).catch(() => undefined);
    throw error;
  }
  return { namespace, bridge, tap };
}

/** Removes the tap; one already gone (its namespace removed with it) is fine. */
export async function removeTap(namespace: string, tap: string): Promise<void> {
  if (!existsSync(`${NETNS_DIR}/${namespace}`)) return;
  try {
    await ipIn(namespace, 'link', 'delete', tap);
  } catch (error) {
    const gone = await ipIn(namespace, 'link', 'show', tap).then(
      () => false,
      () => true,
    );
    if (!gone) throw error;
  }
}
