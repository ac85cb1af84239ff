// The embedded store: one SQLite file through node:sqlite (DatabaseSync).
//
// Durability: WAL with synchronous=FULL, so every commit is fsynced before
// its promise resolves and an acknowledged write survives kill -9 (and power
// loss, as far as the disk keeps its promises).
//
// Atomicity: every write that reads before it writes (registerNode,
// transitionNode, reserveUsage, migrate) runs in BEGIN IMMEDIATE, which takes SQLite's
// write lock up front, so it is atomic against other store objects and other
// processes on the same file; they wait up to busy_timeout for the lock.
// node:sqlite is synchronous, so within one process calls never interleave.
//
// SQLite is single-replica: events are delivered in-process to the
// subscribers of the store object that made the change. Another store object
// or another process on the same file sees the data but not the events; run
// several replicas on PostgreSQL instead.
//
// The file (and its -wal/-shm companions, which SQLite creates with the same
// mode) is 0600: it holds encrypted CA keys and token hashes.
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { alreadyExists, invalid, messageOf, notFound, SigilError } from '../errors.ts';
import { certificatePage, certificatePageQuery } from './certificate-pages.ts';
import { checkNodeState, checkRevocation, millis, text } from './checks.ts';
import { Listeners, warn } from './events.ts';
import { planMigrations, SCHEMA_MIGRATIONS_TABLE, statementsFor } from './migrations.ts';
import {
  CA_COLUMNS,
  CERTIFICATE_COLUMNS,
  caFromRow,
  caParams,
  certificateFromRow,
  certificateParams,
  DELEGATION_COLUMNS,
  delegationFromRow,
  delegationParams,
  LINEAGE_COLUMNS,
  lineageFromRow,
  lineageParams,
  NODE_COLUMNS,
  nodeFromRow,
  nodeParams,
  optionalStringOf,
  type Param,
  RESERVATION_COLUMNS,
  REVOKED_KEY_COLUMNS,
  type Row,
  reservationFromRow,
  reservationParams,
  revokedKeyFromRow,
  revokedKeyParams,
  TOKEN_COLUMNS,
  tokenFromRow,
  tokenParams,
} from './rows.ts';
import { type CertificateWriter, InlineCertificateWriter, ThreadCertificateWriter } from './sqlite-writer.ts';
import type { BatchNodeStep, NodeChange } from './sqlite-writer-batch.ts';
import type {
  CaRecord,
  CertificateFilter,
  CertificateRecord,
  DelegationRecord,
  LineageEntry,
  NodeRecord,
  NodeRegistrationOutcome,
  NodeState,
  NodeStep,
  Page,
  ReserveResult,
  RevokedKeyRecord,
  Store,
  StoreEvent,
  TokenRecord,
  UsageCeiling,
  UsageReservation,
  UsageTotals,
} from './store.ts';
import { checkSubtree, prefixBounds, subtreeBounds, subtreeCondition } from './subtrees.ts';
import {
  ceilingSumsFromRow,
  checkCeilings,
  exceededResource,
  USAGE_SUMS,
  usageTotalsFromRow,
} from './usage-ceilings.ts';

export interface SqliteStoreOptions {
  /** How long a write waits for another connection's write lock (ms). Default 5000. */
  readonly busyTimeoutMs?: number;
  /** Listener failures and other non-fatal problems. Default: a process warning. */
  readonly onError?: (error: Error) => void;
  /**
   * Where certificate rows are group-committed (sqlite-writer.ts): 'thread'
   * on a writer thread with its own connection, so the event loop serves on
   * while a batch is fsynced (faster Sign, measured with bench/hotpath.ts),
   * or 'inline' on the event loop. Default: the SIGIL_SQLITE_WRITER
   * environment variable, else 'thread'.
   */
  readonly certificateWriter?: 'inline' | 'thread';
}

/** Open (creating if needed) the SQLite store at `path`. Call migrate() before use. */
export async function openSqliteStore(path: string, options: SqliteStoreOptions = {}): Promise<Store> {
  return SqliteStore.open(path, options);
}

const insertSql = (table: string, columns: readonly string[]): string =>
  `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`;

