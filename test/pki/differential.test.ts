// Differential tests for the issuance engine (src/pki/issuer.ts). sigil writes
// its own DER (see DESIGN.md, "Why a DER writer of our own"), so its output is
// never judged by reading it back with sigil's own code: every certificate is
// compared, field by field, with what was *requested*, as read by independent
// implementations: `openssl verify -x509_strict`, `openssl … -text`,
// @peculiar/x509 and Node's X509Certificate.
//
// The corpus is random but reproducible: a seeded PRNG chooses every profile,
// name, lifetime and extension. The seed is printed; rerun a failure with
// SIGIL_TEST_SEED=<seed>. (Keys come from the OS CSPRNG, so a rerun differs
// in key material and serials, not in structure.)
//
// To stay fast, key generation is done once into small pools (RSA-4096 twice),
// openssl runs in few processes (one `verify` per chain, one `-text` dump per
// half of the corpus) with a concurrency of two.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  createHash,
  createPrivateKey,
  generateKeyPair as generateKeyPairAsync,
  type KeyObject,
  X509Certificate as NodeX509Certificate,
  randomInt,
} from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  type GeneralName as AsnGeneralName,
  NameConstraints as AsnNameConstraints,
} from '@peculiar/asn1-x509';
import { createCrl, REVOCATION_REASONS, type RevocationReason } from '../../src/pki/crl.ts';
import type { CustomExtension, NameConstraints } from '../../src/pki/extensions.ts';
import { createRootCertificate, type IssueRequest, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, KEY_TYPES, type KeyType } from '../../src/pki/keys.ts';
import {
  dnsName,
  emailName,
  type GeneralName,
  ipAddress,
  ipRange,
  spiffeId,
  uriName,
} from '../../src/pki/names.ts';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  CRLDistributionPointsExtension,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  X509Certificate as PeculiarX509Certificate,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
} from '../../src/pki/x509-library.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';

// ---------------------------------------------------------------------------
// Seed and PRNG

function parseSeed(text: string | undefined): number {
  if (text === undefined || text.trim() === '') return randomInt(2 ** 32);
  const value = Number(text.trim());
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** 32) {
    throw new Error(`SIGIL_TEST_SEED must be an integer from 0 to 2^32-1, got "${text}"`);
  }
  return value;
}

const SEED = parseSeed(process.env.SIGIL_TEST_SEED);
process.stderr.write(`differential test seed: ${SEED} (reproduce with SIGIL_TEST_SEED=${SEED})\n`);

/** mulberry32: small, fast, good enough to choose test cases. */
class Random {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  float(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.float() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.float() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.float() * items.length)];
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.int(0, 255);
    return out;
  }
  word(min = 3, max = 10): string {
    const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
    let s = String.fromCharCode(97 + this.int(0, 25)); // start with a letter
    const n = this.int(min, max) - 1;
    for (let i = 0; i < n; i++) s += alphabet[this.int(0, alphabet.length - 1)];
    return s;
  }
}

const rng = new Random(SEED);
const where = (id: string): string => `${id} (SIGIL_TEST_SEED=${SEED})`;

// ---------------------------------------------------------------------------
// Small independent helpers (deliberately not sigil's own code)

const pem = (label: string, der: Buffer): string =>
  `-----BEGIN ${label}-----\n${der
    .toString('base64')
    .replace(/.{64}/g, '$&\n')
    .replace(/\n?$/, '\n')}-----END ${label}-----\n`;

/** One DER TLV (definite length), for custom extension values. */
function tlv(tag: number, body: Buffer): Buffer {
  let length: Buffer;
  if (body.length < 0x80) length = Buffer.of(body.length);
  else if (body.length < 0x100) length = Buffer.of(0x81, body.length);
  else length = Buffer.of(0x82, body.length >> 8, body.length & 0xff);
  return Buffer.concat([Buffer.of(tag), length, body]);
}

/** IPv4 dotted or IPv6 text (any case, compressed or not) to bytes. */
function ipBytes(text: string): Buffer {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(text)) return Buffer.from(text.split('.').map(Number));
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const words = (part: string | undefined) =>
    part ? part.split(':').map((w) => Number.parseInt(w, 16)) : [];
  const left = words(head);
  const right = words(tail);
  const all =
    tail === undefined ? left : [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  assert.equal(all.length, 8, `not an IP address: ${text}`);
  const out = Buffer.alloc(16);
  all.forEach((w, i) => {
    out.writeUInt16BE(w, i * 2);
  });
  return out;
}

/** "10.0.0.0/8" → address || mask bytes, as name constraints carry them. */
function cidrBytes(cidr: string): Buffer {
  const [address, prefixText] = cidr.split('/');
  const addr = ipBytes(address);
  const prefix = Number(prefixText);
  const mask = Buffer.alloc(addr.length);
  for (let bit = 0; bit < prefix; bit++) mask[bit >> 3] |= 0x80 >> (bit & 7);
  return Buffer.concat([addr, mask]);
}

/**
 * An OID as @peculiar/x509 reports it. Its ASN.1 layer (asn1js) cannot
 * represent arcs beyond 2^53 and drops them ("2.25.<uuid>" reads as "2.25"),
 * so for such OIDs only the leading safe arcs can be compared. openssl checks
 * the full OID.
 */
function peculiarOid(oid: string): string {
  const arcs = oid.split('.');
  const unsafe = arcs.findIndex((arc) => BigInt(arc) > BigInt(Number.MAX_SAFE_INTEGER));
  return unsafe < 0 ? oid : arcs.slice(0, unsafe).join('.');
}

/** RFC 7093-style key identifier sigil documents: leftmost 160 bits of SHA-256 over the SPKI DER. */
const keyId = (publicKey: KeyObject): Buffer =>
  createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest()
    .subarray(0, 20);

const floorSeconds = (ms: number): number => Math.floor(ms / 1000) * 1000;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const YEAR = 365 * DAY;
const SKEW_MS = 30_000; // the issuer's documented default back-dating

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { maxBuffer: 512 * 1024 * 1024, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') reject(error);
      else resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
    });
  });
}

const CONCURRENCY = 2;

// ---------------------------------------------------------------------------
// The model: what was asked for

type Kind = 'root' | 'intermediate' | 'server' | 'client' | 'server+client';
const LEAF_PROFILES = ['server', 'client', 'server+client'] as const;

interface Subject {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  country?: string;
}

/** Name constraints as asked for, in text form; IP ranges as CIDR text. */
interface ConstraintText {
  permittedDns: string[];
  excludedDns: string[];
  permittedIp: string[];
  excludedIp: string[];
  permittedUri: string[];
  excludedUri: string[];
}

/** What leaves under a constrained CA must stay within. */
interface Zone {
  dnsBase: string;
  v4Prefix: [number, number]; // a /16
  v6Prefix: Buffer; // a /32 (4 bytes)
  trustDomain: string;
  constraints: ConstraintText;
}

interface Expected {
  id: string;
  kind: Kind;
  der: Buffer;
  serialHex: string;
  subject: Subject;
  issuerSubject: Subject;
  publicKey: KeyObject;
  keyType: KeyType;
  issuerKeyType: KeyType;
  issuerPublicKey: KeyObject;
  /** The issuer's certificate (a root's own). */
  issuerDer: Buffer;
  ski: Buffer;
  aki: Buffer;
  sans: GeneralName[];
  notBefore: number;
  notAfter: number;
  clamped: boolean;
  pathLen?: number;
  constraints?: ConstraintText;
  crlDistributionPoints: string[];
  custom: { oid: string; value: Buffer }[];
}

interface Ca {
  cert: Expected;
  privateKey: KeyObject;
  issuer: Issuer;
  /** Constraints leaves below must satisfy (own or inherited). */
  zone?: Zone;
  file: string;
}

interface Chain {
  id: string;
  root: Ca;
  intermediate?: Ca;
  /** Certificates verified in this chain's `openssl verify` run. */
  members: Expected[];
}

interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
  type: KeyType;
}

// ---------------------------------------------------------------------------
// Keys

const generateRsa = promisify(generateKeyPairAsync);

async function makeKey(type: KeyType): Promise<KeyPair> {
  if (type.startsWith('rsa')) {
    // The async form runs in the thread pool, so RSA keys generate in parallel.
    const pair = await generateRsa('rsa', { modulusLength: Number(type.slice(3)), publicExponent: 0x10001 });
    return { ...pair, type };
  }
  return { ...generateKeyPair(type), type };
}

const CA_KEY_COUNTS: Record<KeyType, number> = {
  p256: 5,
  p384: 5,
  ed25519: 4,
  rsa2048: 4,
  rsa3072: 2,
  rsa4096: 1,
};
const LEAF_KEY_COUNTS: Record<KeyType, number> = {
  p256: 6,
  p384: 4,
  ed25519: 6,
  rsa2048: 3,
  rsa3072: 2,
  rsa4096: 1,
};

async function makePool(counts: Record<KeyType, number>): Promise<Record<KeyType, KeyPair[]>> {
  const entries = await Promise.all(
    KEY_TYPES.map(
      async (type) =>
        [type, await Promise.all(Array.from({ length: counts[type] }, () => makeKey(type)))] as const,
    ),
  );
  return Object.fromEntries(entries) as Record<KeyType, KeyPair[]>;
}

// ---------------------------------------------------------------------------
// Random requests

const COUNTRIES = ['US', 'DE', 'FR', 'JP', 'NZ', 'BR', 'CH'];
const DOMAINS = ['example.com', 'example.net', 'svc.cluster.local', 'test', 'corp.example.org'];

// Non-ASCII subject text (UTF8String), including a character outside the BMP.
const UNICODE_WORDS = ['Zürich', 'Ærøskøbing', '東京', 'Αθήνα', 'São Paulo', 'Kraków', 'rocket 🚀'];

function randomSubjectText(): string {
  const parts = [rng.chance(0.15) ? rng.pick(UNICODE_WORDS) : rng.word(3, 8)];
  if (rng.chance(0.4)) parts.push(rng.pick(['Team', 'Build', 'Agent', 'node-7', 'v2.1']));
  if (rng.chance(0.3)) parts.push(String(rng.int(1, 999)));
  return parts.join(rng.pick([' ', '-', '.']));
}

