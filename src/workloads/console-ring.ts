// A workload's console output: the last lines it printed, kept as bytes in a
// fixed ring (Albatross: 1,024 lines of at most 512 bytes each), read back by
// time or by count, and followed live by a capped number of subscribers.
//
// Bytes, never strings: a console carries whatever the program writes, so
// lines are split on the byte 0x0a and kept as Buffers (the '\n' itself is not
// kept; '\r' and everything else are). Output longer than a line is split into
// several lines rather than dropped, and a line cut at the size limit may end
// in the middle of a UTF-8 sequence.
//
// Memory is bounded whatever the workload prints: the ring (capacity ×
// maxLineBytes), one partial line (maxLineBytes), and for each subscriber a
// queue of at most queueLines lines.
//
// Slow subscribers never block the producer: write() only appends to each
// subscriber's queue and returns; delivery runs later, one line at a time,
// waiting for the promise a subscriber's callback returns. When a queue is
// full its oldest line is dropped (a follower wants the newest output, like
// the ring itself), and the next line delivered says how many were dropped
// just before it (droppedBefore), so a client can print a marker for the gap.
import { invalid, preconditionFailed, SigilError } from '../errors.ts';

/** Albatross's figures: 1,024 lines a workload, 512 bytes a line. */
export const CONSOLE_RING_CAPACITY = 1024;
export const CONSOLE_MAX_LINE_BYTES = 512;
/** Followers a console admits at once (Albatross's --max-subscribers defaults to 5). */
export const CONSOLE_MAX_SUBSCRIBERS = 16;
/** Lines queued for one follower before its oldest are dropped. */
export const CONSOLE_SUBSCRIBER_QUEUE_LINES = 1024;

/** Upper bounds on the options, so a misconfiguration cannot ask for unbounded memory. */
const MAX_CAPACITY = 1 << 20;
const MAX_LINE_BYTES = 1 << 20;
const MAX_SUBSCRIBERS = 4096;
const MAX_QUEUE_LINES = 1 << 20;

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

export interface ConsoleLine {
  /** 0 for the first line the ring ever held, then one more per line; survives wrapping. */
  readonly seq: number;
  /** When the line was completed (its newline arrived, it reached the size limit, or it was flushed). */
  readonly at: Date;
  /** The line's bytes without its '\n'; shared with other readers, so treat as read-only. */
  readonly bytes: Buffer;
}

/** A line as a follower receives it. */
export interface FollowedLine extends ConsoleLine {
  /** Lines this follower missed just before this one because its queue was full. */
  readonly droppedBefore: number;
}

export interface ConsoleHistoryQuery {
  /** Only lines completed at or after this time (a time in the future gives none). */
  readonly since?: Date;
  /** Only the last `lines` lines (of those after `since`, if given); clamped to the capacity. */
  readonly lines?: number;
}

export interface ConsoleSubscribeOptions {
  /** Called once, after the last queued line is delivered, when the ring is closed. */
  readonly onEnd?: () => void;
}

export interface ConsoleRingOptions {
  /** Lines kept. Default CONSOLE_RING_CAPACITY (1,024). */
  readonly capacity?: number;
  /** Bytes in a line; longer output is split. Default CONSOLE_MAX_LINE_BYTES (512). */
  readonly maxLineBytes?: number;
  /** Followers at once. Default CONSOLE_MAX_SUBSCRIBERS (16). */
  readonly maxSubscribers?: number;
  /** Lines queued per follower before the oldest are dropped. Default CONSOLE_SUBSCRIBER_QUEUE_LINES. */
  readonly queueLines?: number;
  /** The time a line is stamped with. Default: the wall clock. */
  readonly clock?: () => Date;
  /** A follower whose callback threw or rejected (it is unsubscribed). Default: a process warning. */
  readonly onSubscriberError?: (error: Error) => void;
  /** Drop a '\r' just before a '\n' (a terminal's line ends). Default false: bytes are kept as written. */
  readonly stripCarriageReturns?: boolean;
}

export interface ConsoleRingStats {
  /** Lines held now (at most the capacity). */
  readonly lines: number;
  /** Lines ever completed, including those the ring has since overwritten. */
  readonly written: number;
  readonly subscribers: number;
  /** Lines dropped from followers' queues, over all followers ever subscribed. */
  readonly droppedForSubscribers: number;
  readonly closed: boolean;
}

const warn = (error: Error): void => {
  process.emitWarning(error);
};

function checkCount(value: unknown, field: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max)
    throw invalid(`console ring ${field} must be a whole number from 1 to ${max}, got ${String(value)}`);
  return value;
}

/** One follower: its callback and the lines waiting for it. */
class Subscriber {
  readonly queue: ConsoleLine[] = [];
  /** Index of the next line to deliver; the queue is compacted when it drains. */
  head = 0;
  dropped = 0;
  delivering = false;
  active = true;
  ended = false;

  readonly onLine: (line: FollowedLine) => void | Promise<void>;
  readonly onEnd: (() => void) | undefined;

