// What the node daemon was told to run, kept in SQLite in the node directory
// (<node>/workloads/desired.db, 0600, WAL, synchronous FULL) so that after a
// restart, kill -9 included, it can start the workloads again, reconcile its
// reservations with the control plane, and still destroy a workload whose
// delegation is revoked while it was down (each record keeps the revocation
// ids of its owner's chain).
//
// Every record is checked on the way in and again on the way out: a row
// damaged on disk is reported with its key (get throws, list sets it aside)
// and never stops the daemon from reading the others.
//
// Bounded: at most `maxRecords` workloads (default 10,000) and 1 MiB of spec
// JSON each; more is refused with resource_exhausted.
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { alreadyExists, invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { isDnsLabel } from '../pki/delegation-names.ts';
import { parseSerial } from '../pki/serial.ts';
import { parseImageReference } from '../protocol/image-names.ts';
import { checkInterfaceName } from './address-pool.ts';
import { checkLimits } from './cgroups/limits.ts';
import { checkWorkloadKey } from './event-log.ts';
import {
  MAX_COMMAND_ARGUMENTS,
  MAX_COMMAND_BYTES,
  MAX_ENV_NAME_LENGTH,
  MAX_ENV_VALUE_BYTES,
  MAX_ENV_VARIABLES,
  MAX_PATH_LENGTH,
} from './namespace-process.ts';
import { openPrivateSqlite } from './private-sqlite.ts';
import { checkRestartPolicy, type RestartPolicy } from './restart-policy.ts';

export const DESIRED_STATE_FILE = 'desired.db';
export const DEFAULT_MAX_DESIRED_WORKLOADS = 10_000;
/** The longest spec, as JSON. */
export const MAX_DESIRED_SPEC_BYTES = 1024 * 1024;
/** Revocation ids per record: one or two per link of a chain, and chains are short. */
export const MAX_REVOCATION_IDS = 64;
export const MAX_WORKLOAD_NETWORKS = 16;
export const MAX_WORKLOAD_BLOCKS = 16;
const MAX_MEMORY_MIB = 1024 * 1024 * 1024; // 1 PiB: beyond any machine, within a safe integer of bytes

export interface DesiredBlock {
  /** The block device's name (one DNS label) in the owner's store. */
  readonly name: string;
  /** Absolute path inside the workload. */
  readonly mountPoint: string;
}

export interface DesiredLimits {
  readonly memoryMiB?: number;
  readonly cpus?: readonly number[];
  readonly pidsMax?: number;
}

/** What the caller asked for, as the daemon needs it to start the workload again. */
export interface DesiredSpec {
  /** One DNS label: the workload's name in its owner's subtree, and its hostname. */
  readonly name: string;
  /** `org/name:version` */
  readonly image: string;
  readonly command: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly workdir?: string;
  readonly user?: string;
  readonly limits?: DesiredLimits;
  readonly restart?: RestartPolicy;
  /** Bridge names. */
  readonly networks?: readonly string[];
  readonly blocks?: readonly DesiredBlock[];
  readonly tty?: boolean;
  /** 'vm': the command is the init of a qemu VM; absent (rows before runtimes) or 'process': namespaces. */
  readonly runtime?: DesiredRuntime;
  /** The guest runtime is bound in (a built image run through `sigil vminit`'s normal mode). */
  readonly guestRuntime?: boolean;
}

export type DesiredRuntime = 'process' | 'vm';

/** The control plane's reservation for the workload (released with ReleaseWorkload(subtree, name)). */
export interface DesiredReservation {
  /** The caller's subtree key ("/alice/carol"), "" for an admin caller. */
  readonly subtree: string;
  readonly name: string;
}

export interface DesiredWorkload {
  /** `${ownerKey}//${spec.name}` */
  readonly key: string;
  readonly spec: DesiredSpec;
  /** "/alice/carol", or "" for an admin's own workloads. */
  readonly ownerKey: string;
  /** What revokes the owner ("fp:<sha-256 hex>" and hex serials, normalized as the revocation set keeps them). */
  readonly revocationIds: readonly string[];
  readonly reservation: DesiredReservation;
  readonly createdAt: Date;
}

/** A row that could not be read back: its key (as stored) and what is wrong with it. */
export interface UnreadableWorkload {
  readonly key: string;
  readonly problem: string;
}

export interface DesiredListing {
  readonly workloads: DesiredWorkload[];
  readonly unreadable: UnreadableWorkload[];
}

export interface DesiredStateOptions {
  /** Default 10,000. */
  readonly maxRecords?: number;
  /** How long a write waits for another connection's lock (ms). Default 5000. */
  readonly busyTimeoutMs?: number;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS desired_workloads (
  key TEXT PRIMARY KEY,
  spec TEXT NOT NULL,
  owner_key TEXT NOT NULL,
  revocation_ids TEXT NOT NULL,
  reservation TEXT NOT NULL,
  created_at INTEGER NOT NULL
)`;

interface Row {
  key: unknown;
  spec: unknown;
  owner_key: unknown;
  revocation_ids: unknown;
  reservation: unknown;
  created_at: unknown;
}

const RECORD_FIELDS = new Set(['key', 'spec', 'ownerKey', 'revocationIds', 'reservation', 'createdAt']);
const SPEC_FIELDS = new Set([
  'name',
  'image',
  'command',
  'env',
  'workdir',
  'user',
  'limits',
  'restart',
  'networks',
  'blocks',
  'tty',
  'runtime',
  'guestRuntime',
]);
const LIMIT_FIELDS = new Set(['memoryMiB', 'cpus', 'pidsMax']);
const BLOCK_FIELDS = new Set(['name', 'mountPoint']);
const RESERVATION_FIELDS = new Set(['subtree', 'name']);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const USER_SPEC = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,63})?$/;
const FINGERPRINT_ID = /^fp:[0-9a-fA-F]{64}$/;
const MAX_TIME = 8.64e15;

const quote = (value: unknown): string => {
  const text = String(value);
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
};

function checkObject(value: unknown, what: string, fields: ReadonlySet<string>): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw invalid(`${what} must be an object`);
  for (const field of Object.keys(value))
    if (!fields.has(field)) throw invalid(`${what} has an unknown field ${quote(field)}`);
  return value as Record<string, unknown>;
}

/** One DNS label: [a-z0-9], inner '-', at most 63 characters. */
export function checkDnsLabel(value: unknown, what: string): string {
  if (!isDnsLabel(value))
    throw invalid(
      `${what} ${quote(value)} must be one DNS label (a-z, 0-9, inner '-', at most 63 characters)`,
    );
  return value as string;
}

/** "" (an admin) or a subtree key without "//" ("/alice/carol"). */
export function checkOwnerKey(value: unknown, what: string): string {
  if (value === '') return '';
  const key = checkWorkloadKey(value, what);
  if (key.includes('//')) throw invalid(`${what} ${quote(key)} is a workload key, not a subtree key`);
  return key;
}

function checkText(value: unknown, what: string, maxLength: number): string {
  if (typeof value !== 'string') throw invalid(`${what} must be text`);
  if (value.length > maxLength) throw invalid(`${what} is longer than ${maxLength} characters`);
  if (value.includes('\0')) throw invalid(`${what} contains a NUL character`);
  return value;
}

function checkAbsolutePath(value: unknown, what: string): string {
  const path = checkText(value, what, MAX_PATH_LENGTH);
  if (!path.startsWith('/')) throw invalid(`${what} ${quote(path)} must be an absolute path`);
  if (path.split('/').some((segment) => segment === '..'))
    throw invalid(`${what} ${quote(path)} must not contain '..'`);
  return path;
}

function checkCommand(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_COMMAND_ARGUMENTS)
    throw invalid(`command must list 1 to ${MAX_COMMAND_ARGUMENTS} arguments`);
  let bytes = 0;
  for (const argument of value) {
    checkText(argument, 'a command argument', MAX_COMMAND_BYTES);
    bytes += Buffer.byteLength(argument as string) + 1;
  }
  if (bytes > MAX_COMMAND_BYTES) throw invalid(`command is longer than ${MAX_COMMAND_BYTES} bytes`);
  return [...(value as string[])];
}

function checkEnv(value: unknown): Record<string, string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw invalid('env must be an object of names to values');
  const entries = Object.entries(value);
  if (entries.length > MAX_ENV_VARIABLES) throw invalid(`env has more than ${MAX_ENV_VARIABLES} variables`);
  for (const [name, text] of entries) {
    if (name.length > MAX_ENV_NAME_LENGTH || !ENV_NAME.test(name))
      throw invalid(`env name ${quote(name)} is not a variable name`);
    checkText(text, `env ${name}`, MAX_ENV_VALUE_BYTES);
    if (Buffer.byteLength(text as string) > MAX_ENV_VALUE_BYTES)
      throw invalid(`env ${name} is longer than ${MAX_ENV_VALUE_BYTES} bytes`);
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

function checkDesiredLimits(value: unknown): DesiredLimits {
  const fields = checkObject(value, 'limits', LIMIT_FIELDS);
  const { memoryMiB, cpus, pidsMax } = fields;
  if (
    memoryMiB !== undefined &&
    (!Number.isSafeInteger(memoryMiB) || (memoryMiB as number) < 1 || (memoryMiB as number) > MAX_MEMORY_MIB)
  )
    throw invalid(`limits: memoryMiB must be a whole number of MiB from 1 to ${MAX_MEMORY_MIB}`);
  checkLimits({
    ...(cpus === undefined ? {} : { cpus }),
    ...(pidsMax === undefined ? {} : { pidsMax }),
  });
  return {
    ...(memoryMiB === undefined ? {} : { memoryMiB: memoryMiB as number }),
    ...(cpus === undefined ? {} : { cpus: [...(cpus as number[])] }),
    ...(pidsMax === undefined ? {} : { pidsMax: pidsMax as number }),
  };
}

function checkUniqueList<T>(value: unknown, what: string, max: number, check: (item: unknown) => T): T[] {
  if (!Array.isArray(value) || value.length > max) throw invalid(`${what} must be a list of at most ${max}`);
  return value.map(check);
}

function checkBlocks(value: unknown): DesiredBlock[] {
  const blocks = checkUniqueList(value, 'blocks', MAX_WORKLOAD_BLOCKS, (item) => {
    const fields = checkObject(item, 'a block attachment', BLOCK_FIELDS);
    const mountPoint = checkAbsolutePath(fields.mountPoint, 'block mount point');
    if (mountPoint.replace(/\/+$/, '') === '') throw invalid('a block device cannot be mounted at /');
    return { name: checkDnsLabel(fields.name, 'block name'), mountPoint };
  });
  const names = new Set(blocks.map((block) => block.name));
  const points = new Set(blocks.map((block) => block.mountPoint.replace(/\/+$/, '')));
  if (names.size !== blocks.length) throw invalid('blocks name a block device twice');
  if (points.size !== blocks.length) throw invalid('blocks use a mount point twice');
  return blocks;
}

/** `spec` with every field checked; refuses unknown fields. */
export function checkDesiredSpec(value: unknown): DesiredSpec {
  const fields = checkObject(value, 'the workload spec', SPEC_FIELDS);
  const networks =
    fields.networks === undefined
      ? undefined
      : checkUniqueList(fields.networks, 'networks', MAX_WORKLOAD_NETWORKS, (name) =>
          checkInterfaceName(name, 'network'),
        );
  if (networks && new Set(networks).size !== networks.length) throw invalid('networks name a bridge twice');
  if (fields.tty !== undefined && typeof fields.tty !== 'boolean') throw invalid('tty must be true or false');
  if (fields.user !== undefined && (typeof fields.user !== 'string' || !USER_SPEC.test(fields.user)))
    throw invalid(`user ${quote(fields.user)} must be uid[:gid] or name[:group]`);
  if (fields.guestRuntime !== undefined && typeof fields.guestRuntime !== 'boolean')
    throw invalid('guestRuntime must be true or false');
  if (fields.runtime !== undefined && fields.runtime !== 'process' && fields.runtime !== 'vm')
    throw invalid(`runtime ${quote(fields.runtime)}: expected process or vm`);
  return {
    name: checkDnsLabel(fields.name, 'workload name'),
    image: parseImageReference(fields.image).reference,
    command: checkCommand(fields.command),
    ...(fields.env === undefined ? {} : { env: checkEnv(fields.env) }),
    ...(fields.workdir === undefined ? {} : { workdir: checkAbsolutePath(fields.workdir, 'workdir') }),
    ...(fields.user === undefined ? {} : { user: fields.user as string }),
    ...(fields.limits === undefined ? {} : { limits: checkDesiredLimits(fields.limits) }),
    ...(fields.restart === undefined ? {} : { restart: checkRestartPolicy(fields.restart) }),
    ...(networks === undefined ? {} : { networks }),
    ...(fields.blocks === undefined ? {} : { blocks: checkBlocks(fields.blocks) }),
    ...(fields.tty === undefined ? {} : { tty: fields.tty as boolean }),
    ...(fields.runtime === undefined ? {} : { runtime: fields.runtime as DesiredRuntime }),
    ...(fields.guestRuntime === true ? { guestRuntime: true } : {}),
  };
}

/** One revocation id as the revocation set keeps it: "fp:<lower-case hex>" or a canonical hex serial. */
export function normalizeRevocationId(value: unknown): string {
  if (typeof value !== 'string') throw invalid('a revocation id must be text');
  if (FINGERPRINT_ID.test(value)) return value.toLowerCase();
  if (value.startsWith('fp:'))
    throw invalid(`revocation id ${quote(value)} must be fp: and 64 hex digits (a SHA-256 fingerprint)`);
  return parseSerial(value);
}

function checkRevocationIds(value: unknown): string[] {
  if (!Array.isArray(value) || value.length > MAX_REVOCATION_IDS)
    throw invalid(`revocationIds must be a list of at most ${MAX_REVOCATION_IDS} ids`);
  return [...new Set(value.map(normalizeRevocationId))];
}

function checkReservation(value: unknown): DesiredReservation {
  const fields = checkObject(value, 'the reservation', RESERVATION_FIELDS);
  return {
    subtree: checkOwnerKey(fields.subtree, 'reservation subtree'),
    name: checkDnsLabel(fields.name, 'reservation name'),
  };
}

function checkCreatedAt(value: unknown): Date {
  const ms = value instanceof Date ? value.getTime() : Number.NaN;
  if (Number.isNaN(ms) || ms < 0 || ms > MAX_TIME) throw invalid('createdAt must be a valid time after 1970');
  return new Date(ms);
}

/** A whole record checked, its key agreeing with its owner and name. */
export function checkDesiredWorkload(value: unknown): DesiredWorkload {
  const fields = checkObject(value, 'a desired workload', RECORD_FIELDS);
  const key = checkWorkloadKey(fields.key, 'workload key');
  const spec = checkDesiredSpec(fields.spec);
  const ownerKey = checkOwnerKey(fields.ownerKey, 'owner key');
  if (key !== `${ownerKey}//${spec.name}`)
    throw invalid(`workload key ${quote(key)} is not its owner's key, "//" and its name`);
  return {
    key,
    spec,
    ownerKey,
    revocationIds: checkRevocationIds(fields.revocationIds),
    reservation: checkReservation(fields.reservation),
    createdAt: checkCreatedAt(fields.createdAt),
  };
}

function parseJson(text: unknown, column: string): unknown {
  if (typeof text !== 'string') throw invalid(`${column} is not text`);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalid(`${column} is not JSON (${messageOf(error)})`);
  }
}

