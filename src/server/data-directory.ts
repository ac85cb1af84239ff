// The server's data directory: what it keeps there and what it leaves there
// for operator commands (the names: files/data-directory-names.ts).
//
//   store.key     32-byte key encrypting CA keys in the store (0600; server/store-key.ts)
//   sigil.db      the SQLite store (with --store sqlite)
//   replica-id    this replica's ID, fixed at first start
//   admin.pem     bootstrap admin certificate + intermediate (0600)
//   admin.key     its private key (0600)
//   http-admin.token  the bearer token of the HTTP side's admin endpoints (0600)
//
// A private file (admin.key, store.key, http-admin.token) open to group or
// others makes the server refuse to start (refuseLoosePrivateFiles).
//   ca.pem        the trust bundle's roots (pin / trust these)
//   server.json   where the server is and who it is (see ServerInfoFile); read by
//                 `sigil token|node|cert|status --data DIR` (cli/client-context.ts)
//
// The directory is created 0700. Every file is written to a temporary name
// and renamed into place, so a reader never sees half a file.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { firstLineOf, invalid, preconditionFailed, SigilError } from '../errors.ts';
import {
  ADMIN_CERTIFICATE_FILE,
  ADMIN_KEY_FILE,
  CA_BUNDLE_FILE,
  HTTP_ADMIN_TOKEN_FILE,
  REPLICA_ID_FILE,
  SERVER_INFO_FILE,
  STORE_KEY_FILE,
} from '../files/data-directory-names.ts';
import { writeTemporaryBeside } from '../files/durable-write.ts';

/** server.json, version 1. */
export interface ServerInfoFile {
  readonly version: 1;
  /** The bound gRPC address, HOST:PORT (the real port, also when started with port 0). */
  readonly listen: string;
  /** The bound HTTP address, HOST:PORT, and its URL. */
  readonly httpListen: string;
  readonly httpUrl: string;
  /** The addresses put in join tokens (and in the server certificate's SANs). */
  readonly advertise: readonly string[];
  /** SHA-256 of the root CA certificate DER, lower-case hex: what clients pin. */
  readonly rootFingerprint: string;
  readonly trustDomain: string;
  readonly replicaId: string;
  /** "sqlite" or "postgres" (never the connection string: it may hold a password). */
  readonly store: string;
  /** File names in the data directory. */
  readonly adminCertificate: string;
  readonly adminKey: string;
  readonly caBundle: string;
  readonly pid: number;
  readonly startedAt: string;
}

export function createDataDirectory(dir: string): { created: boolean; loose: boolean } {
  let created = false;
  try {
    statSync(dir);
  } catch {
    created = true;
  }
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new SigilError(
      'failed_precondition',
      `cannot create the data directory ${dir}: ${firstLineOf(error)}`,
      {
        cause: error,
      },
    );
  }
  const stat = statSync(dir);
  if (!stat.isDirectory()) throw invalid(`the data directory ${dir} is not a directory`);
  return { created, loose: (stat.mode & 0o077) !== 0 };
}

/** Write `contents` to `path` atomically (temporary file, fsync, rename) with `mode`. */
export function writeFileAtomically(path: string, contents: string | Buffer, mode: number): void {
  let temporary: string | null = null;
  try {
    temporary = writeTemporaryBeside(path, contents, mode);
    renameSync(temporary, path);
  } catch (error) {
    if (temporary !== null) rmSync(temporary, { force: true });
    throw new SigilError('failed_precondition', `cannot write ${path}: ${firstLineOf(error)}`, {
      cause: error,
    });
  }
}

const REPLICA_ID = /^[A-Za-z0-9._-]{1,48}$/;

/**
 * This data directory's replica ID: the one recorded at first start; else
 * `requested`, else a new random one, recorded now. A different `requested`
 * than the recorded one is refused: the store keeps this replica's CA under it.
 */
