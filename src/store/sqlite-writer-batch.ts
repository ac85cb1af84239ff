// One group commit of certificate rows, shared by the inline writer and the
// writer thread: every row in one BEGIN IMMEDIATE … COMMIT, so a batch pays
// one fsync (synchronous=FULL) however many rows it holds.
//
// A row may carry a node step (a node's certificate: insertNodeCertificate):
// the node's compare-and-set transition, as transitionNode makes it, in the
// same transaction, so a renewal's certificate and its node record share the
// batch's fsync. Row and step stand or fall together (a savepoint each).
//
// A row that breaks a constraint (a duplicate serial) fails alone: SQLite
// undoes just that statement (or that row's savepoint) and the transaction
// goes on. Any other error (disk full, I/O) rolls the whole batch back and
// fails it.
import type { DatabaseSync, SQLInputValue, SQLOutputValue, StatementSync } from 'node:sqlite';

/** The bound values of one certificates row (rows.ts certificateParams, booleans as integers). */
export type CertificateRow = readonly SQLInputValue[];

/** A node's compare-and-set transition, made only if its state is one of `from`. */
export interface BatchNodeStep {
  readonly id: string;
  readonly from: readonly string[];
  readonly to: string;
  /** updated_at, in milliseconds. */
  readonly at: number;
  /** The serial the node is pointed at (the row's own). */
  readonly certificateSerial: string;
}

/** One write of a batch: a certificate row, and for a node's certificate the node's step. */
export interface CertificateWrite {
  readonly row: CertificateRow;
  readonly node?: BatchNodeStep;
}

/** The node as the step left it (its row as RETURNING gave it) and the state it came from. */
export interface NodeChange {
  readonly row: Readonly<Record<string, SQLOutputValue>>;
  readonly previous: string;
}

/**
 * What one write came to: its error (a constraint it broke), or the node's
 * change, null when the write had no step or the node was unknown or in
 * another state (the row is inserted all the same).
 */
export type WriteResult = { readonly error: unknown } | { readonly change: NodeChange | null };

/** The statements a batch runs (sqlite.ts owns their SQL). */
export interface BatchStatements {
  /** INSERT INTO certificates. */
  readonly insert: StatementSync;
  /** The node's row by id (one parameter). */
  readonly getNode: StatementSync;
  /** UPDATE nodes … RETURNING, bound as (to, at, serial, id). */
  readonly transitionNode: StatementSync;
}

/** SQLite's primary result code for every constraint violation (SQLITE_CONSTRAINT_*). */
const SQLITE_CONSTRAINT = 19;

export function isConstraintError(error: unknown): boolean {
  const code = (error as { errcode?: unknown } | null)?.errcode;
  return typeof code === 'number' && (code & 0xff) === SQLITE_CONSTRAINT;
}

/**
 * Makes `writes` in one transaction and commits; returns each write's result.
 * Throws, after rolling back, when the batch as a whole failed.
 */
export function commitCertificateRows(
  db: DatabaseSync,
  statements: BatchStatements,
  writes: readonly CertificateWrite[],
): WriteResult[] {
  const results: WriteResult[] = [];
  db.exec('BEGIN IMMEDIATE');
  try {
    for (const write of writes) {
      try {
        results.push({
          change: write.node
            ? nodeWrite(db, statements, write.row, write.node)
            : plainWrite(statements, write.row),
        });
      } catch (error) {
        if (!isConstraintError(error)) throw error;
        results.push({ error });
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
  return results;
}

function plainWrite(statements: BatchStatements, row: CertificateRow): null {
  statements.insert.run(...row);
  return null;
}

/** The row and the node's step under one savepoint: a step that fails undoes the row too. */
function nodeWrite(
  db: DatabaseSync,
  statements: BatchStatements,
  row: CertificateRow,
  step: BatchNodeStep,
): NodeChange | null {
  db.exec('SAVEPOINT node_certificate');
  try {
    statements.insert.run(...row);
    const change = transition(statements, step);
    db.exec('RELEASE node_certificate');
    return change;
  } catch (error) {
    try {
      db.exec('ROLLBACK TO node_certificate');
      db.exec('RELEASE node_certificate');
    } catch {
      // The whole transaction is gone already; the error below rolls the batch back.
    }
    throw error;
  }
}

function transition(statements: BatchStatements, step: BatchNodeStep): NodeChange | null {
  const current = statements.getNode.get(step.id);
  if (current === undefined) return null;
  const previous = String(current.state);
  if (!step.from.includes(previous)) return null;
  const row = statements.transitionNode.get(step.to, step.at, step.certificateSerial, step.id);
  if (row === undefined) throw new Error(`node ${step.id} vanished inside its own transaction`);
  return { row, previous };
}
