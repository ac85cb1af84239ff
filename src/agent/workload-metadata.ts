// The daemon's metadata service: serves each running workload its own
// document (workload-document.ts) at 169.254.169.254:80 on the bridges'
// namespace, picked by the address a request comes from. Only running
// workloads with an address on a bridge have one; every other address gets
// 403. Builds register their Bootstrap section here for the build workload's
// key, and workload identities their current certificate.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { EntrypointInfo } from '../guest/dockerfile-image.ts';
import type { BootstrapMetadata, IdentityMetadata, MetadataDocument } from '../guest/metadata-document.ts';
import { METADATA_ADDRESS, startMetadataRelay, startPortRelay } from '../guest/metadata-relay.ts';
import { type MetadataService, startRelayedMetadataService } from '../guest/metadata-server.ts';
import type { WorkloadNetworks } from '../workloads/networks.ts';
import type { WorkloadSupervisor } from '../workloads/supervisor.ts';
import { workloadDocument } from './workload-document.ts';

export interface WorkloadMetadataOptions {
  readonly supervisor: Pick<WorkloadSupervisor, 'list' | 'specOf'>;
  readonly networks: WorkloadNetworks;
  /** A root-only directory for the daemon's socket. */
  readonly directory: string;
  /** The current identity of a workload, by key (workload-identities.ts), if it has one. */
  readonly identityOf?: (key: string) => Promise<IdentityMetadata | undefined>;
  /** A built image's ENTRYPOINT and CMD, by image tag (built-images.ts). */
  readonly entrypointOf?: (image: string) => EntrypointInfo | undefined;
}

export class WorkloadMetadata {
  readonly #options: WorkloadMetadataOptions;
  readonly #bootstraps = new Map<string, BootstrapMetadata>();
  #service: MetadataService | undefined;
  #relay: { close(): Promise<void> } | undefined;

  private constructor(options: WorkloadMetadataOptions) {
    this.#options = options;
  }

  /** Starts the service and its relay in the bridges' namespace. */
  static async start(options: WorkloadMetadataOptions): Promise<WorkloadMetadata> {
    const metadata = new WorkloadMetadata(options);
    const socketPath = join(options.directory, 'metadata.sock');
    metadata.#service = await startRelayedMetadataService(socketPath, {
      documentFor: (source) => metadata.documentFor(source),
    });
    try {
      metadata.#relay = await startMetadataRelay({ namespace: options.networks.namespace, socketPath });
    } catch (error) {
      await metadata.close();
      throw error;
    }
    return metadata;
  }

  /** A build's Bootstrap section for the workload `key` (undefined removes it). */
  setBootstrap(key: string, bootstrap: BootstrapMetadata | undefined): void {
    if (bootstrap === undefined) this.#bootstraps.delete(key);
    else this.#bootstraps.set(key, bootstrap);
  }

  /** The document of the running workload at `source`, or null. */
  async documentFor(source: string): Promise<MetadataDocument | null> {
    const { supervisor, networks, identityOf } = this.#options;
    for (const info of supervisor.list()) {
      if (info.state !== 'running') continue;
      if (!info.addresses.some((place) => place.address.split('/')[0] === source)) continue;
      const identity = await identityOf?.(info.key);
      const bootstrap = this.#bootstraps.get(info.key);
      const spec = supervisor.specOf(info.key);
      const entrypoint = this.#options.entrypointOf?.(spec.image);
      return workloadDocument(spec, info, networks.bridges, {
        ...(bootstrap ? { bootstrap } : {}),
        ...(identity ? { identity } : {}),
        ...(entrypoint ? { entrypoint } : {}),
      });
    }
    return null;
  }

  /**
   * Makes a service listening on the host's 127.0.0.1:`port` reachable from
   * the workloads at 169.254.169.254:<the returned port> (a build's bootstrap
   * service): a raw relay in the bridges' namespace, through a unix socket of
   * the daemon's, to that port. close() ends both.
   */
  async exposeLocalPort(port: number): Promise<{ hostPort: string; close(): Promise<void> }> {
    const socketPath = join(this.#options.directory, `relay-${randomBytes(6).toString('hex')}.sock`);
    const forwarder: Server = createServer((socket) => {
      const upstream = connect(port, '127.0.0.1');
      const close = () => {
        socket.destroy();
        upstream.destroy();
      };
      socket.on('error', close);
      upstream.on('error', close);
      socket.pipe(upstream).on('close', close);
      upstream.pipe(socket).on('close', close);
    });
    await new Promise<void>((resolve, reject) => {
      forwarder.once('error', reject);
      forwarder.listen(socketPath, () => resolve());
    });
    const closeForwarder = () =>
      new Promise<void>((resolve) => {
        forwarder.close(() => resolve());
        rmSync(socketPath, { force: true });
      });
    try {
      const relay = await startPortRelay({ namespace: this.#options.networks.namespace, socketPath });
      return {
        hostPort: `${METADATA_ADDRESS}:${relay.port}`,
        close: async () => {
          await relay.close();
          await closeForwarder();
        },
      };
    } catch (error) {
      await closeForwarder();
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.#relay?.close();
    await this.#service?.close();
  }
}