  constructor(onLine: (line: FollowedLine) => void | Promise<void>, onEnd: (() => void) | undefined) {
    this.onLine = onLine;
    this.onEnd = onEnd;
  }

  get queued(): number {
    return this.queue.length - this.head;
  }
}

export class ConsoleRing {
  readonly capacity: number;
  readonly maxLineBytes: number;
  readonly maxSubscribers: number;
  readonly queueLines: number;
  private readonly clock: () => Date;
  private readonly onSubscriberError: (error: Error) => void;
  private readonly stripCarriageReturns: boolean;

  private readonly slots: (ConsoleLine | undefined)[];
  /** Slot of the oldest line held. */
  private start = 0;
  private count = 0;
  private written = 0;

  /** The line being assembled: bytes after the last '\n', not yet a line. */
  private readonly pending: Buffer;
  private pendingLength = 0;
  /**
   * The last line was cut at the size limit with nothing after it yet: a '\n'
   * arriving now ends that line, and must not add an empty one.
   */
  private cutAtLimit = false;

  private readonly subscribers = new Set<Subscriber>();
  private droppedForSubscribers = 0;
  private closed = false;

  constructor(options: ConsoleRingOptions = {}) {
    this.capacity = checkCount(options.capacity ?? CONSOLE_RING_CAPACITY, 'capacity', MAX_CAPACITY);
    this.maxLineBytes = checkCount(
      options.maxLineBytes ?? CONSOLE_MAX_LINE_BYTES,
      'maxLineBytes',
      MAX_LINE_BYTES,
    );
    this.maxSubscribers = checkCount(
      options.maxSubscribers ?? CONSOLE_MAX_SUBSCRIBERS,
      'maxSubscribers',
      MAX_SUBSCRIBERS,
    );
    this.queueLines = checkCount(
      options.queueLines ?? CONSOLE_SUBSCRIBER_QUEUE_LINES,
      'queueLines',
      MAX_QUEUE_LINES,
    );
    if (options.clock !== undefined && typeof options.clock !== 'function')
      throw invalid('console ring clock must be a function returning a Date');
    this.clock = options.clock ?? (() => new Date());
    this.onSubscriberError = options.onSubscriberError ?? warn;
    this.stripCarriageReturns = options.stripCarriageReturns === true;
    this.slots = new Array(this.capacity);
    this.pending = Buffer.alloc(this.maxLineBytes);
  }

  /**
   * Append console output: complete lines go into the ring and to followers;
   * bytes after the last '\n' wait for the rest of their line. Never blocks on
   * followers.
   */
  write(chunk: Uint8Array): void {
    if (this.closed) throw preconditionFailed('the console is closed; it takes no more output');
    if (!(chunk instanceof Uint8Array))
      throw invalid(`console output must be bytes (a Buffer or Uint8Array), got ${typeof chunk}`);
    // One stamp per chunk: every line this chunk completes was completed now.
    let stamp: Date | undefined;
    const now = (): Date => {
      stamp ??= this.clock();
      return stamp;
    };
    let position = 0;
    while (position < chunk.length) {
      if (chunk[position] === NEWLINE) {
        if (
          this.stripCarriageReturns &&
          this.pendingLength > 0 &&
          this.pending[this.pendingLength - 1] === CARRIAGE_RETURN
        )
          this.pendingLength -= 1;
        if (this.cutAtLimit && this.pendingLength === 0) this.cutAtLimit = false;
        else this.completeLine(now());
        position += 1;
        continue;
      }
      const newline = chunk.indexOf(NEWLINE, position);
      const end = newline === -1 ? chunk.length : newline;
      const take = Math.min(end - position, this.maxLineBytes - this.pendingLength);
      this.pending.set(chunk.subarray(position, position + take), this.pendingLength);
      this.pendingLength += take;
      position += take;
      this.cutAtLimit = false;
      if (this.pendingLength === this.maxLineBytes) {
        this.completeLine(now());
        this.cutAtLimit = true;
      }
    }
  }

  /**
   * End the partial line, if any, as a line of its own: when the process
   * behind the console exits, its last words need not end in '\n'.
   */
  flush(): void {
    if (this.pendingLength > 0) this.completeLine(this.clock());
    this.cutAtLimit = false;
  }

