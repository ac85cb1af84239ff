// `sigil ca export-root --out DIR`: take the root CA key offline. Writes
// DIR/root.pem and DIR/root.key (both 0600; the key encrypted with a
// passphrase when one is given), and only once both are safely on disk
// removes the encrypted root key from the store. The replica keeps issuing
// with its intermediate; admitting new replicas and rotating intermediates
// need the root key back online.
//
// The Admin API has no call for this yet, so the command works on the data
// directory directly, through the authority in this process: it needs the
// server's --data directory with its SQLite store and store key, and the
// server stopped (a running server would keep the key in memory). A
// PostgreSQL deployment needs the API call (see the note in the command's help).
import { type Command, Option } from 'commander';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';

interface ExportRootFlags {
  data?: string;
  out: string;
  passphraseFile?: string;
  force?: boolean;
  json?: boolean;
}

interface ServerFileFacts {
  readonly store: string;
  readonly replicaId: string;
  readonly listen: string;
  readonly addresses: readonly string[];
  readonly pid: number | null;
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
  const { connect } = await import('node:net');
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
async function serverRunning(facts: ServerFileFacts): Promise<boolean> {
  return facts.pid !== null && processExists(facts.pid) && (await accepting(facts.listen));
}

async function runExportRoot(flags: ExportRootFlags): Promise<void> {
  const { readFileSync, statSync } = await import('node:fs');
  const { join, resolve } = await import('node:path');
  const { invalid, notFound, preconditionFailed } = await import('../errors.ts');
  const { DEFAULT_DATA_DIR, SERVER_INFO_FILE, ADMIN_CERTIFICATE_FILE } = await import('./client-context.ts');
  const { passphraseFrom } = await import('./passphrase.ts');

  const dataDir = resolve(flags.data ?? DEFAULT_DATA_DIR);
  const infoPath = join(dataDir, SERVER_INFO_FILE);
  let facts: ServerFileFacts;
  try {
    const record = JSON.parse(readFileSync(infoPath, 'utf8')) as Record<string, unknown>;
    const advertise = Array.isArray(record.advertise)
      ? record.advertise.filter((a) => typeof a === 'string')
      : [];
    facts = {
      store: typeof record.store === 'string' ? record.store : 'sqlite',
      replicaId: String(record.replicaId ?? ''),
      listen: String(record.listen ?? ''),
      addresses: advertise.length > 0 ? advertise : [String(record.listen ?? '')],
      pid: typeof record.pid === 'number' ? record.pid : null,
    };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw notFound(
        `${infoPath} does not exist: give the data directory of a sigil server that has run (--data)`,
      );
    }
    throw invalid(`${infoPath} is not a server file sigil wrote`, error);
  }
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

  const { loadStoreKey, STORE_KEY_ENV, STORE_KEY_FILE } = await import('../server/store-key.ts');
  const storeKeyEnvironment = process.env[STORE_KEY_ENV];
  if (!storeKeyEnvironment) {
    try {
      statSync(join(dataDir, STORE_KEY_FILE));
    } catch {
      throw notFound(
        `${join(dataDir, STORE_KEY_FILE)} does not exist (nor ${STORE_KEY_ENV}): cannot decrypt the root key`,
      );
    }
  }
  const storeKey = loadStoreKey({ dataDir, environment: storeKeyEnvironment });
  const { parseCertificate, readCertificates } = await import('../pki/certificate.ts');
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
  const { X509Certificate } = await import('node:crypto');
  const uri = (new X509Certificate(admin.der).subjectAltName ?? '')
    .split(', ')
    .find((name) => name.startsWith('URI:spiffe://'));

  const { openStore } = await import('../store/open-store.ts');
  const { Authority } = await import('../authority/authority.ts');
  const { callerFrom } = await import('../authority/identities.ts');
  const { withDirectories } = await import('./directories.ts');
  const { PRIVATE, writeFilesAtomically } = await import('../files/file-sets.ts');
  const store = await openStore('sqlite', dataDir);
  try {
    const { authority } = await Authority.open({
      store,
      replicaId: facts.replicaId,
      storeKey: storeKey.key,
      serverAddresses: facts.addresses,
      storeKind: 'sqlite',
      timers: false,
      onWarning: () => {},
    });
    try {
      const caller = callerFrom(
        {
          spiffeId: uri === undefined ? null : uri.slice(4),
          serial: admin.serialHex,
          fingerprint: admin.fingerprint,
          issuedByDeployment: authority.issuedByDeployment(admin.der),
          delegateKey: null,
        },
        authority.trustDomain,
      );
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
      await authority.close();
    }
  } finally {
    await store.close();
  }
}

export function registerCaCommands(program: Command): void {
  const ca = program.command('ca').description("The control plane's certificate authority");
  ca.command('export-root')
    .description(
      'Take the root CA key offline: write root.pem and root.key (0600) to --out, then remove the key from the store',
    )
    .addOption(
      new Option('--data <dir>', "the server's data directory (SQLite store; stop the server first)").env(
        'SIGIL_DATA',
      ),
    )
    .requiredOption('--out <dir>', 'directory for root.pem and root.key (created 0700)')
    .option(
      '--passphrase-file <file>',
      'encrypt root.key (PKCS#8) with the passphrase in this file (its first line; else $SIGIL_CA_PASSPHRASE)',
    )
    .option('--force', 'overwrite root.pem and root.key in --out')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      examples(
        '$ sigil ca export-root --data /var/lib/sigil --out /media/offline --passphrase-file ./root-passphrase',
        '$ sigil ca export-root --out ./offline-root --json',
      ) +
        '\nWorks on a local SQLite data directory with the server stopped. PostgreSQL deployments need\n' +
        'the Admin API call for it, which does not exist yet.\n',
    )
    .action((flags: ExportRootFlags) => runExportRoot(flags));
}
