// Certificate revocation lists (RFC 5280 §5). sigil writes CRL v2 with the DER
// writer and signs it with node:crypto, like every signature it makes; reading
// is @peculiar/x509's job, and signature checks run over the tbsCertList bytes
// exactly as they appear in the input.
//
// OpenSSL needs a CRL for every CA level once a TLS context checks CRLs, and
// an expired one rejects every handshake, so issuers publish (possibly empty)
// CRLs and refresh them well before nextUpdate.
import { createHash, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificateList, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import { invalid, preconditionFailed, SigilError } from '../errors.ts';
import { signatureAlgorithmFor, signWith } from './algorithms.ts';
import { parseCertificate } from './certificate.ts';
import {
  derFrame,
  firstFieldBytes,
  isSingleSequence,
  signatureAlgorithmName,
  verifySignedData,
} from './csr.ts';
import { bitString, explicit, integer, sequence, time, tlv, unsignedInteger } from './der.ts';
import { authorityKeyIdentifier, extension } from './extensions.ts';
import { keysMatch, spkiDer } from './keys.ts';
import { decodePem, looksLikePem } from './pem.ts';
import { REASON_CODES, type RevocationReason, reasonByCode } from './revocation-reasons.ts';
import { KeyUsageFlags, KeyUsagesExtension, Name, X509Certificate, X509Crl } from './x509-library.ts';

export type { RevocationReason } from './revocation-reasons.ts';
export { parseRevocationReason, REVOCATION_REASONS } from './revocation-reasons.ts';

export interface RevokedEntry {
  /** Certificate serial, hex. Parsed CRLs report it exactly as parseCertificate does (lower case, no sign byte). */
  serialHex: string;
  revokedAt: Date;
  reason: RevocationReason;
}

export interface CrlOptions {
  /** DER of the CA certificate the CRL is issued under. */
  issuerCertificate: Buffer;
  issuerKey: KeyObject;
  entries: readonly RevokedEntry[];
  /** Monotonically increasing per issuer (RFC 5280 §5.2.3); at most 20 octets. */
  crlNumber: bigint;
  /** Default: now. */
  thisUpdate?: Date;
  nextUpdate: Date;
}

const OID_CRL_NUMBER = '2.5.29.20';
const OID_CRL_REASON = '2.5.29.21';
const MAX_CRL_NUMBER = 1n << 159n; // 20 octets, positive
const MAX_CRL_BYTES = 16 * 1024 * 1024;

function checkDate(date: Date, what: string): void {
  if (!(date instanceof Date) || !Number.isFinite(date.getTime()))
    throw invalid(`${what} is not a valid date`);
}

const wholeSeconds = (date: Date): number => Math.floor(date.getTime() / 1000);

/** Serial magnitude bytes from hex ("0a1b…", "0A:1B:…"); invalid() naming the input otherwise. */
function serialBytes(serialHex: string): Buffer {
  const shown = serialHex.length > 48 ? `${serialHex.slice(0, 48)}…` : serialHex;
  const hex = serialHex.replace(/:/g, '').toLowerCase().replace(/^0+/, '');
  if (!/^[0-9a-f]{1,40}$/.test(hex) || /[^0-9a-fA-F:]/.test(serialHex)) {
    throw invalid(`revoked serial "${shown}" is not a positive hex number of at most 20 bytes`);
  }
  return Buffer.from(hex.length % 2 === 1 ? `0${hex}` : hex, 'hex');
}

function crlEntry(entry: RevokedEntry, index: number): { serial: string; der: Buffer } {
  const serial = serialBytes(entry.serialHex);
  checkDate(entry.revokedAt, `revocation date of serial ${entry.serialHex}`);
  if (!Object.hasOwn(REASON_CODES, entry.reason)) {
    throw invalid(`revoked entry ${index}: unknown revocation reason "${String(entry.reason).slice(0, 40)}"`);
  }
  const code = REASON_CODES[entry.reason];
  const fields = [unsignedInteger(serial), time(entry.revokedAt)];
  // RFC 5280 §5.3.1: reasonCode unspecified SHOULD be absent.
  if (entry.reason !== 'unspecified') {
    fields.push(sequence(extension(OID_CRL_REASON, false, tlv(0x0a /* ENUMERATED */, Buffer.of(code)))));
  }
  return { serial: serial.toString('hex'), der: sequence(...fields) };
}

/** The issuer's key identifier: its SKI, or (RFC 5280 method 1) SHA-1 of its subjectPublicKey bits. */
function issuerKeyId(subjectKeyId: Buffer | null, publicKey: KeyObject): Buffer {
  if (subjectKeyId) return subjectKeyId;
  const spki = AsnConvert.parse(spkiDer(publicKey), SubjectPublicKeyInfo);
  return createHash('sha1').update(Buffer.from(spki.subjectPublicKey)).digest();
}

/**
 * A signed CRL v2 (DER). Refuses an issuer that is not a CA (or whose keyUsage
 * lacks cRLSign), a key that does not match the issuer, nextUpdate not after
 * thisUpdate, malformed or duplicate serials.
 */
export function createCrl(options: CrlOptions): Buffer {
  const issuer = parseCertificate(options.issuerCertificate, 'CRL issuer certificate');
  if (!issuer.isCa) throw preconditionFailed(`CRL issuer ${issuer.subject} is not a CA certificate`);
  const keyUsage = new X509Certificate(options.issuerCertificate).getExtension(KeyUsagesExtension);
  if (keyUsage && (keyUsage.usages & KeyUsageFlags.cRLSign) === 0) {
    throw preconditionFailed(`CRL issuer ${issuer.subject} has a keyUsage without cRLSign`);
  }
  if (options.issuerKey.type !== 'private') throw invalid('CRL signing key must be a private key');
  if (!keysMatch(options.issuerKey, issuer.publicKey)) {
    throw preconditionFailed(`CRL signing key does not match the issuer certificate ${issuer.subject}`);
  }
  const thisUpdate = options.thisUpdate ?? new Date();
  checkDate(thisUpdate, 'CRL thisUpdate');
  checkDate(options.nextUpdate, 'CRL nextUpdate');
  if (wholeSeconds(options.nextUpdate) <= wholeSeconds(thisUpdate)) {
    throw preconditionFailed('CRL nextUpdate must be later than thisUpdate');
  }
  if (
    typeof options.crlNumber !== 'bigint' ||
    options.crlNumber < 0n ||
    options.crlNumber >= MAX_CRL_NUMBER
  ) {
    throw invalid('CRL number must be a non-negative integer of at most 20 octets');
  }

  const seen = new Set<string>();
  const entries = options.entries.map((entry, index) => {
    const encoded = crlEntry(entry, index);
    if (seen.has(encoded.serial)) throw invalid(`serial ${entry.serialHex} is listed more than once`);
    seen.add(encoded.serial);
    return encoded.der;
  });

  const algorithm = signatureAlgorithmFor(options.issuerKey);
  const crlExtensions = sequence(
    authorityKeyIdentifier(issuerKeyId(issuer.subjectKeyId, issuer.publicKey)),
    extension(OID_CRL_NUMBER, false, integer(options.crlNumber)),
  );
  const tbs = sequence(
    integer(1), // v2
    algorithm.algorithmIdentifier,
    issuer.subjectDer,
    time(thisUpdate),
    time(options.nextUpdate),
    ...(entries.length > 0 ? [sequence(...entries)] : []), // omitted entirely when empty
    explicit(0, crlExtensions),
  );
  const signature = signWith(algorithm, options.issuerKey, tbs);
  return sequence(tbs, algorithm.algorithmIdentifier, bitString(signature));
}

export interface CrlInfo {
  der: Buffer;
  issuer: string;
  thisUpdate: Date;
  nextUpdate: Date | null;
  crlNumber: bigint | null;
  entries: RevokedEntry[];
  signatureAlgorithm: string;
}

const notACrl = (source: string, cause?: unknown) => invalid(`${source}: not an X.509 CRL`, cause);

function decodeCrlInput(data: Buffer | string, source: string): Buffer {
  const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
  if (size > MAX_CRL_BYTES) throw invalid(`${source}: CRL is larger than 16 MiB`);
  if (looksLikePem(data)) {
    const blocks = decodePem(typeof data === 'string' ? data : data.toString('latin1')).filter(
      (b) => b.label === 'X509 CRL',
    );
    if (blocks.length === 0) throw notACrl(source);
    if (blocks.length > 1) throw invalid(`${source}: contains ${blocks.length} CRLs, expected one`);
    return blocks[0].der;
  }
  return typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
}

function parseStructure(der: Buffer, source: string): { asn: CertificateList; signedBytes: Buffer } {
  if (!isSingleSequence(der)) throw notACrl(source);
  let asn: CertificateList;
  try {
    asn = AsnConvert.parse(der, CertificateList);
  } catch (error) {
    throw notACrl(source, error);
  }
  const signedBytes = firstFieldBytes(der, asn.tbsCertListRaw);
  if (!signedBytes) throw notACrl(source);
  return { asn, signedBytes };
}

/** A DER INTEGER (the cRLNumber extension value) as a non-negative bigint. */
function readCrlNumber(value: Buffer, source: string): bigint {
  const frame = derFrame(value);
  if (value[0] !== 0x02 || !frame || frame.total !== value.length || frame.total === frame.header) {
    throw invalid(`${source}: malformed cRLNumber extension`);
  }
  const contents = value.subarray(frame.header);
  if (contents[0] & 0x80) throw invalid(`${source}: negative cRLNumber`);
  return contents.length === 0 ? 0n : BigInt(`0x${contents.toString('hex')}`);
}

/** Read a CRL (PEM "X509 CRL" or DER) into the facts sigil uses. Does not check the signature. */
export function parseCrl(data: Buffer | string, source = 'CRL'): CrlInfo {
  const der = decodeCrlInput(data, source);
  const { asn } = parseStructure(der, source);
  let crl: X509Crl;
  try {
    crl = new X509Crl(asn);
  } catch (error) {
    throw notACrl(source, error);
  }
  const numberExtension = (asn.tbsCertList.crlExtensions ?? []).find((e) => e.extnID === OID_CRL_NUMBER);
  let entries: RevokedEntry[];
  try {
    entries = crl.entries.map((entry) => {
      const code = entry.reason;
      const reason = code === undefined ? 'unspecified' : reasonByCode.get(code);
      if (reason === undefined) throw invalid(`${source}: CRL entry has unknown reason code ${code}`);
      return { serialHex: entry.serialNumber.toLowerCase(), revokedAt: entry.revocationDate, reason };
    });
  } catch (error) {
    if (error instanceof SigilError) throw error;
    throw notACrl(source, error);
  }
  return {
    der,
    issuer: new Name(asn.tbsCertList.issuer).toString(),
    thisUpdate: crl.thisUpdate,
    nextUpdate: crl.nextUpdate ?? null,
    crlNumber: numberExtension ? readCrlNumber(Buffer.from(numberExtension.extnValue.buffer), source) : null,
    entries,
    signatureAlgorithm: signatureAlgorithmName(asn.signatureAlgorithm.algorithm),
  };
}

/**
 * True when the CRL (DER, or PEM) is signed by the issuer certificate's key:
 * node:crypto over the raw tbsCertList bytes, with the outer and inner
 * signature algorithms required to agree. Checks the signature only — not
 * the issuer name, dates or the issuer's keyUsage. invalid() for input that
 * is not a CRL or uses an algorithm sigil does not accept.
 */
export function verifyCrlSignature(crlDer: Buffer, issuerCertificate: Buffer): boolean {
  const { asn, signedBytes } = parseStructure(decodeCrlInput(crlDer, 'CRL'), 'CRL');
  if (!asn.signatureAlgorithm.isEqual(asn.tbsCertList.signature)) return false;
  const issuer = parseCertificate(issuerCertificate, 'CRL issuer certificate');
  return verifySignedData(
    asn.signatureAlgorithm,
    issuer.publicKey,
    signedBytes,
    Buffer.from(asn.signature),
    'CRL',
  );
}
