// What the daemon does to workloads, whoever asked (a caller, revocation, a
// restart of the daemon): create within the caller's policy after the
// control plane reserved the resources, destroy and release, restart, and
// destroy everything a revoked chain owned.
//
// Create checks everything it can on the node first (name, image, CPUs,
// memory, bridges against the caller's effective policy), then reserves at
// the control plane (the caller's leaf and presented chain: the control plane
// admits them itself and charges every level of the chain), records the
// workload as desired, and only then starts it. A control plane that cannot
// be reached in time refuses the create (UNAVAILABLE) and nothing is
// started; a start that fails forgets the record and releases the
// reservation again. The order makes a crash at any point recoverable: a
// reservation without a record is released at the next start, a record
// without a running workload is started again.

import { alreadyExists, firstLineOf, invalid, SigilError } from '../errors.ts';
import type { CreateWorkloadRequest } from '../gen/sigil/v1/workloads.ts';
import type { Logger } from '../logging.ts';
import { parseImageReference } from '../protocol/image-names.ts';
import { normalizeSerial } from '../transport/revocation-set.ts';
import type { DesiredState, DesiredWorkload } from '../workloads/desired-state.ts';
import type { GuestRuntime } from '../workloads/guest-runtime.ts';
import { type ImageStore, resolveImage } from '../workloads/images.ts';
import type { ReadOnlyBind } from '../workloads/namespace-process.ts';
import type {
  DestroyReason,
  WorkloadInfo,
  WorkloadSpec,
  WorkloadSupervisor,
} from '../workloads/supervisor.ts';
import { builtImageCommand, builtImageEntrypoint } from './built-images.ts';
import type { ControlPlaneLink } from './control-plane-link.ts';
import { BLOCK_HOLDER_PREFIX, type WorkloadBlocks } from './workload-blocks.ts';
import { checkLabel, type WorkloadCaller } from './workload-callers.ts';
import type { WorkloadDetails } from './workload-messages.ts';
import { createSpec } from './workload-policy.ts';

export interface WorkloadOperationsOptions {
  readonly supervisor: WorkloadSupervisor;
  readonly images: ImageStore;
  readonly desired: DesiredState;
  readonly blocks: WorkloadBlocks;
  readonly link: ControlPlaneLink;
  /** The node's name (or ID) for messages. */
  readonly nodeName: string;
  /** The bridges this daemon configured. */
  readonly bridges: readonly string[];
  readonly logger: Logger;
  /** How long a reservation may take before the create is refused. Default 5 s. */
  readonly reserveTimeoutMs?: number;
  /** The guest runtime bound into builds and into built images run through vminit. */
  readonly guestRuntime?: GuestRuntime;
  /** Told of every workload once it runs (the daemon fetches its identity ahead of its first metadata read). */
  readonly onCreated?: (record: DesiredWorkload) => void;
}

const DEFAULT_RESERVE_TIMEOUT_MS = 5000;
const RELEASE_TIMEOUT_MS = 10_000;

/** What the supervisor runs for a desired workload; NOT_FOUND for a block device its owner does not have. */
export interface CreateOptions {
  /** Not kept in the desired state (a build's workload). */
  readonly transient?: boolean;
  /** Host directories bound read-only inside (the guest runtime). */
  readonly readOnlyBinds?: readonly ReadOnlyBind[];
}

export function supervisorSpecOf(
  record: DesiredWorkload,
  blocks: WorkloadBlocks,
  guestRuntime?: GuestRuntime,
): WorkloadSpec {
  const { spec } = record;
  return {
    key: record.key,
    name: spec.name,
    image: spec.image,
    command: spec.command,
    ...(spec.env ? { env: spec.env } : {}),
    ...(spec.workdir ? { workdir: spec.workdir } : {}),
    ...(spec.user ? { user: spec.user } : {}),
    ...(spec.limits ? { limits: spec.limits } : {}),
    ...(spec.restart ? { restart: spec.restart } : {}),
    ...(spec.networks && spec.networks.length > 0 ? { networks: spec.networks } : {}),
    ...(spec.blocks && spec.blocks.length > 0
      ? { blocks: blocks.supervisorBlocks(record.ownerKey, spec.blocks) }
      : {}),
    tty: spec.tty ?? true,
    ...(spec.runtime === 'vm' ? { runtime: 'vm' as const } : {}),
    ...(spec.guestRuntime && guestRuntime ? { readOnlyBinds: guestRuntime.binds } : {}),
  };
}

