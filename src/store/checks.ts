// The checks every record passes before a store writes it: shapes a caller
// of the Store contract could get wrong (a NaN date, an empty id, a serial
// not in canonical form), refused as invalid_argument naming the field, so
// nothing malformed ever reaches SQL. rows.ts applies them column by column.
import { invalid } from '../errors.ts';
import { NODE_STATES, type NodeState } from './store.ts';

/** Unix milliseconds of a valid Date; anything else is refused naming the field. */
export function millis(date: Date, field: string): number {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) throw invalid(`${field} is not a valid date`);
  return date.getTime();
}

export function optionalMillis(date: Date | null, field: string): number | null {
  return date === null ? null : millis(date, field);
}

export function text(value: string, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(`${field} must be a non-empty string`);
  return value;
}

/** A string that may be empty (a SPIFFE leaf's subject often is). */
export function anyText(value: string, field: string): string {
  if (typeof value !== 'string') throw invalid(`${field} must be a string`);
  return value;
}

export function bytes(value: Buffer, field: string): Buffer {
  if (!Buffer.isBuffer(value)) throw invalid(`${field} must be a Buffer`);
  return value;
}

// The canonical serial form is defined in pki/serial.ts (lower-case hex, no
// leading zeros); the store, which imports nothing above errors.ts, checks it
// here. The length bound is looser than a certificate serial's 20 bytes.
const CANONICAL_SERIAL = /^(0|[1-9a-f][0-9a-f]*)$/;

export function checkSerial(serial: string): string {
  if (typeof serial !== 'string' || serial.length > 128 || !CANONICAL_SERIAL.test(serial))
    throw invalid(
      `certificate serial ${JSON.stringify(String(serial).slice(0, 140))} is not lower-case hex without leading zeros`,
    );
  return serial;
}

export function checkNodeState(state: NodeState, field: string): NodeState {
  if (!NODE_STATES.includes(state))
    throw invalid(`${field} ${JSON.stringify(state)} is not one of NEW, UP, REVOKED`);
  return state;
}

export function checkCount(value: number, field: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${field} must be a non-negative integer`);
  return value;
}

const FINGERPRINT = /^[0-9a-f]{64}$/;

export function checkFingerprint(fingerprint: string, field: string): string {
  if (typeof fingerprint !== 'string' || !FINGERPRINT.test(fingerprint))
    throw invalid(
      `${field} ${JSON.stringify(String(fingerprint).slice(0, 80))} is not a SHA-256 in lower-case hex`,
    );
  return fingerprint;
}

export function checkRevocation(reason: string, by?: string): void {
  if (typeof reason !== 'string' || reason === '')
    throw invalid('revocation reason must be a non-empty string');
  if (by !== undefined && (typeof by !== 'string' || by === ''))
    throw invalid('revoker (by) must be a non-empty string');
}