function recordFromRow(row: Row): DesiredWorkload {
  const createdAt = typeof row.created_at === 'number' ? new Date(row.created_at) : undefined;
  return checkDesiredWorkload({
    key: row.key,
    spec: parseJson(row.spec, 'spec'),
    ownerKey: row.owner_key,
    revocationIds: parseJson(row.revocation_ids, 'revocation ids'),
    reservation: parseJson(row.reservation, 'reservation'),
    createdAt,
  });
}

function unreadable(key: unknown, error: unknown): SigilError {
  return new SigilError(
    'internal',
    `desired state: the record of workload ${quote(key)} is damaged: ${messageOf(error).split('\n')[0]}`,
    { cause: error },
  );
}

/**
 * `<nodeDir>/workloads` (0700), made if missing. The node directory itself
 * is made only when it does not exist: Node's recursive mkdir spins forever
 * below some /proc paths, so an existing parent gets a plain mkdir.
 */
export function workloadsDirectoryOf(nodeDir: string): string {
  const node = resolve(nodeDir);
  if (!existsSync(node)) mkdirSync(node, { recursive: true, mode: 0o700 });
  const dir = join(node, 'workloads');
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return dir;
}

const SELECT = 'SELECT key, spec, owner_key, revocation_ids, reservation, created_at FROM desired_workloads';

