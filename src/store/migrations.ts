// Versioned schema migrations, shared by both stores. A migration is written
// once where SQLite and PostgreSQL agree; the few column types and functions
// where they do not (bytes, booleans, a byte-ordered text key, finding a
// substring) come from a per-dialect table.
// Migrations only ever append: a released migration is never edited, a new
// one is added with the next version.
//
// Applying is the backend's job (it owns the connection and the lock):
// PostgreSQL takes pg_advisory_xact_lock inside the migrating transaction,
// SQLite runs it under BEGIN IMMEDIATE. Both then do exactly this:
//   CREATE TABLE IF NOT EXISTS schema_migrations …   (SCHEMA_MIGRATIONS_TABLE)
//   SELECT version FROM schema_migrations
//   for each of planMigrations(versions): run statementsFor(m, dialect), insert its row
// so two replicas starting at once apply each migration exactly once.
//
// Every instant is a BIGINT of unix milliseconds in both dialects (exact,
// comparable, no time-zone conversions); SANs (and a reservation's CPU ids)
// are a JSON array in TEXT.
import { SigilError } from '../errors.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly statements: (types: DialectTypes) => readonly string[];
}

/** The column types (and functions) the dialects spell differently. */
export interface DialectTypes {
  readonly bytes: string;
  readonly bool: string;
  /** Text compared byte by byte (PostgreSQL's default collation is locale-aware; keyset paging needs a fixed order). */
  readonly byteOrderedText: string;
  /** SQL for the 1-based position of `needle` in `haystack`, 0 when absent (SQLite instr, PostgreSQL strpos). */
  readonly position: (haystack: string, needle: string) => string;
}

const TYPES: Readonly<Record<Dialect, DialectTypes>> = {
  sqlite: {
    bytes: 'BLOB',
    bool: 'INTEGER',
    byteOrderedText: 'TEXT',
    position: (haystack, needle) => `instr(${haystack}, ${needle})`,
  },
  postgres: {
    bytes: 'BYTEA',
    bool: 'BOOLEAN',
    byteOrderedText: 'TEXT COLLATE "C"',
    position: (haystack, needle) => `strpos(${haystack}, ${needle})`,
  },
};

