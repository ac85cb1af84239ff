// Block devices through the node daemon ("block" permission): each lives in
// its owner's store (workloads/block-devices.ts), and its size is reserved at
// the control plane against every level of the owner's chain before it is
// made (holder name "block-<name>"), released when it is destroyed. A
// workload mounts its owner's devices by name ("data:/data"); the supervisor
// is given the device's key as its "file", which mountBlock resolves in the
// store (so the store knows a device is attached while it is mounted).
import { Readable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';
import { firstLineOf, invalid, notFound, SigilError } from '../errors.ts';
import type { BlockData, BlockDevice, UploadBlockRequest } from '../gen/sigil/v1/workloads.ts';
import type { Logger } from '../logging.ts';
import type { BlockInfo, BlockStore } from '../workloads/block-devices.ts';
import type { DesiredBlock, DesiredWorkload } from '../workloads/desired-state.ts';
import type { MountBlock, WorkloadBlock } from '../workloads/supervisor.ts';
import type { ControlPlaneLink } from './control-plane-link.ts';
import { checkLabel, relativeName, splitKey, type WorkloadCaller } from './workload-callers.ts';
import { written } from './workload-grpc.ts';

export interface WorkloadBlocksOptions {
  readonly store: BlockStore;
  readonly link: ControlPlaneLink;
  readonly logger: Logger;
  readonly reserveTimeoutMs: number;
  /** The desired workloads, to say which one a device is attached to. */
  readonly records: () => Iterable<DesiredWorkload>;
}

/** The prefix of a block device's reservation name; workload names may not begin with it. */
export const BLOCK_HOLDER_PREFIX = 'block-';
const holderOf = (name: string) => `${BLOCK_HOLDER_PREFIX}${name}`;

/** "data:/data" → { name, mountPoint }. */
export function parseBlockMount(text: string): DesiredBlock {
  const colon = text.indexOf(':');
  if (colon === -1) throw invalid(`block ${JSON.stringify(text.slice(0, 60))}: use NAME:/mount/point`);
  return { name: checkLabel(text.slice(0, colon), 'block name'), mountPoint: text.slice(colon + 1) };
}

export class WorkloadBlocks {
  readonly #options: WorkloadBlocksOptions;

  constructor(options: WorkloadBlocksOptions) {
    this.#options = options;
  }

  /** How the supervisor mounts a device: its "file" is the device's key. */
  readonly mountBlock: MountBlock = (key, target) => {
    const { ownerKey, name } = splitKey(key);
    return this.#options.store.attach(ownerKey, name, target);
  };

  /** The supervisor's blocks for a workload's owner; NOT_FOUND for a device the owner does not have. */
  supervisorBlocks(ownerKey: string, blocks: readonly DesiredBlock[]): WorkloadBlock[] {
    return blocks.map((block) => {
      this.#options.store.get(ownerKey, block.name);
      return { file: `${ownerKey}//${block.name}`, mountPoint: block.mountPoint };
    });
  }

  /** Bytes the workload's devices take on disk (0 for one that went away). */
  usedBytes(ownerKey: string, blocks: readonly DesiredBlock[]): number {
    let total = 0;
    for (const block of blocks) {
      try {
        total += this.#options.store.get(ownerKey, block.name).usedBytes;
      } catch {
        // Gone meanwhile: nothing to count.
      }
    }
    return total;
  }

  /** Refuses a device the owner does not have (NOT_FOUND) or one another workload has mounted. */
  checkFree(ownerKey: string, blocks: readonly DesiredBlock[]): void {
    for (const block of blocks) {
      let info: BlockInfo;
      try {
        info = this.#options.store.get(ownerKey, block.name);
      } catch (error) {
        if (error instanceof SigilError && error.code === 'not_found')
          throw notFound(`block device ${JSON.stringify(block.name)}: no such block device`);
        throw error;
      }
      if (info.attached)
        throw new SigilError(
          'failed_precondition',
          `block device ${JSON.stringify(block.name)} is attached to a workload`,
        );
    }
  }

  async create(caller: WorkloadCaller, name: string, sizeMiB: number): Promise<BlockDevice> {
    checkLabel(name, 'block name');
    const limits = caller.policy?.limits;
    if (caller.policy !== null && (!limits || sizeMiB > limits.blockMiB))
      throw new SigilError(
        'resource_exhausted',
        `block size ${sizeMiB} MiB is over your policy's ${limits?.blockMiB ?? 0} MiB of block storage`,
      );
    await this.#reserve(caller, name, sizeMiB);
    try {
      return this.#message(caller, await this.#options.store.create(caller.ownerKey, name, sizeMiB));
    } catch (error) {
      await this.#release(caller.ownerKey, name);
      throw error;
    }
  }

  list(caller: WorkloadCaller): BlockDevice[] {
    const devices = this.#options.store.list(caller.ownerKey === '' ? undefined : caller.ownerKey);
    return devices.map((info) => this.#message(caller, info));
  }

  async destroy(caller: WorkloadCaller, name: string): Promise<void> {
    const { ownerKey, name: device } = this.#resolve(caller, name);
    this.#options.store.destroy(ownerKey, device);
    await this.#release(ownerKey, device);
  }

  async upload(caller: WorkloadCaller, call: grpc.ServerReadableStream<UploadBlockRequest, BlockDevice>) {
    const first = await new Promise<UploadBlockRequest | null>((resolve) => {
      call.once('data', (message: UploadBlockRequest) => {
        call.pause();
        resolve(message);
      });
      call.once('end', () => resolve(null));
    });
    if (first === null || first.name === '')
      throw invalid('the first message of UploadBlock must name the device');
    const { ownerKey, name } = this.#resolve(caller, first.name);
    async function* bytes() {
      if (first && first.data.length > 0) yield Buffer.from(first.data);
      for await (const message of call as AsyncIterable<UploadBlockRequest>) yield Buffer.from(message.data);
    }
    call.resume();
    return this.#message(
      caller,
      await this.#options.store.upload(ownerKey, name, Readable.from(bytes(), { objectMode: false })),
    );
  }

  async download(caller: WorkloadCaller, call: grpc.ServerWritableStream<{ name: string }, BlockData>) {
    const { ownerKey, name } = this.#resolve(caller, call.request.name);
    for await (const chunk of this.#options.store.download(ownerKey, name)) {
      if (call.cancelled) return;
      await written(call, call.write({ data: chunk as Buffer }));
    }
    call.end();
  }

  /** A name as the caller gives it ("data", or "carol//data" beneath it); NOT_FOUND when it has no such device. */
  #resolve(caller: WorkloadCaller, name: string): { ownerKey: string; name: string } {
    const split = name.lastIndexOf('//');
    const ownerKey =
      split === -1
        ? caller.ownerKey
        : `${caller.ownerKey}/${name
            .slice(0, split)
            .split('/')
            .map((part) => checkLabel(part, 'owner name'))
            .join('/')}`;
    const device = checkLabel(split === -1 ? name : name.slice(split + 2), 'block name');
    try {
      this.#options.store.get(ownerKey, device);
    } catch (error) {
      if (error instanceof SigilError && error.code === 'not_found')
        throw notFound(`block device ${JSON.stringify(name)}: no such block device`);
      throw error;
    }
    return { ownerKey, name: device };
  }

  #message(caller: WorkloadCaller, info: BlockInfo): BlockDevice {
    const user = [...this.#options.records()].find(
      (record) => record.ownerKey === info.ownerKey && record.spec.blocks?.some((b) => b.name === info.name),
    );
    return {
      name: relativeName(caller, info.key),
      owner: info.ownerKey,
      sizeMib: info.sizeMiB,
      usedBytes: info.usedBytes,
      attachedTo: user ? relativeName(caller, user.key) : '',
      createdAtUnixMs: 0,
    };
  }

  #reserve(caller: WorkloadCaller, name: string, sizeMiB: number): Promise<void> {
    const resources = { workloads: 0, cpus: [], memoryMib: 0, blockMib: sizeMiB };
    return this.#options.link.reserve(caller, holderOf(name), resources, this.#options.reserveTimeoutMs);
  }

  async #release(ownerKey: string, name: string): Promise<void> {
    try {
      await this.#options.link.release(ownerKey, holderOf(name), 10_000);
    } catch (error) {
      this.#options.logger.warn(
        { subtree: ownerKey, name: holderOf(name), err: firstLineOf(error) },
        'could not release a block reservation',
      );
    }
  }
}
