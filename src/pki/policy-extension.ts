// The sigil policy extension: what a certificate holder may do (permission
// bits) and how much it may use (resource limits), carried in one
// non-critical X.509 extension, in the spirit of Albatross's command and
// delegation certificates. This module is the whole wire format: the OID,
// the DER value, the encoder, the fail-closed decoder, finding the extension
// in a certificate, and the two set operations delegation needs (is a child
// policy a narrowing of its parent's; what is the effective policy of a
// chain). Pure: no I/O.
//
//   PolicyValue ::= SEQUENCE {
//     version      INTEGER,              -- 1
//     permissions  BIT STRING {          -- named bits, DER (trailing zeros dropped)
//       info(0), create(1), destroy(2), console(3), log(4), stats(5),
//       block(6), delegate(7), revoke(8), issue(9), admin(10) },
//     limits       Limits OPTIONAL }     -- absent: no resources (a command certificate)
//
//   Limits ::= SEQUENCE {
//     workloads        INTEGER,              -- 0 .. 2^53-1
//     cpus             SET OF INTEGER,       -- cpu ids 0 .. 4095, DER order, no duplicates
//     memoryMiB        INTEGER,              -- 0 .. 2^53-1
//     blockMiB         INTEGER,              -- 0 .. 2^53-1
//     bridges          SEQUENCE OF UTF8String, -- at most 64 names of 1-64 [A-Za-z0-9._-],
//                                            -- sorted and unique (a set in canonical order)
//     issuancePerHour  INTEGER }             -- 0 .. 2^53-1
//
// Extending it. The version says which members exist. A reader refuses a
// version it does not know and any member it does not know, even an
// optional one at the end: a member added later may well be a restriction,
// and ignoring a restriction is failing open. So a new member comes with a
// version bump (version 2 = version 1 plus the new OPTIONAL members at the
// end), new readers keep reading version 1 (old certificates stay valid),
// and writers keep emitting version 1 whenever a policy uses nothing newer,
// so that old readers still accept every certificate they can understand.
//
// Decoding is strict DER: after the structure is read and every value is
// range-checked, the policy is re-encoded and must reproduce the input byte
// for byte, which refuses every non-canonical form (long or indefinite
// lengths, padded integers, unsorted sets, trailing zero bits) that the
// targeted checks do not already name. Every failure is a SigilError
// (invalid_argument); nothing else escapes.
//
// Locating the extension. OIDs are compared by their DER bytes, never by
// dotted text: asn1js decodes large arcs wrongly, and Node's X509Certificate
// does not expose extensions at all. So the certificate is parsed with
// @peculiar/asn1-schema against a copy of the RFC 5280 Certificate schema
// whose Extension keeps extnID as the raw encoded element, and that element
// is compared byte for byte with the deployment's OID (PolicyOid.der).

import {
  AsnArray,
  AsnConvert,
  AsnProp,
  AsnPropTypes,
  AsnType,
  AsnTypeTypes,
  OctetString,
} from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Name, SubjectPublicKeyInfo, Validity, Version } from '@peculiar/asn1-x509';
import * as asn1js from 'asn1js';
import { invalid, SigilError } from '../errors.ts';
import { integer, namedBits, sequence, setOf, utf8String } from './der.ts';

// --- identity -----------------------------------------------------------------

import type { PolicyOid } from './policy-oid.ts';

export type { PolicyOid } from './policy-oid.ts';
export { DEFAULT_POLICY_OID, DEFAULT_POLICY_OID_TEXT, MAX_OID_ARC, parsePolicyOid } from './policy-oid.ts';

/** The version this code writes and the only one it reads. */
export const POLICY_VERSION = 1;

// --- permissions --------------------------------------------------------------

/** Permission names in bit order: PERMISSIONS[i] is bit i of the BIT STRING. */
export const PERMISSIONS = Object.freeze([
  'info', // read status of what lives in one's subtree
  'create', // create workloads
  'destroy', // destroy workloads
  'console', // attach to / read a workload's console
  'log', // read the event log
  'stats', // read statistics
  'block', // create and destroy block devices
  'delegate', // issue delegation (sub-CA) certificates within one's own policy
  'revoke', // revoke certificates in one's subtree
  'issue', // issue leaf certificates inside one's own subtree
  'admin', // operator-level actions on the whole deployment
] as const);

