// Keeping a running authority in step with time and with the other replicas:
// the store's events (revocations and CA changes made anywhere), and a
// maintenance round on a timer that reloads the CAs, rotates intermediates
// due at 2/3 of their life, renews this replica's server certificate, prunes
// expired serials from the revoked set and keeps the root CRL fresh.
import type { MaterialSource } from '../pki/material.ts';
import type { StoreEvent } from '../store/store.ts';
import { createOwnIntermediate, recertifyIntermediate } from './bootstrap.ts';
import type { AuthorityContext } from './context.ts';
import { MAINTENANCE_INTERVAL_MS, ROOT_CRL_WARNING_MS, renewalDue } from './lifetimes.ts';
import { issueServerMaterial, type ServerLeaf, ServerMaterialSource } from './server-material.ts';

export class Maintenance {
  readonly #context: AuthorityContext;
  #server!: ServerMaterialSource;
  #serverLeaf: ServerLeaf | null = null;
  #unsubscribe: (() => void) | null = null;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(context: AuthorityContext) {
    this.#context = context;
  }

  /**
   * Subscribes to store events, loads the revoked set, publishes a root CRL
   * when the root key is here and issues this replica's server certificate.
   */
  async start(): Promise<void> {
    const context = this.#context;
    this.#unsubscribe = context.store.subscribe((event) => this.#onEvent(event));
    await context.revocations.reload(context.store, caIds(context), context.now());
    if (context.cas.rootKey()) await context.crls.publishRoot();
    this.#server = new ServerMaterialSource(await this.#newServerMaterial(), (error) =>
      context.failed('a server material subscriber', error),
    );
  }

  /** This replica's gRPC server identity; renewed in place at 2/3 of its life. */
  serverMaterial(): MaterialSource {
    return this.#server;
  }

  /** One maintenance round (Authority.maintain); nothing once closed. */
  async run(): Promise<void> {
    if (this.#closed) return;
    const context = this.#context;
    await context.exclusive(async () => {
      await context.reload();
      await this.#rotateIntermediates();
      await this.#renewServerIfDue();
      await context.revocations.reload(context.store, caIds(context), context.now());
      await this.#keepRootCrlFresh();
    });
  }

  /** Runs the next round when something falls due, at least every MAINTENANCE_INTERVAL_MS. */
  schedule(): void {
    if (this.#closed) return;
    const { cas } = this.#context;
    const now = this.#context.now().getTime();
    const due: number[] = [now + MAINTENANCE_INTERVAL_MS];
    if (this.#serverLeaf) due.push(renewalDue(this.#serverLeaf.notBefore, this.#serverLeaf.notAfter));
    if (cas.rootIssuer()) {
      for (const ca of cas.intermediates()) {
        if (ca.record.retiredAt === null) due.push(renewalDue(ca.info.notBefore, ca.info.notAfter));
      }
    }
    const delay = Math.min(Math.max(Math.min(...due) - now, 1000), MAINTENANCE_INTERVAL_MS);
    this.#timer = setTimeout(() => {
      this.run()
        .catch((error) => this.#context.failed('maintenance', error))
        .finally(() => this.schedule());
    }, delay);
    this.#timer.unref();
  }

  /** Stops the timer and the store subscription, and waits for work under way. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    await this.#context.exclusive(async () => {});
  }

  #onEvent(event: StoreEvent): void {
    if (this.#closed) return;
    const context = this.#context;
    if (event.kind === 'revocation') {
      context.revoked(event.serials);
      const intermediates = new Set(context.cas.intermediates().map((ca) => ca.info.serialHex));
      if (context.cas.rootKey() && event.serials.some((serial) => intermediates.has(serial))) {
        context.crls.publishRoot().catch((error) => context.failed('publishing the root CRL', error));
      }
    } else if (event.kind === 'ca') {
      context
        .exclusive(() => context.reload())
        .catch((error) => context.failed('reloading CAs after a change', error));
    }
  }

  /**
   * The root CRL must never expire under a running deployment: the holder of
   * the root key re-signs it when half its 7 days are gone (crl-cache.ts);
   * with the key offline, the last one published lasts a year, and this
   * warns when it has less than 30 days left.
   */
  async #keepRootCrlFresh(): Promise<void> {
    const context = this.#context;
    if (context.cas.rootKey()) {
      await context.crls.publishRoot();
      return;
    }
    const latest = await context.crls.latestRoot();
    const now = context.now();
    if (latest?.nextUpdate && latest.nextUpdate.getTime() - now.getTime() < ROOT_CRL_WARNING_MS) {
      context.warnOnce(
        `root-crl:${latest.n}`,
        `the root CRL expires at ${latest.nextUpdate.toISOString()} and the root key is offline: bring it back (sigil ca import-root) to sign a new one, or TLS peers that check CRLs will refuse every chain`,
      );
    }
  }

  /** On the root holder: its own intermediate with a new key, other replicas' by re-certifying their key. */
  async #rotateIntermediates(): Promise<void> {
    const context = this.#context;
    const { store, replicaId: ownId } = context;
    const now = context.now();
    const cas = context.cas;
    const replicaIds = [...new Set(cas.intermediates().map((ca) => ca.record.replicaId ?? ''))];
    if (!cas.rootIssuer()) {
      const own = cas.currentIntermediate(ownId, now);
      if (own && now.getTime() >= renewalDue(own.info.notBefore, own.info.notAfter)) {
        context.warnOnce(
          `rotate:${own.record.id}`,
          `intermediate ${own.record.id} expires at ${own.info.notAfter.toISOString()} and the root key is not on this replica; it is rotated by the replica holding the root key`,
        );
      }
      return;
    }
    let changed = false;
    for (const replicaId of replicaIds) {
      const newest = cas.intermediates(replicaId)[0];
      if (!newest) continue;
      const current = cas.currentIntermediate(replicaId, now);
      if (current && now.getTime() < renewalDue(current.info.notBefore, current.info.notAfter)) continue;
      try {
        const fields = { trustDomain: context.trustDomain, ttlMs: context.intermediateTtlMs, now };
        if (replicaId === ownId) {
          await createOwnIntermediate(store, cas, { ...fields, storeKey: context.storeKey });
        } else {
          await recertifyIntermediate(store, cas, replicaId, fields);
        }
        for (const old of cas.intermediates(replicaId)) {
          if (old.record.retiredAt === null) await store.retireCa(old.record.id, now);
        }
        changed = true;
      } catch (error) {
        context.failed(`rotating the intermediate of replica "${replicaId}"`, error);
      }
    }
    if (changed) await context.reload();
  }

  async #renewServerIfDue(): Promise<void> {
    const context = this.#context;
    const leaf = this.#serverLeaf;
    const now = context.now();
    const signer = context.cas.currentIntermediate(context.replicaId, now);
    const due =
      !leaf ||
      now.getTime() >= renewalDue(leaf.notBefore, leaf.notAfter) ||
      context.revocations.isRevoked(leaf.serial) ||
      (signer !== undefined && signer.record.id !== leaf.issuerId);
    if (due) this.#server.set(await this.#newServerMaterial());
  }

  async #newServerMaterial() {
    const { material, leaf } = await issueServerMaterial(this.#context);
    this.#serverLeaf = leaf;
    return material;
  }
}

function caIds(context: AuthorityContext): string[] {
  return context.cas.all().map((ca) => ca.record.id);
}
