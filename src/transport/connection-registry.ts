// The live TLS connections of sigil's servers. A connection is recorded once,
// at 'secureConnection', with what its peer presented; from then on calls find
// their connection here instead of re-reading the certificate on every call,
// and revocation finds (and closes) every connection a revoked certificate
// still holds open.
//
// One process may run several servers, so the lookup is process-wide and keyed
// by the full address 4-tuple; each server's registry only ever closes its own
// connections.
import type { X509Certificate } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { canonicalFingerprint } from '../pki/fingerprint.ts';
import { canonicalSerial } from '../pki/serial.ts';
import type { WorkloadPeer } from './workload-peers.ts';

export interface ConnectionAddress {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}

/**
 * Who issued the peer's leaf: one of the deployment's own CAs, or someone
 * else OpenSSL accepted (beneath a delegation; see delegate-admission.ts).
 */
export type LeafIssuer = 'deployment' | 'delegated';

export interface TrackedConnection {
  readonly socket: TLSSocket;
  readonly issuedBy: LeafIssuer;
  /**
   * For a deployment-issued leaf that is a workload identity (workload-peers.ts):
   * its owner and name. Null or absent for every other peer.
   */
  readonly workload?: WorkloadPeer | null;
  /** DER, leaf first: the peer's chain as Node reports it, completed from known CAs (see readPeerChain). */
  readonly chain: readonly Buffer[];
  /**
   * Serials of `chain` in canonical form (pki/serial.ts), plus any
   * revocation identifiers learnt later (addRevocationIds).
   */
  readonly chainSerials: readonly string[];
  /** The leaf's fingerprint (pki/fingerprint.ts). */
  readonly leafFingerprint: string;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly since: Date;
}

/**
 * More identifiers whose revocation must end this connection: what the
 * application learnt about the peer's chain after the handshake (a
 * delegate's presented CAs, by serial and "fp:<fingerprint>").
 */
export function addRevocationIds(connection: TrackedConnection, ids: readonly string[]): void {
  const serials = connection.chainSerials as string[];
  for (const id of ids) if (!serials.includes(id)) serials.push(id);
}

/**
 * The peer's chain, leaf first. Node links each certificate to its issuer;
 * the walk stops at a self-issued certificate. Node on the server side may
 * expose only the leaf (nodejs/node#65579 drops the presented intermediates),
 * so callers must treat anything past chain[0] as a bonus, not a guarantee.
 */
function readPeerChain(
  socket: TLSSocket,
  knownAuthorities: readonly X509Certificate[],
): { chain: Buffer[]; serials: string[]; fingerprint: string } | null {
  // getPeerX509Certificate is ~15x cheaper than getPeerCertificate(true),
  // which converts every certificate of the chain into a plain object.
  const leaf = socket.getPeerX509Certificate();
  if (!leaf) return null;
  const chain: Buffer[] = [];
  const serials: string[] = [];
  const seen = new Set<string>();
  let last: X509Certificate = leaf;
  // A self-issued certificate is its own issuer; `seen` ends the walk there.
  for (let current: X509Certificate | undefined = leaf; current && !seen.has(current.fingerprint256); ) {
    seen.add(current.fingerprint256);
    chain.push(current.raw);
    serials.push(canonicalSerial(current.serialNumber));
    last = current;
    current = current.issuerCertificate;
  }
  // Node 24.x servers no longer see the client's intermediates
  // (nodejs/node#65579). OpenSSL has already validated the path, so the
  // issuers are found among the CAs this server knows (its trust bundle and
  // chain): a lookup for revocation by serial, not a second validation.
  // checkIssued (issuer name, AKI/SKI) suffices: only CAs sharing one key
  // match alike, and a signature check could not tell those apart either.
  for (let depth = 0; depth < MAX_CHAIN_LENGTH && !last.checkIssued(last); depth++) {
    const issuer = knownAuthorities.find((ca) => !seen.has(ca.fingerprint256) && last.checkIssued(ca));
    if (!issuer) break;
    seen.add(issuer.fingerprint256);
    chain.push(issuer.raw);
    serials.push(canonicalSerial(issuer.serialNumber));
    last = issuer;
  }
  return { chain, serials, fingerprint: canonicalFingerprint(leaf.fingerprint256) };
}

const MAX_CHAIN_LENGTH = 10;

const addressKey = (address: string | undefined, port: number | undefined): string => `${address}|${port}`;

// Process-wide index: remote address/port → the connections from there (one
// per local endpoint; several only when several servers share a process).
const byRemote = new Map<string, Set<TrackedConnection>>();

function index(connection: TrackedConnection): void {
  const key = addressKey(connection.remoteAddress, connection.remotePort);
  let set = byRemote.get(key);
  if (!set) {
    set = new Set();
    byRemote.set(key, set);
  }
  set.add(connection);
}

function unindex(connection: TrackedConnection): void {
  const key = addressKey(connection.remoteAddress, connection.remotePort);
  const set = byRemote.get(key);
  if (!set) return;
  set.delete(connection);
  if (set.size === 0) byRemote.delete(key);
}

/**
 * The live connection a call arrived on. With the local endpoint known (the
 * interceptor API gives it) the 4-tuple names exactly one TCP connection;
 * with only the remote endpoint (handlers' getPeer()) the leaf fingerprint
 * picks among connections from the same remote port to different servers.
 * Returns undefined rather than guessing.
 */
