// `sigil vminit`, the guest agent (firebuild-mmds cmd/vminit/main.go): read
// this guest's metadata document; with Bootstrap in it run the build it names
// (guest-bootstrap.ts), else write hostname, hosts, env file, SSH keys and the
// entrypoint runner (guest-injectors.ts). firebuild's exit codes: 0 ok,
// 1 metadata could not be read, 2 the bootstrap failed, 3 an injector failed.
import { messageOf } from '../errors.ts';
import { type BootstrapConnector, clientOptionsFrom, runBootstrap } from './guest-bootstrap.ts';
import { type InjectorPaths, injectAll } from './guest-injectors.ts';
import { fetchMetadataDocument, type MetadataClientOptions } from './metadata-client.ts';
import type { MetadataDocument } from './metadata-document.ts';

export const EXIT_OK = 0;
export const EXIT_METADATA_FAILED = 1;
export const EXIT_BOOTSTRAP_FAILED = 2;
export const EXIT_INJECTION_FAILED = 3;

export type VminitExitCode =
  | typeof EXIT_OK
  | typeof EXIT_METADATA_FAILED
  | typeof EXIT_BOOTSTRAP_FAILED
  | typeof EXIT_INJECTION_FAILED;

export interface VminitOptions {
  readonly metadata: MetadataClientOptions;
  readonly paths: InjectorPaths;
  /** The directory holding the guest's root (default "/"). */
  readonly root?: string;
  /** Connects to the bootstrap service; without it a bootstrap document fails with exit 2. */
  readonly connect?: BootstrapConnector;
  /** Progress and failure lines (never keys or tokens). */
  readonly log?: (line: string) => void;
  /** Where RUN's temp scripts go (default the system's temp directory). */
  readonly scriptDirectory?: string;
}

export interface VminitOutcome {
  readonly exitCode: VminitExitCode;
  /** null when the metadata could not be read. */
  readonly mode: 'bootstrap' | 'normal' | null;
  /** The failure, one line; absent on success. */
  readonly error?: string;
  /** Bootstrap mode: how many build commands ran. */
  readonly commands?: number;
  /** Normal mode: the guest files written. */
  readonly written?: readonly string[];
}

async function bootstrap(
  document: MetadataDocument & { Bootstrap: NonNullable<MetadataDocument['Bootstrap']> },
  options: VminitOptions,
  log: (line: string) => void,
): Promise<VminitOutcome> {
  if (options.connect === undefined) {
    const error = 'no bootstrap client is available to this vminit';
    log(`bootstrap failed: ${error}`);
    return { exitCode: EXIT_BOOTSTRAP_FAILED, mode: 'bootstrap', error };
  }
  let peer: Awaited<ReturnType<BootstrapConnector>>;
  try {
    peer = await options.connect(clientOptionsFrom(document.Bootstrap));
  } catch (error) {
    log(`bootstrap failed: cannot connect to ${document.Bootstrap.HostPort}: ${messageOf(error)}`);
    return { exitCode: EXIT_BOOTSTRAP_FAILED, mode: 'bootstrap', error: messageOf(error) };
  }
  try {
    log(`bootstrap service ${document.Bootstrap.HostPort}`);
    const result = await runBootstrap(peer, document.Bootstrap.PingInterval, {
      root: options.root,
      scriptDirectory: options.scriptDirectory,
      log,
    });
    log(`build succeeded: ${result.commands} commands`);
    return { exitCode: EXIT_OK, mode: 'bootstrap', commands: result.commands };
  } catch (error) {
    log(`bootstrap failed: ${messageOf(error)}`);
    return { exitCode: EXIT_BOOTSTRAP_FAILED, mode: 'bootstrap', error: messageOf(error) };
  } finally {
    peer.close();
  }
}

/** Runs vminit once; never throws: every failure is an outcome with its exit code. */
export async function runVminit(options: VminitOptions): Promise<VminitOutcome> {
  const log = options.log ?? (() => undefined);
  let document: MetadataDocument;
  try {
    document = await fetchMetadataDocument(options.metadata);
  } catch (error) {
    log(`reading the metadata failed: ${messageOf(error)}`);
    return { exitCode: EXIT_METADATA_FAILED, mode: null, error: messageOf(error) };
  }
  if (document.Bootstrap !== undefined)
    return bootstrap({ ...document, Bootstrap: document.Bootstrap }, options, log);
  try {
    const written = await injectAll(document, options.paths, options.root ?? '/');
    for (const path of written) log(`wrote ${path}`);
    return { exitCode: EXIT_OK, mode: 'normal', written };
  } catch (error) {
    log(`injection failed: ${messageOf(error)}`);
    return { exitCode: EXIT_INJECTION_FAILED, mode: 'normal', error: messageOf(error) };
  }
}
