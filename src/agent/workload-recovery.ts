// Recovery after the node daemon restarts (kill -9 included): the desired
// workloads are started again, those whose owner was revoked while the daemon
// was down are forgotten, and the control plane's reservations for this node
// are made to match what it runs.
import { unary } from '../client/rpc.ts';
import { firstLineOf } from '../errors.ts';
import type { Logger } from '../logging.ts';
import type { RevocationSet } from '../transport/revocation-set.ts';
import type { DesiredState } from '../workloads/desired-state.ts';
import type { EventLog } from '../workloads/event-log.ts';
import { BLOCK_HOLDER_PREFIX } from './workload-blocks.ts';
import type { WorkloadOperations } from './workload-operations.ts';

/** Starts every desired workload again; those whose owner was revoked meanwhile are forgotten. */
export async function restoreDesired(
  desired: DesiredState,
  operations: WorkloadOperations,
  revocations: RevocationSet,
  events: EventLog,
  logger: Logger,
): Promise<void> {
  const { workloads, unreadable } = desired.list();
  for (const damaged of unreadable)
    logger.error({ workload: damaged.key, problem: damaged.problem }, 'a desired workload cannot be read');
  for (const record of workloads) {
    if (record.revocationIds.some((id) => revocations.isRevoked(id))) {
      desired.remove(record.key);
      events.append({
        workload: record.key,
        kind: 'destroyed-by-revocation',
        detail: 'revoked while the daemon was down',
      });
      logger.info(
        { workload: record.key },
        'forgot a workload whose owner was revoked while the daemon was down',
      );
      continue;
    }
    if (await operations.restore(record)) {
      events.append({ workload: record.key, kind: 'restarted', detail: 'the node daemon restarted' });
      logger.info({ workload: record.key }, 'started a desired workload again');
    }
  }
}

/**
 * Makes the control plane's reservations for this node match what it runs:
 * releases those nothing desired needs (a crash between reserve and record,
 * or a release that failed), and handles desired workloads whose reservation
 * is gone (destroyed: the delegate's chain is not kept to reserve with). Block reservations ("block-…") are left alone.
 */
export async function reconcileReservations(operations: WorkloadOperations, logger: Logger): Promise<void> {
  const held = await operations.link.placement((client, target) =>
    unary(client, client.listWorkloadReservations, {}, { target, timeoutMs: 10_000 }),
  );
  const id = (subtree: string, name: string) => `${subtree}//${name}`;
  const desired = new Map(
    [...operations.records.values()].map((record) => [
      id(record.reservation.subtree, record.reservation.name),
      record,
    ]),
  );
  const heldIds = new Set(held.reservations.map((reservation) => id(reservation.subtree, reservation.name)));
  for (const reservation of held.reservations) {
    const key = id(reservation.subtree, reservation.name);
    const unstarted = operations.unstarted.has(`${reservation.subtree}//${reservation.name}`);
    if (
      desired.has(key) ||
      unstarted ||
      operations.reserving.has(key) ||
      reservation.name.startsWith(BLOCK_HOLDER_PREFIX)
    )
      continue;
    if (await operations.release(reservation.subtree, reservation.name))
      logger.info(
        { subtree: reservation.subtree, name: reservation.name },
        'released a reservation nothing uses',
      );
  }
  for (const [key, record] of desired) {
    // An admin's workloads hold nothing; a delegate's chain is not kept, so it cannot be reserved again.
    if (record.ownerKey === '' || heldIds.has(key) || !operations.records.has(record.key)) continue;
    logger.warn(
      { workload: record.key },
      'destroying a workload whose reservation is gone at the control plane',
    );
    await operations
      .destroy(record.key)
      .catch((error: unknown) =>
        logger.error({ workload: record.key, err: firstLineOf(error) }, 'could not destroy it'),
      );
  }
}
