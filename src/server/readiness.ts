// GET /readyz: ready while the server serves (not shutting down) and the
// authority's store answers within two seconds.
import { firstLineOf } from '../errors.ts';

const READINESS_TIMEOUT_MS = 2_000;

/** What readiness asks of the authority: resolves once its store answers a read. */
export interface StoreReachability {
  checkStoreReachable(): Promise<void>;
}

export class Readiness {
  readonly #authority: StoreReachability;
  #serving = true;

  constructor(authority: StoreReachability) {
    this.#authority = authority;
  }

  /** From now on not ready: the server is shutting down. */
  stopServing(): void {
    this.#serving = false;
  }

  /** Null when ready, else the reason (HttpSideSources.readiness). */
  readonly check = async (): Promise<string | null> => {
    if (!this.#serving) return 'shutting down';
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.#authority.checkStoreReachable(),
        new Promise((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error('timed out')), READINESS_TIMEOUT_MS);
        }),
      ]);
      return null;
    } catch (error) {
      return `the store is not reachable (${firstLineOf(error)})`;
    } finally {
      clearTimeout(timer);
    }
  };
}
