// Waiting for something that happens asynchronously (a log line, an event
// crossing replicas, a server noticing a closed connection) without
// assuming how long it takes: poll until it holds, with a generous timeout
// that only turns a hang into a failure.

/** Resolves with what `probe` returns once it is neither undefined nor false; rejects after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
