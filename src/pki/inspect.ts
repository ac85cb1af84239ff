// `sigil pki inspect`: describe whatever a user hands us — certificates (one
// or a chain), CSRs, CRLs, private and public keys — from PEM with any mix of
// blocks, or a single DER object. Descriptive, not judgemental: unsupported
// key types and unknown extensions are described, not refused. Reading is the
// libraries' job (node:crypto, @peculiar/*). Key material is never part of
// the output: keys are described by type and the SHA-256 of their public half.
import {
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  X509Certificate as NodeX509Certificate,
} from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  type GeneralName as AsnGeneralName,
  AuthorityInfoAccessSyntax,
  AuthorityKeyIdentifier,
  BasicConstraints,
  CertificatePolicies,
  CRLDistributionPoints,
  ExtendedKeyUsage,
  Extensions,
  type GeneralSubtrees,
  IssueAlternativeName,
  KeyUsage,
  NameConstraints,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
} from '@peculiar/asn1-x509';
import { invalid, SigilError } from '../errors.ts';
import { parseCertificate } from './certificate.ts';
import { parseCrl } from './crl.ts';
import { csrPublicKey, isSingleSequence, parseCsrStructure, verifySignedData } from './csr.ts';
import { formatDuration as formatMilliseconds } from './duration.ts';
import { sha256Hex } from './fingerprint.ts';
import { describeKeyType, keyTypeOf } from './keys.ts';
import { parseSpiffeId } from './names.ts';
import { decodePem, looksLikePem, type PemBlock } from './pem.ts';
import { Name, X509Certificate } from './x509-library.ts';

export interface InspectedName {
  /** dns, ip, uri, email, dirName, otherName, registeredID */
  type: string;
  value: string;
}

export interface InspectedExtension {
  oid: string;
  /** RFC 5280 name (basicConstraints, keyUsage, …) or the OID when unknown. */
  name: string;
  critical: boolean;
  /** Human summary ("digitalSignature, keyEncipherment"), or hex for unknown extensions. */
  value: string;
}

export interface InspectedCertificate {
  kind: 'certificate';
  /** Position among the certificates of the input, from 0. */
  index: number;
  subject: string;
  issuer: string;
  /** Lower-case hex. */
  serial: string;
  notBefore: string;
  notAfter: string;
  /** Until notAfter; negative once expired. */
  secondsLeft: number;
  expired: boolean;
  /** notBefore is still in the future (clock skew, or issued for later). */
  notYetValid: boolean;
  sans: InspectedName[];
  spiffeId: string | null;
  keyType: string;
  isCa: boolean;
  pathLen: number | null;
  selfSigned: boolean;
  extensions: InspectedExtension[];
  /** Colon-separated upper-case hex, as openssl prints it. */
  fingerprintSha256: string;
}

export interface InspectedCsr {
  kind: 'csr';
  subject: string;
  keyType: string;
  sans: InspectedName[];
  signatureValid: boolean;
  fingerprintSha256: string;
}

export interface InspectedCrl {
  kind: 'crl';
  issuer: string;
  thisUpdate: string;
  nextUpdate: string | null;
  /** Seconds until nextUpdate (negative once stale: OpenSSL then rejects every handshake), null without one. */
  nextUpdateSecondsLeft: number | null;
  /** Decimal; a string because CRL numbers may exceed 2^53. */
  crlNumber: string | null;
  revoked: { serial: string; revokedAt: string; reason: string }[];
  fingerprintSha256: string;
}

export interface InspectedKey {
  kind: 'private-key' | 'public-key';
  keyType: string;
  encrypted: boolean;
  /** SHA-256 of the public key's SubjectPublicKeyInfo; null when it cannot be known (encrypted, no passphrase). */
  publicKeySha256: string | null;
}

export type Inspected = InspectedCertificate | InspectedCsr | InspectedCrl | InspectedKey;

export interface InspectOptions {
  source: string;
  passphrase?: string;
  now?: Date;
}

