// Listening with a node:http(s) server the way sigil's small HTTP endpoints
// do (the HTTP side, the standalone metrics endpoint): resolve once bound,
// remember open sockets, and close by dropping them rather than waiting for
// keep-alive clients to leave.
import type http from 'node:http';
import type https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { isIP } from 'node:net';

/** Whether `host` names a loopback address (plain-HTTP endpoints bind nothing else). */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

export interface BoundListener {
  readonly port: number;
  /** "host:port" with IPv6 hosts in brackets, for URLs. */
  readonly authority: string;
  /** Stop listening and drop open connections (idempotent). */
  close(): Promise<void>;
}

/** Listens on host:port (0: any free port) and resolves once bound. */
export async function listenTracked(
  server: http.Server | https.Server,
  host: string,
  port: number,
): Promise<BoundListener> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  let closing: Promise<void> | null = null;
  return {
    port: bound,
    authority: `${isIP(host) === 6 ? `[${host}]` : host}:${bound}`,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        for (const socket of sockets) socket.destroy();
      });
      return closing;
    },
  };
}
