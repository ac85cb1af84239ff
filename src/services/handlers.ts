// The control plane's error statuses (protocol/error-status.ts maps the codes) and the
// wrappers that turn async handlers into grpc-js handlers with it.
//
// A SigilError carries a message written for the caller (it names the
// problem and never holds a secret), so it is sent as the status details.
// Anything else is a bug or an infrastructure failure: the caller gets a
// generic INTERNAL status and the details go to the server's log only.
import * as grpc from '@grpc/grpc-js';
import { SigilError } from '../errors.ts';
import { grpcStatusOf } from '../protocol/error-status.ts';

export const INTERNAL_ERROR_MESSAGE = 'internal error (details are in the server log)';

export interface GrpcStatus {
  readonly code: grpc.status;
  readonly details: string;
}

/** The status for an error: SigilErrors keep their message, anything else becomes a generic INTERNAL. */
export function statusForError(error: unknown): GrpcStatus {
  if (error instanceof SigilError && error.code !== 'internal') {
    return { code: grpcStatusOf(error.code), details: error.message };
  }
  return { code: grpc.status.INTERNAL, details: INTERNAL_ERROR_MESSAGE };
}

/** Told about every failed call; internal errors are the ones to log with their stack. */
export type FailureReporter = (method: string, error: unknown, status: GrpcStatus) => void;

export interface HandlerOptions {
  /** The full method path, for reports. */
  readonly method: string;
  readonly onFailure?: FailureReporter;
}

function report(options: HandlerOptions, error: unknown, status: GrpcStatus): void {
  try {
    options.onFailure?.(options.method, error, status);
  } catch {
    // a reporter must never change the outcome of a call
  }
}

function serviceError(status: GrpcStatus): Partial<grpc.StatusObject> {
  return { code: status.code, details: status.details };
}

/** An async function of (request, call) as a grpc-js unary handler, with the status mapping above. */
export function unaryHandler<Request, Response>(
  options: HandlerOptions,
  handle: (request: Request, call: grpc.ServerUnaryCall<Request, Response>) => Promise<Response>,
): grpc.handleUnaryCall<Request, Response> {
  return (call, callback) => {
    let promise: Promise<Response>;
    try {
      promise = handle(call.request, call);
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise.then(
      (response) => callback(null, response),
      (error: unknown) => {
        const status = statusForError(error);
        report(options, error, status);
        callback(serviceError(status));
      },
    );
  };
}

/**
 * An async function that drives a server stream; it resolves when the stream
 * is done (it ends the stream itself) and rejects to fail it with the mapping above.
 */
export function serverStreamHandler<Request, Response>(
  options: HandlerOptions,
  handle: (call: grpc.ServerWritableStream<Request, Response>) => Promise<void>,
): grpc.handleServerStreamingCall<Request, Response> {
  return (call) => {
    let promise: Promise<void>;
    try {
      promise = handle(call);
    } catch (error) {
      promise = Promise.reject(error);
    }
    promise.catch((error: unknown) => {
      const status = statusForError(error);
      report(options, error, status);
      if (call.cancelled) return;
      call.emit('error', serviceError(status));
    });
  };
}