// --- small helpers -----------------------------------------------------------

/** Hex text as OpenSSL shows it: upper case, colon-separated octets. */
const colonPairs = (hex: string): string => (hex.toUpperCase().match(/../g) ?? []).join(':');
const colonHex = (bytes: Buffer): string => colonPairs(bytes.toString('hex'));
/** A SHA-256 fingerprint (fingerprint.ts) shown as Node's fingerprint256 is. */
const sha256 = (bytes: Buffer): string => colonPairs(sha256Hex(bytes));

const MAX_HEX_BYTES = 64;
function shortHex(bytes: Buffer): string {
  if (bytes.length <= MAX_HEX_BYTES) return bytes.toString('hex');
  return `${bytes.subarray(0, MAX_HEX_BYTES).toString('hex')}… (${bytes.length} bytes)`;
}

const CURVES: Readonly<Record<string, string>> = {
  prime256v1: 'P-256',
  secp384r1: 'P-384',
  secp521r1: 'P-521',
  secp256k1: 'secp256k1',
};

/** describeKeyType for supported keys; otherwise what the key is, marked unsupported. */
function describeKey(key: KeyObject): string {
  try {
    return describeKeyType(keyTypeOf(key));
  } catch {
    const kind = key.asymmetricKeyType ?? 'unknown';
    const details = key.asymmetricKeyDetails ?? {};
    let text: string;
    if (kind === 'ec')
      text = `ECDSA ${CURVES[details.namedCurve ?? ''] ?? details.namedCurve ?? 'unknown curve'}`;
    else if (kind === 'rsa' || kind === 'rsa-pss' || kind === 'dsa') {
      text = `${kind.toUpperCase()} ${details.modulusLength ?? '?'}`;
    } else text = kind.charAt(0).toUpperCase() + kind.slice(1);
    return `${text} (not supported by sigil)`;
  }
}

function publicKeySha256(key: KeyObject): string {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  return sha256(publicKey.export({ type: 'spki', format: 'der' }));
}

function secondsBetween(later: Date, earlier: Date): number {
  return Math.floor((later.getTime() - earlier.getTime()) / 1000);
}

// --- names and extensions ----------------------------------------------------

function generalName(name: AsnGeneralName): InspectedName {
  if (name.dNSName !== undefined) return { type: 'dns', value: name.dNSName };
  if (name.iPAddress !== undefined) return { type: 'ip', value: name.iPAddress };
  if (name.uniformResourceIdentifier !== undefined)
    return { type: 'uri', value: name.uniformResourceIdentifier };
  if (name.rfc822Name !== undefined) return { type: 'email', value: name.rfc822Name };
  if (name.directoryName !== undefined)
    return { type: 'dirName', value: new Name(name.directoryName).toString() };
  if (name.otherName !== undefined) return { type: 'otherName', value: name.otherName.typeId };
  if (name.registeredID !== undefined) return { type: 'registeredID', value: name.registeredID };
  return { type: 'other', value: '' };
}

const NAME_PREFIX: Readonly<Record<string, string>> = {
  dns: 'DNS',
  ip: 'IP',
  uri: 'URI',
  email: 'email',
  dirName: 'DirName',
  otherName: 'othername',
  registeredID: 'RID',
  other: 'other',
};

const nameText = (name: InspectedName): string => `${NAME_PREFIX[name.type] ?? name.type}:${name.value}`;
const namesText = (names: Iterable<AsnGeneralName>): string =>
  Array.from(names, (n) => nameText(generalName(n))).join(', ');

const KEY_USAGE_BITS = [
  'digitalSignature',
  'nonRepudiation',
  'keyEncipherment',
  'dataEncipherment',
  'keyAgreement',
  'keyCertSign',
  'cRLSign',
  'encipherOnly',
  'decipherOnly',
];

