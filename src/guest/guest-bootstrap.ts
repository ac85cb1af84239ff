// vminit's bootstrap mode (firebuild-mmds bootstrap/bootstrap.go): connect to
// the build's bootstrap service with the mTLS material of the metadata
// document, ping it every PingInterval until done, fetch the commands and run
// them in order (RUN through command-runner.ts, ADD and COPY through
// resource-deployer.ts), then report Success; on the first failure report
// Abort with the error's message and fail.
//
// The client is passed in as a factory (the gRPC client lives in
// bootstrap-client.ts); BootstrapPeer is the part of it this needs.
import { messageOf } from '../errors.ts';
import type { BuildCommand } from './build-commands.ts';
import { type CommandRunnerOptions, runBuildCommand } from './command-runner.ts';
import type { BootstrapMetadata } from './metadata-document.ts';
import { deployResources, type ReceivedResource } from './resource-deployer.ts';

export interface BootstrapClientOptions {
  readonly hostPort: string;
  readonly caChainPem: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly serverName: string;
  readonly maxReceiveBytes?: number;
}

/** What vminit uses of the bootstrap service's client. */
export interface BootstrapPeer {
  commands(): Promise<BuildCommand[]>;
  ping(): Promise<void>;
  resource(path: string, stage: string): AsyncIterable<ReceivedResource>;
  stdout(lines: string[]): Promise<void>;
  stderr(lines: string[]): Promise<void>;
  abort(error: string): Promise<void>;
  success(): Promise<void>;
  close(): void;
}

export type BootstrapConnector = (options: BootstrapClientOptions) => BootstrapPeer | Promise<BootstrapPeer>;

export interface BootstrapRunOptions extends CommandRunnerOptions {
  /** The guest's root for ADD/COPY (default "/"). */
  readonly root?: string;
  /** Progress lines (never keys or tokens). */
  readonly log?: (line: string) => void;
}

export interface BootstrapResult {
  readonly commands: number;
}

/** firebuild's default and fallback ping interval. */
export const DEFAULT_PING_INTERVAL_MS = 5000;
/** A shorter interval would only load the service. */
const MIN_PING_INTERVAL_MS = 100;
const GO_DURATION_UNITS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** A Go duration string ("5s", "1m30s", "1.5s", "500ms") in ms; the default when it is not one, or not positive (as firebuild's SafePingInterval). */
export function pingIntervalMs(text: string): number {
  if (!/^(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+$/.test(text)) return DEFAULT_PING_INTERVAL_MS;
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)/g))
    total += Number(amount) * GO_DURATION_UNITS[unit];
  if (!Number.isFinite(total) || total <= 0) return DEFAULT_PING_INTERVAL_MS;
  return Math.max(MIN_PING_INTERVAL_MS, Math.round(total));
}

export function clientOptionsFrom(bootstrap: BootstrapMetadata): BootstrapClientOptions {
  return {
    hostPort: bootstrap.HostPort,
    caChainPem: bootstrap.CAChain,
    certPem: bootstrap.Cert,
    keyPem: bootstrap.Key,
    serverName: bootstrap.ServerName,
  };
}

/** Pings every `intervalMs` until stopped; a failed ping is logged and ends the pinging (as firebuild's does). */
function startPinging(peer: BootstrapPeer, intervalMs: number, log: (line: string) => void): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const next = (): void => {
    timer = setTimeout(() => {
      peer.ping().then(
        () => {
          if (!stopped) next();
        },
        (error: unknown) => {
          if (!stopped) log(`ping failed, no more pings: ${messageOf(error)}`);
        },
      );
    }, intervalMs);
  };
  next();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

async function runCommand(
  peer: BootstrapPeer,
  entry: BuildCommand,
  options: BootstrapRunOptions,
): Promise<void> {
  if (entry.kind === 'run') {
    await runBuildCommand(entry.command, peer, options);
    return;
  }
  const stage = entry.kind === 'copy' ? entry.command.Stage : '';
  await deployResources(entry.command, peer.resource(entry.command.Source, stage), { root: options.root });
}

/**
 * Runs the build `peer` serves. Resolves after Success was reported; on a
 * failure reports Abort (best effort) and rejects with that failure.
 */
export async function runBootstrap(
  peer: BootstrapPeer,
  pingInterval: string,
  options: BootstrapRunOptions = {},
): Promise<BootstrapResult> {
  const log = options.log ?? (() => undefined);
  const stopPinging = startPinging(peer, pingIntervalMs(pingInterval), log);
  let commands: BuildCommand[] = [];
  try {
    commands = await peer.commands();
    log(`${commands.length} build commands`);
    for (const [index, entry] of commands.entries()) {
      log(`command ${index + 1}/${commands.length}: ${entry.command.OriginalCommand.slice(0, 200)}`);
      await runCommand(peer, entry, options);
    }
    stopPinging();
  } catch (error) {
    stopPinging();
    await peer.abort(messageOf(error)).catch((abortError: unknown) => {
      log(`reporting the failure failed: ${messageOf(abortError)}`);
    });
    throw error;
  }
  await peer.success();
  return { commands: commands.length };
}
