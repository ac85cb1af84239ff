// The issuance hot path. An Issuer precomputes everything that is the same
// for every certificate it signs (version, signature algorithm, issuer name,
// authority key identifier, per-profile constant extensions) and per request
// only encodes serial, validity, subject, key and names, then signs the
// TBSCertificate once with node:crypto.
//
// Lifetimes: a certificate never outlives its issuer. A request whose end
// lies past the issuer's notAfter is clamped to it (and `clamped` says so),
// because renewal close to a CA's end should still work; an issuer that has
// already expired, or is not yet valid, refuses to issue at all.
import { createPublicKey, type KeyObject, randomFillSync } from 'node:crypto';
import { invalid, preconditionFailed } from '../errors.ts';
import { type SignatureAlgorithm, signatureAlgorithmFor, signWith } from './algorithms.ts';
import { type CertificateInfo, type KnownCertificateFacts, parseCertificate } from './certificate.ts';
import { bitString, explicit, integer, sequence, time, unsignedInteger } from './der.ts';
import { encodeSubject, type SubjectName } from './distinguished-name.ts';
import {
  authorityKeyIdentifier,
  basicConstraints,
  type CustomExtension,
  crlDistributionPoints,
  customExtension,
  extKeyUsage,
  keyUsage,
  type NameConstraints,
  nameConstraints,
  subjectAltName,
  subjectKeyIdentifier,
} from './extensions.ts';
import { keysMatch, keyTypeOf, spkiDer, spkiSha256 } from './keys.ts';
import type { GeneralName } from './names.ts';
import { keyUsageBits, type Profile, profileRules } from './profiles.ts';
import { canonicalSerial } from './serial.ts';

export interface IssueRequest {
  /** The subject's public key (for CSRs and proofs of possession: the verified key). */
  readonly publicKey: KeyObject;
  readonly profile: Profile;
  /** Defaults to a common name equal to the first SAN. */
  readonly subject?: SubjectName;
  readonly sans?: readonly GeneralName[];
  /** Lifetime from now; defaults per profile. Ignored when notAfter is given. */
  readonly ttlMs?: number;
  readonly notAfter?: Date;
  /** CA profiles only: basicConstraints pathLenConstraint. */
  readonly pathLen?: number;
  /** CA profiles only. */
  readonly nameConstraints?: NameConstraints;
  readonly crlDistributionPoints?: readonly string[];
  readonly extensions?: readonly CustomExtension[];
  /** For tests and replay; defaults to the current time. */
  readonly now?: Date;
}

export interface SignedCertificate {
  readonly der: Buffer;
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** True when the requested lifetime was cut to the issuer's notAfter. */
  readonly clamped: boolean;
  /** What the encoder already knows, so an Issuer built on this certificate need not re-parse it. */
  readonly subjectDer: Buffer;
  readonly subjectKeyId: Buffer;
  readonly pathLen: number | null;
  /** The subject's public key, as certified (fromIssued reads it instead of parsing the certificate). */
  readonly publicKey?: KeyObject;
  /** Whether the profile made a CA certificate. */
  readonly isCa?: boolean;
}

export interface IssuerOptions {
  /** notBefore is back-dated by this much to tolerate clock skew between peers. Default 30 s. */
  readonly skewMs?: number;
}

export const DEFAULT_SKEW_MS = 30_000;

const version3 = explicit(0, integer(2));

/** Key identifier: leftmost 160 bits of SHA-256 over the SPKI DER (an RFC 7093 style method). */
export function keyIdentifier(spki: Buffer): Buffer {
  return spkiSha256(spki).subarray(0, 20);
}

// 128-bit serials drawn from a pooled CSPRNG buffer: one getrandom per 256 certificates.
const serialPool = Buffer.alloc(16 * 256);
let serialOffset = serialPool.length;
function randomSerial(): Buffer {
  if (serialOffset === serialPool.length) {
    randomFillSync(serialPool);
    serialOffset = 0;
  }
  const bytes = Buffer.from(serialPool.subarray(serialOffset, serialOffset + 16));
  serialOffset += 16;
  if (bytes.every((b) => b === 0)) bytes[15] = 1; // a serial must be positive
  return bytes;
}

interface SigningTemplate {
  readonly algorithm: SignatureAlgorithm;
  readonly issuerName: Buffer;
  /** The complete authorityKeyIdentifier extension: the same for every certificate this issuer signs. */
  readonly authorityKeyIdExtension: Buffer;
  readonly privateKey: KeyObject;
}