const EXTENDED_KEY_USAGES: Readonly<Record<string, string>> = {
  '1.3.6.1.5.5.7.3.1': 'serverAuth',
  '1.3.6.1.5.5.7.3.2': 'clientAuth',
  '1.3.6.1.5.5.7.3.3': 'codeSigning',
  '1.3.6.1.5.5.7.3.4': 'emailProtection',
  '1.3.6.1.5.5.7.3.8': 'timeStamping',
  '1.3.6.1.5.5.7.3.9': 'OCSPSigning',
  '2.5.29.37.0': 'anyExtendedKeyUsage',
};

const ACCESS_METHODS: Readonly<Record<string, string>> = {
  '1.3.6.1.5.5.7.48.1': 'OCSP',
  '1.3.6.1.5.5.7.48.2': 'CA Issuers',
};

function subtreesText(subtrees: GeneralSubtrees | undefined): string {
  return Array.from(subtrees ?? [], (s) => nameText(generalName(s.base))).join(', ');
}

interface ExtensionReader {
  name: string;
  summarize(value: Buffer): string;
}

const EXTENSIONS: Readonly<Record<string, ExtensionReader>> = {
  '2.5.29.19': {
    name: 'basicConstraints',
    summarize(value) {
      const bc = AsnConvert.parse(value, BasicConstraints);
      if (!bc.cA) return 'CA:FALSE';
      return bc.pathLenConstraint === undefined ? 'CA:TRUE' : `CA:TRUE, pathlen:${bc.pathLenConstraint}`;
    },
  },
  '2.5.29.15': {
    name: 'keyUsage',
    summarize(value) {
      const bits = AsnConvert.parse(value, KeyUsage).toNumber();
      return KEY_USAGE_BITS.filter((_, i) => bits & (1 << i)).join(', ') || '(none)';
    },
  },
  '2.5.29.37': {
    name: 'extKeyUsage',
    summarize(value) {
      return Array.from(AsnConvert.parse(value, ExtendedKeyUsage), (o) => EXTENDED_KEY_USAGES[o] ?? o).join(
        ', ',
      );
    },
  },
  '2.5.29.17': {
    name: 'subjectAltName',
    summarize: (value) => namesText(AsnConvert.parse(value, SubjectAlternativeName)),
  },
  '2.5.29.18': {
    name: 'issuerAltName',
    summarize: (value) => namesText(AsnConvert.parse(value, IssueAlternativeName)),
  },
  '2.5.29.14': {
    name: 'subjectKeyIdentifier',
    summarize: (value) => colonHex(Buffer.from(AsnConvert.parse(value, SubjectKeyIdentifier).buffer)),
  },
  '2.5.29.35': {
    name: 'authorityKeyIdentifier',
    summarize(value) {
      const aki = AsnConvert.parse(value, AuthorityKeyIdentifier);
      const parts: string[] = [];
      if (aki.keyIdentifier) parts.push(`keyid:${colonHex(Buffer.from(aki.keyIdentifier.buffer))}`);
      if (aki.authorityCertIssuer) parts.push(`issuer:${namesText(aki.authorityCertIssuer)}`);
      if (aki.authorityCertSerialNumber)
        parts.push(`serial:${colonHex(Buffer.from(aki.authorityCertSerialNumber))}`);
      return parts.join(', ');
    },
  },
  '2.5.29.30': {
    name: 'nameConstraints',
    summarize(value) {
      const nc = AsnConvert.parse(value, NameConstraints);
      const parts: string[] = [];
      if (nc.permittedSubtrees) parts.push(`permitted: ${subtreesText(nc.permittedSubtrees)}`);
      if (nc.excludedSubtrees) parts.push(`excluded: ${subtreesText(nc.excludedSubtrees)}`);
      return parts.join('; ');
    },
  },
  '2.5.29.31': {
    name: 'cRLDistributionPoints',
    summarize(value) {
      return Array.from(AsnConvert.parse(value, CRLDistributionPoints), (point) => {
        const full = point.distributionPoint?.fullName;
        if (full) return namesText(full);
        if (point.cRLIssuer) return `issuer ${namesText(point.cRLIssuer)}`;
        return '(relative name)';
      }).join(', ');
    },
  },
  '1.3.6.1.5.5.7.1.1': {
    name: 'authorityInfoAccess',
    summarize(value) {
      return Array.from(
        AsnConvert.parse(value, AuthorityInfoAccessSyntax),
        (d) =>
          `${ACCESS_METHODS[d.accessMethod] ?? d.accessMethod} - ${nameText(generalName(d.accessLocation))}`,
      ).join(', ');
    },
  },
  '2.5.29.32': {
    name: 'certificatePolicies',
    summarize: (value) =>
      Array.from(AsnConvert.parse(value, CertificatePolicies), (p) => p.policyIdentifier).join(', '),
  },
};

