// How sigil opens a deployment's store and builds its Authority on it: one
// way for `sigil server` (server-authority.ts) and for an operator command
// working on a stopped server's data directory (local-authority.ts).

import type { AuditSink } from '../authority/audit.ts';
import { Authority, type OpenedAuthority } from '../authority/authority.ts';
import type { JoinMaterial } from '../authority/bootstrap.ts';
import type { IdentityLock } from '../authority/identity-lock.ts';
import type { Logger } from '../logging.ts';
import { openStore, type StoreKind } from '../store/open-store.ts';
import type { Store } from '../store/store.ts';

export interface StoreOpening {
  /** Non-fatal store problems; absent: a process warning. */
  readonly log?: Logger;
  /**
   * Events missed while PostgreSQL's LISTEN connection was down are not
   * replayed: whoever derives state from them re-reads it instead.
   */
  readonly onEventGap?: () => void;
}

/** The store a --store value names ("sqlite": <dataDir>/sigil.db), migrated. */
export function openDeploymentStore(
  spec: string,
  dataDir: string,
  opening: StoreOpening = {},
): Promise<Store> {
  const { log, onEventGap } = opening;
  return openStore(spec, dataDir, {
    ...(log ? { onError: (error: Error) => log.warn({ err: error }, 'store problem') } : {}),
    postgres: {
      onEventGap: (gap) => {
        log?.warn({ from: gap.from, to: gap.to }, 'store events may have been missed; re-reading state');
        onEventGap?.();
      },
    },
  });
}

export interface AuthoritySettings {
  readonly replicaId: string;
  readonly storeKey: Buffer;
  readonly storeKind: StoreKind;
  /** Where clients reach this replica; read again at token time (advertised.ts updates it in place). */
  readonly serverAddresses: readonly string[];
  /** Background problems are logged as warnings; absent: they are dropped. */
  readonly log?: Logger;
  /** The maintenance timer (default true); a one-off command runs without. */
  readonly timers?: boolean;
  /** Bootstrap only: the trust domain and policy OID of a new deployment. */
  readonly trustDomain?: string;
  readonly policyOid?: string;
  /** The intermediate obtained with --join. */
  readonly join?: JoinMaterial;
  readonly crlBaseUrl?: () => string | undefined;
  readonly onAudit?: AuditSink;
  /** --workers: each identity's decisions serialized across the processes (worker-identity-locks.ts). */
  readonly identityLock?: IdentityLock;
}

/** Starts the Authority on `store`: bootstraps an empty one, serves or joins an existing one. */
export function openAuthorityOn(store: Store, settings: AuthoritySettings): Promise<OpenedAuthority> {
  const { log } = settings;
  return Authority.open({
    store,
    replicaId: settings.replicaId,
    storeKey: settings.storeKey,
    ...(settings.trustDomain ? { trustDomain: settings.trustDomain } : {}),
    ...(settings.policyOid ? { policyOid: settings.policyOid } : {}),
    serverAddresses: settings.serverAddresses,
    storeKind: settings.storeKind,
    ...(settings.join ? { join: settings.join } : {}),
    ...(settings.timers === false ? { timers: false } : {}),
    onWarning: (message, error) => log?.warn({ ...(error ? { err: error } : {}) }, message),
    ...(settings.crlBaseUrl ? { crlBaseUrl: settings.crlBaseUrl } : {}),
    ...(settings.onAudit ? { onAudit: settings.onAudit } : {}),
    ...(settings.identityLock ? { identityLock: settings.identityLock } : {}),
  });
}
