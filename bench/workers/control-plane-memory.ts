// The control plane in a process of its own, for bench/peer-limits.ts: a
// fresh data directory, free ports, and its memory after GC on request.
// Started with --expose-gc through child_process.fork; messages:
//   → { type: 'memory' }  ← { type: 'memory', rss, heapUsed, heapTotal } (bytes)
//   → { type: 'stop' }    (closes the server and exits)
//   ← { type: 'ready', address, dataDir } once it serves
import { startServer } from '../../src/server/start-server.ts';

const dataDir = process.argv[2];
if (dataDir === undefined || process.send === undefined) {
  throw new Error('usage: fork(control-plane-memory.ts, [dataDir], { execArgv: ["--expose-gc"] })');
}
const send = process.send.bind(process);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

const running = await startServer({
  dataDir,
  listen: '127.0.0.1:0',
  httpListen: '127.0.0.1:0',
  timers: false,
});
send({ type: 'ready', address: running.address, dataDir });
process.on('message', (message: { type: string }) => {
  if (message.type === 'memory') {
    for (let i = 0; i < 4; i++) gc();
    const { rss, heapUsed, heapTotal } = process.memoryUsage();
    send({ type: 'memory', rss, heapUsed, heapTotal });
  } else if (message.type === 'stop') {
    void running.close(0).then(() => process.exit(0));
  }
});
