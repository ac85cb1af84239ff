// `sigil build` on the node: a Dockerfile built the way firebuild builds one,
// on sigil's trust model. Each stage runs as a workload of the caller (so its
// reservation, quota, identity and revocation apply), started from its base
// image with the guest runtime bound in and `sigil vminit` as its command. The
// guest reads the stage's Bootstrap section from its metadata document and
// reaches the stage's bootstrap service — mutual TLS with credentials made
// for this stage, lasting minutes — at 169.254.169.254:<port> through a raw
// relay in the bridges' namespace. It runs RUN, deploys ADD/COPY from the
// uploaded context, and reports Success or Abort. The stopped workload's root
// — with `runtime: vm`, the VM's disk as the guest left it — is then the
// stage's result: the last stage's becomes the image (the tree,
// an ext4 file made with mke2fs -d, and firebuild's metadata.json), an
// earlier stage's a source for `COPY --from`.
//
// Any failure — a refused Dockerfile, a failed RUN, the owner revoked
// mid-build (the workload is destroyed), the caller gone — stores nothing:
// the stage images are removed, the workloads destroyed, the reservations
// released.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { firstLineOf, invalid, preconditionFailed, SigilError } from '../errors.ts';
import type { BuildImageHeader, BuiltImage } from '../gen/sigil/v1/workloads.ts';
import { bootstrapMetadata, createBootstrapCredentials } from '../guest/bootstrap-credentials.ts';
import { type BootstrapService, startBootstrapService } from '../guest/bootstrap-service.ts';
import { BuildContext } from '../guest/build-context.ts';
import { compileDockerfile, MAX_DOCKERFILE_BYTES } from '../guest/dockerfile-compiler.ts';
import type { CompiledStage } from '../guest/dockerfile-image.ts';
import { rootfsMetadata } from '../guest/dockerfile-metadata.ts';
import type { Logger } from '../logging.ts';
import { parseImageReference } from '../protocol/image-names.ts';
import { mountBlockDevice } from '../workloads/block-devices.ts';
import type { GuestRuntime } from '../workloads/guest-runtime.ts';
import {
  type ImageStore,
  importImage,
  listImages,
  removeImage,
  STANDARD_DEVICES,
} from '../workloads/images.ts';
import { buildExt4Image } from '../workloads/vm-image.ts';
import { VM_DEFAULT_MEMORY_MiB } from '../workloads/vm-run.ts';
import type { WorkloadCaller } from './workload-callers.ts';
import type { WorkloadMetadata } from './workload-metadata.ts';
import type { WorkloadOperations } from './workload-operations.ts';

/** The empty base `FROM scratch` starts from, made on first use. */
export const SCRATCH_IMAGE = 'sigil/scratch:1';
const FIRST_CALL_TIMEOUT_MS = 60_000;
const EXIT_WAIT_MS = 15_000;
const POLL_MS = 25;
/** What Node (sigil vminit) needs in a VM under emulation. */
export const MIN_VM_BUILD_MEMORY_MIB = 256;
/** What Node (sigil vminit) needs in a process build (below it, the guest agent is OOM-killed). */
export const MIN_PROCESS_BUILD_MEMORY_MIB = 128;

export type BuildRuntime = 'process' | 'vm';

export interface BuildDependencies {
  readonly operations: WorkloadOperations;
  readonly images: ImageStore;
  readonly metadata: WorkloadMetadata | undefined;
  readonly runtime: GuestRuntime;
  /** The node's bridges, the first being the default for builds. */
  readonly bridges: readonly string[];
  /** Where builds keep their uploads while they run. */
  readonly buildDir: string;
  readonly logger: Logger;
}

export interface BuildProgress {
  step(text: string): void;
  stdout(line: string): void;
  stderr(line: string): void;
}

/**
 * Everything a build needs checked before anything starts; throws the
 * refusal. With the caller, a VM build's memory is the header's or else the
 * caller's policy's, and refused below MIN_VM_BUILD_MEMORY_MIB.
 */