export type Permission = (typeof PERMISSIONS)[number];

const PERMISSION_BIT: ReadonlyMap<string, number> = new Map(PERMISSIONS.map((name, bit) => [name, bit]));

export function isPermission(name: string): name is Permission {
  return PERMISSION_BIT.has(name);
}

/**
 * "info,create" → {info, create}. Whitespace around names is ignored; an
 * empty string is the empty set; unknown names and empty items are refused.
 */
export function parsePermissions(text: string): ReadonlySet<Permission> {
  const out = new Set<Permission>();
  if (text.trim() === '') return out;
  for (const item of text.split(',')) {
    const name = item.trim();
    if (name === '') throw invalid(`permissions "${text}" contain an empty item`);
    if (!isPermission(name)) {
      throw invalid(`unknown permission "${name}" (known: ${PERMISSIONS.join(', ')})`);
    }
    out.add(name);
  }
  return sortedPermissions(out);
}

/** A set in bit order, so iteration (and anything printed from it) is stable. */
function sortedPermissions(permissions: Iterable<Permission>): Set<Permission> {
  const wanted = new Set(permissions);
  return new Set(PERMISSIONS.filter((p) => wanted.has(p)));
}

// --- the model ----------------------------------------------------------------

export interface Limits {
  readonly workloads: number;
  /** CPU ids; decoded and intersected policies have them sorted ascending and unique. */
  readonly cpus: readonly number[];
  readonly memoryMiB: number;
  readonly blockMiB: number;
  /** Bridge names; decoded and intersected policies have them sorted and unique. */
  readonly bridges: readonly string[];
  readonly issuancePerHour: number;
}

export interface Policy {
  readonly version: 1;
  readonly permissions: ReadonlySet<Permission>;
  /** null: no resources at all (a command certificate). */
  readonly limits: Limits | null;
}

export const MAX_CPU_ID = 4095;
export const MAX_BRIDGES = 64;
export const MAX_BRIDGE_NAME_LENGTH = 64;
const BRIDGE_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** A bridge name a policy may carry: 1 to 64 of A-Z a-z 0-9 . _ - */
export const isBridgeName = (name: string): boolean => BRIDGE_NAME.test(name);
/** Every encoding of a valid policy is far below this; anything larger is refused unread. */
const MAX_VALUE_BYTES = 32 * 1024;

type Quantity = 'workloads' | 'memoryMiB' | 'blockMiB' | 'issuancePerHour';
const QUANTITIES: readonly Quantity[] = ['workloads', 'memoryMiB', 'blockMiB', 'issuancePerHour'];

/** A policy in plain JSON terms (for `--json` output, logs and the store). */
export interface PolicyJson {
  version: number;
  /** Permission names in bit order. */
  permissions: string[];
  limits: {
    workloads: number;
    cpus: number[];
    memoryMiB: number;
    blockMiB: number;
    bridges: string[];
    issuancePerHour: number;
  } | null;
}

export function policyToJson(policy: Policy): PolicyJson {
  const { limits } = policy;
  return {
    version: policy.version,
    permissions: [...sortedPermissions(policy.permissions)],
    limits: limits && { ...limits, cpus: [...limits.cpus], bridges: [...limits.bridges] },
  };
}

// --- encoding -----------------------------------------------------------------

function checkQuantity(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(`policy ${what} must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}, not ${value}`);
  }
  return value;
}

function checkCpu(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_CPU_ID) {
    throw invalid(`policy cpu id ${value} is not a whole number from 0 to ${MAX_CPU_ID}`);
  }
  return value;
}

function checkBridge(value: unknown): string {
  if (typeof value !== 'string' || !BRIDGE_NAME.test(value)) {
    throw invalid(
      `policy bridge name ${JSON.stringify(value)} must be 1 to ${MAX_BRIDGE_NAME_LENGTH} characters of A-Z a-z 0-9 . _ -`,
    );
  }
  return value;
}

