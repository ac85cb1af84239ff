// Extra structural checks on a certificate chain that OpenSSL has ALREADY
// verified during the TLS handshake.
//
// What this is. OpenSSL checks a set of RFC 5280 profile rules only under
// X509_V_FLAG_X509_STRICT (the -x509_strict of `openssl verify`), and Node's
// TLS never sets that flag (nor can sigil set it through Node). So a chain
// whose root lacks a critical basicConstraints, whose intermediate has no
// authority key identifier, or whose leaf may sign certificates, passes a Node
// handshake. The rules below are the well-defined ones among them, plus two
// RFC 5280 MUSTs OpenSSL never checks (name-constraints-misuse,
// policy-constraints-not-critical): each is a MUST of RFC 5280, each but those
// two is refused by OpenSSL's strict mode (its check_extensions()), and every
// certificate sigil issues (src/pki/issuer.ts) meets them all. Optionally the
// number of intermediates is bounded, a limit OpenSSL has but Node does not
// let a caller set.
//
// What this is not: a second path validation. Nothing here builds a chain,
// checks a signature, a validity period, a name constraint, a policy or a
// revocation; the chain arrives already built and verified by OpenSSL (leaf
// first, ending at the trust anchor), and every rule can only refuse such a
// chain, never accept one OpenSSL refused. DESIGN.md: path validation is
// OpenSSL's job.
//
// The trust anchor is the last certificate when it is self-issued (Node's TLS
// does not accept partial chains, so a verified path always ends at a
// self-issued root). A server sees only the client's leaf plus the CAs it
// knows itself (nodejs/node#65579, see readPeerChain in
// connection-registry.ts); a chain that stops before a self-issued
// certificate is checked as far as it goes, which is still sound for every
// rule here (each concerns one certificate and its own position).
//
// Certificates are read with Node's X509Certificate and sigil's strict DER
// reader, or asn1js for anything that is not plain strict DER
// (certificate-parts.ts, shared with the peer identity, and
// extension-values-der.ts); what a certificate's rules need is cached by the
// SHA-256 of its DER, so the CAs shared by every connection are parsed once,
// and other bytes are always judged afresh.
import type { X509Certificate as NodeX509Certificate } from 'node:crypto';
import * as asn1js from 'asn1js';
import { firstLineOf, invalid, type SigilError, unauthenticated } from '../errors.ts';
import { BoundedCertificateCache } from './certificate-cache.ts';
import { certificateParts, contextTag, decode, sequenceItems } from './certificate-parts.ts';
import type { CertificateStructure } from './certificate-structure.ts';
import {
  basicConstraintsDer,
  hasKeyIdentifierDer,
  itemCountDer,
  keyUsageDer,
  subtreesEmptyDer,
} from './extension-values-der.ts';

/** The rules, by the name their refusals carry. */
export type ChainRule =
  | 'unreadable-certificate'
  | 'issuer-not-ca'
  | 'ca-basic-constraints-not-critical'
  | 'ca-missing-key-usage'
  | 'ca-missing-subject-key-identifier'
  | 'missing-authority-key-identifier'
  | 'critical-key-identifier'
  | 'non-ca-key-cert-sign'
  | 'path-length-misuse'
  | 'empty-issuer'
  | 'empty-subject'
  | 'empty-extension'
  | 'signature-algorithm-mismatch'
  | 'extensions-require-v3'
  | 'name-constraints-misuse'
  | 'policy-constraints-not-critical'
  | 'max-chain-depth';

export interface ChainStrictnessOptions {
  /**
   * The most intermediate CAs allowed between the leaf and the trust anchor
   * (0: the anchor issues the leaf directly). Counted as RFC 5280 counts a
   * pathLenConstraint: self-issued intermediates (a CA's key rollover) do not
   * count. Default: no limit beyond OpenSSL's own (100).
   */
  readonly maxChainDepth?: number;
}

/** Throws invalid_argument for an unusable option; the checks themselves never throw. */
export function checkChainStrictnessOptions(options: ChainStrictnessOptions): void {
  const depth = options.maxChainDepth;
  if (depth !== undefined && (!Number.isInteger(depth) || depth < 0)) {
    throw invalid(`maxChainDepth must be a whole number of intermediates, 0 or more (got ${depth})`);
  }
}

