// Who is on the other end of a call. OpenSSL has already verified the chain
// by the time a call exists; this only reads the facts authorization needs
// out of it: the SPIFFE ID, names, serial, fingerprint, expiry, extensions.
//
// On sigil's own server the chain was recorded once at handshake (see
// connection-registry.ts) and the identity is parsed once per connection. On
// a plain grpc-js TLS server there is no registry entry, and the identity comes
// from the leaf grpc-js exposes (chain = [leaf]).
import type { X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, SubjectAlternativeName } from '@peculiar/asn1-x509';
import { SigilError, unauthenticated } from '../errors.ts';
import { canonicalFingerprint } from '../pki/fingerprint.ts';
import { ipAddress, parseSpiffeId } from '../pki/names.ts';
import { canonicalSerial } from '../pki/serial.ts';
import { certificateParts } from './certificate-parts.ts';
import {
  connectionForCall,
  type LeafIssuer,
  type PeerCall,
  type TrackedConnection,
} from './connection-registry.ts';
import { type AdmittedDelegate, admittedDelegateOf } from './delegate-admission.ts';
import { type GeneralNameText, generalNamesDer } from './general-names-der.ts';
import type { WorkloadPeer } from './workload-peers.ts';

export type { PeerCall } from './connection-registry.ts';

export interface PeerExtension {
  readonly oid: string;
  readonly critical: boolean;
  /** The extnValue contents (DER of the extension's own structure). */
  readonly value: Buffer;
}

export interface PeerIdentity {
  /** The leaf's single spiffe:// URI SAN; null when it has none. */
  readonly spiffeId: string | null;
  /**
   * The leaf's subject distinguished name as text, most specific first, as
   * OpenSSL prints it with `-nameopt RFC2253` ("CN=web-1,O=sigil"; special
   * characters escaped per RFC 2253/4514, UTF-8 kept as is). For logs and
   * display: authorize on `spiffeId` (or SANs), never on the subject.
   */
  readonly subject: string;
  readonly dnsNames: readonly string[];
  /** Canonical text (IPv6 per RFC 5952). */
  readonly ipAddresses: readonly string[];
  /** Leaf serial in canonical form (pki/serial.ts). */
  readonly serial: string;
  /** The leaf's fingerprint (pki/fingerprint.ts): SHA-256 of its DER, lower-case hex. */
  readonly fingerprint: string;
  readonly notAfter: Date;
  /**
   * DER, leaf first, as Node reports the peer's chain: the leaf, then the
   * certificates it was linked to. Node versions affected by nodejs/node#65579
   * expose only the leaf on the server side, so rely on chain[0] alone.
   */
  readonly chain: readonly Buffer[];
  /** The leaf's extensions, in certificate order. */
  readonly extensions: readonly PeerExtension[];
  /**
   * Who issued the leaf, by signature: 'deployment' (one of the deployment's
   * own CAs: its SPIFFE ID means what it says), 'delegated' (beneath a
   * delegation: see `delegate`), or 'unknown' on a plain grpc-js server,
   * which cannot tell (authorizationInterceptor then needs
   * `deploymentAuthorities`).
   */
  readonly issuedBy: LeafIssuer | 'unknown';
  /**
   * For a delegate (and a command certificate): its admitted subtree and
   * effective policy. Null for every other peer.
   */
  readonly delegate: AdmittedDelegate | null;
  /**
   * For a workload identity (workload-peers.ts: a leaf the deployment signed
   * directly, named spiffe://<owner's delegation host>/workload/<name>, with
   * no policy): its owner's subtree, its name and the owner's SPIFFE ID. It
   * is still a deployment identity (`issuedBy` 'deployment', matched by
   * spiffeIds and spiffePatterns), never a delegate, and holds no
   * permissions. Null for every other peer, and on a plain grpc-js server.
   */
  readonly workload: WorkloadPeer | null;
}

const SUBJECT_ALT_NAME = '2.5.29.17';

/**
 * The leaf as Node reads it and its extensions (a fresh copy for the caller),
 * from the reading the strict chain checks already made of these bytes when
 * they ran (certificate-parts.ts). A certificate outside plain strict DER is
 * read by @peculiar/asn1-x509, as it always was. Fails closed: a certificate
 * the reader refuses is unusable.
 */
function readLeaf(der: Buffer): { leaf: X509Certificate; extensions: PeerExtension[] } {
  const parts = certificateParts(der);
  if ('nodeError' in parts) {
    throw new SigilError('unauthenticated', 'the peer certificate could not be parsed', {
      cause: parts.nodeError,
    });
  }
  if (!('structure' in parts) || !parts.structure.strictDer) {
    // Not plain strict DER: the library reads it (or refuses it) exactly as it always did.
    return { leaf: parts.node, extensions: libraryExtensions(der) };
  }
  const extensions = parts.structure.extensions.map((extension) => ({
    oid: extension.oid,
    critical: extension.critical,
    value: Buffer.from(extension.value),
  }));
  return { leaf: parts.node, extensions };
}

function libraryExtensions(der: Buffer): PeerExtension[] {
  let certificate: Certificate;
  try {
    certificate = AsnConvert.parse(der, Certificate);
  } catch (error) {
    throw new SigilError('unauthenticated', 'the peer certificate could not be parsed', { cause: error });
  }
  // A plain array, as the fast path gives (the library's Extensions.map would make an Extensions).
  return Array.from(certificate.tbsCertificate.extensions ?? [], (extension) => ({
    oid: extension.extnID,
    critical: extension.critical,
    value: Buffer.from(extension.extnValue.buffer),
  }));
}