/** Validated limits in canonical form: cpus and bridges sorted and de-duplicated. */
function canonicalLimits(limits: Limits): Limits {
  if (typeof limits !== 'object' || limits === null) throw invalid('policy limits must be an object or null');
  if (!Array.isArray(limits.cpus)) throw invalid('policy cpus must be a list of cpu ids');
  if (!Array.isArray(limits.bridges)) throw invalid('policy bridges must be a list of names');
  const cpus = [...new Set(limits.cpus.map(checkCpu))].sort((a, b) => a - b);
  const bridges = [...new Set(limits.bridges.map(checkBridge))].sort(compareStrings);
  if (bridges.length > MAX_BRIDGES) {
    throw invalid(`a policy may name at most ${MAX_BRIDGES} bridges, not ${bridges.length}`);
  }
  return {
    workloads: checkQuantity(limits.workloads, 'workloads'),
    cpus,
    memoryMiB: checkQuantity(limits.memoryMiB, 'memoryMiB'),
    blockMiB: checkQuantity(limits.blockMiB, 'blockMiB'),
    bridges,
    issuancePerHour: checkQuantity(limits.issuancePerHour, 'issuancePerHour'),
  };
}

// Bridge names are ASCII, so code-unit order is the byte order of their UTF-8.
const compareStrings = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The DER value of the extension (what goes inside extnValue). Validates
 * every field; cpus and bridges are written sorted and de-duplicated, so
 * equal policies always have equal encodings.
 */
export function encodePolicy(policy: Policy): Buffer {
  if (typeof policy !== 'object' || policy === null) throw invalid('a policy must be an object');
  if (policy.version !== POLICY_VERSION) {
    throw invalid(
      `policy version ${policy.version} is not supported (sigil writes version ${POLICY_VERSION})`,
    );
  }
  if (typeof policy.permissions?.[Symbol.iterator] !== 'function') {
    throw invalid('policy permissions must be a set of permission names');
  }
  const bits: number[] = [];
  for (const name of policy.permissions as ReadonlySet<string>) {
    const bit = PERMISSION_BIT.get(name);
    if (bit === undefined) throw invalid(`unknown permission "${name}" (known: ${PERMISSIONS.join(', ')})`);
    bits.push(bit);
  }
  const members = [integer(POLICY_VERSION), namedBits(bits)];
  if (policy.limits !== null) {
    const limits = canonicalLimits(policy.limits);
    members.push(
      sequence(
        integer(limits.workloads),
        setOf(...limits.cpus.map((cpu) => integer(cpu))),
        integer(limits.memoryMiB),
        integer(limits.blockMiB),
        sequence(...limits.bridges.map(utf8String)),
        integer(limits.issuancePerHour),
      ),
    );
  }
  return sequence(...members);
}

/** The extension ready for IssueRequest.extensions: the deployment's OID, the DER value, non-critical. */
export function policyExtension(
  policy: Policy,
  policyOid: PolicyOid,
): { readonly oid: string; readonly value: Buffer } {
  return { oid: policyOid.text, value: encodePolicy(policy) };
}

// --- decoding -----------------------------------------------------------------

const refuse = (message: string, cause?: unknown): SigilError =>
  invalid(`malformed sigil policy extension: ${message}`, cause);

const UNIVERSAL_NAMES: Readonly<Record<number, string>> = {
  1: 'BOOLEAN',
  2: 'INTEGER',
  3: 'BIT STRING',
  4: 'OCTET STRING',
  5: 'NULL',
  6: 'OBJECT IDENTIFIER',
  12: 'UTF8String',
  16: 'SEQUENCE',
  17: 'SET',
  19: 'PrintableString',
  22: 'IA5String',
};

// "an INTEGER", "an OCTET STRING", but "a UTF8String" (read "you").
const withArticle = (text: string): string => `${/^[AEIOaeio]/.test(text) ? 'an' : 'a'} ${text}`;

function describeTag(node: asn1js.AsnType): string {
  const { tagClass, tagNumber, isConstructed } = node.idBlock;
  if (tagClass === 1) {
    const name = UNIVERSAL_NAMES[tagNumber] ?? `universal tag ${tagNumber}`;
    return withArticle(isConstructed && tagNumber !== 16 && tagNumber !== 17 ? `constructed ${name}` : name);
  }
  const cls = ['', 'universal', 'application', 'context-specific', 'private'][tagClass] ?? 'unknown-class';
  return withArticle(`${cls} [${tagNumber}] element`);
}

