// Subtree revocation across replicas: two replicas on one PostgreSQL store.
// Carol's chain (admin → Alice through replica A, Alice → Carol offline) is
// admitted on replica B; Alice revokes Carol on replica A with a certificate
// the control plane never issued, and Carol's live session on B ends, as does
// the session of Carol's own sub-delegate beneath her. The deployment's
// policy OID is set at A's bootstrap; B, joining, serves the same one.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { RunningServer } from '../../src/server/start-server.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp-dir.ts';
import { Delegates, policy } from './delegation-fixtures.ts';
import { adminJoinToken, call, startTestServer, statusName } from './helpers.ts';

const skip = postgresUnavailable() ?? undefined;
const POLICY_OID = '1.3.6.1.4.1.55555.7.3';

describe('delegation across replicas on PostgreSQL', { skip }, () => {
  let postgres: TestPostgres;
  const first = join(tempDir(), 'a');
  const second = join(tempDir(), 'b');
  const running: RunningServer[] = [];
  let onA: Delegates;
  let onB: Delegates;

  before(async () => {
    postgres = await startPostgres();
    const url = await postgres.createDatabase();
    const a = await startTestServer({ dataDir: first, store: url, replicaId: 'a', policyOid: POLICY_OID });
    running.push(a);
    const token = await adminJoinToken(a.address, first, 'replica b', true);
    const b = await startTestServer({ dataDir: second, store: url, replicaId: 'b', join: token });
    running.push(b);
    assert.equal(b.authority.policyOid.text, POLICY_OID, 'the joining replica reads the OID from the store');
    onA = new Delegates(a.address, first, a.authority.trustDomain, a.authority.policyOid);
    // B's clients trust the same roots; the admin identity lives in A's data directory.
    onB = new Delegates(b.address, first, b.authority.trustDomain, b.authority.policyOid);
  });

  after(async () => {
    onA?.close();
    onB?.close();
    for (const server of running.reverse()) await server.close(1000);
    await postgres?.stop();
  });

  test('Alice revokes Carol (made offline) on replica A; Carol and her sub-delegate lose their sessions on B', async () => {
    const alice = await onA.adminDelegates(
      'alice',
      policy('info,create,delegate,revoke,issue', { workloads: 4, cpus: [0] }),
    );
    const carol = onA.subDelegate(alice, 'carol', policy('info,delegate', { workloads: 2 }));
    const erin = onA.subDelegate(carol, 'erin', policy('info', { workloads: 1 }));

    const carolOnB = onB.as(carol).delegation;
    const erinOnB = onB.as(erin).delegation;
    assert.equal(
      (await call(carolOnB, carolOnB.getDelegationStatus, {})).spiffeId,
      `spiffe://carol.alice.d.${onB.trustDomain}`,
    );
    await call(erinOnB, erinOnB.getDelegationStatus, {});

    const aliceOnA = onA.as(alice).delegation;
    const revoked = await call(aliceOnA, aliceOnA.revokeDelegated, {
      certificate: carol.ca,
      chain: [alice.ca, ...alice.above],
      reason: 'keyCompromise',
    });
    assert.equal(revoked.alreadyRevoked, false);

    for (const [who, client] of [
      ['carol', carolOnB],
      ['erin', erinOnB],
    ] as const) {
      const error = await eventually(`${who}'s session on replica B to end`, async () => {
        const failure = await failureOf(call(client, client.getDelegationStatus, {}));
        return failure.code === grpc.status.UNAVAILABLE || failure.code === grpc.status.PERMISSION_DENIED
          ? failure
          : undefined;
      });
      assert.ok(error, `${who}: ${statusName(error.code)}`);
    }
    // A fresh connection on B with Carol's chain is refused at admission.
    const again = onB.as(carol).delegation;
    const error = await failureOf(call(again, again.getDelegationStatus, {}));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED, error.details);
    assert.match(error.details, /revoked/);
    // Alice herself is untouched.
    assert.equal(
      (await call(aliceOnA, aliceOnA.getDelegationStatus, {})).spiffeId,
      `spiffe://alice.d.${onA.trustDomain}`,
    );
  });
});
