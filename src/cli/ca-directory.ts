// A CA directory: the files `sigil pki init` writes and `pki issue` / `pki crl`
// read back.
//
//   root.pem, root.key                  the self-signed root and its key (0600)
//   intermediate.pem, intermediate.key  optional; when present it does all issuing
//   ca.pem                              the trust anchor to hand out (the root certificate)
//   sigil-ca.json                       metadata: version, key type, trust domain,
//                                       file names, the last CRL number
//   revocations.json                    every serial each CA revoked (pki crl; crl-history.ts)
//
// Only the issuing key is ever read, so with an intermediate the root key can
// live offline. Loading checks everything a signature depends on before any
// signing happens: files present and readable, key matches certificate,
// intermediate signed by the root, every CA certificate currently valid.
import { type KeyObject, X509Certificate } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { invalid, notFound, preconditionFailed, SigilError } from '../errors.ts';
import { type PlannedFile, PRIVATE, PUBLIC, readInputFile } from '../files/file-sets.ts';
import { type CertificateInfo, parseCertificate, readCertificates } from '../pki/certificate.ts';
import { createRootCertificate, Issuer } from '../pki/issuer.ts';
import {
  generateKeyPair,
  KEY_TYPES,
  type KeyType,
  keysMatch,
  privateKeyToPem,
  readPrivateKey,
} from '../pki/keys.ts';
import { parseTrustDomain } from '../pki/names.ts';
import { decodePem, encodePem, looksLikePem } from '../pki/pem.ts';

export const CA_METADATA_FILE = 'sigil-ca.json';
export const CA_METADATA_VERSION = 1;

export interface CaFileNames {
  readonly rootCertificate: string;
  readonly rootKey: string;
  readonly intermediateCertificate?: string;
  readonly intermediateKey?: string;
  /** The trust anchor clients and servers are given (the root certificate). */
  readonly trustBundle: string;
}

export interface CaMetadata {
  readonly version: typeof CA_METADATA_VERSION;
  readonly keyType: KeyType;
  readonly trustDomain: string;
  readonly files: CaFileNames;
  /** The number of the last CRL signed; 0 before the first one. */
  readonly crlNumber: number;
}

export const DEFAULT_FILE_NAMES = {
  rootCertificate: 'root.pem',
  rootKey: 'root.key',
  intermediateCertificate: 'intermediate.pem',
  intermediateKey: 'intermediate.key',
  trustBundle: 'ca.pem',
} as const;

/** One CA certificate with its key, as created in memory. */
export interface CaCertificate {
  readonly der: Buffer;
  readonly info: CertificateInfo;
  readonly key: KeyObject;
}

export interface NewCa {
  readonly metadata: CaMetadata;
  readonly root: CaCertificate;
  readonly intermediate: CaCertificate | null;
}

export interface NewCaOptions {
  readonly keyType: KeyType;
  readonly trustDomain: string;
  readonly rootName: string;
  /** Present: also create an intermediate with this common name. */
  readonly intermediateName?: string;
  readonly ttlMs: number;
  readonly now?: Date;
}

/**
 * The intermediate's lifetime: half the root's, so it always ends inside the
 * root's validity and can be replaced under the same root.
 */
export function intermediateLifetime(rootTtlMs: number): number {
  return Math.floor(rootTtlMs / 2);
}

/** A new root (and optional intermediate, pathLen 0) in memory; nothing is written. */
export function createCa(options: NewCaOptions): NewCa {
  const trustDomain = parseTrustDomain(options.trustDomain);
  const now = options.now ?? new Date();
  if (options.intermediateName !== undefined && options.ttlMs < 2 * 60_000) {
    throw invalid('a CA with an intermediate needs a lifetime of at least 2 minutes');
  }
  const rootKeys = generateKeyPair(options.keyType);
  const root = createRootCertificate({
    privateKey: rootKeys.privateKey,
    subject: { commonName: options.rootName },
    ttlMs: options.ttlMs,
    now,
  });
  const rootCa: CaCertificate = { der: root.der, info: parseCertificate(root.der), key: rootKeys.privateKey };
  let intermediate: CaCertificate | null = null;
  if (options.intermediateName !== undefined) {
    const keys = generateKeyPair(options.keyType);
    const issued = Issuer.fromIssued(root, rootKeys.privateKey).issue({
      publicKey: keys.publicKey,
      profile: 'intermediate',
      subject: { commonName: options.intermediateName },
      ttlMs: intermediateLifetime(options.ttlMs),
      pathLen: 0,
      now,
    });
    intermediate = { der: issued.der, info: parseCertificate(issued.der), key: keys.privateKey };
  }
  const files: CaFileNames = intermediate
    ? { ...DEFAULT_FILE_NAMES }
    : {
        rootCertificate: DEFAULT_FILE_NAMES.rootCertificate,
        rootKey: DEFAULT_FILE_NAMES.rootKey,
        trustBundle: DEFAULT_FILE_NAMES.trustBundle,
      };
  return {
    metadata: { version: CA_METADATA_VERSION, keyType: options.keyType, trustDomain, files, crlNumber: 0 },
    root: rootCa,
    intermediate,
  };
}

