// A workload's MAC address, derived from its key so it survives restarts (a
// neighbour's ARP cache and any DHCP-style reservation stay valid). The first
// octet 02 marks it locally administered and unicast, so it can never collide
// with a vendor's address.
import { createHash } from 'node:crypto';

/** `02:xx:xx:xx:xx:xx` from the SHA-256 of the workload key. */
export function macAddressFor(workloadKey: string): string {
  const digest = createHash('sha256').update(`sigil-mac:${workloadKey}`).digest();
  const octets = [0x02, ...digest.subarray(0, 5)];
  return octets.map((octet) => octet.toString(16).padStart(2, '0')).join(':');
}
