// The certificate authority's decisions, behind one class: who may ask for
// what, what gets issued, which state transitions are allowed, and what the
// store records. It takes plain inputs (a verified Caller, Buffers, strings),
// returns plain outputs and throws SigilErrors; gRPC, TLS sockets and files
// are other layers' business (services → authority → pki + store).
//
// Authorization, enforced here rather than trusted to callers (access.ts):
//   admin   everything
//   node    Renew itself; Revoke certificates that carry its own SPIFFE ID
//   other   the same "holder" rights over its own certificate
//   none    Register, Rejoin, JoinReplica and GetTrustBundle need no certificate
//           (the token or the enrolled key is the credential)
// A caller whose own certificate is revoked is refused everything.
//
// Every change is committed to the store before a method resolves, so an
// acknowledged certificate, node or token survives `kill -9`.
//
// This file is the facade: each concern lives in its own file and takes the
// shared AuthorityContext (context.ts): certificates.ts, renewal.ts,
// tokens.ts, enrolment.ts, replicas.ts, root-key.ts, delegation-requests.ts
// (over delegations.ts), status.ts, and maintenance.ts for the background.
import type { X509Certificate } from 'node:crypto';
import type { MaterialSource } from '../pki/material.ts';
import { encodePem } from '../pki/pem.ts';
import type { PolicyOid } from '../pki/policy-extension.ts';
import type { RevocationSource } from '../pki/revocation-source.ts';
import type { Possession } from '../protocol/challenges.ts';
import type { CertificateRecord, NodeState, Page } from '../store/store.ts';
import { SETTING_BOOTSTRAP_DELIVERED, type StartupMode, startUp } from './bootstrap.ts';
import { type BootstrapOutput, issueBootstrapAdmin } from './bootstrap-admin.ts';
import * as certificates from './certificates.ts';
import {
  type AuthorityContext,
  type AuthorityOptions,
  checkAuthorityOptions,
  createAuthorityContext,
} from './context.ts';
import * as delegationRequests from './delegation-requests.ts';
import type {
  CreatedDelegation,
  DelegateGrant,
  DelegationRequest,
  DelegationStatusView,
  DelegationTreeNode,
} from './delegations.ts';
import * as enrolment from './enrolment.ts';
import type { Caller } from './identities.ts';
import type { IssuedCertificateView } from './issuance.ts';
import { INTERMEDIATE_TTL_MS } from './lifetimes.ts';
import { Maintenance } from './maintenance.ts';
import * as renewal from './renewal.ts';
import * as replicas from './replicas.ts';
import type { RevocationUpdate } from './revocations.ts';
import * as rootKey from './root-key.ts';
import * as deploymentStatus from './status.ts';
import * as tokens from './tokens.ts';
import type { ReservationRequest } from './usage.ts';
import type {
  AuthorityStatus,
  CertificateSummary,
  NodeView,
  TokenSummary,
  TrustBundleView,
} from './views.ts';
import * as workloadIdentity from './workload-identity.ts';
import * as workloadPlacement from './workload-placement.ts';

export type { BootstrapOutput } from './bootstrap-admin.ts';
export type { LeafRequest, ListCertificatesFilter } from './certificates.ts';
export type { AuthorityOptions } from './context.ts';
export type { RegisterRequest, Registration } from './enrolment.ts';
export type { JoinReplicaRequest, JoinReplicaResult } from './replicas.ts';
export type { ExportedRoot } from './root-key.ts';
export type { CreatedToken, CreateTokenRequest } from './tokens.ts';
export type { IssuedWorkloadIdentity, WorkloadIdentityRequest } from './workload-identity.ts';
export type {
  HeldWorkload,
  PlacedWorkload,
  WorkloadNodeView,
  WorkloadReservationRequest,
} from './workload-placement.ts';

export interface OpenedAuthority {
  readonly authority: Authority;
  readonly mode: StartupMode;
  /**
   * Present when this replica bootstrapped the store and the admin identity
   * has not yet been confirmed as written (Authority.confirmBootstrap); a
   * crash before that hands out a new admin identity on the next start.
   */
  readonly bootstrapped?: BootstrapOutput;
}

