// Workload identities on the node: each running workload's short-lived
// certificate (WorkloadPlacement.IssueWorkloadIdentity: the control plane
// signs it for a reservation this node holds, within the owner's issuance
// rate), with a key made here that never leaves the node except into the
// workload's own metadata document. A workload's first metadata read waits
// for its first certificate (bounded); afterwards a sweep renews each one
// at two thirds of its life, and a workload that is gone is forgotten. Keys
// and certificates are never logged.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { unary } from '../client/rpc.ts';
import { firstLineOf } from '../errors.ts';
import type { IdentityMetadata } from '../guest/metadata-document.ts';
import type { Logger } from '../logging.ts';
import { createCsr } from '../pki/csr.ts';
import { encodePem } from '../pki/pem.ts';
import type { DesiredWorkload } from '../workloads/desired-state.ts';
import type { ControlPlaneLink } from './control-plane-link.ts';

const SWEEP_MS = 15_000;
const ISSUE_TIMEOUT_MS = 5000;
/** After a refusal, the next attempt for that workload waits this long. */
const RETRY_AFTER_MS = 60_000;
const RENEW_AT = 2 / 3;

export interface WorkloadIdentitiesOptions {
  readonly link: ControlPlaneLink;
  /** The workloads this node runs for someone (admin-owned ones have no subtree and get none). */
  readonly records: () => Iterable<DesiredWorkload>;
  readonly isRunning: (key: string) => boolean;
  /** PEM of the deployment's CA certificates (the node's trust bundle). */
  readonly trustBundle: () => string;
  readonly logger: Logger;
  /** Requested lifetime; 0 lets the control plane choose (1 hour). */
  readonly ttlSeconds?: number;
  readonly now?: () => number;
}

interface Held {
  readonly metadata: IdentityMetadata;
  readonly issuedAt: number;
  readonly notAfter: number;
}

export class WorkloadIdentities {
  readonly #options: WorkloadIdentitiesOptions;
  readonly #held = new Map<string, Held>();
  readonly #pending = new Map<string, Promise<IdentityMetadata | undefined>>();
  readonly #refusedUntil = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: WorkloadIdentitiesOptions) {
    this.#options = options;
  }

  #now(): number {
    return (this.#options.now ?? Date.now)();
  }

  start(): void {
    this.#timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#held.clear();
  }

  /** The workload's current identity, issuing the first one (or a due one) on the way. */
  async identityOf(key: string): Promise<IdentityMetadata | undefined> {
    const held = this.#held.get(key);
    if (held && !this.#due(held)) return held.metadata;
    const fresh = await this.#issue(key);
    return fresh ?? (held && held.notAfter > this.#now() ? held.metadata : undefined);
  }

  /** Renews what is due and forgets workloads that no longer run. */
  sweep(): void {
    const running = new Set<string>();
    for (const record of this.#options.records()) {
      if (!this.#options.isRunning(record.key)) continue;
      running.add(record.key);
      const held = this.#held.get(record.key);
      if (held && this.#due(held)) void this.#issue(record.key);
    }
    for (const key of this.#held.keys()) if (!running.has(key)) this.#held.delete(key);
  }

  #due(held: Held): boolean {
    return this.#now() >= held.issuedAt + (held.notAfter - held.issuedAt) * RENEW_AT;
  }

  #issue(key: string): Promise<IdentityMetadata | undefined> {
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = this.#request(key).finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  async #request(key: string): Promise<IdentityMetadata | undefined> {
    const record = [...this.#options.records()].find((candidate) => candidate.key === key);
    if (record === undefined || record.ownerKey === '') return undefined;
    if ((this.#refusedUntil.get(key) ?? 0) > this.#now()) return undefined;
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    try {
      const issued = await this.#options.link.placement((client, target) =>
        unary(
          client,
          client.issueWorkloadIdentity,
          {
            subtree: record.ownerKey,
            name: record.spec.name,
            key: { $case: 'csr', value: createCsr(privateKey, {}) },
            ttlSeconds: this.#options.ttlSeconds ?? 0,
          },
          { target, timeoutMs: ISSUE_TIMEOUT_MS },
        ),
      );
      const certificate = issued.certificate;
      if (!certificate) return undefined;
      this.#refusedUntil.delete(key);
      const notAfter = Number(certificate.notAfterUnixMs);
      const metadata = metadataOf(privateKey, certificate, this.#options.trustBundle());
      if (!this.#options.isRunning(key)) return undefined; // destroyed meanwhile
      this.#held.set(key, { metadata, issuedAt: this.#now(), notAfter });
      return metadata;
    } catch (error) {
      this.#refusedUntil.set(key, this.#now() + RETRY_AFTER_MS);
      this.#options.logger.warn({ workload: key, err: firstLineOf(error) }, 'no workload identity');
      return undefined;
    }
  }
}

function metadataOf(
  privateKey: KeyObject,
  certificate: {
    certificate: Uint8Array;
    chain: Uint8Array[];
    spiffeId: string;
    notAfterUnixMs: number | bigint;
  },
  trustBundle: string,
): IdentityMetadata {
  const pems = [certificate.certificate, ...certificate.chain].map((der) =>
    encodePem('CERTIFICATE', Buffer.from(der)),
  );
  return {
    SpiffeID: certificate.spiffeId,
    Cert: pems.join(''),
    Key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    CAChain: trustBundle,
    NotAfter: new Date(Number(certificate.notAfterUnixMs)).toISOString(),
  };
}
