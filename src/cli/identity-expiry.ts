// How long the identity a command calls with has left, and the warning
// `sigil status` prints once it is in its renewal window (the last third of
// its life, when sigil renews every certificate it keeps itself). The admin
// identity in a server's data directory is renewed by that server while it
// runs (server/admin-renewal.ts); anything else is the holder's to renew.
import { X509Certificate } from 'node:crypto';
import { renewalDue } from '../authority/lifetimes.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';

export interface IdentityExpiry {
  readonly spiffeId: string | null;
  readonly notAfter: string;
  /** When its renewal window opens (2/3 of its life). */
  readonly renewFrom: string;
  /** Whole days left, rounded down (negative once expired). */
  readonly daysLeft: number;
  /** Present once the identity is in its renewal window. */
  readonly warning: string | null;
}

const DAY_MS = 86_400_000;

function spiffeIdOf(der: Buffer): string | null {
  return /URI:(spiffe:\/\/[^\s,]+)/.exec(new X509Certificate(der).subjectAltName ?? '')?.[1] ?? null;
}

/**
 * The expiry of the leaf in `chainPem`. `source` says where it was read
 * from; `fromDataDirectory` when it is a server data directory's admin.pem.
 */
export function identityExpiry(
  chainPem: string,
  source: string,
  options: { fromDataDirectory: boolean; now?: Date },
): IdentityExpiry {
  const leaf = parseCertificate(readCertificates(chainPem, source)[0], source);
  const now = options.now ?? new Date();
  const due = renewalDue(leaf.notBefore, leaf.notAfter);
  const daysLeft = Math.floor((leaf.notAfter.getTime() - now.getTime()) / DAY_MS);
  const spiffeId = spiffeIdOf(leaf.der);
  let warning: string | null = null;
  if (now.getTime() >= due) {
    const what = `the identity this command used (${spiffeId ?? leaf.subject}, from ${source})`;
    const when =
      now.getTime() >= leaf.notAfter.getTime()
        ? `expired on ${leaf.notAfter.toISOString()}`
        : `expires on ${leaf.notAfter.toISOString()} (${daysLeft < 1 ? 'in less than a day' : `in ${daysLeft} day${daysLeft === 1 ? '' : 's'}`})`;
    const fix = options.fromDataDirectory
      ? '`sigil server` renews this admin.pem (same key) within the hour while it runs with this data directory; start it, or check its log'
      : "renew it before then: a node's identity with `sigil agent`, a copied admin identity by copying the data directory's renewed admin.pem again";
    warning = `${what} ${when}: ${fix}`;
  }
  return {
    spiffeId,
    notAfter: leaf.notAfter.toISOString(),
    renewFrom: new Date(due).toISOString(),
    daysLeft,
    warning,
  };
}
