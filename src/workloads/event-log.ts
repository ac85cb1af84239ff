import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { invalid, messageOf, preconditionFailed, SigilError } from '../errors.ts';
import { openPrivateSqlite } from './private-sqlite.ts';

export const WORKLOAD_EVENT_KINDS = [
  'created',
  'started',
  'exited',
  'oom-killed',
  'restarted',
  'destroyed',
  'destroyed-by-revocation',
] as const;
export type WorkloadEventKind = (typeof WORKLOAD_EVENT_KINDS)[number];

export const EVENTS_KEPT_PER_WORKLOAD = 1000;
export const EVENTS_KEPT_TOTAL = 100_000;
/** The most events one list() returns; larger limits are clamped to it. */
export const EVENT_LIST_MAX = 1000;
export const EVENT_LIST_DEFAULT = 100;
export const EVENT_MAX_FOLLOWERS = 256;
/** Longest workload key, in characters. */
export const WORKLOAD_KEY_MAX_LENGTH = 512;
/** Longest detail text, in characters. */
export const EVENT_DETAIL_MAX_LENGTH = 256;

export interface WorkloadEventInput {
  /** The workload's subtree key, e.g. "/alice/carol//web". */
  readonly workload: string;
  readonly kind: WorkloadEventKind;
  /** When it happened. Default: the log's clock. */
  readonly at?: Date;
  /** `exited` only, exactly one of exitCode (0–255) and signal ("SIGKILL"). */
  readonly exitCode?: number;
  readonly signal?: string;
  /** A short note for people: "attempt 3 after 4 s", "delegation revoked". */
  readonly detail?: string;
}

export interface WorkloadEvent {
  /** Increases with every append to the file, and is never reused. */
  readonly id: number;
  readonly workload: string;
  readonly kind: WorkloadEventKind;
  readonly at: Date;
  readonly exitCode?: number;
  readonly signal?: string;
  readonly detail?: string;
}

export interface EventFilter {
  /** Exactly this workload key. */
  readonly workload?: string;
  /** This subtree key and everything beneath it. */
  readonly under?: string;
}

export interface EventListQuery extends EventFilter {
  /** Only events that happened at or after this time. */
  readonly since?: Date;
  /** The last `limit` matching events (default 100; clamped to EVENT_LIST_MAX). */
  readonly limit?: number;
}

export interface EventLogOptions {
  /** Default 1,000. */
  readonly keepPerWorkload?: number;
  /** Default 100,000. */
  readonly keepTotal?: number;
  /** Followers at once. Default 256. */
  readonly maxFollowers?: number;
  /** The time of an event appended without one. Default: the wall clock. */
  readonly clock?: () => Date;
  /** A follower that threw (it is stopped). Default: a process warning. */
  readonly onFollowerError?: (error: Error) => void;
  /** How long an append waits for another connection's write lock (ms). Default 5000. */
  readonly busyTimeoutMs?: number;
}

const KINDS: ReadonlySet<string> = new Set(WORKLOAD_EVENT_KINDS);
const INPUT_FIELDS: ReadonlySet<string> = new Set(['workload', 'kind', 'at', 'exitCode', 'signal', 'detail']);
const QUERY_FIELDS: ReadonlySet<string> = new Set(['workload', 'under', 'since', 'limit']);
const FILTER_FIELDS: ReadonlySet<string> = new Set(['workload', 'under']);
// C0 controls, DEL and C1 controls: nothing a name or a note should carry.
const CONTROL = /\p{Cc}/u;
// A surrogate without its partner: SQLite would store U+FFFD instead, and the key would change.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const SIGNAL = /^SIG[A-Z0-9+-]{1,12}$/;
/** The last time a Date can hold. */
const MAX_TIME = 8.64e15;

const quote = (value: unknown): string => JSON.stringify(String(value).slice(0, 80));

const SCHEMA = `CREATE TABLE IF NOT EXISTS workload_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  workload TEXT NOT NULL,
  kind TEXT NOT NULL,
  at INTEGER NOT NULL,
  exit_code INTEGER,
  signal TEXT,
  detail TEXT
);
CREATE INDEX IF NOT EXISTS workload_events_by_workload ON workload_events (workload, id);`;

