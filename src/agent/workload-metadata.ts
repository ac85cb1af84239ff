// The daemon's metadata service: serves each running workload its own
// document (workload-document.ts) at 169.254.169.254:80 on the bridges'
// namespace, picked by the address a request comes from. Only running
// workloads with an address on a bridge have one; every other address gets
// 403. Workload identities add their current certificate.
//
// Builds: each build workload's bootstrap service (on the host's loopback) is
// reached at 169.254.169.254:BOOTSTRAP_PORT through one relay started with
// the daemon, which names the connecting address; the daemon forwards the
// connection to the bootstrap service of the build running at that address,
// and closes any other. Mutual TLS with the build's own CA still decides who
// may call it.
import { rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { EntrypointInfo } from '../guest/dockerfile-image.ts';
import type { BootstrapMetadata, IdentityMetadata, MetadataDocument } from '../guest/metadata-document.ts';
import { METADATA_ADDRESS, startMetadataRelay, startPortRelay } from '../guest/metadata-relay.ts';
import { type MetadataService, startRelayedMetadataService } from '../guest/metadata-server.ts';
import { readRelayPreamble } from '../guest/relay-preamble.ts';
import type { WorkloadNetworks } from '../workloads/networks.ts';
import type { WorkloadInfo, WorkloadSupervisor } from '../workloads/supervisor.ts';
import { workloadDocument } from './workload-document.ts';

/** Where build workloads reach their bootstrap service, on the metadata address. */
export const BOOTSTRAP_PORT = 8443;

export interface WorkloadMetadataOptions {
  readonly supervisor: Pick<WorkloadSupervisor, 'list' | 'specOf'>;
  readonly networks: WorkloadNetworks;
  /** A root-only directory for the daemon's sockets. */
  readonly directory: string;
  /** The current identity of a workload, by key (workload-identities.ts), if it has one. */
  readonly identityOf?: (key: string) => Promise<IdentityMetadata | undefined>;
  /** A built image's ENTRYPOINT and CMD, by image tag (built-images.ts). */
  readonly entrypointOf?: (image: string) => EntrypointInfo | undefined;
}

interface Closable {
  close(): Promise<void>;
}

export class WorkloadMetadata {
  readonly #options: WorkloadMetadataOptions;
  readonly #bootstraps = new Map<string, { metadata: BootstrapMetadata; port: number }>();
  readonly #closers: (() => Promise<void>)[] = [];

  private constructor(options: WorkloadMetadataOptions) {
    this.#options = options;
  }

  /** Starts the service, the bootstrap router and their relays in the bridges' namespace. */
  static async start(options: WorkloadMetadataOptions): Promise<WorkloadMetadata> {
    const metadata = new WorkloadMetadata(options);
    try {
      const socketPath = join(options.directory, 'metadata.sock');
      const service: MetadataService = await startRelayedMetadataService(socketPath, {
        documentFor: (source) => metadata.documentFor(source),
      });
      metadata.#closers.push(() => service.close());
      const relay: Closable = await startMetadataRelay({ namespace: options.networks.namespace, socketPath });
      metadata.#closers.push(() => relay.close());
      await metadata.#startBootstrapRouter();
    } catch (error) {
      await metadata.close();
      throw error;
    }
    return metadata;
  }

  /**
   * Routes the build workload `key` to its bootstrap service on the host's
   * 127.0.0.1:`port`, and puts `bootstrap` (whose HostPort this sets) in its
   * document. The returned function removes both.
   */
  routeBootstrap(key: string, bootstrap: Omit<BootstrapMetadata, 'HostPort'>, port: number): () => void {
    const metadata = { ...bootstrap, HostPort: `${METADATA_ADDRESS}:${BOOTSTRAP_PORT}` };
    this.#bootstraps.set(key, { metadata, port });
    return () => this.#bootstraps.delete(key);
  }

  /** The running workload with `source` as its address on a bridge, if any. */
  #workloadAt(source: string): WorkloadInfo | undefined {
    return this.#options.supervisor
      .list()
      .find(
        (info) =>
          info.state === 'running' && info.addresses.some((place) => place.address.split('/')[0] === source),
      );
  }

  /** The document of the running workload at `source`, or null. */
  async documentFor(source: string): Promise<MetadataDocument | null> {
    const { supervisor, networks, identityOf, entrypointOf } = this.#options;
    const info = this.#workloadAt(source);
    if (!info) return null;
    const identity = await identityOf?.(info.key);
    const bootstrap = this.#bootstraps.get(info.key)?.metadata;
    const spec = supervisor.specOf(info.key);
    const entrypoint = entrypointOf?.(spec.image);
    return workloadDocument(spec, info, networks.bridges, {
      ...(bootstrap ? { bootstrap } : {}),
      ...(identity ? { identity } : {}),
      ...(entrypoint ? { entrypoint } : {}),
    });
  }

  /** One relay for every build: each connection goes to the bootstrap service of the build at its address. */
  async #startBootstrapRouter(): Promise<void> {
    const socketPath = join(this.#options.directory, 'bootstrap.sock');
    rmSync(socketPath, { force: true });
    const sockets = new Set<Socket>();
    const router: Server = createServer((socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      readRelayPreamble(socket, (source) => {
        const info = this.#workloadAt(source);
        const route = info ? this.#bootstraps.get(info.key) : undefined;
        if (!route) {
          socket.destroy();
          return;
        }
        const upstream = connect(route.port, '127.0.0.1');
        const close = () => {
          socket.destroy();
          upstream.destroy();
        };
        upstream.on('error', close);
        socket.on('error', close);
        socket.pipe(upstream).on('close', close);
        upstream.pipe(socket).on('close', close);
        socket.resume();
      });
    });
    await new Promise<void>((resolve, reject) => {
      router.once('error', reject);
      router.listen(socketPath, () => resolve());
    });
    this.#closers.push(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          router.close(() => resolve());
        }),
    );
    const relay = await startPortRelay({
      namespace: this.#options.networks.namespace,
      socketPath,
      port: BOOTSTRAP_PORT,
    });
    this.#closers.push(() => relay.close());
  }

  async close(): Promise<void> {
    for (const close of this.#closers.splice(0).reverse()) await close().catch(() => undefined);
  }
}
