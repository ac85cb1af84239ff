// `sigil pki init`: a new CA directory (see ca-directory.ts for its layout).
// The directory is created owner-only when missing and removed again if
// writing fails; an existing CA is only replaced with --force.
import { join } from 'node:path';
import { alreadyExists } from '../errors.ts';
import { exists, writeFilesAtomically } from '../files/file-sets.ts';
import { parseDuration } from '../pki/duration.ts';
import { describeKeyType, type KeyType, parseKeyType } from '../pki/keys.ts';
import { CA_METADATA_FILE, caDirectoryFiles, createCa, DEFAULT_FILE_NAMES } from './ca-directory.ts';
import { type CertificateSummary, certificateLines, summarizeCertificate } from './certificate-summary.ts';
import { isGroupOrWorldAccessible, withDirectories } from './directories.ts';
import { printResult, progress, warn } from './output.ts';
import { passphraseFrom } from './passphrase.ts';

export interface InitCommandOptions {
  readonly dir: string;
  readonly keyType: string;
  readonly intermediate?: boolean;
  readonly name: string;
  readonly intermediateName: string;
  readonly ttl: string;
  readonly trustDomain: string;
  readonly passphraseFile?: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

export interface InitResult {
  readonly dir: string;
  readonly keyType: KeyType;
  readonly trustDomain: string;
  readonly encrypted: boolean;
  readonly root: CertificateSummary & { readonly key: string };
  readonly intermediate: (CertificateSummary & { readonly key: string }) | null;
  /** The trust anchor to distribute. */
  readonly trustBundle: string;
  readonly metadata: string;
}

export function runInit(options: InitCommandOptions): void {
  const { dir } = options;
  const keyType = parseKeyType(options.keyType);
  const ttlMs = parseDuration(options.ttl);
  const passphrase = passphraseFrom(options.passphraseFile);
  if (!options.force) {
    for (const name of [CA_METADATA_FILE, DEFAULT_FILE_NAMES.rootCertificate, DEFAULT_FILE_NAMES.rootKey]) {
      if (exists(join(dir, name))) {
        throw alreadyExists(`${dir} already holds a CA (${name} exists); use --force to replace it`);
      }
    }
  }
  const existed = exists(dir);
  progress(`generating ${describeKeyType(keyType)} keys…`);
  const ca = createCa({
    keyType,
    trustDomain: options.trustDomain,
    rootName: options.name,
    intermediateName: options.intermediate ? options.intermediateName : undefined,
    ttlMs,
  });
  const files = caDirectoryFiles(dir, ca, passphrase);
  withDirectories([dir], () => writeFilesAtomically(files, { force: options.force }));
  if (existed && isGroupOrWorldAccessible(dir)) {
    warn(`${dir} is accessible to other users; consider chmod 700 ${dir}`);
  }

  const { files: names } = ca.metadata;
  const result: InitResult = {
    dir,
    keyType,
    trustDomain: ca.metadata.trustDomain,
    encrypted: passphrase !== undefined,
    root: {
      ...summarizeCertificate(ca.root.info, join(dir, names.rootCertificate)),
      key: join(dir, names.rootKey),
    },
    intermediate:
      ca.intermediate && names.intermediateCertificate && names.intermediateKey
        ? {
            ...summarizeCertificate(ca.intermediate.info, join(dir, names.intermediateCertificate)),
            key: join(dir, names.intermediateKey),
          }
        : null,
    trustBundle: join(dir, names.trustBundle),
    metadata: join(dir, CA_METADATA_FILE),
  };
  printResult(options, result, () => initText(result));
}

function initText(result: InitResult): string {
  const encrypted = result.encrypted ? ', encrypted' : '';
  const lines = [
    `created a CA in ${result.dir} (${describeKeyType(result.keyType)}, trust domain ${result.trustDomain})`,
    `root certificate ${result.root.path} (key ${result.root.key}, mode 0600${encrypted})`,
    ...certificateLines(result.root),
  ];
  if (result.intermediate) {
    lines.push(
      `intermediate certificate ${result.intermediate.path} (key ${result.intermediate.key}, mode 0600${encrypted})`,
      ...certificateLines(result.intermediate),
    );
  }
  lines.push(
    `trust anchor to distribute: ${result.trustBundle}`,
    `next: sigil pki issue --dir ${result.dir} --server --dns <name> --out <prefix>`,
  );
  return lines.join('\n');
}
