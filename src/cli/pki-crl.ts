// `sigil pki crl`: a signed CRL from a CA directory's issuing CA (the
// intermediate when there is one, the root with --root). The CRL number comes
// from sigil-ca.json; the CRL lists every serial that CA has revoked, kept in
// revocations.json (crl-history.ts, like openssl ca's index), so a second CRL
// keeps the first one's entries. The CRL, sigil-ca.json and revocations.json
// are written together in one atomic write, so numbers only ever go up and a
// failure (a refused --revoke included) changes none of them.
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { invalid, SigilError } from '../errors.ts';
import { PUBLIC, writeFilesAtomically } from '../files/file-sets.ts';
import { createCrl, parseRevocationReason, type RevocationReason } from '../pki/crl.ts';
import { parseDuration } from '../pki/duration.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import { encodePem } from '../pki/pem.ts';
import { loadCaDirectory, metadataFile } from './ca-directory.ts';
import {
  applyRevocations,
  historyFile,
  parseRevocationHistory,
  REVOCATIONS_FILE,
  type RevocationRequest,
} from './crl-history.ts';
import { requireParentDirectory } from './directories.ts';
import { printResult } from './output.ts';
import { passphraseFrom } from './passphrase.ts';

export interface CrlCommandOptions {
  readonly dir: string;
  readonly revoke: readonly string[];
  readonly out: string;
  readonly nextUpdate: string;
  readonly der?: boolean;
  readonly root?: boolean;
  readonly passphraseFile?: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

export interface Revocation {
  /** Lower-case hex without leading zeros. */
  readonly serial: string;
  readonly reason: RevocationReason;
}

export interface CrlResult {
  readonly path: string;
  readonly format: 'pem' | 'der';
  readonly issuer: string;
  readonly issuerCertificate: string;
  readonly crlNumber: number;
  readonly thisUpdate: string;
  readonly nextUpdate: string;
  /** Every serial the CRL lists: this CA's whole revocation history. */
  readonly revoked: readonly Revocation[];
  /** Serials revoked by this command. */
  readonly added: readonly string[];
  /** Serials released from certificateHold by this command (no longer listed). */
  readonly released: readonly string[];
  /** Serials whose certificateHold this command made permanent. */
  readonly changed: readonly string[];
}

/**
 * "SERIAL" or "SERIAL:reason". The serial is hex, optionally "0x"-prefixed or
 * colon-separated ("0A:1B:…"); a reason is given by name, so whatever follows
 * the last colon is a reason exactly when it is not plain hex.
 */
export function parseRevocation(text: string): Revocation & { readonly reasonGiven: boolean } {
  const colon = text.lastIndexOf(':');
  const suffix = colon < 0 ? '' : text.slice(colon + 1);
  const hasReason = colon >= 0 && !/^[0-9a-fA-F]*$/.test(suffix);
  const serialText = hasReason ? text.slice(0, colon) : text;
  const reason = hasReason ? parseRevocationReason(suffix) : 'unspecified';
  const shown = serialText.length > 64 ? `${serialText.slice(0, 64)}…` : serialText;
  const digits = serialText
    .replace(/^0x/i, '')
    .replace(/:/g, '')
    .replace(/^0+(?=.)/, '')
    .toLowerCase();
  const colonsOk =
    !serialText.includes(':') || /^(?:0x)?[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2})*$/i.test(serialText);
  if (!/^[0-9a-f]{1,40}$/.test(digits) || !colonsOk || digits === '0') {
    throw invalid(`--revoke "${shown}": the serial must be a positive hex number of at most 20 bytes`);
  }
  return { serial: digits, reason, reasonGiven: hasReason };
}

function readHistoryText(dir: string): string | undefined {
  try {
    return readFileSync(join(dir, REVOCATIONS_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SigilError(
      'failed_precondition',
      `cannot read ${join(dir, REVOCATIONS_FILE)}: ${String(error)}`,
      {
        cause: error,
      },
    );
  }
}

export function runCrl(options: CrlCommandOptions): void {
  const revocations: RevocationRequest[] = options.revoke.map(parseRevocation);
  const seen = new Set<string>();
  for (const { serial } of revocations) {
    if (seen.has(serial)) throw invalid(`serial ${serial} is given to --revoke more than once`);
    seen.add(serial);
  }
  const nextUpdateMs = parseDuration(options.nextUpdate);
  const passphrase = passphraseFrom(options.passphraseFile);
  const ca = loadCaDirectory(options.dir, { passphrase, useRoot: options.root });
  requireParentDirectory(options.out);

  const now = new Date();
  const thisUpdate = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const nextUpdate = new Date(thisUpdate.getTime() + nextUpdateMs);
  const crlNumber = ca.metadata.crlNumber + 1;
  // The signing CA's revocation history, with this command's revocations applied.
  const history = parseRevocationHistory(ca.dir, readHistoryText(ca.dir));
  const fingerprint = sha256Hex(ca.signer.der);
  const signerFile = basename(ca.signer.path);
  const change = applyRevocations(
    history.get(fingerprint) ?? { certificate: signerFile, subject: ca.signer.info.subject, revoked: [] },
    revocations,
    thisUpdate,
  );
  const entries = change.history.revoked;
  const der = createCrl({
    issuerCertificate: ca.signer.der,
    issuerKey: ca.signerKey,
    entries: entries.map(({ serial, reason, revokedAt }) => ({ serialHex: serial, revokedAt, reason })),
    crlNumber: BigInt(crlNumber),
    thisUpdate,
    nextUpdate,
  });
  writeFilesAtomically(
    [
      { path: options.out, contents: options.der ? der : encodePem('X509 CRL', der), mode: PUBLIC },
      { ...metadataFile(ca.dir, { ...ca.metadata, crlNumber }), replaces: true },
      historyFile(ca.dir, new Map([...history, [fingerprint, change.history]])),
    ],
    { force: options.force },
  );

  const result: CrlResult = {
    path: options.out,
    format: options.der ? 'der' : 'pem',
    issuer: ca.signer.info.subject,
    issuerCertificate: ca.signer.path,
    crlNumber,
    thisUpdate: thisUpdate.toISOString(),
    nextUpdate: nextUpdate.toISOString(),
    revoked: entries.map(({ serial, reason }) => ({ serial, reason })),
    added: change.added.map((entry) => entry.serial),
    released: change.released,
    changed: change.changed.map((entry) => entry.serial),
  };
  printResult(options, result, () => crlText(result));
}

function crlText(result: CrlResult): string {
  const lines = [
    `wrote CRL number ${result.crlNumber} (${result.format.toUpperCase()}) to ${result.path}, signed by ${result.issuerCertificate}`,
    `  valid:       ${result.thisUpdate} to ${result.nextUpdate} (publish a new one before then)`,
  ];
  if (result.revoked.length === 0) lines.push('  revoked:     none');
  const added = new Set(result.added);
  const changed = new Set(result.changed);
  for (const { serial, reason } of result.revoked) {
    const note = added.has(serial) ? ', new' : changed.has(serial) ? ', was on hold' : '';
    lines.push(`  revoked:     ${serial} (${reason}${note})`);
  }
  for (const serial of result.released) lines.push(`  released:    ${serial} (off hold; no longer listed)`);
  return lines.join('\n');
}
