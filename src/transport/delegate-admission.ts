// Who issued the peer's certificate decides what kind of peer it is, never the
// names in it. A leaf signed directly by one of the deployment's own CAs (its
// roots and intermediates) is a deployment identity: admin, node, replica,
// server, workload — whatever its SPIFFE ID says. Anything else that OpenSSL
// accepted lies beneath a delegation, whose holder can sign any name at all;
// it is a delegate's identity and is admitted only through the delegation
// checks (pki/delegation-chain.ts) on the chain it presents in
// `sigil-chain-bin`, whatever SPIFFE ID it carries. A chain that cannot be
// seen whole is refused. So is a CA certificate presented as a client.
//
// Admission runs once per connection (and presented chain), before any call
// of that connection reaches the application; calls wait for it. The
// admitted chain's links are added to the connection's revocation
// identifiers, so revoking any ancestor ends the connection.
import { createHash, type X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SigilError } from '../errors.ts';
import { certificateNames } from '../pki/certificate-names.ts';
import { linkPresentedChain } from '../pki/chain-links.ts';
import { checkDelegationChain } from '../pki/delegation-chain.ts';
import { DELEGATION_LABEL, parseDelegatedId, type Subtree } from '../pki/delegation-names.ts';
import { findPolicyExtension, type Policy, type PolicyOid } from '../pki/policy-extension.ts';
import type { RevocationSource } from '../pki/revocation-source.ts';
import { readPresentedChain } from '../protocol/chain-metadata.ts';
import {
  addRevocationIds,
  connectionForCall,
  type PeerCall,
  type TrackedConnection,
} from './connection-registry.ts';

/** What an admitted delegate holds: the part every server can use. */
export interface AdmittedDelegate {
  /** The leaf's SPIFFE ID (spiffe://carol.alice.d.<td>[/path]). */
  readonly spiffeId: string;
  /** The subtree it acts for, topmost delegation first. */
  readonly subtree: Subtree;
  /** The intersection of the policies along its chain. */
  readonly effective: Policy;
  /** What revokes it: "fp:<sha-256>" of every link, and serials of links a deployment CA signed. */
  readonly revocationIds: readonly string[];
}

/** Decides on a delegate's leaf and the CA certificates it presented (leaf's issuer first). */
export type DelegateAdmitter = (leafDer: Buffer, presented: readonly Buffer[]) => Promise<AdmittedDelegate>;

export interface DelegationSettings {
  /** The deployment's trust domain: delegated identities live beneath <name>.d.<td>. */
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
}

/**
 * Whether a connection's calls must wait for admission: its leaf lies
 * beneath a delegation, or (issued directly by the deployment) it is a
 * command certificate, which carries a policy or a delegated name. A
 * workload identity (workload-peers.ts) carries a delegated name without a
 * policy: a deployment identity, admitted by nothing but the rules.
 */
export function needsAdmission(connection: TrackedConnection, settings: DelegationSettings | null): boolean {
  if (connection.issuedBy !== 'deployment') return true;
  if (settings === null || connection.workload) return false;
  let decided = commandCertificates.get(connection);
  if (decided === undefined) {
    decided = isCommandCertificate(connection.chain[0], settings);
    commandCertificates.set(connection, decided);
  }
  return decided;
}

const commandCertificates = new WeakMap<TrackedConnection, boolean>();

/**
 * A deployment-issued leaf that carries the policy extension or a delegated
 * name. Parsing a certificate with the ASN.1 library costs milliseconds, so
 * the DER is first searched for the OID's bytes and the ".d.<td>" host
 * suffix: a leaf holding neither cannot be one (each would appear verbatim),
 * and only the rare leaf holding one is parsed to be sure.
 */
function isCommandCertificate(leaf: Buffer, settings: DelegationSettings): boolean {
  const suffix = Buffer.from(`.${DELEGATION_LABEL}.${settings.trustDomain}`, 'latin1');
  const mayHavePolicy = leaf.includes(settings.policyOid.der);
  if (!mayHavePolicy && !leaf.includes(suffix)) return false;
  if (mayHavePolicy && findPolicyExtension(leaf, settings.policyOid) !== null) return true;
  return certificateNames(leaf).uris.some((uri) => parseDelegatedId(uri, settings.trustDomain) !== null);
}

export interface ChainAdmitterOptions extends DelegationSettings {
  /** The deployment's CAs (roots and intermediates): where a delegation chain must lead. */
  readonly deploymentAuthorities: () => readonly X509Certificate[];
  /** Revoked links are refused. */
  readonly revocation?: RevocationSource;
  readonly now?: () => Date;
}

