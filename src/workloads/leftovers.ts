// What a daemon that died without closing (kill -9, a crash, a power cut of
// the process) left behind, removed before a new daemon starts anything:
//
// 1. every workload cgroup under the driver's base (`sigil-workloads`):
//    every task killed, the group removed — processes of a previous daemon
//    are never adopted blind, the desired state starts them again;
// 2. launchers (`unshare`) of that daemon still waiting outside any cgroup,
//    found by their `--root=<stateDir>/w-…` argument;
// 3. every mount under the state directory (overlay roots, loop-mounted
//    block devices inside them), deepest first, detached lazily if busy —
//    unmounting a loop mount made with `-o loop` frees its loop device;
// 4. the workloads' layer directories (`<stateDir>/w-<hash>`);
// 5. with `networks`, the daemon's network namespace `sigil-<id>` (its
//    bridges and host veth ends go with it; veth pairs whose workload
//    namespace died are already gone with it).
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { firstLineOf, invalid, SigilError } from '../errors.ts';
import type { CgroupDriver } from './cgroups/cgroup.ts';

/** A layer directory's name: the supervisor's cgroup name of a key (cgroupNameOf). */
const LAYER_DIRECTORY = /^w-[0-9a-f]{32}$/;
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TOOL_TIMEOUT_MS = 10_000;
const NETNS_DIR = '/run/netns';
const OWNED_NAMESPACE = /^sigil-[a-z0-9][a-z0-9-]{0,31}$/;

export interface LeftoverOptions {
  readonly cgroups: CgroupDriver;
  /** The supervisor's state directory (where `w-<hash>` layers are made). */
  readonly stateDir: string;
  /** The daemon's own network namespace (`sigil-<id>`), deleted if it exists. */
  readonly networks?: { readonly namespace: string };
  /** Where mounts are listed (tests); /proc/self/mountinfo by default. */
  readonly mountinfoPath?: string;
}

export interface LeftoversRemoved {
  readonly cgroups: number;
  readonly processes: number;
  readonly launchers: number;
  readonly mounts: number;
  readonly layerDirectories: number;
  readonly namespaces: number;
  /** What could not be removed (one line each); empty when all went. */
  readonly failures: readonly string[];
}

function run(program: string, args: readonly string[]): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile(program, args, { env: TOOL_ENV, timeout: TOOL_TIMEOUT_MS }, (error, _stdout, stderr) => {
      if (!error) return resolvePromise();
      const reason = String(stderr).trim().split('\n')[0] || firstLineOf(error);
      reject(new SigilError('internal', `${program} ${args.join(' ')}: ${reason}`, { cause: error }));
    });
  });
}

/** Octal escapes of mountinfo's path fields (\040 for a space) decoded. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_match, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );
}

/** The mount points in a mountinfo text strictly beneath `dir`, deepest first (so children go before parents). */
export function mountsUnder(mountinfo: string, dir: string): string[] {
  const prefix = dir.endsWith(sep) ? dir : dir + sep;
  const points: string[] = [];
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mount-point options …
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const point = unescapeMountPath(fields[4]);
    if (point.startsWith(prefix)) points.push(point);
  }
  // Later mounts stack over earlier ones: reverse mount order among equals, then by depth.
  return points
    .map((point, order) => ({ point, order }))
    .sort((a, b) => b.point.split(sep).length - a.point.split(sep).length || b.order - a.order)
    .map(({ point }) => point);
}

/** PIDs of `unshare` launchers whose arguments root a workload in one of `layers`. */
function launchersOf(stateDir: string): number[] {
  const marker = `--root=${stateDir}${sep}w-`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    if (argv.some((argument) => argument.startsWith(marker))) pids.push(Number(entry));
  }
  return pids;
}

/** Removes what a daemon that did not close left behind; see the file comment. Returns counts for the log. */
export async function cleanLeftovers(options: LeftoverOptions): Promise<LeftoversRemoved> {
  if (typeof options.stateDir !== 'string' || !options.stateDir.startsWith('/'))
    throw invalid('leftovers: the state directory must be an absolute path');
  const namespace = options.networks?.namespace;
  if (namespace !== undefined && !OWNED_NAMESPACE.test(namespace))
    throw invalid(`leftovers: ${JSON.stringify(namespace)} is not a namespace the daemon makes (sigil-<id>)`);
  // Mount points are listed with symlinks resolved.
  const stateDir = existsSync(options.stateDir) ? realpathSync(options.stateDir) : resolve(options.stateDir);
  const failures: string[] = [];
  const counts = { cgroups: 0, processes: 0, launchers: 0, mounts: 0, layerDirectories: 0, namespaces: 0 };

  for (const name of options.cgroups.list()) {
    try {
      const group = options.cgroups.open(name);
      counts.processes += group.processes().length;
      await group.remove();
      counts.cgroups += 1;
    } catch (error) {
      failures.push(`cgroup ${name}: ${firstLineOf(error)}`);
    }
  }

  for (const pid of launchersOf(stateDir)) {
    try {
      process.kill(pid, 'SIGKILL');
      counts.launchers += 1;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH')
        failures.push(`launcher ${pid}: ${firstLineOf(error)}`);
    }
  }

  const mountinfoPath = options.mountinfoPath ?? '/proc/self/mountinfo';
  for (const point of mountsUnder(readFileSync(mountinfoPath, 'utf8'), stateDir)) {
    try {
      await run('umount', [point]).catch(() => run('umount', ['--lazy', point]));
      counts.mounts += 1;
    } catch (error) {
      failures.push(`mount ${point}: ${firstLineOf(error)}`);
    }
  }

  if (existsSync(stateDir)) {
    for (const entry of readdirSync(stateDir)) {
      if (!LAYER_DIRECTORY.test(entry)) continue;
      const dir = join(stateDir, entry);
      // Never delete through a mount that would not go: rm would descend into the mounted filesystem.
      if (mountsUnder(readFileSync(mountinfoPath, 'utf8'), dir).length > 0) {
        failures.push(`layer ${dir}: still has a mount beneath it, left in place`);
        continue;
      }
      try {
        rmSync(dir, { recursive: true, force: true });
        counts.layerDirectories += 1;
      } catch (error) {
        failures.push(`layer ${dir}: ${firstLineOf(error)}`);
      }
    }
  }

  if (namespace !== undefined && existsSync(join(NETNS_DIR, namespace))) {
    try {
      await run('ip', ['netns', 'delete', namespace]);
      counts.namespaces += 1;
    } catch (error) {
      failures.push(`network namespace ${namespace}: ${firstLineOf(error)}`);
    }
  }

  return { ...counts, failures };
}