/** Created (if absent) under the migration lock before anything else. Same SQL in both dialects. */
export const SCHEMA_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`;

/** Fixed application-chosen key for pg_advisory_xact_lock while migrating (any int64 unique to sigil). */
export const POSTGRES_MIGRATION_LOCK_KEY = '7209306402618139237';

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema: settings, cas, certificates, tokens, nodes',
    statements: (t) => [
      `CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      )`,
      `CREATE TABLE cas (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('root', 'intermediate')),
        replica_id TEXT,
        certificate ${t.bytes} NOT NULL,
        encrypted_key ${t.bytes},
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT
      )`,
      `CREATE TABLE certificates (
        serial ${t.byteOrderedText} PRIMARY KEY,
        subject TEXT NOT NULL,
        sans TEXT NOT NULL,
        profile TEXT NOT NULL,
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        issuer_id TEXT NOT NULL,
        requester TEXT NOT NULL,
        der ${t.bytes} NOT NULL,
        issued_at BIGINT NOT NULL,
        revoked_at BIGINT,
        revocation_reason TEXT,
        CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
      )`,
      'CREATE INDEX certificates_requester ON certificates (requester)',
      'CREATE INDEX certificates_issuer_id ON certificates (issuer_id)',
      'CREATE INDEX certificates_not_after ON certificates (not_after)',
      // The CRL query (revoked, unexpired, one issuer) reads only this small partial index.
      'CREATE INDEX certificates_revoked ON certificates (issuer_id, not_after) WHERE revoked_at IS NOT NULL',
      // Keyset paging order of listCertificates.
      'CREATE INDEX certificates_issued ON certificates (issued_at, serial)',
      `CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        secret_hash ${t.bytes} NOT NULL,
        name TEXT,
        uses_total INTEGER NOT NULL,
        uses_left INTEGER NOT NULL CHECK (uses_left >= 0 AND uses_left <= uses_total),
        auto_approve ${t.bool} NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT,
        created_by TEXT NOT NULL
      )`,
      `CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        public_key ${t.bytes} NOT NULL,
        name TEXT,
        state TEXT NOT NULL CHECK (state IN ('NEW', 'UP', 'REVOKED')),
        token_id TEXT NOT NULL REFERENCES tokens (id),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        certificate_serial TEXT
      )`,
      'CREATE INDEX nodes_state ON nodes (state)',
      'CREATE INDEX nodes_token_id ON nodes (token_id)',
    ],
  },
  {
    version: 2,
    name: 'delegation subtrees: delegations, usage_reservations',
    // SPIFFE IDs (and holders) are byte-ordered: "at or under X" is the range
    // [X + '/', X + '0') next to X itself, and the listings are ordered by them.
    // A reservation's CPU ids are a JSON array of integers in TEXT.
    statements: (t) => [
      `CREATE TABLE delegations (
        fingerprint TEXT PRIMARY KEY,
        serial TEXT NOT NULL,
        spiffe_id ${t.byteOrderedText} NOT NULL,
        parent_fingerprint TEXT,
        policy TEXT,
        is_ca ${t.bool} NOT NULL,
        not_after BIGINT NOT NULL,
        der ${t.bytes} NOT NULL,
        origin TEXT NOT NULL CHECK (origin IN ('issued', 'seen')),
        recorded_at BIGINT NOT NULL,
        revoked_at BIGINT,
        revocation_reason TEXT,
        revoked_by TEXT,
        CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL)),
        CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
      )`,
      // Subtree listings (ordered by SPIFFE ID, then recordedAt) and issuance-rate counts.
      'CREATE INDEX delegations_spiffe_id ON delegations (spiffe_id, recorded_at)',
      // The revoked, unexpired delegations: this small partial index only.
      'CREATE INDEX delegations_revoked ON delegations (not_after) WHERE revoked_at IS NOT NULL',
      `CREATE TABLE usage_reservations (
        spiffe_id ${t.byteOrderedText} NOT NULL,
        holder ${t.byteOrderedText} NOT NULL,
        workloads BIGINT NOT NULL CHECK (workloads >= 0),
        cpus TEXT NOT NULL,
        memory_mib BIGINT NOT NULL CHECK (memory_mib >= 0),
        block_mib BIGINT NOT NULL CHECK (block_mib >= 0),
        created_at BIGINT NOT NULL,
        PRIMARY KEY (spiffe_id, holder)
      )`,
    ],
  },
  {
    version: 3,
    name: 'subtree keys: delegations.subtree, usage_reservations.spiffe_id renamed subtree',
    // Delegated SPIFFE IDs became host-form (spiffe://carol.alice.d.<td>) and
    // no longer nest by prefix, so subtrees are keyed by a subtree key the
    // authority computes ("/alice/carol", "/alice/carol//web"); spiffe_id stays
    // on delegations for display. Rows written before this are path-form
    // (spiffe://<td>/d/alice/carol): their key is the path after "/d/", with
    // its leading '/' ("/alice/carol"). The search starts after "spiffe://"
    // (a trust domain holds no '/'), so a trust domain named "d" cannot match
    // early. A value without "/d/" there is kept as it is: nothing is lost.
    // RENAME COLUMN keeps the column's type and collation (COLLATE "C" on
    // PostgreSQL), and the primary key follows it.
    statements: (t) => {
      const fromPathForm = (column: string): string => {
        const at = t.position(`substr(${column}, 10)`, "'/d/'");
        return `CASE WHEN substr(${column}, 1, 9) = 'spiffe://' AND ${at} > 0
          THEN substr(${column}, ${at} + 11) ELSE ${column} END`;
      };
      return [
        `ALTER TABLE delegations ADD COLUMN subtree ${t.byteOrderedText} NOT NULL DEFAULT ''`,
        `UPDATE delegations SET subtree = ${fromPathForm('spiffe_id')}`,
        // Subtree listings (ordered by subtree, then recordedAt) and issuance-rate counts.
        'DROP INDEX delegations_spiffe_id',
        'CREATE INDEX delegations_subtree ON delegations (subtree, recorded_at)',
        'ALTER TABLE usage_reservations RENAME COLUMN spiffe_id TO subtree',
        `UPDATE usage_reservations SET subtree = ${fromPathForm('subtree')}`,
      ];
    },
  },
  {
    version: 4,
    name: 'node lifecycle: revoked_keys, certificate_lineage',
    // revoked_keys: keys that never get another certificate (a certificate
    // revoked for keyCompromise, every key of a revoked node), by SHA-256 of
    // the SubjectPublicKeyInfo. certificate_lineage: which identity each
    // renewed certificate belongs to ("certificate:<first serial>"), so the
    // issuance limits can count and supersede them (authority/issuance-limits.ts).
    statements: (t) => [
      `CREATE TABLE revoked_keys (
        key_hash TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        serial TEXT,
        node_id TEXT,
        revoked_at BIGINT NOT NULL,
        revoked_by TEXT NOT NULL
      )`,
      `CREATE TABLE certificate_lineage (
        serial TEXT PRIMARY KEY,
        lineage ${t.byteOrderedText} NOT NULL,
        issued_at BIGINT NOT NULL
      )`,
      'CREATE INDEX certificate_lineage_issued ON certificate_lineage (lineage, issued_at)',
    ],
  },
  {
    version: 5,
    name: 'workload placement: nodes.workload_address, node names and reservation holders indexed',
    // workload_address: where a node's Workloads service listens ("host:port"),
    // as the node itself registered it; NULL when it serves none. Nodes are
    // found by name (names are not unique), and a node's reservations by the
    // holder prefix "node/<node id>/" (a range on the byte-ordered holder).
    statements: () => [
      'ALTER TABLE nodes ADD COLUMN workload_address TEXT',
      'CREATE INDEX nodes_name ON nodes (name)',
      'CREATE INDEX usage_reservations_holder ON usage_reservations (holder)',
    ],
  },
];

/** The newest schema version this build knows. */
export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

export function statementsFor(migration: Migration, dialect: Dialect): readonly string[] {
  return migration.statements(TYPES[dialect]);
}

/**
 * The migrations still to apply, in order, given the versions already
 * recorded. Refuses a store migrated by a newer sigil (its schema may mean
 * things this build does not know) and a store with gaps in its history.
 */
export function planMigrations(
  applied: readonly number[],
  migrations: readonly Migration[] = MIGRATIONS,
): readonly Migration[] {
  const known = new Set(migrations.map((m) => m.version));
  const newest = Math.max(0, ...migrations.map((m) => m.version));
  for (const version of applied) {
    if (version > newest)
      throw new SigilError(
        'failed_precondition',
        `the store's schema is at version ${Math.max(...applied)}, newer than this sigil understands (${newest}); upgrade sigil`,
      );
    if (!known.has(version))
      throw new SigilError('failed_precondition', `the store records unknown schema migration ${version}`);
  }
  const done = new Set(applied);
  return [...migrations].sort((a, b) => a.version - b.version).filter((m) => !done.has(m.version));
}