function randomSubject(cn: string): Subject {
  const subject: Subject = { commonName: cn };
  if (rng.chance(0.5)) subject.organization = randomSubjectText();
  if (rng.chance(0.4)) subject.organizationalUnit = randomSubjectText();
  if (rng.chance(0.4)) subject.country = rng.pick(COUNTRIES);
  return subject;
}

function randomIpv4Text(prefix?: [number, number]): string {
  const b = rng.bytes(4);
  if (prefix) {
    [b[0], b[1]] = prefix;
    b[2] = rng.int(0, 254); // x.y.255.0/24 may be excluded
  }
  return [...b].join('.');
}

function randomIpv6Text(prefix?: Buffer): string {
  const b = rng.bytes(16);
  if (prefix) prefix.copy(b);
  // Some zero runs, so compressed forms occur.
  for (let w = prefix ? 2 : 0; w < 8; w++) if (rng.chance(0.3)) b.writeUInt16BE(0, w * 2);
  const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16));
  const text = words.map((w) => (rng.chance(0.2) ? w.padStart(4, '0') : w)).join(':');
  const upper = rng.chance(0.3) ? text.toUpperCase() : text;
  return upper;
}

function randomCustomExtensions(): { oid: string; value: Buffer }[] {
  const count = rng.pick([0, 0, 1, 1, 2]);
  const out: { oid: string; value: Buffer }[] = [];
  const used = new Set<string>();
  while (out.length < count) {
    const oid = rng.chance(0.2)
      ? `2.25.${BigInt(`0x${rng.bytes(16).toString('hex')}`).toString(10)}`
      : `1.3.6.1.4.1.55555.${rng.int(1, 9)}.${rng.int(0, 300)}`;
    if (used.has(oid)) continue;
    used.add(oid);
    let value: Buffer;
    // openssl -text prints unknown extension values raw, with CR/LF passed
    // through; keep those bytes out so its output stays line-parseable.
    do {
      const kind = rng.int(0, 2);
      if (kind === 0) value = tlv(0x0c, Buffer.from(`${rng.word(1, 12)} ${rng.word(1, 20)}`, 'utf8'));
      else if (kind === 1) value = tlv(0x04, rng.bytes(rng.int(1, 40)));
      else
        value = tlv(0x30, Buffer.concat([tlv(0x02, Buffer.of(rng.int(1, 127))), tlv(0x01, Buffer.of(0xff))]));
    } while (value.includes(0x0a) || value.includes(0x0d));
    out.push({ oid, value });
  }
  return out;
}

/** A random SAN list (never empty); inside `zone`, every constrained name type stays within it. */
function randomSans(zone?: Zone): GeneralName[] {
  const sans: GeneralName[] = [];
  const dnsCount = zone ? rng.int(1, 3) : rng.pick([0, 1, 1, 2, 3]);
  for (let i = 0; i < dnsCount; i++) {
    const base = zone ? zone.dnsBase : `${rng.word()}.${rng.pick(DOMAINS)}`;
    const host = rng.chance(0.2)
      ? `*.${rng.word()}.${base}`
      : rng.chance(0.2)
        ? base
        : `${rng.word()}.${base}`;
    sans.push(dnsName(host));
  }
  for (let i = rng.pick([0, 0, 1, 2]); i > 0; i--) {
    sans.push(ipAddress(rng.chance(0.5) ? randomIpv4Text(zone?.v4Prefix) : randomIpv6Text(zone?.v6Prefix)));
  }
  for (let i = rng.pick([0, 1, 1, 2]); i > 0; i--) {
    const td = zone ? zone.trustDomain : `${rng.word()}.${rng.pick(DOMAINS)}`;
    const choice = rng.int(0, 3);
    if (choice <= 1) sans.push(uriName(spiffeId(td, 'ns', rng.word(), 'sa', rng.word())));
    else if (choice === 2)
      sans.push(uriName(`https://${td}/${rng.word()}/${rng.word()}?v=${rng.int(0, 99)}`));
    else if (!zone)
      sans.push(
        uriName(
          `urn:uuid:${rng
            .bytes(16)
            .toString('hex')
            .replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-')}`,
        ),
      );
  }
  if (rng.chance(0.2)) sans.push(emailName(`${rng.word()}.${rng.word(1, 5)}@${rng.pick(DOMAINS)}`));
  if (sans.length === 0) sans.push(dnsName(`${rng.word()}.${rng.pick(DOMAINS)}`));
  // Shuffle so the first SAN (the default CN) is of any type.
  for (let i = sans.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [sans[i], sans[j]] = [sans[j], sans[i]];
  }
  return sans;
}

function randomZone(index: number): Zone {
  const dnsBase = `nc${index}-${rng.word(3, 6)}.example.org`;
  const v4Prefix: [number, number] = [10, rng.int(0, 255)];
  const v6Prefix = Buffer.concat([Buffer.of(0xfd, rng.int(0, 255)), rng.bytes(2)]);
  const trustDomain = `td${index}.${rng.word(3, 6)}.example`;
  const v6Text = `${v6Prefix.readUInt16BE(0).toString(16)}:${v6Prefix.readUInt16BE(2).toString(16)}::/32`;
  return {
    dnsBase,
    v4Prefix,
    v6Prefix,
    trustDomain,
    constraints: {
      permittedDns: [dnsBase],
      excludedDns: [`blocked.${dnsBase}`],
      permittedIp: [`10.${v4Prefix[1]}.0.0/16`, v6Text],
      excludedIp: rng.chance(0.5) ? [`10.${v4Prefix[1]}.255.0/24`] : [],
      permittedUri: [trustDomain],
      excludedUri: ['.evil.example'],
    },
  };
}

function toNameConstraints(c: ConstraintText): NameConstraints {
  return {
    permittedDns: c.permittedDns,
    excludedDns: c.excludedDns,
    permittedIp: c.permittedIp.map(ipRange),
    excludedIp: c.excludedIp.map(ipRange),
    permittedUri: c.permittedUri,
    excludedUri: c.excludedUri,
  };
}

/** A random lifetime, spread over minutes to years (log-uniform). */
const randomTtl = (minMs: number, maxMs: number): number =>
  Math.round(Math.exp(Math.log(minMs) + rng.float() * (Math.log(maxMs) - Math.log(minMs))));

// ---------------------------------------------------------------------------
// Building the corpus

interface Corpus {
  dir: string;
  roots: Ca[];
  chains: Chain[];
  all: Expected[];
  byDer: Map<Buffer, Expected>;
  leafKeys: Record<KeyType, KeyPair[]>;
  caKeys: Record<KeyType, KeyPair[]>;
  buildMs: number;
}

let serialCounter = 0;
function writeCert(dir: string, cert: Expected): string {
  const file = join(dir, `c${String(serialCounter++).padStart(5, '0')}.pem`);
  writeFileSync(file, pem('CERTIFICATE', cert.der));
  return file;
}

function makeRoot(dir: string, key: KeyPair, index: number, options: { pathLen?: number; zone?: Zone }): Ca {
  const subject: Subject = {
    commonName: `Sigil Differential Root ${index} ${key.type}`,
    organization: 'Sigil Differential',
    ...(rng.chance(0.5) ? { country: rng.pick(COUNTRIES) } : {}),
  };
  // Every other root ends after 2049, where Time switches to GeneralizedTime.
  const ttlMs = index % 2 === 0 ? randomTtl(26 * YEAR, 40 * YEAR) : randomTtl(2 * YEAR, 20 * YEAR);
  const now = Date.now();
  const issued = createRootCertificate({
    privateKey: key.privateKey,
    subject,
    ttlMs,
    pathLen: options.pathLen,
    nameConstraints: options.zone ? toNameConstraints(options.zone.constraints) : undefined,
    now: new Date(now),
  });
  const cert: Expected = {
    id: `root#${index} (${key.type})`,
    kind: 'root',
    der: issued.der,
    serialHex: issued.serialHex,
    subject,
    issuerSubject: subject,
    publicKey: key.publicKey,
    keyType: key.type,
    issuerKeyType: key.type,
    issuerPublicKey: key.publicKey,
    issuerDer: issued.der,
    ski: keyId(key.publicKey),
    aki: keyId(key.publicKey),
    sans: [],
    notBefore: floorSeconds(now - SKEW_MS),
    notAfter: floorSeconds(now + ttlMs),
    clamped: false,
    pathLen: options.pathLen,
    constraints: options.zone?.constraints,
    crlDistributionPoints: [],
    custom: [],
  };
  const ca: Ca = {
    cert,
    privateKey: key.privateKey,
    issuer: Issuer.fromCertificate(issued.der, key.privateKey),
    zone: options.zone,
    file: '',
  };
  ca.file = writeCert(dir, cert);
  return ca;
}

/** Issue one certificate under `ca` and record what was asked for. */
function issueUnder(
  ca: Ca,
  id: string,
  kind: Exclude<Kind, 'root'>,
  key: KeyPair,
  request: Omit<IssueRequest, 'publicKey' | 'profile'>,
  custom: { oid: string; value: Buffer }[],
): Expected {
  const passNow = rng.chance(0.7);
  const t0 = Date.now();
  const issued = ca.issuer.issue({
    ...request,
    publicKey: key.publicKey,
    profile: kind,
    ...(passNow ? { now: new Date(t0) } : {}),
  });
  const t1 = passNow ? t0 : Date.now();
  const issuerNotAfter = ca.cert.notAfter;
  const issuerNotBefore = ca.cert.notBefore;
  // Expected validity, from the request alone: back-dated by the skew (never
  // before the issuer), ending at the requested time or the issuer's end.
  const wantEnd = (t: number) => (request.notAfter ? request.notAfter.getTime() : t + (request.ttlMs ?? 0));
  const clamped = wantEnd(t0) > issuerNotAfter;
  assert.ok(clamped || wantEnd(t1) <= issuerNotAfter || passNow, where(`${id}: ambiguous clamp`));
  assert.equal(issued.clamped, clamped, where(`${id}: clamped`));
  const nb = (t: number) => floorSeconds(Math.max(t - SKEW_MS, issuerNotBefore));
  const na = (t: number) => floorSeconds(Math.min(wantEnd(t), issuerNotAfter));
  const notBefore = issued.notBefore.getTime();
  const notAfter = issued.notAfter.getTime();
  assert.ok(notBefore >= nb(t0) && notBefore <= nb(t1), where(`${id}: returned notBefore`));
  assert.ok(notAfter >= na(t0) && notAfter <= na(t1), where(`${id}: returned notAfter`));
  const sans = [...(request.sans ?? [])];
  const first = sans[0];
  const subject = request.subject ?? { commonName: first.value.slice(0, 64) };
  return {
    id,
    kind,
    der: issued.der,
    serialHex: issued.serialHex,
    subject,
    issuerSubject: ca.cert.subject,
    publicKey: key.publicKey,
    keyType: key.type,
    issuerKeyType: ca.cert.keyType,
    issuerPublicKey: ca.cert.publicKey,
    issuerDer: ca.cert.der,
    ski: keyId(key.publicKey),
    aki: ca.cert.ski,
    sans,
    // Without `now` the exact second is unknown within [t0, t1]; both bounds
    // were checked above, so the returned value is what the readers must see.
    notBefore,
    notAfter,
    clamped,
    pathLen: request.pathLen,
    constraints: undefined, // set by makeIntermediate, which knows the text form
    crlDistributionPoints: [...(request.crlDistributionPoints ?? [])],
    custom,
  };
}

