// The Workloads service's messages from the runtime's records, and the
// request fields the runtime takes in its own shapes (restart policies,
// block mounts). Names are always shown relative to the caller.
import { invalid } from '../errors.ts';
import type {
  Image,
  Workload,
  WorkloadEvent as WorkloadEventMessage,
  WorkloadStats as WorkloadStatsMessage,
} from '../gen/sigil/v1/workloads.ts';
import type { WorkloadEvent } from '../workloads/event-log.ts';
import type { ImageRecord } from '../workloads/images.ts';
import type { RestartPolicy } from '../workloads/restart-policy.ts';
import type { WorkloadInfo, WorkloadStats } from '../workloads/supervisor.ts';
import { relativeName, splitKey, type WorkloadCaller } from './workload-callers.ts';

/** What the daemon knows of a workload beyond the supervisor's view (what it was asked for). */
export interface WorkloadDetails {
  readonly memoryMiB: number;
  readonly cpus: readonly number[];
  readonly command: readonly string[];
  readonly networks: readonly string[];
  readonly blocks: readonly string[];
}

const RESTART_TEXT = /^on-failure(?::(\d{1,3}(?:,\d{1,3})*))?$/;

/** "no" | "always" | "on-failure[:codes]" ("" = no) as the supervisor takes it. */
export function parseRestart(text: string): RestartPolicy {
  if (text === '' || text === 'no') return 'no';
  if (text === 'always') return 'always';
  const match = RESTART_TEXT.exec(text);
  if (!match)
    throw invalid(
      `restart ${JSON.stringify(text.slice(0, 40))}: use no, always, on-failure or on-failure:CODE[,CODE…]`,
    );
  if (match[1] === undefined) return { onFailure: {} };
  return { onFailure: { codes: match[1].split(',').map(Number) } };
}

export function restartText(policy: RestartPolicy): string {
  if (typeof policy === 'string') return policy;
  const codes = policy.onFailure.codes;
  return codes === undefined ? 'on-failure' : `on-failure:${codes.join(',')}`;
}

export function workloadMessage(
  caller: WorkloadCaller,
  info: WorkloadInfo,
  details: WorkloadDetails,
): Workload {
  return {
    name: relativeName(caller, info.key),
    owner: splitKey(info.key).ownerKey,
    image: info.image,
    state: info.state,
    restart: restartText(info.restartPolicy),
    restarts: info.restarts,
    pid: info.pid ?? 0,
    createdAtUnixMs: info.createdAt.getTime(),
    startedAtUnixMs: info.startedAt?.getTime() ?? 0,
    lastExit:
      info.lastExit === undefined
        ? undefined
        : {
            code: info.lastExit.code ?? -1,
            signal: info.lastExit.signal ?? '',
            atUnixMs: info.lastExit.at.getTime(),
          },
    error: info.error ?? '',
    memoryMib: details.memoryMiB,
    cpus: [...details.cpus],
    addresses: info.addresses.map((address) => ({ ...address })),
    command: [...details.command],
    blocks: [...details.blocks],
    runtime: info.runtime === 'vm' ? 'vm' : 'process',
  };
}

export function eventMessage(caller: WorkloadCaller, event: WorkloadEvent): WorkloadEventMessage {
  return {
    id: event.id,
    workload: relativeName(caller, event.workload),
    kind: event.kind,
    atUnixMs: event.at.getTime(),
    exitCode: event.exitCode ?? -1,
    signal: event.signal ?? '',
    detail: event.detail ?? '',
  };
}

export function statsMessage(
  caller: WorkloadCaller,
  key: string,
  stats: WorkloadStats,
  blockBytes: number,
): WorkloadStatsMessage {
  return {
    name: relativeName(caller, key),
    state: stats.state,
    restarts: stats.restarts,
    cpuUsec: Math.floor(stats.cpuNanos / 1000),
    memoryBytes: stats.memoryBytes,
    memoryPeakBytes: stats.memoryPeakBytes,
    pids: stats.pids,
    oomKills: stats.oomKills,
    interfaces: stats.interfaces.map((view) => ({ ...view })),
    blockBytes,
    atUnixMs: Date.now(),
  };
}

export function imageMessage(record: ImageRecord): Image {
  return { tag: record.tag, importedAtUnixMs: Date.parse(record.importedAt), bytes: record.bytes };
}