/** What the rules need of one certificate, independent of its position. */
interface CertificateFacts {
  /** The subject on one line, for messages. */
  readonly label: string;
  readonly version: number;
  readonly selfIssued: boolean;
  readonly issuerEmpty: boolean;
  readonly subjectEmpty: boolean;
  readonly extensionCount: number;
  readonly basicConstraints?: { readonly critical: boolean; readonly ca: boolean; readonly pathLen?: number };
  readonly keyUsage?: { readonly keyCertSign: boolean; readonly cRLSign: boolean };
  readonly authorityKeyId?: { readonly critical: boolean; readonly hasKeyId: boolean };
  readonly subjectKeyId?: { readonly critical: boolean };
  readonly subjectAltName?: { readonly critical: boolean; readonly count: number };
  readonly extendedKeyUsageCount?: number;
  readonly nameConstraintsEmpty?: boolean;
  /** A policyConstraints or inhibitAnyPolicy extension that is not critical, by name. */
  readonly noncriticalPolicyConstraint?: string;
  readonly signatureAlgorithmsMatch: boolean;
}

type Readable = { facts: CertificateFacts } | { unreadable: string; label: string };

// SHA-256 of the DER → facts. CAs recur on every connection; leaves mostly do
// not, so the cache is bounded and forgets the least recently used first.
const CACHE_LIMIT = 1024;
const cache = new BoundedCertificateCache<Readable>(CACHE_LIMIT);

// Node reports an empty name as undefined, whatever its type says.
const nameText = (name: string | undefined): string => name ?? '';

function label(node: NodeX509Certificate): string {
  const subject = nameText(node.subject).split('\n').join(', ');
  return subject === '' ? `(empty subject, serial ${node.serialNumber.toLowerCase()})` : subject;
}

const EXTENSION_OIDS = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  authorityKeyIdentifier: '2.5.29.35',
  subjectKeyIdentifier: '2.5.29.14',
  subjectAltName: '2.5.29.17',
  extKeyUsage: '2.5.29.37',
  nameConstraints: '2.5.29.30',
  policyConstraints: '2.5.29.36',
  inhibitAnyPolicy: '2.5.29.54',
} as const;

/** KeyUsage BIT STRING → { keyCertSign (bit 5), cRLSign (bit 6) }. */
function keyUsageBits(node: asn1js.AsnType): { keyCertSign: boolean; cRLSign: boolean } {
  if (!(node instanceof asn1js.BitString)) throw new Error('keyUsage is not a BIT STRING');
  const bytes = node.valueBlock.valueHexView;
  const bit = (n: number): boolean => ((bytes[n >> 3] ?? 0) & (0x80 >> (n & 7))) !== 0;
  return { keyCertSign: bit(5), cRLSign: bit(6) };
}

/** The strict DER reading of a plain value, else asn1js's (which also makes the refusals). */
function eitherReader<T>(strictDer: () => T, asn1: () => T): T {
  try {
    return strictDer();
  } catch {
    return asn1();
  }
}

