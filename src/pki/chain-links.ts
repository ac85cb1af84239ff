// Which CA certificates stand above a delegate's verified leaf. OpenSSL has
// validated the path the client presented in its handshake (signatures,
// validity, pathLen, name constraints) before any call exists, but Node hides
// the presented intermediates from the server (nodejs/node#65579), so the
// client sends them again as call metadata (protocol/chain-metadata.ts).
//
// Nothing in that metadata is taken on its word: starting at the verified
// leaf, each step must be a CA certificate that names the current one's
// issuer (X509Certificate.checkIssued: issuer name, AKI/SKI) and whose key
// verifies the current one's signature, valid now, until a certificate is
// signed by one of this control plane's own CAs. A certificate signed by a
// delegation's key was made by that delegation, so the result is exactly the
// authority the leaf holds; checkDelegationChain then decides what it grants.
import { X509Certificate } from 'node:crypto';
import { SigilError } from '../errors.ts';
import { fingerprintOf, serialHexOf } from './certificate.ts';

export interface LinkedCertificate {
  readonly der: Buffer;
  readonly certificate: X509Certificate;
  /** SHA-256 of the DER, lower-case hex. */
  readonly fingerprint: string;
  /** Lower-case hex, no leading zeros. */
  readonly serial: string;
  /** Signed directly by one of the control plane's CAs. */
  readonly issuedByServer: boolean;
}

export interface LinkedChain {
  /** Leaf first, then the presented CAs that link it up to the control plane. */
  readonly links: readonly LinkedCertificate[];
  /** The control plane CA the topmost link was signed by (an intermediate or the root). */
  readonly anchor: X509Certificate;
}

/** Longest chain accepted (leaf first, root excluded); ten or more are refused. */
export const MAX_LINKS = 9;

const refused = (message: string): SigilError => new SigilError('permission_denied', message);

function signs(issuer: X509Certificate, subject: X509Certificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function validAt(certificate: X509Certificate, now: Date): boolean {
  const t = now.getTime();
  return new Date(certificate.validFrom).getTime() <= t && t <= new Date(certificate.validTo).getTime();
}

/**
 * Links `leafDer` through `presented` to one of `serverCas`. Refuses
 * (permission_denied) unreadable certificates, a gap, a link that is not a
 * CA or not valid at `now`, and chains longer than MAX_LINKS.
 */
export function linkPresentedChain(
  leafDer: Buffer,
  presented: readonly Buffer[],
  serverCas: readonly X509Certificate[],
  now: Date,
): LinkedChain {
  const parse = (der: Buffer, what: string): X509Certificate => {
    try {
      return new X509Certificate(der);
    } catch {
      throw refused(`${what} is not a readable certificate`);
    }
  };
  const candidates = presented.map((der, index) => parse(der, `presented chain certificate #${index + 1}`));
  const links: LinkedCertificate[] = [];
  let current = parse(leafDer, 'the client certificate');
  const used = new Set<X509Certificate>();
  for (;;) {
    const anchor = serverCas.find((ca) => signs(ca, current));
    links.push({
      der: current.raw,
      certificate: current,
      fingerprint: fingerprintOf(current),
      serial: serialHexOf(current),
      issuedByServer: anchor !== undefined,
    });
    if (links.length > MAX_LINKS) {
      throw refused(`the certificate chain has more than ${MAX_LINKS} certificates (root excluded)`);
    }
    if (anchor) return { links, anchor };
    // Several certificates may share a key (a renewed delegation): take one
    // that can sign now, whatever order they came in.
    const signers = candidates.filter((candidate) => !used.has(candidate) && signs(candidate, current));
    const issuer = signers.find((candidate) => candidate.ca && validAt(candidate, now));
    if (!issuer) {
      const [first] = signers;
      const subject = (c: X509Certificate) => c.subject.replaceAll('\n', ', ');
      if (!first) {
        throw refused(
          `the chain of "${subject(current)}" does not lead to this control plane's CAs (send the chain's CA certificates in sigil-chain-bin)`,
        );
      }
      if (!first.ca) throw refused(`"${subject(first)}" signs a certificate but is not a CA`);
      throw refused(`"${subject(first)}" in the chain is not valid at ${now.toISOString()}`);
    }
    used.add(issuer);
    current = issuer;
  }
}
