// The node daemon's SQLite files (the event log, the desired state): readable
// by their owner only (the -wal and -shm companions too), WAL so readers never
// block the writer, and synchronous FULL, so what was acknowledged survives a
// kill -9 or a power cut.
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';

/** Opens (creating it 0600 if need be) the database at `path` and applies `schema`; throws as SQLite does. */
export function openPrivateSqlite(path: string, schema: string, busyTimeoutMs: number): DatabaseSync {
  if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
  const db = new DatabaseSync(path);
  try {
    db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    const mode = db.prepare('PRAGMA journal_mode = WAL').get() as { journal_mode?: unknown } | undefined;
    if (String(mode?.journal_mode).toLowerCase() !== 'wal')
      throw new Error(`could not switch to WAL mode (journal_mode is ${String(mode?.journal_mode)})`);
    db.exec('PRAGMA synchronous = FULL');
    db.exec(schema);
    for (const companion of ['-wal', '-shm'])
      if (existsSync(path + companion)) chmodSync(path + companion, 0o600);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}
