// Material from PEM files on disk (cert-manager, Vault agent, `sigil pki`,
// the openssl CLI), watched for changes.
//
// Files are rarely replaced atomically as a set: a certificate lands before
// its key, a Kubernetes secret flips a `..data` symlink, an editor writes a
// temporary file first. So every change is only a hint to re-read all files
// and try the whole set; it is applied only when it validates (key matches
// leaf, chain and bundle parse, leaf not expired, CRLs current). Anything
// else is reported to onError, once per distinct broken state, and the old
// material keeps serving. fs.watch watches the directories (renames and
// symlink swaps show up there, not on the files) and a slow poll covers file
// systems where watching is unreliable (NFS, some containers).

import { type FSWatcher, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { invalid, notFound, SigilError } from '../errors.ts';
import type { MaterialSource, TlsMaterial } from '../pki/material.ts';
import { checkMaterialFiles } from './material-errors.ts';
import { MaterialProvider } from './material-provider.ts';

export interface MaterialFiles {
  /** PEM: the leaf first, then its intermediates. */
  readonly certificateChain: string;
  /** PEM private key of the leaf (unencrypted). */
  readonly privateKey: string;
  /** PEM trusted CA certificates. */
  readonly trustBundle: string;
  /** PEM CRL files; when given, every CA level needs one. */
  readonly crls?: readonly string[];
}

export interface FileSourceOptions extends MaterialFiles {
  /**
   * Told why a changed set of files was not applied (the old material keeps
   * serving). Messages name files and certificate subjects, never key
   * material. Default: a process warning.
   */
  readonly onError?: (error: SigilError) => void;
  /** Changes within this window are read as one. Default 100 ms. */
  readonly debounceMs?: number;
  /** Re-read the files this often even without watch events; 0 disables. Default 60 s. */
  readonly pollIntervalMs?: number;
}

/** What a reload did: applied new material, found nothing new, or refused the files. */
export type ReloadOutcome = 'applied' | 'unchanged' | 'rejected';

const DEFAULT_DEBOUNCE_MS = 100;
const DEFAULT_POLL_MS = 60_000;

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : undefined;
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT') throw notFound(`${what} file ${JSON.stringify(path)} does not exist`, error);
    throw invalid(`cannot read ${what} file ${JSON.stringify(path)}: ${code ?? 'read failed'}`, error);
  }
}

async function readMaterial(files: MaterialFiles): Promise<TlsMaterial> {
  const [certificateChain, privateKey, trustBundle, ...crls] = await Promise.all([
    readPem(files.certificateChain, 'certificate chain'),
    readPem(files.privateKey, 'private key'),
    readPem(files.trustBundle, 'trust bundle'),
    ...(files.crls ?? []).map((path) => readPem(path, 'CRL')),
  ]);
  return files.crls === undefined
    ? { certificateChain, privateKey, trustBundle }
    : { certificateChain, privateKey, trustBundle, crls };
}

function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  const crlsA = a.crls ?? [];
  const crlsB = b.crls ?? [];
  return (
    a.certificateChain === b.certificateChain &&
    a.privateKey === b.privateKey &&
    a.trustBundle === b.trustBundle &&
    crlsA.length === crlsB.length &&
    crlsA.every((crl, i) => crl === crlsB[i])
  );
}

/** `error` as a SigilError: ours unchanged, anything else 'internal', saying it came from loading. */
function loadingError(error: unknown): SigilError {
  if (error instanceof SigilError) return error;
  return new SigilError('internal', `unexpected error while loading TLS material: ${String(error)}`, {
    cause: error,
  });
}

export class FileMaterialSource implements MaterialSource {
  readonly files: MaterialFiles;
  readonly #provider: MaterialProvider;
  readonly #onError: (error: SigilError) => void;
  readonly #debounceMs: number;
  readonly #watchers: FSWatcher[] = [];
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  /** The message of the last refusal, so a broken state is reported once, not on every poll. */
  #lastRefusal: string | undefined;
  #closed = false;

  private constructor(files: MaterialFiles, provider: MaterialProvider, options: FileSourceOptions) {
    this.files = files;
    this.#provider = provider;
    this.#onError =
      options.onError ?? ((error) => process.emitWarning(error.message, 'SigilMaterialWarning'));
    this.#debounceMs = options.debounceMs ?? DEFAULT_DEBOUNCE_MS;
  }

