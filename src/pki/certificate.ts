// Reading certificates (ours or anyone's) into the facts sigil needs to issue
// beneath them or to describe them. Parsing is the libraries' job: Node's
// X509Certificate (OpenSSL) and @peculiar/asn1-x509; nothing here walks DER.
import { type KeyObject, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { invalid } from '../errors.ts';
import { canonicalFingerprint } from './fingerprint.ts';
import { decodePem, looksLikePem } from './pem.ts';
import { canonicalSerial } from './serial.ts';
import { BasicConstraintsExtension, SubjectKeyIdentifierExtension, X509Certificate } from './x509-library.ts';

/** sigil's serial text of a certificate (serial.ts). */
export function serialHexOf(certificate: NodeX509Certificate): string {
  return canonicalSerial(certificate.serialNumber);
}

/** sigil's fingerprint of a certificate (fingerprint.ts). */
export function fingerprintOf(certificate: NodeX509Certificate): string {
  return canonicalFingerprint(certificate.fingerprint256);
}

export interface CertificateInfo {
  readonly der: Buffer;
  /** The subject Name exactly as encoded, used verbatim as the issuer field of children. */
  readonly subjectDer: Buffer;
  readonly subject: string;
  readonly issuer: string;
  /** The serial's canonical text (serial.ts). */
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly publicKey: KeyObject;
  readonly subjectKeyId: Buffer | null;
  readonly isCa: boolean;
  readonly pathLen: number | null;
  /** SHA-256 of the DER, lower-case hex without separators. */
  readonly fingerprint: string;
}

/** Split PEM (one or more CERTIFICATE blocks) or a single DER certificate into DER buffers. */
export function readCertificates(data: Buffer | string, source = 'input'): Buffer[] {
  if (looksLikePem(data)) {
    const blocks = decodePem(typeof data === 'string' ? data : data.toString('latin1'));
    const certs = blocks.filter((b) => b.label === 'CERTIFICATE').map((b) => b.der);
    if (certs.length === 0) throw invalid(`no certificate found in ${source}`);
    return certs;
  }
  const der = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  if (der.length === 0) throw invalid(`${source} is empty`);
  return [der];
}

const infoCache = new WeakMap<Buffer, CertificateInfo>();

/** Facts about a certificate that its creator already knows, so nothing has to re-parse them. */
export interface KnownCertificateFacts {
  readonly subjectDer: Buffer;
  readonly subjectKeyId: Buffer | null;
  readonly pathLen: number | null;
}

/**
 * Reads a certificate. Node's parser (OpenSSL, ~40 µs) checks it eagerly and
 * supplies the common facts; the ASN.1 library (~2–3 ms a certificate) is
 * consulted lazily, only for the facts Node does not expose (and not at all
 * for facts passed in `known` by the code that just created the certificate).
 * A certificate OpenSSL accepts but the library cannot read fails, with the
 * same invalid_argument error, when such a fact is first asked for.
 */
export function parseCertificate(
  der: Buffer,
  source = 'certificate',
  known?: KnownCertificateFacts,
): CertificateInfo {
  const cached = infoCache.get(der);
  if (cached) return cached;
  let node: NodeX509Certificate;
  try {
    node = new NodeX509Certificate(der);
  } catch (error) {
    throw invalid(`${source}: not a valid X.509 certificate`, error);
  }
  // OpenSSL parses the certificate without decoding its key; a damaged
  // subjectPublicKeyInfo only fails here (ERR_OSSL_EVP_DECODE_ERROR).
  let publicKey: KeyObject;
  try {
    publicKey = node.publicKey;
  } catch (error) {
    throw invalid(`${source}: the certificate's public key cannot be read (damaged or unsupported)`, error);
  }
  let library: { asn: Certificate; lib: X509Certificate } | undefined;
  const parsed = () => {
    if (!library) {
      try {
        library = { asn: AsnConvert.parse(der, Certificate), lib: new X509Certificate(der) };
      } catch (error) {
        throw invalid(`${source}: not a valid X.509 certificate`, error);
      }
    }
    return library;
  };
  let facts = known;
  const lazyFacts = (): KnownCertificateFacts => {
    if (!facts) {
      const { asn, lib } = parsed();
      const ski = lib.getExtension(SubjectKeyIdentifierExtension);
      facts = {
        subjectDer: Buffer.from(AsnConvert.serialize(asn.tbsCertificate.subject)),
        subjectKeyId: ski ? Buffer.from(ski.keyId, 'hex') : null,
        pathLen: lib.getExtension(BasicConstraintsExtension)?.pathLength ?? null,
      };
    }
    return facts;
  };
  const info: CertificateInfo = {
    der,
    get subjectDer() {
      return lazyFacts().subjectDer;
    },
    get subject() {
      return parsed().lib.subject;
    },
    get issuer() {
      return parsed().lib.issuer;
    },
    serialHex: serialHexOf(node),
    notBefore: new Date(node.validFrom),
    notAfter: new Date(node.validTo),
    publicKey,
    get subjectKeyId() {
      return lazyFacts().subjectKeyId;
    },
    isCa: node.ca,
    get pathLen() {
      return lazyFacts().pathLen;
    },
    fingerprint: fingerprintOf(node),
  };
  infoCache.set(der, info);
  return info;
}