type NameKind = 'dNSName' | 'iPAddress' | 'uniformResourceIdentifier';

interface Names {
  spiffeIds: string[];
  dnsNames: string[];
  ipAddresses: string[];
}

/** The leaf's SANs. Fails closed: a SAN we cannot read makes the identity unusable. */
function readNames(extensions: readonly PeerExtension[]): Names {
  const names: Names = { spiffeIds: [], dnsNames: [], ipAddresses: [] };
  const san = extensions.find((extension) => extension.oid === SUBJECT_ALT_NAME);
  if (!san) return names;
  let parsed: readonly GeneralNameText[] | SubjectAlternativeName;
  try {
    parsed = generalNamesDer(san.value);
  } catch {
    // Not the plain strict-DER shape: the library reads it (or refuses it) as it always did.
    try {
      parsed = AsnConvert.parse(san.value, SubjectAlternativeName);
    } catch (error) {
      throw new SigilError('unauthenticated', 'the peer certificate has a malformed subjectAltName', {
        cause: error,
      });
    }
  }
  for (const name of parsed as readonly Partial<Record<NameKind, string>>[]) {
    if (name.dNSName !== undefined) names.dnsNames.push(name.dNSName.toLowerCase());
    else if (name.iPAddress !== undefined) {
      try {
        names.ipAddresses.push(ipAddress(name.iPAddress).value);
      } catch {
        throw unauthenticated('the peer certificate has a malformed IP address SAN');
      }
    } else if (name.uniformResourceIdentifier !== undefined) {
      const uri = name.uniformResourceIdentifier;
      // Any spelling of the spiffe scheme counts, so "SPIFFE://…" cannot slip past as a plain URI.
      if (uri.slice(0, 7).toLowerCase() !== 'spiffe:') continue;
      try {
        names.spiffeIds.push(parseSpiffeId(uri).id);
      } catch (error) {
        throw unauthenticated(
          `the peer certificate has an invalid SPIFFE ID: ${error instanceof Error ? error.message : 'unreadable'}`,
        );
      }
    }
  }
  return names;
}

/**
 * RFC 2253 order and separators from Node's multi-line subject: Node prints
 * the name most significant first, one RDN per line, with RFC 2253 escaping
 * and control characters escaped (no value holds a raw newline, and a "+"
 * inside a value is "\\+"), multi-valued RDNs joined by " + ". OpenSSL
 * reverses the attributes of a multi-valued RDN too.
 */
function subjectText(leaf: X509Certificate): string {
  if (!leaf.subject) return '';
  return leaf.subject
    .split('\n')
    .reverse()
    .map((rdn) => rdn.split(' + ').reverse().join('+'))
    .join(',');
}

/** The identity in a verified chain (DER, leaf first). */
export function identityFromChain(
  chainDer: readonly Buffer[],
  issuedBy: LeafIssuer | 'unknown' = 'unknown',
  delegate: AdmittedDelegate | null = null,
  workload: WorkloadPeer | null = null,
): PeerIdentity {
  const leafDer = chainDer[0];
  if (!leafDer) throw unauthenticated('no client certificate on this call');
  const { leaf, extensions } = readLeaf(leafDer);
  const names = readNames(extensions);
  if (names.spiffeIds.length > 1) {
    // An X.509-SVID carries exactly one SPIFFE ID; two would make authorization ambiguous.
    throw unauthenticated(
      `the peer certificate (serial ${canonicalSerial(leaf.serialNumber)}) has ${names.spiffeIds.length} SPIFFE IDs; at most one is allowed`,
    );
  }
  return {
    spiffeId: names.spiffeIds[0] ?? null,
    subject: subjectText(leaf),
    dnsNames: names.dnsNames,
    ipAddresses: names.ipAddresses,
    serial: canonicalSerial(leaf.serialNumber),
    fingerprint: canonicalFingerprint(leaf.fingerprint256),
    notAfter: new Date(leaf.validTo),
    chain: [...chainDer],
    extensions,
    issuedBy,
    delegate,
    // Only a deployment identity can be a workload identity, and only with the name it claims.
    workload:
      issuedBy === 'deployment' && delegate === null && workload?.spiffeId === names.spiffeIds[0]
        ? workload
        : null,
  };
}

// Parsed once per connection, on first use; dropped with the connection.
const identities = new WeakMap<TrackedConnection, PeerIdentity>();

function identityOfConnection(connection: TrackedConnection): PeerIdentity {
  let identity = identities.get(connection);
  const delegate = admittedDelegateOf(connection);
  if (!identity || identity.delegate !== delegate) {
    identity = identityFromChain(
      connection.chain,
      connection.issuedBy,
      delegate,
      connection.workload ?? null,
    );
    identities.set(connection, identity);
  }
  if (identity.issuedBy === 'delegated' && identity.delegate === null) {
    // Admission holds every call of such a connection; reaching here means it did not run.
    throw new SigilError(
      'permission_denied',
      'the client certificate lies beneath a delegation that was not admitted',
    );
  }
  return identity;
}

/**
 * The peer identity of a call: unary and streaming handlers, and server
 * interceptors. Throws unauthenticated() when the call carries no client
 * certificate (or one whose names cannot be read).
 */
export function peerIdentity(call: PeerCall): PeerIdentity {
  const connection = connectionForCall(call);
  if (connection) return identityOfConnection(connection);
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  if (!raw) throw unauthenticated('no client certificate on this call');
  return identityFromChain([raw]);
}