interface EventRow {
  id: number;
  workload: string;
  kind: string;
  at: number;
  exit_code: number | null;
  signal: string | null;
  detail: string | null;
}

/** A workload or subtree key: starts with '/', does not end with one, no control characters. */
export function checkWorkloadKey(key: unknown, field: string): string {
  if (typeof key !== 'string') throw invalid(`${field} must be a workload key (text), got ${typeof key}`);
  if (key.length === 0 || key.length > WORKLOAD_KEY_MAX_LENGTH)
    throw invalid(`${field} must be 1 to ${WORKLOAD_KEY_MAX_LENGTH} characters, got ${key.length}`);
  if (!key.startsWith('/') || key.endsWith('/'))
    throw invalid(`${field} ${quote(key)} must start with '/' and not end with one ("/alice/carol//web")`);
  if (CONTROL.test(key)) throw invalid(`${field} ${quote(key)} contains a control character`);
  if (LONE_SURROGATE.test(key)) throw invalid(`${field} ${quote(key)} is not well-formed Unicode`);
  return key;
}

function checkObject(value: unknown, what: string, fields: ReadonlySet<string>): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw invalid(`${what} must be an object`);
  for (const key of Object.keys(value))
    if (!fields.has(key)) throw invalid(`${what} has an unknown field ${quote(key)}`);
  return value as Record<string, unknown>;
}

function checkTime(value: unknown, field: string): number {
  if (!(value instanceof Date)) throw invalid(`${field} must be a Date`);
  const ms = value.getTime();
  if (Number.isNaN(ms) || ms < 0 || ms > MAX_TIME) throw invalid(`${field} must be a valid time after 1970`);
  return ms;
}

function checkFilter(filter: Record<string, unknown>): { workload?: string; under?: string } {
  return {
    workload: filter.workload === undefined ? undefined : checkWorkloadKey(filter.workload, 'workload'),
    under: filter.under === undefined ? undefined : checkWorkloadKey(filter.under, 'under'),
  };
}

function matches(event: WorkloadEvent, filter: { workload?: string; under?: string }): boolean {
  if (filter.workload !== undefined && event.workload !== filter.workload) return false;
  if (
    filter.under !== undefined &&
    event.workload !== filter.under &&
    !event.workload.startsWith(`${filter.under}/`)
  )
    return false;
  return true;
}

function checkLimit(value: unknown, field: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max)
    throw invalid(`event log ${field} must be a whole number from 1 to ${max}, got ${String(value)}`);
  return value;
}

function eventFromRow(row: EventRow): WorkloadEvent {
  return Object.freeze({
    id: Number(row.id),
    workload: row.workload,
    kind: row.kind as WorkloadEventKind,
    at: new Date(Number(row.at)),
    ...(row.exit_code === null ? {} : { exitCode: Number(row.exit_code) }),
    ...(row.signal === null ? {} : { signal: row.signal }),
    ...(row.detail === null ? {} : { detail: row.detail }),
  });
}

/** Create the file 0600 if it is missing: it lives in the node directory with the daemon's state. */
interface Settings {
  readonly keepPerWorkload: number;
  readonly keepTotal: number;
  readonly maxFollowers: number;
  readonly clock: () => Date;
  readonly onFollowerError: (error: Error) => void;
}

interface Follower {
  readonly filter: { workload?: string; under?: string };
  readonly onEvent: (event: WorkloadEvent) => void;
}

export class EventLog {
  private readonly insert: StatementSync;
  private readonly trimWorkload: StatementSync;
  private readonly trimTotal: StatementSync;
  private readonly followers = new Set<Follower>();
  private closed = false;

  private readonly db: DatabaseSync;
  readonly path: string;
  readonly keepPerWorkload: number;
  readonly keepTotal: number;
  private readonly maxFollowers: number;
  private readonly clock: () => Date;
  private readonly onFollowerError: (error: Error) => void;