export function findConnection(
  address: ConnectionAddress,
  leafFingerprint?: string,
): TrackedConnection | undefined {
  const set = byRemote.get(addressKey(address.remoteAddress, address.remotePort));
  if (!set) return undefined;
  let found: TrackedConnection | undefined;
  let count = 0;
  for (const connection of set) {
    if (address.localPort !== undefined && connection.localPort !== address.localPort) continue;
    if (address.localAddress !== undefined && connection.localAddress !== address.localAddress) continue;
    if (leafFingerprint !== undefined && connection.leafFingerprint !== leafFingerprint) continue;
    found ??= connection;
    count++;
  }
  // Several matches that share the leaf fingerprint are the same identity; without it, ambiguous.
  if (count > 1 && leafFingerprint === undefined) return undefined;
  return found;
}

/** What sigil needs of a grpc-js call (handler or interceptor) to find its connection. */
export interface PeerCall {
  getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined };
  /** Interceptor calls have it (local and remote endpoint). */
  getConnectionInfo?(): ConnectionAddress;
  /** Handler calls have only this: "address:port" of the remote end. */
  getPeer?(): string;
}

/** The sigil-tracked connection a call runs on, or undefined (e.g. a plain grpc-js TLS server). */
export function connectionForCall(call: PeerCall): TrackedConnection | undefined {
  if (byRemote.size === 0) return undefined;
  // Handler call objects (grpc-js ServerUnaryCallImpl and friends) keep the
  // intercepting call, which knows both endpoints, as `.call`. Using it finds
  // the connection by its exact 4-tuple and spares a getPeerCertificate()
  // (~100 µs) on every call; without it, getPeer plus the leaf fingerprint.
  const info = call.getConnectionInfo?.() ?? (call as { call?: PeerCall }).call?.getConnectionInfo?.();
  if (info?.remoteAddress !== undefined && info.localPort !== undefined) return findConnection(info);
  const peer = call.getPeer?.();
  const colon = peer?.lastIndexOf(':') ?? -1;
  if (!peer || colon < 0) return undefined;
  const fingerprint = call.getAuthContext().sslPeerCertificate?.fingerprint256;
  if (!fingerprint) return undefined;
  return findConnection(
    { remoteAddress: peer.slice(0, colon), remotePort: Number(peer.slice(colon + 1)) },
    canonicalFingerprint(fingerprint),
  );
}

// A hold defers closeWhere()'s destroy of one connection until released: a
// holder revoking its own certificate over that very connection would
// otherwise be cut off (revocation closes connections synchronously) before
// the reply leaves. While held and doomed, the connection stays registered so
// the revocation interceptor keeps refusing new calls on it; on release it is
// destroyed once the reply's frames have been handed to the socket.
const holds = new WeakMap<TrackedConnection, { count: number; doomed: boolean }>();

/** Defers any closeWhere() of `connection` until the returned function is called (idempotent). */
export function holdConnection(connection: TrackedConnection): () => void {
  const hold = holds.get(connection) ?? { count: 0, doomed: false };
  hold.count++;
  holds.set(connection, hold);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    hold.count--;
    if (hold.count > 0) return;
    holds.delete(connection);
    if (!hold.doomed) return;
    // grpc-js queues the reply's HTTP/2 frames, which the session writes in an
    // immediate; the second turn starts after that write, then the socket drains.
    const { socket } = connection;
    setImmediate(() =>
      setImmediate(() => {
        if (socket.writableLength === 0) socket.destroy();
        else {
          socket.once('drain', () => socket.destroy());
          setTimeout(() => socket.destroy(), 1000).unref();
        }
      }),
    );
  };
}

/** The connections of one server. */
export class ConnectionRegistry {
  readonly #connections = new Set<TrackedConnection>();

  /**
   * Record a connection that completed its handshake (OpenSSL verified the
   * chain). Returns null, and records nothing, when the peer presented no
   * certificate. Forgets the connection when its socket closes.
   */
  /** `knownAuthorities`: CA certificates that may complete a chain Node reports only in part. */
  track(
    socket: TLSSocket,
    knownAuthorities: readonly X509Certificate[] = [],
    issuedBy: LeafIssuer,
    workload: WorkloadPeer | null = null,
  ): TrackedConnection | null {
    const peer = readPeerChain(socket, knownAuthorities);
    if (!peer) return null;
    const connection: TrackedConnection = {
      socket,
      issuedBy,
      workload: issuedBy === 'deployment' ? workload : null,
      chain: peer.chain,
      chainSerials: peer.serials,
      leafFingerprint: peer.fingerprint,
      remoteAddress: socket.remoteAddress ?? '',
      remotePort: socket.remotePort ?? 0,
      localAddress: socket.localAddress ?? '',
      localPort: socket.localPort ?? 0,
      since: new Date(),
    };
    this.#connections.add(connection);
    index(connection);
    socket.once('close', () => {
      this.#connections.delete(connection);
      unindex(connection);
    });
    return connection;
  }

  get size(): number {
    return this.#connections.size;
  }

  list(): TrackedConnection[] {
    return [...this.#connections];
  }

  /** Destroy every matching connection now (no GOAWAY, no grace); returns how many. */
  closeWhere(predicate: (connection: TrackedConnection) => boolean): number {
    let closed = 0;
    for (const connection of [...this.#connections]) {
      if (!predicate(connection)) continue;
      const hold = holds.get(connection);
      if (hold) {
        hold.doomed = true; // destroyed when released (holdConnection)
        closed++;
        continue;
      }
      connection.socket.destroy();
      // Forget it at once: a lookup between now and the 'close' event must not find it.
      this.#connections.delete(connection);
      unindex(connection);
      closed++;
    }
    return closed;
  }
}
