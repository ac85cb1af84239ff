// Default lifetimes of everything the authority issues, and when each is
// renewed. Short leaves plus automatic renewal mean a compromise ages out on
// its own; CAs live long enough that rotating them is an event, not a chore,
// and are rotated well before they end so no expiry is ever an outage.

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const YEAR = 365 * DAY;

/** The self-signed root: 10 years. It may be taken offline after bootstrap. */
export const ROOT_TTL_MS = 10 * YEAR;
/** One intermediate per replica: 1 year, rotated at 2/3 of its life (about 8 months). */
export const INTERMEDIATE_TTL_MS = YEAR;
/** Node certificates (enrolment, re-join, renewal): 24 hours. */
export const NODE_TTL_MS = DAY;
/** The admin identity written at bootstrap (admin.pem): 1 year; it is a command certificate kept by an operator. */
export const ADMIN_TTL_MS = YEAR;
/** A replica's own gRPC server certificate: 24 hours, renewed in process. */
export const SERVER_TTL_MS = DAY;
/** Bootstrap certificates handed to guests (MMDS): minutes. */
export const BOOTSTRAP_TTL_MS = 10 * MINUTE;
/** Leaves from Sign when the request gives no ttl. */
export const DEFAULT_SIGN_TTL_MS = DAY;
/** The longest leaf Sign will issue (it is clamped to the intermediate anyway). */
export const MAX_SIGN_TTL_MS = YEAR;

/** Join tokens: 15 minutes by default, at most 30 days. */
export const DEFAULT_TOKEN_TTL_MS = 15 * MINUTE;
export const MAX_TOKEN_TTL_MS = 30 * DAY;
export const MAX_TOKEN_USES = 10_000;

/** Leaves and intermediates are renewed (or rotated) once this fraction of their life has passed. */
export const RENEW_AT_FRACTION = 2 / 3;
/** CRLs of intermediates say nextUpdate = now + 24 h and are re-signed at half of that. */
export const CRL_VALIDITY_MS = DAY;
export const CRL_REFRESH_FRACTION = 1 / 2;
/** The root CRL, while the root key is online: nextUpdate = now + 7 days, re-signed at half of that. */
export const ROOT_CRL_VALIDITY_MS = 7 * DAY;
/**
 * The last root CRL signed before the root key goes offline: valid for a
 * year (never past the root), as long as the intermediates the root signs;
 * the key has to come back before then to rotate them anyway, and re-signs
 * the root CRL when it does.
 */
export const OFFLINE_ROOT_CRL_VALIDITY_MS = YEAR;
/** Warn when a root CRL nobody here can re-sign has less than this left. */
export const ROOT_CRL_WARNING_MS = 30 * DAY;
/** The maintenance timer looks at everything at least this often. */
export const MAINTENANCE_INTERVAL_MS = HOUR;

/** The instant at which something valid from notBefore to notAfter is due for renewal. */
export function renewalDue(notBefore: Date, notAfter: Date, fraction = RENEW_AT_FRACTION): number {
  const start = notBefore.getTime();
  return start + (notAfter.getTime() - start) * fraction;
}
