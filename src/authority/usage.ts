// Resource accounting over delegation subtrees: the one place that decides
// what a reservation is checked against. A reservation is charged to the
// caller's subtree key (delegation-chain.ts), and every delegation above it counts it too: Alice's two
// workloads are shared by Carol and Dan, whichever of them holds them. The
// store keeps the reservations and applies the ceilings atomically (across
// replicas); this module computes the ceilings from the verified chain.
import { invalid, SigilError } from '../errors.ts';
import type { Limits } from '../pki/policy-extension.ts';
import type { UsageCeiling } from '../store/store.ts';

/** One level of a verified delegation chain: its subtree key and the limits its own certificate carries. */
export interface ChainLevel {
  readonly subtree: string;
  readonly limits: Limits | null;
}

export interface ReservationRequest {
  readonly holder: string;
  readonly workloads: number;
  readonly cpus: readonly number[];
  readonly memoryMiB: number;
  readonly blockMiB: number;
}

const HOLDER = /^[A-Za-z0-9._:-]{1,128}$/;

const denied = (message: string): SigilError => new SigilError('permission_denied', message);

/** Checks the request's shape and that its cpus are among those the effective policy allows. */
export function checkReservation(request: ReservationRequest, effective: Limits | null): void {
  if (!HOLDER.test(request.holder)) {
    throw invalid('holder must be 1 to 128 letters, digits, ".", "_", ":" or "-"');
  }
  for (const [what, value] of [
    ['workloads', request.workloads],
    ['memory_mib', request.memoryMiB],
    ['block_mib', request.blockMiB],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${what} must be a whole number`);
  }
  if (effective === null) throw denied('this identity holds no resources (a command certificate)');
  const allowed = new Set(effective.cpus);
  const outside = request.cpus.filter((cpu) => !allowed.has(cpu));
  if (outside.length > 0) {
    throw denied(`cpu ${outside.join(', ')} is not among the cpus this delegation may use`);
  }
}

/**
 * The ceilings a reservation must fit under: one per level of the chain, at
 * that level's SPIFFE ID with that level's own limits. Levels sharing a
 * SPIFFE ID (a delegate's own identity leaf and its delegation) keep the
 * smaller figure. The topmost ceiling comes first.
 */
export function ceilingsFor(levels: readonly ChainLevel[]): UsageCeiling[] {
  const byId = new Map<string, UsageCeiling>();
  for (const level of levels) {
    if (level.limits === null) continue;
    const mine: UsageCeiling = {
      subtree: level.subtree,
      workloads: level.limits.workloads,
      memoryMiB: level.limits.memoryMiB,
      blockMiB: level.limits.blockMiB,
    };
    const seen = byId.get(level.subtree);
    byId.set(
      level.subtree,
      seen
        ? {
            subtree: level.subtree,
            workloads: Math.min(seen.workloads, mine.workloads),
            memoryMiB: Math.min(seen.memoryMiB, mine.memoryMiB),
            blockMiB: Math.min(seen.blockMiB, mine.blockMiB),
          }
        : mine,
    );
  }
  return [...byId.values()].sort((a, b) => a.subtree.length - b.subtree.length);
}

/**
 * The refusal for an exceeded ceiling. Figures are shown only for the
 * caller's own level: an ancestor's total includes siblings' usage, which
 * the caller must not learn beyond the one bit "it does not fit".
 */
export function exceededMessage(
  resource: string,
  used: number,
  limit: number,
  level: string,
  callerId: string,
): string {
  if (level === callerId) {
    return `reserving this would exceed your delegation's ${resource} limit (${used} in use of ${limit})`;
  }
  return `reserving this would exceed the ${resource} limit of a delegation above yours`;
}
