// What a client checks about the server beyond "its chain is valid". OpenSSL
// has already validated the chain against the trust bundle when these run
// (Node calls checkServerIdentity only after a successful verification), so
// each check only narrows which verified server is acceptable; none can make
// an unverified one acceptable. Checks compose with verifyAll.
//
// Error messages name what was expected and what was presented (names,
// SPIFFE IDs, fingerprints: all public) and never any key material.

import { createHash } from 'node:crypto';
import { checkServerIdentity, type DetailedPeerCertificate, type PeerCertificate } from 'node:tls';
import { invalid, type SigilError, unauthenticated } from '../errors.ts';
import { parseSpiffeId, type SpiffeId } from '../pki/names.ts';
import { SubjectAlternativeNameExtension, X509Certificate } from '../pki/x509-library.ts';

/** The server as the client sees it at the end of the handshake. */
export interface PresentedServer {
  /** The name the client is connecting to (server-name override, else the target host). */
  readonly serverName: string;
  /** The peer certificate as Node gives it; with `issuerCertificate` links when detailed. */
  readonly certificate: PeerCertificate | DetailedPeerCertificate;
}

export interface ServerVerification {
  /** What the check requires, for messages: e.g. `SPIFFE ID "spiffe://td/api"`. */
  readonly description: string;
  /** Undefined when the server passes; otherwise an error naming expected and presented values. */
  check(server: PresentedServer): SigilError | undefined;
}

/**
 * The server certificate must be valid for a DNS name or IP address, with
 * Node's tls.checkServerIdentity semantics (DNS SANs with a leftmost "*"
 * label, IP SANs for IP literals). Without `name`, the connection's server
 * name is used, which is what a TLS client does by default.
 */
export function verifyServerName(name?: string): ServerVerification {
  if (name !== undefined && name.trim() === '') throw invalid('the expected server name is empty');
  return {
    description: name === undefined ? 'the server name' : `server name ${JSON.stringify(name)}`,
    check(server) {
      const expected = name ?? server.serverName;
      const error = checkServerIdentity(expected, server.certificate) as
        | (Error & { reason?: string })
        | undefined;
      if (error === undefined) return undefined;
      const names = server.certificate.subjectaltname;
      return unauthenticated(
        `server certificate is not valid for ${JSON.stringify(expected)} (${error.reason ?? error.message}); ` +
          `it names ${names ? names : 'no subject alternative names'}`,
      );
    },
  };
}

interface SpiffePattern {
  readonly text: string;
  /** Exact ID, or the trust domain when the pattern is "spiffe://<td>/*". */
  readonly exact?: string;
  readonly trustDomain?: string;
}

function spiffePattern(text: string): SpiffePattern {
  if (text.endsWith('/*')) {
    const base = text.slice(0, -2);
    if (!base.includes('*')) {
      const parsed = parseSpiffeId(base);
      if (parsed.path === '') return { text, trustDomain: parsed.trustDomain };
    }
  }
  if (text.includes('*')) {
    throw invalid(
      `SPIFFE ID pattern ${JSON.stringify(text)} is not supported: give an exact SPIFFE ID, or ` +
        '"spiffe://<trust-domain>/*" for any workload of a trust domain (partial wildcards would match more than intended)',
    );
  }
  return { text, exact: parseSpiffeId(text).id };
}

/** URI SANs of a DER certificate, in certificate order. */
function uriSans(der: Buffer): string[] {
  const sans = new X509Certificate(der).getExtension(SubjectAlternativeNameExtension);
  return (sans?.names.items ?? []).filter((name) => name.type === 'url').map((name) => name.value);
}

/**
 * The server's SPIFFE ID must be one of `expected`. The ID is the
 * certificate's single URI SAN (an X.509-SVID has exactly one); the common
 * name is never consulted. Comparison is exact, with no normalisation.
 *
 * Besides exact IDs, "spiffe://<trust-domain>/*" accepts any workload ID
 * (non-empty path) in that trust domain, for clients that trust a whole
 * domain and authorize per call. Any other "*" (e.g. "spiffe://td/svc-*")
 * is refused here, at configuration time, because prefix matches on paths
 * silently grow with every new service name.
 */