type Ctor<T> = abstract new (...args: never[]) => T;

/** The node as the expected universal type, primitive or constructed as DER demands. */
function expectType<T extends asn1js.AsnType>(
  node: asn1js.AsnType | undefined,
  type: Ctor<T>,
  tagNumber: number,
  what: string,
): T {
  const wanted = UNIVERSAL_NAMES[tagNumber];
  if (node === undefined) throw refuse(`${what} is missing (expected ${withArticle(wanted)})`);
  const constructed = tagNumber === 16 || tagNumber === 17;
  const { tagClass, tagNumber: actual, isConstructed } = node.idBlock;
  if (!(node instanceof type) || tagClass !== 1 || actual !== tagNumber || isConstructed !== constructed) {
    throw refuse(`${what} must be ${withArticle(wanted)}, not ${describeTag(node)}`);
  }
  return node;
}

function members(node: asn1js.Sequence | asn1js.Set): asn1js.AsnType[] {
  return node.valueBlock.value;
}

const TWO_53 = 2n ** 53n;

/** A non-negative INTEGER no larger than `max` (a safe integer). */
function readInteger(node: asn1js.AsnType | undefined, what: string, max: number): number {
  const int = expectType(node, asn1js.Integer, 2, what);
  const contents = int.valueBlock.valueHexView;
  if (contents.length === 0) throw refuse(`${what} is an empty INTEGER`);
  if (contents[0] & 0x80) throw refuse(`${what} is negative`);
  // Nine content bytes hold values up to 2^71; anything longer is huge whatever it says.
  if (contents.length > 9) throw refuse(`${what} is too large (${contents.length} bytes)`);
  const value = int.toBigInt();
  if (value >= TWO_53) throw refuse(`${what} ${value} is too large (at most ${max})`);
  if (value > BigInt(max)) throw refuse(`${what} ${value} is out of range (at most ${max})`);
  return Number(value);
}

function readPermissions(node: asn1js.AsnType | undefined): Set<Permission> {
  const bitString = expectType(node, asn1js.BitString, 3, 'permissions');
  const { unusedBits } = bitString.valueBlock;
  const bytes = bitString.valueBlock.valueHexView;
  if (unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
    throw refuse(`permissions BIT STRING declares ${unusedBits} unused bits`);
  }
  const set = new Set<Permission>();
  const total = bytes.length * 8 - unusedBits;
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    if (!(bytes[bit >> 3] & (0x80 >> (bit & 7)))) continue;
    if (bit >= total) throw refuse('permissions BIT STRING has non-zero padding bits');
    const name = PERMISSIONS[bit];
    if (name === undefined) {
      throw refuse(
        `permissions set bit ${bit}, beyond the last known permission (admin, bit ${PERMISSIONS.length - 1})`,
      );
    }
    set.add(name);
  }
  // DER drops trailing zero bits of a named bit list: the last bit must be set.
  if (total > 0 && !(bytes[(total - 1) >> 3] & (0x80 >> ((total - 1) & 7)))) {
    throw refuse('permissions BIT STRING is not in DER form (trailing zero bits)');
  }
  return set;
}