  /**
   * Reads and validates the files, then starts watching them. Throws a
   * SigilError when the initial set is missing or invalid: there is no older
   * material to fall back on.
   */
  static async open(options: FileSourceOptions): Promise<FileMaterialSource> {
    checkPaths(options);
    const files: MaterialFiles = {
      certificateChain: resolve(options.certificateChain),
      privateKey: resolve(options.privateKey),
      trustBundle: resolve(options.trustBundle),
      ...(options.crls === undefined ? {} : { crls: options.crls.map((path) => resolve(path)) }),
    };
    const debounceMs = options.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    const pollIntervalMs = options.pollIntervalMs ?? DEFAULT_POLL_MS;
    if (!Number.isFinite(debounceMs) || debounceMs < 0)
      throw invalid(`debounceMs must be ≥ 0 (got ${debounceMs})`);
    if (!Number.isFinite(pollIntervalMs) || pollIntervalMs < 0) {
      throw invalid(`pollIntervalMs must be ≥ 0 (got ${pollIntervalMs})`);
    }
    const material = await readMaterial(files);
    let provider: MaterialProvider;
    try {
      checkMaterialFiles(material, files);
      provider = new MaterialProvider(material);
    } catch (error) {
      const e = loadingError(error);
      throw new SigilError(e.code, `TLS material from ${describeFiles(files)} is not usable: ${e.message}`, {
        cause: e,
      });
    }
    const source = new FileMaterialSource(files, provider, options);
    source.#watch(pollIntervalMs);
    return source;
  }

  current(): TlsMaterial {
    return this.#provider.current();
  }

  subscribe(listener: (material: TlsMaterial) => void): () => void {
    return this.#provider.subscribe(listener);
  }

  /**
   * Re-reads the files now and applies them if they changed and form a valid
   * set. Never throws: refusals go to onError. Reloads run one at a time.
   */
  reload(): Promise<ReloadOutcome> {
    const run = this.#queue.then(() => this.#reloadOnce());
    this.#queue = run;
    return run;
  }

  /** Stops watching and polling. Idempotent; current() keeps working. */
  close(): void {
    this.#closed = true;
    for (const watcher of this.#watchers.splice(0)) watcher.close();
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
    this.#poll = undefined;
    this.#debounce = undefined;
  }

  async #reloadOnce(): Promise<ReloadOutcome> {
    try {
      const material = await readMaterial(this.files);
      if (sameMaterial(material, this.#provider.current())) {
        this.#lastRefusal = undefined;
        return 'unchanged';
      }
      checkMaterialFiles(material, this.files);
      this.#provider.set(material);
      this.#lastRefusal = undefined;
      return 'applied';
    } catch (error) {
      const e = loadingError(error);
      const refusal = new SigilError(
        e.code,
        `TLS material from ${describeFiles(this.files)} not applied, the previous material stays in use: ${e.message}`,
        { cause: e },
      );
      if (refusal.message !== this.#lastRefusal) {
        this.#lastRefusal = refusal.message;
        this.#onError(refusal);
      }
      return 'rejected';
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.reload();
    }, this.#debounceMs);
    this.#debounce.unref();
  }

  #watch(pollIntervalMs: number): void {
    const paths = [
      this.files.certificateChain,
      this.files.privateKey,
      this.files.trustBundle,
      ...(this.files.crls ?? []),
    ];
    for (const directory of new Set(paths.map((path) => dirname(path)))) {
      try {
        // Any event in the directory is a hint; reload() decides what changed.
        const watcher = watch(directory, { persistent: false }, () => this.#schedule());
        watcher.on('error', (error) => {
          watcher.close();
          this.#onError(
            invalid(
              `stopped watching ${JSON.stringify(directory)} (${errorCode(error) ?? 'watch error'}); ` +
                'changes are picked up by polling only',
              error,
            ),
          );
        });
        this.#watchers.push(watcher);
      } catch (error) {
        this.#onError(
          invalid(
            `cannot watch ${JSON.stringify(directory)} (${errorCode(error) ?? 'watch failed'}); ` +
              'changes are picked up by polling only',
            error,
          ),
        );
      }
    }
    if (pollIntervalMs > 0) {
      this.#poll = setInterval(() => this.#schedule(), pollIntervalMs);
      this.#poll.unref();
    }
  }
}

/** Refuses paths that are not non-empty strings before any is resolved. */
function checkPaths(options: FileSourceOptions): void {
  const check = (value: unknown, what: string) => {
    if (typeof value !== 'string' || value === '') {
      throw invalid(
        `FileMaterialSource: ${what} must be a file path, got ${JSON.stringify(value) ?? typeof value}`,
      );
    }
  };
  if (typeof options !== 'object' || options === null) {
    throw invalid('FileMaterialSource.open needs { certificateChain, privateKey, trustBundle } file paths');
  }
  check(options.certificateChain, 'certificateChain');
  check(options.privateKey, 'privateKey');
  check(options.trustBundle, 'trustBundle');
  if (options.crls !== undefined) {
    if (!Array.isArray(options.crls))
      throw invalid('FileMaterialSource: crls must be an array of file paths');
    for (const [index, path] of options.crls.entries()) check(path, `crls[${index}]`);
  }
}

function describeFiles(files: MaterialFiles): string {
  const dirs = [
    ...new Set([files.certificateChain, files.privateKey, files.trustBundle].map((p) => dirname(p))),
  ];
  return dirs.map((d) => JSON.stringify(d)).join(', ');
}
