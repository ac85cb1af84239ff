// One run of a `runtime: 'vm'` workload, as the supervisor starts it: the
// workload's root directory (its writable root's merged view) copied into a
// fresh ext4 disk, an initramfs whose guest command is the workload's
// command, and qemu booting both (vm-launcher.ts). Everything is made in a
// directory of the run's own and removed when the run is undone.
//
// With a network the supervisor passes the run a guarded tap from
// WorkloadNetworks.attachTap (its address on the kernel command line); the
// workload's read-only binds (the guest runtime, guest-runtime.ts) become
// 9p shares mounted at the same paths before the guest command runs.
//
// What the VM runtime does not do yet (refused by checkVmWorkload, so the
// caller sees why): block devices, env, workdir and user (the guest command
// runs as root, from /). The guest's writes live on the run's disk: /init
// unmounts it cleanly when the command ends (vm-initramfs.ts), and the run's
// end leaves it (lastRunDisk) until the next run starts or the workload is
// removed, so that a build can take the stage's result from it.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { invalid, notFound } from '../errors.ts';
import { type ReadOnlyBind, resolveInRoot } from './namespace-process.ts';
import type { Accelerator } from './vm-accelerator.ts';
import { buildExt4Image } from './vm-image.ts';
import { buildInitramfs } from './vm-initramfs.ts';
import { ensureVmKernel } from './vm-kernel.ts';
import { launchVm, type VmNetwork, type VmProcess, type VmShare } from './vm-launcher.ts';

export type WorkloadRuntime = 'namespaces' | 'vm';

export interface VmRuntimeOptions {
  /** The kernel cache (vm-kernel.ts); default $SIGIL_VM_KERNEL_DIR, else /var/cache/sigil/vm-kernel. */
  readonly kernelDir?: string;
  /** Default: probed (vm-accelerator.ts). */
  readonly accelerator?: Accelerator;
}

/** What qemu itself takes beyond the guest's memory: the cgroup's limit is the guest's plus this. */
export const VM_MEMORY_OVERHEAD_MiB = 128;
/** Guest memory when the workload sets no limit. */
export const VM_DEFAULT_MEMORY_MiB = 256;

export interface VmWorkloadFields {
  readonly env?: Readonly<Record<string, string>>;
  readonly workdir?: string;
  readonly user?: string;
  readonly networks?: readonly string[];
  readonly blocks?: readonly unknown[];
}

/** `runtime` checked: absent means namespaces. */
export function checkRuntime(runtime: unknown): WorkloadRuntime {
  if (runtime === undefined || runtime === 'namespaces') return 'namespaces';
  if (runtime === 'vm') return 'vm';
  throw invalid(`runtime ${JSON.stringify(String(runtime))}: expected namespaces or vm`);
}

/** Refuses what the VM runtime cannot do yet. */
export function checkVmWorkload(spec: VmWorkloadFields): void {
  if (spec.blocks !== undefined && spec.blocks.length > 0)
    throw invalid('blocks: not supported by the vm runtime yet');
  if (spec.env !== undefined && Object.keys(spec.env).length > 0)
    throw invalid('env: not supported by the vm runtime yet (set it in the image)');
  if (spec.workdir !== undefined && spec.workdir !== '/')
    throw invalid('workdir: not supported by the vm runtime yet');
  if (spec.user !== undefined)
    throw invalid('user: not supported by the vm runtime yet (the guest runs as root)');
}

/** The run's disk in its directory. */
const ROOT_DISK = 'root.img';

/** The disk of the run made in `runDir`, kept after the run ended; null when there is none. */
export function lastRunDisk(runDir: string): string | null {
  const disk = join(runDir, ROOT_DISK);
  return existsSync(disk) ? disk : null;
}

/**
 * The guest command: an absolute program that is an executable file in
 * `rootfs`, or under one of `binds` (the guest runtime, shared over 9p).
 */