function readLimits(node: asn1js.AsnType): Limits {
  const seq = expectType(node, asn1js.Sequence, 16, 'limits');
  const items = members(seq);
  if (items.length > 6) throw refuse(`limits have ${items.length} members; version 1 defines 6`);
  const workloads = readInteger(items[0], 'workloads', Number.MAX_SAFE_INTEGER);

  const cpuSet = expectType(items[1], asn1js.Set, 17, 'cpus');
  const cpus: number[] = [];
  for (const [index, item] of members(cpuSet).entries()) {
    const cpu = readInteger(item, `cpu id #${index + 1}`, MAX_CPU_ID);
    const previous = cpus.at(-1);
    if (previous === cpu) throw refuse(`cpu ${cpu} appears twice in the cpus SET`);
    // For non-negative INTEGERs DER's octet order is numeric order.
    if (previous !== undefined && previous > cpu) {
      throw refuse(`cpus SET is not in DER order (${cpu} after ${previous})`);
    }
    cpus.push(cpu);
  }

  const memoryMiB = readInteger(items[2], 'memoryMiB', Number.MAX_SAFE_INTEGER);
  const blockMiB = readInteger(items[3], 'blockMiB', Number.MAX_SAFE_INTEGER);

  const bridgeSeq = expectType(items[4], asn1js.Sequence, 16, 'bridges');
  const bridgeItems = members(bridgeSeq);
  if (bridgeItems.length > MAX_BRIDGES) {
    throw refuse(`${bridgeItems.length} bridges (at most ${MAX_BRIDGES})`);
  }
  const bridges: string[] = [];
  for (const [index, item] of bridgeItems.entries()) {
    const text = expectType(item, asn1js.Utf8String, 12, `bridge #${index + 1}`);
    const raw = Buffer.from(text.valueBlock.valueHexView);
    const name = raw.toString('latin1');
    if (!BRIDGE_NAME.test(name)) {
      throw refuse(
        `bridge #${index + 1} is not 1 to ${MAX_BRIDGE_NAME_LENGTH} characters of A-Z a-z 0-9 . _ -`,
      );
    }
    const previous = bridges.at(-1);
    if (previous === name) throw refuse(`bridge "${name}" appears twice`);
    if (previous !== undefined && previous > name) {
      throw refuse(`bridges are not in canonical (sorted) order ("${name}" after "${previous}")`);
    }
    bridges.push(name);
  }

  const issuancePerHour = readInteger(items[5], 'issuancePerHour', Number.MAX_SAFE_INTEGER);
  return Object.freeze({
    workloads,
    cpus: Object.freeze(cpus),
    memoryMiB,
    blockMiB,
    bridges: Object.freeze(bridges),
    issuancePerHour,
  });
}

function parseValue(value: Buffer): Policy {
  if (value.length === 0) throw refuse('the value is empty');
  if (value.length > MAX_VALUE_BYTES) {
    throw refuse(`the value is ${value.length} bytes (at most ${MAX_VALUE_BYTES})`);
  }
  const parsed = asn1js.fromBER(value, {
    maxDepth: 8,
    maxNodes: MAX_CPU_ID + MAX_BRIDGES + 32,
    parseEmbedded: false,
  });
  if (parsed.offset === -1 || parsed.result.error) {
    throw refuse(`not DER (${parsed.result.error || 'unreadable'})`);
  }
  if (parsed.offset !== value.length) {
    const extra = value.length - parsed.offset;
    throw refuse(`${extra} trailing byte${extra === 1 ? '' : 's'} after the policy`);
  }
  const top = expectType(parsed.result, asn1js.Sequence, 16, 'the policy');
  const items = members(top);
  const version = readInteger(items[0], 'version', Number.MAX_SAFE_INTEGER);
  // Checked before anything else: a later version may lay out the rest differently.
  if (version !== POLICY_VERSION) {
    throw refuse(`version ${version} is not supported (this sigil reads version ${POLICY_VERSION})`);
  }
  if (items.length > 3) {
    throw refuse(`a version 1 policy has at most 3 members, this one has ${items.length}`);
  }
  const permissions = readPermissions(items[1]);
  const limits = items[2] === undefined ? null : readLimits(items[2]);
  const policy: Policy = Object.freeze({ version: POLICY_VERSION, permissions, limits });
  if (!encodePolicy(policy).equals(value)) {
    throw refuse(
      'not in DER canonical form (e.g. a long-form length, a padded INTEGER or an indefinite length)',
    );
  }
  return policy;
}

/**
 * Decodes the extension's DER value. Fails closed: anything but a canonical
 * version 1 encoding within the documented ranges is an invalid_argument
 * SigilError, and nothing else is ever thrown.
 */