/** Encode, sign and wrap one certificate. Shared by Issuer and self-signed roots. */
function signCertificate(
  template: SigningTemplate,
  serial: Buffer,
  validity: Validity,
  subjectName: Buffer,
  spki: Buffer,
  extensions: Buffer[],
): Buffer {
  const tbs = sequence(
    version3,
    unsignedInteger(serial),
    template.algorithm.algorithmIdentifier,
    template.issuerName,
    sequence(time(validity.notBefore), time(validity.notAfter)),
    subjectName,
    spki,
    explicit(3, sequence(...extensions)),
  );
  const signature = signWith(template.algorithm, template.privateKey, tbs);
  return sequence(tbs, template.algorithm.algorithmIdentifier, bitString(signature));
}

function defaultSubject(request: IssueRequest): SubjectName {
  if (request.subject) return request.subject;
  const first = request.sans?.[0];
  if (!first)
    throw invalid('a certificate needs a subject common name or at least one subject alternative name');
  return { commonName: first.value.slice(0, 64) };
}

/** What an Issuer encodes once and reuses: the DER is the same for every certificate that needs it. */
interface ExtensionCache {
  /** basicConstraints, keyUsage and extKeyUsage of a leaf profile, by profile and key family. */
  readonly constant: Map<string, Buffer[]>;
  /** cRLDistributionPoints by its URLs (an issuer advertises one CRL; a few entries at most are kept). */
  readonly crl: Map<string, Buffer>;
}

const MAX_CACHED_CRL_EXTENSIONS = 8;

function cachedCrlDistributionPoints(uris: readonly string[], cache: ExtensionCache | null): Buffer {
  const key = uris.join('\n');
  let der = cache?.crl.get(key);
  if (der === undefined) {
    der = crlDistributionPoints(uris);
    if (cache && cache.crl.size < MAX_CACHED_CRL_EXTENSIONS) cache.crl.set(key, der);
  }
  return der;
}

/** The extensions of one certificate, in a stable order. Constant parts come from `cache`. */
function buildExtensions(
  request: IssueRequest,
  spki: Buffer,
  authorityKeyIdExtension: Buffer,
  cache: ExtensionCache | null,
): Buffer[] {
  const rules = profileRules[request.profile];
  if (!rules.isCa && (request.pathLen !== undefined || request.nameConstraints)) {
    throw invalid(
      `pathLen and name constraints apply only to CA certificates, not to a ${request.profile} certificate`,
    );
  }
  if (
    request.pathLen !== undefined &&
    (!Number.isInteger(request.pathLen) || request.pathLen < 0 || request.pathLen > 32)
  ) {
    throw invalid(`pathLen ${request.pathLen} must be an integer from 0 to 32`);
  }
  const rsa = keyTypeOf(request.publicKey).startsWith('rsa');
  const cacheKey = `${request.profile}/${rsa}`;
  let constant = rules.isCa ? undefined : cache?.constant.get(cacheKey);
  if (!constant) {
    constant = [basicConstraints(rules.isCa, request.pathLen), keyUsage(keyUsageBits(request.profile, rsa))];
    if (rules.extendedKeyUsages.length > 0) constant.push(extKeyUsage(rules.extendedKeyUsages));
    if (!rules.isCa) cache?.constant.set(cacheKey, constant);
  }
  const out = [...constant, subjectKeyIdentifier(keyIdentifier(spki))];
  out.push(authorityKeyIdExtension);
  if (request.sans && request.sans.length > 0) out.push(subjectAltName(request.sans));
  else if (!rules.isCa)
    throw invalid(`a ${request.profile} certificate needs at least one subject alternative name`);
  if (request.nameConstraints) out.push(nameConstraints(request.nameConstraints));
  if (request.crlDistributionPoints && request.crlDistributionPoints.length > 0) {
    out.push(cachedCrlDistributionPoints(request.crlDistributionPoints, cache));
  }
  const customOids = new Set<string>();
  for (const ext of request.extensions ?? []) {
    // RFC 5280 §4.2: a certificate MUST NOT include more than one instance of an extension.
    if (customOids.has(ext.oid)) throw invalid(`extension ${ext.oid} is given more than once`);
    customOids.add(ext.oid);
    out.push(customExtension(ext));
  }
  return out;
}

// GeneralizedTime has four year digits.
const LAST_ENCODABLE_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

function checkedTime(date: Date, what: string): number {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw invalid(`${what} is not a valid date`);
  return ms;
}

interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly clamped: boolean;
}

/**
 * The validity of a new certificate, in whole seconds as encoded: back-dated
 * by the skew but never before the issuer's start, and clamped to the
 * issuer's end (see the header comment).
 */
