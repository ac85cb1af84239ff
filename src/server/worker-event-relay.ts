// Store events across the processes of `sigil server --workers N` on SQLite.
// A SQLite store publishes its events (revocations, node state, CA changes)
// only to subscribers of the store object that made the change; with several
// processes on one database, a certificate revoked through one process must
// still close the live sessions held by every other. The relay wraps the
// store: events made here go to the local subscribers and out (worker ->
// primary -> the other workers), events from elsewhere are delivered to the
// local subscribers as if made here. Only events made here go out, so an
// event never travels back. (PostgreSQL needs none of this: every process
// LISTENs itself.)
import { decodeEvent, encodeEvent, Listeners } from '../store/events.ts';
import type { Store, StoreEvent } from '../store/store.ts';

export class StoreEventRelay {
  /** The store every consumer in this process uses: the wrapped one, with the relayed events. */
  readonly store: Store;
  readonly #listeners: Listeners;
  #outbound: (encoded: string) => void = () => {};

  constructor(inner: Store, onError: (error: Error) => void) {
    this.#listeners = new Listeners(onError);
    inner.subscribe((event) => {
      this.#listeners.emit(event);
      this.#outbound(encodeEvent(event));
    });
    const listeners = this.#listeners;
    // Every other method is the inner store's own, bound to it.
    this.store = new Proxy(inner, {
      get(target, property) {
        if (property === 'subscribe') {
          return (listener: (event: StoreEvent) => void) => listeners.subscribe(listener);
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  /** Where events made in this process go (encoded); set once the peers are known. */
  sendTo(outbound: (encoded: string) => void): void {
    this.#outbound = outbound;
  }

  /** An event made in another process: to the local subscribers only. Unknown payloads are dropped. */
  deliver(encoded: string): void {
    const event = decodeEvent(encoded);
    if (event) this.#listeners.emit(event);
  }
}
