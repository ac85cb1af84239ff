// `sigil ca export-root --out DIR`: take the root CA key offline. Writes
// DIR/root.pem and DIR/root.key (both 0600; the key encrypted with a
// passphrase when one is given), and only once both are safely on disk
// removes the encrypted root key from the store. The replica keeps issuing
// with its intermediate; admitting new replicas and rotating intermediates
// need the root key back online.
//
// The Admin API has no call for this yet, so the command works on the data
// directory directly, through the authority in this process
// (server/local-authority.ts): it needs the server's --data directory with
// its SQLite store and store key, and the server stopped (a running server
// would keep the key in memory). A PostgreSQL deployment needs the API call
// (see the note in the command's help, ca.ts).
import { readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { invalid, notFound, preconditionFailed } from '../errors.ts';
import { ADMIN_CERTIFICATE_FILE, DEFAULT_DATA_DIR } from '../files/data-directory-names.ts';
import { PRIVATE, writeFilesAtomically } from '../files/file-sets.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';
import {
  type LocalServerFacts,
  openLocalAuthority,
  readLocalServerFacts,
} from '../server/local-authority.ts';
import { withDirectories } from './directories.ts';
import { printResult } from './output.ts';
import { passphraseFrom } from './passphrase.ts';

export interface ExportRootFlags {
  data?: string;
  out: string;
  passphraseFile?: string;
  force?: boolean;
  json?: boolean;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when something accepts TCP connections at HOST:PORT (within half a second). */
async function accepting(address: string): Promise<boolean> {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(address);
  if (!match) return false;
  const host = (match[1] ?? match[2]) === '0.0.0.0' ? '127.0.0.1' : (match[1] ?? match[2]);
  return new Promise((resolve) => {
    const socket = connect({ host: host === '::' ? '::1' : host, port: Number(match[3]) });
    const done = (result: boolean) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The server recorded in server.json still runs: its process exists and its port answers. */
async function serverRunning(facts: LocalServerFacts): Promise<boolean> {
  return facts.pid !== null && processExists(facts.pid) && (await accepting(facts.listen));
}

export async function runExportRoot(flags: ExportRootFlags): Promise<void> {
  const dataDir = resolve(flags.data ?? DEFAULT_DATA_DIR);
  const facts = readLocalServerFacts(dataDir);
  if (facts.store !== 'sqlite') {
    throw preconditionFailed(
      `the store of ${dataDir} is ${facts.store}: export-root works on a local SQLite store only until the Admin API can export the root key`,
    );
  }
  if (await serverRunning(facts)) {
    throw preconditionFailed(
      `the sigil server (pid ${facts.pid}) is running on ${dataDir}; stop it first, it would keep the root key in memory`,
    );
  }
  const passphrase = passphraseFrom(flags.passphraseFile);
  const out = resolve(flags.out);
  const rootPem = join(out, 'root.pem');
  const rootKey = join(out, 'root.key');
  try {
    if (!statSync(out).isDirectory()) throw invalid(`--out ${flags.out} exists and is not a directory`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }

  const adminPath = join(dataDir, ADMIN_CERTIFICATE_FILE);
  let adminPem: string;
  try {
    adminPem = readFileSync(adminPath, 'utf8');
  } catch {
    throw notFound(
      `${adminPath} does not exist: export-root acts as the bootstrap admin of the data directory`,
    );
  }
  const admin = parseCertificate(readCertificates(adminPem, adminPath)[0], adminPath);

  const local = await openLocalAuthority(dataDir, { facts, storeKeyNeededTo: 'decrypt the root key' });
  try {
    const { authority } = local;
    const caller = local.callerOf(admin.der);
    if (caller.role !== 'admin')
      throw preconditionFailed(`${adminPath} is not an admin identity of this trust domain`);
    // Written before the key leaves the store; the store is changed only after both files are on disk.
    const exported = await authority.exportRoot(caller, { passphrase, keepInStore: true });
    withDirectories([out], () =>
      writeFilesAtomically(
        [
          { path: rootPem, contents: exported.certificatePem, mode: PRIVATE },
          { path: rootKey, contents: exported.privateKeyPem, mode: PRIVATE },
        ],
        { force: flags.force },
      ),
    );
    await authority.removeRootKey(caller);
    const result = {
      rootCertificate: rootPem,
      rootKey,
      rootFingerprint: exported.rootFingerprint,
      encrypted: passphrase !== undefined,
      removedFromStore: true,
      dataDir,
    };
    printResult(flags, result, () =>
      [
        `exported the root CA ${result.rootFingerprint}`,
        `wrote ${rootPem} and ${rootKey} (mode 0600${result.encrypted ? ', key encrypted' : ', key NOT encrypted'})`,
        `removed the root key from the store of ${dataDir}: the server now issues with its intermediate only`,
        'keep root.key offline; new replicas and intermediate rotation need it back online',
      ].join('\n'),
    );
  } finally {
    await local.close();
  }
}
