// The runtime a create asks for, from the request to the record: "" and
// "process" run in namespaces (and are recorded as nothing, as before),
// "vm" is recorded and survives a reopen, anything else is refused naming
// it; a row written before runtimes existed still loads.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import type { WorkloadCaller } from '../../src/agent/workload-callers.ts';
import { createSpec } from '../../src/agent/workload-policy.ts';
import { UsageError } from '../../src/cli/usage.ts';
import { parseRuntime, usageChecked, WORKLOAD_FLAG_CHECKS } from '../../src/cli/workload-flags.ts';
import { CreateWorkloadRequest } from '../../src/gen/sigil/v1/workloads.ts';
import { DesiredState, type DesiredWorkload } from '../../src/workloads/desired-state.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

const ADMIN: WorkloadCaller = {
  kind: 'admin',
  ownerKey: '',
  policy: null,
  leaf: Buffer.alloc(0),
  presented: [],
  revocationIds: [],
  identity: 'spiffe://test/admin',
};
const NODE = { nodeName: 'node-1', bridges: ['br0'] };

function request(runtime: string): CreateWorkloadRequest {
  return CreateWorkloadRequest.fromPartial({
    name: 'vm1',
    image: 'test/busybox:1',
    command: ['/bin/sh'],
    memoryMib: 256,
    cpus: [0, 1],
    networks: ['br0'],
    runtime,
  });
}

function nodeDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-vm-runtime-field-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function recordOf(spec: DesiredWorkload['spec']): DesiredWorkload {
  return {
    key: `//${spec.name}`,
    spec,
    ownerKey: '',
    revocationIds: [],
    reservation: { subtree: '', name: spec.name },
    createdAt: new Date(Date.UTC(2026, 11, 7)),
  };
}

test('createSpec: "" and "process" run in namespaces (no runtime recorded), "vm" records vm', () => {
  for (const runtime of ['', 'process']) {
    const spec = createSpec(ADMIN, 'vm1', 'test/busybox:1', request(runtime), NODE);
    assert.equal(spec.runtime, undefined, runtime);
    assert.equal('runtime' in spec, false, runtime);
  }
  const vm = createSpec(ADMIN, 'vm1', 'test/busybox:1', request('vm'), NODE);
  assert.equal(vm.runtime, 'vm');
  // Memory and CPUs come from the request as for a process (the supervisor counts the CPUs).
  assert.deepEqual(vm.limits, { memoryMiB: 256, cpus: [0, 1] });
  assert.deepEqual(vm.networks, ['br0']);
});

test('createSpec refuses a runtime it does not know, naming it', () => {
  for (const runtime of ['xen', 'VM', 'namespaces', ' vm']) {
    assertThrowsRefusal(
      () => createSpec(ADMIN, 'vm1', 'test/busybox:1', request(runtime), NODE),
      'invalid_argument',
      new RegExp(`runtime ${JSON.stringify(runtime)}: expected process or vm`),
    );
  }
});

test('the desired state keeps runtime vm across a reopen; a row without runtime still loads', (t) => {
  const dir = nodeDir(t);
  const state = DesiredState.open(dir);
  const vm = createSpec(ADMIN, 'vm1', 'test/busybox:1', request('vm'), NODE);
  state.put(recordOf(vm));
  state.put(recordOf(createSpec(ADMIN, 'old', 'test/busybox:1', request(''), NODE)));
  state.put(
    recordOf({ name: 'explicit', image: 'test/busybox:1', command: ['/bin/sh'], runtime: 'process' }),
  );
  state.close();

  const again = DesiredState.open(dir);
  t.after(() => again.close());
  assert.equal(again.get('//vm1')?.spec.runtime, 'vm');
  assert.equal(again.get('//old')?.spec.runtime, undefined);
  assert.equal(again.get('//explicit')?.spec.runtime, 'process');
  assert.equal(again.count(), 3);
});

test('refused: a record with an unknown runtime, nothing written', (t) => {
  const state = DesiredState.open(nodeDir(t));
  t.after(() => state.close());
  for (const runtime of ['xen', '', 'namespaces', 1]) {
    assertThrowsRefusal(
      () =>
        state.put(
          recordOf({
            name: 'bad',
            image: 'test/busybox:1',
            command: ['/bin/sh'],
            runtime: runtime as 'vm',
          }),
        ),
      'invalid_argument',
      /runtime .*: expected process or vm/,
    );
    assert.equal(state.count(), 0, String(runtime));
  }
});

test('sigil workload create --runtime: process or vm, anything else bad usage naming it', () => {
  assert.equal(parseRuntime('process'), 'process');
  assert.equal(parseRuntime('vm'), 'vm');
  assert.equal(WORKLOAD_FLAG_CHECKS['--runtime'], parseRuntime);
  for (const text of ['xen', '', 'VM']) {
    assertThrowsRefusal(
      () => usageChecked(() => parseRuntime(text)),
      null,
      new RegExp(`--runtime ${JSON.stringify(text)}: expected process or vm`),
      (error) => assert.equal(error instanceof UsageError, true),
    );
  }
});
