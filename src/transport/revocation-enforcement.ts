// Revocation that reaches live sessions. A RevocationSource says which serials
// are revoked; this enforces it at three points:
//   1. a new connection whose chain holds a revoked serial is destroyed at
//      'secureConnection', before grpc-js ever sees it (when the material
//      carries CRLs, OpenSSL already refused it during the handshake);
//   2. every call is checked by a server interceptor and fails with
//      UNAUTHENTICATED naming the serial (covers calls racing a revocation,
//      and plain grpc-js servers that use only the interceptor);
//   3. each notification from the source destroys the open connections that
//      hold a newly revoked serial, running streams included, synchronously in
//      the notification: no timer, no polling.
import * as grpc from '@grpc/grpc-js';
import type { RevocationSource } from '../pki/revocation-source.ts';
import { canonicalSerial } from '../pki/serial.ts';
import {
  type ConnectionRegistry,
  connectionForCall,
  type PeerCall,
  type TrackedConnection,
} from './connection-registry.ts';

/** The first revoked serial in a chain, leaf first; undefined when none is. */
export function revokedSerialIn(
  chainSerials: readonly string[],
  source: RevocationSource,
): string | undefined {
  for (const serial of chainSerials) if (source.isRevoked(serial)) return serial;
  return undefined;
}

/** Serials of the certificates a call's peer presented, leaf first ([] without a client certificate). */
function callChainSerials(call: PeerCall): readonly string[] {
  const connection = connectionForCall(call);
  if (connection) return connection.chainSerials;
  const leaf = call.getAuthContext().sslPeerCertificate;
  return leaf?.raw ? [canonicalSerial(leaf.serialNumber)] : [];
}

/**
 * A server interceptor that fails calls from a revoked certificate (or with
 * no client certificate at all) with UNAUTHENTICATED before the handler runs.
 */
export function revocationInterceptor(source: RevocationSource): grpc.ServerInterceptor {
  return (_method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const serials = callChainSerials(call);
            if (serials.length === 0) {
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details: 'no client certificate on this call',
              });
              return;
            }
            const revoked = revokedSerialIn(serials, source);
            if (revoked !== undefined) {
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details: `certificate serial ${revoked} is revoked`,
              });
              return;
            }
            nextMetadata(metadata);
          },
        });
      },
    });
}

/** Revocation enforcement for one server's connections. */
export class RevocationEnforcement {
  readonly source: RevocationSource;
  readonly interceptor: grpc.ServerInterceptor;
  readonly #registry: ConnectionRegistry;
  readonly #unsubscribe: () => void;
  readonly #onClosed: ((serials: readonly string[], connections: number) => void) | undefined;

  constructor(
    source: RevocationSource,
    registry: ConnectionRegistry,
    options: { onClosed?: (serials: readonly string[], connections: number) => void } = {},
  ) {
    this.source = source;
    this.#registry = registry;
    this.#onClosed = options.onClosed;
    this.interceptor = revocationInterceptor(source);
    this.#unsubscribe = source.subscribe((serials) => this.closeRevoked(serials));
  }

  /** The revoked serial that bars this new connection, or undefined to let it in. */
  refusal(connection: TrackedConnection): string | undefined {
    return revokedSerialIn(connection.chainSerials, this.source);
  }

  /** Destroy every open connection whose chain holds one of `serials`; returns how many. */
  closeRevoked(serials: readonly string[]): number {
    if (serials.length === 0) return 0;
    const revoked = new Set(serials);
    const closed = this.#registry.closeWhere((connection) =>
      connection.chainSerials.some((serial) => revoked.has(serial)),
    );
    if (closed > 0) this.#onClosed?.(serials, closed);
    return closed;
  }

  close(): void {
    this.#unsubscribe();
  }
}