function resolveValidity(
  nowMs: number,
  skewMs: number,
  requested: { notAfter?: Date; ttlMs?: number; defaultTtlMs: number },
  issuer: { notBefore: Date; notAfter: Date } | null,
): Validity {
  let notAfterMs: number;
  if (requested.notAfter) notAfterMs = checkedTime(requested.notAfter, 'the requested notAfter');
  else {
    const ttlMs = requested.ttlMs ?? requested.defaultTtlMs;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw invalid(`certificate lifetime must be positive (got ${ttlMs} ms)`);
    }
    notAfterMs = nowMs + ttlMs;
  }
  const clamped = issuer !== null && notAfterMs > issuer.notAfter.getTime();
  if (issuer && clamped) notAfterMs = issuer.notAfter.getTime();
  notAfterMs = Math.floor(notAfterMs / 1000) * 1000;
  if (notAfterMs <= nowMs) {
    throw invalid('the requested notAfter is not in the future (lifetimes are whole seconds, at least one)');
  }
  if (notAfterMs > LAST_ENCODABLE_MS) {
    throw invalid('the requested lifetime ends after 9999-12-31, the last date a certificate can hold');
  }
  const earliest = issuer ? issuer.notBefore.getTime() : Number.NEGATIVE_INFINITY;
  const notBeforeMs = Math.floor(Math.max(nowMs - skewMs, earliest) / 1000) * 1000;
  return { notBefore: new Date(notBeforeMs), notAfter: new Date(notAfterMs), clamped };
}

/** A self-signed root CA certificate. */
export function createRootCertificate(options: {
  privateKey: KeyObject;
  subject: SubjectName;
  ttlMs?: number;
  pathLen?: number;
  nameConstraints?: NameConstraints;
  skewMs?: number;
  now?: Date;
}): SignedCertificate {
  const nowMs = checkedTime(options.now ?? new Date(), '"now"');
  const validity = resolveValidity(
    nowMs,
    options.skewMs ?? DEFAULT_SKEW_MS,
    { ttlMs: options.ttlMs, defaultTtlMs: profileRules.root.defaultTtlMs },
    null,
  );
  if (options.privateKey.type !== 'private') throw invalid('a root needs its private key');
  const publicKey = createPublicKey(options.privateKey);
  const spki = spkiDer(publicKey);
  const subjectName = encodeSubject(options.subject);
  const keyId = keyIdentifier(spki);
  const request: IssueRequest = {
    publicKey,
    profile: 'root',
    pathLen: options.pathLen,
    nameConstraints: options.nameConstraints,
  };
  const template: SigningTemplate = {
    algorithm: signatureAlgorithmFor(options.privateKey),
    issuerName: subjectName,
    authorityKeyIdExtension: authorityKeyIdentifier(keyId),
    privateKey: options.privateKey,
  };
  const serial = randomSerial();
  const extensions = buildExtensions(request, spki, template.authorityKeyIdExtension, null);
  const der = signCertificate(template, serial, validity, subjectName, spki, extensions);
  return {
    der,
    serialHex: serialHex(serial),
    ...validity,
    subjectDer: subjectName,
    subjectKeyId: keyId,
    pathLen: options.pathLen ?? null,
    publicKey,
    isCa: true,
  };
}

/** The canonical text (serial.ts) of a serial's magnitude bytes. */
function serialHex(magnitude: Buffer): string {
  return canonicalSerial(magnitude.toString('hex'));
}

export class Issuer {
  readonly certificate: CertificateInfo;
  readonly #template: SigningTemplate;
  readonly #skewMs: number;
  readonly #extensions: ExtensionCache = { constant: new Map(), crl: new Map() };

  private constructor(certificate: CertificateInfo, template: SigningTemplate, skewMs: number) {
    this.certificate = certificate;
    this.#template = template;
    this.#skewMs = skewMs;
  }

  /** An issuer from its CA certificate (DER) and private key; refuses non-CAs and mismatched keys. */
  static fromCertificate(
    certificateDer: Buffer,
    privateKey: KeyObject,
    options: IssuerOptions & { known?: KnownCertificateFacts } = {},
  ): Issuer {
    const certificate = parseCertificate(certificateDer, 'issuer certificate', options.known);
    if (!certificate.isCa)
      throw preconditionFailed(`issuer "${certificate.subject}" is not a CA certificate`);
    if (privateKey.type !== 'private') throw invalid('the issuer key must be a private key');
    if (!keysMatch(privateKey, certificate.publicKey)) {
      throw preconditionFailed(
        `the private key does not match the issuer certificate "${certificate.subject}"`,
      );
    }
    const template: SigningTemplate = {
      algorithm: signatureAlgorithmFor(privateKey),
      issuerName: certificate.subjectDer,
      authorityKeyIdExtension: authorityKeyIdentifier(
        certificate.subjectKeyId ?? keyIdentifier(spkiDer(certificate.publicKey)),
      ),
      privateKey,
    };
    return new Issuer(certificate, template, options.skewMs ?? DEFAULT_SKEW_MS);
  }

