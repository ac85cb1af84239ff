// Admission control for the issuance calls (Sign, Renew): at most
// `maxInFlight` run at once, up to `maxQueued` more wait their turn in
// arrival order, and beyond that a call is refused at once, before any work,
// with RESOURCE_EXHAUSTED and a hint of when to come back. A renewal storm
// (a CA rotation, a fleet back after an outage) then costs the server a
// bounded amount of work at a time, callers that were let in finish well
// inside their deadlines, and the others learn cheaply when to retry instead
// of timing out after the server did the work anyway (a node whose reply was
// lost holds one more certificate against its issuance limits).
//
// The hint is the time the calls ahead should take to drain (queued and in
// flight, at the recent average duration of a call, `maxInFlight` at a
// time), spread at random over one to two times that, so that callers
// refused together do not all come back together.
import { SigilError } from '../errors.ts';

export interface AdmissionLimits {
  /** Issuance calls running at once. */
  readonly maxInFlight: number;
  /** Calls waiting for a slot; beyond this they are refused. */
  readonly maxQueued: number;
  /**
   * A call is queued only if its expected wait (the calls ahead of it at the
   * recent average duration, maxInFlight at a time) is at most this long.
   */
  readonly maxQueueWaitMs: number;
  /** Smallest retry-after hint. */
  readonly minRetryAfterMs: number;
  /** Largest retry-after hint. */
  readonly maxRetryAfterMs: number;
}

/**
 * One server process: issuance is a few ms of CPU and a group-committed
 * write, so 16 at a time keep the store's group commit fed; a queued call
 * waits a second at most, so what was let in answers well inside a client's
 * deadline.
 */
export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = Object.freeze({
  maxInFlight: 16,
  maxQueued: 64,
  maxQueueWaitMs: 1000,
  minRetryAfterMs: 250,
  maxRetryAfterMs: 30_000,
});

/** Until calls have been timed, the duration assumed for one. */
const INITIAL_CALL_MS = 20;
/** Weight of the newest call in the running average of call durations. */
const AVERAGE_WEIGHT = 0.1;

/** A refusal: RESOURCE_EXHAUSTED, nothing done, with when to try again. */
export class AdmissionRefused extends SigilError {
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number) {
    super('resource_exhausted', message);
    this.name = 'AdmissionRefused';
    this.retryAfterMs = retryAfterMs;
  }
}

/** A call let in: release() exactly once when it has finished (further calls are ignored). */
export type Release = () => void;

/** A call's place: `granted` resolves when it may run; cancel() gives up its place in the queue. */
export interface AdmissionTicket {
  readonly granted: Promise<Release>;
  /** Leaves the queue (the caller went away); a no-op once granted. */
  cancel(): void;
}

export interface AdmissionState {
  readonly inFlight: number;
  readonly queued: number;
}

/** A queued call: settles its ticket's `granted` (both set by the promise's executor). */
interface Waiter {
  grant: (release: Release) => void;
  refuse: (error: SigilError) => void;
}

function checkLimits(limits: AdmissionLimits): void {
  const { maxInFlight, maxQueued, maxQueueWaitMs, minRetryAfterMs, maxRetryAfterMs } = limits;
  if (!(maxQueueWaitMs >= 0)) throw new RangeError(`maxQueueWaitMs must be ≥ 0, got ${maxQueueWaitMs}`);
  if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1)
    throw new RangeError(`maxInFlight must be a whole number ≥ 1, got ${maxInFlight}`);
  if (!Number.isSafeInteger(maxQueued) || maxQueued < 0)
    throw new RangeError(`maxQueued must be a whole number ≥ 0, got ${maxQueued}`);
  if (!(minRetryAfterMs >= 0 && maxRetryAfterMs >= minRetryAfterMs && Number.isFinite(maxRetryAfterMs)))
    throw new RangeError('retry-after bounds must satisfy 0 <= minRetryAfterMs <= maxRetryAfterMs');
}

