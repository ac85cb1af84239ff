// The hint a server that sheds load sends with RESOURCE_EXHAUSTED (the
// control plane's admission control, services/admission-handler.ts), and how
// a client reads it (client/rpc.ts): one trailer name for both sides.

/** The trailer: when to try again, in ms, as decimal digits. */
export const RETRY_AFTER_TRAILER = 'retry-after-ms';
/** Hints beyond this are not believed (a day: longer than any certificate sigil renews lives). */
export const MAX_RETRY_AFTER_MS = 24 * 3_600_000;

/**
 * The retry-after hint of a trailer value: a plain decimal count of
 * milliseconds (one value, digits only, at most MAX_RETRY_AFTER_MS).
 * Anything else (a sign, a fraction, units, several values, a huge number)
 * is ignored: undefined, and the caller's own backoff applies.
 */
export function parseRetryAfter(values: readonly unknown[]): number | undefined {
  if (values.length !== 1) return undefined;
  const text = values[0];
  if (typeof text !== 'string' || !/^[0-9]{1,9}$/.test(text)) return undefined;
  const ms = Number(text);
  return ms <= MAX_RETRY_AFTER_MS ? ms : undefined;
}