function readFacts(structure: CertificateStructure, node: NodeX509Certificate): CertificateFacts {
  const facts: {
    -readonly [K in keyof CertificateFacts]: CertificateFacts[K];
  } = {
    label: label(node),
    version: structure.version,
    selfIssued: nameText(node.subject) === nameText(node.issuer),
    issuerEmpty: structure.issuerEmpty,
    subjectEmpty: structure.subjectEmpty,
    extensionCount: structure.extensionCount,
    signatureAlgorithmsMatch: structure.signatureAlgorithmsMatch,
  };
  for (const { oid: id, critical, value: octets } of structure.extensions) {
    const value = (what: string) => decode(octets, what);
    switch (id) {
      case EXTENSION_OIDS.basicConstraints: {
        const { ca, pathLen } = eitherReader(
          () => basicConstraintsDer(octets),
          () => {
            const items = sequenceItems(value('basicConstraints'), 'basicConstraints');
            const integer = items.find((item) => item instanceof asn1js.Integer) as
              | asn1js.Integer
              | undefined;
            return {
              ca: items[0] instanceof asn1js.Boolean && items[0].valueBlock.value,
              pathLen: integer?.valueBlock.valueDec,
            };
          },
        );
        facts.basicConstraints = { critical, ca, pathLen };
        break;
      }
      case EXTENSION_OIDS.keyUsage:
        facts.keyUsage = eitherReader(
          () => keyUsageDer(octets),
          () => keyUsageBits(value('keyUsage')),
        );
        break;
      case EXTENSION_OIDS.authorityKeyIdentifier: {
        const hasKeyId = eitherReader(
          () => hasKeyIdentifierDer(octets),
          () =>
            sequenceItems(value('authorityKeyIdentifier'), 'authorityKeyIdentifier').some(
              (item) => contextTag(item) === 0,
            ),
        );
        facts.authorityKeyId = { critical, hasKeyId };
        break;
      }
      case EXTENSION_OIDS.subjectKeyIdentifier:
        facts.subjectKeyId = { critical };
        break;
      case EXTENSION_OIDS.subjectAltName:
        facts.subjectAltName = {
          critical,
          count: eitherReader(
            () => itemCountDer(octets),
            () => sequenceItems(value('subjectAltName'), 'subjectAltName').length,
          ),
        };
        break;
      case EXTENSION_OIDS.extKeyUsage:
        facts.extendedKeyUsageCount = eitherReader(
          () => itemCountDer(octets),
          () => sequenceItems(value('extKeyUsage'), 'extKeyUsage').length,
        );
        break;
      case EXTENSION_OIDS.nameConstraints:
        facts.nameConstraintsEmpty = eitherReader(
          () => subtreesEmptyDer(octets),
          () =>
            sequenceItems(value('nameConstraints'), 'nameConstraints').every(
              (subtree) => (subtree as asn1js.Constructed).valueBlock.value.length === 0,
            ),
        );
        break;
      case EXTENSION_OIDS.policyConstraints:
      case EXTENSION_OIDS.inhibitAnyPolicy:
        if (!critical) {
          facts.noncriticalPolicyConstraint =
            id === EXTENSION_OIDS.policyConstraints ? 'policyConstraints' : 'inhibitAnyPolicy';
        }
        break;
    }
  }
  // An extension whose structure is malformed is reported where it stands, after the ones before it.
  if (structure.extensionError) throw structure.extensionError;
  return Object.freeze(facts);
}

function readReadable(der: Uint8Array): Readable {
  const parts = certificateParts(der as Buffer);
  if ('nodeError' in parts) {
    return Object.freeze({ unreadable: firstLineOf(parts.nodeError), label: '(unparseable certificate)' });
  }
  if ('structureError' in parts) {
    return Object.freeze({ unreadable: firstLineOf(parts.structureError), label: label(parts.node) });
  }
  try {
    return Object.freeze({ facts: readFacts(parts.structure, parts.node) });
  } catch (error) {
    return Object.freeze({ unreadable: firstLineOf(error), label: label(parts.node) });
  }
}

function read(der: Buffer): Readable {
  return cache.get(der, readReadable);
}

