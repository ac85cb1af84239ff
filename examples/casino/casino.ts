// The tutorial's Casino service: PayIt adds an amount to the caller's running
// total. "The caller" is the identity in its client certificate (the SPIFFE
// ID, a URI SAN), which the TLS layer has already verified: nothing in the
// request can claim to be someone else.
//
// Shared by both variants (embedded.ts and server.ts); only the source of the
// certificates differs.
import * as grpc from '@grpc/grpc-js';
import { SigilError } from '../../src/errors.ts';
import { peerIdentity } from '../../src/transport/peer-identity.ts';
import type { CasinoClient, CasinoServer, PayRequest, PayResponse } from './gen/casino.ts';

export { CasinoClient, CasinoService } from './gen/casino.ts';

function fail(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

function callerOf(call: grpc.ServerUnaryCall<PayRequest, PayResponse>): string {
  try {
    const { spiffeId } = peerIdentity(call);
    if (spiffeId === null) {
      throw fail(
        grpc.status.UNAUTHENTICATED,
        'the client certificate has no SPIFFE ID (a spiffe:// URI SAN)',
      );
    }
    return spiffeId;
  } catch (error) {
    if (error instanceof SigilError) throw fail(grpc.status.UNAUTHENTICATED, error.message);
    throw error;
  }
}

/** A Casino with its own running totals, one per client identity. */
export function casino(): { implementation: CasinoServer; totals: ReadonlyMap<string, number> } {
  const totals = new Map<string, number>();
  const implementation: CasinoServer = {
    payIt(call, callback) {
      try {
        const client = callerOf(call);
        const { amount } = call.request;
        if (!Number.isSafeInteger(amount) || amount <= 0) {
          throw fail(grpc.status.INVALID_ARGUMENT, `amount must be a positive integer (got ${amount})`);
        }
        const total = (totals.get(client) ?? 0) + amount;
        if (!Number.isSafeInteger(total)) {
          throw fail(
            grpc.status.OUT_OF_RANGE,
            `the total of ${client} would exceed ${Number.MAX_SAFE_INTEGER}`,
          );
        }
        totals.set(client, total);
        callback(null, { total, client });
      } catch (error) {
        callback(error as grpc.ServiceError);
      }
    },
  };
  return { implementation, totals };
}

/** PayIt as a promise. */
export function pay(client: CasinoClient, amount: number, deadlineMs = 10_000): Promise<PayResponse> {
  return new Promise((resolve, reject) => {
    client.payIt(
      { amount },
      new grpc.Metadata(),
      { deadline: Date.now() + deadlineMs },
      (error, response) => {
        if (error) reject(error);
        else resolve(response);
      },
    );
  });
}

/** A one-line description of a failed call or anything else. */
export function describeFailure(error: unknown): string {
  if (error instanceof Error && 'code' in error && typeof error.code === 'number') {
    const name = grpc.status[error.code] ?? String(error.code);
    return `${name}: ${(error as grpc.ServiceError).details ?? error.message}`;
  }
  return error instanceof Error ? error.message.split('\n')[0] : String(error);
}

/** A flag's value, else the environment variable's; empty counts as unset. */
export function setting(flag: string | undefined, env: string): string | undefined {
  const value = flag ?? process.env[env];
  return value === '' ? undefined : value;
}