function randomLifetime(): Pick<IssueRequest, 'ttlMs' | 'notAfter'> {
  const ttl = randomTtl(MINUTE, 12 * YEAR);
  return rng.chance(0.15) ? { notAfter: new Date(Date.now() + ttl) } : { ttlMs: ttl };
}

function makeIntermediate(
  dir: string,
  parent: Ca,
  key: KeyPair,
  id: string,
  options: { pathLen?: number; zone?: Zone },
): Ca {
  const subject: Subject = {
    commonName: `Sigil Differential ${id.replace(/[^A-Za-z0-9 .-]/g, '-')} ${key.type}`,
    organization: 'Sigil Differential',
    ...(rng.chance(0.5) ? { organizationalUnit: randomSubjectText() } : {}),
  };
  const custom = randomCustomExtensions();
  const crl = rng.chance(0.5) ? [`http://crl.example.com/${rng.word()}.crl`] : [];
  const cert = issueUnder(
    parent,
    id,
    'intermediate',
    key,
    {
      subject,
      ttlMs: randomTtl(YEAR, 15 * YEAR),
      pathLen: options.pathLen,
      nameConstraints: options.zone ? toNameConstraints(options.zone.constraints) : undefined,
      crlDistributionPoints: crl,
      extensions: custom,
    },
    custom,
  );
  if (options.zone) cert.constraints = options.zone.constraints;
  const ca: Ca = {
    cert,
    privateKey: key.privateKey,
    issuer: Issuer.fromCertificate(cert.der, key.privateKey),
    zone: options.zone ?? parent.zone,
    file: '',
  };
  ca.file = writeCert(dir, cert);
  return ca;
}

function makeLeaf(ca: Ca, id: string, leafKeys: Record<KeyType, KeyPair[]>): Expected {
  const kind = rng.pick(LEAF_PROFILES);
  const key = rng.pick(leafKeys[rng.pick(KEY_TYPES)]);
  const sans = randomSans(ca.zone);
  const subject = rng.chance(0.3) ? undefined : randomSubject(randomSubjectText());
  const crl = rng.chance(0.3)
    ? Array.from({ length: rng.int(1, 2) }, () => `http://crl${rng.int(1, 9)}.example.net/${rng.word()}.crl`)
    : [];
  const custom = randomCustomExtensions();
  return issueUnder(
    ca,
    id,
    kind,
    key,
    { subject, sans, ...randomLifetime(), crlDistributionPoints: crl, extensions: custom },
    custom,
  );
}

const LEAVES_PER_ROOT = 30;
const LEAVES_PER_INTERMEDIATE = 46;
const LEAVES_CONSTRAINED = 25;

async function buildCorpus(): Promise<Corpus> {
  const started = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'sigil-differential-'));
  const [caKeys, leafKeys] = await Promise.all([makePool(CA_KEY_COUNTS), makePool(LEAF_KEY_COUNTS)]);
  const caKeyUse: Record<KeyType, number> = {
    p256: 0,
    p384: 0,
    ed25519: 0,
    rsa2048: 0,
    rsa3072: 0,
    rsa4096: 0,
  };
  const nextCaKey = (type: KeyType): KeyPair => caKeys[type][caKeyUse[type]++ % caKeys[type].length];

  const roots: Ca[] = [];
  const chains: Chain[] = [];
  const all: Expected[] = [];

  KEY_TYPES.forEach((type, i) => {
    const root = makeRoot(dir, nextCaKey(type), i, { pathLen: rng.pick([undefined, 1, 2, 5]) });
    roots.push(root);
    all.push(root.cert);
    const direct: Chain = { id: `root#${i} (${type})`, root, members: [root.cert] };
    chains.push(direct);
    for (let n = 0; n < LEAVES_PER_ROOT; n++) {
      direct.members.push(makeLeaf(root, `root#${i}/leaf#${n}`, leafKeys));
    }
    for (let j = 0; j < 3; j++) {
      // Intermediates of every other key type: each type issues below a root
      // and below an intermediate, and the root's own key is never reused.
      const interType = KEY_TYPES[(i + j + 1) % KEY_TYPES.length];
      const id = `root#${i}/inter#${j}`;
      const options =
        j === 0 ? { pathLen: 0 } : j === 1 ? {} : { pathLen: rng.pick([0, undefined]), zone: randomZone(i) };
      const inter = makeIntermediate(dir, root, nextCaKey(interType), id, options);
      direct.members.push(inter.cert);
      const chain: Chain = { id: `${id} (${type} → ${interType})`, root, intermediate: inter, members: [] };
      chains.push(chain);
      for (let n = 0; n < LEAVES_PER_INTERMEDIATE; n++) {
        chain.members.push(makeLeaf(inter, `${id}/leaf#${n}`, leafKeys));
      }
    }
  });

  // A name-constrained root (constraints on the trust anchor apply too) with
  // leaves directly below it and below an unconstrained intermediate.
  const zone = randomZone(99);
  const constrainedRoot = makeRoot(dir, nextCaKey('p256'), 6, { pathLen: 1, zone });
  roots.push(constrainedRoot);
  const direct: Chain = { id: 'constrained root', root: constrainedRoot, members: [constrainedRoot.cert] };
  chains.push(direct);
  for (let n = 0; n < LEAVES_CONSTRAINED; n++) {
    direct.members.push(makeLeaf(constrainedRoot, `constrained-root/leaf#${n}`, leafKeys));
  }
  const inter = makeIntermediate(dir, constrainedRoot, nextCaKey('p384'), 'constrained-root/inter', {
    pathLen: 0,
  });
  direct.members.push(inter.cert);
  const below: Chain = {
    id: 'constrained root → intermediate',
    root: constrainedRoot,
    intermediate: inter,
    members: [],
  };
  chains.push(below);
  for (let n = 0; n < LEAVES_CONSTRAINED; n++) {
    below.members.push(makeLeaf(inter, `constrained-root/inter/leaf#${n}`, leafKeys));
  }

  for (const chain of chains) for (const cert of chain.members) if (!all.includes(cert)) all.push(cert);
  const byDer = new Map(all.map((c) => [c.der, c]));
  return { dir, roots, chains, all, byDer, leafKeys, caKeys, buildMs: performance.now() - started };
}

// ---------------------------------------------------------------------------
// Expectations shared by the readers

const EKU = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' } as const;
const EKU_TEXT: Record<string, string> = {
  [EKU.serverAuth]: 'TLS Web Server Authentication',
  [EKU.clientAuth]: 'TLS Web Client Authentication',
};

const isCa = (c: Expected): boolean => c.kind === 'root' || c.kind === 'intermediate';
const isRsa = (t: KeyType): boolean => t.startsWith('rsa');

function expectedEku(c: Expected): string[] {
  if (c.kind === 'server') return [EKU.serverAuth];
  if (c.kind === 'client') return [EKU.clientAuth];
  if (c.kind === 'server+client') return [EKU.serverAuth, EKU.clientAuth];
  return [];
}

type Usage = 'digitalSignature' | 'keyEncipherment' | 'keyCertSign' | 'cRLSign';
function expectedKeyUsage(c: Expected): Usage[] {
  if (isCa(c)) return ['digitalSignature', 'keyCertSign', 'cRLSign'];
  return isRsa(c.keyType) ? ['digitalSignature', 'keyEncipherment'] : ['digitalSignature'];
}

function subjectPairs(s: Subject): [string, string][] {
  const out: [string, string][] = [];
  if (s.country !== undefined) out.push(['C', s.country]);
  if (s.organization !== undefined) out.push(['O', s.organization]);
  if (s.organizationalUnit !== undefined) out.push(['OU', s.organizationalUnit]);
  out.push(['CN', s.commonName]);
  return out;
}

/** A SAN as a comparable string: type plus value, IPs as hex bytes. */
function sanKey(type: string, value: string): string {
  if (type === 'ip') return `ip:${ipBytes(value).toString('hex')}`;
  return `${type}:${value}`;
}
const expectedSanKeys = (c: Expected): string[] =>
  c.sans.map((n) => (n.type === 'ip' ? `ip:${n.bytes.toString('hex')}` : `${n.type}:${n.value}`));

function expectedExtensionOids(c: Expected): string[] {
  const oids = ['2.5.29.19', '2.5.29.15', '2.5.29.14', '2.5.29.35'];
  if (!isCa(c)) oids.push('2.5.29.37');
  if (c.sans.length > 0) oids.push('2.5.29.17');
  if (c.constraints) oids.push('2.5.29.30');
  if (c.crlDistributionPoints.length > 0) oids.push('2.5.29.31');
  for (const x of c.custom) oids.push(x.oid);
  return oids.sort();
}

const SIGNATURE_NAME: Record<KeyType, string> = {
  p256: 'ecdsa-with-SHA256',
  p384: 'ecdsa-with-SHA384',
  ed25519: 'ED25519',
  rsa2048: 'sha256WithRSAEncryption',
  rsa3072: 'sha256WithRSAEncryption',
  rsa4096: 'sha256WithRSAEncryption',
};