function describeExtension(oid: string, critical: boolean, value: Buffer): InspectedExtension {
  const reader = EXTENSIONS[oid];
  if (!reader) return { oid, name: oid, critical, value: shortHex(value) };
  let summary: string;
  try {
    summary = reader.summarize(value);
  } catch {
    summary = `malformed: ${shortHex(value)}`;
  }
  return { oid, name: reader.name, critical, value: summary };
}

// --- the four kinds ----------------------------------------------------------

function inspectCertificate(der: Buffer, index: number, label: string, now: Date): InspectedCertificate {
  const info = parseCertificate(der, label);
  let lib: X509Certificate;
  let node: NodeX509Certificate;
  try {
    lib = new X509Certificate(der);
    node = new NodeX509Certificate(der);
  } catch (error) {
    throw invalid(`${label}: not a valid X.509 certificate`, error);
  }
  const extensions = lib.extensions.map((e) => describeExtension(e.type, e.critical, Buffer.from(e.value)));
  const sanExtension = lib.extensions.find((e) => e.type === '2.5.29.17');
  let sans: InspectedName[] = [];
  if (sanExtension) {
    try {
      sans = Array.from(
        AsnConvert.parse(Buffer.from(sanExtension.value), SubjectAlternativeName),
        generalName,
      );
    } catch {
      sans = []; // shown as malformed in the extension list
    }
  }
  const spiffeId = sans.find((n) => n.type === 'uri' && isSpiffeId(n.value))?.value ?? null;
  let selfSigned = false;
  try {
    selfSigned = node.checkIssued(node) && node.verify(node.publicKey);
  } catch {
    selfSigned = false;
  }
  const secondsLeft = secondsBetween(info.notAfter, now);
  return {
    kind: 'certificate',
    index,
    subject: info.subject,
    issuer: info.issuer,
    serial: info.serialHex,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    secondsLeft,
    expired: now.getTime() > info.notAfter.getTime(),
    notYetValid: now.getTime() < info.notBefore.getTime(),
    sans,
    spiffeId,
    keyType: describeKey(info.publicKey),
    isCa: info.isCa,
    pathLen: info.pathLen,
    selfSigned,
    extensions,
    fingerprintSha256: node.fingerprint256,
  };
}

function isSpiffeId(uri: string): boolean {
  try {
    parseSpiffeId(uri);
    return true;
  } catch {
    return false;
  }
}

function inspectCsr(der: Buffer, label: string): InspectedCsr {
  const { asn, signedBytes } = parseCsrStructure(der, label);
  let keyType = 'unreadable public key';
  let signatureValid = false;
  try {
    const publicKey = csrPublicKey(asn, label);
    keyType = describeKey(publicKey);
    signatureValid = verifySignedData(
      asn.signatureAlgorithm,
      publicKey,
      signedBytes,
      Buffer.from(asn.signature),
      label,
    );
  } catch {
    // unreadable key or unsupported algorithm: described, signature not valid
  }
  const sans: InspectedName[] = [];
  for (const attribute of asn.certificationRequestInfo.attributes ?? []) {
    if (attribute.type !== '1.2.840.113549.1.9.14') continue;
    for (const value of attribute.values) {
      try {
        for (const extension of AsnConvert.parse(value, Extensions)) {
          if (extension.extnID !== '2.5.29.17') continue;
          sans.push(
            ...Array.from(AsnConvert.parse(extension.extnValue.buffer, SubjectAlternativeName), generalName),
          );
        }
      } catch {
        // a malformed extensionRequest contributes no names
      }
    }
  }
  return {
    kind: 'csr',
    subject: new Name(asn.certificationRequestInfo.subject).toString(),
    keyType,
    sans,
    signatureValid,
    fingerprintSha256: sha256(der),
  };
}