export class AdmissionControl {
  readonly limits: AdmissionLimits;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #queue: Waiter[] = [];
  #inFlight = 0;
  #averageCallMs = INITIAL_CALL_MS;

  constructor(
    limits: Partial<AdmissionLimits> = {},
    options: { readonly random?: () => number; readonly now?: () => number } = {},
  ) {
    this.limits = { ...DEFAULT_ADMISSION_LIMITS, ...limits };
    checkLimits(this.limits);
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? (() => performance.now());
  }

  get state(): AdmissionState {
    return { inFlight: this.#inFlight, queued: this.#queue.length };
  }

  /** The recent average duration of an admitted call, ms. */
  get averageCallMs(): number {
    return this.#averageCallMs;
  }

  /** How long a call queued now would wait for its slot, at the recent average call duration. */
  expectedWaitMs(): number {
    if (this.#inFlight < this.limits.maxInFlight && this.#queue.length === 0) return 0;
    return Math.ceil((this.#queue.length + 1) / this.limits.maxInFlight) * this.#averageCallMs;
  }

  /**
   * A place for one call: granted at once when a slot is free and nobody is
   * waiting, else queued in arrival order. Throws AdmissionRefused (nothing
   * has been done for the call) when the queue is full, or when the expected
   * wait is longer than maxQueueWaitMs or than `budgetMs` (what the caller's
   * deadline leaves: a call answered after its caller gave up is work lost,
   * and for a renewal, a certificate the node never gets that still counts
   * against its issuance limits).
   */
  enter(budgetMs = Number.POSITIVE_INFINITY): AdmissionTicket {
    if (this.#inFlight < this.limits.maxInFlight && this.#queue.length === 0) {
      return { granted: Promise.resolve(this.#start()), cancel: () => {} };
    }
    const waitMs = this.expectedWaitMs();
    if (
      this.#queue.length >= this.limits.maxQueued ||
      waitMs > this.limits.maxQueueWaitMs ||
      waitMs + this.#averageCallMs > budgetMs
    ) {
      throw this.#refusal();
    }
    const waiter = {} as Waiter;
    const granted = new Promise<Release>((grant, refuse) => {
      waiter.grant = grant;
      waiter.refuse = refuse;
    });
    this.#queue.push(waiter);
    return {
      granted,
      cancel: () => {
        const index = this.#queue.indexOf(waiter);
        if (index < 0) return;
        this.#queue.splice(index, 1);
        waiter.refuse(
          new SigilError('resource_exhausted', 'the call was cancelled while it waited for a slot'),
        );
      },
    };
  }

  /** The current retry-after hint, in ms. */
  retryAfterMs(): number {
    const { maxInFlight, minRetryAfterMs, maxRetryAfterMs } = this.limits;
    const ahead = this.#inFlight + this.#queue.length;
    const drainMs = (ahead * this.#averageCallMs) / maxInFlight;
    const spread = drainMs * (1 + this.#random());
    return Math.round(Math.min(maxRetryAfterMs, Math.max(minRetryAfterMs, spread)));
  }

  #refusal(): AdmissionRefused {
    const retryAfterMs = this.retryAfterMs();
    return new AdmissionRefused(
      `the server is busy issuing certificates (${this.#inFlight} calls running, ${this.#queue.length} waiting): ` +
        `nothing was done; try again in ${retryAfterMs} ms`,
      retryAfterMs,
    );
  }

  #start(): Release {
    this.#inFlight++;
    const started = this.#now();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight--;
      const took = Math.max(0, this.#now() - started);
      this.#averageCallMs += AVERAGE_WEIGHT * (took - this.#averageCallMs);
      this.#drain();
    };
  }

  /** Hands free slots to the longest-waiting calls. */
  #drain(): void {
    while (this.#inFlight < this.limits.maxInFlight && this.#queue.length > 0) {
      const next = this.#queue.shift() as Waiter;
      next.grant(this.#start());
    }
  }
}
