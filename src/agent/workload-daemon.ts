// The node workload daemon (`sigil agent --dir NODE --workloads`): the node
// agent keeps the node's identity fresh, and with it this daemon serves the
// Workloads service over sigil's own mutual TLS as the node, runs what
// admins and delegates ask for within their policies, and follows the
// control plane: revocations (which destroy what a revoked chain owns and
// cut its connections), reservations (reserved before anything starts) and
// its own endpoint (registered so `sigil workload … --node` finds it).
//
// Images are in <node>/images (sigil image import); the rest in <node>/workloads: events.db, desired.db (what
// to run, see workloads/desired-state.ts), state/ (writable layers).
//
// Start after a crash (kill -9 included): the desired workloads are started
// again (each gets a `restarted` event), those whose owner was revoked
// meanwhile are forgotten (`destroyed-by-revocation`), and once the control
// plane answers, reservations are reconciled: released when this node holds
// one nothing desired needs; a delegate's desired workload whose reservation is
// gone is destroyed (the daemon does not keep the chain it would reserve with).
//
// Shutdown (close, SIGINT/SIGTERM in the CLI): stop serving, kill every
// workload (they stay desired: the next start runs them again), close the rest.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { splitAddress } from '../client/control-plane-channel.ts';
import { unary } from '../client/rpc.ts';
import { firstLineOf, preconditionFailed } from '../errors.ts';
import { WorkloadsService } from '../gen/sigil/v1/workloads.ts';
import { type Logger, silentLogger } from '../logging.ts';
import { MtlsServer } from '../transport/mtls-server.ts';
import { RevocationSet } from '../transport/revocation-set.ts';
import { openBlockStore } from '../workloads/block-devices.ts';
import { detectCgroups } from '../workloads/cgroups/detect.ts';
import { DesiredState } from '../workloads/desired-state.ts';
import { EventLog } from '../workloads/event-log.ts';
import { prepareGuestRuntime } from '../workloads/guest-runtime.ts';
import { openImageStore, resolveImage } from '../workloads/images.ts';
import { cleanLeftovers } from '../workloads/leftovers.ts';
import { openWorkloadNetworks, type WorkloadNetworks } from '../workloads/networks.ts';
import { WorkloadSupervisor } from '../workloads/supervisor.ts';
import { NodeAgent } from './agent.ts';
import { builtImageEntrypoint } from './built-images.ts';
import { Closers } from './closers.ts';
import { ControlPlaneLink, policyOidOf } from './control-plane-link.ts';
import { RevocationFollower } from './revocation-follower.ts';
import { WorkloadBlocks } from './workload-blocks.ts';
import { WorkloadIdentities } from './workload-identities.ts';
import { WorkloadMetadata } from './workload-metadata.ts';
import { serveWorkloadMetrics, workloadMetricsOf } from './workload-metrics-http.ts';
import { WorkloadOperations } from './workload-operations.ts';
import { reconcileReservations, restoreDesired } from './workload-recovery.ts';
import { workloadService } from './workload-service.ts';

export const DEFAULT_WORKLOADS_LISTEN = '127.0.0.1:7543';
const SNAPSHOT_WAIT_MS = 5000;
const CLOSE_GRACE_MS = 2000;

export interface WorkloadDaemonOptions {
  /** The node's identity directory (sigil enrol). */
  readonly dir: string;
  /** HOST:PORT. Default 127.0.0.1:7543; port 0 picks a free one. */
  readonly listen?: string;
  /** Where /metrics is served (loopback HOST:PORT); none when absent. */
  readonly metricsListen?: string;
  /** `NAME=ADDRESS/PREFIX` bridges, e.g. br0=10.77.0.1/24. */
  readonly bridges?: readonly string[];
  /** The network namespace the bridges live in (networks.ts). Default: one of its own. */
  readonly networkNamespace?: { readonly create: string } | { readonly existing: string };
  /** The cgroup sub-directory workloads go beneath (tests give each run its own). */
  readonly cgroupBase?: string;
  readonly logger?: Logger;
  /** How long a reservation may take before a create is refused. Default 5 s. */
  readonly reserveTimeoutMs?: number;
  /** First wait between endpoint registrations that failed. Default 1 s (doubling to 30 s). */
  readonly registerRetryMs?: number;
  /** The node agent, when the caller runs one already. Default: one opened on `dir`. */
  readonly agent?: NodeAgent;
}

