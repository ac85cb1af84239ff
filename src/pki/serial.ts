// One serial format everywhere: lower-case hex, no colons, no leading zeros
// (how the store keys certificates, the CLI shows them and CRLs list them).
import { invalid } from '../errors.ts';

/** RFC 5280 §4.1.2.2: a serial is at most 20 octets. */
export const MAX_SERIAL_BYTES = 20;

/** The canonical text of a serial read from a certificate (Node's upper-case, maybe colon-separated, hex). */
export function canonicalSerial(hex: string): string {
  return hex
    .replaceAll(':', '')
    .toLowerCase()
    .replace(/^0+(?=.)/, '');
}

/** A serial a person typed (hex; colons, `0x` and leading zeros allowed), canonical, or a clear error. */
export function parseSerial(text: string): string {
  const plain = text.trim().toLowerCase().replace(/^0x/, '').replaceAll(':', '');
  const canonical = plain.replace(/^0+(?=.)/, '');
  if (!/^[0-9a-f]+$/.test(plain) || canonical.length > 2 * MAX_SERIAL_BYTES) {
    const shown = text.length > 48 ? `${text.slice(0, 48)}…` : text;
    throw invalid(
      `invalid serial ${JSON.stringify(shown)}: it is not a certificate serial (hex, colons and 0x allowed, at most ${MAX_SERIAL_BYTES} bytes)`,
    );
  }
  return canonical;
}