export function checkVmCommand(
  rootfs: string,
  command: readonly string[],
  binds: readonly ReadOnlyBind[] = [],
): void {
  if (!Array.isArray(command) || command.length === 0) throw invalid('command: must name a program');
  if (command.some((word) => typeof word !== 'string' || word.includes('\0'))) {
    throw invalid('command: every argument must be a string without NUL bytes');
  }
  const program = command[0];
  if (!program.startsWith('/') || program.split('/').includes('..')) {
    throw invalid(`command ${JSON.stringify(program)}: must be an absolute path without '..'`);
  }
  const normalized = posix.normalize(program);
  const bind = binds.find(({ target }) => normalized.startsWith(`${posix.normalize(target)}/`));
  const found = bind
    ? resolveInRoot(bind.source, normalized.slice(posix.normalize(bind.target).length))
    : resolveInRoot(rootfs, normalized);
  if (!found) throw notFound(`command ${JSON.stringify(program)}: not found in the root filesystem`);
  if (!found.stats.isFile() || (found.stats.mode & 0o111) === 0) {
    throw invalid(`command ${JSON.stringify(program)}: not an executable file in the root filesystem`);
  }
}

export interface VmRunOptions {
  readonly runtime: VmRuntimeOptions;
  /** The workload's root directory (copied into the disk). */
  readonly rootfs: string;
  /** The run's own directory (made here, removed by cleanup). */
  readonly runDir: string;
  readonly command: readonly string[];
  readonly hostname: string;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  /** The guest's NIC on its tap (WorkloadNetworks.attachTap); none when absent. */
  readonly network?: VmNetwork;
  /** Host directories the guest sees read-only at their targets (over 9p). */
  readonly readOnlyBinds?: readonly ReadOnlyBind[];
  readonly onSpawned?: (pid: number) => void | Promise<void>;
}

/** The 9p shares of `binds` and where /init mounts them: tag sigilN for the Nth. */
export function sharesOf(binds: readonly ReadOnlyBind[]): {
  shares: VmShare[];
  mounts: { tag: string; target: string }[];
} {
  const tagged = binds.map((bind, index) => ({ ...bind, tag: `sigil${index}` }));
  return {
    shares: tagged.map(({ source, tag }) => ({ source, tag })),
    mounts: tagged.map(({ target, tag }) => ({
      tag,
      target: posix.normalize(target).replace(/(.)\/+$/, '$1'),
    })),
  };
}

/**
 * Starts the run's VM; `cleanup` (after qemu has ended) removes its files but
 * the disk (lastRunDisk). A failure leaves nothing.
 */
export async function startVmRun(
  options: VmRunOptions,
): Promise<{ process: VmProcess; cleanup: () => void }> {
  checkVmCommand(options.rootfs, options.command, options.readOnlyBinds);
  const kernel = await ensureVmKernel(
    options.runtime.kernelDir === undefined ? {} : { dir: options.runtime.kernelDir },
  );
  const removeAll = (): void => rmSync(options.runDir, { recursive: true, force: true });
  const cleanup = (): void => {
    if (!existsSync(options.runDir)) return;
    for (const name of readdirSync(options.runDir))
      if (name !== ROOT_DISK) rmSync(join(options.runDir, name), { recursive: true, force: true });
  };
  // The previous run's disk goes: each run starts from the workload's root.
  removeAll();
  mkdirSync(options.runDir, { recursive: true, mode: 0o700 });
  try {
    const rootDisk = join(options.runDir, ROOT_DISK);
    await buildExt4Image({ rootDir: options.rootfs, imageFile: rootDisk });
    const { shares, mounts } = sharesOf(options.readOnlyBinds ?? []);
    const initramfs = join(options.runDir, 'initramfs');
    writeFileSync(initramfs, buildInitramfs({ kernel, command: options.command, shares: mounts }), {
      mode: 0o600,
    });
    const process = await launchVm({
      kernel,
      initramfs,
      rootDisk,
      runDir: options.runDir,
      hostname: options.hostname,
      memoryMiB: options.memoryMiB ?? VM_DEFAULT_MEMORY_MiB,
      ...(options.cpus === undefined ? {} : { cpus: options.cpus }),
      ...(options.network ? { network: options.network } : {}),
      ...(shares.length > 0 ? { shares } : {}),
      ...(options.runtime.accelerator === undefined ? {} : { accelerator: options.runtime.accelerator }),
      ...(options.onSpawned ? { onSpawned: options.onSpawned } : {}),
    });
    return { process, cleanup };
  } catch (error) {
    removeAll();
    throw error;
  }
}