/** The one line a daemon that is not root prints; null for root. */
export function rootRefusal(uid: number | undefined): string | null {
  return uid === 0 ? null : 'sigil agent --workloads must run as root (namespaces, cgroups)';
}

/** The daemon's own network namespace id for a node: `sigil-<id>`, the same at every start. */
function namespaceIdOf(nodeId: string): string {
  return (
    nodeId
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '')
      .slice(0, 32) || 'workloads'
  );
}

function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export class WorkloadDaemon {
  /** Where the Workloads service listens, HOST:PORT. */
  readonly address: string;
  /** Where /metrics is served, HOST:PORT; null without --metrics-listen. */
  readonly metricsAddress: string | null;
  readonly agent: NodeAgent;
  readonly revocations: RevocationSet;
  readonly operations: WorkloadOperations;
  readonly events: EventLog;
  readonly #closers: Closers;
  readonly #logger: Logger;
  #stopped = false;
  #closing: Promise<void> | undefined;
  #registerTimer: NodeJS.Timeout | undefined;
  /** Resolves once the endpoint is registered and reservations reconciled (or the daemon closes). */
  readonly settled: Promise<void>;

  private constructor(parts: {
    address: string;
    metricsAddress: string | null;
    agent: NodeAgent;
    revocations: RevocationSet;
    operations: WorkloadOperations;
    events: EventLog;
    closers: Closers;
    logger: Logger;
    registerRetryMs: number;
  }) {
    this.address = parts.address;
    this.metricsAddress = parts.metricsAddress;
    this.agent = parts.agent;
    this.revocations = parts.revocations;
    this.operations = parts.operations;
    this.events = parts.events;
    this.#closers = parts.closers;
    this.#logger = parts.logger;
    this.settled = this.#registerAndReconcile(parts.registerRetryMs);
  }

  static async start(options: WorkloadDaemonOptions): Promise<WorkloadDaemon> {
    const refusal = rootRefusal(process.getuid?.());
    if (refusal !== null) throw preconditionFailed(refusal);
    const logger = options.logger ?? silentLogger();
    const closers = new Closers();
    try {
      return await WorkloadDaemon.#open(options, logger, closers);
    } catch (error) {
      await closers.run(logger);
      throw error;
    }
  }

  static async #open(
    options: WorkloadDaemonOptions,
    logger: Logger,
    closers: Closers,
  ): Promise<WorkloadDaemon> {
    const agent = options.agent ?? (await NodeAgent.open({ dir: options.dir, logger }));
    if (!options.agent) closers.add(() => agent.close());
    if (!options.agent) agent.start();
    const info = agent.info;
    if (info.spiffeId === null)
      throw preconditionFailed(`node ${info.nodeId} is not approved yet (sigil node approve ${info.nodeId})`);
    const nodeName = info.name ?? info.nodeId;
    const link = new ControlPlaneLink({
      material: agent.material,
      addresses: () => agent.info.addresses,
      trustDomain: () => agent.info.trustDomain,
    });
    closers.add(() => link.close());
    const policyOid = await policyOidOf(link, logger, SNAPSHOT_WAIT_MS);

    const revocations = new RevocationSet();
    const follower = new RevocationFollower({ revocations, client: (n) => link.authority(n), logger });
    closers.add(() => follower.close());
    follower.start();
    if (!(await follower.waitForSnapshot(SNAPSHOT_WAIT_MS)))
      logger.warn('no revocation snapshot yet; starting anyway (revocations apply as soon as they arrive)');

    const workDir = join(options.dir, 'workloads');
    mkdirSync(workDir, { recursive: true, mode: 0o700 });
    const cgroups = detectCgroups(options.cgroupBase === undefined ? {} : { base: options.cgroupBase });
    const images = openImageStore(options.dir); // <node>/images, where `sigil image import --dir` puts them
    const events = EventLog.open(join(workDir, 'events.db'));
    closers.add(() => events.close());
    const desired = DesiredState.open(options.dir);
    closers.add(() => desired.close());
    const bridges = options.bridges ?? [];
    // Named after the node, so that the next start finds (and removes) it after a crash.
    const namespace = options.networkNamespace ?? { create: namespaceIdOf(info.nodeId) };
    const stateDir = join(workDir, 'state');
    const removed = await cleanLeftovers({
      cgroups,
      stateDir,
      ...('create' in namespace ? { networks: { namespace: `sigil-${namespace.create}` } } : {}),
    });
    const cleaned = Object.entries(removed).filter(([what, count]) => what !== 'failures' && count !== 0);
    if (cleaned.length > 0) logger.warn(Object.fromEntries(cleaned), 'removed what a previous daemon left');
    for (const failure of removed.failures) logger.error({ failure }, 'could not remove a leftover');
    let networks: WorkloadNetworks | null = null;
    if (bridges.length > 0) {
      networks = await openWorkloadNetworks({ bridges, namespace });
      const opened = networks;
      closers.add(() => opened.close());
    }
    // What runs `sigil vminit` inside builds and built images (guest-runtime.ts).
    const guestRuntime = prepareGuestRuntime(join(workDir, 'runtime'));
    // Builds keep their uploads here while they run; what a crash left is removed.
    const buildDir = join(workDir, 'builds');
    rmSync(buildDir, { recursive: true, force: true });
    mkdirSync(buildDir, { mode: 0o700 });
    const reserveTimeoutMs = options.reserveTimeoutMs ?? 5000;
    let operations: WorkloadOperations | undefined;
    const blocks = new WorkloadBlocks({
      store: openBlockStore(options.dir),
      link,
      logger,
      reserveTimeoutMs,
      records: () => operations?.records.values() ?? [],
    });
    const supervisor = new WorkloadSupervisor({
      mountBlock: blocks.mountBlock,
      cgroups,
      images,
      events,
      stateDir,
      ...(networks ? { networks } : {}),
    });
    closers.add(async () => {
      await supervisor.close();
      await cgroups.removeBase().catch(() => undefined);
    });
    // Workloads on a bridge read their own document at 169.254.169.254:80.
    // Each gets its identity from the control plane (workload-identities.ts).
    const identities = new WorkloadIdentities({
      link,
      records: () => operations?.records.values() ?? [],
      isRunning: (key) => supervisor.list().some((w) => w.key === key && w.state === 'running'),
      trustBundle: () => agent.material.current().trustBundle,
      logger,
    });
    identities.start();
    closers.add(() => identities.close());
    const metadata = networks
      ? await WorkloadMetadata.start({
          supervisor,
          networks,
          directory: workDir,
          identityOf: (key) => identities.identityOf(key),
          entrypointOf: (image) => {
            try {
              return builtImageEntrypoint(resolveImage(images, image));
            } catch {
              return undefined;
            }
          },
        })
      : undefined;
    if (metadata) closers.add(() => metadata.close());
    operations = new WorkloadOperations({
      supervisor,
      blocks,
      images,
      desired,
      link,
      nodeName,
      bridges: networks?.bridges.map((bridge) => bridge.name) ?? [],
      logger,
      reserveTimeoutMs,
      guestRuntime,
      // A workload on a bridge reads its identity soon: have it ready.
      onCreated: (record) => {
        if (record.ownerKey !== '' && (record.spec.networks?.length ?? 0) > 0)
          void identities.identityOf(record.key);
      },
    });
    await restoreDesired(desired, operations, revocations, events, logger);
    const unsubscribe = revocations.subscribe((ids) => {
      operations.revoked(ids).then(
        (keys) => {
          if (keys.length > 0) logger.info({ workloads: keys }, 'destroyed the workloads of revoked owners');
        },
        (error: unknown) => logger.error({ err: firstLineOf(error) }, 'revocation handling failed'),
      );
    });
    closers.add(unsubscribe);

    const server = new MtlsServer({
      material: agent.material,
      revocation: revocations,
      delegation: { trustDomain: info.trustDomain, policyOid },
      onError: (error) => logger.warn({ err: firstLineOf(error) }, 'transport problem'),
      onHandshakeError: (failure) =>
        logger.debug(
          { reason: failure.reason, serial: failure.serial },
          `handshake refused: ${failure.message}`,
        ),
    });
    server.addService(
      WorkloadsService,
      workloadService({
        operations,
        images,
        events,
        blocks,
        trustDomain: info.trustDomain,
        logger,
        builds: {
          operations,
          images,
          metadata,
          runtime: guestRuntime,
          bridges: networks?.bridges.map((bridge) => bridge.name) ?? [],
          buildDir,
          logger,
        },
      }),
    );
    const { host, port } = splitAddress(options.listen ?? DEFAULT_WORKLOADS_LISTEN, {
      what: '--listen',
      listening: true,
    });
    const bound = await server.listen(host, port).catch(async (error: unknown) => {
      await server.close(0);
      throw preconditionFailed(`cannot listen on ${formatAddress(host, port)}: ${firstLineOf(error)}`);
    });
    closers.add(() => server.close(CLOSE_GRACE_MS));
    const address = formatAddress(host, bound);
    let metricsAddress: string | null = null;
    if (options.metricsListen !== undefined) {
      const where = splitAddress(options.metricsListen, { what: '--metrics-listen', listening: true });
      const metrics = await serveWorkloadMetrics(
        where.host,
        where.port,
        () => workloadMetricsOf(supervisor),
        logger,
      );
      closers.add(() => metrics.close());
      metricsAddress = metrics.address;
    }
    logger.info(
      {
        nodeId: info.nodeId,
        address,
        metrics: metricsAddress,
        bridges,
        // Where the bridges live: an operator starts services for the workloads there (ip netns exec).
        bridgeNamespace: networks?.namespace ?? null,
        workloads: operations.records.size,
      },
      'workload daemon serving',
    );
    return new WorkloadDaemon({
      address,
      metricsAddress,
      agent,
      revocations,
      operations,
      events,
      closers,
      logger,
      registerRetryMs: options.registerRetryMs ?? 1000,
    });
  }

  /** Stops serving and kills every workload (they stay desired); closes everything. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopped = true;
      clearTimeout(this.#registerTimer);
      await this.#closers.run(this.#logger);
    })();
    return this.#closing;
  }

  /** RegisterWorkloadEndpoint until it succeeds, then reconcile the reservations once. */
  async #registerAndReconcile(firstRetryMs: number): Promise<void> {
    let delay = firstRetryMs;
    for (let attempt = 1; !this.#stopped; attempt++) {
      try {
        await this.operations.link.placement((client, target) =>
          unary(
            client,
            client.registerWorkloadEndpoint,
            { address: this.address },
            { target, timeoutMs: 10_000 },
          ),
        );
        this.#logger.info({ address: this.address }, 'workload endpoint registered with the control plane');
        break;
      } catch (error) {
        this.#logger.warn(
          { attempt, retryInMs: delay, err: firstLineOf(error) },
          'could not register the workload endpoint; retrying',
        );
        await new Promise<void>((resolve) => {
          this.#registerTimer = setTimeout(resolve, delay);
          this.#registerTimer.unref();
        });
        delay = Math.min(delay * 2, 30_000);
      }
    }
    if (this.#stopped) return;
    await reconcileReservations(this.operations, this.#logger).catch((error: unknown) =>
      this.#logger.warn(
        { err: firstLineOf(error) },
        'could not reconcile reservations; they stay as they are',
      ),
    );
  }
}
