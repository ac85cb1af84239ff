// How much of a server one peer may hold: concurrent calls (HTTP/2 streams) on
// one connection, concurrent calls of one identity across all its
// connections, and open connections of one identity. Over a limit is
// refused, never queued: a call with RESOURCE_EXHAUSTED naming the limit, a
// connection at admission (the TLS alert access_denied, and the refusal
// reported like any refused handshake, reason TOO_MANY_CONNECTIONS).
//
// What "one identity" is follows the trust model (delegate-admission.ts):
//   - a deployment identity (its leaf signed by one of the deployment's CAs)
//     is its SPIFFE ID: a node's current and next certificates share one
//     budget. A leaf without a (plain) SPIFFE ID is its own identity, by
//     fingerprint: only the deployment can mint those.
//   - a delegated leaf is the delegation the deployment issued at the top of
//     its subtree ("alice" for spiffe://x.carol.alice.d.<td>/w). The holder of
//     a delegation mints leaves and sub-delegations at will, so anything finer
//     than the subtree would not bound it. The subtree is read from the
//     leaf's SPIFFE ID, which OpenSSL has already checked against every name
//     constraint of the chain (each delegation permits only its own host);
//     a delegated leaf without a plain SPIFFE ID shares one budget with every
//     other such leaf.
//   - a connection without a client certificate (public methods) is its
//     remote IP address.
//
// Memory is bounded through these counts: each call holds at most its HTTP/2
// receive window and one message of grpc.max_receive_message_length inbound,
// and what the handler buffers outbound (sigil's long-lived stream,
// WatchRevocations, ends a client that stops reading); each connection holds a
// TLS session and an HTTP/2 session.
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { invalid } from '../errors.ts';
import { parseDelegatedId } from '../pki/delegation-names.ts';
import { parseSpiffeId } from '../pki/names.ts';
import {
  type ConnectionAddress,
  connectionForCall,
  type PeerCall,
  type TrackedConnection,
} from './connection-registry.ts';

export interface PeerLimitOptions {
  /** Calls in progress on one connection. Default 100 (RFC 9113's recommended minimum for SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly maxStreamsPerConnection?: number;
  /** Calls in progress of one identity, across all its connections. Default 400. */
  readonly maxStreamsPerIdentity?: number;
  /** Open connections of one identity. Default 100. */
  readonly maxConnectionsPerIdentity?: number;
}

export const DEFAULT_PEER_LIMITS: Required<PeerLimitOptions> = Object.freeze({
  maxStreamsPerConnection: 100,
  maxStreamsPerIdentity: 400,
  maxConnectionsPerIdentity: 100,
});

/**
 * The HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS a server announces for a
 * per-connection call limit: above the limit, so that a client that
 * respects it is told RESOURCE_EXHAUSTED instead of queueing its calls
 * locally, and bounded, so that a client that ignores the refusals is
 * refused by HTTP/2 itself (RST_STREAM) before any JavaScript runs.
 */
export function http2StreamLimit(maxStreamsPerConnection: number): number {
  return maxStreamsPerConnection * 2;
}

function checkLimit(value: number | undefined, name: keyof PeerLimitOptions): number {
  const limit = value ?? DEFAULT_PEER_LIMITS[name];
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw invalid(`peerLimits.${name} must be a positive whole number (got ${value})`);
  }
  return limit;
}

/** The key and the text of a peer identity. */
export interface PeerKey {
  /** What the counts are kept under. */
  readonly key: string;
  /** For messages and logs: a SPIFFE ID, a delegation's host, an address. */
  readonly name: string;
}