export const certificatePem = (der: Buffer): string => encodePem('CERTIFICATE', der);

/** Every file of a new CA directory; keys are encrypted PKCS#8 when a passphrase is given. */
export function caDirectoryFiles(dir: string, ca: NewCa, passphrase?: string): PlannedFile[] {
  const { files } = ca.metadata;
  const planned: PlannedFile[] = [
    { path: join(dir, files.rootCertificate), contents: certificatePem(ca.root.der), mode: PUBLIC },
    { path: join(dir, files.rootKey), contents: privateKeyToPem(ca.root.key, passphrase), mode: PRIVATE },
  ];
  if (ca.intermediate && files.intermediateCertificate && files.intermediateKey) {
    planned.push(
      {
        path: join(dir, files.intermediateCertificate),
        contents: certificatePem(ca.intermediate.der),
        mode: PUBLIC,
      },
      {
        path: join(dir, files.intermediateKey),
        contents: privateKeyToPem(ca.intermediate.key, passphrase),
        mode: PRIVATE,
      },
    );
  }
  planned.push(
    { path: join(dir, files.trustBundle), contents: certificatePem(ca.root.der), mode: PUBLIC },
    metadataFile(dir, ca.metadata),
  );
  return planned;
}

/** sigil-ca.json as a file to write (used by init and, with a new crlNumber, by crl). */
export function metadataFile(dir: string, metadata: CaMetadata): PlannedFile {
  return {
    path: join(dir, CA_METADATA_FILE),
    contents: `${JSON.stringify(metadata, null, 2)}\n`,
    mode: PUBLIC,
  };
}

// --- loading -----------------------------------------------------------------

/** A CA certificate as read from a CA directory. */
export interface LoadedCertificate {
  readonly der: Buffer;
  readonly info: CertificateInfo;
  /** The path it was read from. */
  readonly path: string;
}

export interface LoadedCa {
  readonly dir: string;
  readonly metadata: CaMetadata;
  readonly root: LoadedCertificate;
  readonly intermediate: LoadedCertificate | null;
  /** The certificate that signs: the intermediate when there is one (unless the root was asked for). */
  readonly signer: LoadedCertificate;
  readonly signerKey: KeyObject;
  readonly issuer: Issuer;
  /** What a leaf presents after itself: the signer unless it is the root (roots are never sent). */
  readonly chain: readonly Buffer[];
}

export interface LoadOptions {
  readonly passphrase?: string;
  /** Sign with the root even when an intermediate exists (CRLs for the root level). */
  readonly useRoot?: boolean;
  readonly now?: Date;
}

const initHint = (dir: string) => `(run sigil pki init --dir ${dir})`;

