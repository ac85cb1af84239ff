// Every material source (static, provider, files, embedded CA) refuses bad
// input with a SigilError that names what was wrong and where it came from,
// never with a raw TypeError or OpenSSL error code. The parsers below the
// sources already speak SigilError; this is the boundary that makes sure of
// it for whatever slips through (a value of the wrong type from JavaScript
// callers, an OpenSSL error from a damaged certificate), and that prefixes
// the file a piece came from when the source is files.
import { firstLineOf, invalid, SigilError } from '../errors.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';
import { parseCrl } from '../pki/crl.ts';
import { readPrivateKey } from '../pki/keys.ts';
import type { TlsMaterial } from '../pki/material.ts';

/** The first line of the message, with Node's error code (ENOENT, ERR_OSSL_…) when the text lacks it. */
function describe(error: unknown): string {
  const first = firstLineOf(error);
  const code = error instanceof Error ? (error as NodeJS.ErrnoException).code : undefined;
  return code && !first.includes(code) ? `${first} (${code})` : first;
}

/** `error` as a SigilError: SigilErrors unchanged, anything else invalid_argument naming `where`. */
export function materialError(error: unknown, where: string): SigilError {
  if (error instanceof SigilError) return error;
  return invalid(`${where}: ${describe(error)}`, error);
}

/** Runs `read`, turning anything it throws that is not a SigilError into one naming `where`. */
export function asMaterialError<T>(where: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw materialError(error, where);
  }
}

const FIELDS = ['certificateChain', 'privateKey', 'trustBundle'] as const;
const FIELD_NAMES: Record<(typeof FIELDS)[number], string> = {
  certificateChain: 'certificate chain',
  privateKey: 'private key',
  trustBundle: 'trust bundle',
};

/** Refuses material whose fields are not PEM text (a JavaScript caller passing a number, say). */
export function checkMaterialShape(material: unknown, where: string): asserts material is TlsMaterial {
  if (typeof material !== 'object' || material === null) {
    throw invalid(
      `${where}: TLS material must be an object with certificateChain, privateKey and trustBundle`,
    );
  }
  const record = material as Record<string, unknown>;
  for (const field of FIELDS) {
    const value = record[field];
    if (typeof value !== 'string' && !Buffer.isBuffer(value)) {
      throw invalid(
        `${where}: ${FIELD_NAMES[field]} (${field}) must be PEM text, got ${value === null ? 'null' : typeof value}`,
      );
    }
  }
  const crls = record.crls;
  if (crls === undefined) return;
  if (!Array.isArray(crls)) throw invalid(`${where}: crls must be an array of PEM CRLs`);
  crls.forEach((crl, index) => {
    if (typeof crl !== 'string' && !Buffer.isBuffer(crl)) {
      throw invalid(
        `${where}: CRL #${index + 1} must be PEM text, got ${crl === null ? 'null' : typeof crl}`,
      );
    }
  });
}

/** Names `path` in front of a message that does not name it already. */
function inFile(path: string, error: unknown): SigilError {
  const e = materialError(error, path);
  if (e.message.includes(path)) return e;
  return new SigilError(e.code, `${path}: ${e.message}`, { cause: e });
}

/**
 * Parses each file of a set on its own, so that a file that cannot be read
 * is named by its path ("…/tls.key: private key: not a valid private key") before the
 * set is checked as a whole (key matches leaf, CRL signers, expiry).
 */
export function checkMaterialFiles(
  material: TlsMaterial,
  paths: {
    readonly certificateChain: string;
    readonly privateKey: string;
    readonly trustBundle: string;
    readonly crls?: readonly string[];
  },
): void {
  const certificates = (path: string, pem: string, what: string) => {
    try {
      for (const der of readCertificates(pem, `${path}: ${what}`)) parseCertificate(der, `${path}: ${what}`);
    } catch (error) {
      throw inFile(path, error);
    }
  };
  certificates(paths.certificateChain, material.certificateChain, 'certificate chain');
  try {
    readPrivateKey(material.privateKey, { source: `${paths.privateKey}: private key` });
  } catch (error) {
    throw inFile(paths.privateKey, error);
  }
  certificates(paths.trustBundle, material.trustBundle, 'trust bundle');
  (material.crls ?? []).forEach((crl, index) => {
    const path = paths.crls?.[index] ?? `CRL #${index + 1}`;
    try {
      parseCrl(crl, `${path}: CRL`);
    } catch (error) {
      throw inFile(path, error);
    }
  });
}
