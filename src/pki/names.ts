// Subject alternative names and SPIFFE IDs. Every name that reaches a
// certificate passes through one of these constructors, which validate
// strictly and return a canonical form: a name that OpenSSL, Go or a browser
// would read differently from us is refused rather than guessed at.

import { isIPv6 } from 'node:net';
import { invalid } from '../errors.ts';

/**
 * node:net's isIP, without its first-call cost: Node compiles its large IPv6
 * pattern on first use (about 8 ms), so text without a colon, which no IPv6
 * address lacks, is only checked as IPv4, with IPV4 below (the same language
 * as node:net's isIPv4, whose pattern would be one more to compile).
 */
function isIP(text: string): 0 | 4 | 6 {
  if (!text.includes(':')) return IPV4.test(text) ? 4 : 0;
  return isIPv6(text) ? 6 : 0;
}

export type GeneralName =
  | { type: 'dns'; value: string }
  | { type: 'ip'; value: string; bytes: Buffer }
  | { type: 'uri'; value: string }
  | { type: 'email'; value: string };

// Each constructor returns its own variant, so e.g. ipAddress(x).bytes needs no narrowing.
export type DnsName = Extract<GeneralName, { type: 'dns' }>;
export type IpName = Extract<GeneralName, { type: 'ip' }>;
export type UriName = Extract<GeneralName, { type: 'uri' }>;
export type EmailName = Extract<GeneralName, { type: 'email' }>;

/** The bad value, quoted on one line and cut short if huge. */
function quote(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

const NON_ASCII = /[\u0080-\uffff]/;
const LDH_LABEL = /^[a-z0-9-]+$/;

/** Why `name` (lowercase) is not a DNS name, or undefined when it is one. */
function dnsProblem(name: string, allowWildcard: boolean): string | undefined {
  if (name.length === 0) return 'it is empty';
  if (NON_ASCII.test(name)) return 'it must be ASCII (write internationalized names in their "xn--" form)';
  if (name.endsWith('.')) return 'it may not end with "."';
  if (name.length > 253) return 'it is longer than 253 characters';
  const labels = name.split('.');
  for (const [index, label] of labels.entries()) {
    if (label.length === 0) return 'it has an empty label ("..", or a leading ".")';
    if (label.includes('*')) {
      if (!allowWildcard) return 'a wildcard is not allowed here';
      if (label !== '*' || index !== 0)
        return 'a wildcard may only be the whole leftmost label ("*.example.com")';
      if (labels.length === 1) return 'a wildcard needs a domain after it ("*.example.com")';
      continue;
    }
    if (label.length > 63) return `label ${quote(label)} is longer than 63 characters`;
    if (!LDH_LABEL.test(label)) return `label ${quote(label)} may contain only letters, digits and "-"`;
    if (label.startsWith('-') || label.endsWith('-'))
      return `label ${quote(label)} may not start or end with "-"`;
  }
  // "1.2.3" or "127.1" would be read as an IPv4 address by URL parsers and resolvers.
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return 'the last label may not be all digits';
  return undefined;
}

/**
 * A DNS name for a certificate: LDH labels, lowercased, optionally a wildcard as
 * the whole leftmost label. IP literals are refused with a hint, because a
 * dNSName holding an address never matches it in TLS.
 */
export function dnsName(text: string): DnsName {
  if (isIP(text) !== 0) throw invalid(`${quote(text)} is an IP address, not a DNS name (use --ip)`);
  const name = text.toLowerCase();
  const problem = dnsProblem(name, true);
  if (problem !== undefined) throw invalid(`invalid DNS name ${quote(text)}: ${problem}`);
  return { type: 'dns', value: name };
}

const IPV4 =
  /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])(?:\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])){3}$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function ipv4Bytes(text: string): Buffer | undefined {
  if (!IPV4.test(text)) return undefined;
  return Buffer.from(text.split('.').map(Number));
}

function ipv6Bytes(text: string): Buffer | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const words: number[][] = [[], []];
  for (const [side, list] of [head, tail].entries()) {
    for (const [index, group] of list.entries()) {
      const last = index === list.length - 1 && (halves.length === 1 ? side === 0 : side === 1);
      if (last && group.includes('.')) {
        const v4 = ipv4Bytes(group);
        if (v4 === undefined) return undefined;
        words[side].push(v4.readUInt16BE(0), v4.readUInt16BE(2));
      } else if (HEX_GROUP.test(group)) {
        words[side].push(Number.parseInt(group, 16));
      } else {
        return undefined;
      }
    }
  }
  const count = words[0].length + words[1].length;
  if (halves.length === 2 ? count > 7 : count !== 8) return undefined;
  const all = [...words[0], ...new Array<number>(8 - count).fill(0), ...words[1]];
  const bytes = Buffer.alloc(16);
  all.forEach((word, i) => {
    bytes.writeUInt16BE(word, i * 2);
  });
  return bytes;
}