export function decodePolicy(value: Buffer): Policy {
  if (!(value instanceof Uint8Array)) throw refuse('the value is not a byte buffer');
  try {
    return parseValue(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  } catch (error) {
    if (error instanceof SigilError) throw error;
    throw refuse('unreadable', error);
  }
}

// --- finding it in a certificate ------------------------------------------------

// RFC 5280's Certificate, copied from @peculiar/asn1-x509 except that
// Extension.extnID is kept as the raw encoded element. The decorators are
// applied as plain calls: Node's type stripping does not run decorator syntax.

class RawExtension {
  extnID = new ArrayBuffer(0);
  critical = false;
  extnValue = new OctetString();
}
AsnProp({ type: AsnPropTypes.Any })(RawExtension.prototype, 'extnID');
AsnProp({ type: AsnPropTypes.Boolean, defaultValue: false })(RawExtension.prototype, 'critical');
AsnProp({ type: OctetString })(RawExtension.prototype, 'extnValue');

class RawExtensions extends AsnArray<RawExtension> {}
AsnType({ type: AsnTypeTypes.Sequence, itemType: RawExtension })(RawExtensions);

class RawTbsCertificate {
  version = Version.v1;
  serialNumber = new ArrayBuffer(0);
  signature = new AlgorithmIdentifier();
  issuer = new Name();
  validity = new Validity();
  subject = new Name();
  subjectPublicKeyInfo = new SubjectPublicKeyInfo();
  issuerUniqueID?: ArrayBuffer;
  subjectUniqueID?: ArrayBuffer;
  extensions?: RawExtensions;
}
const tbs = RawTbsCertificate.prototype;
AsnProp({ type: AsnPropTypes.Integer, context: 0, defaultValue: Version.v1 })(tbs, 'version');
AsnProp({ type: AsnPropTypes.Any })(tbs, 'serialNumber');
AsnProp({ type: AlgorithmIdentifier })(tbs, 'signature');
AsnProp({ type: Name })(tbs, 'issuer');
AsnProp({ type: Validity })(tbs, 'validity');
AsnProp({ type: Name })(tbs, 'subject');
AsnProp({ type: SubjectPublicKeyInfo })(tbs, 'subjectPublicKeyInfo');
AsnProp({ type: AsnPropTypes.BitString, context: 1, implicit: true, optional: true })(tbs, 'issuerUniqueID');
AsnProp({ type: AsnPropTypes.BitString, context: 2, implicit: true, optional: true })(tbs, 'subjectUniqueID');
AsnProp({ type: RawExtensions, context: 3, optional: true })(tbs, 'extensions');

class RawCertificate {
  tbsCertificate = new RawTbsCertificate();
  signatureAlgorithm = new AlgorithmIdentifier();
  signatureValue = new ArrayBuffer(0);
}
AsnProp({ type: RawTbsCertificate })(RawCertificate.prototype, 'tbsCertificate');
AsnProp({ type: AlgorithmIdentifier })(RawCertificate.prototype, 'signatureAlgorithm');
AsnProp({ type: AsnPropTypes.BitString })(RawCertificate.prototype, 'signatureValue');

export interface FoundExtension {
  readonly critical: boolean;
  /** The extension's DER value (the contents of extnValue). */
  readonly value: Buffer;
}

// Per certificate buffer, per OID text (one deployment uses one OID).
const found = new WeakMap<Buffer, Map<string, FoundExtension | null>>();

/**
 * The sigil policy extension of a DER certificate, or null when it has none.
 * Refuses a certificate that cannot be parsed or that carries the extension
 * twice (RFC 5280 §4.2). Results are cached per Buffer, as certificate.ts
 * caches its facts, because chains are re-read on every connection.
 */
export function findPolicyExtension(certificateDer: Buffer, policyOid: PolicyOid): FoundExtension | null {
  if (!(certificateDer instanceof Uint8Array)) throw invalid('certificate: not a byte buffer');
  let byOid = found.get(certificateDer);
  const cached = byOid?.get(policyOid.text);
  if (cached !== undefined) return cached;
  let certificate: RawCertificate;
  try {
    certificate = AsnConvert.parse(certificateDer, RawCertificate);
  } catch (error) {
    throw invalid('certificate: not a valid X.509 certificate', error);
  }
  const extensions = certificate.tbsCertificate?.extensions;
  let result: FoundExtension | null = null;
  for (const extension of extensions ?? []) {
    if (!(extension instanceof RawExtension)) throw invalid('certificate: unreadable extensions');
    if (!policyOid.der.equals(Buffer.from(extension.extnID))) continue;
    if (result) throw refuse('the certificate carries the extension more than once');
    result = {
      critical: extension.critical === true,
      value: Buffer.from(extension.extnValue.buffer),
    };
  }
  if (!byOid) {
    byOid = new Map();
    found.set(certificateDer, byOid);
  }
  byOid.set(policyOid.text, result);
  return result;
}

/**
 * The policy a certificate carries, or null when it carries none. Refuses
 * the extension marked critical (sigil only ever writes it non-critical, and
 * a critical one would make OpenSSL refuse the chain anyway) and anything
 * decodePolicy refuses.
 */
export function readPolicy(certificateDer: Buffer, policyOid: PolicyOid): Policy | null {
  const extension = findPolicyExtension(certificateDer, policyOid);
  if (extension === null) return null;
  if (extension.critical) throw refuse('the extension is marked critical; sigil writes it non-critical');
  return decodePolicy(extension.value);
}

// --- delegation ---------------------------------------------------------------

export type NarrowingResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Whether `child` grants nothing that `parent` does not: every permission
 * of the child is the parent's, every quantity is at most the parent's, its
 * cpus and bridges are subsets of the parent's. A parent without limits
 * grants no resources at all (a command certificate), so a child with
 * limits beneath it is an escalation, even all-zero ones; a child without
 * limits is always fine. The reason names every escalation found.
 */
export function isNarrowing(child: Policy, parent: Policy): NarrowingResult {
  const reasons: string[] = [];
  const extra = PERMISSIONS.filter((p) => child.permissions.has(p) && !parent.permissions.has(p));
  if (extra.length > 0) {
    reasons.push(`permission${extra.length > 1 ? 's' : ''} ${extra.join(', ')} not held by the parent`);
  }
  const c = child.limits;
  const p = parent.limits;
  if (c !== null && p === null) {
    reasons.push('limits: the parent grants no resources (it has no limits), so the child may carry none');
  } else if (c !== null && p !== null) {
    for (const quantity of QUANTITIES) {
      if (c[quantity] > p[quantity]) {
        reasons.push(`${quantity} ${c[quantity]} exceeds the parent's ${p[quantity]}`);
      }
    }
    const parentCpus = new Set(p.cpus);
    const extraCpus = c.cpus.filter((cpu) => !parentCpus.has(cpu));
    if (extraCpus.length > 0) {
      reasons.push(
        `cpus ${extraCpus.join(',')} not granted by the parent (it has ${p.cpus.join(',') || 'none'})`,
      );
    }
    const parentBridges = new Set(p.bridges);
    const extraBridges = c.bridges.filter((b) => !parentBridges.has(b));
    if (extraBridges.length > 0) {
      reasons.push(
        `bridges ${extraBridges.join(',')} not granted by the parent (it has ${p.bridges.join(',') || 'none'})`,
      );
    }
  }
  return reasons.length === 0 ? { ok: true } : { ok: false, reason: reasons.join('; ') };
}

/**
 * The policy both grant: the effective policy of a chain is the
 * intersection along it. Limits are null (no resources) when either is.
 */
export function intersectPolicies(a: Policy, b: Policy): Policy {
  const permissions = sortedPermissions([...a.permissions].filter((p) => b.permissions.has(p)));
  let limits: Limits | null = null;
  if (a.limits !== null && b.limits !== null) {
    const x = a.limits;
    const y = b.limits;
    const yCpus = new Set(y.cpus);
    const yBridges = new Set(y.bridges);
    limits = Object.freeze({
      workloads: Math.min(x.workloads, y.workloads),
      cpus: Object.freeze([...new Set(x.cpus.filter((cpu) => yCpus.has(cpu)))].sort((m, n) => m - n)),
      memoryMiB: Math.min(x.memoryMiB, y.memoryMiB),
      blockMiB: Math.min(x.blockMiB, y.blockMiB),
      bridges: Object.freeze(
        [...new Set(x.bridges.filter((name) => yBridges.has(name)))].sort(compareStrings),
      ),
      issuancePerHour: Math.min(x.issuancePerHour, y.issuancePerHour),
    });
  }
  return Object.freeze({ version: POLICY_VERSION, permissions, limits });
}