/** At or under the subtree key bound to the three parameters of subtreeBounds. */
const under = (column: string): string => subtreeCondition(column, ['?', '?', '?']);

const SQL = {
  getSetting: 'SELECT value FROM settings WHERE key = ?',
  initSetting: 'INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING',
  putCa:
    insertSql('cas', CA_COLUMNS) +
    ` ON CONFLICT (id) DO UPDATE SET ${CA_COLUMNS.slice(1)
      .map((c) => `${c} = excluded.${c}`)
      .join(', ')}`,
  retireCa: 'UPDATE cas SET retired_at = ? WHERE id = ? AND retired_at IS NULL',
  caExists: 'SELECT 1 AS found FROM cas WHERE id = ?',
  listCas: `SELECT ${CA_COLUMNS.join(', ')} FROM cas ORDER BY created_at, id`,
  insertCertificate: insertSql('certificates', CERTIFICATE_COLUMNS),
  getCertificate: `SELECT ${CERTIFICATE_COLUMNS.join(', ')} FROM certificates WHERE serial = ?`,
  revokeCertificate:
    'UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE serial = ? AND revoked_at IS NULL',
  listRevoked: `SELECT ${CERTIFICATE_COLUMNS.join(', ')} FROM certificates
    WHERE issuer_id = ? AND revoked_at IS NOT NULL AND not_after > ? ORDER BY revoked_at, serial`,
  insertToken: insertSql('tokens', TOKEN_COLUMNS),
  getToken: `SELECT ${TOKEN_COLUMNS.join(', ')} FROM tokens WHERE id = ?`,
  listTokens: `SELECT ${TOKEN_COLUMNS.join(', ')} FROM tokens ORDER BY created_at, id`,
  revokeToken: 'UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL',
  consumeToken: `UPDATE tokens SET uses_left = uses_left - 1
    WHERE id = ? AND uses_left > 0 AND expires_at > ? AND revoked_at IS NULL`,
  insertNode: insertSql('nodes', NODE_COLUMNS),
  getNode: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE id = ?`,
  listNodes: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes ORDER BY created_at, id`,
  listNodesInState: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE state = ? ORDER BY created_at, id`,
  transitionNode: `UPDATE nodes SET state = ?, updated_at = ?, certificate_serial = coalesce(?, certificate_serial)
    WHERE id = ? RETURNING ${NODE_COLUMNS.join(', ')}`,
  listNodesNamed: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE name = ? ORDER BY created_at, id`,
  setNodeWorkloadAddress: 'UPDATE nodes SET workload_address = ? WHERE id = ?',
  getNodeWorkloadAddress: 'SELECT workload_address FROM nodes WHERE id = ?',
  recordDelegation: `${insertSql('delegations', DELEGATION_COLUMNS)} ON CONFLICT (fingerprint) DO NOTHING`,
  getDelegation: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations WHERE fingerprint = ?`,
  listDelegations: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    ORDER BY subtree, recorded_at, fingerprint`,
  listDelegationsUnder: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    WHERE ${under('subtree')} ORDER BY subtree, recorded_at, fingerprint`,
  listDelegationsAt: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    WHERE subtree = ? ORDER BY recorded_at, fingerprint`,
  countDelegationsSince: `SELECT count(*) AS n FROM delegations WHERE ${under('subtree')} AND recorded_at >= ?`,
  revokeDelegation: `UPDATE delegations SET revoked_at = ?, revocation_reason = ?, revoked_by = ?
    WHERE fingerprint = ? AND revoked_at IS NULL`,
  listRevokedDelegations: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY revoked_at, fingerprint`,
  getReservation: `SELECT ${RESERVATION_COLUMNS.join(', ')} FROM usage_reservations WHERE subtree = ? AND holder = ?`,
  insertReservation: insertSql('usage_reservations', RESERVATION_COLUMNS),
  releaseUsage: 'DELETE FROM usage_reservations WHERE subtree = ? AND holder = ?',
  releaseUsageUnder: `DELETE FROM usage_reservations WHERE ${under('subtree')}`,
  revokeKey: `${insertSql('revoked_keys', REVOKED_KEY_COLUMNS)} ON CONFLICT (key_hash) DO NOTHING`,
  getRevokedKey: `SELECT ${REVOKED_KEY_COLUMNS.join(', ')} FROM revoked_keys WHERE key_hash = ?`,
  recordLineage: `${insertSql('certificate_lineage', LINEAGE_COLUMNS)} ON CONFLICT (serial) DO NOTHING`,
  getLineage: `SELECT ${LINEAGE_COLUMNS.join(', ')} FROM certificate_lineage WHERE serial = ?`,
  listLineage: `SELECT ${LINEAGE_COLUMNS.join(', ')} FROM certificate_lineage
    WHERE lineage = ? AND issued_at >= ? ORDER BY issued_at, serial`,
  usageSums: `SELECT ${USAGE_SUMS} FROM usage_reservations WHERE ${under('subtree')}`,
  usageUnder: `SELECT ${USAGE_SUMS}, (
      SELECT json_group_array(cpu) FROM (
        SELECT DISTINCT cpu.value AS cpu FROM usage_reservations AS r, json_each(r.cpus) AS cpu
        WHERE ${under('r.subtree')} ORDER BY cpu.value)
    ) AS cpus
    FROM usage_reservations WHERE ${under('subtree')}`,
  listReservations: `SELECT ${RESERVATION_COLUMNS.join(', ')} FROM usage_reservations
    WHERE ${under('subtree')} ORDER BY subtree, holder`,
  listReservationsHeldBy: `SELECT ${RESERVATION_COLUMNS.join(', ')} FROM usage_reservations
    WHERE holder >= ? AND holder < ? ORDER BY subtree, holder`,
} as const;

class SqliteStore implements Store {
  private readonly db: DatabaseSync;
  private readonly path: string;
  private readonly statements = new Map<string, StatementSync>();
  private readonly listeners: Listeners;
  private closed = false;
  /** Commits inserted certificates in groups (see insertCertificate). */
  private readonly certificates: CertificateWriter;

  private constructor(
    db: DatabaseSync,
    path: string,
    onError: (error: Error) => void,
    writer: 'inline' | 'thread',
    busyTimeoutMs: number,
  ) {
    this.db = db;
    this.path = path;
    this.listeners = new Listeners(onError);
    this.certificates =
      writer === 'thread'
        ? new ThreadCertificateWriter({
            path,
            busyTimeoutMs,
            insertSql: SQL.insertCertificate,
            getNodeSql: SQL.getNode,
            transitionNodeSql: SQL.transitionNode,
          })
        : new InlineCertificateWriter(
            () => this.openDb(),
            () => ({
              insert: this.statement(SQL.insertCertificate),
              getNode: this.statement(SQL.getNode),
              transitionNode: this.statement(SQL.transitionNode),
            }),
          );
  }

  static open(path: string, options: SqliteStoreOptions): SqliteStore {
    if (typeof path !== 'string' || path === '')
      throw invalid('SQLite store path must be a non-empty string');
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0)
      throw invalid('busyTimeoutMs must be a non-negative integer');
    let db: DatabaseSync | undefined;
    try {
      restrictFile(path);
      db = new DatabaseSync(path);
      db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
      const mode = db.prepare('PRAGMA journal_mode = WAL').get() as Row | undefined;
      if (String(mode?.journal_mode).toLowerCase() !== 'wal')
        throw new Error(`could not switch to WAL mode (journal_mode is ${String(mode?.journal_mode)})`);
      db.exec('PRAGMA synchronous = FULL');
      db.exec('PRAGMA foreign_keys = ON');
      for (const companion of ['-wal', '-shm'])
        if (existsSync(path + companion)) chmodSync(path + companion, 0o600);
    } catch (error) {
      db?.close();
      if (error instanceof SigilError) throw error;
      throw new SigilError('failed_precondition', `cannot open SQLite store ${path}: ${messageOf(error)}`, {
        cause: error,
      });
    }
    return new SqliteStore(db, path, options.onError ?? warn, writerOf(options), busyTimeoutMs);
  }

  async migrate(): Promise<void> {
    this.transaction(() => {
      this.db.exec(SCHEMA_MIGRATIONS_TABLE);
      const applied = this.db
        .prepare('SELECT version FROM schema_migrations')
        .all()
        .map((row) => Number(row.version));
      const record = this.db.prepare(
        'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',
      );
      for (const migration of planMigrations(applied)) {
        for (const statement of statementsFor(migration, 'sqlite')) this.db.exec(statement);
        record.run(migration.version, migration.name, Date.now());
      }
    });
    // DDL may have changed what cached statements refer to; SQLite re-prepares them, but start clean.
    this.statements.clear();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // The inline writer commits its pending rows before close() first yields;
    // inserts from then on are refused while the writer thread drains.
    const drained = this.certificates.close();
    this.closed = true;
    await drained;
    this.statements.clear();
    this.db.close();
  }

  async getSetting(key: string): Promise<string | null> {
    const row = this.get(SQL.getSetting, [key]);
    return row === undefined ? null : String(row.value);
  }

  async initSetting(key: string, value: string): Promise<string> {
    if (typeof key !== 'string' || key === '') throw invalid('setting key must be a non-empty string');
    if (typeof value !== 'string') throw invalid(`setting ${key} must be a string`);
    this.run(SQL.initSetting, [key, value]);
    return String(this.get(SQL.getSetting, [key])?.value);
  }

  async putCa(record: CaRecord): Promise<void> {
    this.run(SQL.putCa, caParams(record));
    this.publish({ kind: 'ca', caId: record.id });
  }

  async retireCa(id: string, at: Date): Promise<void> {
    const changes = this.run(SQL.retireCa, [millis(at, 'retiredAt'), id]);
    if (changes === 1) this.publish({ kind: 'ca', caId: id });
    else if (this.get(SQL.caExists, [id]) === undefined) throw notFound(`no CA with id ${id}`);
  }

  async listCas(): Promise<readonly CaRecord[]> {
    return this.all(SQL.listCas, []).map(caFromRow);
  }

  /**
   * Group commit: every insert that arrives while the previous commit is
   * under way (inline: in one turn of the event loop) is written in one
   * transaction, so concurrent Sign calls share one fsync instead of paying
   * one each (with synchronous=FULL the fsync is the whole cost). Each
   * promise still resolves only after its row is committed, and a bad row (a
   * duplicate serial) fails alone.
   */
  async insertCertificate(record: CertificateRecord): Promise<void> {
    await this.writeCertificate(record);
  }

  /**
   * The certificate row and the node's transition in the same group commit
   * (sqlite-writer-batch.ts): a renewal's two writes share the batch's fsync
   * instead of one each, and the event loop does not wait for either.
   */
  async insertNodeCertificate(record: CertificateRecord, node: NodeStep): Promise<NodeRecord | null> {
    for (const state of node.from) checkNodeState(state, 'from state');
    checkNodeState(node.to, 'target state');
    const step = {
      id: node.id,
      from: node.from,
      to: node.to,
      at: millis(node.at, 'at'),
      certificateSerial: record.serial,
    };
    const change = await this.writeCertificate(record, step);
    if (change === null) return null;
    if (change.previous !== node.to) this.publish({ kind: 'node', nodeId: node.id, state: node.to });
    return nodeFromRow(change.row);
  }

  async getCertificate(serial: string): Promise<CertificateRecord | null> {
    const row = this.get(SQL.getCertificate, [serial]);
    return row === undefined ? null : certificateFromRow(row);
  }

  async listCertificates(filter: CertificateFilter): Promise<Page<CertificateRecord>> {
    const query = certificatePageQuery(filter, () => '?');
    return certificatePage(this.all(query.sql, query.params), query.pageSize);
  }

  async revokeCertificate(serial: string, reason: string, at: Date): Promise<boolean> {
    if (typeof reason !== 'string' || reason === '')
      throw invalid('revocation reason must be a non-empty string');
    const changes = this.run(SQL.revokeCertificate, [millis(at, 'revokedAt'), reason, serial]);
    if (changes === 0) return false;
    this.publish({ kind: 'revocation', serials: [serial] });
    return true;
  }

  async listRevoked(issuerId: string, now: Date): Promise<readonly CertificateRecord[]> {
    return this.all(SQL.listRevoked, [issuerId, millis(now, 'now')]).map(certificateFromRow);
  }

  async insertToken(record: TokenRecord): Promise<void> {
    this.insert(SQL.insertToken, tokenParams(record, true), `a token with id ${record.id}`);
  }

  async getToken(id: string): Promise<TokenRecord | null> {
    const row = this.get(SQL.getToken, [id]);
    return row === undefined ? null : tokenFromRow(row);
  }

  async listTokens(): Promise<readonly TokenRecord[]> {
    return this.all(SQL.listTokens, []).map(tokenFromRow);
  }

  async revokeToken(id: string, at: Date): Promise<boolean> {
    return this.run(SQL.revokeToken, [millis(at, 'revokedAt'), id]) === 1;
  }

  async registerNode(tokenId: string, node: NodeRecord, now: Date): Promise<NodeRegistrationOutcome> {
    if (node.tokenId !== tokenId)
      throw invalid('the node record names a different token than the one presented');
    const params = nodeParams(node);
    const nowMs = millis(now, 'now');
    const result = this.transaction((): NodeRegistrationOutcome => {
      const existing = this.get(SQL.getNode, [node.id]);
      if (existing !== undefined) return { outcome: 'existing', node: nodeFromRow(existing) };
      if (this.run(SQL.consumeToken, [tokenId, nowMs]) === 0) return { outcome: 'token-unusable' };
      this.run(SQL.insertNode, params);
      return { outcome: 'created', node: nodeFromRow(this.get(SQL.getNode, [node.id])!) };
    });
    if (result.outcome === 'created')
      this.publish({ kind: 'node', nodeId: node.id, state: result.node.state });
    return result;
  }

  async getNode(id: string): Promise<NodeRecord | null> {
    const row = this.get(SQL.getNode, [id]);
    return row === undefined ? null : nodeFromRow(row);
  }

  async listNodes(filter: { readonly state?: NodeState } = {}): Promise<readonly NodeRecord[]> {
    const rows =
      filter.state === undefined
        ? this.all(SQL.listNodes, [])
        : this.all(SQL.listNodesInState, [checkNodeState(filter.state, 'state filter')]);
    return rows.map(nodeFromRow);
  }

  async transitionNode(
    id: string,
    from: readonly NodeState[],
    to: NodeState,
    update: { readonly certificateSerial?: string; readonly at: Date },
  ): Promise<NodeRecord | null> {
    for (const state of from) checkNodeState(state, 'from state');
    checkNodeState(to, 'target state');
    const at = millis(update.at, 'at');
    const serial = update.certificateSerial ?? null;
    const change = this.transaction(() => {
      const current = this.get(SQL.getNode, [id]);
      if (current === undefined) return null;
      const previous = nodeFromRow(current).state;
      if (!from.includes(previous)) return null;
      const row = this.get(SQL.transitionNode, [to, at, serial, id])!;
      return { node: nodeFromRow(row), previous };
    });
    if (change === null) return null;
    if (change.previous !== to) this.publish({ kind: 'node', nodeId: id, state: to });
    return change.node;
  }

  async listNodesNamed(name: string): Promise<readonly NodeRecord[]> {
    return this.all(SQL.listNodesNamed, [text(name, 'node name')]).map(nodeFromRow);
  }

  async setNodeWorkloadAddress(id: string, address: string | null): Promise<boolean> {
    const value = address === null ? null : text(address, 'workload address');
    return this.run(SQL.setNodeWorkloadAddress, [value, id]) === 1;
  }

  async getNodeWorkloadAddress(id: string): Promise<string | null> {
    const row = this.get(SQL.getNodeWorkloadAddress, [id]);
    return row === undefined ? null : optionalStringOf(row.workload_address, 'node workloadAddress');
  }

  async recordDelegation(record: DelegationRecord): Promise<DelegationRecord> {
    this.run(SQL.recordDelegation, delegationParams(record, true));
    return delegationFromRow(this.get(SQL.getDelegation, [record.fingerprint])!);
  }

  async getDelegation(fingerprint: string): Promise<DelegationRecord | null> {
    const row = this.get(SQL.getDelegation, [fingerprint]);
    return row === undefined ? null : delegationFromRow(row);
  }

  async listDelegations(
    filter: { readonly under?: string; readonly at?: string } = {},
  ): Promise<readonly DelegationRecord[]> {
    if (filter.at !== undefined) {
      if (filter.under !== undefined) throw invalid('listDelegations: give under or at, not both');
      return this.all(SQL.listDelegationsAt, [checkSubtree(filter.at, 'at')]).map(delegationFromRow);
    }
    const rows =
      filter.under === undefined
        ? this.all(SQL.listDelegations, [])
        : this.all(SQL.listDelegationsUnder, subtreeBounds(filter.under));
    return rows.map(delegationFromRow);
  }

  async countDelegationsSince(under: string, since: Date): Promise<number> {
    const row = this.get(SQL.countDelegationsSince, [...subtreeBounds(under), millis(since, 'since')]);
    return Number(row?.n);
  }

  async revokeDelegation(fingerprint: string, reason: string, at: Date, by: string): Promise<boolean> {
    checkRevocation(reason, by);
    const changes = this.run(SQL.revokeDelegation, [millis(at, 'revokedAt'), reason, by, fingerprint]);
    if (changes === 0) return false;
    this.publish({ kind: 'revocation', serials: [`fp:${fingerprint}`] });
    return true;
  }

  async listRevokedDelegations(now: Date): Promise<readonly DelegationRecord[]> {
    return this.all(SQL.listRevokedDelegations, [millis(now, 'now')]).map(delegationFromRow);
  }

  async reserveUsage(
    reservation: UsageReservation,
    ceilings: readonly UsageCeiling[],
  ): Promise<ReserveResult> {
    const params = reservationParams(reservation);
    checkCeilings(reservation, ceilings);
    const key = [reservation.subtree, reservation.holder];
    return this.transaction((): ReserveResult => {
      const held = this.get(SQL.getReservation, key);
      if (held !== undefined) return { outcome: 'existing', reservation: reservationFromRow(held) };
      for (const ceiling of ceilings) {
        const sums = ceilingSumsFromRow(this.get(SQL.usageSums, subtreeBounds(ceiling.subtree))!);
        const exceeded = exceededResource(ceiling, sums, reservation);
        if (exceeded !== null) return { outcome: 'exceeded', subtree: ceiling.subtree, ...exceeded };
      }
      this.run(SQL.insertReservation, params);
      return { outcome: 'reserved', reservation: reservationFromRow(this.get(SQL.getReservation, key)!) };
    });
  }

  async releaseUsage(subtree: string, holder: string): Promise<boolean> {
    return this.run(SQL.releaseUsage, [checkSubtree(subtree, 'subtree'), holder]) === 1;
  }

  async releaseUsageUnder(under: string): Promise<number> {
    return this.run(SQL.releaseUsageUnder, subtreeBounds(under));
  }

  async revokeKey(record: RevokedKeyRecord): Promise<boolean> {
    return this.run(SQL.revokeKey, revokedKeyParams(record)) === 1;
  }

  async getRevokedKey(keyHash: string): Promise<RevokedKeyRecord | null> {
    const row = this.get(SQL.getRevokedKey, [keyHash]);
    return row === undefined ? null : revokedKeyFromRow(row);
  }

  async recordLineage(entry: LineageEntry): Promise<void> {
    this.run(SQL.recordLineage, lineageParams(entry));
  }

  async getLineage(serial: string): Promise<LineageEntry | null> {
    const row = this.get(SQL.getLineage, [serial]);
    return row === undefined ? null : lineageFromRow(row);
  }

  async listLineage(lineage: string, since: Date): Promise<readonly LineageEntry[]> {
    return this.all(SQL.listLineage, [lineage, millis(since, 'since')]).map(lineageFromRow);
  }

  async usageUnder(under: string): Promise<UsageTotals> {
    const bounds = subtreeBounds(under);
    return usageTotalsFromRow(this.get(SQL.usageUnder, [...bounds, ...bounds])!);
  }

  async listReservations(under: string): Promise<readonly UsageReservation[]> {
    return this.all(SQL.listReservations, subtreeBounds(under)).map(reservationFromRow);
  }

  async listReservationsHeldBy(prefix: string): Promise<readonly UsageReservation[]> {
    return this.all(SQL.listReservationsHeldBy, prefixBounds(prefix, 'holder prefix')).map(
      reservationFromRow,
    );
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    return this.listeners.subscribe(listener);
  }

  // --- plumbing -----------------------------------------------------------

  /** Hands the row (and a node's step) to the group commit; resolves once it is committed. */
  private async writeCertificate(
    record: CertificateRecord,
    node?: BatchNodeStep,
  ): Promise<NodeChange | null> {
    if (this.closed) throw this.closedError();
    const row = toSqlite(certificateParams(record));
    try {
      return await this.certificates.write(node ? { row, node } : { row });
    } catch (error) {
      if (isUniqueViolation(error))
        throw alreadyExists(`a certificate with serial ${record.serial} already exists`);
      throw error;
    }
  }

  private publish(event: StoreEvent): void {
    this.listeners.emit(Object.freeze(event));
  }

  private statement(sql: string): StatementSync {
    if (this.closed) throw new SigilError('failed_precondition', `the SQLite store ${this.path} is closed`);
    let statement = this.statements.get(sql);
    if (statement === undefined) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  private get(sql: string, params: readonly Param[]): Row | undefined {
    return this.statement(sql).get(...toSqlite(params)) as Row | undefined;
  }

  private all(sql: string, params: readonly Param[]): Row[] {
    return this.statement(sql).all(...toSqlite(params)) as Row[];
  }

  private run(sql: string, params: readonly Param[]): number {
    return Number(this.statement(sql).run(...toSqlite(params)).changes);
  }

  private insert(sql: string, params: readonly Param[], what: string): void {
    try {
      this.run(sql, params);
    } catch (error) {
      if (isUniqueViolation(error)) throw alreadyExists(`${what} already exists`);
      throw error;
    }
  }

  private openDb(): DatabaseSync {
    if (this.closed) throw this.closedError();
    return this.db;
  }

  private closedError(): SigilError {
    return new SigilError('failed_precondition', `the SQLite store ${this.path} is closed`);
  }

  /** BEGIN IMMEDIATE: the write lock is taken before the first read, so read-then-write is atomic. */
  private transaction<T>(body: () => T): T {
    if (this.closed) throw this.closedError();
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = body();
      this.db.exec('COMMIT');
      return result;
    } catch (error) {
      try {
        this.db.exec('ROLLBACK');
      } catch {
        // SQLite already rolled back (e.g. after SQLITE_FULL); the original error is what matters.
      }
      throw error;
    }
  }
}

function writerOf(options: SqliteStoreOptions): 'inline' | 'thread' {
  const fromEnvironment = options.certificateWriter === undefined;
  const chosen = options.certificateWriter ?? process.env.SIGIL_SQLITE_WRITER ?? 'thread';
  if (chosen !== 'inline' && chosen !== 'thread') {
    const what = fromEnvironment ? 'SIGIL_SQLITE_WRITER' : 'the SQLite certificate writer';
    throw invalid(`${what} must be 'inline' or 'thread', got ${JSON.stringify(chosen)}`);
  }
  return chosen;
}

function toSqlite(params: readonly Param[]): (string | number | Buffer | null)[] {
  return params.map((p) => (typeof p === 'boolean' ? (p ? 1 : 0) : p));
}

/** Create the file 0600 if absent and tighten it if it exists, before SQLite opens it. */
function restrictFile(path: string): void {
  closeSync(openSync(path, 'a', 0o600));
  chmodSync(path, 0o600);
}

// SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE (extended result codes).
const UNIQUE_CODES = new Set([1555, 2067]);

function isUniqueViolation(error: unknown): boolean {
  return (
    typeof error === 'object' &&
    error !== null &&
    UNIQUE_CODES.has((error as { errcode?: number }).errcode ?? -1)
  );
}