/**
 * The admitter of any sigil-protected server: the presented chain linked to
 * the deployment's CAs by signature (not a path validation: OpenSSL did that
 * during the handshake), checked link by link, no link revoked. The control
 * plane adds its own records and rates on top (authority/delegations.ts).
 */
export function chainDelegateAdmitter(options: ChainAdmitterOptions): DelegateAdmitter {
  return async (leafDer, presented) => {
    const now = (options.now ?? (() => new Date()))();
    const linked = linkPresentedChain(leafDer, presented, options.deploymentAuthorities(), now);
    const anchorIsRoot = linked.anchor.checkIssued(linked.anchor);
    const chain = [...linked.links.map((link) => link.der), ...(anchorIsRoot ? [] : [linked.anchor.raw])];
    const result = checkDelegationChain(chain, options);
    const revocationIds = linked.links.flatMap((link) =>
      link.issuedByServer ? [`fp:${link.fingerprint}`, link.serial] : [`fp:${link.fingerprint}`],
    );
    if (options.revocation && revocationIds.some((id) => options.revocation?.isRevoked(id))) {
      throw new SigilError('permission_denied', 'a certificate in the chain has been revoked');
    }
    return { spiffeId: result.spiffeId, subtree: result.subtree, effective: result.effective, revocationIds };
  };
}

// One admission per connection: its leaf is fixed by the handshake, and so is
// what it holds; a connection that later presents a different chain is refused.
interface Admission {
  readonly chain: string;
  readonly pending: Promise<AdmittedDelegate>;
  admitted: AdmittedDelegate | null;
}

const admissions = new WeakMap<TrackedConnection, Admission>();

/** The admitted delegate of a connection; null when it is a deployment identity (or not admitted yet). */
export function admittedDelegateOf(connection: TrackedConnection): AdmittedDelegate | null {
  return admissions.get(connection)?.admitted ?? null;
}

function chainKey(presented: readonly Buffer[]): string {
  const hash = createHash('sha256');
  for (const der of presented) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(der.length);
    hash.update(length).update(der);
  }
  return hash.digest('hex');
}

/** The admission of a connection's call (once per connection; the same chain every time). */
export function admit(
  connection: TrackedConnection,
  metadata: grpc.Metadata,
  admitter: DelegateAdmitter,
): Promise<AdmittedDelegate> {
  let presented: Buffer[];
  try {
    presented = readPresentedChain(metadata);
  } catch (error) {
    return Promise.reject(error);
  }
  const chain = chainKey(presented);
  const known = admissions.get(connection);
  if (known) {
    if (known.chain === chain) return known.pending;
    return Promise.reject(
      new SigilError(
        'permission_denied',
        'this connection already presented a different certificate chain; open a new connection',
      ),
    );
  }
  const pending = admitter(connection.chain[0], presented).then(
    (admitted) => {
      addRevocationIds(connection, admitted.revocationIds);
      state.admitted = admitted;
      return admitted;
    },
    (error: unknown) => {
      // Not remembered: a store hiccup must not refuse the connection for good.
      if (admissions.get(connection) === state) admissions.delete(connection);
      throw error;
    },
  );
  const state: Admission = { chain, pending, admitted: null };
  admissions.set(connection, state);
  return pending;
}

function statusOf(error: unknown): { code: grpc.status; details: string } {
  if (error instanceof SigilError) {
    if (error.code === 'internal') {
      return { code: grpc.status.UNAVAILABLE, details: 'delegate admission is unavailable; try again' };
    }
    return { code: grpc.status.PERMISSION_DENIED, details: error.message };
  }
  return { code: grpc.status.UNAVAILABLE, details: 'delegate admission failed; try again' };
}

/**
 * Holds every call of a connection that needs admission until its chain is
 * admitted, and refuses it (PERMISSION_DENIED naming why) otherwise. Calls
 * of deployment identities and anonymous calls pass at once.
 */
export function delegateAdmissionInterceptor(
  admitter: DelegateAdmitter | null,
  settings: () => DelegationSettings | null,
): grpc.ServerInterceptor {
  return (_method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const connection = connectionForCall(call as unknown as PeerCall);
            if (!connection || !needsAdmission(connection, settings())) {
              nextMetadata(metadata);
              return;
            }
            if (admitter === null) {
              call.sendStatus({
                code: grpc.status.PERMISSION_DENIED,
                details:
                  'the client certificate is not issued by this deployment and this server admits no delegates',
              });
              return;
            }
            admit(connection, metadata, admitter).then(
              () => nextMetadata(metadata),
              (error: unknown) => call.sendStatus(statusOf(error)),
            );
          },
        });
      },
    });
}
