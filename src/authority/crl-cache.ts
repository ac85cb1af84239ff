// CRLs for every CA level (OpenSSL wants one per level once a TLS context
// checks CRLs; an empty one is fine, an expired one rejects every handshake).
//
// Intermediates: signed by the replica that owns the intermediate, valid for
// 24 h, cached and re-signed at half that, and dropped from the cache on
// every revocation event so the next request lists the new serial.
//
// The root: published in the store (settings "crl:root:<n>", n counting up)
// by the replica holding the root key, whenever the set of revoked
// intermediates changes and, to stay fresh, every 3.5 days (a root CRL is
// valid for 7; the maintenance round, hourly, and every request for it check).
// Every replica serves the newest published one. Before the root key is
// taken offline a last one valid for a year is published (no one can sign
// another while the key is away; intermediates need the key back within a
// year anyway), and the authority warns when it nears its nextUpdate.
//
// URLs: an issuer's CRL is served at <HTTP URL>/crl/<issuer id> (DER), and
// leaves carry that URL as their CRL distribution point (crlUrl) when the
// server has an HTTP URL to advertise.

import { notFound, preconditionFailed } from '../errors.ts';
import type { RevocationReason, RevokedEntry } from '../pki/crl.ts';
import { createCrl, parseCrl, parseRevocationReason } from '../pki/crl.ts';
import type { CertificateRecord, Store } from '../store/store.ts';
import { type CaSet, ROOT_CA_ID } from './ca-set.ts';
import {
  CRL_REFRESH_FRACTION,
  CRL_VALIDITY_MS,
  OFFLINE_ROOT_CRL_VALIDITY_MS,
  ROOT_CRL_VALIDITY_MS,
} from './lifetimes.ts';

interface CachedCrl {
  readonly der: Buffer;
  readonly refreshAt: number;
}

const ROOT_CRL_SETTING = 'crl:root:';

