// The one mapping from sigil's error codes to gRPC status codes, for every
// server sigil runs (the control plane's services, the node's Workloads).
import * as grpc from '@grpc/grpc-js';
import type { ErrorCode } from '../errors.ts';

const STATUS_BY_CODE: Readonly<Record<ErrorCode, grpc.status>> = {
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  not_found: grpc.status.NOT_FOUND,
  already_exists: grpc.status.ALREADY_EXISTS,
  failed_precondition: grpc.status.FAILED_PRECONDITION,
  permission_denied: grpc.status.PERMISSION_DENIED,
  unauthenticated: grpc.status.UNAUTHENTICATED,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  internal: grpc.status.INTERNAL,
};

/** The gRPC status a SigilError of `code` is sent with. */
export function grpcStatusOf(code: ErrorCode): grpc.status {
  return STATUS_BY_CODE[code] ?? grpc.status.INTERNAL;
}
