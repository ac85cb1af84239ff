// Before `sigil server` touches its data directory it makes sure it will be
// able to listen: a busy port, an address this host does not have, or a
// privileged port must fail the start with nothing created or changed (a
// bootstrap followed by a failed listen used to leave a bootstrapped data
// directory behind, and the admin banner was never shown again).
//
// The check binds each address with a plain TCP listener and closes it at
// once; the real listeners bind the same addresses a moment later. Should
// another process take a port in between, the start still fails cleanly:
// the bootstrap's admin identity is confirmed as delivered only once both
// ports listen (server/start-server.ts), so the next start hands out a new one
// and shows the banner again.
import net from 'node:net';
import { firstLineOf, SigilError } from '../errors.ts';
import { formatAddress, type ListenAddress } from './listen-address.ts';

function why(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'EADDRINUSE':
      return 'the address is already in use (EADDRINUSE: another sigil server, or another program)';
    case 'EADDRNOTAVAIL':
      return 'this host has no such address (EADDRNOTAVAIL)';
    case 'EACCES':
      return 'permission denied (EACCES: ports below 1024 need privileges)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'the host name does not resolve';
    default:
      return firstLineOf(error);
  }
}

/** Resolves when `address` can be listened on now; else a SigilError naming the flag and the cause. */
export function checkListenable(address: ListenAddress, flag: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        new SigilError(
          'failed_precondition',
          `cannot listen on ${formatAddress(address.host, address.port)} (${flag}): ${why(error)}`,
          { cause: error },
        ),
      );
    });
    probe.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      probe.close(() => resolve());
    });
  });
}
