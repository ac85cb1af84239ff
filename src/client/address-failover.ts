// Calling a control plane that has several addresses (replicas): each call
// starts with the address that answered last and moves on only while the
// failure says another address may do better (nothing answered, or not in
// time). A refusal is an answer: it is thrown at once.
import { RpcError, STATUS_DEADLINE_EXCEEDED, STATUS_UNAVAILABLE } from './rpc.ts';

/** True when another address (or a later attempt) may do better. */
export function isUnreachable(error: unknown): boolean {
  return (
    error instanceof RpcError &&
    (error.status === STATUS_UNAVAILABLE || error.status === STATUS_DEADLINE_EXCEEDED)
  );
}

export class AddressFailover {
  #preferred = 0;

  /** The address attempt `attempt` (0, 1, …) goes to, starting with the preferred one. */
  pick(addresses: readonly string[], attempt: number): string {
    return addresses[(this.#preferred + attempt) % addresses.length];
  }

  /** `work` on each address in turn until one answers; its result, or the last unreachable failure. */
  async tryEach<T>(
    addresses: readonly string[],
    work: (target: string) => Promise<T>,
    noAddress: () => unknown = () => new RpcError(STATUS_UNAVAILABLE, 'no control-plane address is known'),
  ): Promise<T> {
    let lastError: unknown = addresses.length === 0 ? noAddress() : undefined;
    for (let i = 0; i < addresses.length; i++) {
      const index = (this.#preferred + i) % addresses.length;
      try {
        const result = await work(addresses[index]);
        this.#preferred = index;
        return result;
      } catch (error) {
        lastError = error;
        if (!isUnreachable(error)) throw error;
      }
    }
    throw lastError;
  }
}