function inspectCrl(der: Buffer, label: string, now: Date): InspectedCrl {
  const info = parseCrl(der, label);
  return {
    kind: 'crl',
    issuer: info.issuer,
    thisUpdate: info.thisUpdate.toISOString(),
    nextUpdate: info.nextUpdate?.toISOString() ?? null,
    nextUpdateSecondsLeft: info.nextUpdate ? secondsBetween(info.nextUpdate, now) : null,
    crlNumber: info.crlNumber === null ? null : info.crlNumber.toString(),
    revoked: info.entries.map((e) => ({
      serial: e.serialHex,
      revokedAt: e.revokedAt.toISOString(),
      reason: e.reason,
    })),
    fingerprintSha256: sha256(der),
  };
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

const wrongPassphrase = (label: string, cause: unknown) =>
  new SigilError('unauthenticated', `${label}: cannot decrypt the private key (wrong passphrase?)`, {
    cause,
  });

function privateKeyItem(key: KeyObject, encrypted: boolean): InspectedKey {
  return { kind: 'private-key', keyType: describeKey(key), encrypted, publicKeySha256: publicKeySha256(key) };
}

const encryptedUnknown: InspectedKey = {
  kind: 'private-key',
  keyType: 'unknown (encrypted; give a passphrase to see it)',
  encrypted: true,
  publicKeySha256: null,
};

/** A private key in DER (PKCS#8, encrypted PKCS#8, PKCS#1, SEC1); null when it is none of those. */
function privateKeyFromDer(der: Buffer, label: string, passphrase: string | undefined): InspectedKey | null {
  if (!isSingleSequence(der)) return null;
  for (const type of ['pkcs8', 'pkcs1', 'sec1'] as const) {
    try {
      return privateKeyItem(createPrivateKey({ key: der, format: 'der', type, passphrase }), false);
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ERR_MISSING_PASSPHRASE') return encryptedUnknown;
      if (code === 'ERR_OSSL_BAD_DECRYPT') throw wrongPassphrase(label, error);
    }
  }
  return null;
}

function encryptedPkcs8(der: Buffer, label: string, passphrase: string | undefined): InspectedKey {
  if (passphrase === undefined) return encryptedUnknown;
  try {
    return privateKeyItem(createPrivateKey({ key: der, format: 'der', type: 'pkcs8', passphrase }), true);
  } catch (error) {
    throw wrongPassphrase(label, error);
  }
}

/** Legacy OpenSSL "Proc-Type: 4,ENCRYPTED" PEM: OpenSSL decrypts it from the PEM text itself. */
function legacyEncrypted(block: PemBlock, label: string, passphrase: string | undefined): InspectedKey {
  if (passphrase === undefined) return encryptedUnknown;
  const headers = Object.entries(block.headers ?? {}).map(([name, value]) => `${name}: ${value}\n`);
  const body = (block.der.toString('base64').match(/.{1,64}/g) ?? []).join('\n');
  const pem = `-----BEGIN ${block.label}-----\n${headers.join('')}\n${body}\n-----END ${block.label}-----\n`;
  try {
    return privateKeyItem(createPrivateKey({ key: pem, format: 'pem', passphrase }), true);
  } catch (error) {
    throw wrongPassphrase(label, error);
  }
}

function publicKeyFromDer(der: Buffer, type: 'spki' | 'pkcs1'): InspectedKey | null {
  if (!isSingleSequence(der)) return null;
  try {
    const key = createPublicKey({ key: der, format: 'der', type });
    return {
      kind: 'public-key',
      keyType: describeKey(key),
      encrypted: false,
      publicKeySha256: publicKeySha256(key),
    };
  } catch {
    return null;
  }
}

// --- entry points ------------------------------------------------------------

const CSR_LABELS = new Set(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);
const PRIVATE_KEY_LABELS = new Set(['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY']);

function inspectPem(blocks: PemBlock[], options: InspectOptions, now: Date): Inspected[] {
  const { source, passphrase } = options;
  const items: Inspected[] = [];
  let certificates = 0;
  for (const [position, block] of blocks.entries()) {
    const label = `${source} block ${position + 1} (${block.label})`;
    if (block.label === 'CERTIFICATE' || block.label === 'TRUSTED CERTIFICATE') {
      items.push(inspectCertificate(block.der, certificates++, label, now));
    } else if (CSR_LABELS.has(block.label)) {
      items.push(inspectCsr(block.der, label));
    } else if (block.label === 'X509 CRL') {
      items.push(inspectCrl(block.der, label, now));
    } else if (block.label === 'ENCRYPTED PRIVATE KEY') {
      items.push(encryptedPkcs8(block.der, label, passphrase));
    } else if (PRIVATE_KEY_LABELS.has(block.label)) {
      if (/ENCRYPTED/i.test(block.headers?.['Proc-Type'] ?? '')) {
        items.push(legacyEncrypted(block, label, passphrase));
      } else {
        const key = privateKeyFromDer(block.der, label, undefined);
        if (!key) throw invalid(`${label}: not a valid private key`);
        items.push(key);
      }
    } else if (block.label === 'PUBLIC KEY' || block.label === 'RSA PUBLIC KEY') {
      const key = publicKeyFromDer(block.der, block.label === 'PUBLIC KEY' ? 'spki' : 'pkcs1');
      if (!key) throw invalid(`${label}: not a valid public key`);
      items.push(key);
    }
    // Anything else (EC PARAMETERS, DH PARAMETERS, …) carries nothing to describe.
  }
  return items;
}

function inspectDer(der: Buffer, options: InspectOptions, now: Date): Inspected[] {
  const { source, passphrase } = options;
  if (!isSingleSequence(der)) return [];
  const attempts: (() => Inspected | null)[] = [
    () => inspectCertificate(der, 0, source, now),
    () => inspectCsr(der, source),
    () => inspectCrl(der, source, now),
    () => privateKeyFromDer(der, source, passphrase),
    () => publicKeyFromDer(der, 'spki') ?? publicKeyFromDer(der, 'pkcs1'),
  ];
  for (const attempt of attempts) {
    try {
      const item = attempt();
      if (item) return [item];
    } catch (error) {
      if (error instanceof SigilError && error.code === 'unauthenticated') throw error; // wrong passphrase
    }
  }
  return [];
}

function pemBlocks(data: Buffer, source: string): PemBlock[] {
  try {
    return decodePem(data.toString('latin1'));
  } catch (error) {
    if (error instanceof SigilError) throw new SigilError(error.code, `${source}: ${error.message}`);
    throw error;
  }
}

/**
 * Describe every certificate, CSR, CRL and key in `data`. Throws
 * invalid('<source>: not a certificate, CSR, CRL or key') when nothing is
 * recognised, and unauthenticated() for a wrong passphrase.
 */
export function inspect(data: Buffer, options: InspectOptions): Inspected[] {
  const now = options.now ?? new Date();
  const items = looksLikePem(data)
    ? inspectPem(pemBlocks(data, options.source), options, now)
    : inspectDer(data, options, now);
  if (items.length === 0) throw invalid(`${options.source}: not a certificate, CSR, CRL or key`);
  return items;
}

// --- text --------------------------------------------------------------------

const formatDuration = (seconds: number): string => formatMilliseconds(seconds * 1000);

function validity(item: InspectedCertificate): string {
  if (item.notYetValid) {
    const lifetime = secondsBetween(new Date(item.notAfter), new Date(item.notBefore));
    return `NOT YET VALID (starts in ${formatDuration(item.secondsLeft - lifetime)})`;
  }
  return item.expired
    ? `EXPIRED ${formatDuration(item.secondsLeft)} ago`
    : `${formatDuration(item.secondsLeft)} left`;
}

const field = (label: string, value: string): string => `  ${`${label}:`.padEnd(16)} ${value}`;

function formatItem(item: Inspected): string[] {
  switch (item.kind) {
    case 'certificate': {
      const lines = [
        `certificate #${item.index}`,
        field('subject', item.subject || '(empty)'),
        field('issuer', item.issuer || '(empty)'),
        field('serial', item.serial),
        field('valid', `${item.notBefore} → ${item.notAfter} (${validity(item)})`),
        field('key', item.keyType),
        field('CA', item.isCa ? `yes${item.pathLen === null ? '' : `, pathlen ${item.pathLen}`}` : 'no'),
        field('self-signed', item.selfSigned ? 'yes' : 'no'),
      ];
      if (item.sans.length > 0) lines.push(field('SANs', item.sans.map(nameText).join(', ')));
      if (item.spiffeId) lines.push(field('SPIFFE ID', item.spiffeId));
      lines.push(field('SHA-256', item.fingerprintSha256));
      if (item.extensions.length > 0) {
        lines.push('  extensions:');
        for (const e of item.extensions) {
          lines.push(
            `    ${e.name}${e.name === e.oid ? '' : ` (${e.oid})`}${e.critical ? ' [critical]' : ''}: ${e.value}`,
          );
        }
      }
      return lines;
    }
    case 'csr': {
      const lines = [
        'certificate request',
        field('subject', item.subject || '(empty)'),
        field('key', item.keyType),
        field('signature', item.signatureValid ? 'valid (proof of possession)' : 'DOES NOT VERIFY'),
      ];
      if (item.sans.length > 0) lines.push(field('SANs', item.sans.map(nameText).join(', ')));
      lines.push(field('SHA-256', item.fingerprintSha256));
      return lines;
    }
    case 'crl': {
      let next = item.nextUpdate ?? '(none)';
      if (item.nextUpdateSecondsLeft !== null) {
        next +=
          item.nextUpdateSecondsLeft < 0
            ? ` (STALE since ${formatDuration(item.nextUpdateSecondsLeft)})`
            : ` (in ${formatDuration(item.nextUpdateSecondsLeft)})`;
      }
      const lines = [
        'CRL',
        field('issuer', item.issuer),
        field('CRL number', item.crlNumber ?? '(none)'),
        field('this update', item.thisUpdate),
        field('next update', next),
        field('revoked', item.revoked.length === 0 ? 'none' : String(item.revoked.length)),
      ];
      for (const r of item.revoked) lines.push(`    ${r.serial}  ${r.revokedAt}  ${r.reason}`);
      lines.push(field('SHA-256', item.fingerprintSha256));
      return lines;
    }
    case 'private-key':
    case 'public-key':
      return [
        item.kind === 'private-key' ? 'private key' : 'public key',
        field('type', item.keyType),
        ...(item.kind === 'private-key' ? [field('encrypted', item.encrypted ? 'yes' : 'no')] : []),
        field('public SHA-256', item.publicKeySha256 ?? '(unknown until decrypted)'),
      ];
  }
}

/** Human-readable, multi-line description of inspect()'s result. */
export function formatInspection(items: readonly Inspected[], source: string): string {
  const header = `${source}: ${items.length === 1 ? '1 object' : `${items.length} objects`}`;
  return `${[header, ...items.flatMap((item) => ['', ...formatItem(item)])].join('\n')}\n`;
}