/** RFC 5952 text: lowercase, no leading zeros, longest zero run (first on ties) as "::". */
function ipv6Text(bytes: Buffer): string {
  const words = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2));
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  let bestStart = -1;
  let bestLength = 1; // a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/**
 * An IP address SAN: the canonical text and its 4 or 16 bytes. Leading zeros in
 * IPv4 ("01.2.3.4", octal to some parsers) and IPv6 zone ids are refused.
 */
export function ipAddress(text: string): IpName {
  if (text.includes('%')) throw invalid(`invalid IP address ${quote(text)}: zone ids ("%…") are not allowed`);
  const version = isIP(text);
  if (version === 4) {
    const bytes = ipv4Bytes(text);
    if (bytes !== undefined) return { type: 'ip', value: text, bytes };
  } else if (version === 6) {
    const bytes = ipv6Bytes(text);
    if (bytes !== undefined) return { type: 'ip', value: ipv6Text(bytes), bytes };
  }
  if (/^[0-9.]+$/.test(text) && text.split('.').some((part) => /^0[0-9]/.test(part))) {
    throw invalid(`invalid IP address ${quote(text)}: leading zeros are ambiguous (octal to some parsers)`);
  }
  throw invalid(`invalid IP address ${quote(text)}: not an IPv4 or IPv6 address`);
}

function hasSpaceOrControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) return true;
  }
  return false;
}

// RFC 3986: unreserved, reserved and "%" (checked separately for two hex digits).
const URI_CHARS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]*$/;
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

/**
 * A URI SAN: absolute (with a scheme), ASCII, no whitespace, only characters
 * RFC 3986 allows. A spiffe: URI must be a valid SPIFFE ID, since peers will
 * read it as one.
 */
export function uriName(text: string): UriName {
  const fail = (why: string) => invalid(`invalid URI ${quote(text)}: ${why}`);
  if (text.length === 0) throw fail('it is empty');
  if (NON_ASCII.test(text)) throw fail('it must be ASCII (percent-encode other characters)');
  if (hasSpaceOrControl(text)) throw fail('it may not contain whitespace or control characters');
  const scheme = SCHEME.exec(text);
  if (scheme === null)
    throw fail('it must be an absolute URI with a scheme (e.g. "https://…" or "spiffe://…")');
  if (scheme[1].toLowerCase() === 'spiffe') {
    parseSpiffeId(text);
    return { type: 'uri', value: text };
  }
  if (!URI_CHARS.test(text)) throw fail('it contains characters a URI may not (percent-encode them)');
  if (/%(?![0-9A-Fa-f]{2})/.test(text)) throw fail('"%" must be followed by two hex digits');
  if (!URL.canParse(text)) throw fail('it is not a valid URI');
  return { type: 'uri', value: text };
}

// RFC 5321 dot-atom local part.
const LOCAL_PART = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

/** An email SAN (rfc822Name): dot-atom local part, a DNS domain, no wildcard. */
export function emailName(text: string): EmailName {
  const fail = (why: string) => invalid(`invalid email address ${quote(text)}: ${why}`);
  const parts = text.split('@');
  if (parts.length !== 2) throw fail('expected exactly one "@"');
  const [local, domain] = parts;
  if (local.length === 0) throw fail('the part before "@" is empty');
  if (local.length > 64) throw fail('the part before "@" is longer than 64 characters');
  if (!LOCAL_PART.test(local)) {
    throw fail(
      'the part before "@" may contain only letters, digits, single inner dots and !#$%&\'*+/=?^_`{|}~-',
    );
  }
  if (isIP(domain) !== 0) throw fail('the domain must be a DNS name, not an IP address');
  const lower = domain.toLowerCase();
  const problem = dnsProblem(lower, false);
  if (problem !== undefined) throw fail(`domain: ${problem}`);
  return { type: 'email', value: `${local}@${lower}` };
}

/** An IP SAN if `text` is an IP address, else a DNS SAN; splits mixed "addresses" lists. */
export function classifyAddress(text: string): GeneralName {
  return isIP(text) !== 0 ? ipAddress(text) : dnsName(text);
}

// --- SPIFFE ------------------------------------------------------------------

export interface SpiffeId {
  /** The whole ID, e.g. "spiffe://example.org/ns/prod/sa/api". */
  id: string;
  trustDomain: string;
  /** "" or "/a/b". */
  path: string;
}

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;
const MAX_ID_BYTES = 2048;
const MAX_TRUST_DOMAIN_BYTES = 255;

function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'trust domain is empty';
  if (td.includes('@')) return 'trust domain may not contain userinfo ("@")';
  if (td.includes(':')) return 'trust domain may not contain a port (":")';
  if (Buffer.byteLength(td) > MAX_TRUST_DOMAIN_BYTES)
    return `trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`;
  if (!TRUST_DOMAIN_CHARS.test(td)) {
    return 'trust domain may contain only lowercase letters, digits, ".", "-" and "_"';
  }
  return undefined;
}

