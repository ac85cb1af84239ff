// Workload identity at the authority on a real PostgreSQL: the shared suite
// (workload-identity-suite.ts), one fresh database per test. Skips, saying
// why, without PostgreSQL (fails instead under SIGIL_CI=1).
import { after } from 'node:test';
import { openPostgresStore } from '../../src/store/postgres.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { workloadIdentitySuite } from './workload-identity-suite.ts';

const skip = postgresUnavailable() ?? undefined;
let started: Promise<TestPostgres> | undefined;
after(async () => {
  await (await started)?.stop();
});

workloadIdentitySuite(
  'PostgreSQL',
  async () => {
    started ??= startPostgres();
    const store = await openPostgresStore(await (await started).createDatabase());
    await store.migrate();
    return { store, close: () => store.close() };
  },
  skip,
);
