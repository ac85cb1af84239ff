// SIGIL_CI=1, set by .ci/run, says every tool .ci/run installs is present:
// PostgreSQL, openssl, Go, python3 with cryptography and grpcio. A test whose
// tool is missing then fails instead of skipping, so CI cannot pass by
// skipping what it was meant to run. Without it (a developer's machine) such
// tests skip and print why.

/** Whether every tool .ci/run installs must be present (SIGIL_CI=1). */
export const inCi = process.env.SIGIL_CI === '1';

/** Throws under SIGIL_CI=1: `reason` names a tool .ci/run installs, so its absence is a failure there. */
export function failInCi(reason: string): void {
  if (inCi) throw new Error(`${reason} (.ci/run installs it, and SIGIL_CI=1 says it ran)`);
}
