// Follows CertificateAuthority.WatchRevocations into a RevocationSet, so the
// node's Workloads server refuses (and cuts off) revoked chains and the
// daemon destroys what they own.
//
// Snapshot semantics: every stream opens with a snapshot, the whole revoked
// set, then sends what is revoked from then on. Revocation is one-way, so a
// snapshot after a reconnect only adds what was missed while the stream was
// down; nothing is ever taken out of the set. A stream that ends or fails is
// opened again after a capped, jittered backoff (reset once a stream has
// delivered), against whatever address the link prefers next.
import type { ClientReadableStream } from '@grpc/grpc-js';
import { firstLineOf } from '../errors.ts';
import type { CertificateAuthorityClient, RevocationEvent } from '../gen/sigil/v1/sigil.ts';
import type { Logger } from '../logging.ts';
import { normalizeSerial, type RevocationSet } from '../transport/revocation-set.ts';

export interface RevocationFollowerOptions {
  readonly revocations: RevocationSet;
  /** A client to the control plane for the next attempt (the link rotates addresses). */
  readonly client: (attempt: number) => {
    readonly client: CertificateAuthorityClient;
    readonly target: string;
  };
  readonly logger: Logger;
  /** First and longest wait between attempts. Default 200 ms and 10 s. */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

export class RevocationFollower {
  readonly #options: RevocationFollowerOptions;
  #stream: ClientReadableStream<RevocationEvent> | null = null;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;
  #synced = false;
  readonly #syncWaiters = new Set<() => void>();

  constructor(options: RevocationFollowerOptions) {
    this.#options = options;
  }

  /** Opens the first stream. */
  start(): void {
    this.#open();
  }

  /** True once a snapshot has arrived (the set holds everything revoked up to then). */
  get synced(): boolean {
    return this.#synced;
  }

  /** Resolves at the first snapshot, or false after `timeoutMs`. */
  waitForSnapshot(timeoutMs: number): Promise<boolean> {
    if (this.#synced) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#syncWaiters.delete(done);
        resolve(this.#synced);
      };
      const timer = setTimeout(done, timeoutMs);
      this.#syncWaiters.add(done);
    });
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#stream?.cancel();
    this.#stream = null;
    for (const waiter of [...this.#syncWaiters]) waiter();
  }

  #open(): void {
    if (this.#closed) return;
    const { client, target } = this.#options.client(this.#failures);
    const stream = client.watchRevocations({});
    this.#stream = stream;
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      if (this.#stream === stream) this.#stream = null;
      this.#retry(target, why);
    };
    stream.on('data', (event: RevocationEvent) => this.#apply(event));
    stream.on('error', (error: unknown) => end(firstLineOf(error)));
    stream.on('end', () => end('the stream ended'));
  }

  #apply(event: RevocationEvent): void {
    this.#failures = 0;
    const serials: string[] = [];
    for (const serial of event.serials) {
      try {
        serials.push(normalizeSerial(serial));
      } catch (error) {
        this.#options.logger.warn({ err: firstLineOf(error) }, 'ignored an unreadable revoked serial');
      }
    }
    // One batch: the daemon's listener destroys what the new ones own.
    const fresh = this.#options.revocations.revoke(serials);
    if (event.snapshot && !this.#synced) {
      this.#synced = true;
      for (const waiter of [...this.#syncWaiters]) waiter();
    }
    if (fresh.length > 0) this.#options.logger.info({ revoked: fresh.length }, 'revocations received');
  }

  #retry(target: string, why: string): void {
    if (this.#closed) return;
    this.#failures += 1;
    const initial = this.#options.initialBackoffMs ?? 200;
    const max = this.#options.maxBackoffMs ?? 10_000;
    const base = Math.min(max, initial * 2 ** Math.min(this.#failures - 1, 16));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.#options.logger.warn(
      { target, failures: this.#failures, retryInMs: delay, err: why },
      'revocation watch interrupted; reconnecting',
    );
    this.#timer = setTimeout(() => this.#open(), delay);
    this.#timer.unref();
  }
}
