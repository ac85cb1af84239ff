// How many certificates one identity may get, and how fast. Without limits a
// node could loop Rejoin or Renew and hold hundreds of valid certificates at
// once (each one a credential to revoke) and fill the store. The limits, per
// identity (a node, by node ID; any other holder, by the line of renewals of
// the certificate an admin signed, recorded in the store's
// certificate_lineage):
//
//   - At most MAX_VALID_CERTIFICATES (2) valid certificates: the current one
//     and the next. Every new certificate revokes the identity's other valid
//     ones as `superseded`, except the one the request came from (Renew) or
//     the newest before it (Register, Rejoin), so a node whose reply got lost
//     keeps working with what it has.
//   - Early renewal: while the identity already holds two valid certificates,
//     a new one is refused until the newest is half way through its life
//     (EARLIEST_RENEWAL_FRACTION; sigil agent renews at about 2/3). So one
//     early renewal (`sigil agent --once --force`) is always possible, a
//     second one is not. A Renew with a new key (key rotation, `sigil agent
//     --rotate-key`) is not held back by this rule, only by the next.
//   - Rate: at most CERTIFICATES_PER_DAY (6) certificates in any 24 hours,
//     however asked for (Register, Rejoin, Renew, approval). A normal node
//     uses 1 or 2 a day.
//
// Refusals are RESOURCE_EXHAUSTED naming the limit and when the next
// certificate is possible, and change nothing. Admins are not limited. Each
// replica serializes the decisions of one identity, across all its processes
// (identity-lock.ts); replicas sharing a store
// decide independently, so a burst spread over R replicas at the same instant
// can pass the check R times (the supersession still leaves two valid).
import { SigilError } from '../errors.ts';
import type { CertificateRecord, Store } from '../store/store.ts';
import { type IdentityLock, LocalIdentityLock } from './identity-lock.ts';
import { spiffeIdOf } from './issuance.ts';
import { renewalDue } from './lifetimes.ts';

export const MAX_VALID_CERTIFICATES = 2;
export const CERTIFICATES_PER_DAY = 6;
export const EARLIEST_RENEWAL_FRACTION = 1 / 2;
/** The window of the rate limit. */
export const RATE_WINDOW_MS = 24 * 3600_000;

/** The certificates of one identity the limits look at. */
export interface Holding {
  /** For messages: "node n…", "the certificate line of spiffe://…". */
  readonly who: string;
  /** Every certificate of the identity issued within the rate window or still valid. */
  readonly certificates: readonly CertificateRecord[];
}

const exhausted = (message: string): SigilError => new SigilError('resource_exhausted', message);

function isValid(record: CertificateRecord, now: Date): boolean {
  return record.revokedAt === null && record.notAfter.getTime() > now.getTime();
}

const newestFirst = (a: CertificateRecord, b: CertificateRecord): number =>
  b.issuedAt.getTime() - a.issuedAt.getTime() || b.notBefore.getTime() - a.notBefore.getTime();

/** The identity's valid certificates, newest first. */
export function validCertificates(holding: Holding, now: Date): CertificateRecord[] {
  return holding.certificates.filter((record) => isValid(record, now)).sort(newestFirst);
}

/**
 * Refuses (resource_exhausted) a new certificate for `holding` at `now`;
 * `rotation` when the request brings a new key.
 */
export function checkIssuance(holding: Holding, now: Date, options: { rotation: boolean }): void {
  const since = now.getTime() - RATE_WINDOW_MS;
  const recent = holding.certificates
    .filter((record) => record.issuedAt.getTime() > since)
    .sort((a, b) => a.issuedAt.getTime() - b.issuedAt.getTime());
  if (recent.length >= CERTIFICATES_PER_DAY) {
    const next = new Date(recent[recent.length - CERTIFICATES_PER_DAY].issuedAt.getTime() + RATE_WINDOW_MS);
    throw exhausted(
      `${holding.who} was issued ${recent.length} certificates in the last 24 hours: the limit is ${CERTIFICATES_PER_DAY} a day; the next one can be issued from ${next.toISOString()}`,
    );
  }
  if (options.rotation) return;
  const valid = validCertificates(holding, now);
  if (valid.length < MAX_VALID_CERTIFICATES) return;
  const newest = valid[0];
  const earliest = renewalDue(newest.notBefore, newest.notAfter, EARLIEST_RENEWAL_FRACTION);
  if (now.getTime() < earliest) {
    throw exhausted(
      `${holding.who} already holds ${valid.length} valid certificates (current and next, the most it may hold): ` +
        `the newest (serial ${newest.serial}) can be renewed from ${new Date(earliest).toISOString()}, ` +
        'half of its lifetime (sigil agent renews at about 2/3)',
    );
  }
}

/** The valid certificates a new one supersedes: all but those in `keep`. */
export function supersededBy(holding: Holding, keep: ReadonlySet<string>, now: Date): string[] {
  return validCertificates(holding, now)
    .filter((record) => !keep.has(record.serial))
    .map((record) => record.serial);
}

const PAGE_SIZE = 1000;

/** Reads identities' holdings from the store, and serializes each identity's decisions on this replica. */
export class IssuanceLimits {
  readonly #store: Store;
  readonly #lock: IdentityLock;

  constructor(store: Store, lock: IdentityLock = new LocalIdentityLock()) {
    this.#store = store;
    this.#lock = lock;
  }

  /** A node's certificates the limits look at (issued within the window, or still valid). */
  async node(nodeId: string, now: Date): Promise<Holding> {
    const certificates: CertificateRecord[] = [];
    let pageToken = '';
    do {
      const page = await this.#store.listCertificates({
        requester: nodeId,
        profile: 'node',
        validAt: new Date(now.getTime() - RATE_WINDOW_MS),
        pageSize: PAGE_SIZE,
        pageToken,
      });
      certificates.push(...page.items);
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    return { who: `node ${nodeId}`, certificates };
  }

  /** The lineage a non-node certificate was renewed in: its recorded one, or the one it starts. */
  async lineageOf(record: CertificateRecord): Promise<string> {
    return (await this.#store.getLineage(record.serial))?.lineage ?? `certificate:${record.serial}`;
  }

  /** The certificates of a lineage the limits look at, `record` included (it may predate the lineage). */
  async lineage(lineage: string, record: CertificateRecord, now: Date): Promise<Holding> {
    const lifetime = record.notAfter.getTime() - record.notBefore.getTime();
    const since = new Date(now.getTime() - Math.max(RATE_WINDOW_MS, lifetime));
    const certificates: CertificateRecord[] = [record];
    for (const entry of await this.#store.listLineage(lineage, since)) {
      if (entry.serial === record.serial) continue;
      const found = await this.#store.getCertificate(entry.serial);
      if (found) certificates.push(found);
    }
    const first = lineage.slice(lineage.indexOf(':') + 1);
    const name = spiffeIdOf(record.sans) || record.subject;
    return { who: `${name} (renewals of certificate ${first})`, certificates };
  }

  /** Files a renewed certificate (and the one it came from) under `lineage`. */
  async recordRenewal(lineage: string, from: CertificateRecord, serial: string, now: Date): Promise<void> {
    await this.#store.recordLineage({ serial: from.serial, lineage, issuedAt: from.issuedAt });
    await this.#store.recordLineage({ serial, lineage, issuedAt: now });
  }

  /** Runs `work` after every earlier work of the same identity has finished (one decision at a time). */
  oneAtATime<T>(identity: string, work: () => Promise<T>): Promise<T> {
    return this.#lock.oneAtATime(identity, work);
  }
}