/** What a Workload message shows beyond the supervisor's view. */
export function detailsOf(record: DesiredWorkload): WorkloadDetails {
  const { spec } = record;
  return {
    memoryMiB: spec.limits?.memoryMiB ?? 0,
    cpus: spec.limits?.cpus ?? [],
    command: spec.command,
    networks: spec.networks ?? [],
    blocks: (spec.blocks ?? []).map((block) => `${block.name}:${block.mountPoint}`),
  };
}

export class WorkloadOperations {
  /** The desired workloads the supervisor runs, by key. */
  readonly records = new Map<string, DesiredWorkload>();
  /** Reservations being made and not yet recorded ("subtree//name"): reconciliation leaves them alone. */
  readonly reserving = new Set<string>();
  /** Desired workloads that could not be started again (they keep their reservations). */
  readonly unstarted = new Set<string>();
  /** Keys being created: a second create of the same name is refused, never reserves (or releases) twice. */
  readonly #creating = new Set<string>();
  readonly #options: WorkloadOperationsOptions;

  constructor(options: WorkloadOperationsOptions) {
    this.#options = options;
  }

  get supervisor(): WorkloadSupervisor {
    return this.#options.supervisor;
  }

  get link(): ControlPlaneLink {
    return this.#options.link;
  }

  /**
   * Validates, reserves at the control plane, records, starts; a refusal leaves nothing behind.
   * A transient workload (a build's) is not kept in the desired state: a restarted daemon does not run it again.
   */
  async create(
    caller: WorkloadCaller,
    request: CreateWorkloadRequest,
    options: CreateOptions = {},
  ): Promise<DesiredWorkload> {
    const name = checkLabel(request.name, 'workload name');
    // Block devices hold their reservations as "block-<name>" beside the workloads' "<name>".
    if (name.startsWith(BLOCK_HOLDER_PREFIX))
      throw invalid(
        `workload name ${JSON.stringify(name)}: names beginning with "${BLOCK_HOLDER_PREFIX}" are kept for block devices`,
      );
    const key = `${caller.ownerKey}//${name}`;
    if (this.records.has(key) || this.#creating.has(key) || this.unstarted.has(key))
      throw alreadyExists(`workload ${JSON.stringify(name)} already exists`);
    this.#creating.add(key);
    try {
      return await this.#create(caller, name, key, request, options);
    } finally {
      this.#creating.delete(key);
    }
  }

  async #create(
    caller: WorkloadCaller,
    name: string,
    key: string,
    request: CreateWorkloadRequest,
    options: CreateOptions,
  ): Promise<DesiredWorkload> {
    const { reference } = parseImageReference(request.image);
    let rootfs: string;
    try {
      rootfs = resolveImage(this.#options.images, reference);
    } catch (error) {
      if (error instanceof SigilError && error.code === 'not_found')
        throw new SigilError('not_found', `image ${reference} not found on node ${this.#options.nodeName}`);
      throw error;
    }
    // A built image without a command runs what its metadata says (built-images.ts).
    const built = request.command.length === 0 ? builtImageEntrypoint(rootfs) : undefined;
    const defaults = built
      ? builtImageCommand(built, {
          onBridge: request.networks.length > 0,
          runtime: this.#options.guestRuntime,
        })
      : undefined;
    const effective: CreateWorkloadRequest =
      built && defaults
        ? {
            ...request,
            command: defaults.command,
            env: { ...built.Env, ...request.env },
            workdir: request.workdir || (defaults.guestRuntime ? '' : built.Workdir),
          }
        : request;
    const created = createSpec(caller, name, reference, effective, {
      nodeName: this.#options.nodeName,
      bridges: this.#options.bridges,
    });
    const spec = defaults?.guestRuntime ? { ...created, guestRuntime: true } : created;
    this.#options.blocks.checkFree(caller.ownerKey, spec.blocks ?? []);
    const record: DesiredWorkload = {
      key,
      spec,
      ownerKey: caller.ownerKey,
      revocationIds: [...new Set(caller.revocationIds.map(normalizeSerial))],
      reservation: { subtree: caller.ownerKey, name },
      createdAt: new Date(),
    };
    const reservation = `${caller.ownerKey}//${name}`;
    this.reserving.add(reservation);
    try {
      await this.#reserve(caller, name, detailsOf(record));
      try {
        if (!options.transient) this.#options.desired.put(record);
      } catch (error) {
        await this.#release(record);
        throw error;
      }
    } finally {
      this.reserving.delete(reservation);
    }
    try {
      await this.#options.supervisor.create({
        ...supervisorSpecOf(record, this.#options.blocks, this.#options.guestRuntime),
        ...(options.readOnlyBinds ? { readOnlyBinds: options.readOnlyBinds } : {}),
      });
    } catch (error) {
      this.#forget(record);
      await this.#release(record);
      throw error;
    }
    this.records.set(key, record);
    this.#options.onCreated?.(record);
    this.#options.logger.info(
      { workload: key, image: reference, caller: caller.identity },
      'workload created',
    );
    return record;
  }

  /** Destroys a workload and releases its reservation (best effort, logged). */
  async destroy(key: string, reason: DestroyReason = 'destroyed'): Promise<void> {
    const record = this.records.get(key);
    await this.#options.supervisor.destroy(key, { reason });
    this.records.delete(key);
    if (!record) return;
    this.#forget(record);
    // Revocation released the reservations at the control plane already.
    if (reason === 'destroyed') await this.#release(record);
    this.#options.logger.info({ workload: key, reason }, 'workload destroyed');
  }

  /** Kills the current run and starts it again, with a new command when given. */
  async restart(key: string, command: readonly string[]): Promise<WorkloadInfo> {
    const record = this.records.get(key);
    if (!record) throw new SigilError('not_found', `workload ${key}: no such workload`);
    const info = await this.#options.supervisor.restart(key, command.length > 0 ? command : undefined);
    if (command.length > 0) this.records.set(key, this.#options.desired.updateCommand(key, command));
    return info;
  }

  /** Destroys every workload whose owner's chain holds one of `ids` (normalized, as the revocation set gives them). */
  async revoked(ids: readonly string[]): Promise<string[]> {
    const revoked = new Set(ids);
    const keys = [...this.records.values()]
      .filter((record) => record.revocationIds.some((id) => revoked.has(id)))
      .map((record) => record.key);
    for (const key of keys) {
      try {
        await this.destroy(key, 'destroyed-by-revocation');
      } catch (error) {
        this.#options.logger.error(
          { workload: key, err: firstLineOf(error) },
          'could not destroy a revoked workload',
        );
      }
    }
    return keys;
  }

  /** Starts a desired workload again after the daemon restarted; a failure forgets it and says why. */
  async restore(record: DesiredWorkload): Promise<boolean> {
    try {
      await this.#options.supervisor.create(
        supervisorSpecOf(record, this.#options.blocks, this.#options.guestRuntime),
      );
      this.records.set(record.key, record);
      return true;
    } catch (error) {
      // What can never start (its image is gone, its spec no longer passes) is forgotten and
      // released; anything else (the host in a bad state) stays desired for the next start.
      const hopeless =
        error instanceof SigilError && (error.code === 'not_found' || error.code === 'invalid_argument');
      this.#options.logger.error(
        { workload: record.key, err: firstLineOf(error) },
        hopeless
          ? 'a desired workload cannot start again; it is forgotten and its reservation released'
          : 'could not start a desired workload again; it stays desired for the next start',
      );
      if (hopeless) {
        this.#forget(record);
        await this.#release(record);
      } else {
        this.unstarted.add(record.key);
      }
      return false;
    }
  }

  /** ReleaseWorkload for a reservation; a failure is logged (the next reconciliation releases it). */
  async release(subtree: string, name: string): Promise<boolean> {
    try {
      await this.#options.link.release(subtree, name, RELEASE_TIMEOUT_MS);
      return true;
    } catch (error) {
      this.#options.logger.warn(
        { subtree, name, err: firstLineOf(error) },
        'could not release a reservation; the next reconciliation releases it',
      );
      return false;
    }
  }

  #release(record: DesiredWorkload): Promise<boolean> {
    return this.release(record.reservation.subtree, record.reservation.name);
  }

  #forget(record: DesiredWorkload): void {
    try {
      this.#options.desired.remove(record.key);
    } catch (error) {
      this.#options.logger.error(
        { workload: record.key, err: firstLineOf(error) },
        'could not forget a workload',
      );
    }
  }

  #reserve(caller: WorkloadCaller, name: string, details: WorkloadDetails): Promise<void> {
    const resources = { workloads: 1, cpus: details.cpus, memoryMib: details.memoryMiB, blockMib: 0 };
    return this.#options.link.reserve(
      caller,
      name,
      resources,
      this.#options.reserveTimeoutMs ?? DEFAULT_RESERVE_TIMEOUT_MS,
    );
  }
}
