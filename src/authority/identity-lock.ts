// One identity's issuance decisions run one at a time: the limits read what
// the identity holds, then issue, and two decisions interleaved would both see
// room for one more. In one process a promise chain per identity does it;
// `sigil server --workers N` hands every process a lock held in the primary
// (server/worker-identity-locks.ts), so a burst spread over the processes of
// one replica is decided in turn, as in one process.

export interface IdentityLock {
  /** Runs `work` after every earlier work of the same identity has finished (also when it failed). */
  oneAtATime<T>(identity: string, work: () => Promise<T>): Promise<T>;
}

/** The lock of one process: a promise chain per identity, dropped once idle. */
export class LocalIdentityLock implements IdentityLock {
  readonly #chains = new Map<string, Promise<unknown>>();

  oneAtATime<T>(identity: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#chains.get(identity) ?? Promise.resolve();
    const run = previous.then(work, work);
    const settled = run.catch(() => {});
    this.#chains.set(identity, settled);
    settled.then(() => {
      if (this.#chains.get(identity) === settled) this.#chains.delete(identity);
    });
    return run;
  }
}