  /**
   * An issuer on a CA certificate this process just created: nothing is
   * re-parsed (a fresh process's first EmbeddedCA.create pays for every parse
   * and key export), and the key is compared with the certified one directly.
   */
  static fromIssued(issued: SignedCertificate, privateKey: KeyObject, options: IssuerOptions = {}): Issuer {
    const { publicKey, isCa } = issued;
    if (publicKey === undefined || isCa === undefined) {
      return Issuer.fromCertificate(issued.der, privateKey, { ...options, known: issued });
    }
    const certificate = issuedCertificateInfo(issued, publicKey, isCa);
    if (!isCa) throw preconditionFailed(`issuer "${certificate.subject}" is not a CA certificate`);
    if (privateKey.type !== 'private') throw invalid('the issuer key must be a private key');
    if (!createPublicKey(privateKey).equals(publicKey)) {
      throw preconditionFailed(
        `the private key does not match the issuer certificate "${certificate.subject}"`,
      );
    }
    const template: SigningTemplate = {
      algorithm: signatureAlgorithmFor(privateKey),
      issuerName: issued.subjectDer,
      authorityKeyIdExtension: authorityKeyIdentifier(issued.subjectKeyId),
      privateKey,
    };
    return new Issuer(certificate, template, options.skewMs ?? DEFAULT_SKEW_MS);
  }

  issue(request: IssueRequest): SignedCertificate {
    const nowMs = checkedTime(request.now ?? new Date(), '"now"');
    const issuerCert = this.certificate;
    if (nowMs > issuerCert.notAfter.getTime()) {
      throw preconditionFailed(
        `issuer "${issuerCert.subject}" expired at ${issuerCert.notAfter.toISOString()}`,
      );
    }
    if (nowMs < issuerCert.notBefore.getTime() - this.#skewMs) {
      throw preconditionFailed(
        `issuer "${issuerCert.subject}" is not valid until ${issuerCert.notBefore.toISOString()}`,
      );
    }
    if (request.profile === 'root')
      throw invalid('a root certificate is self-signed; use createRootCertificate');
    if (request.publicKey.type !== 'public') throw invalid('the subject key must be a public key');
    const validity = resolveValidity(
      nowMs,
      this.#skewMs,
      {
        notAfter: request.notAfter,
        ttlMs: request.ttlMs,
        defaultTtlMs: profileRules[request.profile].defaultTtlMs,
      },
      issuerCert,
    );

    const spki = spkiDer(request.publicKey);
    const subjectName = encodeSubject(defaultSubject(request));
    const extensions = buildExtensions(
      request,
      spki,
      this.#template.authorityKeyIdExtension,
      this.#extensions,
    );
    const serial = randomSerial();
    const der = signCertificate(this.#template, serial, validity, subjectName, spki, extensions);
    return {
      der,
      serialHex: serialHex(serial),
      ...validity,
      subjectDer: subjectName,
      subjectKeyId: keyIdentifier(spki),
      pathLen: request.pathLen ?? null,
      publicKey: request.publicKey,
      isCa: profileRules[request.profile].isCa,
    };
  }
}

/**
 * The facts of a certificate this process just issued, without parsing it:
 * each is what the encoder wrote. Subject and issuer text and the
 * fingerprint are read from the DER only if asked for.
 */
function issuedCertificateInfo(
  issued: SignedCertificate,
  publicKey: KeyObject,
  isCa: boolean,
): CertificateInfo {
  let parsed: CertificateInfo | undefined;
  const full = (): CertificateInfo => {
    parsed ??= parseCertificate(issued.der, 'issuer certificate', issued);
    return parsed;
  };
  return {
    der: issued.der,
    subjectDer: issued.subjectDer,
    serialHex: issued.serialHex,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    publicKey,
    subjectKeyId: issued.subjectKeyId,
    isCa,
    pathLen: issued.pathLen,
    get subject() {
      return full().subject;
    },
    get issuer() {
      return full().issuer;
    },
    get fingerprint() {
      return full().fingerprint;
    },
  };
}
