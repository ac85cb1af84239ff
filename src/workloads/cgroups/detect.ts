// Which cgroup interface this machine has, and where this process's own cgroup
// is in it: read from /proc/self/mounts (what is mounted where) and
// /proc/self/cgroup (this process's path in each hierarchy). Workloads nest
// beneath that own cgroup, so sigil started inside a container, a systemd
// unit or a CI job's cgroup stays within what it was given.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { invalid, preconditionFailed } from '../../errors.ts';
import type { CgroupDriver } from './cgroup.ts';
import { CgroupV1Driver, V1_CONTROLLERS, type V1Controller } from './v1.ts';
import { CgroupV2Driver } from './v2.ts';

/** The sub-directory of this process's cgroup that holds the workloads' groups. */
export const DEFAULT_CGROUP_BASE = 'sigil-workloads';

export interface MountEntry {
  readonly source: string;
  readonly mountPoint: string;
  readonly type: string;
  readonly options: readonly string[];
}

/** A /proc/self/cgroup text: per v1 controller (and named hierarchy) its path, and the v2 ("0::") path. */
export interface ProcCgroup {
  readonly v1: ReadonlyMap<string, string>;
  readonly v2?: string;
}

export type CgroupLayout =
  | { readonly version: 1; readonly ownDirectories: Readonly<Record<V1Controller, string>> }
  | { readonly version: 2; readonly ownDirectory: string };

export interface DetectOptions {
  /** The driver's sub-directory (default sigil-workloads); tests give each run its own. */
  readonly base?: string;
  readonly killTimeoutMs?: number;
  /** Where to read the texts (tests); /proc/self/mounts and /proc/self/cgroup by default. */
  readonly mountsText?: string;
  readonly procCgroupText?: string;
}

/** The driver for this machine's cgroups, rooted at this process's own cgroup; refuses clearly when there is none. */
export function detectCgroups(options: DetectOptions = {}): CgroupDriver {
  const layout = cgroupLayout(
    options.mountsText ?? readFileSync('/proc/self/mounts', 'utf8'),
    options.procCgroupText ?? readFileSync('/proc/self/cgroup', 'utf8'),
  );
  const owns = layout.version === 1 ? Object.values(layout.ownDirectories) : [layout.ownDirectory];
  for (const own of owns)
    if (!existsSync(own))
      throw preconditionFailed(
        `cgroups: this process's own cgroup ${own} is not visible (is /sys/fs/cgroup from another cgroup namespace?)`,
      );
  const base = options.base ?? DEFAULT_CGROUP_BASE;
  return layout.version === 1
    ? new CgroupV1Driver({
        ownDirectories: layout.ownDirectories,
        base,
        killTimeoutMs: options.killTimeoutMs,
      })
    : new CgroupV2Driver({ ownDirectory: layout.ownDirectory, base, killTimeoutMs: options.killTimeoutMs });
}

/**
 * v1 when the workload controllers are mounted as v1 hierarchies (all of them: a split between v1 and v2
 * is refused), else v2 when a cgroup2 filesystem is mounted; the own directories come from the paths in
 * /proc/self/cgroup.
 */
export function cgroupLayout(mountsText: string, procCgroupText: string): CgroupLayout {
  const mounts = parseMounts(mountsText);
  const own = parseProcCgroup(procCgroupText);
  const v1Mounts = mounts.filter((mount) => mount.type === 'cgroup');
  const v1MountOf = (controller: string) => v1Mounts.find((mount) => mount.options.includes(controller));
  const onV1 = V1_CONTROLLERS.filter((controller) => v1MountOf(controller) !== undefined);
  if (onV1.length > 0) {
    const missing = V1_CONTROLLERS.filter((controller) => !onV1.includes(controller));
    if (missing.length > 0)
      throw preconditionFailed(
        `cgroups: v1 hierarchies lack ${missing.join(', ')} (workloads need ${V1_CONTROLLERS.join(', ')} on one cgroup version)`,
      );
    const ownDirectories = {} as Record<V1Controller, string>;
    for (const controller of V1_CONTROLLERS) {
      const path = own.v1.get(controller);
      if (path === undefined)
        throw preconditionFailed(`cgroups: /proc/self/cgroup names no ${controller} cgroup for this process`);
      ownDirectories[controller] = join(v1MountOf(controller)!.mountPoint, checkOwnPath(path, controller));
    }
    return { version: 1, ownDirectories };
  }
  const unified = mounts.filter((mount) => mount.type === 'cgroup2');
  const mount = unified.find((entry) => entry.mountPoint === '/sys/fs/cgroup') ?? unified[0];
  if (!mount)
    throw preconditionFailed(
      'cgroups: no cgroup filesystem is mounted (workloads need cgroup v1 or v2, usually under /sys/fs/cgroup)',
    );
  if (own.v2 === undefined) throw preconditionFailed('cgroups: /proc/self/cgroup has no v2 ("0::") line');
  return { version: 2, ownDirectory: join(mount.mountPoint, checkOwnPath(own.v2, 'unified')) };
}

/** /proc/self/mounts lines (fields space-separated, with spaces in paths written as \040). */
export function parseMounts(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 4) continue;
    entries.push({
      source: unescapeMountField(fields[0]),
      mountPoint: unescapeMountField(fields[1]),
      type: fields[2],
      options: fields[3].split(','),
    });
  }
  return entries;
}

/** /proc/self/cgroup lines, "hierarchy-id:controllers:path" (v2's line has no controllers). */
export function parseProcCgroup(text: string): ProcCgroup {
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (controllers === '') v2 = path;
    else for (const controller of controllers.split(',')) v1.set(controller, path);
  }
  return { v1, v2 };
}

/**
 * The path relative to the mount; it must be absolute and stay inside the hierarchy ("/.." marks a cgroup
 * outside our cgroup namespace).
 */
function checkOwnPath(path: string, hierarchy: string): string {
  if (!path.startsWith('/') || path.split('/').some((segment) => segment === '..' || segment === '.'))
    throw invalid(
      `cgroups: this process's ${hierarchy} cgroup path ${JSON.stringify(path)} is not inside the hierarchy`,
    );
  return path.replace(/^\/+|\/+$/g, '');
}

function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_match, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );
}