// ---------------------------------------------------------------------------
// openssl -text parsing

interface OpensslCert {
  serial: string; // lower-case hex, no leading zeros
  version: string;
  signatureAlgorithm: string;
  issuer: string;
  subject: string;
  notBefore: number;
  notAfter: number;
  publicKeyAlgorithm: string;
  publicKeyLines: string[];
  extensions: Map<string, { critical: boolean; lines: string[] }>;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
function opensslDate(text: string): number {
  const m = /^(\w{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4}) GMT$/.exec(text.trim());
  assert.ok(m, `unexpected openssl date "${text}"`);
  return Date.UTC(Number(m[6]), MONTHS.indexOf(m[1]), Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]));
}

/**
 * openssl -text prints names with UTF-8 bytes as "\xC3\xBC" and escapes "/"
 * as "\/"; undo both (our values hold no backslashes).
 */
function unescapeOpensslName(text: string): string {
  const latin1 = text.replace(
    /\\x([0-9A-Fa-f]{2})|\\(.)/g,
    (_, hex: string | undefined, char: string | undefined) =>
      hex !== undefined ? String.fromCharCode(Number.parseInt(hex, 16)) : (char as string),
  );
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

function parseOpensslText(block: string): OpensslCert {
  const lines = block.split('\n');
  const field = (re: RegExp): string => {
    for (const line of lines) {
      const m = re.exec(line);
      if (m) return m[1];
    }
    assert.fail(`openssl -text output lacks ${re}:\n${block.slice(0, 2000)}`);
  };
  let serial: string;
  const serialIndex = lines.findIndex((l) => /^ {8}Serial Number:/.test(l));
  const inline = /Serial Number: (\d+) \(0x([0-9a-f]+)\)/.exec(lines[serialIndex]);
  if (inline) serial = inline[2];
  else serial = lines[serialIndex + 1].trim().replaceAll(':', '');
  const extensions = new Map<string, { critical: boolean; lines: string[] }>();
  const start = lines.indexOf('        X509v3 extensions:');
  if (start >= 0) {
    let current: string[] | null = null;
    for (const line of lines.slice(start + 1)) {
      if (/^ {4}\S/.test(line)) break; // "    Signature Algorithm: …"
      const header = /^ {12}(\S.*?):( critical)?\s*$/.exec(line);
      if (header && !/^ {13}/.test(line)) {
        current = [];
        extensions.set(header[1], { critical: header[2] !== undefined, lines: current });
      } else if (current && line.trim() !== '') {
        current.push(line.trim());
      }
    }
  }
  return {
    serial: serial.toLowerCase().replace(/^0+(?=.)/, ''),
    version: field(/^ {8}Version: (.*)$/),
    signatureAlgorithm: field(/^ {8}Signature Algorithm: (.*)$/),
    issuer: unescapeOpensslName(field(/^ {8}Issuer: (.*)$/)),
    subject: unescapeOpensslName(field(/^ {8}Subject: (.*)$/)),
    notBefore: opensslDate(field(/Not Before: (.*)$/)),
    notAfter: opensslDate(field(/Not After : (.*)$/)),
    publicKeyAlgorithm: field(/Public Key Algorithm: (.*)$/),
    publicKeyLines: lines.filter((l) => /^ {16}\S/.test(l)).map((l) => l.trim()),
    extensions,
  };
}

const opensslName = (s: Subject): string =>
  subjectPairs(s)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

/** ASN1_STRING_print's rendering of an unknown extension's value. */
const opensslPrintable = (value: Buffer): string =>
  [...value].map((b) => (b > 0x7e || b < 0x20 ? '.' : String.fromCharCode(b))).join('');

const KU_TEXT: Record<Usage, string> = {
  digitalSignature: 'Digital Signature',
  keyEncipherment: 'Key Encipherment',
  keyCertSign: 'Certificate Sign',
  cRLSign: 'CRL Sign',
};

const hexColons = (b: Buffer): string =>
  b
    .toString('hex')
    .toUpperCase()
    .replace(/(..)(?!$)/g, '$1:');

function opensslSanKey(item: string): string {
  const m = /^(DNS|IP Address|URI|email):(.*)$/.exec(item);
  assert.ok(m, `unexpected openssl SAN item "${item}"`);
  const type = { DNS: 'dns', 'IP Address': 'ip', URI: 'uri', email: 'email' }[m[1]] as string;
  return sanKey(type, m[2]);
}

/** Name constraint lines ("Permitted:", "DNS:x", "IP:a/m", …) to comparable keys. */
function opensslConstraintKeys(lines: string[]): string[] {
  const out: string[] = [];
  let section = '';
  for (const line of lines) {
    if (line === 'Permitted:' || line === 'Excluded:') {
      section = line.slice(0, -1).toLowerCase();
      continue;
    }
    const m = /^(DNS|IP|URI):(.*)$/.exec(line);
    assert.ok(m, `unexpected name constraint line "${line}"`);
    if (m[1] === 'IP') {
      const [address, mask] = m[2].split('/');
      out.push(`${section}:ip:${Buffer.concat([ipBytes(address), ipBytes(mask)]).toString('hex')}`);
    } else out.push(`${section}:${m[1].toLowerCase()}:${m[2]}`);
  }
  return out.sort();
}

function expectedConstraintKeys(c: ConstraintText): string[] {
  return [
    ...c.permittedDns.map((d) => `permitted:dns:${d}`),
    ...c.excludedDns.map((d) => `excluded:dns:${d}`),
    ...c.permittedIp.map((r) => `permitted:ip:${cidrBytes(r).toString('hex')}`),
    ...c.excludedIp.map((r) => `excluded:ip:${cidrBytes(r).toString('hex')}`),
    ...c.permittedUri.map((u) => `permitted:uri:${u}`),
    ...c.excludedUri.map((u) => `excluded:uri:${u}`),
  ].sort();
}

const OPENSSL_EXTENSION_NAMES: Record<string, string> = {
  'X509v3 Basic Constraints': '2.5.29.19',
  'X509v3 Key Usage': '2.5.29.15',
  'X509v3 Extended Key Usage': '2.5.29.37',
  'X509v3 Subject Key Identifier': '2.5.29.14',
  'X509v3 Authority Key Identifier': '2.5.29.35',
  'X509v3 Subject Alternative Name': '2.5.29.17',
  'X509v3 Name Constraints': '2.5.29.30',
  'X509v3 CRL Distribution Points': '2.5.29.31',
};

function checkOpensslText(c: Expected, o: OpensslCert): void {
  const at = (what: string) => where(`${c.id}: openssl ${what}`);
  assert.equal(o.serial, c.serialHex, at('serial'));
  assert.equal(o.version, '3 (0x2)', at('version'));
  assert.equal(o.signatureAlgorithm, SIGNATURE_NAME[c.issuerKeyType], at('signature algorithm'));
  assert.equal(o.subject, opensslName(c.subject), at('subject'));
  assert.equal(o.issuer, opensslName(c.issuerSubject), at('issuer'));
  assert.equal(o.notBefore, c.notBefore, at('notBefore'));
  assert.equal(o.notAfter, c.notAfter, at('notAfter'));
  const keyDetail: Record<KeyType, [string, string[]]> = {
    p256: ['id-ecPublicKey', ['Public-Key: (256 bit)', 'NIST CURVE: P-256']],
    p384: ['id-ecPublicKey', ['Public-Key: (384 bit)', 'NIST CURVE: P-384']],
    ed25519: ['ED25519', ['ED25519 Public-Key:']],
    rsa2048: ['rsaEncryption', ['Public-Key: (2048 bit)', 'Exponent: 65537 (0x10001)']],
    rsa3072: ['rsaEncryption', ['Public-Key: (3072 bit)', 'Exponent: 65537 (0x10001)']],
    rsa4096: ['rsaEncryption', ['Public-Key: (4096 bit)', 'Exponent: 65537 (0x10001)']],
  };
  const [algorithm, details] = keyDetail[c.keyType];
  assert.equal(o.publicKeyAlgorithm, algorithm, at('public key algorithm'));
  for (const line of details) assert.ok(o.publicKeyLines.includes(line), at(`public key: ${line}`));

  const seen = [...o.extensions.keys()].map((name) => OPENSSL_EXTENSION_NAMES[name] ?? name).sort();
  assert.deepEqual(seen, expectedExtensionOids(c), at('extension list'));
  const ext = (name: string) => {
    const e = o.extensions.get(name);
    assert.ok(e, at(`extension ${name}`));
    return e;
  };
  const bc = ext('X509v3 Basic Constraints');
  assert.equal(bc.critical, true, at('basicConstraints critical'));
  const bcText = isCa(c) ? `CA:TRUE${c.pathLen !== undefined ? `, pathlen:${c.pathLen}` : ''}` : 'CA:FALSE';
  assert.deepEqual(bc.lines, [bcText], at('basicConstraints'));
  const ku = ext('X509v3 Key Usage');
  assert.equal(ku.critical, true, at('keyUsage critical'));
  assert.deepEqual(
    ku.lines,
    [
      expectedKeyUsage(c)
        .map((u) => KU_TEXT[u])
        .join(', '),
    ],
    at('keyUsage'),
  );
  if (!isCa(c)) {
    const eku = ext('X509v3 Extended Key Usage');
    assert.equal(eku.critical, false, at('EKU critical'));
    assert.deepEqual(
      eku.lines,
      [
        expectedEku(c)
          .map((oid) => EKU_TEXT[oid])
          .join(', '),
      ],
      at('EKU'),
    );
  }
  const ski = ext('X509v3 Subject Key Identifier');
  assert.equal(ski.critical, false, at('SKI critical'));
  assert.deepEqual(ski.lines, [hexColons(c.ski)], at('SKI'));
  const aki = ext('X509v3 Authority Key Identifier');
  assert.equal(aki.critical, false, at('AKI critical'));
  assert.deepEqual(
    aki.lines.map((l) => l.replace(/^keyid:/, '')),
    [hexColons(c.aki)],
    at('AKI'),
  );
  if (c.sans.length > 0) {
    const san = ext('X509v3 Subject Alternative Name');
    assert.equal(san.critical, false, at('SAN critical'));
    assert.equal(san.lines.length, 1, at('SAN lines'));
    assert.deepEqual(san.lines[0].split(', ').map(opensslSanKey), expectedSanKeys(c), at('SANs'));
  }
  if (c.constraints) {
    const nc = ext('X509v3 Name Constraints');
    assert.equal(nc.critical, true, at('nameConstraints critical'));
    assert.deepEqual(
      opensslConstraintKeys(nc.lines),
      expectedConstraintKeys(c.constraints),
      at('nameConstraints'),
    );
  }
  if (c.crlDistributionPoints.length > 0) {
    const dp = ext('X509v3 CRL Distribution Points');
    assert.equal(dp.critical, false, at('CRL DP critical'));
    const uris = dp.lines.filter((l) => l !== 'Full Name:').map((l) => l.replace(/^URI:/, ''));
    assert.equal(
      dp.lines.filter((l) => l === 'Full Name:').length,
      c.crlDistributionPoints.length,
      at('CRL DPs'),
    );
    assert.deepEqual(uris, c.crlDistributionPoints, at('CRL DP URIs'));
  }
  for (const custom of c.custom) {
    const e = ext(custom.oid);
    assert.equal(e.critical, false, at(`${custom.oid} critical`));
    assert.equal(e.lines.join(''), opensslPrintable(custom.value).trim(), at(`${custom.oid} value`));
  }
}

// ---------------------------------------------------------------------------
// The tests

let corpus: Corpus;

describe('differential: issued certificates read back by independent implementations', () => {
  before(async () => {
    corpus = await buildCorpus();
  });
  after(() => {
    if (corpus && !process.env.SIGIL_TEST_KEEP) rmSync(corpus.dir, { recursive: true, force: true });
  });

  test('the corpus covers every key type, profile and extension mix', (t) => {
    const { all } = corpus;
    t.diagnostic(`seed ${SEED}; ${all.length} certificates built in ${Math.round(corpus.buildMs)} ms`);
    const sanCounts = { dns: 0, ip: 0, uri: 0, email: 0 };
    for (const c of all) for (const n of c.sans) sanCounts[n.type]++;
    t.diagnostic(
      `SANs ${JSON.stringify(sanCounts)}; custom extensions ${all.reduce((n, c) => n + c.custom.length, 0)}; ` +
        `clamped ${all.filter((c) => c.clamped).length}`,
    );
    assert.ok(all.length >= 1000, `only ${all.length} certificates`);
    const count = (pred: (c: Expected) => boolean) => all.filter(pred).length;
    for (const type of KEY_TYPES) {
      assert.ok(count((c) => c.kind === 'root' && c.keyType === type) >= 1, `root ${type}`);
      assert.ok(count((c) => c.kind === 'intermediate' && c.keyType === type) >= 1, `intermediate ${type}`);
      assert.ok(count((c) => !isCa(c) && c.keyType === type) >= 5, `leaf key ${type}`);
      assert.ok(
        count((c) => c.kind === 'intermediate' && c.issuerKeyType === type) >= 1,
        `${type} issues CAs`,
      );
      assert.ok(count((c) => !isCa(c) && c.issuerKeyType === type) >= 30, `${type} issues leaves`);
    }
    for (const kind of LEAF_PROFILES) assert.ok(count((c) => c.kind === kind) >= 100, kind);
    const cases: [string, (c: Expected) => boolean][] = [
      ['CA with pathLen', (c) => isCa(c) && c.pathLen !== undefined],
      ['CA with pathLen 0', (c) => c.pathLen === 0],
      ['CA without pathLen', (c) => isCa(c) && c.pathLen === undefined],
      ['intermediate with name constraints', (c) => c.kind === 'intermediate' && c.constraints !== undefined],
      ['root with name constraints', (c) => c.kind === 'root' && c.constraints !== undefined],
      ['wildcard DNS', (c) => c.sans.some((n) => n.type === 'dns' && n.value.startsWith('*.'))],
      ['IPv4', (c) => c.sans.some((n) => n.type === 'ip' && n.bytes.length === 4)],
      ['IPv6', (c) => c.sans.some((n) => n.type === 'ip' && n.bytes.length === 16)],
      ['SPIFFE ID', (c) => c.sans.some((n) => n.type === 'uri' && n.value.startsWith('spiffe://'))],
      ['other URI', (c) => c.sans.some((n) => n.type === 'uri' && !n.value.startsWith('spiffe://'))],
      ['email', (c) => c.sans.some((n) => n.type === 'email')],
      ['no DNS SAN', (c) => !isCa(c) && !c.sans.some((n) => n.type === 'dns')],
      ['CRL distribution points', (c) => c.crlDistributionPoints.length > 0],
      ['two CRL distribution points', (c) => c.crlDistributionPoints.length > 1],
      ['custom extension', (c) => c.custom.length > 0],
      ['two custom extensions', (c) => c.custom.length > 1],
      ['custom extension under 2.25', (c) => c.custom.some((x) => x.oid.startsWith('2.25.'))],
      ['subject with O', (c) => c.subject.organization !== undefined],
      ['subject with OU', (c) => c.subject.organizationalUnit !== undefined],
      ['subject with C', (c) => c.subject.country !== undefined],
      ['subject CN only', (c) => subjectPairs(c.subject).length === 1],
      ['leaf clamped to its issuer', (c) => c.clamped],
      ['notAfter past 2049 (GeneralizedTime)', (c) => c.notAfter >= Date.UTC(2050, 0, 1)],
      ['notAfter within a day', (c) => c.notAfter - c.notBefore < DAY],
    ];
    for (const [name, pred] of cases) assert.ok(count(pred) >= 1, where(`no certificate with ${name}`));
  });

  test('openssl verify -x509_strict accepts every certificate in every chain', async (t) => {
    const results = await mapLimit(corpus.chains, CONCURRENCY, async (chain) => {
      const files = chain.members.map((c) => writeCert(corpus.dir, c));
      const args = ['verify', '-x509_strict', '-CAfile', chain.root.file];
      if (chain.intermediate) args.push('-untrusted', chain.intermediate.file);
      const result = await run('openssl', [...args, ...files]);
      return { chain, files, result };
    });
    let verified = 0;
    for (const { chain, files, result } of results) {
      const lines = result.stdout.trim().split('\n');
      const failed = files.filter((f, i) => lines[i] !== `${f}: OK`);
      assert.deepEqual(
        failed.map((f) => chain.members[files.indexOf(f)].id),
        [],
        where(`chain ${chain.id}: openssl verify failed:\n${result.stdout}\n${result.stderr}`),
      );
      assert.equal(result.code, 0, where(`chain ${chain.id}: exit code`));
      assert.equal(lines.length, files.length, where(`chain ${chain.id}: output lines`));
      verified += files.length;
    }
    t.diagnostic(`${verified} certificates verified in ${results.length} openssl runs`);
  });

  test('openssl enforces the name constraints and path lengths we wrote', async () => {
    const constrained = corpus.chains.find((c) => c.intermediate?.cert.constraints !== undefined);
    assert.ok(constrained?.intermediate);
    const inter = constrained.intermediate;
    const zone = inter.zone!;
    const key = corpus.leafKeys.p256[0];
    const probe = (what: string, sans: GeneralName[]) =>
      writeCert(corpus.dir, issueUnder(inter, `nc-probe ${what}`, 'server', key, { sans, ttlMs: HOUR }, []));
    const inside = dnsName(`ok.${zone.dnsBase}`);
    const cases: [string, string, RegExp | null][] = [
      ['inside', probe('inside', [inside, ipAddress(`10.${zone.v4Prefix[1]}.1.2`)]), null],
      ['outside DNS', probe('outside DNS', [dnsName('outside.example.com')]), /permitted subtree violation/],
      [
        'excluded DNS',
        probe('excluded DNS', [dnsName(`x.blocked.${zone.dnsBase}`)]),
        /excluded subtree violation/,
      ],
      ['outside IP', probe('outside IP', [inside, ipAddress('192.0.2.1')]), /permitted subtree violation/],
      [
        'outside URI',
        probe('outside URI', [inside, uriName(spiffeId('other.example', 'x'))]),
        /permitted subtree violation/,
      ],
    ];
    await mapLimit(cases, CONCURRENCY, async ([what, file, failure]) => {
      const result = await run('openssl', [
        'verify',
        '-x509_strict',
        '-CAfile',
        constrained.root.file,
        '-untrusted',
        inter.file,
        file,
      ]);
      const output = result.stdout + result.stderr;
      if (failure === null) assert.equal(result.code, 0, where(`${what}: ${output}`));
      else {
        assert.notEqual(result.code, 0, where(`${what} accepted: ${output}`));
        assert.match(output, failure, where(what));
      }
    });
    // A pathLen 0 intermediate may not have a CA below it.
    const zeroPath = corpus.chains.find((c) => c.intermediate?.cert.pathLen === 0 && !c.intermediate.zone)!;
    const subKey = { ...generateKeyPair('p256'), type: 'p256' as const };
    const sub = makeIntermediate(corpus.dir, zeroPath.intermediate!, subKey, 'pathlen-probe', {});
    const subLeaf = writeCert(
      corpus.dir,
      issueUnder(
        sub,
        'pathlen-probe/leaf',
        'client',
        key,
        { sans: [dnsName('a.example.com')], ttlMs: HOUR },
        [],
      ),
    );
    const result = await run('openssl', [
      'verify',
      '-x509_strict',
      '-CAfile',
      zeroPath.root.file,
      '-untrusted',
      zeroPath.intermediate!.file,
      '-untrusted',
      sub.file,
      subLeaf,
    ]);
    assert.notEqual(result.code, 0, where(`pathLen 0 ignored: ${result.stdout}`));
    assert.match(result.stdout + result.stderr, /path length constraint exceeded/);
  });

  test('openssl x509 -text shows exactly what was requested', async (t) => {
    const halves = [corpus.all.filter((_, i) => i % 2 === 0), corpus.all.filter((_, i) => i % 2 === 1)];
    const outputs = await mapLimit(halves, CONCURRENCY, async (certs) => {
      const bundle = join(corpus.dir, `bundle-${certs.length}-${certs[0].serialHex}.pem`);
      writeFileSync(bundle, certs.map((c) => pem('CERTIFICATE', c.der)).join(''));
      const result = await run('sh', [
        '-c',
        'openssl crl2pkcs7 -nocrl -certfile "$1" | openssl pkcs7 -print_certs -text -noout',
        'sh',
        bundle,
      ]);
      assert.equal(result.code, 0, result.stderr);
      return result.stdout;
    });
    const bySerial = new Map(corpus.all.map((c) => [c.serialHex, c]));
    let checked = 0;
    for (const output of outputs) {
      for (const block of output.split(/^Certificate:$/m).slice(1)) {
        const parsed = parseOpensslText(block);
        const expected = bySerial.get(parsed.serial);
        assert.ok(expected, `openssl printed an unknown serial ${parsed.serial}`);
        checkOpensslText(expected, parsed);
        bySerial.delete(parsed.serial);
        checked++;
      }
    }
    assert.deepEqual(
      [...bySerial.values()].map((c) => c.id),
      [],
      'certificates missing from the openssl output',
    );
    t.diagnostic(`${checked} certificates compared with openssl -text`);
  });

  test('@peculiar/x509 reads back what was requested and verifies every signature', async (t) => {
    const usageFlag: Record<Usage, number> = {
      digitalSignature: KeyUsageFlags.digitalSignature,
      keyEncipherment: KeyUsageFlags.keyEncipherment,
      keyCertSign: KeyUsageFlags.keyCertSign,
      cRLSign: KeyUsageFlags.cRLSign,
    };
    const sanTypes: Record<string, string> = { dns: 'dns', ip: 'ip', url: 'uri', email: 'email' };
    const issuerCerts = new Map<Buffer, PeculiarX509Certificate>();
    for (const c of corpus.all) if (isCa(c)) issuerCerts.set(c.der, new PeculiarX509Certificate(c.der));
    let verified = 0;
    await mapLimit(corpus.all, 8, async (c) => {
      const at = (what: string) => where(`${c.id}: @peculiar/x509 ${what}`);
      const cert = new PeculiarX509Certificate(c.der);
      assert.equal(cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''), c.serialHex, at('serial'));
      const pairs = (json: Record<string, string[]>[]) =>
        json.flatMap((rdn) => Object.entries(rdn).map(([k, v]) => [k, v.join('+')]));
      assert.deepEqual(pairs(cert.subjectName.toJSON()), subjectPairs(c.subject), at('subject'));
      assert.deepEqual(pairs(cert.issuerName.toJSON()), subjectPairs(c.issuerSubject), at('issuer'));
      assert.equal(cert.notBefore.getTime(), c.notBefore, at('notBefore'));
      assert.equal(cert.notAfter.getTime(), c.notAfter, at('notAfter'));
      assert.deepEqual(
        Array.from(cert.extensions, (e) => e.type).sort(),
        expectedExtensionOids(c).map(peculiarOid).sort(),
        at('extension list'),
      );

      const bc = cert.getExtension(BasicConstraintsExtension);
      assert.ok(bc, at('basicConstraints'));
      assert.equal(bc.critical, true, at('basicConstraints critical'));
      assert.equal(bc.ca, isCa(c), at('cA'));
      assert.equal(bc.pathLength, c.pathLen, at('pathLen'));
      const ku = cert.getExtension(KeyUsagesExtension);
      assert.ok(ku?.critical, at('keyUsage critical'));
      assert.equal(
        ku.usages,
        expectedKeyUsage(c).reduce((a, u) => a | usageFlag[u], 0),
        at('keyUsage'),
      );
      const eku = cert.getExtension(ExtendedKeyUsageExtension);
      if (isCa(c)) assert.equal(eku, null, at('EKU on a CA'));
      else {
        assert.ok(eku && !eku.critical, at('EKU'));
        assert.deepEqual(Array.from(eku.usages), expectedEku(c), at('EKU'));
      }
      const ski = cert.getExtension(SubjectKeyIdentifierExtension);
      assert.equal(ski?.keyId, c.ski.toString('hex'), at('SKI'));
      const aki = cert.getExtension(AuthorityKeyIdentifierExtension);
      assert.equal(aki?.keyId, c.aki.toString('hex'), at('AKI'));
      assert.equal(aki?.certId, undefined, at('AKI issuer/serial'));
      const san = cert.getExtension(SubjectAlternativeNameExtension);
      if (c.sans.length === 0) assert.equal(san, null, at('SAN on a CA'));
      else {
        assert.ok(san && !san.critical, at('SAN'));
        assert.deepEqual(
          san.names.items.map((n) => sanKey(sanTypes[n.type] ?? n.type, n.value)),
          expectedSanKeys(c),
          at('SANs'),
        );
      }
      const dp = cert.getExtension(CRLDistributionPointsExtension);
      assert.deepEqual(
        Array.from(dp?.distributionPoints ?? []).flatMap(
          (point) => point.distributionPoint?.fullName?.map((n) => n.uniformResourceIdentifier) ?? [],
        ),
        c.crlDistributionPoints,
        at('CRL distribution points'),
      );
      const ncExt = cert.getExtension('2.5.29.30');
      if (c.constraints) {
        assert.ok(ncExt?.critical, at('nameConstraints critical'));
        const nc = AsnConvert.parse(ncExt.value, AsnNameConstraints);
        const keys = (
          section: string,
          subtrees: { base: AsnGeneralName; minimum: number; maximum?: number }[],
        ) =>
          subtrees.map((s) => {
            assert.equal(s.minimum, 0, at('subtree minimum'));
            assert.equal(s.maximum, undefined, at('subtree maximum'));
            if (s.base.dNSName !== undefined) return `${section}:dns:${s.base.dNSName}`;
            if (s.base.uniformResourceIdentifier !== undefined) {
              return `${section}:uri:${s.base.uniformResourceIdentifier}`;
            }
            // The library renders iPAddress as a prefix length; compare the raw
            // address || mask bytes instead (tag [7], short length).
            const raw = Buffer.from(AsnConvert.serialize(s.base));
            assert.equal(raw[0], 0x87, at('iPAddress tag'));
            const bytes = raw.subarray(2);
            return `${section}:ip:${bytes.toString('hex')}`;
          });
        assert.deepEqual(
          [
            ...keys('permitted', nc.permittedSubtrees ?? []),
            ...keys('excluded', nc.excludedSubtrees ?? []),
          ].sort(),
          expectedConstraintKeys(c.constraints),
          at('nameConstraints'),
        );
      } else assert.equal(ncExt, null, at('unexpected nameConstraints'));
      for (const custom of c.custom) {
        const e = cert.extensions.find(
          (x) => x.type === peculiarOid(custom.oid) && Buffer.from(x.value).equals(custom.value),
        );
        assert.ok(e && !e.critical, at(`${custom.oid}`));
        assert.deepEqual(Buffer.from(e.value), custom.value, at(`${custom.oid} value`));
      }
      const issuerCert = issuerCerts.get(c.issuerDer);
      assert.ok(issuerCert, at('issuer certificate'));
      assert.equal(
        await cert.verify({ publicKey: issuerCert.publicKey, signatureOnly: true }),
        true,
        at('signature'),
      );
      verified++;
    });
    t.diagnostic(`${verified} certificates read and verified with @peculiar/x509`);
  });

  test("Node's X509Certificate reads back what was requested and verifies every signature", (t) => {
    const nodeSanKey = (item: string): string => {
      const m = /^(DNS|IP Address|URI|email):(.*)$/.exec(item);
      assert.ok(m, `unexpected Node SAN item "${item}"`);
      const value = m[2].startsWith('"') ? (JSON.parse(m[2]) as string) : m[2];
      return sanKey({ DNS: 'dns', 'IP Address': 'ip', URI: 'uri', email: 'email' }[m[1]] as string, value);
    };
    const issuers = new Map<Buffer, NodeX509Certificate>();
    for (const c of corpus.all) if (isCa(c)) issuers.set(c.der, new NodeX509Certificate(c.der));
    for (const c of corpus.all) {
      const at = (what: string) => where(`${c.id}: Node X509Certificate ${what}`);
      const cert = new NodeX509Certificate(c.der);
      assert.equal(cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''), c.serialHex, at('serial'));
      const lines = (s: Subject) => subjectPairs(s).map(([k, v]) => `${k}=${v}`);
      assert.deepEqual(cert.subject.split('\n'), lines(c.subject), at('subject'));
      assert.deepEqual(cert.issuer.split('\n'), lines(c.issuerSubject), at('issuer'));
      assert.equal(cert.validFromDate.getTime(), c.notBefore, at('validFrom'));
      assert.equal(cert.validToDate.getTime(), c.notAfter, at('validTo'));
      assert.equal(cert.ca, isCa(c), at('ca'));
      assert.deepEqual(cert.keyUsage ?? [], expectedEku(c), at('extended key usage'));
      assert.ok(cert.publicKey.equals(c.publicKey), at('public key'));
      if (c.sans.length === 0) assert.equal(cert.subjectAltName, undefined, at('SAN on a CA'));
      else {
        assert.deepEqual(cert.subjectAltName?.split(', ').map(nodeSanKey), expectedSanKeys(c), at('SANs'));
        // OpenSSL's own matchers agree with the names.
        for (const name of c.sans) {
          if (name.type === 'dns') {
            const host = name.value.replace(/^\*\./, 'wild.');
            assert.equal(cert.checkHost(host, { subject: 'never' }), name.value, at(`checkHost ${host}`));
          } else if (name.type === 'ip') {
            assert.equal(cert.checkIP(name.value), name.value, at(`checkIP ${name.value}`));
          } else if (name.type === 'email') {
            assert.equal(cert.checkEmail(name.value, { subject: 'never' }), name.value, at('checkEmail'));
          }
        }
      }
      const issuer = issuers.get(c.issuerDer);
      assert.ok(issuer, at('issuer'));
      assert.ok(cert.checkIssued(issuer), at('checkIssued'));
      assert.ok(cert.verify(c.issuerPublicKey), at('signature'));
    }
    t.diagnostic(`${corpus.all.length} certificates read and verified with Node's X509Certificate`);
  });

  test('CRLs from every issuer key type pass openssl crl -verify and revoke in openssl verify', async (t) => {
    const jobs: {
      root: Ca;
      crl: Buffer;
      entries: { serialHex: string; revokedAt: Date; reason: RevocationReason }[];
      n: bigint;
      nextUpdate: Date;
    }[] = [];
    const plainRoots = corpus.roots.slice(0, KEY_TYPES.length);
    for (const root of plainRoots) {
      for (let k = 0; k < 3; k++) {
        const count = k === 0 ? 0 : rng.int(1, 6);
        const entries = Array.from({ length: count }, () => ({
          serialHex: rng.bytes(rng.int(1, 20)).toString('hex').replace(/^0+/, '') || '1',
          revokedAt: new Date(Date.now() - rng.int(0, 30) * DAY),
          reason: rng.pick(REVOCATION_REASONS),
        }));
        if (k === 2) {
          // Revoke a real leaf directly below the root.
          const leaf = corpus.chains
            .find((c) => c.root === root && !c.intermediate)!
            .members.find((m) => !isCa(m))!;
          entries.push({ serialHex: leaf.serialHex, revokedAt: new Date(), reason: 'keyCompromise' });
        }
        const unique = [...new Map(entries.map((e) => [e.serialHex.replace(/^0+/, ''), e])).values()];
        // CRL numbers up to 20 octets.
        const n = k === 1 ? BigInt(`0x7f${rng.bytes(19).toString('hex')}`) : BigInt(rng.int(1, 1_000_000));
        const nextUpdate = new Date(Date.now() + rng.int(1, 30) * DAY);
        const crl = createCrl({
          issuerCertificate: root.cert.der,
          issuerKey: root.privateKey,
          entries: unique,
          crlNumber: n,
          nextUpdate,
        });
        jobs.push({ root, crl, entries: unique, n, nextUpdate });
      }
    }
    const REASON_TEXT: Record<RevocationReason, string> = {
      unspecified: 'Unspecified',
      keyCompromise: 'Key Compromise',
      cACompromise: 'CA Compromise',
      affiliationChanged: 'Affiliation Changed',
      superseded: 'Superseded',
      cessationOfOperation: 'Cessation Of Operation',
      certificateHold: 'Certificate Hold',
      removeFromCRL: 'Remove From CRL',
      privilegeWithdrawn: 'Privilege Withdrawn',
      aACompromise: 'AA Compromise',
    };
    let index = 0;
    await mapLimit(jobs, CONCURRENCY, async (job) => {
      const file = join(corpus.dir, `crl-${index++}.pem`);
      writeFileSync(file, pem('X509 CRL', job.crl));
      const at = (what: string) => where(`CRL of ${job.root.cert.id} (#${job.n}): ${what}`);
      const result = await run('openssl', [
        'crl',
        '-in',
        file,
        '-CAfile',
        job.root.file,
        '-verify',
        '-noout',
        '-text',
      ]);
      assert.equal(result.code, 0, at(result.stderr));
      assert.match(result.stderr, /verify OK/, at('signature'));
      const text = result.stdout;
      // openssl prints small numbers in decimal and large ones as 0x-hex.
      const crlNumber = /X509v3 CRL Number: *\n\s+(0x[0-9A-F]+|\d+)\n/.exec(text)?.[1];
      assert.equal(crlNumber === undefined ? undefined : BigInt(crlNumber), job.n, at('CRL number'));
      const issuerLine = subjectPairs(job.root.cert.subject)
        .map(([k, v]) => `${k} = ${v}`)
        .join(', ');
      assert.ok(text.includes(`Issuer: ${issuerLine}\n`), at('issuer'));
      assert.match(
        text,
        new RegExp(`keyid:${hexColons(job.root.cert.ski)}|\\n\\s+${hexColons(job.root.cert.ski)}\\n`),
        at('AKI'),
      );
      assert.equal(
        opensslDate(/Next Update: (.*)\n/.exec(text)?.[1] ?? ''),
        floorSeconds(job.nextUpdate.getTime()),
      );
      // "Revoked Certificates:" then one block per entry, each opened by "    Serial Number: …".
      const blocks = text.includes('No Revoked Certificates.')
        ? []
        : (text.split('Revoked Certificates:\n')[1] ?? '')
            .split(/^ {4}Signature Algorithm:/m)[0]
            .split(/^ {4}Serial Number: /m)
            .slice(1);
      const printed = new Map(
        blocks.map((block) => {
          const serial = block
            .slice(0, block.indexOf('\n'))
            .toLowerCase()
            .replace(/^0+(?=.)/, '');
          const date = opensslDate(/Revocation Date: (.*)\n/.exec(block)?.[1] ?? '');
          const reason = /X509v3 CRL Reason Code: *\n\s+(.*)\n/.exec(block)?.[1];
          return [serial, { date, reason }] as const;
        }),
      );
      assert.equal(printed.size, job.entries.length, at(`entry count\n${text}`));
      for (const entry of job.entries) {
        const hit = printed.get(entry.serialHex);
        assert.ok(hit, at(`serial ${entry.serialHex}`));
        assert.equal(
          hit.date,
          floorSeconds(entry.revokedAt.getTime()),
          at(`revocation date of ${entry.serialHex}`),
        );
        // RFC 5280 §5.3.1: "unspecified" SHOULD be absent.
        const reason = entry.reason === 'unspecified' ? undefined : REASON_TEXT[entry.reason];
        assert.equal(hit.reason, reason, at(`reason of ${entry.serialHex}`));
      }
    });
    // The CRL that revokes a real leaf makes openssl refuse that leaf (and only that one).
    const revoking = jobs.filter((j) =>
      j.entries.some((e) => corpus.all.some((c) => c.serialHex === e.serialHex)),
    );
    assert.equal(revoking.length, plainRoots.length);
    await mapLimit(revoking, CONCURRENCY, async (job) => {
      const revokedSerial = job.entries[job.entries.length - 1].serialHex;
      const chain = corpus.chains.find((c) => c.root === job.root && !c.intermediate)!;
      const revoked = chain.members.find((m) => m.serialHex === revokedSerial)!;
      const other = chain.members.find((m) => !isCa(m) && m !== revoked)!;
      const crlFile = join(corpus.dir, `crl-revoking-${job.root.cert.serialHex}.pem`);
      writeFileSync(crlFile, pem('X509 CRL', job.crl));
      const revokedFile = writeCert(corpus.dir, revoked);
      const otherFile = writeCert(corpus.dir, other);
      const result = await run('openssl', [
        'verify',
        '-crl_check',
        '-CAfile',
        job.root.file,
        '-CRLfile',
        crlFile,
        revokedFile,
        otherFile,
      ]);
      const output = result.stdout + result.stderr;
      assert.match(output, /certificate revoked/, where(`${revoked.id} not revoked: ${output}`));
      assert.ok(output.includes(`${otherFile}: OK`), where(`${other.id} refused: ${output}`));
      assert.ok(!output.includes(`${revokedFile}: OK`), where(`${revoked.id} accepted`));
    });
    t.diagnostic(`${jobs.length} CRLs verified by openssl, ${revoking.length} revocations enforced`);
  });
});

