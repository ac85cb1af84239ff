// Calling the control plane from clients (the agent, `sigil enrol`, operator
// commands): unary calls as promises with a deadline, and gRPC failures as
// SigilErrors carrying the server's message, so every caller reports them as
// one line naming the problem. A server that sheds load (admission control,
// services/admission.ts) refuses with RESOURCE_EXHAUSTED and a
// `retry-after-ms` trailer; the error keeps that hint (retryAfterMs) for the
// caller's retry schedule (agent/renewal-schedule.ts).

import { type CallOptions, type ClientUnaryCall, Metadata, type ServiceError } from '@grpc/grpc-js';
import { asSigilError, type ErrorCode, SigilError } from '../errors.ts';
import { parseRetryAfter, RETRY_AFTER_TRAILER } from '../protocol/retry-after.ts';
import { type ConnectionRefusal, connectionRefusal } from '../transport/connection-failure.ts';

/** Default deadline of one call. */
export const DEFAULT_CALL_TIMEOUT_MS = 15_000;

// grpc-js status codes (numbers, to avoid importing the enum at run time).
const STATUS_NAMES: Readonly<Record<number, string>> = {
  1: 'CANCELLED',
  2: 'UNKNOWN',
  3: 'INVALID_ARGUMENT',
  4: 'DEADLINE_EXCEEDED',
  5: 'NOT_FOUND',
  6: 'ALREADY_EXISTS',
  7: 'PERMISSION_DENIED',
  8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION',
  10: 'ABORTED',
  11: 'OUT_OF_RANGE',
  12: 'UNIMPLEMENTED',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
  15: 'DATA_LOSS',
  16: 'UNAUTHENTICATED',
};

const ERROR_CODES: Readonly<Record<number, ErrorCode>> = {
  3: 'invalid_argument',
  5: 'not_found',
  6: 'already_exists',
  7: 'permission_denied',
  8: 'resource_exhausted',
  9: 'failed_precondition',
  11: 'invalid_argument',
  16: 'unauthenticated',
};

/** A failed call, with the gRPC status kept for callers that branch on it. */
export class RpcError extends SigilError {
  /** The numeric gRPC status code. */
  readonly status: number;
  readonly statusName: string;
  /**
   * For a connection that failed because one side refused the other's
   * certificate: who refused, and the TLS alert the server sent. The status
   * stays UNAVAILABLE: no call reached the server.
   */
  readonly refusal: ConnectionRefusal | undefined;
  /**
   * The server's hint, in ms, of when to try again (its `retry-after-ms`
   * trailer on RESOURCE_EXHAUSTED); undefined when it sent none or one that
   * does not parse.
   */
  readonly retryAfterMs: number | undefined;
  constructor(
    status: number,
    message: string,
    cause?: unknown,
    refusal?: ConnectionRefusal,
    retryAfterMs?: number,
  ) {
    super(ERROR_CODES[status] ?? 'internal', message, { cause });
    this.name = 'RpcError';
    this.status = status;
    this.statusName = STATUS_NAMES[status] ?? `status ${status}`;
    this.refusal = refusal;
    this.retryAfterMs = retryAfterMs;
  }
}

export const STATUS_DEADLINE_EXCEEDED = 4;
export const STATUS_UNAVAILABLE = 14;
export const STATUS_UNAUTHENTICATED = 16;
export const STATUS_PERMISSION_DENIED = 7;
export const STATUS_FAILED_PRECONDITION = 9;
export const STATUS_RESOURCE_EXHAUSTED = 8;

/** The retry-after hint a failed call carries (RpcError.retryAfterMs), if any. */
export function retryAfterOf(error: unknown): number | undefined {
  return error instanceof RpcError ? error.retryAfterMs : undefined;
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === 'number';
}

/**
 * The one line a user sees for a failed call: the server's own message when
 * it sent one (sigil's services name the problem); for a connection that
 * never came up, who refused whom and why when the TLS handshake says so
 * ("the server at … refused this client's certificate: it has been
 * revoked", "this client refused the server at …: …"), else what went
 * wrong on the way to `target`.
 */
