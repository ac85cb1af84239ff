// `--store` to a ready Store: 'sqlite' (the default) is <dataDir>/sigil.db,
// a postgres:// or postgresql:// URL is PostgreSQL. The store comes back
// migrated, so a server can use it at once. The URL's password never appears
// in an error.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { invalid } from '../errors.ts';
import { openPostgresStore, type PostgresStoreOptions, redactConnectionString } from './postgres.ts';
import { openSqliteStore, type SqliteStoreOptions } from './sqlite.ts';
import type { Store } from './store.ts';

export const DEFAULT_STORE = 'sqlite';
export const SQLITE_FILE_NAME = 'sigil.db';

export type StoreKind = 'sqlite' | 'postgres';

export interface OpenStoreOptions {
  /** Non-fatal problems (lost event connection, failing listeners). Default: a process warning. */
  readonly onError?: (error: Error) => void;
  readonly postgres?: Omit<PostgresStoreOptions, 'onError'>;
  readonly sqlite?: Omit<SqliteStoreOptions, 'onError'>;
  /** Apply pending migrations before returning (default true). */
  readonly migrate?: boolean;
}

/** Which backend a `--store` value names; anything unknown is refused, its password redacted. */
export function storeKind(spec: string): StoreKind {
  if (spec === '' || spec === DEFAULT_STORE) return 'sqlite';
  if (/^postgres(ql)?:\/\//i.test(spec)) return 'postgres';
  throw invalid(
    `--store must be 'sqlite' or a postgres:// (postgresql://) URL, got ${JSON.stringify(redactConnectionString(spec))}`,
  );
}

/** Open and migrate the store `spec` names; SQLite lives in `dataDir` (created 0700 if missing). */
export async function openStore(
  spec: string,
  dataDir: string,
  options: OpenStoreOptions = {},
): Promise<Store> {
  let store: Store;
  if (storeKind(spec) === 'sqlite') {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    store = await openSqliteStore(join(dataDir, SQLITE_FILE_NAME), {
      ...options.sqlite,
      onError: options.onError,
    });
  } else {
    store = await openPostgresStore(spec, { ...options.postgres, onError: options.onError });
  }
  if (options.migrate ?? true) {
    try {
      await store.migrate();
    } catch (error) {
      await store.close().catch(() => {});
      throw error;
    }
  }
  return store;
}