function isFile(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Reads a file of the CA directory; a missing one is named with a hint to run init. */
function readCaFile(dir: string, name: string, what: string): Buffer {
  const path = join(dir, name);
  if (!isFile(path)) throw notFound(`ca directory ${dir} has no ${name} ${initHint(dir)}`);
  return readInputFile(path, what);
}

function checkFileName(dir: string, field: string, value: unknown): string {
  if (typeof value !== 'string' || value === '' || value === '.' || value === '..' || /[/\\\0]/.test(value)) {
    throw invalid(`${join(dir, CA_METADATA_FILE)}: files.${field} must be a plain file name`);
  }
  return value;
}

/** Parses and checks sigil-ca.json; every field is validated, unknown versions are refused. */
export function parseMetadata(dir: string, text: string): CaMetadata {
  const path = join(dir, CA_METADATA_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw invalid(`${path} is not valid JSON`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw invalid(`${path} is not a JSON object`);
  const record = raw as Record<string, unknown>;
  if (record.version !== CA_METADATA_VERSION) {
    throw invalid(
      `${path}: unsupported version ${JSON.stringify(record.version)} (expected ${CA_METADATA_VERSION})`,
    );
  }
  const keyType = record.keyType;
  if (typeof keyType !== 'string' || !(KEY_TYPES as readonly string[]).includes(keyType)) {
    throw invalid(`${path}: keyType must be one of ${KEY_TYPES.join(', ')}`);
  }
  if (typeof record.trustDomain !== 'string') throw invalid(`${path}: trustDomain is missing`);
  let trustDomain: string;
  try {
    trustDomain = parseTrustDomain(record.trustDomain);
  } catch (error) {
    throw invalid(`${path}: ${error instanceof SigilError ? error.message : 'invalid trustDomain'}`);
  }
  const crlNumber = record.crlNumber;
  if (typeof crlNumber !== 'number' || !Number.isSafeInteger(crlNumber) || crlNumber < 0) {
    throw invalid(`${path}: crlNumber must be a non-negative integer`);
  }
  const files = record.files;
  if (typeof files !== 'object' || files === null) throw invalid(`${path}: files is missing`);
  const f = files as Record<string, unknown>;
  const hasIntermediate = f.intermediateCertificate !== undefined || f.intermediateKey !== undefined;
  const names: CaFileNames = {
    rootCertificate: checkFileName(dir, 'rootCertificate', f.rootCertificate),
    rootKey: checkFileName(dir, 'rootKey', f.rootKey),
    trustBundle: checkFileName(dir, 'trustBundle', f.trustBundle),
    ...(hasIntermediate
      ? {
          intermediateCertificate: checkFileName(dir, 'intermediateCertificate', f.intermediateCertificate),
          intermediateKey: checkFileName(dir, 'intermediateKey', f.intermediateKey),
        }
      : {}),
  };
  return { version: CA_METADATA_VERSION, keyType: keyType as KeyType, trustDomain, files: names, crlNumber };
}

function loadCertificate(dir: string, name: string): LoadedCertificate {
  const path = join(dir, name);
  const data = readCaFile(dir, name, 'CA certificate');
  const certificates = readCertificates(data, path);
  if (certificates.length !== 1) {
    throw invalid(`${path} holds ${certificates.length} certificates; expected exactly one`);
  }
  const info = parseCertificate(certificates[0], path);
  if (!info.isCa) throw preconditionFailed(`${path} ("${info.subject}") is not a CA certificate`);
  return { der: certificates[0], info, path };
}

function isEncryptedPem(data: Buffer): boolean {
  if (!looksLikePem(data)) return false;
  try {
    return decodePem(data.toString('latin1')).some(
      (block) =>
        block.label === 'ENCRYPTED PRIVATE KEY' || /ENCRYPTED/i.test(block.headers?.['Proc-Type'] ?? ''),
    );
  } catch {
    return false; // readPrivateKey reports the damage
  }
}

function loadKey(dir: string, name: string, passphrase: string | undefined): KeyObject {
  const path = join(dir, name);
  const data = readCaFile(dir, name, 'CA key');
  if (passphrase === undefined && isEncryptedPem(data)) {
    throw invalid(`${path} is encrypted; give --passphrase-file or set SIGIL_CA_PASSPHRASE`);
  }
  return readPrivateKey(data, { passphrase, source: path });
}

function checkValidity(certificate: LoadedCertificate, now: Date): void {
  const { info, path } = certificate;
  if (now.getTime() > info.notAfter.getTime()) {
    throw preconditionFailed(
      `CA certificate ${path} ("${info.subject}") expired at ${info.notAfter.toISOString()}`,
    );
  }
  if (now.getTime() < info.notBefore.getTime() - 60_000) {
    throw preconditionFailed(
      `CA certificate ${path} ("${info.subject}") is not valid until ${info.notBefore.toISOString()}`,
    );
  }
}

/** Reads and checks a CA directory and prepares its issuer. Reads only the signing key. */
export function loadCaDirectory(dir: string, options: LoadOptions = {}): LoadedCa {
  let isDirectory = false;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch {
    throw notFound(`ca directory ${dir} does not exist ${initHint(dir)}`);
  }
  if (!isDirectory) throw invalid(`ca directory ${dir} is not a directory`);
  const metadata = parseMetadata(dir, readCaFile(dir, CA_METADATA_FILE, 'CA metadata').toString('utf8'));
  const { files } = metadata;
  const now = options.now ?? new Date();

  const root = loadCertificate(dir, files.rootCertificate);
  if (root.info.subject !== root.info.issuer) {
    throw preconditionFailed(`${root.path} ("${root.info.subject}") is not a self-signed root certificate`);
  }
  checkValidity(root, now);
  let intermediate: LoadedCertificate | null = null;
  if (files.intermediateCertificate !== undefined) {
    intermediate = loadCertificate(dir, files.intermediateCertificate);
    const child = new X509Certificate(intermediate.der);
    const parent = new X509Certificate(root.der);
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      throw preconditionFailed(`${intermediate.path} was not issued by ${root.path}`);
    }
    checkValidity(intermediate, now);
  }

  const useIntermediate = intermediate !== null && !options.useRoot;
  const signer = useIntermediate && intermediate ? intermediate : root;
  const [certificateName, keyName] =
    useIntermediate && files.intermediateCertificate && files.intermediateKey
      ? [files.intermediateCertificate, files.intermediateKey]
      : [files.rootCertificate, files.rootKey];
  const signerKey = loadKey(dir, keyName, options.passphrase);
  if (!keysMatch(signerKey, signer.info.publicKey)) {
    throw preconditionFailed(`ca directory ${dir}: ${keyName} does not match ${certificateName}`);
  }
  const issuer = Issuer.fromCertificate(signer.der, signerKey);
  return {
    dir,
    metadata,
    root,
    intermediate,
    signer,
    signerKey,
    issuer,
    chain: signer === root ? [] : [signer.der],
  };
}
