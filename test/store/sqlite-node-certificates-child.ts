// Helper for sqlite-node-certificates.test.ts, run as a child process:
//   sqlite-node-certificates-child.ts <path> <inline|thread> <nodes>
// renews nodes node-0 … node-<nodes-1> (UP already) over and over, one write
// in flight per node, and prints "<node id> <serial>" once each
// insertNodeCertificate is acknowledged, until it is killed.
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { sampleCertificate } from './contract.ts';

const [path, writer, count] = process.argv.slice(2);
if (writer !== 'inline' && writer !== 'thread')
  throw new Error('usage: sqlite-node-certificates-child.ts PATH inline|thread NODES');
const store = await openSqliteStore(path, { certificateWriter: writer });
let next = 0;
const renew = async (id: string): Promise<void> => {
  for (;;) {
    const record = sampleCertificate(next++);
    const node = await store.insertNodeCertificate(record, { id, from: ['UP'], to: 'UP', at: new Date() });
    if (node?.certificateSerial !== record.serial) throw new Error(`node ${id} was not moved`);
    process.stdout.write(`${id} ${record.serial}\n`);
  }
};
await Promise.all(Array.from({ length: Number(count) }, (_, i) => renew(`node-${i}`)));
