// The node's workload statistics as Prometheus text (exposition format
// 0.0.4), for the daemon's /metrics: one family per figure, one sample per
// workload (and per network interface). Label values are escaped as the
// format requires (backslash, double quote, newline), so a workload key can
// never break a line or forge a sample. Keys are a holder's names, never a
// secret.
import type { CgroupStats } from './cgroups/cgroup.ts';

export interface InterfaceCounters {
  /** The interface as the workload sees it (eth0) or the host end (sgv…). */
  readonly name: string;
  readonly rxBytes: number;
  readonly txBytes: number;
}

export interface BlockUsage {
  readonly name: string;
  readonly usedBytes: number;
}

/** One workload's figures: its cgroup's, its restarts, its interfaces and block devices. */
export interface WorkloadMetricsInput extends CgroupStats {
  /** The workload's key, "/alice/carol//web". */
  readonly workload: string;
  readonly restarts: number;
  readonly interfaces?: readonly InterfaceCounters[];
  readonly blocks?: readonly BlockUsage[];
}

interface Family {
  readonly name: string;
  readonly type: 'counter' | 'gauge';
  readonly help: string;
  readonly samples: (input: WorkloadMetricsInput) => [Record<string, string>, number][];
}

const one =
  (value: (input: WorkloadMetricsInput) => number) =>
  (input: WorkloadMetricsInput): [Record<string, string>, number][] => [[{}, value(input)]];

const FAMILIES: readonly Family[] = [
  {
    name: 'sigil_workload_cpu_seconds_total',
    type: 'counter',
    help: 'CPU time used by the workload, in seconds.',
    samples: one((s) => s.cpuNanos / 1e9),
  },
  {
    name: 'sigil_workload_memory_bytes',
    type: 'gauge',
    help: 'Memory the workload uses now, in bytes.',
    samples: one((s) => s.memoryBytes),
  },
  {
    name: 'sigil_workload_memory_peak_bytes',
    type: 'gauge',
    help: 'The most memory the workload has used, in bytes.',
    samples: one((s) => s.memoryPeakBytes),
  },
  {
    name: 'sigil_workload_pids',
    type: 'gauge',
    help: 'Tasks (processes and threads) in the workload.',
    samples: one((s) => s.pids),
  },
  {
    name: 'sigil_workload_oom_kills_total',
    type: 'counter',
    help: 'Tasks of the workload the kernel killed for exceeding its memory limit.',
    samples: one((s) => s.oomKills),
  },
  {
    name: 'sigil_workload_restarts_total',
    type: 'counter',
    help: 'Times the restart policy started the workload again.',
    samples: one((s) => s.restarts),
  },
  {
    name: 'sigil_workload_network_receive_bytes_total',
    type: 'counter',
    help: 'Bytes received on a workload network interface.',
    samples: (s) => (s.interfaces ?? []).map((i) => [{ interface: i.name }, i.rxBytes]),
  },
  {
    name: 'sigil_workload_network_transmit_bytes_total',
    type: 'counter',
    help: 'Bytes sent on a workload network interface.',
    samples: (s) => (s.interfaces ?? []).map((i) => [{ interface: i.name }, i.txBytes]),
  },
  {
    name: 'sigil_workload_block_used_bytes',
    type: 'gauge',
    help: 'Bytes a block device of the workload takes on the node (its allocated blocks).',
    samples: (s) => (s.blocks ?? []).map((b) => [{ block: b.name }, b.usedBytes]),
  },
];

/** A label value as the text format requires: \\ for \, \" for ", \n for a newline. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A sample value: integers as they are, NaN and the infinities as the format spells them. */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

/** The Prometheus text for `workloads` (every family's HELP and TYPE, even with no workload). */
export function renderWorkloadMetrics(workloads: readonly WorkloadMetricsInput[]): string {
  const lines: string[] = [];
  for (const family of FAMILIES) {
    lines.push(`# HELP ${family.name} ${family.help}`, `# TYPE ${family.name} ${family.type}`);
    for (const workload of workloads) {
      for (const [labels, value] of family.samples(workload)) {
        const pairs = Object.entries({ workload: workload.workload, ...labels }).map(
          ([label, text]) => `${label}="${escapeLabelValue(text)}"`,
        );
        lines.push(`${family.name}{${pairs.join(',')}} ${formatValue(value)}`);
      }
    }
  }
  return `${lines.join('\n')}\n`;
}
