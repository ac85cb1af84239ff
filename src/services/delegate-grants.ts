// Delegates on the wire: every call from a peer whose SPIFFE ID lies in a
// delegation subtree (spiffe://<td>/d/…) is held until the authority has
// admitted its chain (Authority.admitDelegate), once per connection and
// presented chain. A refused chain fails the call with PERMISSION_DENIED and
// never reaches a handler. An admitted one adds its links to the connection's
// revocation identifiers, so revoking any ancestor closes the connection on
// every replica (transport/revocation-enforcement.ts).
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Authority } from '../authority/authority.ts';
import type { DelegateGrant } from '../authority/delegations.ts';
import { isDelegationId } from '../authority/delegations.ts';
import { SigilError } from '../errors.ts';
import { readPresentedChain } from '../transport/chain-metadata.ts';
import {
  addRevocationIds,
  connectionForCall,
  type PeerCall,
  type TrackedConnection,
} from '../transport/connection-registry.ts';
import { peerIdentity } from '../transport/peer-identity.ts';
import { statusForError } from './status-codes.ts';

/** Different presented chains remembered per connection; a client sends one. */
const MAX_CHAINS_PER_CONNECTION = 4;

export class DelegateGrants {
  readonly #authority: Authority;
  readonly #byConnection = new WeakMap<TrackedConnection, Map<string, Promise<DelegateGrant>>>();

  constructor(authority: Authority) {
    this.#authority = authority;
  }

  /** Whether calls from this peer go through admission. */
  isDelegate(call: PeerCall): boolean {
    let spiffeId: string | null;
    try {
      spiffeId = peerIdentity(call).spiffeId;
    } catch {
      return false; // anonymous (public methods): nothing to admit
    }
    return spiffeId !== null && isDelegationId(spiffeId, this.#authority.trustDomain);
  }

  /** The grant for a delegate's call (cached per connection and presented chain). */
  grantFor(call: PeerCall, metadata: grpc.Metadata): Promise<DelegateGrant> {
    let presented: Buffer[];
    try {
      presented = readPresentedChain(metadata);
    } catch (error) {
      return Promise.reject(error);
    }
    const connection = connectionForCall(call);
    const leaf = peerIdentity(call).chain[0];
    const key = createHash('sha256')
      .update(Buffer.concat(presented.flatMap((der) => [lengthPrefix(der.length), der])))
      .digest('hex');
    if (!connection) return this.#authority.admitDelegate(leaf, presented);
    let chains = this.#byConnection.get(connection);
    if (!chains) {
      chains = new Map();
      this.#byConnection.set(connection, chains);
    }
    const known = chains.get(key);
    if (known) return known;
    if (chains.size >= MAX_CHAINS_PER_CONNECTION) {
      return Promise.reject(
        new SigilError('permission_denied', 'too many different chains presented on one connection'),
      );
    }
    const admitted = this.#authority.admitDelegate(leaf, presented).then(
      (grant) => {
        addRevocationIds(connection, grant.revocationIds);
        return grant;
      },
      (error: unknown) => {
        // Not remembered: a store hiccup must not refuse the connection for good.
        chains.delete(key);
        throw error;
      },
    );
    chains.set(key, admitted);
    return admitted;
  }

  /** Holds every delegate call until its chain is admitted; refuses it otherwise. */
  interceptor(): grpc.ServerInterceptor {
    return (_method, call) =>
      new grpc.ServerInterceptingCall(call, {
        start: (next) => {
          next({
            onReceiveMetadata: (metadata, nextMetadata) => {
              const peerCall = call as unknown as PeerCall;
              if (!this.isDelegate(peerCall)) {
                nextMetadata(metadata);
                return;
              }
              this.grantFor(peerCall, metadata).then(
                () => nextMetadata(metadata),
                (error: unknown) => {
                  const status = statusForError(error);
                  call.sendStatus({
                    code:
                      status.code === grpc.status.INTERNAL
                        ? grpc.status.INTERNAL
                        : grpc.status.PERMISSION_DENIED,
                    details: status.details,
                  });
                },
              );
            },
          });
        },
      });
  }
}

function lengthPrefix(length: number): Buffer {
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(length);
  return prefix;
}

/**
 * The admitted grant of a delegate's call. Fails closed when the server runs
 * without DelegateGrants or the caller is not a delegate.
 */
export async function requireGrant(
  deps: { readonly delegateGrants?: DelegateGrants },
  call: PeerCall & { readonly metadata: grpc.Metadata },
): Promise<DelegateGrant> {
  if (!deps.delegateGrants) throw new SigilError('permission_denied', 'this server does not admit delegates');
  return deps.delegateGrants.grantFor(call, call.metadata);
}
