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
import { createHash, createPublicKey, type KeyObject, randomFillSync } from 'node:crypto';
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
import { keysMatch, keyTypeOf, spkiDer } from './keys.ts';
import type { GeneralName } from './names.ts';
import { keyUsageBits, type Profile, profileRules } from './profiles.ts';

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

export interface IssuedCertificate {
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
}

export interface IssuerOptions {
  /** notBefore is back-dated by this much to tolerate clock skew between peers. Default 30 s. */
  readonly skewMs?: number;
}

export const DEFAULT_SKEW_MS = 30_000;

const version3 = explicit(0, integer(2));

/** Key identifier: leftmost 160 bits of SHA-256 over the SPKI DER (an RFC 7093 style method). */
export function keyIdentifier(spki: Buffer): Buffer {
  let id = keyIdentifiers.get(spki);
  if (!id) {
    id = createHash('sha256').update(spki).digest().subarray(0, 20);
    keyIdentifiers.set(spki, id);
  }
  return id;
}
// spkiDer() returns one cached Buffer per key, so this cache hits for repeat keys.
const keyIdentifiers = new WeakMap<Buffer, Buffer>();

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
  readonly authorityKeyId: Buffer;
  readonly privateKey: KeyObject;
}

/** Encode, sign and wrap one certificate. Shared by Issuer and self-signed roots. */
function signCertificate(
  template: SigningTemplate,
  serial: Buffer,
  notBefore: Date,
  notAfter: Date,
  subjectName: Buffer,
  spki: Buffer,
  extensions: Buffer[],
): Buffer {
  const tbs = sequence(
    version3,
    unsignedInteger(serial),
    template.algorithm.algorithmIdentifier,
    template.issuerName,
    sequence(time(notBefore), time(notAfter)),
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

/** The extensions of one certificate, in a stable order. Constant parts come from `cache`. */
function buildExtensions(
  request: IssueRequest,
  spki: Buffer,
  authorityKeyId: Buffer | null,
  cache: Map<string, Buffer[]> | null,
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
  let constant = rules.isCa ? undefined : cache?.get(cacheKey);
  if (!constant) {
    constant = [basicConstraints(rules.isCa, request.pathLen), keyUsage(keyUsageBits(request.profile, rsa))];
    if (rules.extendedKeyUsages.length > 0) constant.push(extKeyUsage(rules.extendedKeyUsages));
    if (!rules.isCa) cache?.set(cacheKey, constant);
  }
  const out = [...constant, subjectKeyIdentifier(keyIdentifier(spki))];
  if (authorityKeyId) out.push(authorityKeyIdentifier(authorityKeyId));
  if (request.sans && request.sans.length > 0) out.push(subjectAltName(request.sans));
  else if (!rules.isCa)
    throw invalid(`a ${request.profile} certificate needs at least one subject alternative name`);
  if (request.nameConstraints) out.push(nameConstraints(request.nameConstraints));
  if (request.crlDistributionPoints && request.crlDistributionPoints.length > 0) {
    out.push(crlDistributionPoints(request.crlDistributionPoints));
  }
  for (const ext of request.extensions ?? []) out.push(customExtension(ext));
  return out;
}

function checkLifetime(ttlMs: number): void {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0)
    throw invalid(`certificate lifetime must be positive (got ${ttlMs} ms)`);
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
}): IssuedCertificate {
  const now = options.now ?? new Date();
  const ttlMs = options.ttlMs ?? profileRules.root.defaultTtlMs;
  checkLifetime(ttlMs);
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
    authorityKeyId: keyId,
    privateKey: options.privateKey,
  };
  const serial = randomSerial();
  const notBefore = new Date(now.getTime() - (options.skewMs ?? DEFAULT_SKEW_MS));
  const notAfter = new Date(now.getTime() + ttlMs);
  const der = signCertificate(
    template,
    serial,
    notBefore,
    notAfter,
    subjectName,
    spki,
    buildExtensions(request, spki, keyId, null),
  );
  return {
    der,
    serialHex: serialHex(serial),
    notBefore: wholeSeconds(notBefore),
    notAfter: wholeSeconds(notAfter),
    clamped: false,
    subjectDer: subjectName,
    subjectKeyId: keyId,
    pathLen: options.pathLen ?? null,
  };
}

/** Canonical serial text: lower-case hex without leading zeros. */
export function serialHex(magnitude: Buffer): string {
  return magnitude.toString('hex').replace(/^0+(?=.)/, '');
}

function wholeSeconds(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

export class Issuer {
  readonly certificate: CertificateInfo;
  readonly #template: SigningTemplate;
  readonly #skewMs: number;
  readonly #constantExtensions = new Map<string, Buffer[]>();

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
      authorityKeyId: certificate.subjectKeyId ?? keyIdentifier(spkiDer(certificate.publicKey)),
      privateKey,
    };
    return new Issuer(certificate, template, options.skewMs ?? DEFAULT_SKEW_MS);
  }

  /** An issuer on a CA certificate this process just created: nothing is re-parsed. */
  static fromIssued(issued: IssuedCertificate, privateKey: KeyObject, options: IssuerOptions = {}): Issuer {
    return Issuer.fromCertificate(issued.der, privateKey, { ...options, known: issued });
  }

  issue(request: IssueRequest): IssuedCertificate {
    const now = request.now ?? new Date();
    const issuerCert = this.certificate;
    if (now.getTime() > issuerCert.notAfter.getTime()) {
      throw preconditionFailed(
        `issuer "${issuerCert.subject}" expired at ${issuerCert.notAfter.toISOString()}`,
      );
    }
    if (now.getTime() < issuerCert.notBefore.getTime() - this.#skewMs) {
      throw preconditionFailed(
        `issuer "${issuerCert.subject}" is not valid until ${issuerCert.notBefore.toISOString()}`,
      );
    }
    if (request.profile === 'root')
      throw invalid('a root certificate is self-signed; use createRootCertificate');
    if (request.publicKey.type !== 'public') throw invalid('the subject key must be a public key');

    let notAfterMs: number;
    if (request.notAfter) notAfterMs = request.notAfter.getTime();
    else {
      const ttlMs = request.ttlMs ?? profileRules[request.profile].defaultTtlMs;
      checkLifetime(ttlMs);
      notAfterMs = now.getTime() + ttlMs;
    }
    if (notAfterMs <= now.getTime()) throw invalid('the requested notAfter is not in the future');
    const clamped = notAfterMs > issuerCert.notAfter.getTime();
    if (clamped) notAfterMs = issuerCert.notAfter.getTime();
    const notBefore = new Date(Math.max(now.getTime() - this.#skewMs, issuerCert.notBefore.getTime()));
    const notAfter = new Date(notAfterMs);

    const spki = spkiDer(request.publicKey);
    const subjectName = encodeSubject(defaultSubject(request));
    const extensions = buildExtensions(
      request,
      spki,
      this.#template.authorityKeyId,
      this.#constantExtensions,
    );
    const serial = randomSerial();
    const der = signCertificate(this.#template, serial, notBefore, notAfter, subjectName, spki, extensions);
    return {
      der,
      serialHex: serialHex(serial),
      notBefore: wholeSeconds(notBefore),
      notAfter: wholeSeconds(notAfter),
      clamped,
      subjectDer: subjectName,
      subjectKeyId: keyIdentifier(spki),
      pathLen: request.pathLen ?? null,
    };
  }
}
