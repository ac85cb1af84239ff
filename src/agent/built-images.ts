// Images made by `sigil build` carry firebuild's metadata.json beside their
// tree. A workload created from one without a command runs what the image
// says: on a bridge, through `sigil vminit`'s normal mode (hostname, hosts,
// env file and the entrypoint runner, from its metadata document, then the
// runner); without a network, where no metadata service answers, its
// ENTRYPOINT and CMD directly.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { EntrypointInfo } from '../guest/dockerfile-image.ts';
import type { GuestRuntime } from '../workloads/guest-runtime.ts';

/** Where vminit writes the runner (its default --path-entrypoint-runner-file). */
export const ENTRYPOINT_RUNNER = '/usr/bin/firebuild-entrypoint.sh';

/** The EntrypointInfo of the image whose tree is `rootfs`, or undefined for an image no build made. */
export function builtImageEntrypoint(rootfs: string): EntrypointInfo | undefined {
  const file = join(dirname(rootfs), 'metadata.json');
  if (!existsSync(file)) return undefined;
  try {
    const metadata = JSON.parse(readFileSync(file, 'utf8')) as { EntrypointInfo?: EntrypointInfo };
    return metadata.EntrypointInfo;
  } catch {
    return undefined;
  }
}

/** ENTRYPOINT then CMD as an argv; a shell-form text (one element with a blank) runs under the image's shell. */
export function entrypointArgv(info: EntrypointInfo): string[] {
  const argv = [...info.EntryPoint, ...info.Cmd];
  if (argv.length === 1 && /\s/.test(argv[0])) return [...info.Shell, argv[0]];
  return argv;
}

/** The command a workload from a built image runs when given none; undefined leaves the default. */
export function builtImageCommand(
  info: EntrypointInfo,
  options: { onBridge: boolean; runtime: GuestRuntime | undefined },
): { command: string[]; guestRuntime: boolean } | undefined {
  if (options.onBridge && options.runtime) {
    const vminit = options.runtime.command(['vminit']).join(' '); // fixed paths under /.sigil: no quoting needed
    return { command: ['/bin/sh', '-c', `${vminit} && exec ${ENTRYPOINT_RUNNER}`], guestRuntime: true };
  }
  const argv = entrypointArgv(info);
  return argv.length > 0 ? { command: argv, guestRuntime: false } : undefined;
}
