// Helper for sqlite-writer.test.ts, run as a child process:
//   sqlite-writer-child.ts <path> <inline|thread>
// keeps 32 certificate inserts in flight on the store at <path> (migrated
// already) and prints each serial once its insert is acknowledged, until it
// is killed.
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { sampleCertificate } from './contract.ts';

const [path, writer] = process.argv.slice(2);
if (writer !== 'inline' && writer !== 'thread')
  throw new Error('usage: sqlite-writer-child.ts PATH inline|thread');
const store = await openSqliteStore(path, { certificateWriter: writer });
let next = 0;
const writeOne = async (): Promise<void> => {
  for (;;) {
    const record = sampleCertificate(next++);
    await store.insertCertificate(record);
    process.stdout.write(`${record.serial}\n`);
  }
};
await Promise.all(Array.from({ length: 32 }, writeOne));
