// Which qemu accelerator a VM workload gets: KVM when it really works, else
// TCG (emulation, ≈ 6–8 s to a shell here). A /dev/kvm that opens is not
// enough: on some hosts a stock kernel hangs under it. So the probe boots the
// kernel itself under KVM, without a root disk, and watches it reach its
// "no root" panic (panic=-1 reboots, -no-reboot ends qemu) within a hard
// timeout, well under the time TCG would take. The answer is cached per kernel
// for the process's life. SIGIL_VM_ACCEL=kvm|tcg skips the probe.
import { spawn } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { invalid } from '../errors.ts';

export type Accelerator = 'kvm' | 'tcg';

export interface AcceleratorProbe {
  readonly accelerator: Accelerator;
  /** Why: "no /dev/kvm", "probe boot timed out", … (for a log line). */
  readonly reason: string;
}

const KVM_DEVICE = '/dev/kvm';
/** A stock kernel reaches its no-root panic in ≈ 1 s under KVM; TCG takes several. */
export const DEFAULT_PROBE_TIMEOUT_MS = 4000;
const PANIC = 'Kernel panic';
const QEMU_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const cache = new Map<string, Promise<AcceleratorProbe>>();

function kvmDeviceOpens(): boolean {
  try {
    closeSync(openSync(KVM_DEVICE, constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

/** The accelerator for `kernel` (a vmlinuz path), probed once per process. */
export function chooseAccelerator(
  qemu: string,
  kernel: string,
  timeoutMs = DEFAULT_PROBE_TIMEOUT_MS,
): Promise<AcceleratorProbe> {
  const forced = process.env.SIGIL_VM_ACCEL;
  if (forced !== undefined && forced !== '') {
    if (forced !== 'kvm' && forced !== 'tcg') {
      return Promise.reject(invalid(`SIGIL_VM_ACCEL=${JSON.stringify(forced)}: expected kvm or tcg`));
    }
    return Promise.resolve({ accelerator: forced, reason: 'SIGIL_VM_ACCEL' });
  }
  let probe = cache.get(kernel);
  if (!probe) {
    probe = probeKvm(qemu, kernel, timeoutMs);
    cache.set(kernel, probe);
  }
  return probe;
}

async function probeKvm(qemu: string, kernel: string, timeoutMs: number): Promise<AcceleratorProbe> {
  if (!kvmDeviceOpens())
    return { accelerator: 'tcg', reason: `${KVM_DEVICE} is missing or cannot be opened` };
  return new Promise((resolve) => {
    const child = spawn(
      qemu,
      [
        '-M',
        'pc',
        '-accel',
        'kvm',
        '-cpu',
        'host',
        '-m',
        '256',
        '-nodefaults',
        '-no-user-config',
        '-display',
        'none',
        '-no-reboot',
        '-serial',
        'stdio',
        '-kernel',
        kernel,
        '-append',
        'console=ttyS0 panic=-1 root=/dev/sigil-none',
      ],
      { env: QEMU_ENV, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let output = '';
    let settled = false;
    const finish = (result: AcceleratorProbe): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(result);
    };
    const timer = setTimeout(
      () =>
        finish({ accelerator: 'tcg', reason: `the kernel did not boot under KVM within ${timeoutMs} ms` }),
      timeoutMs,
    );
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (text: string) => {
      output = (output + text).slice(-4096);
      if (output.includes(PANIC)) finish({ accelerator: 'kvm', reason: 'the kernel booted under KVM' });
    });
    child.on('error', (error) => finish({ accelerator: 'tcg', reason: `qemu: ${error.message}` }));
    child.on('exit', () =>
      finish(
        output.includes(PANIC)
          ? { accelerator: 'kvm', reason: 'the kernel booted under KVM' }
          : { accelerator: 'tcg', reason: 'qemu ended before the kernel booted under KVM' },
      ),
    );
  });
}