export function checkBuildHeader(
  header: BuildImageHeader | undefined,
  dependencies: Pick<BuildDependencies, 'images' | 'bridges' | 'metadata'>,
  caller?: WorkloadCaller,
): {
  tag: string;
  stages: readonly CompiledStage[];
  bridge: string;
  runtime: BuildRuntime;
  memoryMib: number;
} {
  if (!header) throw invalid('the first BuildImage message must be the header');
  const { reference: tag } = parseImageReference(header.tag);
  if (listImages(dependencies.images).some((image) => image.tag === tag))
    throw new SigilError('already_exists', `image ${tag} already exists on this node`);
  if (header.dockerfile.length > MAX_DOCKERFILE_BYTES)
    throw invalid(`the Dockerfile is larger than ${MAX_DOCKERFILE_BYTES} bytes`);
  if (header.runtime !== '' && header.runtime !== 'process' && header.runtime !== 'vm')
    throw invalid(`runtime ${JSON.stringify(header.runtime)}: expected process or vm`);
  const runtime: BuildRuntime = header.runtime === 'vm' ? 'vm' : 'process';
  const memoryMib = buildMemory(header, caller, runtime);
  const compiled = compileDockerfile(Buffer.from(header.dockerfile).toString('utf8'), {
    buildArgs: header.buildArgs,
  });
  const bridge = header.networks[0] || dependencies.bridges[0];
  if (!bridge || dependencies.metadata === undefined)
    throw preconditionFailed(
      'builds need a workload bridge (the guest reaches its bootstrap service over it): start the daemon with --bridge',
    );
  if (!dependencies.bridges.includes(bridge))
    throw new SigilError('not_found', `bridge ${JSON.stringify(bridge)}: not configured on this node`);
  return { tag, stages: compiled.stages, bridge, runtime, memoryMib };
}

/**
 * A build's memory: the header's, else the caller's policy's (else, for a VM,
 * the VM default), refused below what the guest agent needs. A process build
 * passes on 0 for "the policy's", as a create does.
 */
function buildMemory(
  header: BuildImageHeader,
  caller: WorkloadCaller | undefined,
  runtime: BuildRuntime,
): number {
  const asked = Number(header.memoryMib);
  const granted = caller?.policy?.limits?.memoryMiB ?? 0;
  const fallback = runtime === 'vm' ? VM_DEFAULT_MEMORY_MiB : 0;
  const memory = asked > 0 ? asked : caller === undefined ? 0 : granted > 0 ? granted : fallback;
  const minimum = runtime === 'vm' ? MIN_VM_BUILD_MEMORY_MIB : MIN_PROCESS_BUILD_MEMORY_MIB;
  if (memory > 0 && memory < minimum)
    throw invalid(
      `memory ${memory} MiB${asked > 0 ? '' : " (your policy's)"}: a ${runtime === 'vm' ? 'VM ' : ''}build needs at least ${minimum} MiB (sigil vminit is Node)`,
    );
  return runtime === 'vm' ? memory : asked;
}

