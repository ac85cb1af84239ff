import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type ChainLevel,
  ceilingsFor,
  checkReservation,
  exceededMessage,
  type ReservationRequest,
} from '../../src/authority/usage.ts';
import type { Limits } from '../../src/pki/policy-extension.ts';
import { refusal } from '../support/refusals.ts';

const limits = (over: Partial<Limits> = {}): Limits => ({
  workloads: 2,
  cpus: [0, 1],
  memoryMiB: 4096,
  blockMiB: 1024,
  bridges: ['br0'],
  issuancePerHour: 60,
  ...over,
});

// Levels are subtree keys (delegation-names.ts subtreeKey): Alice, her sub-delegation
// Carol, Carol's command certificate "cmd" and her sub-delegation Dan.
const ALICE = '/alice';
const CAROL = '/alice/carol';
const CAROL_CMD = '/alice/carol/cmd';
const DAN = '/alice/carol/dan';
const CAROL_WEB = '/alice/carol//web';

const request = (over: Partial<ReservationRequest> = {}): ReservationRequest => ({
  holder: 'vm-1',
  workloads: 1,
  cpus: [0],
  memoryMiB: 512,
  blockMiB: 128,
  ...over,
});

describe('ceilingsFor', () => {
  it('one ceiling per level with its own figures, the topmost first', () => {
    // Levels as a chain is walked leaf first.
    const levels: ChainLevel[] = [
      { subtree: DAN, limits: limits({ workloads: 1, memoryMiB: 256, blockMiB: 64 }) },
      { subtree: CAROL, limits: limits({ workloads: 2, memoryMiB: 1024, blockMiB: 512 }) },
      { subtree: ALICE, limits: limits({ workloads: 4, memoryMiB: 8192, blockMiB: 2048 }) },
    ];
    assert.deepEqual(ceilingsFor(levels), [
      { subtree: ALICE, workloads: 4, memoryMiB: 8192, blockMiB: 2048 },
      { subtree: CAROL, workloads: 2, memoryMiB: 1024, blockMiB: 512 },
      { subtree: DAN, workloads: 1, memoryMiB: 256, blockMiB: 64 },
    ]);
    // The same levels given topmost first give the same answer.
    assert.deepEqual(ceilingsFor([...levels].reverse()), ceilingsFor(levels));
  });

  it('levels sharing a subtree keep the minimum of each figure', () => {
    const ceilings = ceilingsFor([
      // The delegate's own identity leaf narrows memory; its delegation narrows workloads and block.
      { subtree: CAROL, limits: limits({ workloads: 5, memoryMiB: 100, blockMiB: 900 }) },
      { subtree: CAROL, limits: limits({ workloads: 3, memoryMiB: 2000, blockMiB: 50 }) },
      { subtree: ALICE, limits: limits({ workloads: 9, memoryMiB: 9000, blockMiB: 9000 }) },
    ]);
    assert.deepEqual(ceilings, [
      { subtree: ALICE, workloads: 9, memoryMiB: 9000, blockMiB: 9000 },
      { subtree: CAROL, workloads: 3, memoryMiB: 100, blockMiB: 50 },
    ]);
  });

  it('levels with null limits are skipped, also when they share a subtree with one that has limits', () => {
    const ceilings = ceilingsFor([
      { subtree: CAROL_CMD, limits: null },
      { subtree: CAROL, limits: null },
      { subtree: CAROL, limits: limits({ workloads: 1, memoryMiB: 10, blockMiB: 20 }) },
      { subtree: ALICE, limits: limits({ workloads: 2, memoryMiB: 30, blockMiB: 40 }) },
    ]);
    assert.deepEqual(ceilings, [
      { subtree: ALICE, workloads: 2, memoryMiB: 30, blockMiB: 40 },
      { subtree: CAROL, workloads: 1, memoryMiB: 10, blockMiB: 20 },
    ]);
    assert.deepEqual(ceilingsFor([{ subtree: CAROL, limits: null }]), []);
    assert.deepEqual(ceilingsFor([]), []);
  });

  it('zero is a figure, not a missing one', () => {
    assert.deepEqual(
      ceilingsFor([
        { subtree: CAROL, limits: limits({ workloads: 0, memoryMiB: 0, blockMiB: 0 }) },
        { subtree: CAROL, limits: limits({ workloads: 7, memoryMiB: 7, blockMiB: 7 }) },
      ]),
      [{ subtree: CAROL, workloads: 0, memoryMiB: 0, blockMiB: 0 }],
    );
  });

  it("a workload leaf's own limits are a level beneath its delegation's", () => {
    assert.deepEqual(
      ceilingsFor([
        { subtree: CAROL_WEB, limits: limits({ workloads: 1, memoryMiB: 64, blockMiB: 8 }) },
        { subtree: CAROL, limits: limits({ workloads: 2, memoryMiB: 128, blockMiB: 16 }) },
        { subtree: ALICE, limits: limits({ workloads: 3, memoryMiB: 256, blockMiB: 32 }) },
      ]),
      [
        { subtree: ALICE, workloads: 3, memoryMiB: 256, blockMiB: 32 },
        { subtree: CAROL, workloads: 2, memoryMiB: 128, blockMiB: 16 },
        { subtree: CAROL_WEB, workloads: 1, memoryMiB: 64, blockMiB: 8 },
      ],
    );
  });

  it('carries no cpus, bridges or issuance rate', () => {
    const [ceiling] = ceilingsFor([{ subtree: ALICE, limits: limits() }]);
    assert.deepEqual(Object.keys(ceiling).sort(), ['blockMiB', 'memoryMiB', 'subtree', 'workloads']);
  });
});