  private constructor(db: DatabaseSync, path: string, settings: Settings) {
    this.db = db;
    this.path = path;
    this.keepPerWorkload = settings.keepPerWorkload;
    this.keepTotal = settings.keepTotal;
    this.maxFollowers = settings.maxFollowers;
    this.clock = settings.clock;
    this.onFollowerError = settings.onFollowerError;
    this.insert = db.prepare(
      'INSERT INTO workload_events (workload, kind, at, exit_code, signal, detail) VALUES (?, ?, ?, ?, ?, ?) RETURNING id',
    );
    // With fewer than `keep` events the subquery is NULL, and `id < NULL` deletes nothing.
    this.trimWorkload = db.prepare(
      `DELETE FROM workload_events WHERE workload = ? AND id <
         (SELECT id FROM workload_events WHERE workload = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    );
    this.trimTotal = db.prepare('DELETE FROM workload_events WHERE id <= ?');
  }

  /** Open (creating if needed) the event log in the SQLite file at `path`. */
  static open(path: string, options: EventLogOptions = {}): EventLog {
    if (typeof path !== 'string' || path === '' || path.includes('\0'))
      throw invalid('the event log path must be a non-empty file path');
    const keepPerWorkload = checkLimit(
      options.keepPerWorkload ?? EVENTS_KEPT_PER_WORKLOAD,
      'keepPerWorkload',
      10_000_000,
    );
    const keepTotal = checkLimit(options.keepTotal ?? EVENTS_KEPT_TOTAL, 'keepTotal', 100_000_000);
    const maxFollowers = checkLimit(options.maxFollowers ?? EVENT_MAX_FOLLOWERS, 'maxFollowers', 100_000);
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0)
      throw invalid('event log busyTimeoutMs must be a whole number of milliseconds, 0 or more');
    if (options.clock !== undefined && typeof options.clock !== 'function')
      throw invalid('event log clock must be a function returning a Date');
    let db: DatabaseSync | undefined;
    try {
      db = openPrivateSqlite(path, SCHEMA, busyTimeoutMs);
    } catch (error) {
      db?.close();
      throw new SigilError('failed_precondition', `cannot open the event log ${path}: ${messageOf(error)}`, {
        cause: error,
      });
    }
    return new EventLog(db, path, {
      keepPerWorkload,
      keepTotal,
      maxFollowers,
      clock: options.clock ?? (() => new Date()),
      onFollowerError: options.onFollowerError ?? ((error) => process.emitWarning(error)),
    });
  }

  /** Record one event (after checking every field; a refused event writes nothing) and tell followers. */
  append(input: WorkloadEventInput): WorkloadEvent {
    this.checkOpen();
    const fields = checkObject(input, 'a workload event', INPUT_FIELDS);
    const workload = checkWorkloadKey(fields.workload, 'workload');
    const kind = fields.kind;
    if (typeof kind !== 'string' || !KINDS.has(kind))
      throw invalid(`event kind ${quote(kind)} is not one of ${WORKLOAD_EVENT_KINDS.join(', ')}`);
    const at = fields.at === undefined ? checkTime(this.clock(), 'the clock') : checkTime(fields.at, 'at');
    const { exitCode, signal, detail } = fields;
    if (kind === 'exited') {
      if ((exitCode === undefined) === (signal === undefined))
        throw invalid('an exited event needs exactly one of exitCode and signal');
    } else if (exitCode !== undefined || signal !== undefined) {
      throw invalid(`a ${kind} event takes no exitCode or signal (only exited does)`);
    }
    if (exitCode !== undefined && (typeof exitCode !== 'number' || !Number.isInteger(exitCode)))
      throw invalid(`exitCode must be a whole number from 0 to 255, got ${quote(exitCode)}`);
    if (typeof exitCode === 'number' && (exitCode < 0 || exitCode > 255))
      throw invalid(`exitCode must be a whole number from 0 to 255, got ${exitCode}`);
    if (signal !== undefined && (typeof signal !== 'string' || !SIGNAL.test(signal)))
      throw invalid(`signal ${quote(signal)} is not a signal name such as SIGKILL`);
    if (detail !== undefined) {
      if (typeof detail !== 'string') throw invalid('detail must be text');
      if (detail.length > EVENT_DETAIL_MAX_LENGTH)
        throw invalid(`detail must be at most ${EVENT_DETAIL_MAX_LENGTH} characters, got ${detail.length}`);
      if (CONTROL.test(detail) || LONE_SURROGATE.test(detail))
        throw invalid('detail must be one line of text without control characters');
    }

    let id: number;
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const row = this.insert.get(
        workload,
        kind,
        at,
        (exitCode as number | undefined) ?? null,
        (signal as string | undefined) ?? null,
        (detail as string | undefined) ?? null,
      ) as { id: number | bigint };
      id = Number(row.id);
      this.trimWorkload.run(workload, workload, this.keepPerWorkload - 1);
      if (id > this.keepTotal) this.trimTotal.run(id - this.keepTotal);
      this.db.exec('COMMIT');
    } catch (error) {
      this.db.exec('ROLLBACK');
      throw new SigilError(
        'internal',
        `could not record the ${kind} event of ${workload}: ${messageOf(error)}`,
        {
          cause: error,
        },
      );
    }
    const event = eventFromRow({
      id,
      workload,
      kind,
      at,
      exit_code: (exitCode as number | undefined) ?? null,
      signal: (signal as string | undefined) ?? null,
      detail: (detail as string | undefined) ?? null,
    });
    this.notify(event);
    return event;
  }

  /** The last `limit` events matching the query, oldest first (in the order they were appended). */
  list(query: EventListQuery = {}): WorkloadEvent[] {
    this.checkOpen();
    const fields = checkObject(query, 'an event query', QUERY_FIELDS);
    const { workload, under } = checkFilter(fields);
    const since = fields.since === undefined ? undefined : checkTime(fields.since, 'since');
    let limit = EVENT_LIST_DEFAULT;
    if (fields.limit !== undefined) {
      const value = fields.limit;
      if (typeof value !== 'number' || Number.isNaN(value) || value < 1)
        throw invalid(`event list limit must be a number of events, 1 or more, got ${quote(value)}`);
      if (!Number.isInteger(value) && value !== Number.POSITIVE_INFINITY)
        throw invalid(`event list limit must be a whole number, got ${value}`);
      limit = Math.min(value, EVENT_LIST_MAX);
    }
    const conditions: string[] = [];
    const params: (string | number)[] = [];
    if (workload !== undefined) {
      conditions.push('workload = ?');
      params.push(workload);
    }
    if (under !== undefined) {
      // Itself, or in [under + '/', under + '0'): '0' is the character after '/',
      // and SQLite compares text byte by byte, so this is exactly "starts with under/".
      conditions.push('(workload = ? OR (workload >= ? AND workload < ?))');
      params.push(under, `${under}/`, `${under}0`);
    }
    if (since !== undefined) {
      conditions.push('at >= ?');
      params.push(since);
    }
    const where = conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`;
    const rows = this.db
      .prepare(`SELECT id, workload, kind, at, exit_code, signal, detail FROM workload_events ${where}
        ORDER BY id DESC LIMIT ?`)
      .all(...params, limit) as unknown as EventRow[];
    return rows.reverse().map(eventFromRow);
  }

  /**
   * Call `onEvent` with each event appended from now on that matches
   * `filter` (for the backlog, call list() first in the same tick: nothing
   * falls between the two). Returns the function that stops following.
   */
  follow(filter: EventFilter, onEvent: (event: WorkloadEvent) => void): () => void {
    this.checkOpen();
    const checked = checkFilter(checkObject(filter, 'an event filter', FILTER_FIELDS));
    if (typeof onEvent !== 'function') throw invalid('an event follower must be a function');
    if (this.followers.size >= this.maxFollowers)
      throw new SigilError(
        'resource_exhausted',
        `the event log already has ${this.followers.size} followers, the most it admits (${this.maxFollowers})`,
      );
    const follower: Follower = { filter: checked, onEvent };
    this.followers.add(follower);
    return () => {
      this.followers.delete(follower);
    };
  }

  /** Stop every follower and close the file. Calling it again does nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.followers.clear();
    this.db.close();
  }

  private notify(event: WorkloadEvent): void {
    // A snapshot: a follower may stop itself (or another) while being told.
    for (const follower of [...this.followers]) {
      if (!this.followers.has(follower) || !matches(event, follower.filter)) continue;
      try {
        follower.onEvent(event);
      } catch (error) {
        // The event is committed whatever a follower does; a failing follower is stopped.
        this.followers.delete(follower);
        this.onFollowerError(
          error instanceof Error ? error : new Error(`event follower failed: ${String(error)}`),
        );
      }
    }
  }

  private checkOpen(): void {
    if (this.closed) throw preconditionFailed(`the event log ${this.path} is closed`);
  }
}
