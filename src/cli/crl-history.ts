// A CA directory's revocation history, as `openssl ca` keeps its index.txt:
// revocations.json lists, per signing CA (keyed by the SHA-256 of its
// certificate, so a replaced intermediate starts afresh), every serial it
// revoked with its reason and date. `sigil pki crl` adds the new --revoke
// serials to it and signs a CRL listing all of them, so a second CRL keeps
// the first one's entries.
//
// The rules of RFC 5280 §5.3.1 for reasons:
//   - a revocation is final; the one exception is certificateHold, which may
//     later become a permanent revocation (the reason changes, the date of
//     the hold stays) or be released;
//   - removeFromCRL is not a reason a certificate is revoked for: it only
//     appears in delta CRLs, for a certificate taken off hold. So
//     `--revoke SERIAL:removeFromCRL` releases a held serial (the next CRL no
//     longer lists it) and is refused for anything not on hold; no entry of a
//     full CRL ever carries it;
//   - revoking a listed serial again without a reason, or with the same
//     one, changes nothing; with another reason it is refused.
import { join } from 'node:path';
import { invalid, preconditionFailed } from '../errors.ts';
import { type PlannedFile, PUBLIC } from '../files/file-sets.ts';
import { parseRevocationReason, type RevocationReason } from '../pki/crl.ts';

export const REVOCATIONS_FILE = 'revocations.json';
const VERSION = 1;

export interface RevokedSerial {
  /** Lower-case hex without leading zeros. */
  readonly serial: string;
  readonly reason: RevocationReason;
  readonly revokedAt: Date;
}

/** One signing CA's history. */
export interface IssuerHistory {
  /** The CA certificate's file name in the CA directory, for people reading the file. */
  readonly certificate: string;
  readonly subject: string;
  readonly revoked: readonly RevokedSerial[];
}

export type RevocationHistory = ReadonlyMap<string, IssuerHistory>;

/** What one `--revoke` asks for. */
export interface RevocationRequest {
  readonly serial: string;
  readonly reason: RevocationReason;
  /** False when no reason was given (then a listed serial keeps its own). */
  readonly reasonGiven: boolean;
}

export interface HistoryChange {
  /** The issuer's history after the requests. */
  readonly history: IssuerHistory;
  readonly added: readonly RevokedSerial[];
  /** Serials released from certificateHold (removeFromCRL). */
  readonly released: readonly string[];
  /** Serials whose certificateHold became a permanent revocation. */
  readonly changed: readonly RevokedSerial[];
}

function fail(path: string, what: string): never {
  throw invalid(`${path}: ${what} (the CA directory's revocation history; fix or restore it)`);
}