export class Authority {
  readonly #context: AuthorityContext;
  readonly #maintenance: Maintenance;

  private constructor(context: AuthorityContext) {
    this.#context = context;
    this.#maintenance = new Maintenance(context);
  }

  /**
   * Starts the authority on `store`: bootstraps an empty store, serves an
   * existing one, or adopts a joined intermediate (see bootstrap.ts). Then
   * loads revocations, subscribes to store events, issues this replica's
   * server certificate and starts the maintenance timer.
   */
  static async open(options: AuthorityOptions): Promise<OpenedAuthority> {
    checkAuthorityOptions(options);
    const started = await startUp({
      store: options.store,
      replicaId: options.replicaId,
      storeKey: options.storeKey,
      trustDomain: options.trustDomain,
      policyOid: options.policyOid,
      now: (options.now ?? (() => new Date()))(),
      intermediateTtlMs: options.intermediateTtlMs ?? INTERMEDIATE_TTL_MS,
      join: options.join,
    });
    const authority = new Authority(createAuthorityContext(options, started));
    try {
      await authority.#maintenance.start();
      const bootstrapped = started.adminPending ? await issueBootstrapAdmin(authority.#context) : undefined;
      if (options.timers !== false) authority.#maintenance.schedule();
      return { authority, mode: started.mode, ...(bootstrapped ? { bootstrapped } : {}) };
    } catch (error) {
      await authority.close();
      throw error;
    }
  }

  get trustDomain(): string {
    return this.#context.trustDomain;
  }

  get replicaId(): string {
    return this.#context.replicaId;
  }

  /** The deployment's policy extension OID (fixed at bootstrap). */
  get policyOid(): PolicyOid {
    return this.#context.policyOid;
  }

  get rootFingerprint(): string {
    return this.#context.cas.requireRoot().info.fingerprint;
  }

  /** Records that the bootstrap's admin identity was written out; later starts issue no new one. */
  async confirmBootstrap(): Promise<void> {
    await this.#context.store.initSetting(SETTING_BOOTSTRAP_DELIVERED, this.#context.now().toISOString());
  }

  /** Stops the timer and the store subscription. The store stays open (its owner closes it). */
  async close(): Promise<void> {
    await this.#maintenance.close();
  }

  // ------------------------------------------------------------ certificates

  /** Issues a leaf for a key proven by possession or CSR. Admin only. */
  sign(caller: Caller, request: certificates.LeafRequest): Promise<IssuedCertificateView> {
    return certificates.sign(this.#context, caller, request);
  }

  /** A new certificate for the caller's own identity (renewal.ts). */
  renew(caller: Caller, request: { readonly possession?: Possession } = {}): Promise<IssuedCertificateView> {
    return renewal.renew(this.#context, caller, request);
  }

  /** Renews the admin identity a server keeps in its data directory (renewal.ts; not an API). */
  renewAdminIdentity(certificateDer: Buffer): Promise<IssuedCertificateView> {
    return renewal.renewAdminIdentity(this.#context, certificateDer);
  }

  /** Revokes a certificate: an admin, or the holder of the certificate's SPIFFE ID. */
  revoke(caller: Caller, serialText: string, reasonText?: string): Promise<{ alreadyRevoked: boolean }> {
    return certificates.revoke(this.#context, caller, serialText, reasonText);
  }

  listCertificates(
    caller: Caller,
    filter: certificates.ListCertificatesFilter = {},
  ): Promise<Page<CertificateSummary>> {
    return certificates.listCertificates(this.#context, caller, filter);
  }

  /** One certificate record (admin, or its holder). */
  getCertificate(caller: Caller, serialText: string): Promise<CertificateRecord> {
    return certificates.getCertificate(this.#context, caller, serialText);
  }

  trustBundle(): TrustBundleView {
    return deploymentStatus.trustBundle(this.#context);
  }

  /** PEM of the trust bundle's roots. */
  trustBundlePem(): string {
    return this.trustBundle()
      .roots.map((der) => encodePem('CERTIFICATE', der))
      .join('');
  }

  /** Every revoked, unexpired serial, then each delta; for a delegate, only beneath it (delegation-requests.ts). */
  watchRevocations(listener: (update: RevocationUpdate) => void, grant?: DelegateGrant): () => void {
    return delegationRequests.watchRevocations(this.#context, listener, grant);
  }

  revokedSerials(): string[] {
    return this.#context.revocations.snapshot();
  }

  /** What transport enforces: fed by store events from every replica. */
  revocationSource(): RevocationSource {
    return this.#context.revocations;
  }

  // -------------------------------------------------------------- delegation

  /** The grant of a delegate connection: its verified leaf and the CA certificates it sent (sigil-chain-bin). */
  admitDelegate(leafDer: Buffer, presented: readonly Buffer[]): Promise<DelegateGrant> {
    return this.#context.delegations.admit(leafDer, presented);
  }

  /** A direct delegation or command certificate under this replica's intermediate. Admin only. */
  createDelegation(
    caller: Caller,
    request: Omit<DelegationRequest, 'publicKey'> & { readonly possession: Possession | undefined },
  ): Promise<CreatedDelegation> {
    return delegationRequests.createDelegation(this.#context, caller, request);
  }

  delegationStatus(grant: DelegateGrant): Promise<DelegationStatusView> {
    return this.#context.delegations.status(grant);
  }

  /** Every delegation recorded (issued here or seen in a presented chain), as a forest. */
  delegationTree(): Promise<DelegationTreeNode[]> {
    return this.#context.delegations.tree();
  }

  reserve(grant: DelegateGrant, request: ReservationRequest) {
    return this.#context.delegations.reserve(grant, request);
  }

  release(grant: DelegateGrant, holder: string): Promise<boolean> {
    return this.#context.delegations.release(grant, holder);
  }

  /** Revokes a certificate in a delegation subtree: a delegate's own subtree (grant), or any (admin). */
  revokeDelegated(
    caller: Caller,
    grant: DelegateGrant | null,
    request: { certificate: Buffer; chain: readonly Buffer[]; reason?: string },
  ): Promise<{ alreadyRevoked: boolean }> {
    return delegationRequests.revokeDelegated(this.#context, caller, grant, request);
  }

  /** Whether one of this deployment's CAs (current or retired) signed `certificateDer` directly. */
  issuedByDeployment(certificateDer: Buffer): boolean {
    return delegationRequests.issuedByDeployment(this.#context, certificateDer);
  }

  /** The deployment's CA certificates (roots and intermediates, current and retired), for transport. */
  deploymentAuthorities(): readonly X509Certificate[] {
    return this.#context.caCertificates();
  }

  // ------------------------------------------------------ workload placement

  /** Node only: charges the caller the node forwards for one workload (workload-placement.ts). */
  reserveWorkload(
    caller: Caller,
    request: workloadPlacement.WorkloadReservationRequest,
  ): Promise<workloadPlacement.PlacedWorkload> {
    return workloadPlacement.reserveWorkload(this.#context, caller, request);
  }

  /** Node only: a short-lived identity for a workload it holds (workload-identity.ts). */
  issueWorkloadIdentity(
    caller: Caller,
    request: workloadIdentity.WorkloadIdentityRequest,
  ): Promise<workloadIdentity.IssuedWorkloadIdentity> {
    return workloadIdentity.issueWorkloadIdentity(this.#context, caller, request);
  }

  /** Node only: releases its own reservation of `name` in `subtree`, revoking the workload's identities. */
  releaseWorkload(caller: Caller, subtree: string, name: string): Promise<boolean> {
    return workloadIdentity.releaseWorkloadAndIdentities(this.#context, caller, subtree, name);
  }

  /** Node only: the reservations it holds. */
  listWorkloadReservations(caller: Caller): Promise<workloadPlacement.HeldWorkload[]> {
    return workloadPlacement.listWorkloadReservations(this.#context, caller);
  }

  /** Node only: where it serves workloads ("host:port"; "" withdraws). */
  registerWorkloadEndpoint(caller: Caller, address: string): Promise<workloadPlacement.WorkloadNodeView> {
    return workloadPlacement.registerWorkloadEndpoint(this.#context, caller, address);
  }

  /** A node's workload endpoint by ID or name, for any authenticated caller. */
  findWorkloadNode(caller: Caller, node: string): Promise<workloadPlacement.WorkloadNodeView> {
    return workloadPlacement.findWorkloadNode(this.#context, caller, node);
  }

  // ------------------------------------------------------------------ tokens

  createToken(caller: Caller, request: tokens.CreateTokenRequest = {}): Promise<tokens.CreatedToken> {
    return tokens.createToken(this.#context, caller, request);
  }

  listTokens(caller: Caller): Promise<TokenSummary[]> {
    return tokens.listTokens(this.#context, caller);
  }

  revokeToken(caller: Caller, id: string): Promise<{ alreadyRevoked: boolean }> {
    return tokens.revokeToken(this.#context, caller, id);
  }

  // --------------------------------------------------------------- enrolment

  /** A join token plus proof of the node's key (enrolment.ts); repeating it is safe. */
  register(request: enrolment.RegisterRequest): Promise<enrolment.Registration> {
    return enrolment.register(this.#context, request);
  }

  /** A node whose certificate lapsed proves its enrolled key and gets a new one, unless revoked. */
  rejoin(request: { readonly possession?: Possession }): Promise<enrolment.Registration> {
    return enrolment.rejoin(this.#context, request);
  }

  /** NEW → UP, issuing the node's certificate (its next Register returns it). UP stays UP. */
  approveNode(caller: Caller, idText: string): Promise<NodeView> {
    return enrolment.approveNode(this.#context, caller, idText);
  }

  /** Any state → REVOKED, and every certificate of the node revoked. Repeating it is safe. */
  revokeNode(caller: Caller, idText: string, reasonText?: string): Promise<NodeView> {
    return enrolment.revokeNode(this.#context, caller, idText, reasonText);
  }

  getNode(caller: Caller, idText: string): Promise<NodeView> {
    return enrolment.getNode(this.#context, caller, idText);
  }

  listNodes(caller: Caller, filter: { readonly state?: NodeState } = {}): Promise<NodeView[]> {
    return enrolment.listNodes(this.#context, caller, filter);
  }

  // ------------------------------------------------------- replicas, root key

  /** Admits a new replica with an intermediate for the key it proved (replicas.ts). */
  joinReplica(request: replicas.JoinReplicaRequest): Promise<replicas.JoinReplicaResult> {
    return replicas.joinReplica(this.#context, request);
  }

  /** The root certificate and key as PEM; unless `keepInStore`, the key then leaves the store (root-key.ts). */
  exportRoot(
    caller: Caller,
    options: { passphrase?: string; keepInStore?: boolean } = {},
  ): Promise<rootKey.ExportedRoot> {
    return rootKey.exportRoot(this.#context, caller, options);
  }

  /** Removes the encrypted root key from the store (after exportRoot with keepInStore). */
  removeRootKey(caller: Caller): Promise<void> {
    return rootKey.removeRootKey(this.#context, caller);
  }

  /** Brings an exported root key back online on this replica. */
  importRoot(caller: Caller, options: { privateKeyPem: string; passphrase?: string }): Promise<void> {
    return rootKey.importRoot(this.#context, caller, options);
  }

  // ------------------------------------------------- status, CRLs, TLS, upkeep

  status(caller: Caller): Promise<AuthorityStatus> {
    return deploymentStatus.status(this.#context, caller);
  }

  /** Resolves once the store answers a read (the trust domain setting): what /readyz asks. */
  async checkStoreReachable(): Promise<void> {
    await this.#context.store.getSetting('trust_domain');
  }

  /** DER CRL of one CA ("root" or "replica:<id>:<n>"); see crl-cache.ts. */
  crl(issuerId: string): Promise<Buffer> {
    return this.#context.crls.crl(issuerId);
  }

  /** CA ids whose CRL this replica serves. */
  crlIssuers(): string[] {
    return this.#context.crls.servable();
  }

  /** This replica's gRPC server identity; renewed in place at 2/3 of its life. */
  serverMaterial(): MaterialSource {
    return this.#maintenance.serverMaterial();
  }

  /** One round of background work, also run by the timer (maintenance.ts). */
  maintain(): Promise<void> {
    return this.#maintenance.run();
  }
}
