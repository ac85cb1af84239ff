// Puts the metadata service where a workload looks for it: 169.254.169.254:80
// inside the network namespace of the node's workload bridges. The address
// goes on that namespace's lo (any local address answers on every interface,
// so each bridge's workloads reach it through their default route), and
// metadata-relay-program.ts listens there, forwarding each connection to the
// daemon's unix socket with the address it came from.
//
// The same program puts the builds' bootstrap services on another port of
// that address (startPortRelay); the daemon routes those by the address line.
//
// Nothing in the host's own namespace changes. On close the relay is stopped
// and the address removed (the namespace may be the operator's).
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { messageOf, preconditionFailed, SigilError } from '../errors.ts';

export const METADATA_ADDRESS = '169.254.169.254';
export const METADATA_PORT = 80;
const READY_TIMEOUT_MS = 10_000;
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const PROGRAM = fileURLToPath(new URL('./metadata-relay-program.ts', import.meta.url));

export interface MetadataRelayOptions {
  /** The `ip netns` name of the bridges' namespace. */
  readonly namespace: string;
  /** The daemon's socket the relay forwards to. */
  readonly socketPath: string;
  /** Default 169.254.169.254 and 80 (0: any free port, see `port` of the result). */
  readonly address?: string;
  readonly port?: number;
}

export interface MetadataRelay {
  /** The port the relay listens on. */
  readonly port: number;
  close(): Promise<void>;
}

function ip(args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { env: TOOL_ENV, timeout: 10_000 }, (error, _stdout, stderr) => {
      if (!error) return resolve();
      const reason = String(stderr).trim().split('\n')[0] || messageOf(error);
      reject(new SigilError('internal', `ip ${args.join(' ')}: ${reason}`, { cause: error }));
    });
  });
}

function netnsPath(namespace: string): string {
  const netns = `/run/netns/${namespace}`;
  if (!existsSync(netns)) throw preconditionFailed(`network namespace ${namespace}: not found`);
  return netns;
}

/** Starts the relay program in the namespace; resolves once it listens, with its port. */
async function spawnRelay(
  namespace: string,
  address: string,
  port: number,
  socketPath: string,
): Promise<MetadataRelay> {
  const child = spawn(
    'nsenter',
    [`--net=${netnsPath(namespace)}`, '--', process.execPath, PROGRAM, address, String(port), socketPath],
    { env: TOOL_ENV, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-500);
  });
  let bound: number;
  try {
    bound = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new SigilError('internal', 'metadata relay: not ready in time')),
        READY_TIMEOUT_MS,
      );
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString('utf8');
        const ready = /ready (\d+)/.exec(stdout);
        if (ready) {
          clearTimeout(timer);
          resolve(Number(ready[1]));
        }
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new SigilError('internal', `metadata relay: ${messageOf(error)}`, { cause: error }));
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        reject(
          new SigilError(
            'internal',
            `metadata relay exited (${code}): ${stderr.trim().split('\n').pop() ?? ''}`,
          ),
        );
      });
    });
  } catch (error) {
    child.kill('SIGKILL');
    await exited;
    throw error;
  }
  return {
    port: bound,
    close: async () => {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Adds the metadata address to the namespace's lo and starts the relay there. */
export async function startMetadataRelay(options: MetadataRelayOptions): Promise<MetadataRelay> {
  const address = options.address ?? METADATA_ADDRESS;
  netnsPath(options.namespace);
  await ip(['-netns', options.namespace, 'address', 'replace', `${address}/32`, 'dev', 'lo']);
  const removeAddress = () =>
    ip(['-netns', options.namespace, 'address', 'del', `${address}/32`, 'dev', 'lo']).catch(() => undefined);
  let relay: MetadataRelay;
  try {
    relay = await spawnRelay(options.namespace, address, options.port ?? METADATA_PORT, options.socketPath);
  } catch (error) {
    await removeAddress();
    throw error;
  }
  return {
    port: relay.port,
    close: async () => {
      await relay.close();
      await removeAddress();
    },
  };
}

/**
 * A relay on `address` (already on the namespace's lo: the metadata relay put
 * it there) and `port` (0: a free one), to the daemon's `socketPath`.
 */
export function startPortRelay(options: MetadataRelayOptions): Promise<MetadataRelay> {
  return spawnRelay(
    options.namespace,
    options.address ?? METADATA_ADDRESS,
    options.port ?? 0,
    options.socketPath,
  );
}