/** A URI SAN from Node's rendering of subjectAltName; quoted (escaped) values are left out. */
function plainSpiffeIds(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  const ids: string[] = [];
  for (const match of subjectAltName.matchAll(/(?:^|, )URI:([^",\s]+)(?=,|$)/g)) {
    if (match[1].startsWith('spiffe://')) ids.push(match[1]);
  }
  return ids;
}

/**
 * The identity of a connection for these limits (see the top of this file).
 * `trustDomain`: where delegated identities live (null: not known, every
 * delegated leaf shares one budget).
 */
export function peerKeyOf(
  connection: Pick<TrackedConnection, 'issuedBy' | 'chain' | 'leafFingerprint'>,
  trustDomain: string | null,
): PeerKey {
  let ids: string[] = [];
  try {
    ids = plainSpiffeIds(new X509Certificate(connection.chain[0]).subjectAltName);
  } catch {
    ids = [];
  }
  const id = ids.length === 1 ? ids[0] : undefined;
  if (connection.issuedBy === 'deployment') {
    if (id !== undefined) {
      try {
        parseSpiffeId(id);
        return { key: `id ${id}`, name: id };
      } catch {
        // not a SPIFFE ID after all
      }
    }
    return {
      key: `leaf ${connection.leafFingerprint}`,
      name: `the certificate ${connection.leafFingerprint}`,
    };
  }
  const delegated = id !== undefined && trustDomain !== null ? parseDelegatedId(id, trustDomain) : null;
  if (delegated !== null && delegated.subtree.length > 0) {
    const top = delegated.subtree[0];
    return { key: `delegation ${top}`, name: `the delegation ${top} (its whole subtree)` };
  }
  return { key: 'delegated', name: 'delegated certificates without a SPIFFE ID' };
}

/** The identity of a connection without a client certificate. */
export function anonymousPeerKey(remoteAddress: string | undefined): PeerKey {
  const address = remoteAddress ?? 'unknown';
  return { key: `anonymous ${address}`, name: `clients without a certificate from ${address}` };
}

/** The calls in progress on one connection, and whose they are. */
interface ConnectionCalls {
  readonly peer: PeerKey;
  streams: number;
}

/** One server's counts and limits. */
export class PeerLimits {
  readonly maxStreamsPerConnection: number;
  readonly maxStreamsPerIdentity: number;
  readonly maxConnectionsPerIdentity: number;
  readonly #trustDomain: () => string | null;
  // Per connection: on the tracked connection itself, or by address for one without a certificate.
  readonly #tracked = new WeakMap<TrackedConnection, ConnectionCalls>();
  readonly #anonymous = new Map<string, ConnectionCalls>();
  // Entries exist only while their count is above zero.
  readonly #connectionsByIdentity = new Map<string, number>();
  readonly #streamsByIdentity = new Map<string, number>();
  #streams = 0;

  constructor(options: PeerLimitOptions = {}, trustDomain: () => string | null = () => null) {
    this.maxStreamsPerConnection = checkLimit(options.maxStreamsPerConnection, 'maxStreamsPerConnection');
    this.maxStreamsPerIdentity = checkLimit(options.maxStreamsPerIdentity, 'maxStreamsPerIdentity');
    this.maxConnectionsPerIdentity = checkLimit(
      options.maxConnectionsPerIdentity,
      'maxConnectionsPerIdentity',
    );
    this.#trustDomain = trustDomain;
  }

  /** The identity of a tracked connection (computed once per connection). */
  keyOf(connection: TrackedConnection): PeerKey {
    return this.#callsOf(connection).peer;
  }

  #callsOf(connection: TrackedConnection): ConnectionCalls {
    let calls = this.#tracked.get(connection);
    if (!calls) {
      calls = { peer: peerKeyOf(connection, this.#trustDomain()), streams: 0 };
      this.#tracked.set(connection, calls);
    }
    return calls;
  }

  /**
   * Count a new connection of `peer` until `socket` closes; returns a refusal
   * message, counting nothing, when the identity already holds the most it may.
   */
  admitConnection(
    peer: PeerKey,
    socket: { once(event: 'close', listener: () => void): unknown },
  ): string | undefined {
    const open = this.#connectionsByIdentity.get(peer.key) ?? 0;
    if (open >= this.maxConnectionsPerIdentity) {
      return `${peer.name} already has ${open} open connections, the most this server allows per identity (maxConnectionsPerIdentity)`;
    }
    this.#connectionsByIdentity.set(peer.key, open + 1);
    socket.once('close', () => decrement(this.#connectionsByIdentity, peer.key));
    return undefined;
  }

  /** Open connections counted for an identity key (for tests and metrics). */
  connectionsOf(key: string): number {
    return this.#connectionsByIdentity.get(key) ?? 0;
  }

  /** Calls in progress counted for an identity key. */
  streamsOf(key: string): number {
    return this.#streamsByIdentity.get(key) ?? 0;
  }

  /** Calls in progress counted over all connections. */
  get trackedStreams(): number {
    return this.#streams;
  }

  /** The calls of the connection a call runs on. */
  #connectionOf(call: grpc.ServerInterceptingCallInterface): {
    calls: ConnectionCalls;
    release(): void;
  } {
    const tracked = connectionForCall(call as unknown as PeerCall);
    if (tracked) return { calls: this.#callsOf(tracked), release: () => {} };
    const info: ConnectionAddress = call.getConnectionInfo();
    const key = `${info.remoteAddress}|${info.remotePort}|${info.localAddress}|${info.localPort}`;
    let calls = this.#anonymous.get(key);
    if (!calls) {
      calls = { peer: anonymousPeerKey(info.remoteAddress), streams: 0 };
      this.#anonymous.set(key, calls);
    }
    const entry = calls;
    return {
      calls: entry,
      release: () => {
        if (entry.streams === 0 && this.#anonymous.get(key) === entry) this.#anonymous.delete(key);
      },
    };
  }

  /**
   * The server interceptor that counts calls and refuses those over a limit
   * with RESOURCE_EXHAUSTED, when their metadata arrives (before any other
   * check runs or a message is read). A call is counted until its stream closes.
   */
  readonly interceptor: grpc.ServerInterceptor = (_method, call) => {
    let counted: { calls: ConnectionCalls; release(): void } | null = null;
    const release = (): void => {
      if (counted === null) return;
      counted.calls.streams--;
      decrement(this.#streamsByIdentity, counted.calls.peer.key);
      this.#streams--;
      counted.release();
      counted = null;
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const connection = this.#connectionOf(call);
            const { calls } = connection;
            if (calls.streams >= this.maxStreamsPerConnection) {
              connection.release();
              call.sendStatus({
                code: grpc.status.RESOURCE_EXHAUSTED,
                details: `this connection already has ${calls.streams} calls in progress, the most this server allows per connection (maxStreamsPerConnection); wait for one to end or use another connection`,
              });
              return;
            }
            const ofIdentity = this.#streamsByIdentity.get(calls.peer.key) ?? 0;
            if (ofIdentity >= this.maxStreamsPerIdentity) {
              connection.release();
              call.sendStatus({
                code: grpc.status.RESOURCE_EXHAUSTED,
                details: `${calls.peer.name} already has ${ofIdentity} calls in progress, the most this server allows per identity (maxStreamsPerIdentity); wait for one to end`,
              });
              return;
            }
            calls.streams++;
            this.#streamsByIdentity.set(calls.peer.key, ofIdentity + 1);
            this.#streams++;
            counted = connection;
            nextMetadata(metadata);
          },
          // grpc-js reports every call whose stream closed as cancelled, after its status.
          onCancel: release,
        });
      },
    });
  };
}

function decrement(counts: Map<string, number>, key: string): void {
  const count = (counts.get(key) ?? 0) - 1;
  if (count > 0) counts.set(key, count);
  else counts.delete(key);
}
