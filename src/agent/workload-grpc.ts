// The node daemon's handlers as grpc-js wants them, with one mapping from
// errors to statuses: a SigilError keeps its message (written for the
// caller, never holding a secret); a refusal relayed from the control plane
// (an RpcError) keeps the control plane's status and message, so a quota
// refusal arrives as RESOURCE_EXHAUSTED; anything else is a bug or an
// infrastructure failure, logged here and answered INTERNAL.
import * as grpc from '@grpc/grpc-js';
import { RpcError } from '../client/rpc.ts';
import { SigilError } from '../errors.ts';
import type { Logger } from '../logging.ts';
import { grpcStatusOf } from '../protocol/error-status.ts';

/** A refusal this daemon answers with UNAVAILABLE (SigilError has no such code). */
export function unavailable(message: string, cause?: unknown): RpcError {
  return new RpcError(grpc.status.UNAVAILABLE, message, cause);
}

export function statusOf(error: unknown): { code: grpc.status; details: string } | null {
  if (
    error instanceof RpcError &&
    error.status !== grpc.status.INTERNAL &&
    error.status !== grpc.status.UNKNOWN
  )
    return { code: error.status, details: error.message };
  if (error instanceof SigilError && error.code !== 'internal')
    return { code: grpcStatusOf(error.code), details: error.message };
  return null;
}

export class Handlers {
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** The status to send for `error`; internal errors are logged with the method. */
  status(method: string, error: unknown): { code: grpc.status; details: string } {
    const known = statusOf(error);
    if (known) {
      this.#logger.debug({ method, code: known.code, details: known.details }, 'call refused');
      return known;
    }
    this.#logger.error({ method, err: error }, 'call failed');
    return { code: grpc.status.INTERNAL, details: 'internal error (details are in the node daemon log)' };
  }

  unary<Request, Response>(
    method: string,
    handle: (request: Request, call: grpc.ServerUnaryCall<Request, Response>) => Promise<Response>,
  ): grpc.handleUnaryCall<Request, Response> {
    return (call, callback) => {
      Promise.resolve()
        .then(() => handle(call.request, call))
        .then(
          (response) => callback(null, response),
          (error: unknown) => callback(this.status(method, error)),
        );
    };
  }

  /** A server stream driven by `handle`, which ends the stream itself; a rejection fails it. */
  serverStream<Request, Response>(
    method: string,
    handle: (call: grpc.ServerWritableStream<Request, Response>) => Promise<void>,
  ): grpc.handleServerStreamingCall<Request, Response> {
    return (call) => {
      Promise.resolve()
        .then(() => handle(call))
        .catch((error: unknown) => {
          const status = this.status(method, error);
          if (!call.cancelled) call.emit('error', status);
        });
    };
  }

  bidiStream<Request, Response>(
    method: string,
    handle: (call: grpc.ServerDuplexStream<Request, Response>) => Promise<void>,
  ): grpc.handleBidiStreamingCall<Request, Response> {
    return (call) => {
      Promise.resolve()
        .then(() => handle(call))
        .catch((error: unknown) => {
          const status = this.status(method, error);
          if (!call.cancelled) call.emit('error', status);
        });
    };
  }

  clientStream<Request, Response>(
    method: string,
    handle: (call: grpc.ServerReadableStream<Request, Response>) => Promise<Response>,
  ): grpc.handleClientStreamingCall<Request, Response> {
    return (call, callback) => {
      Promise.resolve()
        .then(() => handle(call))
        .then(
          (response) => callback(null, response),
          (error: unknown) => callback(this.status(method, error)),
        );
    };
  }
}

/** Resolves when the stream can take more (write returned true, or after 'drain'). */
/** What backpressure and end detection need of any server stream. */
export interface StreamCall {
  readonly cancelled: boolean;
  on(event: string, listener: () => void): unknown;
  once(event: string, listener: () => void): unknown;
  off(event: string, listener: () => void): unknown;
}

export function written(call: StreamCall, ok: boolean): Promise<void> {
  if (ok || call.cancelled) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      call.off('drain', done);
      call.off('cancelled', done);
      resolve();
    };
    call.on('drain', done);
    call.on('cancelled', done);
  });
}

/** Resolves when the client goes away (cancelled or closed). */
export function callEnded(call: StreamCall): Promise<void> {
  if (call.cancelled) return Promise.resolve();
  return new Promise((resolve) => {
    call.once('cancelled', () => resolve());
    call.once('close', () => resolve());
    call.once('error', () => resolve());
  });
}
