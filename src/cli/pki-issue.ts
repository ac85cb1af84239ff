// `sigil pki issue`: one leaf certificate from a CA directory, signed by its
// intermediate when it has one. Writes PREFIX.pem (the leaf, then the chain up
// to but excluding the root) and PREFIX.key (0600), or only PREFIX.pem when the
// public key comes from a CSR. Everything is checked before anything is written.
import type { KeyObject } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { invalid } from '../errors.ts';
import {
  type PlannedFile,
  PRIVATE,
  PUBLIC,
  readInputFile,
  writeFilesAtomically,
} from '../files/file-sets.ts';
import { parseCertificate } from '../pki/certificate.ts';
import { readCsr } from '../pki/csr.ts';
import { parseDuration } from '../pki/duration.ts';
import {
  describeKeyType,
  generateKeyPair,
  type KeyType,
  keyTypeOf,
  parseKeyType,
  privateKeyToPem,
} from '../pki/keys.ts';
import { encodePem } from '../pki/pem.ts';
import { loadCaDirectory } from './ca-directory.ts';
import { type CertificateSummary, certificateLines, summarizeCertificate } from './certificate-summary.ts';
import { requireParentDirectory } from './directories.ts';
import { describeSans, issueLeaf, type LeafProfile, planLeafNames } from './leaf.ts';
import { printResult, warn } from './output.ts';
import { passphraseFrom } from './passphrase.ts';

export interface IssueCommandOptions {
  readonly dir: string;
  readonly out: string;
  readonly profile: LeafProfile;
  readonly dns: readonly string[];
  readonly ip: readonly string[];
  readonly uri: readonly string[];
  readonly email: readonly string[];
  readonly name?: string;
  readonly spiffeId?: string;
  readonly ttl: string;
  /** Undefined: the CA's key type. */
  readonly keyType?: string;
  readonly csr?: string;
  readonly passphraseFile?: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

export interface IssueResult {
  readonly profile: LeafProfile;
  readonly certificate: CertificateSummary;
  /** Null when the key came with a CSR and stays with its owner. */
  readonly key: string | null;
  readonly keyType: KeyType;
  readonly commonName: string;
  readonly spiffeId: string;
  readonly sans: readonly { readonly type: string; readonly value: string }[];
  /** The path of the CA certificate that signed it. */
  readonly issuerCertificate: string;
  /** Certificates after the leaf in the .pem file (the intermediate, if any). */
  readonly chainLength: number;
  /** True when the lifetime was cut to the issuer's notAfter. */
  readonly clamped: boolean;
}

export function runIssue(options: IssueCommandOptions): void {
  const ttlMs = parseDuration(options.ttl);
  const requestedKeyType = options.keyType === undefined ? undefined : parseKeyType(options.keyType);
  const csr = options.csr === undefined ? undefined : readCsr(readInputFile(options.csr, 'CSR'), options.csr);
  const passphrase = passphraseFrom(options.passphraseFile);
  const ca = loadCaDirectory(options.dir, { passphrase });
  const names = planLeafNames({
    profile: options.profile,
    trustDomain: ca.metadata.trustDomain,
    name: options.name,
    dns: options.dns,
    ips: options.ip,
    uris: options.uri,
    emails: options.email,
    spiffeId: options.spiffeId,
    csr,
  });
  if (options.out.endsWith('/') || isDirectory(options.out)) {
    throw invalid(
      `--out ${options.out} is a directory; give a file name prefix such as ${join(options.out, 'server')}`,
    );
  }
  const certificatePath = `${options.out}.pem`;
  const keyPath = `${options.out}.key`;
  requireParentDirectory(certificatePath);

  let publicKey: KeyObject;
  let privateKey: KeyObject | null = null;
  if (csr) publicKey = csr.publicKey;
  else ({ publicKey, privateKey } = generateKeyPair(requestedKeyType ?? ca.metadata.keyType));
  const issued = issueLeaf({ issuer: ca.issuer, profile: options.profile, names, publicKey, ttlMs });

  const files: PlannedFile[] = [
    {
      path: certificatePath,
      contents: [issued.der, ...ca.chain].map((der) => encodePem('CERTIFICATE', der)).join(''),
      mode: PUBLIC,
    },
  ];
  if (privateKey) files.push({ path: keyPath, contents: privateKeyToPem(privateKey), mode: PRIVATE });
  writeFilesAtomically(files, { force: options.force });

  for (const message of names.warnings) warn(message);
  if (issued.clamped) {
    warn(
      `the lifetime was cut to end with the issuing CA at ${issued.notAfter.toISOString()}; ` +
        'renew the CA before it expires',
    );
  }
  const result: IssueResult = {
    profile: options.profile,
    certificate: summarizeCertificate(parseCertificate(issued.der), certificatePath),
    key: privateKey ? keyPath : null,
    keyType: keyTypeOf(publicKey),
    commonName: names.commonName,
    spiffeId: names.spiffeId,
    sans: names.sans.map(({ type, value }) => ({ type, value })),
    issuerCertificate: ca.signer.path,
    chainLength: ca.chain.length,
    clamped: issued.clamped,
  };
  printResult(options, result, () => issueText(result));
}

function issueText(result: IssueResult): string {
  const lines = [
    `issued a ${result.profile} certificate for "${result.commonName}" (${describeKeyType(result.keyType)}), signed by ${result.issuerCertificate}`,
    ...certificateLines(result.certificate),
    `  names:       ${describeSans(result.sans)}`,
    `wrote ${result.certificate.path} (certificate${result.chainLength > 0 ? ' + intermediate' : ''})`,
  ];
  if (result.key) lines.push(`wrote ${result.key} (private key, mode 0600)`);
  return lines.join('\n');
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
