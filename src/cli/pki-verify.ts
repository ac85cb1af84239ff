// `sigil pki verify CERT --ca FILE`: does this certificate chain to these
// roots, for this purpose, for this name, and is nothing in it revoked?
// OpenSSL answers, through the `openssl verify` command: sigil never
// validates a path itself (neither here nor in TLS, where OpenSSL does it in
// the handshake). This file only splits the input into what `openssl verify`
// takes (target, untrusted intermediates, trusted roots, CRLs), maps the
// flags onto its options, and reads its verdict.
//
// Exit codes: 0 verified, 1 not verified (one line with OpenSSL's reason,
// its error number and the depth), 2 bad usage.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SigilError } from '../errors.ts';
import { readInputFile } from '../files/file-sets.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';
import { classifyAddress } from '../pki/names.ts';
import { encodePem } from '../pki/pem.ts';
import { printResult } from './output.ts';

export type VerifyPurpose = 'server' | 'client' | 'any';

export interface VerifyOptions {
  readonly ca: string;
  readonly untrusted?: readonly string[];
  readonly purpose: VerifyPurpose;
  readonly name?: string;
  readonly crl?: readonly string[];
  readonly crlAll?: boolean;
  readonly x509Strict?: boolean;
  readonly json?: boolean;
}

export interface VerifyResult {
  readonly verified: boolean;
  readonly file: string;
  readonly subject: string;
  readonly serial: string;
  /** Subjects, leaf first, of the chain OpenSSL built (empty when it did not verify). */
  readonly chain: string[];
  readonly purpose: VerifyPurpose;
  readonly name: string | null;
  readonly crlChecked: 'none' | 'leaf' | 'all';
  /** OpenSSL's error when not verified: X509_V_ERR number, depth, text. */
  readonly error: { readonly code: number; readonly depth: number; readonly message: string } | null;
  readonly openssl: string;
}

const PURPOSES: Readonly<Record<VerifyPurpose, string>> = {
  server: 'sslserver',
  client: 'sslclient',
  any: 'any',
};

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function openssl(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const errno = error as (NodeJS.ErrnoException & { code?: unknown }) | null;
      if (errno && errno.code === 'ENOENT') {
        reject(
          new SigilError(
            'failed_precondition',
            'sigil pki verify needs the openssl command, which does the verification (install openssl)',
          ),
        );
        return;
      }
      const code = error ? (typeof errno?.code === 'number' ? errno.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function pemOf(ders: readonly Buffer[]): string {
  return ders.map((der) => encodePem('CERTIFICATE', der)).join('');
}

/** "error 10 at 0 depth lookup: certificate has expired" → its parts (the first such line). */
function parseError(output: string): VerifyResult['error'] {
  const match = /error (\d+) at (\d+) depth lookup: ?(.*)/.exec(output);
  if (match) return { code: Number(match[1]), depth: Number(match[2]), message: match[3].trim() };
  const line = output
    .split('\n')
    .map((text) => text.trim())
    .find((text) => text !== '');
  return { code: -1, depth: -1, message: line ?? 'openssl verify failed without saying why' };
}

/** The subjects of `-show_chain`'s "depth=N: SUBJECT" lines, leaf first. */
function parseChain(output: string): string[] {
  const chain: string[] = [];
  for (const match of output.matchAll(/^depth=\d+: (.*?)(?: \(untrusted\))?$/gm)) chain.push(match[1]);
  return chain;
}

export async function verifyCertificate(file: string, options: VerifyOptions): Promise<VerifyResult> {
  const given = readCertificates(readInputFile(file, 'certificate file'), file);
  const leaf = parseCertificate(given[0], file);
  const roots = readCertificates(readInputFile(options.ca, '--ca file'), options.ca);
  const untrusted = [...given.slice(1)];
  for (const path of options.untrusted ?? []) {
    untrusted.push(...readCertificates(readInputFile(path, '--untrusted file'), path));
  }
  const crls = (options.crl ?? []).map((path) => ({ path, data: readInputFile(path, '--crl file') }));
  const name = options.name === undefined ? undefined : classifyAddress(options.name.trim());

  const dir = mkdtempSync(join(tmpdir(), 'sigil-verify-'));
  try {
    const write = (base: string, text: string | Buffer) => {
      const path = join(dir, base);
      writeFileSync(path, text, { mode: 0o600 });
      return path;
    };
    const args = [
      'verify',
      '-show_chain',
      '-nameopt',
      'RFC2253',
      '-CAfile',
      write('roots.pem', pemOf(roots)),
    ];
    args.push('-purpose', PURPOSES[options.purpose]);
    if (untrusted.length > 0) args.push('-untrusted', write('untrusted.pem', pemOf(untrusted)));
    crls.forEach((crl, i) => {
      args.push('-CRLfile', write(`crl-${i}`, crl.data));
    });
    const crlChecked = crls.length === 0 ? 'none' : options.crlAll ? 'all' : 'leaf';
    if (crlChecked !== 'none') args.push(crlChecked === 'all' ? '-crl_check_all' : '-crl_check');
    if (name?.type === 'dns') args.push('-verify_hostname', name.value);
    if (name?.type === 'ip') args.push('-verify_ip', name.value);
    if (options.x509Strict) args.push('-x509_strict');
    args.push(write('target.pem', pemOf([given[0]])));
    const run = await openssl(args);
    const output = `${run.stdout}\n${run.stderr}`;
    const verified = run.code === 0 && /: OK\s*$/m.test(run.stdout);
    return {
      verified,
      file,
      subject: leaf.subject,
      serial: leaf.serialHex,
      chain: verified ? parseChain(run.stdout) : [],
      purpose: options.purpose,
      name: name?.value ?? null,
      crlChecked,
      error: verified ? null : parseError(output),
      openssl: ['openssl', ...args.slice(0, -1), file].join(' ').replaceAll(`${dir}/`, ''),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runVerify(file: string, options: VerifyOptions): Promise<void> {
  const result = await verifyCertificate(file, options);
  if (!result.verified) {
    if (options.json) printResult(options, result, () => '');
    const error = result.error;
    throw new SigilError(
      'failed_precondition',
      `${file} did not verify: ${error?.message ?? 'unknown reason'}` +
        (error && error.code >= 0 ? ` (OpenSSL error ${error.code} at depth ${error.depth})` : ''),
    );
  }
  printResult(options, result, () =>
    [
      `${file}: OK (OpenSSL verified it)`,
      `  subject:  ${result.subject}`,
      `  serial:   ${result.serial}`,
      `  chain:    ${result.chain.join('  <-  ')}`,
      `  purpose:  ${result.purpose}${result.name ? `, name ${result.name}` : ''}`,
      `  CRLs:     ${result.crlChecked === 'none' ? 'not checked (give --crl)' : `checked (${result.crlChecked === 'all' ? 'every level' : 'the leaf'})`}`,
    ].join('\n'),
  );
}
