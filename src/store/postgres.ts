// The replicated store: PostgreSQL through `pg`. Several sigil replicas share
// one database; everything that must hold across them is enforced by
// PostgreSQL, not by the process:
//
// - Durability: a promise resolves after COMMIT.
// - Atomicity under concurrency: registerNode consumes a token with a
//   conditional UPDATE (uses_left > 0, unexpired, unrevoked) in the same
//   READ COMMITTED transaction as the node INSERT. Concurrent consumers queue
//   on the token's row lock and re-check the condition after the holder
//   commits, so a single-use token admits exactly one node; a concurrent
//   registration of the same key ends in ON CONFLICT and is answered with the
//   winner's record, its own token use rolled back.
// - reserveUsage takes a transaction-scoped advisory lock on every subtree key
//   whose totals it checks (each ceiling's, and its own), always in the same
//   order, before reading the totals. Every reservation that checks a ceiling
//   holds that ceiling's lock until it commits, so siblings under one limited
//   parent queue on the parent's lock and each sees the others' rows.
// - Events: each change publishes its event with pg_notify in the same
//   transaction, so it is delivered (on commit, in commit order) to every
//   replica LISTENing on `sigil_events`, and never for a change that did not
//   commit. This store object hears its own events through the same LISTEN
//   connection and delivers nothing locally on the side, so each subscriber
//   sees each event exactly once.
// - The LISTEN connection is dedicated (not from the pool), checked with a
//   heartbeat, and reconnected with backoff when it drops. Notifications
//   sent while it is down are lost: that gap is reported through onError and
//   onEventGap so the owner can re-read whatever it derives from events.
//
// The connection URL's password never appears in an error or a warning.

import { createHash } from 'node:crypto';
import type { PoolClient, QueryResultRow } from 'pg';
import pg from 'pg';
import { alreadyExists, invalid, messageOf, notFound, SigilError } from '../errors.ts';
import { certificatePage, certificatePageQuery } from './certificate-pages.ts';
import { checkNodeState, checkRevocation, millis, text } from './checks.ts';
import { decodeEvent, encodeEvent, Listeners, warn } from './events.ts';
import {
  POSTGRES_MIGRATION_LOCK_KEY,
  planMigrations,
  SCHEMA_MIGRATIONS_TABLE,
  statementsFor,
} from './migrations.ts';
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

/** The LISTEN/NOTIFY channel every replica shares. */
export const EVENT_CHANNEL = 'sigil_events';

export interface PostgresStoreOptions {
  /** Pool size. Default 10. */
  readonly maxConnections?: number;
  /** How long to wait for a connection (ms). Default 10000. */
  readonly connectTimeoutMs?: number;
  /** Backoff between attempts to re-establish LISTEN (ms). Default 100 doubling to 5000. */
  readonly reconnectDelayMs?: { readonly min: number; readonly max: number };
  /** How often the LISTEN connection is checked (ms). Default 15000. */
  readonly heartbeatMs?: number;
  /** Lost and regained event connections, idle-connection errors, failing listeners. Default: a process warning. */
  readonly onError?: (error: Error) => void;
  /** Called once LISTEN is back after a drop: events between `from` and `to` were not delivered. */
  readonly onEventGap?: (gap: { readonly from: Date; readonly to: Date }) => void;
}

/** Connect to the PostgreSQL store at `url` (postgres:// or postgresql://). Call migrate() before use. */
export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<Store> {
  return PostgresStore.open(url, options);
}

