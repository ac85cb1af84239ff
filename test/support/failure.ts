// The error of a call that must fail, for the test to assert on: a call that
// succeeds instead fails the test.
import type * as grpc from '@grpc/grpc-js';

/** What `promise` rejected with (a gRPC call's ServiceError by default); fails when it resolved. */
export async function failureOf<E = grpc.ServiceError>(
  promise: Promise<unknown>,
  what = 'the call',
): Promise<E> {
  try {
    await promise;
  } catch (error) {
    return error as E;
  }
  throw new Error(`${what} succeeded but should have failed`);
}