// ---------------------------------------------------------------------------
// CAs made by openssl: sigil must copy their subject into the issuer field
// byte for byte (Go's crypto/x509 matches issuer to subject by raw bytes) and
// reuse their subject key identifier, whatever the string types.

/** One DER TLV at `offset`: its tag, where its contents start, where it ends. */
function tlvAt(der: Buffer, offset: number): { tag: number; start: number; end: number } {
  const first = der[offset + 1];
  let length = first;
  let start = offset + 2;
  if (first & 0x80) {
    length = 0;
    for (let i = 0; i < (first & 0x7f); i++) length = length * 256 + der[offset + 2 + i];
    start += first & 0x7f;
  }
  return { tag: der[offset], start, end: start + length };
}

/** The raw issuer and subject Names of a certificate. */
function rawNames(der: Buffer): { issuer: Buffer; subject: Buffer } {
  const tbs = tlvAt(der, tlvAt(der, 0).start);
  const fields: Buffer[] = [];
  for (let at = tbs.start; at < tbs.end; ) {
    const field = tlvAt(der, at);
    fields.push(der.subarray(at, field.end));
    at = field.end;
  }
  const v = fields[0][0] === 0xa0 ? 1 : 0;
  return { issuer: fields[v + 2], subject: fields[v + 4] };
}

