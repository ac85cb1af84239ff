// What a client checks about the server beyond "its chain is valid". OpenSSL
// has already validated the chain against the trust bundle when these run
// (Node calls checkServerIdentity only after a successful verification), so
// each check only narrows which verified server is acceptable; none can make
// an unverified one acceptable. Checks compose with verifyAll.
//
// Error messages name what was expected and what was presented (names,
// SPIFFE IDs, fingerprints: all public) and never any key material.

import type { X509Certificate as NodeX509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { checkServerIdentity, type DetailedPeerCertificate, type PeerCertificate } from 'node:tls';
import * as asn1js from 'asn1js';
import { firstLineOf, invalid, type SigilError, unauthenticated } from '../errors.ts';
import { canonicalFingerprint, sha256Hex } from '../pki/fingerprint.ts';
import { ipAddress, parseSpiffeId, type SpiffeId } from '../pki/names.ts';
import { SubjectAlternativeNameExtension, X509Certificate } from '../pki/x509-library.ts';

/** The server as the client sees it at the end of the handshake. */
export interface PresentedServer {
  /** The name the client is connecting to (server-name override, else the target host). */
  readonly serverName: string;
  /**
   * The peer certificate as Node gives it; with `issuerCertificate` links
   * when detailed. Those links are Node's guess by name and key identifier
   * among what the server sent, not the chain OpenSSL verified: never decide
   * who issued what from them (use `presented` and `trusted`, by signature).
   */
  readonly certificate: PeerCertificate | DetailedPeerCertificate;
  /** Every certificate the server sent, its leaf first (any order after it). */
  readonly presented?: readonly NodeX509Certificate[];
  /** The CAs this client trusts (its trust bundle): OpenSSL anchored the chain at one of them. */
  readonly trusted?: readonly NodeX509Certificate[];
}

export interface ServerVerification {
  /** What the check requires, for messages: e.g. `SPIFFE ID "spiffe://td/api"`. */
  readonly description: string;
  /** Undefined when the server passes; otherwise an error naming expected and presented values. */
  check(server: PresentedServer): SigilError | undefined;
}

export interface ServerNameOptions {
  /**
   * Match exactly as Node's tls.checkServerIdentity does, for the rare peer
   * whose certificate only works that way: a certificate without DNS SANs is
   * then matched by its subject common name (even when it has IP SANs), and
   * partial-label wildcards ("b*z.example.com") match. Go's crypto/x509 and
   * rustls dropped both; sigil does not use them unless asked. Default false.
   */
  readonly nodeCheckServerIdentity?: boolean;
}

/**
 * The server certificate must be valid for a DNS name or IP address. Without
 * `name`, the connection's server name is used, which is what a TLS client
 * does by default.
 *
 * Matching (RFC 6125 / RFC 9525 as Go and rustls apply it): a host name
 * matches only a DNS subjectAltName, case-insensitively, one trailing dot
 * ignored; a wildcard is only ever a whole leftmost label ("*.example.com"
 * matches "a.example.com", not "example.com" nor "a.b.example.com"), never
 * for a single-label parent ("*.com"), never partial ("b*z.example.com",
 * "*z.example.com"). An IP address matches only an IP subjectAltName, byte
 * for byte, and never a wildcard. The subject common name is never consulted.
 *
 * `{ nodeCheckServerIdentity: true }` restores Node's tls.checkServerIdentity
 * semantics instead (common-name fallback, partial wildcards); see
 * ServerNameOptions.
 */
export function verifyServerName(name?: string, options: ServerNameOptions = {}): ServerVerification {
  if (name !== undefined && name.trim() === '') throw invalid('the expected server name is empty');
  const legacy = options.nodeCheckServerIdentity === true;
  const what = name === undefined ? 'the server name' : `server name ${JSON.stringify(name)}`;
  return {
    description: legacy ? `${what} (Node's checkServerIdentity rules)` : what,
    check(server) {
      const expected = name ?? server.serverName;
      if (legacy) {
        const error = checkServerIdentity(expected, server.certificate) as
          | (Error & { reason?: string })
          | undefined;
        if (error === undefined) return undefined;
        const names = server.certificate.subjectaltname;
        return unauthenticated(
          `server certificate is not valid for ${JSON.stringify(expected)} (${error.reason ?? error.message}); ` +
            `it names ${names ? names : 'no subject alternative names'}`,
        );
      }
      let sans: SubjectNames;
      try {
        sans = subjectNames(server.certificate.raw);
      } catch (error) {
        return unauthenticated(
          `server certificate is not valid for ${JSON.stringify(expected)}: its subjectAltName cannot be read ` +
            `(${firstLineOf(error)})`,
        );
      }
      const reason = nameMismatch(expected, sans);
      if (reason === undefined) return undefined;
      const listed = [
        ...sans.dns.map((d) => `DNS:${NAME_CHARACTERS.test(d) ? d : JSON.stringify(d)}`),
        ...sans.ips.map((ip) => `IP Address:${ipText(ip)}`),
      ];
      return unauthenticated(
        `server certificate is not valid for ${JSON.stringify(expected)} (${reason}); ` +
          `it names ${listed.length > 0 ? listed.join(', ') : 'no DNS or IP subject alternative names'} ` +
          '(the subject common name is not used for host names)',
      );
    },
  };
}

interface SubjectNames {
  /** DNS SANs, as written (IA5String bytes read as Latin-1). */
  readonly dns: readonly string[];
  /** IP SANs, the 4 or 16 bytes as written (any other length never matches). */
  readonly ips: readonly Buffer[];
}

const SUBJECT_ALT_NAME = '2.5.29.17';

function decode(bytes: Uint8Array): asn1js.AsnType {
  // Embedded DER (extension values, keys, signatures) is decoded only when asked for.
  const { offset, result } = asn1js.fromBER(bytes, { parseEmbedded: false, copyInput: false });
  if (offset === -1 || offset !== bytes.byteLength) throw new Error('malformed DER');
  return result;
}

function items(node: asn1js.AsnType | undefined, what: string): asn1js.AsnType[] {
  if (!(node instanceof asn1js.Sequence)) throw new Error(`${what} is not a SEQUENCE`);
  return node.valueBlock.value;
}

/**
 * DNS and IP SANs of a DER certificate, read with asn1js. Only the
 * subjectAltName extension is decoded, so a malformed extension that plays no
 * part here (OpenSSL accepted the certificate) does not decide the name check.
 */
function subjectNames(der: Buffer): SubjectNames {
  const tbs = items(items(decode(der), 'Certificate')[0], 'TBSCertificate');
  const extensions = tbs.find((item) => item.idBlock.tagClass === 3 && item.idBlock.tagNumber === 3);
  const dns: string[] = [];
  const ips: Buffer[] = [];
  if (extensions === undefined) return { dns, ips };
  for (const extension of items((extensions as asn1js.Constructed).valueBlock.value[0], 'extensions')) {
    const parts = items(extension, 'Extension');
    const oid = parts[0];
    if (!(oid instanceof asn1js.ObjectIdentifier) || oid.valueBlock.toString() !== SUBJECT_ALT_NAME) continue;
    const value = parts[parts.length - 1];
    if (!(value instanceof asn1js.OctetString)) throw new Error('extnValue is not an OCTET STRING');
    for (const name of items(decode(value.valueBlock.valueHexView), 'subjectAltName')) {
      if (name.idBlock.tagClass !== 3 || name.idBlock.isConstructed) continue;
      const bytes = Buffer.from((name as asn1js.Primitive).valueBlock.valueHexView);
      if (name.idBlock.tagNumber === 2) dns.push(bytes.toString('latin1')); // dNSName [2] IA5String
      if (name.idBlock.tagNumber === 7) ips.push(bytes); // iPAddress [7] OCTET STRING
    }
  }
  return { dns, ips };
}

/** An IP SAN as text for messages. */
function ipText(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join('.');
  if (bytes.length === 16) {
    const words = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
    return ipAddress(words.join(':')).value;
  }
  return `<${bytes.length} bytes>`;
}

/** Why `expected` is not among the certificate's names, or undefined when it is. */
function nameMismatch(expected: string, sans: SubjectNames): string | undefined {
  const host = expected.endsWith('.') ? expected.slice(0, -1) : expected;
  if (isIP(host) !== 0) {
    let wanted: Buffer;
    try {
      wanted = ipAddress(host).bytes;
    } catch {
      return `${JSON.stringify(expected)} is not an IP address sigil can compare`;
    }
    if (sans.ips.some((bytes) => bytes.equals(wanted))) return undefined;
    return 'no IP address subjectAltName matches';
  }
  if (sans.dns.some((pattern) => dnsNameMatches(host, pattern))) return undefined;
  return 'no DNS subjectAltName matches';
}

/** Printable ASCII without space: anything else in a name is refused rather than compared. */
const NAME_CHARACTERS = /^[\x21-\x7e]+$/;

/**
 * RFC 6125 §6.4 host name matching with the one wildcard form every modern
 * stack agrees on: the whole leftmost label, above a parent of two or more labels.
 */
function dnsNameMatches(host: string, pattern: string): boolean {
  const wanted = host.toLowerCase();
  const presented = (pattern.endsWith('.') ? pattern.slice(0, -1) : pattern).toLowerCase();
  if (!NAME_CHARACTERS.test(wanted) || !NAME_CHARACTERS.test(presented)) return false;
  if (wanted.includes('*')) return false;
  const hostLabels = wanted.split('.');
  const patternLabels = presented.split('.');
  if (hostLabels.length !== patternLabels.length) return false;
  if (hostLabels.includes('') || patternLabels.includes('')) return false;
  for (let i = 1; i < patternLabels.length; i++) {
    if (patternLabels[i] !== hostLabels[i]) return false; // a "*" here is literal and never matches
  }
  if (patternLabels[0] === '*') return patternLabels.length >= 3;
  return patternLabels[0] === hostLabels[0]; // "b*z" is compared literally: no partial wildcards
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
  return canonicalFingerprint(trimmed);
}

/** The presented leaf and every issuer Node linked to it (the chain OpenSSL verified, root included). */
function presentedChain(certificate: PeerCertificate | DetailedPeerCertificate): PeerCertificate[] {
  const chain: PeerCertificate[] = [];
  const seen = new Set<string>();
  let current: PeerCertificate | undefined = certificate;
  while (current?.raw !== undefined) {
    const fingerprint = sha256Hex(current.raw);
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
        fingerprint: sha256Hex(cert.raw),
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
