// The bootstrap admin identity renews itself while the server runs.
//
// `sigil server` writes admin.pem / admin.key into its data directory at
// bootstrap; the certificate lives a year (ADMIN_TTL_MS). Every operator
// command run with `--data DIR` (the default ./.sigil) authenticates with
// it. So the server that owns the directory renews admin.pem in place once
// it is in its renewal window (2/3 of its life, as every sigil certificate):
// same key (admin.key is never touched), same SPIFFE ID, a new year. It
// checks at start and then hourly; the file is replaced atomically (0600),
// so a command reading it sees the old or the new certificate, both valid.
//
// An admin.pem copied elsewhere (an --identity directory) is not renewed:
// `sigil status` warns when the identity it calls with is in its renewal
// window, and copying the data directory's admin.pem again renews it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Authority } from '../authority/authority.ts';
import { MAINTENANCE_INTERVAL_MS, renewalDue } from '../authority/lifetimes.ts';
import { firstLineOf, SigilError } from '../errors.ts';
import { ADMIN_CERTIFICATE_FILE } from '../files/data-directory-names.ts';
import type { Logger } from '../logging.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';
import { encodePem } from '../pki/pem.ts';
import { writeFileAtomically } from './data-directory.ts';

export type AdminRenewalOutcome = 'renewed' | 'not-due' | 'absent' | 'refused';

export interface AdminRenewalOptions {
  readonly dataDir: string;
  readonly authority: Authority;
  readonly logger: Logger;
  /** The clock the renewal window is judged by (tests move it); issuance uses the authority's. */
  readonly now?: () => Date;
}

export class AdminRenewal {
  readonly #options: AdminRenewalOptions;
  readonly #path: string;
  readonly #now: () => Date;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<AdminRenewalOutcome> | undefined;
  #lastProblem: string | undefined;

  constructor(options: AdminRenewalOptions) {
    this.#options = options;
    this.#path = join(options.dataDir, ADMIN_CERTIFICATE_FILE);
    this.#now = options.now ?? (() => new Date());
  }

  /** Renews admin.pem when it is in its renewal window. Never rejects; problems are logged once. */
  check(): Promise<AdminRenewalOutcome> {
    this.#running ??= this.#check().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** Checks every hour until close(); the timer never keeps the process alive. */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.check(), MAINTENANCE_INTERVAL_MS);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #check(): Promise<AdminRenewalOutcome> {
    const { logger, authority } = this.#options;
    let pem: string;
    try {
      pem = readFileSync(this.#path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      return this.#problem(`cannot read ${this.#path}: ${firstLineOf(error)}`);
    }
    let leaf: ReturnType<typeof parseCertificate>;
    try {
      leaf = parseCertificate(readCertificates(pem, this.#path)[0], this.#path);
    } catch (error) {
      return this.#problem(`${this.#path} is not usable: ${firstLineOf(error)}`);
    }
    const due = renewalDue(leaf.notBefore, leaf.notAfter);
    if (this.#now().getTime() < due) return 'not-due';
    try {
      const issued = await authority.renewAdminIdentity(leaf.der);
      const chain = [issued.certificate, ...issued.chain]
        .map((der) => encodePem('CERTIFICATE', der))
        .join('');
      writeFileAtomically(this.#path, chain, 0o600);
      this.#lastProblem = undefined;
      logger.info(
        {
          path: this.#path,
          serial: issued.serial,
          previousSerial: leaf.serialHex,
          notAfter: issued.notAfter.toISOString(),
        },
        'renewed the admin identity in the data directory (same key)',
      );
      return 'renewed';
    } catch (error) {
      const message = error instanceof SigilError ? error.message : firstLineOf(error);
      return this.#problem(
        `the admin identity ${this.#path} (expires ${leaf.notAfter.toISOString()}) was not renewed: ${message}`,
      );
    }
  }

  #problem(message: string): 'refused' {
    if (message !== this.#lastProblem) {
      this.#lastProblem = message;
      this.#options.logger.warn({ path: this.#path }, message);
    }
    return 'refused';
  }
}
