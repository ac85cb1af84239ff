// A caller revoking its own certificate (or its own delegation) over the
// connection that certificate authenticates: revocation ends live sessions at
// once, which would cut this very call off and leave the caller with
// UNAVAILABLE instead of its answer. The call holds its connection
// (transport/connection-registry.ts) until grpc-js has sent the reply (the
// call's 'cancelled' event fires once its status went out, whatever it was),
// and never longer than HOLD_LIMIT_MS; the revocation interceptor refuses
// any other call on the connection meanwhile.
import type * as grpc from '@grpc/grpc-js';
import { connectionForCall, holdConnection } from '../transport/connection-registry.ts';

export const HOLD_LIMIT_MS = 10_000;

/** Keeps the call's connection open until its reply is sent (see above). */
export function holdUntilReplied(call: grpc.ServerUnaryCall<unknown, unknown>): void {
  const connection = connectionForCall(call);
  if (!connection) return;
  const release = holdConnection(connection);
  const limit = setTimeout(release, HOLD_LIMIT_MS);
  limit.unref();
  call.once('cancelled', () => {
    clearTimeout(limit);
    release();
  });
}