const OPENSSL_CA_CASES: { name: string; keyArgs: string[]; stringMask: string; subject: string }[] = [
  {
    name: 'P-256, UTF8String, multi-valued RDN and emailAddress',
    keyArgs: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
    stringMask: 'utf8only',
    subject: '/C=DE/ST=Bayern/L=München/O=Zürich AG+OU=東京 Unit/CN=External CA/emailAddress=ca@example.com',
  },
  {
    name: 'RSA-2048, PrintableString/T61String/BMPString',
    keyArgs: ['-newkey', 'rsa:2048'],
    stringMask: 'default',
    subject: '/C=FR/O=Société Générale/OU=東京/CN=External RSA CA',
  },
  {
    name: 'Ed25519, PrintableString only',
    keyArgs: ['-newkey', 'ed25519'],
    stringMask: 'nombstr',
    subject: '/C=US/O=Plain Org/CN=External Ed25519 CA',
  },
];

describe('differential: issuing below CAs made by openssl', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sigil-openssl-ca-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [index, ca] of OPENSSL_CA_CASES.entries()) {
    test(`issuer name and key identifier are copied exactly (${ca.name})`, async () => {
      const config = join(dir, `ca-${index}.cnf`);
      writeFileSync(
        config,
        [
          '[req]',
          'distinguished_name = dn',
          `string_mask = ${ca.stringMask}`,
          'utf8 = yes',
          'x509_extensions = v3_ca',
          '[dn]',
          '[v3_ca]',
          'subjectKeyIdentifier = hash',
          'authorityKeyIdentifier = keyid:always',
          'basicConstraints = critical, CA:true',
          'keyUsage = critical, keyCertSign, cRLSign',
          '',
        ].join('\n'),
      );
      const keyFile = join(dir, `ca-${index}.key`);
      const caFile = join(dir, `ca-${index}.pem`);
      const made = await run('openssl', [
        'req',
        '-x509',
        '-config',
        config,
        ...ca.keyArgs,
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        caFile,
        '-subj',
        ca.subject,
        '-multivalue-rdn',
        '-days',
        '30',
      ]);
      assert.equal(made.code, 0, made.stderr);
      const caCert = new NodeX509Certificate(readFileSync(caFile));
      const caKey = createPrivateKey(readFileSync(keyFile));
      const issuer = Issuer.fromCertificate(caCert.raw, caKey);
      const leafKey = generateKeyPair('p256');
      const leaf = issuer.issue({
        publicKey: leafKey.publicKey,
        profile: 'server+client',
        sans: [dnsName('svc.example.com'), uriName(spiffeId('example.com', 'svc'))],
        ttlMs: HOUR,
      });
      assert.ok(
        rawNames(leaf.der).issuer.equals(rawNames(caCert.raw).subject),
        `issuer Name differs from the CA's subject:\n${rawNames(leaf.der).issuer.toString('hex')}\n${rawNames(caCert.raw).subject.toString('hex')}`,
      );
      const caSki = new PeculiarX509Certificate(caCert.raw).getExtension(
        SubjectKeyIdentifierExtension,
      )?.keyId;
      const leafAki = new PeculiarX509Certificate(leaf.der).getExtension(
        AuthorityKeyIdentifierExtension,
      )?.keyId;
      assert.ok(caSki);
      assert.equal(leafAki, caSki, "AKI is the CA's own SKI");
      const leafFile = join(dir, `leaf-${index}.pem`);
      writeFileSync(leafFile, pem('CERTIFICATE', leaf.der));
      const verified = await run('openssl', ['verify', '-x509_strict', '-CAfile', caFile, leafFile]);
      assert.equal(verified.code, 0, verified.stdout + verified.stderr);
      const leafCert = new NodeX509Certificate(leaf.der);
      assert.equal(leafCert.issuer, caCert.subject);
      assert.ok(leafCert.checkIssued(caCert));
    });
  }
});