/**
 * Checks the structure of a chain OpenSSL has verified. `chain` is DER, leaf
 * first, ending at the trust anchor (or, on a server, where the certificates
 * it can see end). Returns undefined when every rule holds, otherwise an
 * unauthenticated SigilError naming the rule and the certificate.
 *
 * The rules (RFC 5280 sections; OpenSSL's strict-mode error in brackets):
 * - issuer-not-ca: every certificate above the leaf, trust anchor included,
 *   has basicConstraints cA=TRUE (§4.2.1.9) [INVALID_CA; for intermediates
 *   OpenSSL insists anyway, for the anchor only when strict]
 * - ca-basic-constraints-not-critical: a CA marks basicConstraints critical
 *   (§4.2.1.9) [CA_BCONS_NOT_CRITICAL]
 * - ca-missing-key-usage: a CA has keyUsage (§4.2.1.3), and an issuer's allows
 *   keyCertSign [CA_CERT_MISSING_KEY_USAGE]
 * - ca-missing-subject-key-identifier: a CA has a subjectKeyIdentifier
 *   (§4.2.1.2) [MISSING_SUBJECT_KEY_IDENTIFIER]
 * - missing-authority-key-identifier: every certificate but the trust anchor
 *   has an authorityKeyIdentifier with a keyIdentifier (§4.2.1.1)
 *   [MISSING_AUTHORITY_KEY_IDENTIFIER]
 * - critical-key-identifier: neither key identifier is critical (§4.2.1.1,
 *   §4.2.1.2) [AUTHORITY_/SUBJECT_KEY_IDENTIFIER_CRITICAL]
 * - non-ca-key-cert-sign: a certificate that is not a CA does not assert
 *   keyCertSign (§4.2.1.9) [KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA]
 * - path-length-misuse: pathLenConstraint only on a CA that may sign
 *   certificates (§4.2.1.9) [PATHLEN_INVALID_FOR_NON_CA, PATHLEN_WITHOUT_KU_KEY_CERT_SIGN]
 * - empty-issuer: the issuer name is not empty (§4.1.2.4) [ISSUER_NAME_EMPTY]
 * - empty-subject: a CA, or a certificate without a critical subjectAltName,
 *   has a subject (§4.1.2.6, §4.2.1.6) [SUBJECT_NAME_EMPTY, EMPTY_SUBJECT_SAN_NOT_CRITICAL]
 * - empty-extension: subjectAltName and extKeyUsage, when present, are not
 *   empty (§4.2.1.6, §4.2.1.12) [EMPTY_SUBJECT_ALT_NAME]
 * - signature-algorithm-mismatch: the signature field of TBSCertificate equals
 *   signatureAlgorithm (§4.1.1.2) [SIGNATURE_ALGORITHM_INCONSISTENCY]
 * - extensions-require-v3: a v1 or v2 certificate has no extensions (§4.1.2.1)
 *   [EXTENSIONS_REQUIRE_VERSION_3]
 * - name-constraints-misuse: nameConstraints appear only in a CA and name at
 *   least one subtree (§4.2.1.10; OpenSSL does not check this)
 * - policy-constraints-not-critical: policyConstraints and inhibitAnyPolicy
 *   are critical (§4.2.1.11, §4.2.1.14; OpenSSL does not check this)
 * - max-chain-depth: with `maxChainDepth`, no more intermediates than that
 *
 * Like OpenSSL (and RFC 6818 §2), a lone self-issued certificate (the peer
 * certificate is itself the trust anchor) is exempt from the profile rules,
 * and so is a self-issued leaf that is not a CA. A certificate the parser
 * cannot read is refused (unreadable-certificate): the rules fail closed.
 */
