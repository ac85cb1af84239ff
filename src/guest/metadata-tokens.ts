// Firecracker's MMDS session tokens (IMDSv2-style): a guest first asks
// `PUT /latest/api/token` with `X-metadata-token-ttl-seconds: N` (1 to
// 21,600) and then sends the token as `X-metadata-token` with every GET.
// A token is bound to the workload that asked for it: another workload's
// token is no token. Tokens are random, kept only as SHA-256 digests, and
// bounded in number per workload.
import { createHash, randomBytes } from 'node:crypto';
import { invalid, SigilError } from '../errors.ts';

export const MAX_TOKEN_TTL_SECONDS = 21_600;
export const MAX_TOKENS_PER_WORKLOAD = 64;

const digest = (token: string): string => createHash('sha256').update(token).digest('hex');

/** The TTL header's value as seconds; invalid() unless a whole number from 1 to 21,600. */
export function parseTokenTtl(header: string | undefined): number {
  if (header === undefined) throw invalid('X-metadata-token-ttl-seconds is required');
  if (!/^[0-9]{1,6}$/.test(header))
    throw invalid('X-metadata-token-ttl-seconds must be a whole number of seconds');
  const seconds = Number(header);
  if (seconds < 1 || seconds > MAX_TOKEN_TTL_SECONDS)
    throw invalid(`X-metadata-token-ttl-seconds must be from 1 to ${MAX_TOKEN_TTL_SECONDS}, got ${seconds}`);
  return seconds;
}

export class MetadataTokens {
  /** Workload → token digest → expiry (ms). */
  readonly #tokens = new Map<string, Map<string, number>>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** A new token for `workload`, valid for `ttlSeconds`. */
  issue(workload: string, ttlSeconds: number): string {
    const now = this.#now();
    const held = this.#tokens.get(workload) ?? new Map<string, number>();
    for (const [key, expiry] of held) if (expiry <= now) held.delete(key);
    if (held.size >= MAX_TOKENS_PER_WORKLOAD)
      throw new SigilError(
        'resource_exhausted',
        `at most ${MAX_TOKENS_PER_WORKLOAD} live metadata tokens per workload`,
      );
    const token = randomBytes(32).toString('base64url');
    held.set(digest(token), now + ttlSeconds * 1000);
    this.#tokens.set(workload, held);
    return token;
  }

  /** Whether `token` was issued to `workload` and has not expired. */
  valid(workload: string, token: string | undefined): boolean {
    if (token === undefined || token.length === 0 || token.length > 256) return false;
    const expiry = this.#tokens.get(workload)?.get(digest(token));
    return expiry !== undefined && expiry > this.#now();
  }

  /** Forgets every token of `workload` (it was destroyed). */
  forget(workload: string): void {
    this.#tokens.delete(workload);
  }
}