  /**
   * Flush, then take no more output. The history stays readable; each
   * follower gets its queued lines and then its onEnd.
   */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    for (const subscriber of this.subscribers) this.drain(subscriber);
  }

  /**
   * Lines held, oldest first: the last `lines` of those completed at or after
   * `since`. Work is bounded by the capacity whatever the query asks for.
   */
  history(query: ConsoleHistoryQuery = {}): ConsoleLine[] {
    if (query === null || typeof query !== 'object') throw invalid('console history query must be an object');
    const { since, lines } = query;
    let sinceMs: number | undefined;
    if (since !== undefined) {
      if (!(since instanceof Date) || Number.isNaN(since.getTime()))
        throw invalid(`console history since must be a valid Date, got ${String(since)}`);
      sinceMs = since.getTime();
    }
    let wanted = this.count;
    if (lines !== undefined) {
      if (typeof lines !== 'number' || Number.isNaN(lines) || lines < 0)
        throw invalid(`console history lines must be a number of lines, 0 or more, got ${String(lines)}`);
      if (!Number.isInteger(lines) && lines !== Number.POSITIVE_INFINITY)
        throw invalid(`console history lines must be a whole number, got ${lines}`);
      wanted = Math.min(lines, this.count);
    }
    const result: ConsoleLine[] = [];
    // Newest first, so `lines` stops the walk early; stamps need not be
    // monotonic (the wall clock may step back), so every held line is checked.
    for (let back = this.count - 1; back >= 0 && result.length < wanted; back -= 1) {
      const line = this.slots[(this.start + back) % this.capacity]!;
      if (sinceMs === undefined || line.at.getTime() >= sinceMs) result.push(line);
    }
    return result.reverse();
  }

  /**
   * Follow new lines (not the history: call history() first in the same
   * tick, and nothing falls between the two). Returns the function that
   * stops following; calling it again does nothing.
   */
  subscribe(
    onLine: (line: FollowedLine) => void | Promise<void>,
    options: ConsoleSubscribeOptions = {},
  ): () => void {
    if (typeof onLine !== 'function') throw invalid('a console subscriber must be a function');
    if (options.onEnd !== undefined && typeof options.onEnd !== 'function')
      throw invalid('a console subscriber onEnd must be a function');
    if (this.closed) throw preconditionFailed('the console is closed; there is nothing more to follow');
    if (this.subscribers.size >= this.maxSubscribers)
      throw new SigilError(
        'resource_exhausted',
        `the console already has ${this.subscribers.size} followers, the most it admits (${this.maxSubscribers})`,
      );
    const subscriber = new Subscriber(onLine, options.onEnd);
    this.subscribers.add(subscriber);
    return () => {
      subscriber.active = false;
      subscriber.queue.length = 0;
      subscriber.head = 0;
      this.subscribers.delete(subscriber);
    };
  }

  stats(): ConsoleRingStats {
    return {
      lines: this.count,
      written: this.written,
      subscribers: this.subscribers.size,
      droppedForSubscribers: this.droppedForSubscribers,
      closed: this.closed,
    };
  }

  private completeLine(at: Date): void {
    const line: ConsoleLine = Object.freeze({
      seq: this.written,
      at,
      // A copy: `pending` is reused for the next line.
      bytes: Buffer.from(this.pending.subarray(0, this.pendingLength)),
    });
    this.pendingLength = 0;
    this.written += 1;
    if (this.count < this.capacity) {
      this.slots[(this.start + this.count) % this.capacity] = line;
      this.count += 1;
    } else {
      this.slots[this.start] = line;
      this.start = (this.start + 1) % this.capacity;
    }
    for (const subscriber of this.subscribers) this.enqueue(subscriber, line);
  }

  private enqueue(subscriber: Subscriber, line: ConsoleLine): void {
    if (subscriber.queued >= this.queueLines) {
      subscriber.head += 1;
      subscriber.dropped += 1;
      this.droppedForSubscribers += 1;
      // Keep the array from growing: drop the consumed prefix once it is large.
      if (subscriber.head >= this.queueLines) {
        subscriber.queue.splice(0, subscriber.head);
        subscriber.head = 0;
      }
    }
    subscriber.queue.push(line);
    this.drain(subscriber);
  }

  /** Start delivering to `subscriber` unless a delivery is already running. */
  private drain(subscriber: Subscriber): void {
    if (subscriber.delivering || !subscriber.active) return;
    subscriber.delivering = true;
    // Later, never inside write(): the producer returns before any callback runs.
    queueMicrotask(() => {
      void this.deliver(subscriber);
    });
  }

  private async deliver(subscriber: Subscriber): Promise<void> {
    try {
      while (subscriber.active && subscriber.queued > 0) {
        const line = subscriber.queue[subscriber.head]!;
        subscriber.head += 1;
        if (subscriber.queued === 0) {
          subscriber.queue.length = 0;
          subscriber.head = 0;
        }
        const droppedBefore = subscriber.dropped;
        subscriber.dropped = 0;
        await subscriber.onLine(Object.freeze({ ...line, droppedBefore }));
      }
    } catch (error) {
      subscriber.active = false;
      this.subscribers.delete(subscriber);
      this.onSubscriberError(
        error instanceof Error ? error : new Error(`console subscriber failed: ${String(error)}`),
      );
      return;
    } finally {
      subscriber.delivering = false;
    }
    if (this.closed && subscriber.active && !subscriber.ended) {
      subscriber.ended = true;
      subscriber.active = false;
      this.subscribers.delete(subscriber);
      try {
        subscriber.onEnd?.();
      } catch (error) {
        this.onSubscriberError(
          error instanceof Error ? error : new Error(`console subscriber onEnd failed: ${String(error)}`),
        );
      }
    }
  }
}
