// The first half of a start: the data directory (created 0700, its private
// files checked), this replica's ID, the store key, the store, a --join if
// asked, and the authority on that store.

import { join } from 'node:path';
import type { AuditSink } from '../authority/audit.ts';
import type { Authority, BootstrapOutput } from '../authority/authority.ts';
import type { StartupMode } from '../authority/bootstrap.ts';
import type { IdentityLock } from '../authority/identity-lock.ts';
import { STORE_KEY_FILE } from '../files/data-directory-names.ts';
import type { Logger } from '../logging.ts';
import type { Store } from '../store/store.ts';
import { openAuthorityOn, openDeploymentStore } from './authority-wiring.ts';
import { createDataDirectory, refuseLoosePrivateFiles, resolveReplicaId } from './data-directory.ts';
import { joinIfAsked } from './replica-join.ts';
import type { StartPlan } from './start-plan.ts';
import { loadStoreKey, STORE_KEY_ENV } from './store-key.ts';

/** The flags of a start this half uses (a subset of ServerOptions). */
export interface AuthorityFlags {
  readonly replicaId?: string;
  readonly join?: string;
  readonly storeKey?: string;
  readonly trustDomain?: string;
  readonly policyOid?: string;
  readonly timers?: boolean;
}

export interface ServerAuthority {
  readonly replicaId: string;
  readonly store: Store;
  readonly authority: Authority;
  readonly mode: StartupMode;
  /** Present when this start bootstrapped the store (bootstrap-identity.ts writes it out). */
  readonly bootstrapped: BootstrapOutput | undefined;
}

/**
 * Opens the data directory, the store and the authority. Each thing opened
 * is handed to `opened` for closing should a later step of the start fail.
 */
export async function openServerAuthority(
  plan: StartPlan,
  flags: AuthorityFlags,
  wiring: {
    readonly serverAddresses: readonly string[];
    readonly crlBaseUrl: () => string | undefined;
    readonly onAudit: AuditSink;
    readonly log: Logger;
    readonly opened: (close: () => Promise<unknown>) => void;
    /** Wraps the store before the authority uses it (--workers on SQLite: worker-event-relay.ts). */
    readonly decorateStore?: (store: Store) => Store;
    /** --workers: each identity's decisions serialized across the processes (worker-identity-locks.ts). */
    readonly identityLock?: IdentityLock;
  },
): Promise<ServerAuthority> {
  const { dataDir } = plan;
  const { log } = wiring;
  const directory = createDataDirectory(dataDir);
  if (directory.loose) {
    log.warn({ dataDir }, 'the data directory is readable by group or others; chmod 700 it');
  }
  // Before anything is read or written: a private key others can read is refused, like store.key.
  refuseLoosePrivateFiles(dataDir);
  const replicaId = resolveReplicaId(dataDir, flags.replicaId);
  const storeKey = loadStoreKey({ dataDir, environment: flags.storeKey ?? process.env[STORE_KEY_ENV] });
  if (storeKey.origin === 'created')
    log.info({ path: join(dataDir, STORE_KEY_FILE) }, 'created the store key');

  // The authority re-reads what it derives from store events (revoked
  // serials, CAs) when some were missed; bound once the authority exists.
  let resync = (): void => {};
  const raw = await openDeploymentStore(plan.storeSpec, dataDir, { log, onEventGap: () => resync() });
  wiring.opened(() => raw.close());
  const store = wiring.decorateStore ? wiring.decorateStore(raw) : raw;

  const joined = await joinIfAsked({
    token: flags.join,
    store,
    storeKind: plan.storeKind,
    replicaId,
    log,
  });
  const opened = await openAuthorityOn(store, {
    replicaId,
    storeKey: storeKey.key,
    storeKind: plan.storeKind,
    serverAddresses: wiring.serverAddresses,
    log,
    ...(flags.timers === false ? { timers: false } : {}),
    ...(flags.trustDomain ? { trustDomain: flags.trustDomain } : {}),
    ...(flags.policyOid ? { policyOid: flags.policyOid } : {}),
    ...(joined ? { join: joined } : {}),
    crlBaseUrl: wiring.crlBaseUrl,
    onAudit: wiring.onAudit,
    ...(wiring.identityLock ? { identityLock: wiring.identityLock } : {}),
  });
  const { authority } = opened;
  wiring.opened(() => authority.close());
  resync = () => {
    authority.maintain().catch((error: unknown) => log.warn({ err: error }, 're-reading state failed'));
  };
  return { replicaId, store, authority, mode: opened.mode, bootstrapped: opened.bootstrapped };
}
