// A grpc-js unary handler behind admission control (admission.ts): the call
// runs once it has a slot; a call refused (queue full, or a wait longer than
// the bound or than the call's deadline leaves) gets RESOURCE_EXHAUSTED with
// the refusal's message and a `retry-after-ms` trailer, before the handler
// (and so the authority) has seen it; a call whose client goes away while it
// waits leaves the queue.

import * as grpc from '@grpc/grpc-js';
import { RETRY_AFTER_TRAILER } from '../protocol/retry-after.ts';
import { type AdmissionControl, AdmissionRefused, type AdmissionTicket } from './admission.ts';
import { type FailureReporter, statusForError } from './handlers.ts';
import type { AdmittedMethod, ServerMetrics } from './server-metrics.ts';

export interface AdmittedHandlerOptions {
  readonly admission: AdmissionControl;
  /** For the metrics. */
  readonly name: AdmittedMethod;
  /** The full method path, for failure reports. */
  readonly method: string;
  readonly metrics?: ServerMetrics;
  readonly onFailure?: FailureReporter;
}

/** The status a refusal is sent with: its message, and the hint as a trailer. */
export function refusalStatus(refusal: AdmissionRefused): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  metadata.set(RETRY_AFTER_TRAILER, String(refusal.retryAfterMs));
  const status = statusForError(refusal);
  return { code: status.code, details: status.details, metadata };
}

/** What a call's deadline leaves, ms (infinite without one). */
function remainingMs(deadline: grpc.Deadline): number {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? at - Date.now() : Number.POSITIVE_INFINITY;
}

export function admittedHandler<Request, Response>(
  options: AdmittedHandlerOptions,
  handler: grpc.handleUnaryCall<Request, Response>,
): grpc.handleUnaryCall<Request, Response> {
  const { admission, name, method, metrics, onFailure } = options;
  const refuse = (callback: grpc.sendUnaryData<Response>, refusal: AdmissionRefused): void => {
    metrics?.admission(name, 'refused');
    const status = refusalStatus(refusal);
    try {
      onFailure?.(method, refusal, { code: status.code as grpc.status, details: status.details ?? '' });
    } catch {
      // a reporter must never change the outcome of a call
    }
    callback(status);
  };
  return (call, callback) => {
    let ticket: AdmissionTicket;
    try {
      ticket = admission.enter(remainingMs(call.getDeadline()));
    } catch (error) {
      if (error instanceof AdmissionRefused) refuse(callback, error);
      else callback(statusForError(error));
      return;
    }
    const leave = () => ticket.cancel();
    call.once('cancelled', leave);
    ticket.granted.then(
      (release) => {
        call.off('cancelled', leave);
        if (call.cancelled) {
          release();
          return;
        }
        metrics?.admission(name, 'admitted');
        let replied = false;
        const reply: grpc.sendUnaryData<Response> = (error, value, trailer, flags) => {
          if (!replied) {
            replied = true;
            release();
          }
          callback(error, value, trailer, flags);
        };
        try {
          handler(call, reply);
        } catch (error) {
          // unaryHandler never throws; anything else is a bug: fail the call, keep the slot count right.
          reply(statusForError(error));
        }
      },
      // The only other way out of the queue: the client went away, nobody to answer.
      (error: unknown) => {
        if (error instanceof AdmissionRefused) refuse(callback, error);
      },
    );
  };
}
