// The first line a preamble relay (metadata-relay-program.ts) writes on each
// connection it forwards: `SIGIL-SOURCE <address>`, the TCP peer it saw in
// the bridges' namespace. The daemon's side reads it here before anything
// else; a connection without a well-formed line in time is closed unanswered.
import type { Socket } from 'node:net';

export const RELAY_PREAMBLE = 'SIGIL-SOURCE ';
const MAX_PREAMBLE_BYTES = 64;
const PREAMBLE_TIMEOUT_MS = 2000;
const RELAYED_ADDRESS = /^[0-9a-fA-F.:]{2,45}$/;

/** An address with IPv4-mapped IPv6 written as IPv4. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/**
 * Reads the preamble of `socket`, then calls `onSource` with the address, the
 * socket paused and what followed the line put back, for the caller to take on.
 */
export function readRelayPreamble(socket: Socket, onSource: (source: string) => void): void {
  let buffered = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), PREAMBLE_TIMEOUT_MS);
  const onData = (chunk: Buffer): void => {
    buffered = Buffer.concat([buffered, chunk]);
    const end = buffered.indexOf(0x0a);
    if (end < 0) {
      if (buffered.length > MAX_PREAMBLE_BYTES) socket.destroy();
      return;
    }
    socket.off('data', onData);
    clearTimeout(timer);
    const line = buffered.subarray(0, end).toString('latin1');
    const address = line.startsWith(RELAY_PREAMBLE) ? line.slice(RELAY_PREAMBLE.length) : '';
    if (end > MAX_PREAMBLE_BYTES || !RELAYED_ADDRESS.test(address)) {
      socket.destroy();
      return;
    }
    socket.pause();
    const rest = buffered.subarray(end + 1);
    if (rest.length > 0) socket.unshift(rest);
    onSource(plainAddress(address));
  };
  socket.on('data', onData);
  socket.on('error', () => socket.destroy());
  socket.on('close', () => clearTimeout(timer));
}
