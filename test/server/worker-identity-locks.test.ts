// The identity locks of `sigil server --workers N` without processes: the
// primary's queue per identity shared by its own decisions and its workers',
// a dead worker's locks given back, and a worker whose primary is gone
// refusing to decide alone.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type LockGrant,
  type LockRequest,
  PrimaryIdentityLocks,
  WorkerIdentityLock,
} from '../../src/server/worker-identity-locks.ts';

/** A worker wired to the primary in memory, as the IPC channel would (asynchronously). */
function workerOf(primary: PrimaryIdentityLocks, index: number): WorkerIdentityLock {
  const worker: WorkerIdentityLock = new WorkerIdentityLock((request: LockRequest) =>
    setImmediate(() =>
      primary.handle(index, request, (grant: LockGrant) => setImmediate(() => worker.settle(grant))),
    ),
  );
  return worker;
}

describe('identity locks across server processes', () => {
  test("one identity's decisions run one at a time whichever process makes them", async () => {
    const primary = new PrimaryIdentityLocks();
    const workers = [workerOf(primary, 1), workerOf(primary, 2)];
    const order: string[] = [];
    let inside = 0;
    const decide = (who: string) => async () => {
      inside += 1;
      assert.equal(inside, 1, `${who} decided while another decision of the identity ran`);
      order.push(who);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inside -= 1;
    };
    await Promise.all([
      primary.oneAtATime('node:1', decide('primary')),
      workers[0].oneAtATime('node:1', decide('worker 1')),
      workers[1].oneAtATime('node:1', decide('worker 2')),
      workers[0].oneAtATime('node:1', decide('worker 1 again')),
    ]);
    assert.equal(order.length, 4);
  });

  test('another identity is not held up', async () => {
    const primary = new PrimaryIdentityLocks();
    const worker = workerOf(primary, 1);
    let release = (): void => {};
    const held = primary.oneAtATime('node:1', () => new Promise<void>((resolve) => (release = resolve)));
    assert.equal(await worker.oneAtATime('node:2', async () => 'decided'), 'decided');
    release();
    await held;
  });

  test('a worker that dies gives back the lock it held, and what it waited for is never granted', async () => {
    const primary = new PrimaryIdentityLocks();
    const granted: number[] = [];
    primary.handle(1, { type: 'lock', id: 1, identity: 'node:1' }, (grant) => granted.push(grant.id));
    primary.handle(1, { type: 'lock', id: 2, identity: 'node:1' }, (grant) => granted.push(grant.id));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(granted, [1], 'the first request holds the lock, the second waits');
    primary.releaseAll(1);
    assert.equal(await primary.oneAtATime('node:1', async () => 'next'), 'next');
    assert.deepEqual(granted, [1], 'the dead worker is granted nothing more');
  });

  test('a worker whose primary is gone fails the decision instead of making it alone', async () => {
    const worker = new WorkerIdentityLock(() => {});
    let ran = false;
    const waiting = worker.oneAtATime('node:1', async () => {
      ran = true;
    });
    worker.failAll();
    await assert.rejects(waiting, /primary went away/);
    await assert.rejects(
      worker.oneAtATime('node:1', async () => {
        ran = true;
      }),
      /primary went away/,
    );
    assert.equal(ran, false);
  });
});