function segmentProblem(segment: string): string | undefined {
  if (segment === '.' || segment === '..') return 'path segments may not be "." or ".."';
  if (!SEGMENT_CHARS.test(segment)) return 'path segments may contain only letters, digits, ".", "-" and "_"';
  return undefined;
}

/**
 * Parses a SPIFFE ID exactly as the SPIFFE ID specification defines it. No
 * normalisation: authorization compares IDs as strings, so two spellings of
 * one ID must not both be accepted.
 */
export function parseSpiffeId(text: string): SpiffeId {
  const fail = (why: string) => invalid(`invalid SPIFFE ID ${quote(text)}: ${why}`);
  if (text.length === 0) throw fail('it is empty');
  if (Buffer.byteLength(text) > MAX_ID_BYTES) throw fail(`it is longer than ${MAX_ID_BYTES} bytes`);
  if (!text.startsWith('spiffe://')) {
    if (text.toLowerCase().startsWith('spiffe://')) throw fail('the scheme must be lowercase "spiffe"');
    throw fail('it must start with "spiffe://"');
  }
  const rest = text.slice('spiffe://'.length);
  if (rest.includes('?')) throw fail('a query ("?") is not allowed');
  if (rest.includes('#')) throw fail('a fragment ("#") is not allowed');
  if (rest.includes('%')) throw fail('percent-encoding ("%") is not allowed');
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem !== undefined) throw fail(tdProblem);
  if (path !== '') {
    if (path.endsWith('/')) throw fail('the path may not end with "/"');
    const segments = path.slice(1).split('/');
    if (segments.includes('')) throw fail('the path may not contain empty segments ("//")');
    for (const segment of segments) {
      const problem = segmentProblem(segment);
      if (problem !== undefined) throw fail(problem);
    }
  }
  return { id: text, trustDomain, path };
}

/** Builds a SPIFFE ID from a trust domain and path segments, validating each part. */
export function spiffeId(trustDomain: string, ...segments: string[]): string {
  parseTrustDomain(trustDomain);
  for (const segment of segments) {
    const fail = (why: string) => invalid(`invalid SPIFFE ID path segment ${quote(segment)}: ${why}`);
    if (segment.length === 0) throw fail('it is empty');
    if (segment.includes('/')) throw fail('it may not contain "/" (pass each segment separately)');
    const problem = segmentProblem(segment);
    if (problem !== undefined) throw fail(problem);
  }
  return parseSpiffeId(`spiffe://${trustDomain}${segments.map((s) => `/${s}`).join('')}`).id;
}

/** The trust domain a deployment gets when none is given: `spiffe://sigil.internal/…`. */
export const DEFAULT_TRUST_DOMAIN = 'sigil.internal';

/** A bare trust domain name ("example.org"), as given in configuration. */
export function parseTrustDomain(text: string): string {
  const fail = (why: string) => invalid(`invalid trust domain ${quote(text)}: ${why}`);
  if (text.toLowerCase().startsWith('spiffe://')) throw fail('give the bare name, without "spiffe://"');
  const problem = trustDomainProblem(text);
  if (problem !== undefined) throw fail(problem);
  return text;
}

// --- IP ranges (name constraints) --------------------------------------------

export interface IpRange {
  /** Canonical "address/prefix". */
  value: string;
  /** address || mask, 8 or 32 bytes, as a name-constraints iPAddress holds it. */
  bytes: Buffer;
}

/** A CIDR range for name constraints; host bits must be zero so the range means what it says. */
export function ipRange(text: string): IpRange {
  const fail = (why: string) => invalid(`invalid IP range ${quote(text)}: ${why}`);
  const parts = text.split('/');
  if (parts.length !== 2) throw fail('expected address/prefix, e.g. 10.0.0.0/8 or fd00::/8');
  const [addressText, prefixText] = parts;
  let address: Buffer;
  let canonical: string;
  try {
    const name = ipAddress(addressText);
    address = name.bytes;
    canonical = name.value;
  } catch (error) {
    throw invalid(`invalid IP range ${quote(text)}: ${quote(addressText)} is not an IP address`, error);
  }
  const bits = address.length * 8;
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > bits) {
    throw fail(`the prefix length must be a number from 0 to ${bits}`);
  }
  const prefix = Number(prefixText);
  const mask = Buffer.alloc(address.length);
  for (let i = 0; i < mask.length; i++) {
    const remaining = prefix - i * 8;
    mask[i] = remaining >= 8 ? 0xff : remaining <= 0 ? 0 : (0xff << (8 - remaining)) & 0xff;
  }
  if (address.some((byte, i) => (byte & ~mask[i]) !== 0)) {
    const network = Buffer.from(address.map((byte, i) => byte & mask[i]));
    const networkText = address.length === 4 ? [...network].join('.') : ipv6Text(network);
    throw fail(`host bits are set (did you mean ${networkText}/${prefix}?)`);
  }
  return { value: `${canonical}/${prefix}`, bytes: Buffer.concat([address, mask]) };
}
