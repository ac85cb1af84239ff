// CRLs for every CA level (OpenSSL wants one per level once a TLS context
// checks CRLs; an empty one is fine, an expired one rejects every handshake).
//
// Intermediates: signed by the replica that owns the intermediate, valid for
// 24 h, cached and re-signed at half that, and dropped from the cache on
// every revocation event so the next request lists the new serial.
//
// The root: its key may be offline, so a root CRL is valid until the root
// itself expires and is published in the store (settings "crl:root:<n>", n
// counting up) whenever the set of revoked intermediates changes. Only the
// replica holding the root key can publish one, and revoking an intermediate
// needs the root key anyway; every replica serves the newest published one.

import { notFound, preconditionFailed } from '../errors.ts';
import type { RevocationReason, RevokedEntry } from '../pki/crl.ts';
import { createCrl, parseCrl, parseRevocationReason } from '../pki/crl.ts';
import type { CertificateRecord, Store } from '../store/store.ts';
import { type CaSet, ROOT_CA_ID } from './ca-set.ts';
import { CRL_REFRESH_FRACTION, CRL_VALIDITY_MS } from './lifetimes.ts';

interface CachedCrl {
  readonly der: Buffer;
  readonly refreshAt: number;
}

const ROOT_CRL_SETTING = 'crl:root:';

function reasonOf(record: CertificateRecord): RevocationReason {
  try {
    return parseRevocationReason(record.revocationReason ?? 'unspecified');
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
  /** Newest published root CRL seen: its sequence number, DER and sorted serials. */
  #root: { n: number; der: Buffer; serials: string } | null = null;

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
      if (published) return published.der;
      if (cas.rootIssuer()) return (await this.publishRoot()).der;
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
   * intermediates differ from the newest published one (or none exists).
   * Returns the newest published CRL.
   */
  async publishRoot(): Promise<{ n: number; der: Buffer }> {
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
      if (latest && latest.serials === serials) return latest;
      const n = (latest?.n ?? 0) + 1;
      const der = createCrl({
        issuerCertificate: root.record.certificate,
        issuerKey: key,
        entries: entriesOf(revoked),
        crlNumber: BigInt(n),
        thisUpdate: now,
        nextUpdate: root.info.notAfter,
      });
      const stored = await this.#store.initSetting(`${ROOT_CRL_SETTING}${n}`, der.toString('base64'));
      if (stored === der.toString('base64')) {
        this.#root = { n, der, serials };
        return this.#root;
      }
      // Another writer took number n first: read it and try again.
    }
  }

  async #latestRoot(): Promise<{ n: number; der: Buffer; serials: string } | null> {
    let latest = this.#root;
    for (let n = (latest?.n ?? 0) + 1; ; n++) {
      const value = await this.#store.getSetting(`${ROOT_CRL_SETTING}${n}`);
      if (value === null) break;
      const der = Buffer.from(value, 'base64');
      const serials = parseCrl(der, 'published root CRL')
        .entries.map((e) => e.serialHex.replace(/^0+(?=.)/, ''))
        .sort()
        .join(',');
      latest = { n, der, serials };
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
