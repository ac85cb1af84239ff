// The Workloads gRPC service of the node daemon (proto/sigil/v1/workloads.proto).
// Every call: who is calling (workload-callers.ts), the permission bit the
// RPC needs, then only what lies in the caller's subtree; anything outside it
// is the same NOT_FOUND as a name that does not exist.
import { preconditionFailed } from '../errors.ts';
import type {
  AttachConsoleRequest,
  BuildImageProgress,
  BuildImageRequest,
  ConsoleChunk,
  GetStatsRequest,
  ReadConsoleRequest,
  WatchEventsRequest,
  WorkloadEvent as WorkloadEventMessage,
  WorkloadStats as WorkloadStatsMessage,
  WorkloadsServer,
} from '../gen/sigil/v1/workloads.ts';
import type { Logger } from '../logging.ts';
import type { ConsoleLine } from '../workloads/console-ring.ts';
import type { DesiredWorkload } from '../workloads/desired-state.ts';
import type { EventLog } from '../workloads/event-log.ts';
import { type ImageStore, listImages } from '../workloads/images.ts';
import { type AttachedTerminal, attachConsole } from './console-attach.ts';
import type { WorkloadBlocks } from './workload-blocks.ts';
import type { BuildDependencies } from './workload-build.ts';
import { handleBuild } from './workload-build-service.ts';
import {
  keyOf,
  noSuchWorkload,
  requirePermission,
  visibleTo,
  type WorkloadCaller,
  type WorkloadPermission,
  workloadCallerOf,
} from './workload-callers.ts';
import { callEnded, Handlers, written } from './workload-grpc.ts';
import { eventMessage, imageMessage, statsMessage, workloadMessage } from './workload-messages.ts';
import { detailsOf, type WorkloadOperations } from './workload-operations.ts';

export interface WorkloadServiceOptions {
  readonly operations: WorkloadOperations;
  readonly images: ImageStore;
  readonly events: EventLog;
  readonly blocks: WorkloadBlocks;
  readonly trustDomain: string;
  readonly logger: Logger;
  /** What builds need; BuildImage is refused without it. */
  readonly builds?: BuildDependencies;
}

const MIN_WATCH_INTERVAL_MS = 200;
const METHOD = '/sigil.v1.Workloads/';

