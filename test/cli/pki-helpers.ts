// Helpers for the `sigil pki` tests (and the other tests that run the CLI,
// through support/cli.ts): read what a command printed as JSON, build `sigil
// delegate` arguments, build CA directories in-process for refusal fixtures,
// and snapshot directories to prove a failed command changed nothing.
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { caDirectoryFiles, createCa } from '../../src/cli/ca-directory.ts';
import { writeFilesAtomically } from '../../src/files/file-sets.ts';
import type { KeyType } from '../../src/pki/keys.ts';
import type { RunResult } from '../support/cli.ts';

/** `openssl req` options for a new P-256 key, unencrypted. */
export const NEW_P256_KEY: readonly string[] = [
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:P-256',
  '-nodes',
];

/** The JSON a command printed, once it exited 0 (`what` names it in the failure). */
export function jsonOf<T>(result: RunResult, what: string): T {
  assert.equal(result.code, 0, `${what}: exit ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

/**
 * `sigil delegate --to NAME --permissions PERMISSIONS FLAGS… --out DIR`, FLAGS
 * being the rest (--from or --data, grants, limits, --command, --json).
 */
export function delegateArgs(to: string, permissions: string, out: string, ...flags: string[]): string[] {
  return ['delegate', '--to', to, '--permissions', permissions, ...flags, '--out', out];
}

/** Every file and directory under `root`: relative path → mode and content hash. */
export function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      const mode = (statSync(path).mode & 0o7777).toString(8);
      if (entry.isDirectory()) {
        out[`${relative(root, path)}/`] = mode;
        walk(path);
      } else {
        out[relative(root, path)] =
          `${mode} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
      }
    }
  };
  walk(root);
  return out;
}

/** Writes a CA directory in-process (faster than running `sigil pki init` for fixtures). */
export function makeCa(
  dir: string,
  options: { keyType?: KeyType; intermediate?: boolean; passphrase?: string; trustDomain?: string } = {},
): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = createCa({
    keyType: options.keyType ?? 'p256',
    trustDomain: options.trustDomain ?? 'sigil.internal',
    rootName: 'test root CA',
    intermediateName: options.intermediate ? 'test intermediate CA' : undefined,
    ttlMs: 365 * 24 * 3_600_000,
  });
  writeFilesAtomically(caDirectoryFiles(dir, ca, options.passphrase), { force: true });
}

/** PEM certificates in a file, in order. */
export function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
}

/** DER of a PEM certificate. */
export function derOf(pem: string): Buffer {
  return Buffer.from(new X509Certificate(pem).raw);
}
