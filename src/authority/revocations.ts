// Which certificates are revoked, as every replica sees it: loaded from the
// store at start, fed by the store's revocation events (from any replica),
// pruned of expired certificates by the maintenance timer. It is the
// RevocationSource transport enforces (handshakes, calls, live connections)
// and the source of WatchRevocations: a snapshot first, then deltas.

import type { RevocationSource } from '../pki/revocation-source.ts';
import type { Store } from '../store/store.ts';

export interface RevocationUpdate {
  /** True for the first message of a watch: every revoked, unexpired serial. */
  readonly snapshot: boolean;
  readonly serials: readonly string[];
}

type Listener = (serials: readonly string[]) => void;

export class RevocationTracker implements RevocationSource {
  #serials = new Set<string>();
  readonly #listeners = new Set<Listener>();
  /** Serials that arrived while a reload was reading the store; kept across the swap. */
  #arrivedDuringReload: Set<string> | null = null;
  readonly #onListenerError: (error: unknown) => void;

  constructor(onListenerError: (error: unknown) => void) {
    this.#onListenerError = onListenerError;
  }

  /** Replaces the set with the store's revoked, unexpired certificates of every CA in `caIds` and revoked delegations. */
  async reload(store: Store, caIds: readonly string[], now: Date): Promise<void> {
    const arrived = new Set<string>();
    this.#arrivedDuringReload = arrived;
    try {
      const fresh = new Set<string>();
      for (const caId of caIds) {
        for (const record of await store.listRevoked(caId, now)) fresh.add(record.serial);
      }
      // Delegation certificates made offline are known by fingerprint (their serials are their issuers' choice).
      for (const record of await store.listRevokedDelegations(now)) fresh.add(`fp:${record.fingerprint}`);
      const added = [...fresh].filter((serial) => !this.#serials.has(serial));
      for (const serial of arrived) fresh.add(serial);
      this.#serials = fresh;
      if (added.length > 0) this.#notify(added);
    } finally {
      this.#arrivedDuringReload = null;
    }
  }

  /** Adds serials (from an event or a local revoke); listeners hear only the new ones. */
  add(serials: readonly string[]): void {
    const fresh = serials.filter((serial) => !this.#serials.has(serial));
    for (const serial of serials) this.#arrivedDuringReload?.add(serial);
    if (fresh.length === 0) return;
    const unique = [...new Set(fresh)];
    for (const serial of unique) this.#serials.add(serial);
    this.#notify(unique);
  }

  isRevoked(serialHex: string): boolean {
    return this.#serials.has(serialHex);
  }

  snapshot(): string[] {
    return [...this.#serials].sort();
  }

  subscribe(listener: Listener): () => void {
    const entry: Listener = (serials) => listener(serials);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  /** The snapshot (delivered synchronously, before this returns), then every delta. */
  watch(listener: (update: RevocationUpdate) => void): () => void {
    // Subscribed first, so nothing revoked between snapshot and subscription is missed.
    const unsubscribe = this.subscribe((serials) => listener({ snapshot: false, serials }));
    try {
      listener({ snapshot: true, serials: this.snapshot() });
    } catch (error) {
      unsubscribe();
      throw error;
    }
    return unsubscribe;
  }

  #notify(serials: readonly string[]): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(serials);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
  }
}