export function checkChainStrictness(
  chain: readonly Buffer[],
  options: ChainStrictnessOptions = {},
): SigilError | undefined {
  if (chain.length === 0) {
    return unauthenticated('certificate chain refused: no certificate to check');
  }
  const entries = chain.map(read);
  const last = entries.length - 1;
  const facts: CertificateFacts[] = [];
  for (const [index, entry] of entries.entries()) {
    if ('unreadable' in entry) {
      return refusal(
        'unreadable-certificate',
        `${role(index, last, false)} "${entry.label}" could not be read for the strict checks (${entry.unreadable})`,
      );
    }
    facts.push(entry.facts);
  }
  const anchored = facts[last].selfIssued;
  for (const [index, f] of facts.entries()) {
    const isAnchor = index === last && anchored;
    const who = `${role(index, last, anchored)} "${f.label}"`;
    const bc = f.basicConstraints;
    const ca = bc?.ca === true;
    // RFC 6818 §2: the profile does not apply to self-issued end-entity certificates.
    if (index === 0 && f.selfIssued && (!ca || last === 0)) continue;
    if (index > 0 && !ca) {
      return refusal(
        'issuer-not-ca',
        `${who} issues certificates but ${bc === undefined ? 'has no basicConstraints extension' : 'has basicConstraints cA=FALSE'}; ` +
          'RFC 5280 §4.2.1.9 requires cA=TRUE on every CA certificate, the trust anchor included',
      );
    }
    if (ca && bc !== undefined && !bc.critical) {
      return refusal(
        'ca-basic-constraints-not-critical',
        `${who} is a CA whose basicConstraints extension is not critical (RFC 5280 §4.2.1.9: it MUST be)`,
      );
    }
    if (ca && f.keyUsage === undefined) {
      return refusal(
        'ca-missing-key-usage',
        `${who} is a CA without a keyUsage extension (RFC 5280 §4.2.1.3: a CA MUST include it)`,
      );
    }
    if (index > 0 && f.keyUsage !== undefined && !f.keyUsage.keyCertSign) {
      return refusal('ca-missing-key-usage', `${who} issues certificates but its keyUsage lacks keyCertSign`);
    }
    if (!ca && f.keyUsage?.keyCertSign) {
      return refusal(
        'non-ca-key-cert-sign',
        `${who} is not a CA but its keyUsage asserts keyCertSign (RFC 5280 §4.2.1.9 forbids it)`,
      );
    }
    if (bc?.pathLen !== undefined && (!ca || f.keyUsage?.keyCertSign !== true)) {
      return refusal(
        'path-length-misuse',
        `${who} has a pathLenConstraint but ${ca ? 'its keyUsage does not allow keyCertSign' : 'is not a CA'} ` +
          '(RFC 5280 §4.2.1.9)',
      );
    }
    if (f.issuerEmpty) {
      return refusal('empty-issuer', `${who} has an empty issuer name (RFC 5280 §4.1.2.4)`);
    }
    if (f.subjectEmpty && (ca || f.keyUsage?.cRLSign || f.subjectAltName?.critical !== true)) {
      return refusal(
        'empty-subject',
        `${who} has an empty subject ${
          ca || f.keyUsage?.cRLSign
            ? 'but is a CA'
            : f.subjectAltName === undefined
              ? 'and no subjectAltName'
              : 'and a non-critical subjectAltName'
        } (RFC 5280 §4.1.2.6, §4.2.1.6)`,
      );
    }
    if (f.subjectAltName?.count === 0 || f.extendedKeyUsageCount === 0) {
      return refusal(
        'empty-extension',
        `${who} has an empty ${f.subjectAltName?.count === 0 ? 'subjectAltName' : 'extKeyUsage'} extension ` +
          '(RFC 5280 §4.2.1.6, §4.2.1.12: one or more entries)',
      );
    }
    if (!f.signatureAlgorithmsMatch) {
      return refusal(
        'signature-algorithm-mismatch',
        `${who} names a different signature algorithm inside TBSCertificate than outside it (RFC 5280 §4.1.1.2)`,
      );
    }
    if (f.version < 3 && f.extensionCount > 0) {
      return refusal(
        'extensions-require-v3',
        `${who} is a version ${f.version} certificate with extensions (RFC 5280 §4.1.2.1: only v3 has them)`,
      );
    }
    if (f.version === 3 && !isAnchor && f.authorityKeyId?.hasKeyId !== true) {
      return refusal(
        'missing-authority-key-identifier',
        `${who} has no authorityKeyIdentifier ${f.authorityKeyId ? 'keyIdentifier' : 'extension'} ` +
          '(RFC 5280 §4.2.1.1: every certificate but a self-signed one MUST)',
      );
    }
    if (f.version === 3 && ca && f.subjectKeyId === undefined) {
      return refusal(
        'ca-missing-subject-key-identifier',
        `${who} is a CA without a subjectKeyIdentifier extension (RFC 5280 §4.2.1.2)`,
      );
    }
    if (f.authorityKeyId?.critical || f.subjectKeyId?.critical) {
      return refusal(
        'critical-key-identifier',
        `${who} marks its ${f.authorityKeyId?.critical ? 'authority' : 'subject'}KeyIdentifier extension critical ` +
          '(RFC 5280 §4.2.1.1, §4.2.1.2: it MUST NOT be)',
      );
    }
    if (f.nameConstraintsEmpty !== undefined && (!ca || f.nameConstraintsEmpty)) {
      return refusal(
        'name-constraints-misuse',
        `${who} ${ca ? 'has a nameConstraints extension with neither permitted nor excluded subtrees' : 'is not a CA but has a nameConstraints extension'} ` +
          '(RFC 5280 §4.2.1.10)',
      );
    }
    if (f.noncriticalPolicyConstraint !== undefined) {
      return refusal(
        'policy-constraints-not-critical',
        `${who} has a non-critical ${f.noncriticalPolicyConstraint} extension (RFC 5280 §4.2.1.11, §4.2.1.14: it MUST be critical)`,
      );
    }
  }
  if (options.maxChainDepth !== undefined) {
    const top = anchored ? last - 1 : last;
    let intermediates = 0;
    for (let index = 1; index <= top; index++) if (!facts[index].selfIssued) intermediates++;
    if (intermediates > options.maxChainDepth) {
      return refusal(
        'max-chain-depth',
        `the chain to "${facts[0].label}" has ${intermediates} intermediate CA${intermediates === 1 ? '' : 's'}, ` +
          `more than the ${options.maxChainDepth} allowed`,
      );
    }
  }
  return undefined;
}

function role(index: number, last: number, anchored: boolean): string {
  if (index === 0) return 'leaf certificate';
  if (index === last && anchored) return 'trust anchor';
  return 'intermediate CA';
}

function refusal(rule: ChainRule, detail: string): SigilError {
  return unauthenticated(`certificate chain refused by strict check "${rule}": ${detail}`);
}