export class DesiredState {
  readonly path: string;
  readonly maxRecords: number;
  private readonly db: DatabaseSync;
  private closed = false;

  private constructor(db: DatabaseSync, path: string, maxRecords: number) {
    this.db = db;
    this.path = path;
    this.maxRecords = maxRecords;
  }

  /** Opens (creating if needed) `<nodeDir>/workloads/desired.db`. */
  static open(nodeDir: string, options: DesiredStateOptions = {}): DesiredState {
    if (typeof nodeDir !== 'string' || nodeDir === '' || nodeDir.includes('\0'))
      throw invalid('the node directory must be a non-empty path');
    const maxRecords = options.maxRecords ?? DEFAULT_MAX_DESIRED_WORKLOADS;
    if (!Number.isSafeInteger(maxRecords) || maxRecords < 1)
      throw invalid('desired state maxRecords must be a whole number, 1 or more');
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0)
      throw invalid('desired state busyTimeoutMs must be a whole number of milliseconds, 0 or more');
    const path = join(resolve(nodeDir), 'workloads', DESIRED_STATE_FILE);
    let db: DatabaseSync | undefined;
    try {
      workloadsDirectoryOf(nodeDir);
      db = openPrivateSqlite(path, SCHEMA, busyTimeoutMs);
    } catch (error) {
      db?.close();
      throw new SigilError(
        'failed_precondition',
        `cannot open the desired state ${path}: ${messageOf(error)}`,
        {
          cause: error,
        },
      );
    }
    return new DesiredState(db, path, maxRecords);
  }

  /** Records a new workload; already_exists when its key is taken, resource_exhausted at the cap. */
  put(record: DesiredWorkload): DesiredWorkload {
    this.checkOpen();
    const checked = checkDesiredWorkload(record);
    const spec = JSON.stringify(checked.spec);
    if (Buffer.byteLength(spec) > MAX_DESIRED_SPEC_BYTES)
      throw new SigilError(
        'resource_exhausted',
        `the spec of ${checked.key} is larger than ${MAX_DESIRED_SPEC_BYTES} bytes`,
      );
    this.db.exec('BEGIN IMMEDIATE');
    try {
      if (this.db.prepare('SELECT 1 FROM desired_workloads WHERE key = ?').get(checked.key))
        throw alreadyExists(`workload ${checked.key} already exists`);
      const { count } = this.db.prepare('SELECT count(*) AS count FROM desired_workloads').get() as {
        count: number;
      };
      if (Number(count) >= this.maxRecords)
        throw new SigilError(
          'resource_exhausted',
          `this node already holds ${count} workloads, the most it keeps (${this.maxRecords})`,
        );
      this.db
        .prepare(
          'INSERT INTO desired_workloads (key, spec, owner_key, revocation_ids, reservation, created_at) VALUES (?, ?, ?, ?, ?, ?)',
        )
        .run(
          checked.key,
          spec,
          checked.ownerKey,
          JSON.stringify(checked.revocationIds),
          JSON.stringify(checked.reservation),
          checked.createdAt.getTime(),
        );
      this.db.exec('COMMIT');
    } catch (error) {
      this.db.exec('ROLLBACK');
      if (error instanceof SigilError) throw error;
      throw new SigilError('internal', `could not record workload ${checked.key}: ${messageOf(error)}`, {
        cause: error,
      });
    }
    return checked;
  }

  /** Replaces a workload's command (restart with new arguments); returns the updated record. */
  updateCommand(key: string, command: readonly string[]): DesiredWorkload {
    this.checkOpen();
    const current = this.get(key);
    if (current === undefined) throw notFound(`workload ${key}: no such workload`);
    const spec = checkDesiredSpec({ ...current.spec, command });
    this.db
      .prepare('UPDATE desired_workloads SET spec = ? WHERE key = ?')
      .run(JSON.stringify(spec), current.key);
    return { ...current, spec };
  }

  /** Forgets a workload; false when there was none. */
  remove(key: string): boolean {
    this.checkOpen();
    const checked = checkWorkloadKey(key, 'workload key');
    const result = this.db.prepare('DELETE FROM desired_workloads WHERE key = ?').run(checked);
    return Number(result.changes) > 0;
  }

  /** The record of `key`, undefined when there is none; a damaged row is an internal error naming the key. */
  get(key: string): DesiredWorkload | undefined {
    this.checkOpen();
    const checked = checkWorkloadKey(key, 'workload key');
    const row = this.db.prepare(`${SELECT} WHERE key = ?`).get(checked) as Row | undefined;
    if (row === undefined) return undefined;
    try {
      return recordFromRow(row);
    } catch (error) {
      throw unreadable(row.key, error);
    }
  }

  /**
   * Every record (or those whose key is `under` or beneath it), by key; rows
   * that fail their checks are listed apart, so one damaged row never hides
   * the rest.
   */
  list(under?: string): DesiredListing {
    this.checkOpen();
    let rows: Row[];
    if (under === undefined) {
      rows = this.db.prepare(`${SELECT} ORDER BY key`).all() as unknown as Row[];
    } else {
      const subtree = checkWorkloadKey(under, 'subtree key');
      // Itself, or in [under + '/', under + '0'): '0' follows '/', and SQLite compares text byte by byte.
      rows = this.db
        .prepare(`${SELECT} WHERE key = ? OR (key >= ? AND key < ?) ORDER BY key`)
        .all(subtree, `${subtree}/`, `${subtree}0`) as unknown as Row[];
    }
    const workloads: DesiredWorkload[] = [];
    const damaged: UnreadableWorkload[] = [];
    for (const row of rows) {
      try {
        workloads.push(recordFromRow(row));
      } catch (error) {
        damaged.push({ key: String(row.key), problem: unreadable(row.key, error).message });
      }
    }
    return { workloads, unreadable: damaged };
  }

  /** The readable records any of whose revocation ids is in `revoked` (normalized ids, as the revocation set gives them). */
  revokedBy(revoked: Iterable<string>): DesiredWorkload[] {
    const ids = new Set<string>();
    for (const id of revoked) {
      try {
        ids.add(normalizeRevocationId(id));
      } catch {
        // Not an id any record can hold.
      }
    }
    return this.list().workloads.filter((record) => record.revocationIds.some((id) => ids.has(id)));
  }

  /** How many records there are (damaged ones included). */
  count(): number {
    this.checkOpen();
    const row = this.db.prepare('SELECT count(*) AS count FROM desired_workloads').get() as { count: number };
    return Number(row.count);
  }

  /** Closes the file. Calling it again does nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  private checkOpen(): void {
    if (this.closed) throw preconditionFailed(`the desired state ${this.path} is closed`);
  }
}
