// A bounded cache of what was read from certificates, keyed by the SHA-256 of
// their full DER: the same bytes find the same entry, and any other bytes
// (one changed byte included) are read afresh. Values must depend on the
// bytes alone and be immutable; nothing revocation or time decides belongs
// here. The least recently used entry is forgotten first, so the CAs that
// every connection presents stay while one-off leaves come and go.
import { hash } from 'node:crypto';

export class BoundedCertificateCache<V> {
  readonly #limit: number;
  readonly #entries = new Map<string, V>();

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1)
      throw new RangeError(`cache limit must be 1 or more (got ${limit})`);
    this.#limit = limit;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The value for these bytes: cached, or `read(der)` (then cached). */
  get(der: Uint8Array, read: (der: Uint8Array) => V): V {
    const key = hash('sha256', der, 'base64');
    const cached = this.#entries.get(key);
    if (cached !== undefined) {
      // Map keeps insertion order: re-inserting marks the entry most recently used.
      this.#entries.delete(key);
      this.#entries.set(key, cached);
      return cached;
    }
    const value = read(der);
    if (this.#entries.size >= this.#limit) this.#entries.delete(this.#entries.keys().next().value as string);
    this.#entries.set(key, value);
    return value;
  }

  /** Whether these exact bytes have an entry (for tests and diagnostics). */
  has(der: Uint8Array): boolean {
    return this.#entries.has(hash('sha256', der, 'base64'));
  }
}