// ---------------------------------------------------------------------------
// Refusals: each a named test, with the refusal's code and message checked.

describe('refusals', () => {
  let rootKey: KeyPair;
  let leafKey: KeyPair;
  let dir: string;
  before(() => {
    rootKey = { ...generateKeyPair('p256'), type: 'p256' };
    leafKey = { ...generateKeyPair('ed25519'), type: 'ed25519' };
    dir = mkdtempSync(join(tmpdir(), 'sigil-refusals-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const rootIssuer = (options: { ttlMs?: number; now?: Date } = {}) => {
    const root = createRootCertificate({
      privateKey: rootKey.privateKey,
      subject: { commonName: 'Refusal Root' },
      ttlMs: options.ttlMs ?? YEAR,
      now: options.now,
    });
    return { root, issuer: Issuer.fromCertificate(root.der, rootKey.privateKey) };
  };
  const sans = [dnsName('svc.example.com')];

  test("a leaf requested past its issuer's notAfter is clamped to it", async () => {
    const { root, issuer: rootIssuerObj } = rootIssuer();
    const interKey = generateKeyPair('p384');
    const inter = rootIssuerObj.issue({
      publicKey: interKey.publicKey,
      profile: 'intermediate',
      subject: { commonName: 'Short-lived Intermediate' },
      ttlMs: 2 * HOUR,
    });
    assert.equal(inter.clamped, false);
    const issuer = Issuer.fromCertificate(inter.der, interKey.privateKey);
    const byTtl = issuer.issue({ publicKey: leafKey.publicKey, profile: 'server', sans, ttlMs: 10 * HOUR });
    const byDate = issuer.issue({
      publicKey: leafKey.publicKey,
      profile: 'client',
      sans,
      notAfter: new Date(Date.now() + 30 * DAY),
    });
    const files = [root.der, inter.der, byTtl.der, byDate.der].map((der, i) => {
      const file = join(dir, `clamp-${i}.pem`);
      writeFileSync(file, pem('CERTIFICATE', der));
      return file;
    });
    const endDates = await mapLimit(files.slice(1), CONCURRENCY, async (file) => {
      const r = await run('openssl', ['x509', '-noout', '-enddate', '-in', file]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    });
    for (const leaf of [byTtl, byDate]) {
      assert.equal(leaf.clamped, true);
      assert.equal(leaf.notAfter.getTime(), inter.notAfter.getTime());
    }
    assert.match(endDates[0], /^notAfter=/);
    assert.equal(endDates[1], endDates[0], 'openssl: leaf notAfter equals the issuer notAfter');
    assert.equal(endDates[2], endDates[0], 'openssl: leaf notAfter equals the issuer notAfter');
    assert.equal(opensslDate(endDates[0].slice('notAfter='.length)), inter.notAfter.getTime());
    // A clamped certificate is still a valid one.
    const verify = await run('openssl', [
      'verify',
      '-x509_strict',
      '-CAfile',
      files[0],
      '-untrusted',
      files[1],
      files[2],
      files[3],
    ]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  });

  test('an expired issuer refuses to issue', () => {
    const longAgo = new Date(Date.now() - 10 * DAY);
    const { issuer } = rootIssuer({ ttlMs: DAY, now: longAgo });
    assertThrowsRefusal(
      () => issuer.issue({ publicKey: leafKey.publicKey, profile: 'server', sans }),
      'failed_precondition',
      /expired/,
    );
    assertThrowsRefusal(
      () =>
        issuer.issue({ publicKey: leafKey.publicKey, profile: 'intermediate', subject: { commonName: 'x' } }),
      'failed_precondition',
      /expired/,
    );
  });

  test('an issuer that is not yet valid refuses to issue', () => {
    const { issuer } = rootIssuer({ now: new Date(Date.now() + 10 * DAY) });
    assertThrowsRefusal(
      () => issuer.issue({ publicKey: leafKey.publicKey, profile: 'server', sans }),
      'failed_precondition',
      /not valid until/,
    );
  });

  test('a critical custom extension is refused', () => {
    const { issuer } = rootIssuer();
    const critical = { oid: '1.3.6.1.4.1.55555.1.1', value: Buffer.from('0500', 'hex'), critical: true };
    assertThrowsRefusal(
      () =>
        issuer.issue({
          publicKey: leafKey.publicKey,
          profile: 'server',
          sans,
          extensions: [critical as unknown as CustomExtension],
        }),
      'invalid_argument',
      /non-critical/,
    );
  });

  test('a leaf with no subject alternative names is refused', () => {
    const { issuer } = rootIssuer();
    for (const profile of LEAF_PROFILES) {
      assertThrowsRefusal(
        () => issuer.issue({ publicKey: leafKey.publicKey, profile, subject: { commonName: 'no-sans' } }),
        'invalid_argument',
        /subject alternative name/,
      );
      assertThrowsRefusal(
        () =>
          issuer.issue({
            publicKey: leafKey.publicKey,
            profile,
            subject: { commonName: 'no-sans' },
            sans: [],
          }),
        'invalid_argument',
        /subject alternative name/,
      );
      assertThrowsRefusal(
        () => issuer.issue({ publicKey: leafKey.publicKey, profile }),
        'invalid_argument',
        /subject alternative name/,
      );
    }
  });

  test('pathLen on a leaf is refused', () => {
    const { issuer } = rootIssuer();
    for (const profile of LEAF_PROFILES) {
      for (const pathLen of [0, 1]) {
        assertThrowsRefusal(
          () => issuer.issue({ publicKey: leafKey.publicKey, profile, sans, pathLen }),
          'invalid_argument',
          /pathLen/,
        );
      }
    }
  });

  test('name constraints on a leaf are refused', () => {
    const { issuer } = rootIssuer();
    assertThrowsRefusal(
      () =>
        issuer.issue({
          publicKey: leafKey.publicKey,
          profile: 'server',
          sans,
          nameConstraints: { permittedDns: ['example.com'] },
        }),
      'invalid_argument',
      /name constraints/,
    );
  });

  test('a lifetime ending after 9999-12-31 is refused, not encoded as a malformed Time', () => {
    // Once signed as a 5-digit GeneralizedTime year ("100210803…Z") or "0NaNNaN…Z".
    assertThrowsRefusal(
      () =>
        createRootCertificate({
          privateKey: rootKey.privateKey,
          subject: { commonName: 'x' },
          ttlMs: 8000 * YEAR,
        }),
      'invalid_argument',
      /./,
    );
    assertThrowsRefusal(
      () =>
        createRootCertificate({ privateKey: rootKey.privateKey, subject: { commonName: 'x' }, ttlMs: 1e20 }),
      'invalid_argument',
      /./,
    );
  });

  test('an invalid date for notAfter or now is refused', () => {
    const { issuer } = rootIssuer();
    const invalidDate = new Date(Number.NaN);
    assertThrowsRefusal(
      () => issuer.issue({ publicKey: leafKey.publicKey, profile: 'server', sans, notAfter: invalidDate }),
      'invalid_argument',
      /./,
    );
    assertThrowsRefusal(
      () => issuer.issue({ publicKey: leafKey.publicKey, profile: 'server', sans, now: invalidDate }),
      'invalid_argument',
      /./,
    );
  });

  test('a custom extension OID given twice is refused (RFC 5280 §4.2)', () => {
    const { issuer } = rootIssuer();
    const ext = { oid: '1.3.6.1.4.1.55555.1.1', value: Buffer.from('0500', 'hex') };
    assertThrowsRefusal(
      () => issuer.issue({ publicKey: leafKey.publicKey, profile: 'server', sans, extensions: [ext, ext] }),
      'invalid_argument',
      /./,
    );
  });

  test('a CRL distribution point that is not an ASCII URI is refused', () => {
    const { issuer } = rootIssuer();
    for (const uri of ['http://ü.example/crl', 'not a uri', '']) {
      assertThrowsRefusal(
        () =>
          issuer.issue({
            publicKey: leafKey.publicKey,
            profile: 'server',
            sans,
            crlDistributionPoints: [uri],
          }),
        'invalid_argument',
        /./,
      );
    }
  });

  test('a lifetime under one second is refused rather than yielding an already expired certificate', () => {
    const { issuer } = rootIssuer();
    const now = new Date(Math.floor(Date.now() / 1000) * 1000 + 600); // 600 ms into a second
    assertThrowsRefusal(
      () => issuer.issue({ publicKey: leafKey.publicKey, profile: 'server', sans, ttlMs: 300, now }),
      'invalid_argument',
      /the requested notAfter is not in the future \(lifetimes are whole seconds, at least one\)/,
    );
  });
});
