// Each identity's issuance decisions, one at a time across the processes of
// `sigil server --workers N` (authority/identity-lock.ts says why). The lock
// lives in the primary: a worker asks for an identity over the IPC channel,
// runs its decision once granted, and gives it back. Without it a node that
// opens one connection per process could pass its daily rate once per process.
// A worker that dies gives back everything it held; a worker whose channel
// closes fails what it was waiting for (the call fails, nothing is issued).
import { type IdentityLock, LocalIdentityLock } from '../authority/identity-lock.ts';
import { SigilError } from '../errors.ts';

/** Worker -> primary: take or give back an identity's lock (`id` names one request of that worker). */
export type LockRequest =
  | { readonly type: 'lock'; readonly id: number; readonly identity: string }
  | { readonly type: 'unlock'; readonly id: number };
/** Primary -> worker: the lock of request `id` is yours. */
export interface LockGrant {
  readonly type: 'locked';
  readonly id: number;
}

/** The primary's locks: its own decisions and the workers' share one queue per identity. */
export class PrimaryIdentityLocks implements IdentityLock {
  readonly #local = new LocalIdentityLock();
  /** Held or waited for, per worker: request id -> give it back. */
  readonly #held = new Map<number, Map<number, () => void>>();

  oneAtATime<T>(identity: string, work: () => Promise<T>): Promise<T> {
    return this.#local.oneAtATime(identity, work);
  }

  /** A worker's request; `grant` is called once the lock is the worker's. */
  handle(worker: number, request: LockRequest, grant: (message: LockGrant) => void): void {
    let requests = this.#held.get(worker);
    if (!requests) {
      requests = new Map();
      this.#held.set(worker, requests);
    }
    if (request.type === 'unlock') {
      requests.get(request.id)?.();
      return;
    }
    const mine = requests;
    const { id } = request;
    let release = (): void => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    mine.set(id, () => {
      mine.delete(id);
      release();
    });
    void this.#local.oneAtATime(request.identity, async () => {
      if (mine.has(id)) grant({ type: 'locked', id });
      await released;
    });
  }

  /** The worker is gone: everything it held or waited for is given back. */
  releaseAll(worker: number): void {
    const requests = this.#held.get(worker);
    this.#held.delete(worker);
    for (const release of requests?.values() ?? []) release();
  }
}

/** A worker's side: the lock is the primary's (`send`); `settle` takes the primary's grants. */
export class WorkerIdentityLock implements IdentityLock {
  readonly #send: (message: LockRequest) => void;
  readonly #waiting = new Map<number, { granted: () => void; failed: (error: Error) => void }>();
  #next = 1;
  #gone = false;

  constructor(send: (message: LockRequest) => void) {
    this.#send = send;
  }

  async oneAtATime<T>(identity: string, work: () => Promise<T>): Promise<T> {
    const id = this.#next++;
    await new Promise<void>((granted, failed) => {
      if (this.#gone) return failed(primaryGone());
      this.#waiting.set(id, { granted, failed });
      this.#send({ type: 'lock', id, identity });
    });
    try {
      return await work();
    } finally {
      if (!this.#gone) this.#send({ type: 'unlock', id });
    }
  }

  settle(grant: LockGrant): void {
    const waiting = this.#waiting.get(grant.id);
    this.#waiting.delete(grant.id);
    waiting?.granted();
  }

  /** The channel to the primary closed: whatever waits fails, and so does every later request. */
  failAll(): void {
    this.#gone = true;
    for (const { failed } of this.#waiting.values()) failed(primaryGone());
    this.#waiting.clear();
  }
}

const primaryGone = (): SigilError =>
  new SigilError('internal', 'the server primary went away before the identity could be decided');