export function workloadService(options: WorkloadServiceOptions): WorkloadsServer {
  const { operations, events, blocks, trustDomain } = options;
  const handlers = new Handlers(options.logger);
  const supervisor = operations.supervisor;

  const callerFor = (
    call: Parameters<typeof workloadCallerOf>[0],
    permission: WorkloadPermission,
  ): WorkloadCaller => {
    const caller = workloadCallerOf(call, trustDomain);
    requirePermission(caller, permission);
    return caller;
  };

  /** The caller's workload by name: NOT_FOUND when missing or outside its subtree. */
  const recordOf = (caller: WorkloadCaller, name: string): DesiredWorkload => {
    const key = keyOf(caller, name);
    const record = operations.records.get(key);
    if (!record || !visibleTo(caller, key)) throw noSuchWorkload(name);
    return record;
  };

  const messageOf = (caller: WorkloadCaller, record: DesiredWorkload) =>
    workloadMessage(caller, supervisor.info(record.key), detailsOf(record));

  const terminalOf = (key: string): AttachedTerminal => ({
    follow: (onData, onEnd) => supervisor.subscribeRaw(key, (chunk) => void onData(chunk, new Date()), onEnd),
    input: (data) => supervisor.writeInput(key, data),
  });

  return {
    buildImage: handlers.bidiStream<BuildImageRequest, BuildImageProgress>(
      `${METHOD}BuildImage`,
      async (call) => {
        const caller = callerFor(call, 'create');
        if (!options.builds) throw preconditionFailed('this node daemon does not build images');
        await handleBuild(call, caller, options.builds);
      },
    ),

    createWorkload: handlers.unary(`${METHOD}CreateWorkload`, async (request, call) => {
      const caller = callerFor(call, 'create');
      return messageOf(caller, await operations.create(caller, request));
    }),

    listWorkloads: handlers.unary(`${METHOD}ListWorkloads`, async (_request, call) => {
      const caller = callerFor(call, 'info');
      const workloads = [...operations.records.values()]
        .filter((record) => visibleTo(caller, record.key))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
        .map((record) => messageOf(caller, record));
      return { workloads };
    }),

    getWorkload: handlers.unary(`${METHOD}GetWorkload`, async (request, call) => {
      const caller = callerFor(call, 'info');
      return messageOf(caller, recordOf(caller, request.name));
    }),

    destroyWorkload: handlers.unary(`${METHOD}DestroyWorkload`, async (request, call) => {
      const caller = callerFor(call, 'destroy');
      await operations.destroy(recordOf(caller, request.name).key);
      return {};
    }),

    restartWorkload: handlers.unary(`${METHOD}RestartWorkload`, async (request, call) => {
      const caller = callerFor(call, 'create');
      const record = recordOf(caller, request.name);
      await operations.restart(record.key, request.command);
      return messageOf(caller, operations.records.get(record.key) ?? record);
    }),

    readConsole: handlers.serverStream<ReadConsoleRequest, ConsoleChunk>(
      `${METHOD}ReadConsole`,
      async (call) => {
        const caller = callerFor(call, 'console');
        const { name, sinceUnixMs, lines, follow } = call.request;
        const ring = supervisor.console(recordOf(caller, name).key);
        const chunk = (line: ConsoleLine, dropped: number): ConsoleChunk => ({
          data: line.bytes,
          atUnixMs: line.at.getTime(),
          sequence: line.seq,
          dropped,
        });
        const history = ring.history({
          ...(sinceUnixMs > 0 ? { since: new Date(sinceUnixMs) } : {}),
          ...(lines > 0 ? { lines } : {}),
        });
        let stop: (() => void) | undefined;
        const ended = new Promise<void>((resolve) => {
          if (follow)
            stop = ring.subscribe((line) => written(call, call.write(chunk(line, line.droppedBefore))), {
              onEnd: resolve,
            });
          callEnded(call).then(resolve);
        });
        for (const line of history) await written(call, call.write(chunk(line, 0)));
        if (follow) await ended;
        stop?.();
        if (!call.cancelled) call.end();
      },
    ),

    attachConsole: handlers.bidiStream<AttachConsoleRequest, ConsoleChunk>(
      `${METHOD}AttachConsole`,
      async (call) => {
        const caller = callerFor(call, 'console');
        await attachConsole(call, (name) => terminalOf(recordOf(caller, name).key));
      },
    ),

    watchEvents: handlers.serverStream<WatchEventsRequest, WorkloadEventMessage>(
      `${METHOD}WatchEvents`,
      async (call) => {
        const caller = callerFor(call, 'log');
        const { name, limit, sinceUnixMs, follow } = call.request;
        const filter =
          name !== ''
            ? { workload: visibleKey(caller, name) }
            : caller.ownerKey === ''
              ? {}
              : { under: caller.ownerKey };
        const backlog = events.list({
          ...filter,
          ...(limit > 0 ? { limit } : {}),
          ...(sinceUnixMs > 0 ? { since: new Date(sinceUnixMs) } : {}),
        });
        // Followed in the same tick as the backlog was read: nothing falls between.
        const queue: WorkloadEventMessage[] = [];
        let wake: (() => void) | undefined;
        const stop = follow
          ? events.follow(filter, (event) => {
              if (!visibleTo(caller, event.workload)) return;
              queue.push(eventMessage(caller, event));
              wake?.();
            })
          : undefined;
        try {
          for (const event of backlog) await written(call, call.write(eventMessage(caller, event)));
          if (follow) {
            let open = true;
            callEnded(call).then(() => {
              open = false;
              wake?.();
            });
            while (open) {
              const next = queue.shift();
              if (next) await written(call, call.write(next));
              else await new Promise<void>((resolve) => (wake = resolve));
            }
          }
        } finally {
          stop?.();
        }
        if (!call.cancelled) call.end();
      },
    ),

    getStats: handlers.serverStream<GetStatsRequest, WorkloadStatsMessage>(
      `${METHOD}GetStats`,
      async (call) => {
        const caller = callerFor(call, 'stats');
        const { name, watchIntervalMs } = call.request;
        const record = recordOf(caller, name);
        const key = record.key;
        const blockList = record.spec.blocks ?? [];
        const once = () =>
          statsMessage(caller, key, supervisor.stats(key), blocks.usedBytes(record.ownerKey, blockList));
        await written(call, call.write(once()));
        if (watchIntervalMs > 0) {
          const every = Math.max(MIN_WATCH_INTERVAL_MS, watchIntervalMs);
          let open = true;
          const ended = callEnded(call).then(() => {
            open = false;
          });
          while (open) {
            await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, every))]);
            if (!open) break;
            if (!operations.records.has(key)) break; // destroyed meanwhile: the watch ends
            await written(call, call.write(once()));
          }
        }
        if (!call.cancelled) call.end();
      },
    ),

    listImages: handlers.unary(`${METHOD}ListImages`, async (_request, call) => {
      callerFor(call, 'info');
      return { images: listImages(options.images).map(imageMessage) };
    }),

    createBlock: handlers.unary(`${METHOD}CreateBlock`, async (request, call) =>
      blocks.create(callerFor(call, 'block'), request.name, request.sizeMib),
    ),
    listBlocks: handlers.unary(`${METHOD}ListBlocks`, async (_request, call) => ({
      blocks: blocks.list(callerFor(call, 'block')),
    })),
    destroyBlock: handlers.unary(`${METHOD}DestroyBlock`, async (request, call) => {
      await blocks.destroy(callerFor(call, 'block'), request.name);
      return {};
    }),
    uploadBlock: handlers.clientStream(`${METHOD}UploadBlock`, async (call) =>
      blocks.upload(callerFor(call, 'block'), call),
    ),
    downloadBlock: handlers.serverStream(`${METHOD}DownloadBlock`, async (call) =>
      blocks.download(callerFor(call, 'block'), call),
    ),
  };
}

/** A name's key for an event query: NOT_FOUND outside the caller's subtree (it may be destroyed already). */
function visibleKey(caller: WorkloadCaller, name: string): string {
  const key = keyOf(caller, name);
  if (!visibleTo(caller, key)) throw noSuchWorkload(name);
  return key;
}
