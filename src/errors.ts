// The one set of error classes sigil throws on purpose. Every layer raises a
// SigilError with a stable `code`; the CLI (and later the gRPC services) map
// that code to an exit code or a status in exactly one place each.

export type ErrorCode =
  | 'invalid_argument' // malformed or unacceptable input: bad PEM, bad name, bad flag value
  | 'not_found' // a file, serial, token or node that does not exist
  | 'already_exists' // refusing to overwrite
  | 'failed_precondition' // input is well-formed but the state forbids it: expired issuer, key mismatch
  | 'permission_denied' // authenticated but not allowed
  | 'unauthenticated' // no or bad proof of identity or possession
  | 'resource_exhausted' // a quota or limit would be exceeded
  | 'internal';

export class SigilError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SigilError';
    this.code = code;
  }
}

export const invalid = (message: string, cause?: unknown): SigilError =>
  new SigilError('invalid_argument', message, { cause });

/** A request field's problem, named the same way by every check: `field: problem`. */
export const fieldError = (field: string, problem: string): SigilError => invalid(`${field}: ${problem}`);
export const notFound = (message: string, cause?: unknown): SigilError =>
  new SigilError('not_found', message, { cause });
export const alreadyExists = (message: string): SigilError => new SigilError('already_exists', message);
export const preconditionFailed = (message: string): SigilError =>
  new SigilError('failed_precondition', message);
export const unauthenticated = (message: string): SigilError => new SigilError('unauthenticated', message);

/** CLI exit codes: 0 ok, 1 failure, 2 bad usage (commander handles usage errors itself). */
export function exitCodeFor(_error: unknown): 1 {
  return 1;
}

/** What anything thrown says, to quote inside a message of our own: an Error's message, else its text. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** messageOf cut to its first line: for logs and one-line summaries, which a multi-line message would break. */
export function firstLineOf(error: unknown): string {
  return error instanceof Error ? error.message.split('\n')[0] : String(error);
}

/** A one-line message safe to show a user: ours verbatim, anything else generic but named. */
export function describeError(error: unknown): string {
  if (error instanceof SigilError) return error.message;
  return `unexpected error: ${firstLineOf(error)}`;
}

/** `error` as a SigilError: ours unchanged, anything else 'internal' with its message (messageOf). */
export function asSigilError(error: unknown): SigilError {
  if (error instanceof SigilError) return error;
  return new SigilError('internal', messageOf(error), { cause: error });
}