/** Parses revocations.json strictly; `text` undefined (no file yet) is an empty history. */
export function parseRevocationHistory(dir: string, text: string | undefined): RevocationHistory {
  const path = join(dir, REVOCATIONS_FILE);
  const history = new Map<string, IssuerHistory>();
  if (text === undefined) return history;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    fail(path, 'not valid JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(path, 'not a JSON object');
  const record = raw as Record<string, unknown>;
  if (record.version !== VERSION) fail(path, `unsupported version ${JSON.stringify(record.version)}`);
  const issuers = record.issuers;
  if (typeof issuers !== 'object' || issuers === null || Array.isArray(issuers))
    fail(path, 'issuers is missing');
  for (const [fingerprint, value] of Object.entries(issuers as Record<string, unknown>)) {
    if (!/^[0-9a-f]{64}$/.test(fingerprint))
      fail(path, `issuer key ${JSON.stringify(fingerprint)} is not a SHA-256`);
    if (typeof value !== 'object' || value === null) fail(path, `issuer ${fingerprint} is not an object`);
    const issuer = value as Record<string, unknown>;
    if (typeof issuer.certificate !== 'string' || typeof issuer.subject !== 'string') {
      fail(path, `issuer ${fingerprint} lacks certificate or subject`);
    }
    if (!Array.isArray(issuer.revoked)) fail(path, `issuer ${fingerprint}: revoked is not a list`);
    const seen = new Set<string>();
    const revoked = issuer.revoked.map((entry: unknown, index: number): RevokedSerial => {
      const where = `issuer ${fingerprint}, entry ${index + 1}`;
      if (typeof entry !== 'object' || entry === null) fail(path, `${where} is not an object`);
      const { serial, reason, revokedAt } = entry as Record<string, unknown>;
      if (typeof serial !== 'string' || !/^[1-9a-f][0-9a-f]{0,39}$/.test(serial)) {
        fail(path, `${where}: serial must be lower-case hex without leading zeros`);
      }
      if (seen.has(serial)) fail(path, `${where}: serial ${serial} is listed twice`);
      seen.add(serial);
      let parsed: RevocationReason;
      try {
        parsed = parseRevocationReason(String(reason));
      } catch {
        fail(path, `${where}: unknown reason ${JSON.stringify(reason)}`);
      }
      if (parsed !== reason || parsed === 'removeFromCRL')
        fail(path, `${where}: reason ${JSON.stringify(reason)} cannot be listed`);
      const date = typeof revokedAt === 'string' ? new Date(revokedAt) : new Date(Number.NaN);
      if (!Number.isFinite(date.getTime())) fail(path, `${where}: revokedAt is not a date`);
      return { serial, reason: parsed, revokedAt: date };
    });
    history.set(fingerprint, {
      certificate: issuer.certificate as string,
      subject: issuer.subject as string,
      revoked,
    });
  }
  return history;
}

/**
 * Applies `requests` to `current` (this issuer's history, or undefined for
 * none yet) at `now`. Refuses, changing nothing, what RFC 5280 does not allow.
 */
export function applyRevocations(
  current: IssuerHistory,
  requests: readonly RevocationRequest[],
  now: Date,
): HistoryChange {
  const entries = new Map(current.revoked.map((entry) => [entry.serial, entry]));
  const added: RevokedSerial[] = [];
  const released: string[] = [];
  const changed: RevokedSerial[] = [];
  for (const request of requests) {
    const listed = entries.get(request.serial);
    if (request.reason === 'removeFromCRL') {
      if (listed?.reason !== 'certificateHold') {
        throw preconditionFailed(
          listed
            ? `serial ${request.serial} is revoked (${listed.reason}, ${listed.revokedAt.toISOString()}) for good: removeFromCRL only releases a certificateHold`
            : `serial ${request.serial} is not on hold: removeFromCRL only releases a certificateHold (it is never listed in a full CRL)`,
        );
      }
      entries.delete(request.serial);
      released.push(request.serial);
      continue;
    }
    if (!listed) {
      const entry = { serial: request.serial, reason: request.reason, revokedAt: now };
      entries.set(request.serial, entry);
      added.push(entry);
      continue;
    }
    if (!request.reasonGiven || request.reason === listed.reason) continue;
    if (listed.reason === 'certificateHold') {
      const entry = { ...listed, reason: request.reason };
      entries.set(request.serial, entry);
      changed.push(entry);
      continue;
    }
    throw preconditionFailed(
      `serial ${request.serial} is already revoked (${listed.reason}, ${listed.revokedAt.toISOString()}): a revocation is final, only a certificateHold can change`,
    );
  }
  return { history: { ...current, revoked: [...entries.values()] }, added, released, changed };
}

/** revocations.json as a file to write together with the CRL. */
export function historyFile(dir: string, history: RevocationHistory): PlannedFile {
  const issuers: Record<string, unknown> = {};
  for (const [fingerprint, issuer] of history) {
    issuers[fingerprint] = {
      certificate: issuer.certificate,
      subject: issuer.subject,
      revoked: issuer.revoked.map((entry) => ({
        serial: entry.serial,
        reason: entry.reason,
        revokedAt: entry.revokedAt.toISOString(),
      })),
    };
  }
  return {
    path: join(dir, REVOCATIONS_FILE),
    contents: `${JSON.stringify({ version: VERSION, issuers }, null, 2)}\n`,
    mode: PUBLIC,
    replaces: true,
  };
}
