// The authority of a stopped server's data directory, opened in this process
// for an operator command that works on the directory directly (`sigil ca
// export-root`). Built as `sigil server` builds it (authority-wiring.ts), but
// without the maintenance timer and without creating anything: the local
// SQLite store, the store key the server made (never a new one), and the
// replica ID and addresses its server.json records.
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Authority } from '../authority/authority.ts';
import { type Caller, callerFrom } from '../authority/identities.ts';
import { invalid, notFound, preconditionFailed } from '../errors.ts';
import { SERVER_INFO_FILE, STORE_KEY_FILE } from '../files/data-directory-names.ts';
import { parseCertificate } from '../pki/certificate.ts';
import { openAuthorityOn, openDeploymentStore } from './authority-wiring.ts';
import { loadStoreKey, STORE_KEY_ENV } from './store-key.ts';

/** What server.json says about the server that last ran on a data directory. */
export interface LocalServerFacts {
  /** "sqlite" or "postgres". */
  readonly store: string;
  readonly replicaId: string;
  /** Its bound gRPC address, HOST:PORT. */
  readonly listen: string;
  /** The addresses it advertised (else its listen address). */
  readonly addresses: readonly string[];
  /** Its process ID, when recorded. */
  readonly pid: number | null;
}

/** server.json of `dataDir`; refused when absent (no server has run there) or not sigil's. */
export function readLocalServerFacts(dataDir: string): LocalServerFacts {
  const infoPath = join(dataDir, SERVER_INFO_FILE);
  try {
    const record = JSON.parse(readFileSync(infoPath, 'utf8')) as Record<string, unknown>;
    const advertise = Array.isArray(record.advertise)
      ? record.advertise.filter((a) => typeof a === 'string')
      : [];
    return {
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
}

export interface LocalAuthority {
  readonly authority: Authority;
  /** Who the holder of `certificateDer` is to this deployment, as the server would see them present it. */
  callerOf(certificateDer: Buffer): Caller;
  /** Stops the authority and closes the store. */
  close(): Promise<void>;
}

export interface LocalAuthorityOptions {
  /** server.json as read already; default: read now. */
  readonly facts?: LocalServerFacts;
  /** What the store key is needed for, said when it is missing. Default: "decrypt the CA keys in the store". */
  readonly storeKeyNeededTo?: string;
}

export async function openLocalAuthority(
  dataDir: string,
  options: LocalAuthorityOptions = {},
): Promise<LocalAuthority> {
  const facts = options.facts ?? readLocalServerFacts(dataDir);
  if (facts.store !== 'sqlite') {
    throw preconditionFailed(
      `the store of ${dataDir} is ${facts.store}: only a local SQLite store is opened from its data directory`,
    );
  }
  // A store key made now could decrypt nothing: the server's own is required.
  const environment = process.env[STORE_KEY_ENV];
  if (!environment) {
    try {
      statSync(join(dataDir, STORE_KEY_FILE));
    } catch {
      throw notFound(
        `${join(dataDir, STORE_KEY_FILE)} does not exist (nor ${STORE_KEY_ENV}): cannot ${options.storeKeyNeededTo ?? 'decrypt the CA keys in the store'}`,
      );
    }
  }
  const storeKey = loadStoreKey({ dataDir, environment });
  const store = await openDeploymentStore('sqlite', dataDir);
  try {
    const { authority } = await openAuthorityOn(store, {
      replicaId: facts.replicaId,
      storeKey: storeKey.key,
      storeKind: 'sqlite',
      serverAddresses: facts.addresses,
      timers: false,
    });
    return {
      authority,
      callerOf: (certificateDer) => {
        const certificate = parseCertificate(certificateDer);
        const uri = (new X509Certificate(certificateDer).subjectAltName ?? '')
          .split(', ')
          .find((name) => name.startsWith('URI:spiffe://'));
        return callerFrom(
          {
            spiffeId: uri === undefined ? null : uri.slice(4),
            serial: certificate.serialHex,
            fingerprint: certificate.fingerprint,
            issuedByDeployment: authority.issuedByDeployment(certificateDer),
            delegateKey: null,
          },
          authority.trustDomain,
        );
      },
      close: async () => {
        try {
          await authority.close();
        } finally {
          await store.close();
        }
      },
    };
  } catch (error) {
    await store.close();
    throw error;
  }
}
