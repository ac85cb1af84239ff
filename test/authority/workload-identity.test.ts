// Workload identity at the authority on SQLite: the shared suite
// (workload-identity-suite.ts), one fresh store per test.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { tempDir } from '../support/temp-dir.ts';
import { workloadIdentitySuite } from './workload-identity-suite.ts';

workloadIdentitySuite('SQLite', async () => {
  const dir = tempDir('sigil-workload-identity-');
  const store = await openSqliteStore(join(dir, 'sigil.db'));
  await store.migrate();
  return {
    store,
    close: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