export function verifySpiffeId(expected: string | readonly string[]): ServerVerification {
  const list = typeof expected === 'string' ? [expected] : [...expected];
  if (list.length === 0) throw invalid('verifySpiffeId needs at least one expected SPIFFE ID');
  const patterns = list.map(spiffePattern);
  const wanted =
    patterns.length === 1
      ? `SPIFFE ID ${JSON.stringify(patterns[0].text)}`
      : `one of the SPIFFE IDs ${patterns.map((p) => JSON.stringify(p.text)).join(', ')}`;
  return {
    description: wanted,
    check(server) {
      const uris = uriSans(server.certificate.raw);
      if (uris.length !== 1) {
        return unauthenticated(
          `server identity rejected: expected ${wanted}, but the server certificate has ${uris.length} URI SANs ` +
            `(a SPIFFE certificate has exactly one)${uris.length > 0 ? `: ${uris.map((u) => JSON.stringify(u)).join(', ')}` : ''}`,
        );
      }
      const presented = uris[0];
      let parsed: SpiffeId;
      try {
        parsed = parseSpiffeId(presented);
      } catch {
        return unauthenticated(
          `server identity rejected: expected ${wanted}, but the server presented ${JSON.stringify(presented)}, which is not a valid SPIFFE ID`,
        );
      }
      const ok = patterns.some((p) =>
        p.exact !== undefined
          ? p.exact === presented
          : p.trustDomain === parsed.trustDomain && parsed.path !== '',
      );
      if (ok) return undefined;
      return unauthenticated(
        `server identity rejected: expected ${wanted}, the server presented ${JSON.stringify(presented)}`,
      );
    },
  };
}

/**
 * A SHA-256 certificate fingerprint as lower-case hex: accepts upper or lower
 * case, plain ("ab12…") or colon-separated pairs ("AB:12:…").
 */
export function parseFingerprint(text: string): string {
  const trimmed = text.trim();
  const plain = /^[0-9a-fA-F]{64}$/.test(trimmed);
  const colons = /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}$/.test(trimmed);
  if (!plain && !colons) {
    throw invalid(
      `invalid SHA-256 fingerprint ${JSON.stringify(trimmed.length > 120 ? `${trimmed.slice(0, 120)}…` : trimmed)}: ` +
        'expected 64 hex digits, optionally as colon-separated pairs',
    );
  }
  return trimmed.replaceAll(':', '').toLowerCase();
}

/** The presented leaf and every issuer Node linked to it (the chain OpenSSL verified, root included). */
function presentedChain(certificate: PeerCertificate | DetailedPeerCertificate): PeerCertificate[] {
  const chain: PeerCertificate[] = [];
  const seen = new Set<string>();
  let current: PeerCertificate | undefined = certificate;
  while (current?.raw !== undefined) {
    const fingerprint = createHash('sha256').update(current.raw).digest('hex');
    if (seen.has(fingerprint)) break; // a root links to itself
    seen.add(fingerprint);
    chain.push(current);
    current =
      'issuerCertificate' in current ? (current as DetailedPeerCertificate).issuerCertificate : undefined;
  }
  return chain;
}

/**
 * Monogon-style pinning: some certificate in the server's verified chain
 * (leaf, intermediate or root) must have one of these SHA-256 fingerprints.
 * Pin a CA to accept any server it certifies, or a leaf to accept exactly one.
 */
export function verifyPinnedFingerprint(fingerprints: string | readonly string[]): ServerVerification {
  const list = (typeof fingerprints === 'string' ? [fingerprints] : [...fingerprints]).map(parseFingerprint);
  if (list.length === 0) throw invalid('verifyPinnedFingerprint needs at least one fingerprint');
  const pinned = new Set(list);
  const wanted = `a certificate with SHA-256 fingerprint ${list.join(' or ')}`;
  return {
    description: wanted,
    check(server) {
      const chain = presentedChain(server.certificate);
      const presented = chain.map((cert) => ({
        subject: cert.subject?.CN ?? '(no common name)',
        fingerprint: createHash('sha256').update(cert.raw).digest('hex'),
      }));
      if (presented.some((cert) => pinned.has(cert.fingerprint))) return undefined;
      return unauthenticated(
        `server identity rejected: expected ${wanted} in the server's chain, presented ` +
          presented.map((cert) => `${JSON.stringify(cert.subject)} ${cert.fingerprint}`).join(', '),
      );
    },
  };
}

/** Every check must pass; the first failure is reported. */
export function verifyAll(...checks: readonly ServerVerification[]): ServerVerification {
  if (checks.length === 0) throw invalid('verifyAll needs at least one check');
  return {
    description: checks.map((c) => c.description).join(' and '),
    check(server) {
      for (const c of checks) {
        const error = c.check(server);
        if (error !== undefined) return error;
      }
      return undefined;
    },
  };
}

/**
 * A Node `checkServerIdentity` callback running `verification`, for plain
 * tls.connect users. `serverName` fixes the name checked by
 * verifyServerName(); by default it is the name Node connects to.
 */
export function toCheckServerIdentity(
  verification: ServerVerification,
  serverName?: string,
): (hostname: string, certificate: PeerCertificate) => Error | undefined {
  return (hostname, certificate) => verification.check({ serverName: serverName ?? hostname, certificate });
}
