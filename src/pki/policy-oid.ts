// The OID sigil's policy extension lives under: a deployment setting. Kept
// apart from the extension codec so the CLI can check --policy-oid without
// loading ASN.1.
import { invalid } from '../errors.ts';
import { oid } from './der.ts';

/**
 * The OID the extension is written and found under. It is a deployment
 * setting, fixed when the deployment is bootstrapped (`sigil server
 * --policy-oid`), because a project cannot invent an enterprise number: an
 * organisation with an IANA Private Enterprise Number uses an arc of its own
 * (`1.3.6.1.4.1.<PEN>.…`). Every arc must fit in 28 bits, RFC 5280's minimum,
 * so Go's crypto/x509, Python cryptography and RustCrypto parse the
 * certificates (they refuse the 128-bit arcs of 2.25 UUID OIDs).
 */
export interface PolicyOid {
  /** Dotted decimal, e.g. "2.999.7445.1". */
  readonly text: string;
  /** The DER OBJECT IDENTIFIER (tag, length, contents): extensions are matched on these bytes. */
  readonly der: Buffer;
}

/**
 * The default: under 2.999, the arc ITU-T X.660 / ISO/IEC 9834-1 reserve for
 * examples and that will never be assigned to anyone, so it cannot collide
 * with a registered extension; 7445 spells SIGL on a phone keypad. Good for
 * a deployment whose chains stay within its own trust; an organisation that
 * shows its certificates to others sets its own arc at bootstrap.
 */
export const DEFAULT_POLICY_OID_TEXT = '2.999.7445.1';

/** Largest arc accepted: 2^28 - 1 (RFC 5280 §4.1.2.4 asks implementations to handle 28 bits). */
export const MAX_OID_ARC = 2 ** 28 - 1;

/** A policy OID from its dotted text; refuses malformed text, fewer than three arcs, and arcs of 28 bits or more. */
export function parsePolicyOid(text: string): PolicyOid {
  const fail = (why: string) =>
    invalid(`invalid policy OID ${JSON.stringify(String(text).slice(0, 80))}: ${why}`);
  if (typeof text !== 'string' || !/^\d+(\.\d+)+$/.test(text)) {
    throw fail('give dotted decimal arcs, e.g. 1.3.6.1.4.1.<your PEN>.1');
  }
  const arcs = text.split('.');
  if (arcs.some((arc) => arc.length > 1 && arc.startsWith('0'))) throw fail('arcs have no leading zeros');
  const values = arcs.map(Number);
  if (values.length < 3) throw fail('use at least three arcs (an arc of your own, not a top-level one)');
  if (values.some((arc) => !Number.isSafeInteger(arc) || arc > MAX_OID_ARC)) {
    throw fail(`every arc must be below 2^28 (${MAX_OID_ARC + 1}) so every X.509 stack can parse it`);
  }
  if (values[0] > 2) throw fail('the first arc is 0, 1 or 2');
  if (values[0] < 2 && values[1] > 39) throw fail('under 0 and 1 the second arc is at most 39');
  return Object.freeze({ text, der: oid(text) });
}

export const DEFAULT_POLICY_OID: PolicyOid = parsePolicyOid(DEFAULT_POLICY_OID_TEXT);
