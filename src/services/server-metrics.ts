// Control-plane metrics, next to the transport's on the same registry:
// certificates issued (by how and their profile) and revoked (by how),
// tokens created and consumed, nodes registered, and the number of revocation
// watchers; issuance calls (Sign, Renew) admitted and refused by admission
// control (admission.ts). The counters follow the authority's audit events (record()), one
// per certificate, so every way a certificate is made or ended counts:
// Sign, Renew, enrolment, delegations and command certificates, node
// revocation, superseded certificates. Labels come from closed sets; no
// identity, serial or token is ever a label.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { AuditEvent, IssuanceKind, RevocationKind } from '../authority/audit.ts';

export type { IssuanceKind } from '../authority/audit.ts';

const PROFILES = new Set([
  'server',
  'client',
  'server+client',
  'node',
  'admin',
  'bootstrap',
  'intermediate',
  'delegation',
  'command',
  'leaf',
]);
const ISSUANCE_KINDS = new Set<IssuanceKind>([
  'sign',
  'renew',
  'register',
  'approve',
  'rejoin',
  'replica',
  'server',
  'bootstrap',
  'delegate',
]);
const REVOCATION_KINDS = new Set<RevocationKind>(['certificate', 'node', 'delegation', 'superseded', 'key']);

/** The calls admission control guards (admission.ts). */
export type AdmittedMethod = 'sign' | 'renew';
/** admitted: ran (at once or after waiting its turn); refused: RESOURCE_EXHAUSTED with retry-after, nothing done. */
export type AdmissionOutcome = 'admitted' | 'refused';

export class ServerMetrics {
  readonly #issued: Counter<'kind' | 'profile'>;
  readonly #revoked: Counter<'by'>;
  readonly #tokensCreated: Counter;
  readonly #tokensConsumed: Counter;
  readonly #nodesRegistered: Counter;
  readonly #watchers: Gauge;
  readonly #admission: Counter<'method' | 'outcome'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.#issued = new Counter({
      name: 'sigil_certificates_issued_total',
      help: 'Certificates issued by this replica (delegation and command certificates included), by how they were asked for and their profile.',
      labelNames: ['kind', 'profile'],
      registers,
    });
    this.#revoked = new Counter({
      name: 'sigil_certificates_revoked_total',
      help:
        'Certificates revoked through this replica, by how: Revoke (certificate), RevokeNode (node), a delegation ' +
        'subtree (delegation), replaced under the issuance limits (superseded), sharing a compromised key (key).',
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
    this.#admission = new Counter({
      name: 'sigil_issuance_admission_total',
      help:
        'Sign and Renew calls by admission control outcome: admitted (ran at once or after waiting its turn), ' +
        'refused (RESOURCE_EXHAUSTED with a retry-after-ms hint, nothing done).',
      labelNames: ['method', 'outcome'],
      registers,
    });
    for (const method of ['sign', 'renew'] as const) {
      for (const outcome of ['admitted', 'refused'] as const) this.#admission.inc({ method, outcome }, 0);
    }
    for (const kind of ['sign', 'renew', 'register', 'approve', 'rejoin'] as const) {
      this.#issued.inc({ kind, profile: kind === 'sign' ? 'client' : 'node' }, 0);
    }
    this.#issued.inc({ kind: 'delegate', profile: 'delegation' }, 0);
    this.#issued.inc({ kind: 'delegate', profile: 'command' }, 0);
    for (const by of REVOCATION_KINDS) this.#revoked.inc({ by }, 0);
  }

  /** Counts what an audit event of the authority says happened. */
  record(event: AuditEvent): void {
    switch (event.action) {
      case 'certificate.issued':
      case 'delegation.created': {
        const kind = event.issuance && ISSUANCE_KINDS.has(event.issuance) ? event.issuance : 'other';
        const profile = event.profile && PROFILES.has(event.profile) ? event.profile : 'other';
        this.#issued.inc({ kind, profile });
        break;
      }
      case 'certificate.revoked':
      case 'delegation.revoked': {
        const by = event.revocation && REVOCATION_KINDS.has(event.revocation) ? event.revocation : 'other';
        this.#revoked.inc({ by });
        break;
      }
      case 'token.created':
        this.#tokensCreated.inc();
        break;
      case 'token.spent':
        this.#tokensConsumed.inc();
        break;
      case 'node.registered':
        this.#nodesRegistered.inc();
        break;
      default:
        break;
    }
  }

  /** Counts one Sign or Renew call let in or refused by admission control. */
  admission(method: AdmittedMethod, outcome: AdmissionOutcome): void {
    this.#admission.inc({ method, outcome });
  }

  watcherOpened(): void {
    this.#watchers.inc();
  }

  watcherClosed(): void {
    this.#watchers.dec();
  }
}