/** Where the CRL of `issuerId` is served, below the HTTP side's base URL. */
export function crlUrl(baseUrl: string, issuerId: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/crl/${encodeURIComponent(issuerId)}`;
}

/** A published root CRL as this replica last saw it. */
interface PublishedRoot {
  readonly n: number;
  readonly der: Buffer;
  /** Sorted serials, comma-separated. */
  readonly serials: string;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | null;
}

/** True when a root CRL signed at `thisUpdate` should be signed again (half its online validity gone). */
function rootCrlStale(crl: PublishedRoot, now: Date): boolean {
  const age = now.getTime() - crl.thisUpdate.getTime();
  const left = crl.nextUpdate ? crl.nextUpdate.getTime() - now.getTime() : Number.POSITIVE_INFINITY;
  return (
    age >= ROOT_CRL_VALIDITY_MS * CRL_REFRESH_FRACTION || left < ROOT_CRL_VALIDITY_MS * CRL_REFRESH_FRACTION
  );
}

/**
 * The CRL reason of a revoked record. removeFromCRL belongs in delta CRLs
 * only (RFC 5280 §5.3.1) and never on an entry of a full CRL; a record that
 * somehow carries it is listed as unspecified, as is any reason this code
 * does not know.
 */
function reasonOf(record: CertificateRecord): RevocationReason {
  try {
    const reason = parseRevocationReason(record.revocationReason ?? 'unspecified');
    return reason === 'removeFromCRL' ? 'unspecified' : reason;
  } catch {
    return 'unspecified';
  }
}

function entriesOf(records: readonly CertificateRecord[]): RevokedEntry[] {
  return records.map((record) => ({
    serialHex: record.serial,
    revokedAt: record.revokedAt ?? new Date(0),
    reason: reasonOf(record),
  }));
}

export class CrlCache {
  readonly #store: Store;
  readonly #cas: () => CaSet;
  readonly #now: () => Date;
  readonly #cache = new Map<string, CachedCrl>();
  #lastCrlNumber = 0n;
  /** Newest published root CRL seen. */
  #root: PublishedRoot | null = null;

  constructor(store: Store, cas: () => CaSet, now: () => Date) {
    this.#store = store;
    this.#cas = cas;
    this.#now = now;
  }

  /** Forget cached intermediate CRLs (after a revocation event). */
  invalidate(): void {
    this.#cache.clear();
  }

  /** DER CRL of CA `caId`. */
  async crl(caId: string): Promise<Buffer> {
    const cas = this.#cas();
    const ca = cas.get(caId);
    if (!ca) throw notFound(`no CA "${caId}" in this store`);
    if (caId === ROOT_CA_ID) {
      const published = await this.#latestRoot();
      // The holder of the root key re-signs a stale one on the way (the maintenance round does too).
      if (cas.rootIssuer() && (!published || rootCrlStale(published, this.#now()))) {
        return (await this.publishRoot()).der;
      }
      if (published) return published.der;
      throw preconditionFailed('no root CRL has been published yet and the root key is not on this replica');
    }
    const now = this.#now();
    const cached = this.#cache.get(caId);
    if (cached && now.getTime() < cached.refreshAt) return cached.der;
    const key = cas.key(caId);
    if (!key) {
      throw preconditionFailed(
        `the CRL of CA "${caId}" is signed by replica "${ca.record.replicaId}"; fetch it from that replica`,
      );
    }
    const revoked = await this.#store.listRevoked(caId, now);
    const der = createCrl({
      issuerCertificate: ca.record.certificate,
      issuerKey: key,
      entries: entriesOf(revoked),
      crlNumber: this.#nextCrlNumber(now),
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + CRL_VALIDITY_MS),
    });
    this.#cache.set(caId, { der, refreshAt: now.getTime() + CRL_VALIDITY_MS * CRL_REFRESH_FRACTION });
    return der;
  }

  /** CA ids whose CRL this replica can serve (its own CAs' keys, and the root). */
  servable(): string[] {
    const cas = this.#cas();
    return cas
      .all()
      .filter((ca) => ca.record.id === ROOT_CA_ID || cas.issuer(ca.record.id) !== null)
      .map((ca) => ca.record.id);
  }

  /**
   * On the root holder: sign and publish a root CRL if the revoked
   * intermediates differ from the newest published one, if that one is
   * stale (half of its 7 days gone), or if none exists; with `offline`
   * (the key is about to leave), always, valid for a year. Returns the newest
   * published CRL.
   */
  async publishRoot(options: { offline?: boolean } = {}): Promise<PublishedRoot> {
    const cas = this.#cas();
    const root = cas.requireRoot();
    const key = cas.rootKey();
    if (!key) throw preconditionFailed('the root key is not online on this replica');
    for (;;) {
      const now = this.#now();
      const latest = await this.#latestRoot();
      const revoked = await this.#store.listRevoked(ROOT_CA_ID, now);
      const serials = revoked
        .map((r) => r.serial)
        .sort()
        .join(',');
      if (!options.offline && latest && latest.serials === serials && !rootCrlStale(latest, now))
        return latest;
      const n = (latest?.n ?? 0) + 1;
      const validity = options.offline ? OFFLINE_ROOT_CRL_VALIDITY_MS : ROOT_CRL_VALIDITY_MS;
      const nextUpdate = new Date(Math.min(now.getTime() + validity, root.info.notAfter.getTime()));
      const der = createCrl({
        issuerCertificate: root.record.certificate,
        issuerKey: key,
        entries: entriesOf(revoked),
        crlNumber: BigInt(n),
        thisUpdate: now,
        nextUpdate,
      });
      const stored = await this.#store.initSetting(`${ROOT_CRL_SETTING}${n}`, der.toString('base64'));
      if (stored === der.toString('base64')) {
        const info = parseCrl(der, 'root CRL');
        this.#root = { n, der, serials, thisUpdate: info.thisUpdate, nextUpdate: info.nextUpdate };
        return this.#root;
      }
      // Another writer took number n first: read it and try again.
    }
  }

  /** The newest published root CRL (null when none is), e.g. to warn before it expires. */
  async latestRoot(): Promise<PublishedRoot | null> {
    return this.#latestRoot();
  }

  async #latestRoot(): Promise<PublishedRoot | null> {
    let latest = this.#root;
    for (let n = (latest?.n ?? 0) + 1; ; n++) {
      const value = await this.#store.getSetting(`${ROOT_CRL_SETTING}${n}`);
      if (value === null) break;
      const der = Buffer.from(value, 'base64');
      const info = parseCrl(der, 'published root CRL');
      const serials = info.entries
        .map((e) => e.serialHex.replace(/^0+(?=.)/, ''))
        .sort()
        .join(',');
      latest = { n, der, serials, thisUpdate: info.thisUpdate, nextUpdate: info.nextUpdate };
    }
    this.#root = latest;
    return latest;
  }

  #nextCrlNumber(now: Date): bigint {
    // Time-based so numbers keep increasing across restarts, +1 within one millisecond.
    const candidate = BigInt(now.getTime());
    this.#lastCrlNumber = candidate > this.#lastCrlNumber ? candidate : this.#lastCrlNumber + 1n;
    return this.#lastCrlNumber;
  }
}
