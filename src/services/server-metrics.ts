// Control-plane metrics, next to the transport's on the same registry:
// certificates issued (by profile and how), revocations, tokens created and
// consumed, nodes registered, re-joins, and the number of revocation
// watchers. Labels come from closed sets; no identity, serial or token is
// ever a label.
import { Counter, Gauge, type Registry } from 'prom-client';

/** How a certificate came to be issued. A closed set: these are the only label values. */
export type IssuanceKind = 'sign' | 'renew' | 'register' | 'approve' | 'rejoin' | 'replica';

const PROFILES = new Set(['server', 'client', 'server+client', 'node', 'admin', 'bootstrap', 'intermediate']);

export class ServerMetrics {
  readonly #issued: Counter<'kind' | 'profile'>;
  readonly #revoked: Counter<'by'>;
  readonly #tokensCreated: Counter;
  readonly #tokensConsumed: Counter;
  readonly #nodesRegistered: Counter;
  readonly #watchers: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.#issued = new Counter({
      name: 'sigil_certificates_issued_total',
      help: 'Certificates issued by this replica, by how they were asked for and their profile.',
      labelNames: ['kind', 'profile'],
      registers,
    });
    this.#revoked = new Counter({
      name: 'sigil_certificates_revoked_total',
      help: 'Certificates revoked through this replica (Revoke or RevokeNode).',
      labelNames: ['by'],
      registers,
    });
    this.#tokensCreated = new Counter({
      name: 'sigil_tokens_created_total',
      help: 'Join tokens created through this replica.',
      registers,
    });
    this.#tokensConsumed = new Counter({
      name: 'sigil_tokens_consumed_total',
      help: 'Join token uses consumed through this replica (node registrations and replica joins).',
      registers,
    });
    this.#nodesRegistered = new Counter({
      name: 'sigil_nodes_registered_total',
      help: 'Nodes registered through this replica.',
      registers,
    });
    this.#watchers = new Gauge({
      name: 'sigil_revocation_watchers',
      help: 'WatchRevocations streams open on this replica.',
      registers,
    });
    for (const kind of ['sign', 'renew', 'register', 'approve', 'rejoin'] as const) {
      this.#issued.inc({ kind, profile: kind === 'sign' ? 'client' : 'node' }, 0);
    }
    this.#revoked.inc({ by: 'certificate' }, 0);
    this.#revoked.inc({ by: 'node' }, 0);
  }

  certificateIssued(kind: IssuanceKind, profile: string): void {
    this.#issued.inc({ kind, profile: PROFILES.has(profile) ? profile : 'other' });
  }

  certificateRevoked(by: 'certificate' | 'node'): void {
    this.#revoked.inc({ by });
  }

  tokenCreated(): void {
    this.#tokensCreated.inc();
  }

  tokenConsumed(): void {
    this.#tokensConsumed.inc();
  }

  nodeRegistered(): void {
    this.#nodesRegistered.inc();
  }

  watcherOpened(): void {
    this.#watchers.inc();
  }

  watcherClosed(): void {
    this.#watchers.dec();
  }
}