/** The empty image `FROM scratch` starts from: /proc, /tmp and the store's standard /dev. */
async function scratchImage(images: ImageStore, buildDir: string): Promise<string> {
  if (listImages(images).some((image) => image.tag === SCRATCH_IMAGE)) return SCRATCH_IMAGE;
  const empty = join(buildDir, `scratch-${randomBytes(4).toString('hex')}`);
  for (const sub of ['proc', 'tmp', 'dev']) mkdirSync(join(empty, sub), { recursive: true, mode: 0o755 });
  chmodSync(join(empty, 'tmp'), 0o1777);
  try {
    await importImage(images, empty, SCRATCH_IMAGE);
  } catch (error) {
    if (!(error instanceof SigilError && error.code === 'already_exists')) throw error;
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
  return SCRATCH_IMAGE;
}

/** Runs a checked build; resolves with the image, or throws why nothing was stored. */
export async function runBuild(
  dependencies: BuildDependencies,
  caller: WorkloadCaller,
  header: BuildImageHeader,
  contextDir: string,
  progress: BuildProgress,
  cancelled: () => boolean,
): Promise<BuiltImage> {
  const started = Date.now();
  const { tag, stages, bridge, runtime, memoryMib } = checkBuildHeader(header, dependencies, caller);
  const { images } = dependencies;
  const context = await BuildContext.open(contextDir);
  const id = randomBytes(4).toString('hex');
  const stageImages: string[] = [];
  try {
    let finalRoot: string | null = null;
    for (const stage of stages) {
      const last = stage.index === stages.length - 1;
      const base =
        stage.from.kind === 'scratch'
          ? await scratchImage(images, dependencies.buildDir)
          : stage.from.kind === 'stage'
            ? stageImageTag(id, stage.from.index)
            : parseImageReference(stage.from.reference).reference;
      progress.step(
        `stage ${stage.index + 1}/${stages.length}: FROM ${base}, ${stage.commands.length} commands`,
      );
      const stageTag = last ? tag : stageImageTag(id, stage.index);
      const record = await runStage(dependencies, caller, {
        stage,
        base,
        bridge,
        context,
        progress,
        cancelled,
        importAs: stageTag,
        workloadName: `build-${id}-${stage.index}`,
        memoryMib,
        runtime,
      });
      if (!last) {
        stageImages.push(stageTag);
        await context.addStage(stage.name, record.rootfs);
      } else finalRoot = record.rootfs;
    }
    if (finalRoot === null) throw invalid('the Dockerfile has no stage');
    progress.step('writing the ext4 image and metadata');
    const ext4 = join(dirname(finalRoot), 'rootfs.ext4');
    const sizeBytes = await buildExt4Image({ rootDir: finalRoot, imageFile: ext4 });
    const last = stages[stages.length - 1];
    writeFileSync(
      join(dirname(finalRoot), 'metadata.json'),
      `${JSON.stringify(
        rootfsMetadata(last.metadata, {
          tag,
          dockerfile: 'Dockerfile',
          buildArgs: header.buildArgs,
          createdAtUtc: Math.floor(Date.now() / 1000),
        }),
        null,
        2,
      )}\n`,
    );
    return { tag, sizeBytes, rootfsExt4: ext4, durationMs: Date.now() - started };
  } catch (error) {
    if (listImages(images).some((image) => image.tag === tag)) await removeImage(images, tag).catch(() => {});
    throw error;
  } finally {
    for (const stageTag of stageImages) await removeImage(images, stageTag).catch(() => {});
  }
}

const stageImageTag = (id: string, index: number) => `sigil-build/b${id}-stage${index}:1`;

interface StageRun {
  readonly stage: CompiledStage;
  readonly base: string;
  readonly bridge: string;
  readonly context: BuildContext;
  readonly progress: BuildProgress;
  readonly cancelled: () => boolean;
  readonly importAs: string;
  readonly workloadName: string;
  readonly memoryMib: number;
  readonly runtime: BuildRuntime;
}

/** One stage as a workload; its root imported as `importAs` once the guest reports Success. */
async function runStage(dependencies: BuildDependencies, caller: WorkloadCaller, run: StageRun) {
  const { operations, metadata, runtime, images, logger } = dependencies;
  if (!metadata) throw preconditionFailed('builds need a workload bridge');
  const supervisor = operations.supervisor;
  const key = `${caller.ownerKey}//${run.workloadName}`;
  const credentials = createBootstrapCredentials({ serverName: run.workloadName });
  const commands = run.stage.commands;
  const service: BootstrapService = await startBootstrapService({
    commands,
    resources: run.context.resolverFor(commands),
    credentials,
    firstCallTimeoutMs: FIRST_CALL_TIMEOUT_MS,
  });
  const cleanup: (() => Promise<void> | void)[] = [() => service.stop()];
  try {
    service.events.on('stdout', ({ lines }) => {
      for (const line of lines) run.progress.stdout(line);
    });
    service.events.on('stderr', ({ lines }) => {
      for (const line of lines) run.progress.stderr(line);
    });
    // Someone without this build's client certificate tried: the caller sees it.
    service.events.on('handshake-refused', ({ reason }) =>
      run.progress.step(`the bootstrap service refused a connection (${reason})`),
    );
    cleanup.push(metadata.routeBootstrap(key, bootstrapMetadata(credentials, ''), service.port));
    await operations.create(
      caller,
      {
        name: run.workloadName,
        image: run.base,
        command: runtime.command(['vminit']),
        env: {},
        workdir: '',
        user: '',
        memoryMib: run.memoryMib,
        cpus: [],
        networks: [run.bridge],
        blocks: [],
        restart: '',
        pidsMax: 0,
        runtime: run.runtime === 'vm' ? 'vm' : '',
      },
      { transient: true, readOnlyBinds: runtime.binds },
    );
    cleanup.push(async () => {
      if (operations.records.has(key)) await operations.destroy(key).catch(() => {});
    });
    // vminit's own lines ("command 2/5: RUN make") are the build's steps.
    const stopFollowing = supervisor.console(key).subscribe((line) => {
      const text = line.bytes.toString('utf8').replace(/^vminit: /, '');
      if (text.trim() !== '') run.progress.step(text);
    });
    cleanup.push(stopFollowing);
    const outcome = await Promise.race([service.done, workloadEnded(operations, key, run.cancelled)]);
    if (!outcome.ok) throw outcome.error;
    // A process guest has nothing left to do after Success (its files are closed): stop it now rather
    // than wait for it to exit. A VM must power off by itself, so that its disk is clean.
    if (run.runtime === 'vm') await waitForExit(operations, key);
    else await supervisor.stop(key);
    const record =
      run.runtime === 'vm'
        ? await importVmDisk(dependencies, key, run.importAs)
        : await importRoot(images, supervisor.rootOf(key), run.importAs);
    logger.info({ workload: key, image: run.importAs }, 'build stage stored');
    return record;
  } finally {
    for (const step of cleanup.reverse()) {
      try {
        await step();
      } catch (error) {
        logger.warn({ err: firstLineOf(error) }, 'build cleanup step failed');
      }
    }
  }
}

/** The stage's tree as the image `tag`, without what is the runtime's rather than the image's. */
async function importRoot(images: ImageStore, root: string, tag: string) {
  // The guest runtime's mount points are the runtime's, and /dev's nodes the store's.
  rmSync(join(root, '.sigil'), { recursive: true, force: true });
  for (const [name] of STANDARD_DEVICES) rmSync(join(root, 'dev', name), { force: true });
  return importImage(images, root, tag, {}, { snapshot: true });
}

/** A VM stage's result: its disk (the guest unmounted it cleanly), mounted here only for the copy. */
async function importVmDisk(dependencies: BuildDependencies, key: string, tag: string) {
  const disk = dependencies.operations.supervisor.vmDiskOf(key);
  if (disk === null)
    throw new SigilError('internal', `the build's VM ${key} left no disk to store the stage from`);
  const mountPoint = join(dependencies.buildDir, `vm-disk-${randomBytes(4).toString('hex')}`);
  mkdirSync(mountPoint, { mode: 0o700 });
  try {
    const mounted = await mountBlockDevice(disk, mountPoint);
    try {
      // mke2fs's lost+found is the disk's, not the image's.
      rmSync(join(mountPoint, 'lost+found'), { recursive: true, force: true });
      return await importRoot(dependencies.images, mountPoint, tag);
    } finally {
      await mounted.unmount();
    }
  } finally {
    // Not recursive: were the disk still mounted, its files would go with it.
    rmdirSync(mountPoint);
  }
}

type Outcome = { readonly ok: true } | { readonly ok: false; readonly error: SigilError };

/** Settles with a failure when the build workload goes away, ends without reporting, or the caller leaves. */
async function workloadEnded(
  operations: WorkloadOperations,
  key: string,
  cancelled: () => boolean,
): Promise<Outcome> {
  let endedAt: number | null = null;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (cancelled())
      return { ok: false, error: new SigilError('failed_precondition', 'the build was cancelled') };
    if (!operations.records.has(key))
      return {
        ok: false,
        error: new SigilError(
          'failed_precondition',
          "the build's workload was destroyed (was its owner revoked?); nothing was stored",
        ),
      };
    const state = operations.supervisor.info(key).state;
    if (state === 'running') continue;
    endedAt ??= Date.now();
    // Success or Abort may still be on its way when the guest exits.
    if (Date.now() - endedAt > 2000)
      return {
        ok: false,
        error: new SigilError(
          'failed_precondition',
          "the build's guest agent ended without reporting Success or Abort",
        ),
      };
  }
}

async function waitForExit(operations: WorkloadOperations, key: string): Promise<void> {
  const deadline = Date.now() + EXIT_WAIT_MS;
  while (Date.now() < deadline) {
    if (!operations.records.has(key))
      throw new SigilError(
        'failed_precondition',
        "the build's workload was destroyed before its root was stored",
      );
    if (operations.supervisor.info(key).state !== 'running') return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new SigilError('failed_precondition', "the build's guest agent did not exit after Success");
}
