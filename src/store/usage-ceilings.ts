// Usage ceilings: which ceilings a reservation is checked against, the sums
// the stores read for them (USAGE_SUMS, in both dialects) and the first
// resource a reservation would exceed.
import { invalid } from '../errors.ts';
import { checkCount } from './checks.ts';
import { cpusOf, intOf, type Row } from './rows.ts';
import type { UsageCeiling, UsageReservation, UsageTotals } from './store.ts';
import { checkSubtree, isAtOrUnder } from './subtrees.ts';

/**
 * The ceilings checked, with the reservation they are checked for. Every
 * ceiling must be at or above the reservation's subtree key: a ceiling
 * elsewhere would not count it, and the locks that make reserveUsage atomic
 * assume one subtree.
 */
export function checkCeilings(
  reservation: UsageReservation,
  ceilings: readonly UsageCeiling[],
): readonly UsageCeiling[] {
  if (!Array.isArray(ceilings)) throw invalid('ceilings must be an array');
  for (const ceiling of ceilings) {
    checkSubtree(ceiling.subtree, 'ceiling subtree');
    checkCount(ceiling.workloads, 'ceiling workloads');
    checkCount(ceiling.memoryMiB, 'ceiling memoryMiB');
    checkCount(ceiling.blockMiB, 'ceiling blockMiB');
    if (!isAtOrUnder(reservation.subtree, ceiling.subtree))
      throw invalid(
        `ceiling ${ceiling.subtree} is not at or above the reservation's subtree ${reservation.subtree}`,
      );
  }
  return ceilings;
}

/** Sums at or under a ceiling's subtree key, before the reservation. */
export interface CeilingSums {
  readonly workloads: number;
  readonly memoryMiB: number;
  readonly blockMiB: number;
}

/** The first resource of `ceiling` the reservation would exceed, or null when it fits. */
export function exceededResource(
  ceiling: UsageCeiling,
  sums: CeilingSums,
  reservation: UsageReservation,
): { resource: 'workloads' | 'memoryMiB' | 'blockMiB'; used: number; limit: number } | null {
  for (const resource of ['workloads', 'memoryMiB', 'blockMiB'] as const)
    if (sums[resource] + reservation[resource] > ceiling[resource])
      return { resource, used: sums[resource], limit: ceiling[resource] };
  return null;
}

/**
 * The select list of the sums over usage_reservations (both dialects): sum()
 * of nothing is NULL, hence coalesce. PostgreSQL's sum of BIGINT is NUMERIC
 * and count() BIGINT, both returned as strings; intOf reads either.
 */
export const USAGE_SUMS = `coalesce(sum(workloads), 0) AS workloads,
  coalesce(sum(memory_mib), 0) AS memory_mib,
  coalesce(sum(block_mib), 0) AS block_mib,
  count(*) AS reservations`;

export function ceilingSumsFromRow(row: Row): CeilingSums {
  return {
    workloads: intOf(row.workloads, 'usage workloads'),
    memoryMiB: intOf(row.memory_mib, 'usage memoryMiB'),
    blockMiB: intOf(row.block_mib, 'usage blockMiB'),
  };
}

/** A row of USAGE_SUMS plus `cpus`, a JSON array of the distinct CPU ids (or NULL for none). */
export function usageTotalsFromRow(row: Row): UsageTotals {
  const cpus = row.cpus === null || row.cpus === undefined ? [] : cpusOf(row.cpus, 'usage cpus');
  return {
    ...ceilingSumsFromRow(row),
    cpus: [...new Set(cpus)].sort((a, b) => a - b),
    reservations: intOf(row.reservations, 'usage reservations'),
  };
}