describe('checkReservation', () => {
  const effective = limits({ cpus: [1, 3] });

  it('accepts a well-formed request within the effective cpus', () => {
    assert.doesNotThrow(() => checkReservation(request({ cpus: [1, 3] }), effective));
    assert.doesNotThrow(() => checkReservation(request({ cpus: [] }), effective));
    assert.doesNotThrow(() =>
      checkReservation(request({ workloads: 0, memoryMiB: 0, blockMiB: 0, cpus: [3] }), effective),
    );
    // Quantities above the limits are the store's business, not a shape error.
    assert.doesNotThrow(() => checkReservation(request({ workloads: 1000, cpus: [1] }), effective));
  });

  it('holder syntax: 1 to 128 of [A-Za-z0-9._:-]', () => {
    for (const good of ['a', 'VM-1', 'pod_7.ns:x', 'x'.repeat(128)]) {
      assert.doesNotThrow(() => checkReservation(request({ holder: good, cpus: [1] }), effective), good);
    }
    for (const bad of ['', 'x'.repeat(129), 'a b', 'a/b', 'vm\n', 'é', 'a;b', '*']) {
      assert.throws(
        () => checkReservation(request({ holder: bad, cpus: [1] }), effective),
        refusal('invalid_argument', /holder must be 1 to 128/),
        JSON.stringify(bad),
      );
    }
  });

  it('negative or non-integer quantities are invalid_argument, naming the field', () => {
    const cases: [Partial<ReservationRequest>, RegExp][] = [
      [{ workloads: -1 }, /workloads must be a whole number/],
      [{ workloads: 1.5 }, /workloads must be a whole number/],
      [{ workloads: Number.NaN }, /workloads must be a whole number/],
      [{ workloads: Number.POSITIVE_INFINITY }, /workloads must be a whole number/],
      [{ memoryMiB: -512 }, /memory_mib must be a whole number/],
      [{ memoryMiB: 0.25 }, /memory_mib must be a whole number/],
      [{ memoryMiB: 2 ** 53 }, /memory_mib must be a whole number/],
      [{ blockMiB: -1 }, /block_mib must be a whole number/],
      [{ blockMiB: 10.1 }, /block_mib must be a whole number/],
    ];
    for (const [over, pattern] of cases) {
      assert.throws(
        () => checkReservation(request({ cpus: [1], ...over }), effective),
        refusal('invalid_argument', pattern),
        JSON.stringify(over),
      );
    }
  });

  it('cpus outside the effective set are permission_denied, naming them', () => {
    assert.throws(
      () => checkReservation(request({ cpus: [0] }), effective),
      refusal('permission_denied', /cpu 0 is not among the cpus this delegation may use/),
    );
    assert.throws(
      () => checkReservation(request({ cpus: [1, 2, 3, 7] }), effective),
      refusal('permission_denied', /cpu 2, 7 is not among/),
    );
    assert.throws(
      () => checkReservation(request({ cpus: [0] }), limits({ cpus: [] })),
      refusal('permission_denied', /cpu 0/),
    );
  });

  it('null limits (a command certificate) are permission_denied, whatever is asked', () => {
    for (const req of [request(), request({ workloads: 0, memoryMiB: 0, blockMiB: 0, cpus: [] })]) {
      assert.throws(() => checkReservation(req, null), refusal('permission_denied', /holds no resources/));
    }
  });

  it('shape is checked before authority: a malformed request is invalid_argument even with null limits', () => {
    assert.throws(
      () => checkReservation(request({ holder: '' }), null),
      refusal('invalid_argument', /holder/),
    );
    assert.throws(
      () => checkReservation(request({ workloads: -1 }), null),
      refusal('invalid_argument', /workloads/),
    );
  });
});

describe('exceededMessage', () => {
  it("shows the figures at the caller's own level", () => {
    const message = exceededMessage('memory_mib', 3584, 4096, CAROL, CAROL);
    assert.match(message, /your delegation's memory_mib limit/);
    assert.match(message, /\b3584\b/);
    assert.match(message, /\b4096\b/);
  });

  it("shows no figures at an ancestor's level: it would leak siblings' usage", () => {
    for (const [resource, used, limit] of [
      ['workloads', 17, 20],
      ['memory_mib', 3584, 4096],
      ['block_mib', 1, 2],
    ] as const) {
      const message = exceededMessage(resource, used, limit, ALICE, CAROL);
      assert.match(message, new RegExp(`${resource} limit of a delegation above yours`));
      assert.doesNotMatch(message, /\d/, message);
      assert.doesNotMatch(message, new RegExp(ALICE));
    }
  });

  it('a level that merely shares a prefix with the caller is not the caller', () => {
    // /alice/carol vs /alice/carolyn: different levels.
    const message = exceededMessage('workloads', 5, 6, CAROL, `${CAROL}yn`);
    assert.doesNotMatch(message, /\d/);
  });
});
