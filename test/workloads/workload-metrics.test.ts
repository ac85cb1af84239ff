// Workload statistics as Prometheus text: every family with HELP and TYPE,
// one sample per workload and interface, and label values escaped so a key
// holding a quote, a backslash or a newline reads back exactly and cannot
// add a line of its own.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  escapeLabelValue,
  renderWorkloadMetrics,
  type WorkloadMetricsInput,
} from '../../src/workloads/workload-metrics.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A strict parser for the sample lines of the text format (what a scraper does). */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  assert.ok(text.endsWith('\n'));
  for (const line of text.slice(0, -1).split('\n')) {
    const type = /^# TYPE (\S+) (counter|gauge)$/.exec(line);
    if (type) {
      types.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const match = /^([a-z_]+)\{(.*)\} (\S+)$/.exec(line);
    assert.ok(match, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    let rest = match[2];
    while (rest !== '') {
      const label = /^([a-z_]+)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/.exec(rest);
      assert.ok(label, `bad labels: ${JSON.stringify(rest)}`);
      labels[label[1]] = label[2].replace(/\\(["\\n])/g, (_m, c: string) => (c === 'n' ? '\n' : c));
      rest = rest.slice(label[0].length);
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return { samples, types };
}

const web: WorkloadMetricsInput = {
  workload: '/alice/carol//web',
  cpuNanos: 1_500_000_000,
  memoryBytes: 4096,
  memoryPeakBytes: 8192,
  pids: 3,
  oomKills: 1,
  restarts: 2,
  interfaces: [{ name: 'eth0', rxBytes: 100, txBytes: 200 }],
  blocks: [{ name: 'data', usedBytes: 65536 }],
};

test('every figure, with its type, per workload and per interface and block', () => {
  const { samples, types } = parse(renderWorkloadMetrics([web]));
  const value = (name: string) => samples.find((s) => s.name === name)?.value;
  assert.equal(value('sigil_workload_cpu_seconds_total'), 1.5);
  assert.equal(value('sigil_workload_memory_bytes'), 4096);
  assert.equal(value('sigil_workload_memory_peak_bytes'), 8192);
  assert.equal(value('sigil_workload_pids'), 3);
  assert.equal(value('sigil_workload_oom_kills_total'), 1);
  assert.equal(value('sigil_workload_restarts_total'), 2);
  assert.deepEqual(
    samples.find((s) => s.name === 'sigil_workload_network_receive_bytes_total'),
    {
      name: 'sigil_workload_network_receive_bytes_total',
      labels: { workload: '/alice/carol//web', interface: 'eth0' },
      value: 100,
    },
  );
  assert.equal(value('sigil_workload_network_transmit_bytes_total'), 200);
  assert.deepEqual(samples.find((s) => s.name === 'sigil_workload_block_used_bytes')?.labels, {
    workload: '/alice/carol//web',
    block: 'data',
  });
  assert.equal(types.get('sigil_workload_cpu_seconds_total'), 'counter');
  assert.equal(types.get('sigil_workload_memory_bytes'), 'gauge');
  assert.equal(types.size, 9);
  for (const sample of samples) assert.equal(sample.labels.workload, '/alice/carol//web');
});

test('label values are escaped: quotes, backslashes and newlines read back exactly, no extra line', () => {
  assert.equal(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  const nasty = '/x//w"} 1\nsigil_fake 9\\';
  const text = renderWorkloadMetrics([{ ...web, workload: nasty, interfaces: [], blocks: [] }]);
  const { samples } = parse(text);
  assert.equal(samples.length, 6); // the six per-workload figures, no forged sample
  for (const sample of samples) assert.equal(sample.labels.workload, nasty);
  assert.ok(!text.split('\n').some((line) => line.startsWith('sigil_fake')));
});

test('no workloads: only HELP and TYPE lines', () => {
  const text = renderWorkloadMetrics([]);
  assert.equal(parse(text).samples.length, 0);
  assert.equal(text.split('\n').filter((line) => line.startsWith('# TYPE')).length, 9);
});
