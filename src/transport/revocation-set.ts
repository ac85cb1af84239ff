// The simplest RevocationSource: a set of serials the control plane (or a
// test) adds to. Revocation is one-way; a serial once revoked stays revoked.
import type { RevocationSource } from '../pki/revocation-source.ts';
import { parseSerial } from '../pki/serial.ts';

/**
 * "0A:1B", "0a1b", "000A1B" → "a1b"; invalid() for anything that is not a hex
 * serial. "fp:<SHA-256 hex>" names a certificate by fingerprint (delegation
 * certificates made offline, whose serials their issuers chose) and is kept.
 */
export function normalizeSerial(text: string): string {
  if (/^fp:[0-9a-fA-F]{64}$/.test(text)) return text.toLowerCase();
  return parseSerial(text);
}

/**
 * Call every listener even if one throws, then rethrow the first failure, so
 * one broken subscriber cannot stop revocation reaching the others.
 */
export function notifyAll<T>(listeners: Iterable<(value: T) => void>, value: T): void {
  let failure: { error: unknown } | null = null;
  for (const listener of [...listeners]) {
    try {
      listener(value);
    } catch (error) {
      failure ??= { error };
    }
  }
  if (failure) throw failure.error;
}

export class RevocationSet implements RevocationSource {
  readonly #serials = new Set<string>();
  readonly #listeners = new Set<(revokedSerials: readonly string[]) => void>();

  constructor(serials: Iterable<string> = []) {
    for (const serial of serials) this.#serials.add(normalizeSerial(serial));
  }

  /** Revoke serials; listeners hear about the ones not already revoked. Returns those. */
  revoke(serials: string | Iterable<string>): string[] {
    const list = typeof serials === 'string' ? [serials] : [...serials];
    const normalized = list.map(normalizeSerial); // all valid before any is applied
    const added = normalized.filter((serial) => !this.#serials.has(serial));
    const fresh = [...new Set(added)];
    for (const serial of fresh) this.#serials.add(serial);
    if (fresh.length > 0) notifyAll(this.#listeners, fresh);
    return fresh;
  }

  isRevoked(serialHex: string): boolean {
    return this.#serials.has(serialHex);
  }

  get size(): number {
    return this.#serials.size;
  }

  subscribe(listener: (revokedSerials: readonly string[]) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }
}
