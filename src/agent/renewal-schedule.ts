// When a node renews its certificate, and how it retries. Pure: every function
// takes the clock and the random source as arguments, so the schedule is
// tested without timers.
//
// Renewal starts at about two thirds of the lifetime, moved by a random jitter
// (± a few percent of the lifetime) so that nodes enrolled together do not all
// renew in the same second. A failed attempt is retried with exponential
// backoff (with "equal jitter": half fixed, half random) up to a cap, and a
// retry is never scheduled past the certificate's expiry while the
// certificate is still valid: near the end the retries get closer instead, so
// the last attempts happen while the certificate can still authenticate the
// call. Once expired, renewal is no longer possible (the server refuses an
// expired client certificate) and the agent re-joins instead.
//
// A server shedding load says when to come back (RESOURCE_EXHAUSTED with a
// retry-after-ms hint, services/admission.ts): that hint replaces the
// backoff, plus up to HINT_JITTER of it at random so that nodes refused
// together do not all return together, and it too is kept inside the
// certificate's remaining life.

export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface RenewalPolicy {
  /** Fraction of the lifetime after which renewal starts. Default 2/3. */
  readonly fraction: number;
  /** Jitter as a fraction of the lifetime, applied ± around `fraction`. Default 0.05. */
  readonly jitter: number;
  /** First retry delay after a failure. Default 1 s. */
  readonly initialRetryMs: number;
  /** Longest retry delay. Default 5 min. */
  readonly maxRetryMs: number;
  /** Shortest delay the agent ever sleeps between attempts. Default 100 ms. */
  readonly minDelayMs: number;
}

export const DEFAULT_RENEWAL_POLICY: RenewalPolicy = Object.freeze({
  fraction: 2 / 3,
  jitter: 0.05,
  initialRetryMs: 1_000,
  maxRetryMs: 5 * 60_000,
  minDelayMs: 100,
});

/** A random number in [0, 1), like Math.random. */
export type RandomSource = () => number;

export type RenewalAction =
  /** The certificate is in its renewal window: call Renew now. */
  | { readonly kind: 'renew' }
  /** The certificate has expired: only Rejoin (proof of the enrolled key) can help. */
  | { readonly kind: 'rejoin' }
  /** Nothing to do before `at`. */
  | { readonly kind: 'wait'; readonly at: Date };

function lifetimeMs(validity: Validity): number {
  return Math.max(0, validity.notAfter.getTime() - validity.notBefore.getTime());
}

function checkPolicy(policy: RenewalPolicy): void {
  const { fraction, jitter, initialRetryMs, maxRetryMs, minDelayMs } = policy;
  if (!(fraction > 0 && fraction < 1))
    throw new RangeError(`renewal fraction must be in (0, 1), got ${fraction}`);
  if (!(jitter >= 0 && jitter < Math.min(fraction, 1 - fraction))) {
    throw new RangeError(`renewal jitter must be in [0, ${Math.min(fraction, 1 - fraction)}), got ${jitter}`);
  }
  if (!(minDelayMs > 0 && initialRetryMs >= minDelayMs && maxRetryMs >= initialRetryMs)) {
    throw new RangeError('retry delays must satisfy 0 < minDelayMs <= initialRetryMs <= maxRetryMs');
  }
}

/** A policy with defaults filled in and its bounds checked. */
export function renewalPolicy(overrides: Partial<RenewalPolicy> = {}): RenewalPolicy {
  const policy = { ...DEFAULT_RENEWAL_POLICY, ...overrides };
  checkPolicy(policy);
  return policy;
}

/**
 * The instant renewal of this certificate starts: notBefore + lifetime ×
 * (fraction ± jitter). Always strictly inside the validity period.
 */
export function renewalTime(
  validity: Validity,
  random: RandomSource = Math.random,
  policy: RenewalPolicy = DEFAULT_RENEWAL_POLICY,
): Date {
  checkPolicy(policy);
  const lifetime = lifetimeMs(validity);
  const offset = policy.fraction + (2 * random() - 1) * policy.jitter;
  return new Date(validity.notBefore.getTime() + Math.floor(lifetime * offset));
}

/**
 * What to do now with a certificate whose renewal was planned for `renewAt`
 * (from renewalTime, chosen once per certificate so the jitter does not move
 * each time the agent looks).
 */
export function renewalAction(validity: Validity, renewAt: Date, now: Date): RenewalAction {
  if (now.getTime() >= validity.notAfter.getTime()) return { kind: 'rejoin' };
  if (now.getTime() >= renewAt.getTime()) return { kind: 'renew' };
  return { kind: 'wait', at: renewAt };
}

/** A server's retry-after hint is followed by up to this fraction of it more, at random. */
export const HINT_JITTER = 0.2;

/** A usable retry-after hint: a finite, non-negative number of ms; anything else is ignored. */
function usableHint(retryAfterMs: number | undefined): number | undefined {
  if (typeof retryAfterMs !== 'number' || !Number.isFinite(retryAfterMs) || retryAfterMs < 0)
    return undefined;
  return retryAfterMs;
}

/**
 * The delay before retry number `failures` (1 after the first failure):
 * initialRetryMs × 2^(failures−1), capped at maxRetryMs, half of it random;
 * or, when the server gave a retry-after hint (`retryAfterMs`), that hint
 * plus up to HINT_JITTER of it at random (a hint is not capped at
 * maxRetryMs: the server knows its load). While the certificate is valid the
 * retry never lands after its expiry: at most half the remaining time, and at
 * least minDelayMs unless less than that remains (then exactly at expiry,
 * when the agent re-joins). After expiry the plain backoff applies.
 */
export function retryDelay(
  failures: number,
  validity: Validity,
  now: Date,
  random: RandomSource = Math.random,
  policy: RenewalPolicy = DEFAULT_RENEWAL_POLICY,
  retryAfterMs?: number,
): number {
  checkPolicy(policy);
  const attempt = Math.max(1, Math.floor(failures));
  // 2^40 ms is far beyond any cap; stop doubling there to stay in safe integers.
  const exponential = policy.initialRetryMs * 2 ** Math.min(attempt - 1, 40);
  const capped = Math.min(exponential, policy.maxRetryMs);
  const hint = usableHint(retryAfterMs);
  let delay =
    hint === undefined
      ? Math.floor(capped / 2 + (capped / 2) * random())
      : Math.floor(hint + hint * HINT_JITTER * random());
  const remaining = validity.notAfter.getTime() - now.getTime();
  if (remaining <= 0) return Math.max(delay, policy.minDelayMs);
  // Before expiry: at most half the time left, at least minDelayMs, never past notAfter.
  delay = Math.min(delay, Math.floor(remaining / 2));
  return Math.max(delay, Math.min(policy.minDelayMs, remaining));
}

/** Node clamps setTimeout delays above 2^31−1 ms to 1 ms; sleep at most this long and look again. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The delay until `at`, within [0, MAX_TIMER_MS]. */
export function delayUntil(at: Date, now: Date): number {
  return Math.min(Math.max(0, at.getTime() - now.getTime()), MAX_TIMER_MS);
}