/** The URL with its password (in the user info or a `password=` parameter) replaced by ***. */
export function redactConnectionString(url: string): string {
  const scheme = url.indexOf('://');
  let redacted = url;
  if (scheme >= 0) {
    const rest = url.slice(scheme + 3);
    const query = rest.indexOf('?');
    const head = query >= 0 ? rest.slice(0, query) : rest;
    const at = head.lastIndexOf('@');
    const colon = head.indexOf(':');
    if (at >= 0 && colon >= 0 && colon < at)
      redacted = `${url.slice(0, scheme + 3)}${head.slice(0, colon)}:***${rest.slice(at)}`;
  }
  return redacted.replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/** Every spelling of the URL's password, to scrub from driver messages. */
function secretsOf(url: string): string[] {
  const secrets: string[] = [];
  try {
    const parsed = new URL(url);
    if (parsed.password) secrets.push(parsed.password, decodeURIComponent(parsed.password));
    const param = parsed.searchParams.get('password');
    if (param) secrets.push(param);
  } catch {
    // Not parseable: redactConnectionString still covers the usual shapes.
  }
  return secrets.filter((s) => s.length > 0);
}

const insertSql = (table: string, columns: readonly string[]): string =>
  `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})`;

const notify = (placeholder: string): string => `pg_notify('${EVENT_CHANNEL}', ${placeholder})`;

/** At or under the subtree key of subtreeBounds, bound to $1, $2, $3. */
const under = (column: string): string => subtreeCondition(column, ['$1', '$2', '$3']);

/**
 * First key of the two-key pg_advisory_xact_lock(int, int) that reserveUsage
 * takes per subtree key (the second is usageLockKey). The two-key space does not
 * overlap the one-key space of POSTGRES_MIGRATION_LOCK_KEY.
 */
const USAGE_LOCK_CLASS = 0x5349_4755; // 'SIGU'

/** A stable int4 for a subtree key; equal keys share a lock, a rare collision only serialises more. */
function usageLockKey(subtree: string): number {
  return createHash('sha256').update(subtree).digest().readInt32BE(0);
}

const SQL = {
  getSetting: 'SELECT value FROM settings WHERE key = $1',
  initSetting: 'INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING',
  putCa: `WITH put AS (${insertSql('cas', CA_COLUMNS)} ON CONFLICT (id) DO UPDATE SET ${CA_COLUMNS.slice(1)
    .map((c) => `${c} = excluded.${c}`)
    .join(', ')} RETURNING id)
    SELECT ${notify(`$${CA_COLUMNS.length + 1}`)} FROM put`,
  retireCa: `WITH retired AS (UPDATE cas SET retired_at = $2 WHERE id = $1 AND retired_at IS NULL RETURNING id)
    SELECT ${notify('$3')} FROM retired`,
  caExists: 'SELECT 1 AS found FROM cas WHERE id = $1',
  listCas: `SELECT ${CA_COLUMNS.join(', ')} FROM cas ORDER BY created_at, id`,
  insertCertificate: insertSql('certificates', CERTIFICATE_COLUMNS),
  getCertificate: `SELECT ${CERTIFICATE_COLUMNS.join(', ')} FROM certificates WHERE serial = $1`,
  revokeCertificate: `WITH revoked AS (
      UPDATE certificates SET revoked_at = $2, revocation_reason = $3
      WHERE serial = $1 AND revoked_at IS NULL RETURNING serial)
    SELECT ${notify('$4')} FROM revoked`,
  listRevoked: `SELECT ${CERTIFICATE_COLUMNS.join(', ')} FROM certificates
    WHERE issuer_id = $1 AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY revoked_at, serial`,
  insertToken: insertSql('tokens', TOKEN_COLUMNS),
  getToken: `SELECT ${TOKEN_COLUMNS.join(', ')} FROM tokens WHERE id = $1`,
  listTokens: `SELECT ${TOKEN_COLUMNS.join(', ')} FROM tokens ORDER BY created_at, id`,
  revokeToken: 'UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL',
  consumeToken: `UPDATE tokens SET uses_left = uses_left - 1
    WHERE id = $1 AND uses_left > 0 AND expires_at > $2 AND revoked_at IS NULL RETURNING id`,
  insertNode: `${insertSql('nodes', NODE_COLUMNS)} ON CONFLICT (id) DO NOTHING RETURNING ${NODE_COLUMNS.join(', ')}`,
  getNode: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE id = $1`,
  lockNode: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE id = $1 FOR UPDATE`,
  listNodes: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes ORDER BY created_at, id`,
  listNodesInState: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE state = $1 ORDER BY created_at, id`,
  transitionNode: `UPDATE nodes SET state = $2, updated_at = $3, certificate_serial = coalesce($4, certificate_serial)
    WHERE id = $1 RETURNING ${NODE_COLUMNS.join(', ')}`,
  listNodesNamed: `SELECT ${NODE_COLUMNS.join(', ')} FROM nodes WHERE name = $1 ORDER BY created_at, id`,
  setNodeWorkloadAddress: 'UPDATE nodes SET workload_address = $2 WHERE id = $1 RETURNING id',
  getNodeWorkloadAddress: 'SELECT workload_address FROM nodes WHERE id = $1',
  publish: `SELECT ${notify('$1')}`,
  recordDelegation: `${insertSql('delegations', DELEGATION_COLUMNS)} ON CONFLICT (fingerprint) DO NOTHING`,
  getDelegation: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations WHERE fingerprint = $1`,
  listDelegations: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    ORDER BY subtree, recorded_at, fingerprint`,
  listDelegationsUnder: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    WHERE ${under('subtree')} ORDER BY subtree, recorded_at, fingerprint`,
  listDelegationsAt: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    WHERE subtree = $1 ORDER BY recorded_at, fingerprint`,
  countDelegationsSince: `SELECT count(*) AS n FROM delegations WHERE ${under('subtree')} AND recorded_at >= $4`,
  revokeDelegation: `WITH revoked AS (
      UPDATE delegations SET revoked_at = $2, revocation_reason = $3, revoked_by = $4
      WHERE fingerprint = $1 AND revoked_at IS NULL RETURNING fingerprint)
    SELECT ${notify('$5')} FROM revoked`,
  listRevokedDelegations: `SELECT ${DELEGATION_COLUMNS.join(', ')} FROM delegations
    WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY revoked_at, fingerprint`,
  lockUsage: `SELECT pg_advisory_xact_lock(${USAGE_LOCK_CLASS}, $1::integer)`,
  getReservation: `SELECT ${RESERVATION_COLUMNS.join(', ')} FROM usage_reservations
    WHERE subtree = $1 AND holder = $2`,
  insertReservation: `${insertSql('usage_reservations', RESERVATION_COLUMNS)}
    ON CONFLICT (subtree, holder) DO NOTHING RETURNING ${RESERVATION_COLUMNS.join(', ')}`,
  releaseUsage: 'DELETE FROM usage_reservations WHERE subtree = $1 AND holder = $2',
  releaseUsageUnder: `DELETE FROM usage_reservations WHERE ${under('subtree')} RETURNING holder`,
  revokeKey: `${insertSql('revoked_keys', REVOKED_KEY_COLUMNS)} ON CONFLICT (key_hash) DO NOTHING RETURNING key_hash`,
  getRevokedKey: `SELECT ${REVOKED_KEY_COLUMNS.join(', ')} FROM revoked_keys WHERE key_hash = $1`,
  recordLineage: `${insertSql('certificate_lineage', LINEAGE_COLUMNS)} ON CONFLICT (serial) DO NOTHING`,
  getLineage: `SELECT ${LINEAGE_COLUMNS.join(', ')} FROM certificate_lineage WHERE serial = $1`,
  listLineage: `SELECT ${LINEAGE_COLUMNS.join(', ')} FROM certificate_lineage
    WHERE lineage = $1 AND issued_at >= $2 ORDER BY issued_at, serial`,
  usageSums: `SELECT ${USAGE_SUMS} FROM usage_reservations WHERE ${under('subtree')}`,
  // One statement, so the sums and the CPU ids come from one snapshot.
  usageUnder: `SELECT ${USAGE_SUMS}, (
      SELECT json_agg(DISTINCT cpu.value::bigint)::text
      FROM usage_reservations AS r CROSS JOIN LATERAL jsonb_array_elements_text(r.cpus::jsonb) AS cpu (value)
      WHERE ${under('r.subtree')}
    ) AS cpus
    FROM usage_reservations WHERE ${under('subtree')}`,
  listReservations: `SELECT ${RESERVATION_COLUMNS.join(', ')} FROM usage_reservations
    WHERE ${under('subtree')} ORDER BY subtree, holder`,
  listReservationsHeldBy: `SELECT ${RESERVATION_COLUMNS.join(', ')} FROM usage_reservations
    WHERE holder >= $1 AND holder < $2 ORDER BY subtree, holder`,
} as const;

type SqlName = keyof typeof SQL;

/** A registration that lost the race to insert the same node id; its transaction is rolled back. */
class NodeExists extends Error {}

class PostgresStore implements Store {
  private readonly pool: pg.Pool;
  private readonly events: EventStream;
  private readonly listeners: Listeners;
  private readonly redact: (message: string) => string;
  private closed = false;

  private constructor(
    pool: pg.Pool,
    events: EventStream,
    listeners: Listeners,
    redact: (m: string) => string,
  ) {
    this.pool = pool;
    this.events = events;
    this.listeners = listeners;
    this.redact = redact;
  }

  static async open(url: string, options: PostgresStoreOptions): Promise<PostgresStore> {
    if (typeof url !== 'string' || !/^postgres(ql)?:\/\//i.test(url))
      throw invalid(`not a PostgreSQL URL: ${redactConnectionString(String(url))}`);
    const shown = redactConnectionString(url);
    const secrets = secretsOf(url);
    const redact = (message: string): string =>
      secrets.reduce((m, secret) => m.split(secret).join('***'), message);
    const onError = options.onError ?? warn;
    const report = (error: Error): void =>
      onError(new SigilError('internal', redact(error.message), { cause: error }));
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const config = { connectionString: url, connectionTimeoutMillis: connectTimeoutMs, keepAlive: true };

    const pool = new pg.Pool({ ...config, max: options.maxConnections ?? 10, application_name: 'sigil' });
    pool.on('error', (error) => report(new Error(`idle PostgreSQL connection failed: ${error.message}`)));
    const listeners = new Listeners(onError);
    const events = new EventStream({
      config: { ...config, application_name: 'sigil-events' },
      listeners,
      report,
      onEventGap: options.onEventGap,
      reconnectDelayMs: options.reconnectDelayMs ?? { min: 100, max: 5000 },
      heartbeatMs: options.heartbeatMs ?? 15_000,
    });
    try {
      await pool.query('SELECT 1');
      await events.start();
    } catch (error) {
      await events.stop();
      await pool.end().catch(() => {});
      throw new SigilError(
        'failed_precondition',
        `cannot connect to PostgreSQL at ${shown}: ${redact(messageOf(error))}`,
      );
    }
    return new PostgresStore(pool, events, listeners, redact);
  }

  async migrate(): Promise<void> {
    await this.transaction(async (client) => {
      // Serialises replicas that start at once; released at COMMIT/ROLLBACK.
      await client.query(`SELECT pg_advisory_xact_lock(${POSTGRES_MIGRATION_LOCK_KEY})`);
      await client.query(SCHEMA_MIGRATIONS_TABLE);
      const applied = await client.query('SELECT version FROM schema_migrations');
      for (const migration of planMigrations(applied.rows.map((row) => Number(row.version)))) {
        for (const statement of statementsFor(migration, 'postgres')) await client.query(statement);
        await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
          migration.version,
          migration.name,
          Date.now(),
        ]);
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.events.stop();
    await this.pool.end();
  }

  async getSetting(key: string): Promise<string | null> {
    const rows = await this.query('getSetting', [key]);
    return rows.length === 0 ? null : String(rows[0].value);
  }

  async initSetting(key: string, value: string): Promise<string> {
    if (typeof key !== 'string' || key === '') throw invalid('setting key must be a non-empty string');
    if (typeof value !== 'string') throw invalid(`setting ${key} must be a string`);
    await this.query('initSetting', [key, value]);
    // A concurrent first writer's INSERT made ours wait and then conflict; this read sees its value.
    const rows = await this.query('getSetting', [key]);
    return String(rows[0].value);
  }

  async putCa(record: CaRecord): Promise<void> {
    await this.query('putCa', [...caParams(record), encodeEvent({ kind: 'ca', caId: record.id })]);
  }

  async retireCa(id: string, at: Date): Promise<void> {
    const rows = await this.query('retireCa', [
      id,
      millis(at, 'retiredAt'),
      encodeEvent({ kind: 'ca', caId: id }),
    ]);
    if (rows.length === 0 && (await this.query('caExists', [id])).length === 0)
      throw notFound(`no CA with id ${id}`);
  }

  async listCas(): Promise<readonly CaRecord[]> {
    return (await this.query('listCas', [])).map(caFromRow);
  }

  async insertCertificate(record: CertificateRecord): Promise<void> {
    await this.insert(
      'insertCertificate',
      certificateParams(record),
      `a certificate with serial ${record.serial}`,
    );
  }

  async getCertificate(serial: string): Promise<CertificateRecord | null> {
    const rows = await this.query('getCertificate', [serial]);
    return rows.length === 0 ? null : certificateFromRow(rows[0]);
  }

  async listCertificates(filter: CertificateFilter): Promise<Page<CertificateRecord>> {
    const query = certificatePageQuery(filter, (n) => `$${n}`);
    const result = await this.run((client) => client.query(query.sql, query.params));
    return certificatePage(result.rows, query.pageSize);
  }

  async revokeCertificate(serial: string, reason: string, at: Date): Promise<boolean> {
    if (typeof reason !== 'string' || reason === '')
      throw invalid('revocation reason must be a non-empty string');
    const event = encodeEvent({ kind: 'revocation', serials: [serial] });
    const rows = await this.query('revokeCertificate', [serial, millis(at, 'revokedAt'), reason, event]);
    return rows.length === 1;
  }

  async listRevoked(issuerId: string, now: Date): Promise<readonly CertificateRecord[]> {
    return (await this.query('listRevoked', [issuerId, millis(now, 'now')])).map(certificateFromRow);
  }

  async insertToken(record: TokenRecord): Promise<void> {
    await this.insert('insertToken', tokenParams(record, false), `a token with id ${record.id}`);
  }

  async getToken(id: string): Promise<TokenRecord | null> {
    const rows = await this.query('getToken', [id]);
    return rows.length === 0 ? null : tokenFromRow(rows[0]);
  }

  async listTokens(): Promise<readonly TokenRecord[]> {
    return (await this.query('listTokens', [])).map(tokenFromRow);
  }

  async revokeToken(id: string, at: Date): Promise<boolean> {
    const result = await this.run((client) =>
      client.query({
        name: 'sigil_revokeToken',
        text: SQL.revokeToken,
        values: [id, millis(at, 'revokedAt')],
      }),
    );
    return result.rowCount === 1;
  }

  async registerNode(tokenId: string, node: NodeRecord, now: Date): Promise<NodeRegistrationOutcome> {
    if (node.tokenId !== tokenId)
      throw invalid('the node record names a different token than the one presented');
    const params = nodeParams(node);
    const nowMs = millis(now, 'now');
    try {
      return await this.transaction(async (client): Promise<NodeRegistrationOutcome> => {
        const existing = await this.query('getNode', [node.id], client);
        if (existing.length > 0) return { outcome: 'existing', node: nodeFromRow(existing[0]) };
        // Waits for any transaction holding the token row, then re-checks the condition on the newest version.
        if ((await this.query('consumeToken', [tokenId, nowMs], client)).length === 0) {
          // A concurrent registration of this same key may have used the last use while we waited.
          const winner = await this.query('getNode', [node.id], client);
          if (winner.length > 0) return { outcome: 'existing', node: nodeFromRow(winner[0]) };
          return { outcome: 'token-unusable' };
        }
        const inserted = await this.query('insertNode', params, client);
        if (inserted.length === 0) throw new NodeExists();
        const created = nodeFromRow(inserted[0]);
        await this.query(
          'publish',
          [encodeEvent({ kind: 'node', nodeId: created.id, state: created.state })],
          client,
        );
        return { outcome: 'created', node: created };
      });
    } catch (error) {
      if (!(error instanceof NodeExists)) throw error;
      // Another transaction inserted this id and committed first; ours (and its token use) rolled back.
      const rows = await this.query('getNode', [node.id]);
      if (rows.length === 0)
        throw new SigilError('internal', `node ${node.id} conflicted but cannot be read`);
      return { outcome: 'existing', node: nodeFromRow(rows[0]) };
    }
  }

  async getNode(id: string): Promise<NodeRecord | null> {
    const rows = await this.query('getNode', [id]);
    return rows.length === 0 ? null : nodeFromRow(rows[0]);
  }

  async listNodes(filter: { readonly state?: NodeState } = {}): Promise<readonly NodeRecord[]> {
    const rows =
      filter.state === undefined
        ? await this.query('listNodes', [])
        : await this.query('listNodesInState', [checkNodeState(filter.state, 'state filter')]);
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
    return this.transaction(async (client) => {
      const current = await this.query('lockNode', [id], client);
      if (current.length === 0) return null;
      const previous = nodeFromRow(current[0]).state;
      if (!from.includes(previous)) return null;
      const rows = await this.query('transitionNode', [id, to, at, serial], client);
      if (previous !== to)
        await this.query('publish', [encodeEvent({ kind: 'node', nodeId: id, state: to })], client);
      return nodeFromRow(rows[0]);
    });
  }

  async insertNodeCertificate(record: CertificateRecord, node: NodeStep): Promise<NodeRecord | null> {
    for (const state of node.from) checkNodeState(state, 'from state');
    checkNodeState(node.to, 'target state');
    const at = millis(node.at, 'at');
    const params = certificateParams(record);
    return this.transaction(async (client) => {
      try {
        await this.query('insertCertificate', params, client);
      } catch (error) {
        if (isUniqueViolation(error))
          throw alreadyExists(`a certificate with serial ${record.serial} already exists`);
        throw error;
      }
      const current = await this.query('lockNode', [node.id], client);
      if (current.length === 0) return null;
      const previous = nodeFromRow(current[0]).state;
      if (!node.from.includes(previous)) return null;
      const rows = await this.query('transitionNode', [node.id, node.to, at, record.serial], client);
      if (previous !== node.to)
        await this.query('publish', [encodeEvent({ kind: 'node', nodeId: node.id, state: node.to })], client);
      return nodeFromRow(rows[0]);
    });
  }

  async listNodesNamed(name: string): Promise<readonly NodeRecord[]> {
    return (await this.query('listNodesNamed', [text(name, 'node name')])).map(nodeFromRow);
  }

  async setNodeWorkloadAddress(id: string, address: string | null): Promise<boolean> {
    const value = address === null ? null : text(address, 'workload address');
    return (await this.query('setNodeWorkloadAddress', [id, value])).length === 1;
  }

  async getNodeWorkloadAddress(id: string): Promise<string | null> {
    const rows = await this.query('getNodeWorkloadAddress', [id]);
    return rows.length === 0 ? null : optionalStringOf(rows[0].workload_address, 'node workloadAddress');
  }

  async recordDelegation(record: DelegationRecord): Promise<DelegationRecord> {
    await this.query('recordDelegation', delegationParams(record, false));
    // A concurrent first writer's INSERT made ours wait and then conflict; this read sees its record.
    const rows = await this.query('getDelegation', [record.fingerprint]);
    return delegationFromRow(rows[0]);
  }

  async getDelegation(fingerprint: string): Promise<DelegationRecord | null> {
    const rows = await this.query('getDelegation', [fingerprint]);
    return rows.length === 0 ? null : delegationFromRow(rows[0]);
  }

  async listDelegations(
    filter: { readonly under?: string; readonly at?: string } = {},
  ): Promise<readonly DelegationRecord[]> {
    if (filter.at !== undefined) {
      if (filter.under !== undefined) throw invalid('listDelegations: give under or at, not both');
      return (await this.query('listDelegationsAt', [checkSubtree(filter.at, 'at')])).map(delegationFromRow);
    }
    const rows =
      filter.under === undefined
        ? await this.query('listDelegations', [])
        : await this.query('listDelegationsUnder', subtreeBounds(filter.under));
    return rows.map(delegationFromRow);
  }

  async countDelegationsSince(under: string, since: Date): Promise<number> {
    const rows = await this.query('countDelegationsSince', [...subtreeBounds(under), millis(since, 'since')]);
    return Number(rows[0].n);
  }

  async revokeDelegation(fingerprint: string, reason: string, at: Date, by: string): Promise<boolean> {
    checkRevocation(reason, by);
    const event = encodeEvent({ kind: 'revocation', serials: [`fp:${fingerprint}`] });
    const rows = await this.query('revokeDelegation', [
      fingerprint,
      millis(at, 'revokedAt'),
      reason,
      by,
      event,
    ]);
    return rows.length === 1;
  }

  async listRevokedDelegations(now: Date): Promise<readonly DelegationRecord[]> {
    return (await this.query('listRevokedDelegations', [millis(now, 'now')])).map(delegationFromRow);
  }

  async reserveUsage(
    reservation: UsageReservation,
    ceilings: readonly UsageCeiling[],
  ): Promise<ReserveResult> {
    const params = reservationParams(reservation);
    checkCeilings(reservation, ceilings);
    const key = [reservation.subtree, reservation.holder];
    // Ascending, so two reservations sharing locks take them in the same order and cannot deadlock.
    const locks = [
      ...new Set([reservation.subtree, ...ceilings.map((c) => c.subtree)].map(usageLockKey)),
    ].sort((a, b) => a - b);
    return this.transaction(async (client): Promise<ReserveResult> => {
      for (const lock of locks) await this.query('lockUsage', [lock], client);
      const held = await this.query('getReservation', key, client);
      if (held.length > 0) return { outcome: 'existing', reservation: reservationFromRow(held[0]) };
      for (const ceiling of ceilings) {
        const [sums] = await this.query('usageSums', subtreeBounds(ceiling.subtree), client);
        const exceeded = exceededResource(ceiling, ceilingSumsFromRow(sums), reservation);
        if (exceeded !== null) return { outcome: 'exceeded', subtree: ceiling.subtree, ...exceeded };
      }
      const inserted = await this.query('insertReservation', params, client);
      if (inserted.length === 1) return { outcome: 'reserved', reservation: reservationFromRow(inserted[0]) };
      // Only a writer that bypassed the lock on this subtree key could have inserted it meanwhile.
      const winner = await this.query('getReservation', key, client);
      return { outcome: 'existing', reservation: reservationFromRow(winner[0]) };
    });
  }

  async releaseUsage(subtree: string, holder: string): Promise<boolean> {
    const result = await this.run((client) =>
      client.query({
        name: 'sigil_releaseUsage',
        text: SQL.releaseUsage,
        values: [checkSubtree(subtree, 'subtree'), holder],
      }),
    );
    return result.rowCount === 1;
  }

  async releaseUsageUnder(under: string): Promise<number> {
    return (await this.query('releaseUsageUnder', subtreeBounds(under))).length;
  }

  async revokeKey(record: RevokedKeyRecord): Promise<boolean> {
    return (await this.query('revokeKey', revokedKeyParams(record))).length === 1;
  }

  async getRevokedKey(keyHash: string): Promise<RevokedKeyRecord | null> {
    const rows = await this.query('getRevokedKey', [keyHash]);
    return rows.length === 0 ? null : revokedKeyFromRow(rows[0]);
  }

  async recordLineage(entry: LineageEntry): Promise<void> {
    await this.query('recordLineage', lineageParams(entry));
  }

  async getLineage(serial: string): Promise<LineageEntry | null> {
    const rows = await this.query('getLineage', [serial]);
    return rows.length === 0 ? null : lineageFromRow(rows[0]);
  }

  async listLineage(lineage: string, since: Date): Promise<readonly LineageEntry[]> {
    return (await this.query('listLineage', [lineage, millis(since, 'since')])).map(lineageFromRow);
  }

  async usageUnder(under: string): Promise<UsageTotals> {
    const [row] = await this.query('usageUnder', subtreeBounds(under));
    return usageTotalsFromRow(row);
  }

  async listReservations(under: string): Promise<readonly UsageReservation[]> {
    return (await this.query('listReservations', subtreeBounds(under))).map(reservationFromRow);
  }

  async listReservationsHeldBy(prefix: string): Promise<readonly UsageReservation[]> {
    const bounds = prefixBounds(prefix, 'holder prefix');
    return (await this.query('listReservationsHeldBy', bounds)).map(reservationFromRow);
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    return this.listeners.subscribe(listener);
  }

  // --- plumbing -------------------------------------------------------------

  private checkOpen(): void {
    if (this.closed) throw new SigilError('failed_precondition', 'the PostgreSQL store is closed');
  }

  /** A named (per-connection prepared) statement, on `client` or a pooled connection. */
  private async query(name: SqlName, values: readonly Param[], client?: PoolClient): Promise<Row[]> {
    const config = { name: `sigil_${name}`, text: SQL[name], values: [...values] };
    const result = client ? await client.query(config) : await this.run((c) => c.query(config));
    return result.rows;
  }

  private async run<R extends QueryResultRow>(body: (client: pg.Pool) => Promise<pg.QueryResult<R>>) {
    this.checkOpen();
    try {
      return await body(this.pool);
    } catch (error) {
      throw this.scrub(error);
    }
  }

  private async insert(name: SqlName, values: readonly Param[], what: string): Promise<void> {
    try {
      await this.query(name, values);
    } catch (error) {
      if (isUniqueViolation(error)) throw alreadyExists(`${what} already exists`);
      throw error;
    }
  }

  private async transaction<T>(body: (client: PoolClient) => Promise<T>): Promise<T> {
    this.checkOpen();
    const client = await this.pool.connect().catch((error: unknown) => {
      throw this.scrub(error);
    });
    let broken: Error | undefined;
    // A checked-out client that loses its connection between queries emits 'error'; unheard, that would crash.
    const onConnectionError = (error: Error): void => {
      broken = error;
    };
    client.on('error', onConnectionError);
    try {
      await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
      try {
        const result = await body(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => {
          broken = rollbackError; // the connection is unusable: destroy it rather than return it to the pool
        });
        throw error;
      }
    } catch (error) {
      if (error instanceof NodeExists || error instanceof SigilError) throw error;
      broken ??= isConnectionError(error) ? (error as Error) : undefined;
      throw this.scrub(error);
    } finally {
      client.removeListener('error', onConnectionError);
      client.release(broken);
    }
  }

  /** Driver errors keep their code (for callers that look) but lose any trace of the password. */
  private scrub(error: unknown): unknown {
    if (!(error instanceof Error) || error instanceof SigilError) return error;
    const message = this.redact(error.message);
    if (message !== error.message) error.message = message;
    return error;
  }
}

/** The dedicated LISTEN connection, re-established with backoff whenever it drops. */
class EventStream {
  private readonly options: {
    readonly config: pg.ClientConfig;
    readonly listeners: Listeners;
    readonly report: (error: Error) => void;
    readonly onEventGap: ((gap: { readonly from: Date; readonly to: Date }) => void) | undefined;
    readonly reconnectDelayMs: { readonly min: number; readonly max: number };
    readonly heartbeatMs: number;
  };
  private client: pg.Client | null = null;
  private stopped = false;
  private lostAt: Date | null = null;
  private retryTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;

  constructor(options: EventStream['options']) {
    this.options = options;
  }

  async start(): Promise<void> {
    await this.connect();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.options.heartbeatMs);
    this.heartbeatTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeatTimer);
    const client = this.client;
    this.client = null;
    if (client) await client.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    const client = new pg.Client(this.options.config);
    client.on('notification', (message) => {
      if (message.channel !== EVENT_CHANNEL || this.client !== client) return;
      const event = decodeEvent(message.payload);
      if (event === null) this.options.report(new Error(`ignored an unreadable event on ${EVENT_CHANNEL}`));
      else this.options.listeners.emit(event);
    });
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('connection closed')));
    try {
      await client.connect();
      await client.query(`LISTEN ${EVENT_CHANNEL}`);
    } catch (error) {
      client.removeAllListeners('end');
      await client.end().catch(() => {});
      throw error;
    }
    if (this.stopped) {
      await client.end().catch(() => {});
      return;
    }
    this.client = client;
  }

  private heartbeat(): void {
    const client = this.client;
    if (!client) return;
    client.query('SELECT 1').catch((error: Error) => this.lost(client, error));
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.stopped || this.client !== client) return;
    this.client = null;
    this.lostAt = new Date();
    client.end().catch(() => {});
    this.options.report(
      new Error(
        `lost the PostgreSQL event connection (LISTEN ${EVENT_CHANNEL}): ${error.message}; reconnecting`,
      ),
    );
    this.retry(0);
  }

  private retry(attempt: number): void {
    if (this.stopped) return;
    const { min, max } = this.options.reconnectDelayMs;
    const delay = Math.min(max, min * 2 ** attempt) * (0.5 + Math.random() / 2);
    this.retryTimer = setTimeout(() => {
      this.connect().then(
        () => {
          if (this.stopped || this.lostAt === null) return;
          const gap = { from: this.lostAt, to: new Date() };
          this.lostAt = null;
          this.options.report(
            new Error(
              `PostgreSQL event connection re-established after ${attempt + 1} attempt(s); events from ` +
                `${gap.from.toISOString()} to ${gap.to.toISOString()} were not delivered`,
            ),
          );
          this.options.onEventGap?.(gap);
        },
        (error: Error) => {
          if (attempt === 0 || attempt % 10 === 9)
            this.options.report(
              new Error(`still cannot re-establish LISTEN ${EVENT_CHANNEL}: ${error.message}`),
            );
          this.retry(attempt + 1);
        },
      );
    }, delay);
    this.retryTimer.unref();
  }
}

function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23505';
}

/** Errors after which a connection must not go back to the pool: the socket failed, not the statement. */
function isConnectionError(error: unknown): boolean {
  return !(error instanceof pg.DatabaseError);
}
