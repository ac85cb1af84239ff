// `sigil workload create|list|info|destroy|restart|events|stats` at run time
// (workload.ts registers them; the console is in workload-console.ts). Every
// flag value is checked before anything connects (bad usage: exit 2); the
// node's refusals come back as one line with its message (exit 1).
import { unary } from '../client/rpc.ts';
import type { WorkloadEvent, WorkloadStats } from '../gen/sigil/v1/workloads.ts';
import { printResult } from './output.ts';
import { type NodeFlags, received, streamOptions, withWorkloads } from './workload-connection.ts';
import {
  parseBlockMount,
  parseCount,
  parseCpus,
  parseEnv,
  parseInterval,
  parseMemoryMiB,
  parseNetwork,
  parseResourceName,
  parseRestart,
  parseRuntime,
  parseSince,
  parseTag,
  parseUser,
  parseWorkdir,
  usageChecked,
} from './workload-flags.ts';
import {
  eventLine,
  jsonLine,
  STATS_HEADER,
  statsLines,
  statsRow,
  workloadLines,
  workloadTable,
} from './workload-output.ts';

export interface JsonNodeFlags extends NodeFlags {
  json?: boolean;
}

export interface CreateFlags extends JsonNodeFlags {
  image?: string;
  memory?: string;
  cpus?: string;
  net?: string[];
  block?: string[];
  restart?: string;
  env?: string[];
  workdir?: string;
  user?: string;
  runtime?: string;
}

export interface EventsFlags extends JsonNodeFlags {
  follow?: boolean;
  limit?: string;
  since?: string;
}

export interface StatsFlags extends JsonNodeFlags {
  /** true: --watch without a value (the default interval). */
  watch?: string | boolean;
}

/** `stats --watch` without an interval samples this often. */
export const DEFAULT_WATCH_INTERVAL = '2s';

const workloadName = (text: string): string => usageChecked(() => parseResourceName(text, 'workload'));

export async function runCreate(nameText: string, command: string[], flags: CreateFlags): Promise<void> {
  const request = usageChecked(() => ({
    name: parseResourceName(nameText, 'workload'),
    image: parseTag(flags.image ?? ''),
    command,
    env: parseEnv(flags.env ?? []),
    workdir: flags.workdir === undefined ? '' : parseWorkdir(flags.workdir),
    user: flags.user === undefined ? '' : parseUser(flags.user),
    memoryMib: flags.memory === undefined ? 0 : parseMemoryMiB(flags.memory),
    cpus: flags.cpus === undefined ? [] : parseCpus(flags.cpus),
    networks: (flags.net ?? []).map(parseNetwork),
    blocks: (flags.block ?? []).map(parseBlockMount),
    restart: flags.restart === undefined ? '' : parseRestart(flags.restart),
    pidsMax: 0,
    runtime: flags.runtime === undefined ? '' : parseRuntime(flags.runtime),
  }));
  const workload = await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.createWorkload, request, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, workload, () =>
    [
      `created workload ${workload.name} from ${workload.image}: ${workload.state}${workload.pid > 0 ? ` (pid ${workload.pid})` : ''}`,
      `  console: sigil workload console ${workload.name} --node ${flags.node} --follow`,
    ].join('\n'),
  );
}

export async function runList(flags: JsonNodeFlags): Promise<void> {
  const response = await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.listWorkloads, {}, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, { workloads: response.workloads }, () => workloadTable(response.workloads));
}

export async function runInfo(nameText: string, flags: JsonNodeFlags): Promise<void> {
  const name = workloadName(nameText);
  const workload = await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.getWorkload, { name }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, workload, () => workloadLines(workload));
}

export async function runDestroy(nameText: string, flags: JsonNodeFlags): Promise<void> {
  const name = workloadName(nameText);
  await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.destroyWorkload, { name }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, { name, destroyed: true }, () => `destroyed workload ${name}`);
}

export async function runRestart(nameText: string, command: string[], flags: JsonNodeFlags): Promise<void> {
  const name = workloadName(nameText);
  const workload = await withWorkloads(flags, ({ client, target, context }) =>
    unary(client, client.restartWorkload, { name, command }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(
    flags,
    workload,
    () =>
      `restarted workload ${workload.name}: ${workload.state}${workload.pid > 0 ? ` (pid ${workload.pid})` : ''}`,
  );
}

export async function runEvents(nameText: string | undefined, flags: EventsFlags): Promise<void> {
  const request = usageChecked(() => ({
    name: nameText === undefined ? '' : parseResourceName(nameText, 'workload'),
    limit: flags.limit === undefined ? 0 : parseCount(flags.limit, '--limit'),
    sinceUnixMs: flags.since === undefined ? 0 : parseSince(flags.since),
    follow: flags.follow ?? false,
  }));
  await withWorkloads(flags, async ({ client, target, context }) => {
    const call = client.watchEvents(request, streamOptions(context, request.follow));
    const events: WorkloadEvent[] = [];
    for await (const event of received<WorkloadEvent>(call, target)) {
      if (request.follow) process.stdout.write(flags.json ? jsonLine(event) : `${eventLine(event)}\n`);
      else events.push(event);
    }
    if (!request.follow) {
      printResult(flags, { events }, () =>
        events.length === 0 ? 'no events' : events.map(eventLine).join('\n'),
      );
    }
  });
}

export async function runStats(nameText: string, flags: StatsFlags): Promise<void> {
  const name = workloadName(nameText);
  const watchText = flags.watch === true ? DEFAULT_WATCH_INTERVAL : flags.watch;
  const watchIntervalMs = usageChecked(() =>
    watchText === undefined || watchText === false ? 0 : parseInterval(watchText),
  );
  const watching = watchIntervalMs > 0;
  await withWorkloads(flags, async ({ client, target, context }) => {
    const call = client.getStats({ name, watchIntervalMs }, streamOptions(context, watching));
    let first = true;
    for await (const stats of received<WorkloadStats>(call, target)) {
      if (!watching) {
        printResult(flags, stats, () => statsLines(stats));
        break;
      }
      if (flags.json) process.stdout.write(jsonLine(stats));
      else {
        if (first) process.stdout.write(`${STATS_HEADER}\n`);
        process.stdout.write(`${statsRow(stats)}\n`);
      }
      first = false;
    }
  });
}
