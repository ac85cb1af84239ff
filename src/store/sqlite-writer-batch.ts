// One group commit of certificate rows, shared by the inline writer and the
// writer thread: every row in one BEGIN IMMEDIATE … COMMIT, so a batch pays
// one fsync (synchronous=FULL) however many rows it holds.
//
// A row that breaks a constraint (a duplicate serial) fails alone without a
// savepoint: SQLite undoes just that statement and the transaction goes on.
// Any other error (disk full, I/O) rolls the whole batch back and fails it.
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';

/** The bound values of one certificates row (rows.ts certificateParams, booleans as integers). */
export type CertificateRow = readonly SQLInputValue[];

/** SQLite's primary result code for every constraint violation (SQLITE_CONSTRAINT_*). */
const SQLITE_CONSTRAINT = 19;

export function isConstraintError(error: unknown): boolean {
  const code = (error as { errcode?: unknown } | null)?.errcode;
  return typeof code === 'number' && (code & 0xff) === SQLITE_CONSTRAINT;
}

/**
 * Inserts `rows` in one transaction and commits; returns each row's error
 * (a constraint violation) or null. Throws, after rolling back, when the
 * batch as a whole failed.
 */
export function commitCertificateRows(
  db: DatabaseSync,
  insert: StatementSync,
  rows: readonly CertificateRow[],
): (unknown | null)[] {
  const errors: (unknown | null)[] = [];
  db.exec('BEGIN IMMEDIATE');
  try {
    for (const row of rows) {
      try {
        insert.run(...row);
        errors.push(null);
      } catch (error) {
        if (!isConstraintError(error)) throw error;
        errors.push(error);
      }
    }
    db.exec('COMMIT');
  } catch (error) {
    try {
      db.exec('ROLLBACK');
    } catch {
      // SQLite already rolled back (e.g. after SQLITE_FULL); the original error is what matters.
    }
    throw error;
  }
  return errors;
}
