// The openssl CLI as the reference implementation, run synchronously in a
// test's scratch directory (files it writes and reads are named relative to
// it). A failing command throws, with openssl's stderr in the error.
import { execFileSync } from 'node:child_process';

export interface OpensslIn {
  /** `openssl ARGS…` in the directory: its stdout. */
  openssl(...args: string[]): string;
  /** The same with stderr folded into the result (crl -verify, verify and req report there). */
  opensslAll(...args: string[]): string;
}

export function opensslIn(dir: string): OpensslIn {
  return {
    openssl: (...args) =>
      execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
    opensslAll: (...args) =>
      execFileSync('sh', ['-c', 'openssl "$@" 2>&1', 'sh', ...args], { cwd: dir, encoding: 'utf8' }),
  };
}
