// The guest runtime: what lets `sigil vminit` run inside a workload whose
// image has no sigil and no Node. Three host directories are bound read-only
// into the workload under /.sigil — the Node binary's directory, sigil's
// package (sources and node_modules), and a copy of the shared libraries the
// Node binary links against — and the agent is started through the copied
// dynamic loader with --library-path, so nothing of the guest's own libc or
// loader is used (a busybox image has neither).
//
// VM images carry the same tree, copied in when the image is made.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { preconditionFailed } from '../errors.ts';
import type { ReadOnlyBind } from './namespace-process.ts';

/** Where the runtime appears inside a workload. */
export const GUEST_RUNTIME_ROOT = '/.sigil';
/** sigil's package root: the directory holding bin/sigil.js, src/ and node_modules/. */
export const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface GuestRuntime {
  readonly binds: readonly ReadOnlyBind[];
  /** The argv that runs `sigil <args…>` inside the workload. */
  command(args: readonly string[]): string[];
}

/** `ldd` of a program: every resolved library path, the loader included. */
function linkedLibraries(program: string): string[] {
  const output = execFileSync('ldd', [program], {
    encoding: 'utf8',
    env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' },
  });
  const paths: string[] = [];
  for (const line of output.split('\n')) {
    const match = /=>\s*(\/\S+)|^\s*(\/\S+)/.exec(line);
    const path = match?.[1] ?? match?.[2];
    if (path) paths.push(path);
  }
  return paths;
}

/**
 * Prepares the runtime's library copy in `dir` (made if missing, refreshed
 * each start: the host's libraries may have been upgraded) and returns the
 * binds and the command line for it.
 */
export function prepareGuestRuntime(dir: string, nodeBinary = process.execPath): GuestRuntime {
  const libraries = linkedLibraries(nodeBinary);
  const loader = libraries.find((path) => /\/ld-linux[^/]*\.so/.test(path));
  if (!loader) throw preconditionFailed(`${nodeBinary}: no dynamic loader in its ldd output`);
  const libDir = join(dir, 'lib');
  mkdirSync(libDir, { recursive: true, mode: 0o755 });
  for (const library of libraries) copyFileSync(library, join(libDir, basename(library)));
  if (!existsSync(join(PACKAGE_ROOT, 'bin', 'sigil.js')))
    throw preconditionFailed(`${PACKAGE_ROOT}: not sigil's package (no bin/sigil.js)`);
  const inside = (sub: string) => `${GUEST_RUNTIME_ROOT}/${sub}`;
  return {
    binds: [
      { source: dirname(nodeBinary), target: inside('node') },
      { source: libDir, target: inside('lib') },
      { source: PACKAGE_ROOT, target: inside('app') },
    ],
    command: (args) => [
      inside(`lib/${basename(loader)}`),
      '--library-path',
      inside('lib'),
      inside(`node/${basename(nodeBinary)}`),
      inside('app/bin/sigil.js'),
      ...args,
    ],
  };
}

/** The libraries a prepared runtime holds (for tests and `sigil agent` diagnostics). */
export function runtimeLibraries(dir: string): string[] {
  return existsSync(join(dir, 'lib')) ? readdirSync(join(dir, 'lib')).sort() : [];
}
