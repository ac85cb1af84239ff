// A RevocationSource fed CRLs (PEM), for deployments that distribute
// revocation as files. Each update is checked as a whole before it replaces
// the CRLs in use: a CRL past its nextUpdate, one no configured CA signed, or
// one older than the CRL it would replace is refused with an error that names
// it, and the previous CRLs keep answering. A refused update changes nothing.
import { preconditionFailed } from '../errors.ts';
import { type CertificateInfo, parseCertificate, readCertificates } from '../pki/certificate.ts';
import { type CrlInfo, parseCrl, verifyCrlSignature } from '../pki/crl.ts';
import type { RevocationSource } from '../pki/revocation-source.ts';
import { normalizeSerial, notifyAll } from './revocation-set.ts';

export interface CrlRevocationSourceOptions {
  /** The CAs whose CRLs are accepted: PEM (one or more certificates) or DER. */
  readonly issuers: string | Buffer | readonly (string | Buffer)[];
  /** Initial CRLs (PEM); refused like any update when invalid. */
  readonly crls?: readonly string[];
  /** Clock for the nextUpdate check; tests pass their own. */
  readonly now?: () => Date;
}

export class CrlRevocationSource implements RevocationSource {
  readonly #issuers: CertificateInfo[];
  readonly #now: () => Date;
  readonly #listeners = new Set<(revokedSerials: readonly string[]) => void>();
  #crls: readonly CrlInfo[] = [];
  #revoked: ReadonlySet<string> = new Set();

  constructor(options: CrlRevocationSourceOptions) {
    const inputs =
      typeof options.issuers === 'string' || Buffer.isBuffer(options.issuers)
        ? [options.issuers]
        : options.issuers;
    this.#issuers = inputs.flatMap((input) =>
      readCertificates(input, 'CRL issuer').map((der) => parseCertificate(der, 'CRL issuer')),
    );
    this.#now = options.now ?? (() => new Date());
    if (options.crls) this.update(options.crls);
  }

  /** The CRLs in use. */
  get crls(): readonly CrlInfo[] {
    return this.#crls;
  }

  /**
   * Replace the CRLs in use with `crls` (one per issuer is typical). All are
   * checked before any is applied; listeners then hear the serials that were
   * not revoked before. Returns those serials.
   */
  update(crls: readonly string[]): string[] {
    const now = this.#now();
    const checked = crls.map((pem, index) => this.#check(pem, index, now));
    const revoked = new Set<string>();
    for (const crl of checked) for (const entry of crl.entries) revoked.add(normalizeSerial(entry.serialHex));
    const fresh = [...revoked].filter((serial) => !this.#revoked.has(serial));
    this.#crls = checked;
    this.#revoked = revoked;
    if (fresh.length > 0) notifyAll(this.#listeners, fresh);
    return fresh;
  }

  #check(pem: string, index: number, now: Date): CrlInfo {
    const source = `CRL #${index + 1}`;
    const crl = parseCrl(pem, source);
    const from = `${source} from "${crl.issuer}"`;
    if (crl.nextUpdate && crl.nextUpdate.getTime() <= now.getTime()) {
      throw preconditionFailed(
        `${from} expired at ${crl.nextUpdate.toISOString()} (its nextUpdate has passed); keeping the previous CRL`,
      );
    }
    const signer = this.#issuers.find(
      (ca) => ca.subject === crl.issuer && verifyCrlSignature(crl.der, ca.der),
    );
    if (!signer) {
      throw preconditionFailed(`${from} is not signed by any configured CA; keeping the previous CRL`);
    }
    // A CRL older than the one in use would silently un-revoke certificates (a replay).
    const current = this.#crls.find((c) => c.issuer === crl.issuer);
    if (current?.crlNumber != null && crl.crlNumber != null && crl.crlNumber < current.crlNumber) {
      throw preconditionFailed(
        `${from} has CRL number ${crl.crlNumber}, older than the ${current.crlNumber} in use; keeping the previous CRL`,
      );
    }
    return crl;
  }

  isRevoked(serialHex: string): boolean {
    return this.#revoked.has(serialHex);
  }

  subscribe(listener: (revokedSerials: readonly string[]) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }
}