export function rpcError(error: unknown, target: string): SigilError {
  if (error instanceof SigilError) return error;
  if (!isServiceError(error)) {
    return asSigilError(error);
  }
  const details = cleanDetails(error.details ?? '');
  switch (error.code) {
    case STATUS_UNAVAILABLE: {
      const refusal = connectionRefusal(details, target);
      return new RpcError(
        error.code,
        refusal?.message ?? `cannot reach the sigil server at ${target}${details ? `: ${details}` : ''}`,
        error,
        refusal,
      );
    }
    case STATUS_DEADLINE_EXCEEDED:
      return new RpcError(error.code, `the sigil server at ${target} did not answer in time`, error);
    case STATUS_RESOURCE_EXHAUSTED:
      return new RpcError(
        error.code,
        details || `RESOURCE_EXHAUSTED from ${target}`,
        error,
        undefined,
        error.metadata ? parseRetryAfter(error.metadata.get(RETRY_AFTER_TRAILER)) : undefined,
      );
    default:
      return new RpcError(
        error.code,
        details || `${STATUS_NAMES[error.code] ?? error.code} from ${target}`,
        error,
      );
  }
}

/**
 * grpc-js's connection failures read "No connection established. Last error:
 * read ECONNRESET (2030-01-01T00:00:00.000Z). Resolution note: "; keep the cause.
 */
function cleanDetails(details: string): string {
  return (
    details
      .split('\n')[0]
      .replace(/^No connection established\. Last error: /, '')
      // OpenSSL's "40DD…:error:0A000415:SSL routines:ssl3_read_bytes:" prefix and ":../deps/…" suffix.
      .replace(/^[0-9A-F]+:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):.*$/, '$1')
      .replace(/ \(\d{4}-\d\d-\d\dT[0-9:.]+Z\)/, '')
      .replace(/\.? *Resolution note:.*$/, '')
      .trim()
  );
}

export type UnaryMethod<Request, Response> = (
  request: Request,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Response) => void,
) => ClientUnaryCall;

export interface CallSettings {
  /** Deadline of the call. Default DEFAULT_CALL_TIMEOUT_MS. */
  readonly timeoutMs?: number;
  /** For messages: the address being called. */
  readonly target: string;
  /** Wait for the channel to connect instead of failing fast while it is unreachable. */
  readonly waitForReady?: boolean;
}

/** A retry-after hint is followed by up to this fraction of it more, at random. */
export const RETRY_AFTER_JITTER = 0.2;

/** The shortest wait before a retry, whatever the hint says (a hint of 0 must not become a busy loop). */
export const MIN_RETRY_WAIT_MS = 100;

/** The wait before retrying a call refused with `hintMs`: the hint plus up to RETRY_AFTER_JITTER of it. */
export function hintedDelay(hintMs: number, random: () => number = Math.random): number {
  return Math.max(MIN_RETRY_WAIT_MS, Math.floor(hintMs + hintMs * RETRY_AFTER_JITTER * random()));
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function callOnce<Client extends object, Request, Response>(
  client: Client,
  method: UnaryMethod<Request, Response>,
  request: Request,
  settings: CallSettings,
  deadline: Date,
  metadata: Metadata | undefined,
): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    method.call(
      client,
      request,
      metadata ?? new Metadata(),
      { deadline, ...(settings.waitForReady ? { waitForReady: true } : {}) },
      (error, response) => {
        if (error) reject(rpcError(error, settings.target));
        else resolve(response);
      },
    );
  });
}

/**
 * Calls a unary method of a generated grpc-js client, e.g.
 * `unary(client, client.getStatus, {}, { target })`. A call the server
 * refused before doing anything (RESOURCE_EXHAUSTED with a retry-after-ms
 * hint: its admission control sheds load) is made again after the hint plus
 * jitter, as long as that still leaves time before the call's deadline;
 * otherwise the RpcError, with its retryAfterMs, is the answer.
 */
export async function unary<Client extends object, Request, Response>(
  client: Client,
  method: UnaryMethod<Request, Response>,
  request: Request,
  settings: CallSettings,
  metadata?: Metadata,
): Promise<Response> {
  const deadline = new Date(Date.now() + (settings.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS));
  for (;;) {
    try {
      return await callOnce(client, method, request, settings, deadline, metadata);
    } catch (error) {
      const hint = retryAfterOf(error);
      if (hint === undefined) throw error;
      const wait = hintedDelay(hint);
      // Retry only when the retry itself still has time to run (at least as long again as the wait).
      if (Date.now() + 2 * wait >= deadline.getTime()) throw error;
      await sleep(wait);
    }
  }
}