export function resolveReplicaId(dir: string, requested: string | undefined): string {
  const path = join(dir, REPLICA_ID_FILE);
  let recorded: string | undefined;
  try {
    recorded = readFileSync(path, 'utf8').trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new SigilError('failed_precondition', `cannot read ${path}: ${firstLineOf(error)}`, {
        cause: error,
      });
    }
  }
  if (recorded !== undefined) {
    if (!REPLICA_ID.test(recorded)) throw invalid(`${path} does not hold a valid replica ID`);
    if (requested !== undefined && requested !== recorded) {
      throw preconditionFailed(
        `the data directory ${dir} belongs to replica "${recorded}", not "${requested}" (leave out --replica-id, or use another --data directory)`,
      );
    }
    return recorded;
  }
  const id = requested ?? `replica-${randomBytes(4).toString('hex')}`;
  if (!REPLICA_ID.test(id) || id === '.' || id === '..') {
    throw invalid(
      `invalid replica ID ${JSON.stringify(id.slice(0, 60))}: use 1 to 48 letters, digits, ".", "-" or "_"`,
    );
  }
  writeFileAtomically(path, `${id}\n`, 0o644);
  return id;
}

export function writeServerInfo(dir: string, info: ServerInfoFile): string {
  const path = join(dir, SERVER_INFO_FILE);
  writeFileAtomically(path, `${JSON.stringify(info, null, 2)}\n`, 0o644);
  return path;
}

export function readServerInfoFile(dir: string): ServerInfoFile {
  const path = join(dir, SERVER_INFO_FILE);
  return JSON.parse(readFileSync(path, 'utf8')) as ServerInfoFile;
}

/** The bootstrap admin identity: admin.pem and admin.key, both 0600. */
export function writeAdminIdentity(
  dir: string,
  identity: { certificatePem: string; keyPem: string },
): { certificatePath: string; keyPath: string } {
  const certificatePath = join(dir, ADMIN_CERTIFICATE_FILE);
  const keyPath = join(dir, ADMIN_KEY_FILE);
  writeFileAtomically(keyPath, identity.keyPem, 0o600);
  writeFileAtomically(certificatePath, identity.certificatePem, 0o600);
  return { certificatePath, keyPath };
}

export function writeCaBundle(dir: string, pem: string): string {
  const path = join(dir, CA_BUNDLE_FILE);
  writeFileAtomically(path, pem, 0o644);
  return path;
}

/** The data directory's secrets: private keys and tokens, kept 0600. */
export const PRIVATE_FILES: readonly string[] = [ADMIN_KEY_FILE, STORE_KEY_FILE, HTTP_ADMIN_TOKEN_FILE];

/**
 * Refuses to start (failed_precondition, one line naming the file, its mode
 * and the fix) when a private file of the data directory is open to group
 * or others, as ssh refuses a loose private key: admin.key, store.key,
 * http-admin.token. Files not there yet are fine (they are created 0600).
 */
export function refuseLoosePrivateFiles(dir: string): void {
  for (const name of PRIVATE_FILES) {
    const path = join(dir, name);
    let mode: number;
    try {
      mode = statSync(path).mode & 0o777;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new SigilError('failed_precondition', `cannot read ${path}: ${firstLineOf(error)}`, {
        cause: error,
      });
    }
    if ((mode & 0o077) !== 0) {
      throw preconditionFailed(
        `${path} is a private file open to group or others (mode ${mode.toString(8).padStart(4, '0')}): run chmod 600 ${path}`,
      );
    }
  }
}

/**
 * The bearer token for the HTTP side's admin endpoints (/delegations):
 * <data>/http-admin.token, 0600, made on first start. Whoever can read the
 * data directory is an operator already.
 */
export function httpAdminToken(dir: string): string {
  const path = join(dir, HTTP_ADMIN_TOKEN_FILE);
  try {
    const token = readFileSync(path, 'utf8').trim();
    if (/^[0-9a-f]{64}$/.test(token)) return token;
    throw invalid(`${path} does not hold a token (64 hex characters); delete it to make a new one`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const token = randomBytes(32).toString('hex');
  writeFileAtomically(path, `${token}\n`, 0o600);
  return token;
}
