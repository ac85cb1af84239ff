// Helper for sqlite.test.ts, run two ways:
// - as a worker thread (workerData set): opens its own store object on the
//   shared file, waits at a barrier with its siblings, then registers nodes,
//   so the registrations of several threads really race;
// - as a child process (`write <path>`): inserts certificates forever and
//   prints each serial once its insert is acknowledged, until it is killed.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { sampleCertificate, sampleNode } from './contract.ts';

interface RaceJob {
  readonly path: string;
  readonly tokenId: string;
  readonly nodeIds: readonly string[];
  readonly barrier: SharedArrayBuffer;
  readonly parties: number;
}

if (!isMainThread) {
  const job = workerData as RaceJob;
  const store = await openSqliteStore(job.path, { busyTimeoutMs: 30_000 });
  const arrived = new Int32Array(job.barrier);
  Atomics.add(arrived, 0, 1);
  Atomics.notify(arrived, 0);
  while (Atomics.load(arrived, 0) < job.parties) Atomics.wait(arrived, 0, Atomics.load(arrived, 0), 1000);
  const outcomes: string[] = [];
  for (const id of job.nodeIds) {
    const result = await store.registerNode(
      job.tokenId,
      sampleNode(id, job.tokenId),
      new Date(Date.UTC(2030, 0, 1, 0, 2)),
    );
    outcomes.push(result.outcome);
  }
  await store.close();
  parentPort?.postMessage(outcomes);
} else if (process.argv[2] === 'write') {
  const store = await openSqliteStore(process.argv[3]);
  for (let n = 0; ; n++) {
    const record = sampleCertificate(n);
    await store.insertCertificate(record);
    process.stdout.write(`${record.serial}\n`);
  }
}
