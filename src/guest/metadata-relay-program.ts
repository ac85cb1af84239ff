// The metadata relay: a small program the daemon runs inside the network
// namespace of its workload bridges (metadata-relay.ts starts it there with
// nsenter). It listens on 169.254.169.254:80 and forwards every connection
// to the daemon's metadata socket, first writing one line with the address
// the connection came from — the one fact only this side of the namespace
// sees, and the one the service picks the workload's document by.
//
// It imports nothing of sigil's (it runs as its own process), prints "ready
// <port>" once listening, and exits when its standard input closes, so it
// never outlives the daemon that started it.
//
// argv: <listen host> <listen port> <daemon socket path>
import { createConnection, createServer } from 'node:net';

const MAX_CONNECTIONS = 256;
const IDLE_MS = 30_000;

const [host, portText, socketPath] = process.argv.slice(2);
const port = Number(portText);
if (!host || !socketPath || !Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write('usage: metadata-relay-program <host> <port> <socket>\n');
  process.exit(2);
}

// Half-open: a client such as nc may close its side once the request is sent
// and still wait for the answer.
const server = createServer({ allowHalfOpen: true }, (client) => {
  const peer = client.remoteAddress ?? '';
  const source = peer.startsWith('::ffff:') ? peer.slice(7) : peer;
  const upstream = createConnection(socketPath);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.setTimeout(IDLE_MS, close);
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', () => upstream.destroy());
  // The daemon's answer ends the exchange: flush it to the client, then close.
  upstream.on('close', () => client.end());
  upstream.write(`SIGIL-SOURCE ${source}\n`);
  client.pipe(upstream);
  upstream.pipe(client, { end: false });
});
server.maxConnections = MAX_CONNECTIONS;
server.on('error', (error) => {
  process.stderr.write(`metadata relay: ${error.message}\n`);
  process.exit(1);
});
server.listen(port, host, () => {
  const bound = server.address();
  process.stdout.write(`ready ${typeof bound === 'object' && bound ? bound.port : port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
