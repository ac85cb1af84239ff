// The kernel a VM workload boots: Debian's stock linux-image-*-amd64, taken
// from the package archive the host already uses (`apt-get download`, then
// `dpkg-deb -x`, in seconds) and kept in a cache directory so later boots
// find it at once. Only the kernel image and its modules are kept:
//
//   DIR/<version>/vmlinuz
//   DIR/<version>/vmlinux      (uncompressed, boots faster: vm-kernel-image.ts)
//   DIR/<version>/modules/{kernel/…, modules.builtin}
//
// DIR is the `dir` option, else $SIGIL_VM_KERNEL_DIR, else
// /var/cache/sigil/vm-kernel. A version is extracted into a staging directory
// and renamed into place, so a half-extracted kernel is never found.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { extractPvhKernel } from './vm-kernel-image.ts';

export interface VmKernel {
  /** The kernel release, e.g. 6.1.0-57-amd64. */
  readonly version: string;
  readonly vmlinuz: string;
  /** What qemu boots: the uncompressed PVH kernel when there is one, else vmlinuz. */
  readonly bootImage: string;
  /** The release's modules directory (what /lib/modules/<version> holds). */
  readonly modulesDir: string;
}

export interface VmKernelOptions {
  /** The cache directory (absolute). Default: $SIGIL_VM_KERNEL_DIR, else DEFAULT_KERNEL_DIR. */
  readonly dir?: string;
  /** The package to fetch when the cache is empty; default: what linux-image-amd64 depends on. */
  readonly packageName?: string;
}

export const DEFAULT_KERNEL_DIR = '/var/cache/sigil/vm-kernel';
const METAPACKAGE = 'linux-image-amd64';
const PACKAGE_NAME = /^linux-image-[0-9][A-Za-z0-9.+-]*-amd64(-unsigned)?$/;
const RELEASE = /^[0-9][A-Za-z0-9.+_-]*$/;
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const DOWNLOAD_TIMEOUT_MS = 300_000;
const NO_VMLINUX_MARKER = 'vmlinux.none';
const fetches = new Map<string, Promise<VmKernel>>();

/** The cache directory these options name. */
export function kernelDirOf(options: VmKernelOptions = {}): string {
  const dir = options.dir ?? process.env.SIGIL_VM_KERNEL_DIR ?? DEFAULT_KERNEL_DIR;
  if (typeof dir !== 'string' || !dir.startsWith('/')) {
    throw invalid(`VM kernel directory ${JSON.stringify(String(dir))}: must be an absolute path`);
  }
  return dir;
}

/** The newest kernel already in the cache, or null. */
export function findVmKernel(options: VmKernelOptions = {}): VmKernel | null {
  const dir = kernelDirOf(options);
  if (!existsSync(dir)) return null;
  const versions = readdirSync(dir)
    .filter((name) => RELEASE.test(name) && existsSync(join(dir, name, 'vmlinuz')))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (version === undefined) return null;
  const vmlinux = join(dir, version, 'vmlinux');
  const vmlinuz = join(dir, version, 'vmlinuz');
  return {
    version,
    vmlinuz,
    bootImage: existsSync(vmlinux) ? vmlinux : vmlinuz,
    modulesDir: join(dir, version, 'modules'),
  };
}

/** The cached kernel, fetched from the package archive first when there is none. */
export function ensureVmKernel(options: VmKernelOptions = {}): Promise<VmKernel> {
  // One fetch per cache directory at a time: concurrent first boots share it.
  const dir = kernelDirOf(options);
  let pending = fetches.get(dir);
  if (!pending) {
    pending = fetchVmKernel(dir, options).finally(() => fetches.delete(dir));
    fetches.set(dir, pending);
  }
  return pending;
}

async function fetchVmKernel(dir: string, options: VmKernelOptions): Promise<VmKernel> {
  const found = findVmKernel(options);
  if (found) return withBootImage(found, options);
  const packageName = options.packageName ?? (await currentKernelPackage());
  if (!PACKAGE_NAME.test(packageName)) {
    throw invalid(`kernel package ${JSON.stringify(packageName)}: expected linux-image-<release>-amd64`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const staging = join(dir, `.staging-${randomBytes(6).toString('hex')}`);
  mkdirSync(staging, { mode: 0o700 });
  try {
    await run('apt-get', ['download', '--', packageName], staging);
    const deb = readdirSync(staging).find((name) => name.endsWith('.deb'));
    if (!deb) throw notFound(`apt-get download ${packageName}: no .deb was written`);
    const tree = join(staging, 'tree');
    await run('dpkg-deb', ['-x', join(staging, deb), tree], staging);
    const boot = readdirSync(join(tree, 'boot')).find((name) => name.startsWith('vmlinuz-'));
    if (!boot) throw notFound(`${packageName}: holds no /boot/vmlinuz-*`);
    const version = boot.slice('vmlinuz-'.length);
    if (!RELEASE.test(version)) throw invalid(`${packageName}: unexpected kernel release ${version}`);
    const release = join(staging, version);
    mkdirSync(release);
    renameSync(join(tree, 'boot', boot), join(release, 'vmlinuz'));
    renameSync(join(tree, 'lib', 'modules', version), join(release, 'modules'));
    if (!existsSync(join(dir, version))) renameSync(release, join(dir, version));
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  const kernel = findVmKernel(options);
  if (!kernel) throw new SigilError('internal', `${packageName}: extracted, but no kernel is in ${dir}`);
  return withBootImage(kernel, options);
}

/** The kernel with its uncompressed image made once (a marker remembers a kernel that cannot give one). */
async function withBootImage(kernel: VmKernel, options: VmKernelOptions): Promise<VmKernel> {
  if (kernel.bootImage !== kernel.vmlinuz) return kernel;
  const release = dirname(kernel.vmlinuz);
  const marker = join(release, NO_VMLINUX_MARKER);
  if (existsSync(marker)) return kernel;
  if (!(await extractPvhKernel(kernel.vmlinuz, join(release, 'vmlinux')))) writeFileSync(marker, '');
  return findVmKernel(options) ?? kernel;
}

/** The kernel package the archive's linux-image-amd64 currently depends on. */
async function currentKernelPackage(): Promise<string> {
  const text = await run('apt-cache', ['depends', '--no-recommends', '--no-suggests', METAPACKAGE], '/');
  const match = /Depends:\s*(linux-image-\S+)/.exec(text);
  if (!match) {
    throw notFound(
      `${METAPACKAGE}: the package archive names no kernel (apt-get update, or set packageName)`,
    );
  }
  return match[1];
}

function run(program: string, args: readonly string[], cwd: string): Promise<string> {
  if (!['/usr/bin', '/bin'].some((bin) => existsSync(join(bin, program)))) {
    return Promise.reject(
      preconditionFailed(`${program} is not installed: fetching the VM kernel needs Debian's apt and dpkg`),
    );
  }
  return new Promise((resolve, reject) => {
    execFile(
      program,
      args,
      { cwd, env: TOOL_ENV, timeout: DOWNLOAD_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        const lines = String(stderr)
          .split('\n')
          .filter((line) => line.startsWith('E:') || line.includes('error'));
        const reason = lines[0] ?? messageOf(error).split('\n')[0];
        reject(new SigilError('internal', `${program} ${args.join(' ')}: ${reason}`, { cause: error }));
      },
    );
  });
}
