// `sigil delegate --to NAME … --out DIR`: hand a slice of authority to NAME.
//
// Two ways, one output:
//   - from the server (no --from): an admin (the identity from --data or
//     --identity) asks Delegation.CreateDelegation for a direct delegation, or
//     with --command a command certificate, under the replica's intermediate.
//     The delegate's key is made here and never leaves this machine; the call
//     carries a proof of possession bound to the caller's certificate.
//   - offline (--from DIR): a delegate signs a sub-delegation with its own
//     delegation key from DIR. Nothing contacts the server; it learns of the
//     new delegation when it is first presented in a chain. Limits and
//     permissions not given default to the parent's effective ones, so a flag
//     narrows exactly what it names.
//
// The output directory (created 0700; keys 0600; all files or none; an
// existing file is replaced only with --force):
//
//   delegation.pem   the delegation CA certificate, then its chain up to but
//                    excluding the root                 (not for --command)
//   delegation.key   the delegation CA's private key    (not for --command)
//   cert.pem         the identity to call the server with: for a delegation a
//                    leaf made here under the new delegation (with its own key,
//                    carrying the delegation's SPIFFE ID), then the delegation
//                    chain; for --command the command certificate and its chain
//   key.pem          cert.pem's private key
//   bundle.pem       the trust bundle (copied from the operator's or the parent's)
//   delegation.json  { version, kind, spiffeId, serial, fingerprint, isCa, pathLen,
//                      policy, effective, dnsNames, ipRanges, notAfter, trustDomain,
//                      policyOid, rootFingerprint, addresses }: what --identity DIR
//                      needs to find and pin the server, what the certificate
//                      grants, and what an offline sub-delegation must carry
//
// This module is imported when commands are registered: nothing heavy at the
// top (gRPC, X.509); those load when the command runs.
import type { KeyObject } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { BUNDLE_FILE, CERTIFICATE_FILE, KEY_FILE } from '../agent/identity-files.ts';
import { alreadyExists, invalid, notFound, SigilError } from '../errors.ts';
import type { PlannedFile } from '../files/file-sets.ts';
import type { DelegationCertificate } from '../gen/sigil/v1/sigil.ts';
import type { NameGrants } from '../pki/delegation-certificates.ts';
import { KEY_TYPES, type KeyType } from '../pki/keys.ts';
import type { Limits, Permission, Policy, PolicyJson, PolicyOid } from '../pki/policy-extension.ts';
import {
  addClientOptions,
  type ClientContext,
  type ClientOptionValues,
  clientFlags,
  DELEGATION_INFO_FILE,
  withClients,
} from './client-context.ts';
import { limitsText, parseCpuList, permissionsText, wholeNumber } from './delegation.ts';
import { examples, relative } from './operator-output.ts';
import { printResult } from './output.ts';

export const DELEGATION_CERTIFICATE_FILE = 'delegation.pem';
export const DELEGATION_KEY_FILE = 'delegation.key';
/** Every file a delegation directory may hold: none is overwritten without --force. */
const ALL_FILES = [
  DELEGATION_CERTIFICATE_FILE,
  DELEGATION_KEY_FILE,
  CERTIFICATE_FILE,
  KEY_FILE,
  BUNDLE_FILE,
  DELEGATION_INFO_FILE,
] as const;

/** Defaults of a delegation made by the server when a flag is not given. */
const SERVER_DEFAULT_LIMITS: Limits = Object.freeze({
  workloads: 0,
  cpus: Object.freeze([]),
  memoryMiB: 0,
  blockMiB: 0,
  bridges: Object.freeze([]),
  issuancePerHour: 1000,
});

/** Under a parent without limits, a limit flag starts from nothing (and issuance refuses it). */
const NO_LIMITS: Limits = Object.freeze({ ...SERVER_DEFAULT_LIMITS, issuancePerHour: 0 });

const DEFAULT_KEY_TYPE: KeyType = 'p256';
const MAX_PATH_LEN = 32;

export type DelegationKind = 'delegation' | 'command';

/** delegation.json. */
export interface DelegationInfo {
  readonly version: 1;
  readonly kind: DelegationKind;
  readonly spiffeId: string;
  /** Of the delegation CA certificate, or of the command certificate. */
  readonly serial: string;
  /** SHA-256 of its DER, lower-case hex. */
  readonly fingerprint: string;
  readonly isCa: boolean;
  readonly pathLen: number | null;
  /** What the certificate itself carries. */
  readonly policy: PolicyJson;
  /** What it grants: the intersection along its chain. */
  readonly effective: PolicyJson;
  /** DNS names and IP ranges its name constraints permit (none when empty). */
  readonly dnsNames: readonly string[];
  readonly ipRanges: readonly string[];
  readonly notAfter: string;
  readonly trustDomain: string;
  /** The deployment's policy extension OID, dotted. */
  readonly policyOid: string;
  /** SHA-256 of the pinned root, lower-case hex. */
  readonly rootFingerprint: string;
  /** The server's gRPC addresses, HOST:PORT. */
  readonly addresses: readonly string[];
}

// --- flags ----------------------------------------------------------------------------

interface DelegateFlags extends ClientOptionValues {
  to: string;
  out: string;
  from?: string;
  permissions?: string;
  workloads?: string;
  memory?: string;
  cpus?: string;
  block?: string;
  bridges?: string;
  issuancePerHour?: string;
  pathLen?: string;
  ttl?: string;
  dns?: string;
  ip?: string;
  command?: boolean;
  keyType?: string;
  force?: boolean;
  json?: boolean;
}

const LIMIT_FLAGS = [
  ['workloads', '--workloads'],
  ['cpus', '--cpus'],
  ['memory', '--memory'],
  ['block', '--block'],
  ['bridges', '--bridges'],
  ['issuancePerHour', '--issuance-per-hour'],
] as const;

async function parseBridges(text: string): Promise<string[]> {
  if (text.trim() === '') return [];
  const { isBridgeName } = await import('../pki/policy-extension.ts');
  const names = text.split(',').map((item) => item.trim());
  for (const name of names) {
    if (!isBridgeName(name)) {
      throw invalid(
        `--bridges ${JSON.stringify(text)}: ${JSON.stringify(name)} is not a bridge name (1 to 64 of A-Z a-z 0-9 . _ -)`,
      );
    }
  }
  return [...new Set(names)].sort();
}

/** A comma-separated flag value (--dns, --ip) as a list; undefined when the flag is absent. */
function parseList(flag: string, text: string | undefined): string[] | undefined {
  if (text === undefined) return undefined;
  if (text.trim() === '') return [];
  const items = text.split(',').map((item) => item.trim());
  if (items.some((item) => item === ''))
    throw invalid(`${flag} ${JSON.stringify(text)} contains an empty entry`);
  return items;
}

/** Limits from the flags; what a flag does not name comes from `base`. Null: no limits at all. */
async function limitsFrom(flags: DelegateFlags, base: Limits | null): Promise<Limits | null> {
  const given = LIMIT_FLAGS.some(([name]) => flags[name] !== undefined);
  if (!given && base === null) return null;
  const from = base ?? NO_LIMITS;
  return {
    workloads: flags.workloads === undefined ? from.workloads : wholeNumber(flags.workloads, '--workloads'),
    cpus: flags.cpus === undefined ? [...from.cpus] : parseCpuList(flags.cpus),
    memoryMiB: flags.memory === undefined ? from.memoryMiB : wholeNumber(flags.memory, '--memory'),
    blockMiB: flags.block === undefined ? from.blockMiB : wholeNumber(flags.block, '--block'),
    bridges: flags.bridges === undefined ? [...from.bridges] : await parseBridges(flags.bridges),
    issuancePerHour:
      flags.issuancePerHour === undefined
        ? from.issuancePerHour
        : wholeNumber(flags.issuancePerHour, '--issuance-per-hour'),
  };
}

/** --command takes permissions only: every resource or CA flag is refused by name. */
function refuseCommandLimits(flags: DelegateFlags): void {
  const given = [
    ...LIMIT_FLAGS.filter(([name]) => flags[name] !== undefined).map(([, flag]) => flag),
    ...(flags.pathLen !== undefined ? ['--path-len'] : []),
    ...(flags.dns !== undefined ? ['--dns'] : []),
    ...(flags.ip !== undefined ? ['--ip'] : []),
  ];
  if (given.length > 0) {
    throw invalid(
      `--command makes a command certificate, which carries permissions only (no resources, not a CA): drop ${given.join(', ')}`,
    );
  }
}

interface CommonRequest {
  readonly name: string;
  readonly kind: DelegationKind;
  readonly keyType: KeyType;
  readonly ttlMs: number | undefined;
  readonly pathLen: number | undefined;
  /** --dns and --ip as given (each undefined when absent), checked. */
  readonly grants: { readonly dnsNames?: string[]; readonly ipRanges?: string[] };
  readonly out: string;
}

async function commonRequest(flags: DelegateFlags): Promise<CommonRequest> {
  const { parseKeyType } = await import('../pki/keys.ts');
  const { parseDuration } = await import('../pki/duration.ts');
  const { checkDelegationName } = await import('../pki/delegation-names.ts');
  const { parseGrants } = await import('../pki/delegation-certificates.ts');
  const name = flags.to.trim();
  try {
    checkDelegationName(name);
  } catch (error) {
    // A dotted or underscored name is the likeliest slip: the parent's names are added as labels.
    const hint = /[._]/.test(name)
      ? `; no "." or "_" (e.g. ${name.replaceAll(/[._]/g, '-')}): the name is one label of the host NAME.<parent's host>`
      : '';
    throw invalid(`--to: ${error instanceof Error ? error.message : String(error)}${hint}`, error);
  }
  const dnsNames = parseList('--dns', flags.dns);
  const ipRanges = parseList('--ip', flags.ip);
  for (const [flag, grants] of [
    ['--dns', { dnsNames: dnsNames ?? [] }],
    ['--ip', { ipRanges: ipRanges ?? [] }],
  ] as const) {
    try {
      parseGrants(grants);
    } catch (error) {
      throw invalid(`${flag}: ${error instanceof Error ? error.message : String(error)}`, error);
    }
  }
  const kind: DelegationKind = flags.command ? 'command' : 'delegation';
  if (kind === 'command') refuseCommandLimits(flags);
  return {
    name,
    kind,
    keyType: flags.keyType === undefined ? DEFAULT_KEY_TYPE : parseKeyType(flags.keyType),
    ttlMs: flags.ttl === undefined ? undefined : parseDuration(flags.ttl),
    pathLen: flags.pathLen === undefined ? undefined : wholeNumber(flags.pathLen, '--path-len', MAX_PATH_LEN),
    grants: { ...(dnsNames ? { dnsNames } : {}), ...(ipRanges ? { ipRanges } : {}) },
    out: resolve(flags.out),
  };
}

async function permissionsFrom(text: string): Promise<ReadonlySet<Permission>> {
  const { parsePermissions } = await import('../pki/policy-extension.ts');
  try {
    return parsePermissions(text);
  } catch (error) {
    if (error instanceof SigilError) throw invalid(`--permissions: ${error.message}`, error);
    throw error;
  }
}

// --- the output directory ------------------------------------------------------------------

/** What a delegation directory is made of, before the identity leaf and the files. */
export interface DelegationParts {
  readonly kind: DelegationKind;
  /** The delegation CA certificate, or the command certificate. */
  readonly certificateDer: Buffer;
  /** Its chain above it, issuer first, root excluded. */
  readonly chainDer: readonly Buffer[];
  /** Its private key. */
  readonly key: KeyObject;
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  /** What the certificate's name constraints permit. */
  readonly grants: NameGrants;
  readonly rootFingerprint: string;
  readonly addresses: readonly string[];
  /** bundle.pem, verbatim. */
  readonly bundlePem: string;
  /** Key type of the identity leaf's key (delegations only). */
  readonly leafKeyType: KeyType;
}

export interface AssembledDelegation {
  readonly info: DelegationInfo;
  /** Every file, keys 0600, in the order they are renamed into place (certificates last). */
  files(dir: string): PlannedFile[];
}

/**
 * The identity leaf (for a delegation), delegation.json and the files.
 * Checks the chain as the server will (checkDelegationChain) for the
 * effective policy, so nothing is written that the server would refuse.
 */
export async function assembleDelegation(parts: DelegationParts): Promise<AssembledDelegation> {
  const { checkDelegationChain } = await import('../pki/delegation-chain.ts');
  const { issueDelegateLeaf } = await import('../pki/delegation-certificates.ts');
  const { parseCertificate } = await import('../pki/certificate.ts');
  const { Issuer } = await import('../pki/issuer.ts');
  const { generateKeyPair, privateKeyToPem } = await import('../pki/keys.ts');
  const { encodePem } = await import('../pki/pem.ts');
  const { policyToJson } = await import('../pki/policy-extension.ts');
  const { PRIVATE, PUBLIC } = await import('../files/file-sets.ts');

  const pem = (ders: readonly Buffer[]) => ders.map((der) => encodePem('CERTIFICATE', der)).join('');
  const certificate = parseCertificate(parts.certificateDer, 'the delegation certificate');
  const chain = [parts.certificateDer, ...parts.chainDer];
  const settings = { trustDomain: parts.trustDomain, policyOid: parts.policyOid };
  const { effective, links } = checkDelegationChain(chain, {
    ...settings,
    endsAtDelegation: parts.kind === 'delegation',
  });
  const { policy, spiffeId } = links[0];
  if (policy === null) throw invalid('the delegation certificate carries no sigil policy extension');
  if (spiffeId === null) throw invalid('the delegation certificate carries no SPIFFE ID');

  let identity: { chain: readonly Buffer[]; key: KeyObject };
  if (parts.kind === 'delegation') {
    if (!certificate.isCa) throw invalid('the delegation certificate is not a CA certificate');
    const leafKey = generateKeyPair(parts.leafKeyType);
    const leaf = issueDelegateLeaf({
      parent: {
        issuer: Issuer.fromCertificate(parts.certificateDer, parts.key),
        certificateDer: parts.certificateDer,
      },
      trustDomain: parts.trustDomain,
      policyOid: parts.policyOid,
      publicKey: leafKey.publicKey,
    });
    checkDelegationChain([leaf.der, ...chain], settings);
    identity = { chain: [leaf.der, ...chain], key: leafKey.privateKey };
  } else {
    if (certificate.isCa) throw invalid('a command certificate must not be a CA certificate');
    identity = { chain, key: parts.key };
  }

  const info: DelegationInfo = {
    version: 1,
    kind: parts.kind,
    spiffeId,
    serial: certificate.serialHex,
    fingerprint: certificate.fingerprint,
    isCa: certificate.isCa,
    pathLen: certificate.isCa ? certificate.pathLen : null,
    policy: policyToJson(policy),
    effective: policyToJson(effective),
    dnsNames: [...parts.grants.dnsNames],
    ipRanges: [...parts.grants.ipRanges],
    notAfter: certificate.notAfter.toISOString(),
    trustDomain: parts.trustDomain,
    policyOid: parts.policyOid.text,
    rootFingerprint: parts.rootFingerprint,
    addresses: [...parts.addresses],
  };
  return {
    info,
    files(dir: string): PlannedFile[] {
      const file = (name: string, contents: string, mode: number): PlannedFile => ({
        path: join(dir, name),
        contents,
        mode,
      });
      const files: PlannedFile[] = [];
      if (parts.kind === 'delegation') {
        files.push(file(DELEGATION_KEY_FILE, privateKeyToPem(parts.key), PRIVATE));
      }
      files.push(
        file(KEY_FILE, privateKeyToPem(identity.key), PRIVATE),
        file(BUNDLE_FILE, parts.bundlePem, PUBLIC),
        file(DELEGATION_INFO_FILE, `${JSON.stringify(info, null, 2)}\n`, PUBLIC),
      );
      if (parts.kind === 'delegation') files.push(file(DELEGATION_CERTIFICATE_FILE, pem(chain), PUBLIC));
      files.push(file(CERTIFICATE_FILE, pem(identity.chain), PUBLIC));
      return files;
    },
  };
}

/**
 * Refuses, before anything is made, an output directory that already holds
 * any delegation file (unless --force), and one holding a delegation key
 * that a command certificate would be mixed into (even with --force).
 */
async function checkOutput(dir: string, kind: DelegationKind, force: boolean): Promise<void> {
  const { exists } = await import('../files/file-sets.ts');
  if (!force) {
    for (const name of ALL_FILES) {
      const path = join(dir, name);
      if (exists(path)) throw alreadyExists(`${path} already exists (use --force to overwrite)`);
    }
  } else if (kind === 'command' && exists(join(dir, DELEGATION_KEY_FILE))) {
    throw invalid(
      `${dir} holds a delegation (${DELEGATION_KEY_FILE}); a command certificate would be mixed into it: choose another --out`,
    );
  }
}

async function writeOutput(dir: string, assembled: AssembledDelegation, force: boolean): Promise<string[]> {
  const { withDirectories } = await import('./directories.ts');
  const { writeFilesAtomically } = await import('../files/file-sets.ts');
  const files = assembled.files(dir);
  withDirectories([dir], () => writeFilesAtomically(files, { force }));
  return files.map((file) => file.path);
}

// --- from the server ---------------------------------------------------------------------

interface Outcome {
  readonly info: DelegationInfo;
  readonly files: string[];
  readonly dir: string;
  readonly server: string | null;
  readonly from: string | null;
}

/** The trust bundle to hand the delegate: the operator's file when it holds the pinned root, else the server's roots. */
async function operatorBundle(context: ClientContext, fetchRoots: () => Promise<Buffer[]>): Promise<string> {
  const { rootFingerprints } = await import('../client/trust-bundle.ts');
  const { encodePem } = await import('../pki/pem.ts');
  if (
    context.trustBundle !== undefined &&
    rootFingerprints(context.trustBundle).includes(context.rootFingerprint)
  ) {
    return context.trustBundle;
  }
  return (await fetchRoots()).map((der) => encodePem('CERTIFICATE', der)).join('');
}

async function fromServer(flags: DelegateFlags, request: CommonRequest): Promise<Outcome> {
  if (flags.permissions === undefined) {
    throw invalid(
      'give --permissions (e.g. --permissions info,create,delegate): a delegation grants no permission unless named',
    );
  }
  const permissions = await permissionsFrom(flags.permissions);
  const { policyMessage } = await import('../services/policy-messages.ts');
  const policy: Policy = {
    version: 1,
    permissions,
    limits: request.kind === 'command' ? null : await limitsFrom(flags, SERVER_DEFAULT_LIMITS),
  };
  const ttlSeconds = request.ttlMs === undefined ? 0 : Math.ceil(request.ttlMs / 1000);
  if (ttlSeconds > 0xffffffff) throw invalid(`--ttl ${flags.ttl} is too long`);
  await checkOutput(request.out, request.kind, flags.force ?? false);

  const { createHash } = await import('node:crypto');
  const { unary } = await import('../client/rpc.ts');
  const { possessionFor, signChallenge } = await import('../protocol/challenges.ts');
  const { readCertificates } = await import('../pki/certificate.ts');
  const { generateKeyPair, keysMatch } = await import('../pki/keys.ts');
  const { rootsOf } = await import('../client/trust-bundle.ts');

  const key = generateKeyPair(request.keyType);
  const { response, context, target, bundlePem } = await withClients(
    await clientFlags(flags),
    async ({ delegation, ca, target, context }) => {
      const settings = { target, timeoutMs: context.timeoutMs };
      const caller = readCertificates(context.certificateChain, context.identitySource)[0];
      const callerFingerprint = createHash('sha256').update(caller).digest('hex');
      const response: DelegationCertificate = await unary(
        delegation,
        delegation.createDelegation,
        {
          name: request.name,
          policy: policyMessage(policy),
          pathLen: request.pathLen ?? -1,
          ttlSeconds,
          dnsNames: request.grants.dnsNames ?? [],
          ipRanges: request.grants.ipRanges ?? [],
          possession: possessionFor(key.privateKey, signChallenge(callerFingerprint)),
          command: request.kind === 'command',
        },
        settings,
      );
      const bundlePem = await operatorBundle(context, async () => {
        const bundle = await unary(ca, ca.getTrustBundle, {}, settings);
        return bundle.roots.map((der) => Buffer.from(der));
      });
      return { response, context, target, bundlePem };
    },
  );

  const issued = response.certificate;
  if (issued === undefined || issued.certificate.length === 0) {
    throw invalid(`the server at ${target} answered CreateDelegation without a certificate`);
  }
  const certificateDer = Buffer.from(issued.certificate);
  const { parseCertificate } = await import('../pki/certificate.ts');
  if (!keysMatch(key.privateKey, parseCertificate(certificateDer, 'the issued certificate').publicKey)) {
    throw invalid(`the server at ${target} issued a certificate for another key`);
  }
  const rootDers = new Set(rootsOf(bundlePem).map((der) => der.toString('base64')));
  const chainDer = issued.chain
    .map((der) => Buffer.from(der))
    .filter((der) => !rootDers.has(der.toString('base64')));
  const spiffeId = response.spiffeId || issued.spiffeId;
  const { parseSpiffeId } = await import('../pki/names.ts');
  const { parsePolicyOid } = await import('../pki/policy-extension.ts');
  const { DELEGATION_LABEL } = await import('../pki/delegation-names.ts');
  const host = parseSpiffeId(spiffeId).trustDomain;
  const trustDomain =
    context.trustDomain ?? host.slice(host.indexOf(`.${DELEGATION_LABEL}.`) + DELEGATION_LABEL.length + 2);
  if (response.policyOid === '') {
    throw invalid(`the server at ${target} did not say which policy extension OID it uses (upgrade it)`);
  }
  const assembled = await assembleDelegation({
    kind: request.kind,
    certificateDer,
    chainDer,
    key: key.privateKey,
    trustDomain,
    policyOid: parsePolicyOid(response.policyOid),
    grants: { dnsNames: response.dnsNames, ipRanges: response.ipRanges },
    rootFingerprint: context.rootFingerprint,
    addresses: [context.address],
    bundlePem,
    leafKeyType: request.keyType,
  });
  const files = await writeOutput(request.out, assembled, flags.force ?? false);
  return { info: assembled.info, files, dir: request.out, server: target, from: null };
}

// --- offline, from a delegation directory ---------------------------------------------------

interface ParentDirectory {
  readonly dir: string;
  /** delegation.pem: the parent delegation first, then its chain (root excluded). */
  readonly chainDer: Buffer[];
  readonly key: KeyObject;
  readonly bundlePem: string;
  readonly trustDomain: string;
  readonly policyOid: PolicyOid;
  readonly grants: NameGrants;
  readonly rootFingerprint: string;
  readonly addresses: readonly string[];
}

async function readParent(dir: string): Promise<ParentDirectory> {
  const { readFileSync, statSync } = await import('node:fs');
  const { X509Certificate } = await import('node:crypto');
  const { parseDelegationServerInfo } = await import('./client-context.ts');
  const { readCertificates } = await import('../pki/certificate.ts');
  const { readPrivateKey } = await import('../pki/keys.ts');
  const { rootFingerprints, rootsOf } = await import('../client/trust-bundle.ts');

  try {
    if (!statSync(dir).isDirectory()) throw invalid(`--from ${dir} is not a directory`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(`--from ${dir} does not exist`);
    throw error;
  }
  const read = (name: string, hint = ''): string => {
    const path = join(dir, name);
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw notFound(`${path} does not exist${hint}`);
      if (code === 'EACCES') throw invalid(`${path} is not readable (permission denied)`);
      throw error;
    }
  };
  const notDelegation =
    ' (--from takes a directory written by sigil delegate for a delegation; a command certificate cannot delegate)';
  const chainDer = readCertificates(
    read(DELEGATION_CERTIFICATE_FILE, notDelegation),
    join(dir, DELEGATION_CERTIFICATE_FILE),
  );
  const key = readPrivateKey(read(DELEGATION_KEY_FILE, notDelegation), {
    source: join(dir, DELEGATION_KEY_FILE),
  });
  const bundlePath = join(dir, BUNDLE_FILE);
  const bundlePem = read(BUNDLE_FILE);
  const infoPath = join(dir, DELEGATION_INFO_FILE);
  const info = parseDelegationServerInfo(read(DELEGATION_INFO_FILE, notDelegation), infoPath);

  // The files must belong together: each certificate signed by the next, the last by a root of the bundle.
  const certificates = chainDer.map((der) => new X509Certificate(der));
  for (let i = 0; i + 1 < certificates.length; i++) {
    const [child, parent] = [certificates[i], certificates[i + 1]];
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      throw invalid(
        `${join(dir, DELEGATION_CERTIFICATE_FILE)}: certificate #${i} is not signed by certificate #${i + 1}`,
      );
    }
  }
  const roots = rootsOf(bundlePem, bundlePath).map((der) => new X509Certificate(der));
  const top = certificates[certificates.length - 1];
  if (!roots.some((root) => top.checkIssued(root) && top.verify(root.publicKey))) {
    throw invalid(`${join(dir, DELEGATION_CERTIFICATE_FILE)} does not chain to a root in ${bundlePath}`);
  }
  const fingerprints = rootFingerprints(bundlePem, bundlePath);
  const rootFingerprint = info.rootFingerprint ?? fingerprints[0];
  if (!fingerprints.includes(rootFingerprint)) {
    throw invalid(`${infoPath} pins root ${rootFingerprint}, which is not in ${bundlePath}`);
  }
  const trustDomain = info.trustDomain;
  if (trustDomain === undefined) throw invalid(`${infoPath} names no trust domain`);
  const { parsePolicyOid } = await import('../pki/policy-extension.ts');
  const { parseGrants } = await import('../pki/delegation-certificates.ts');
  const record = JSON.parse(read(DELEGATION_INFO_FILE)) as Record<string, unknown>;
  if (typeof record.policyOid !== 'string') {
    throw invalid(`${infoPath} names no policyOid (written by an older sigil: make the delegation again)`);
  }
  let grants: NameGrants;
  let policyOid: PolicyOid;
  try {
    policyOid = parsePolicyOid(record.policyOid);
    grants = parseGrants({
      dnsNames: Array.isArray(record.dnsNames) ? (record.dnsNames as string[]) : [],
      ipRanges: Array.isArray(record.ipRanges) ? (record.ipRanges as string[]) : [],
    });
  } catch (error) {
    throw invalid(`${infoPath}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  return {
    dir,
    chainDer,
    key,
    bundlePem,
    trustDomain,
    policyOid,
    grants,
    rootFingerprint,
    addresses: info.addresses,
  };
}

async function offline(flags: DelegateFlags, request: CommonRequest, from: string): Promise<Outcome> {
  const { checkDelegationChain } = await import('../pki/delegation-chain.ts');
  const { issueDelegateLeaf, issueDelegation } = await import('../pki/delegation-certificates.ts');
  const { Issuer } = await import('../pki/issuer.ts');
  const { generateKeyPair } = await import('../pki/keys.ts');
  const { isNarrowing } = await import('../pki/policy-extension.ts');

  const parentDir = resolve(from);
  if (parentDir === request.out) throw invalid('--out must not be the --from directory');
  const parent = await readParent(parentDir);
  const parentDer = parent.chainDer[0];
  // What the parent may hand on: the intersection along its own chain.
  const { effective } = checkDelegationChain(parent.chainDer, {
    trustDomain: parent.trustDomain,
    policyOid: parent.policyOid,
    endsAtDelegation: true,
  });
  const permissions =
    flags.permissions === undefined ? effective.permissions : await permissionsFrom(flags.permissions);
  const policy: Policy = {
    version: 1,
    permissions,
    limits: request.kind === 'command' ? null : await limitsFrom(flags, effective.limits),
  };
  await checkOutput(request.out, request.kind, flags.force ?? false);

  const issuer = Issuer.fromCertificate(parentDer, parent.key);
  const key = generateKeyPair(request.keyType);
  let certificateDer: Buffer;
  // Name grants not given default to the parent's, like limits.
  let grants: NameGrants = { dnsNames: [], ipRanges: [] };
  if (request.kind === 'delegation') {
    const issued = issueDelegation({
      parent: { issuer, certificateDer: parentDer, policy: effective, grants: parent.grants },
      trustDomain: parent.trustDomain,
      policyOid: parent.policyOid,
      publicKey: key.publicKey,
      name: request.name,
      policy,
      pathLen: request.pathLen,
      ttlMs: request.ttlMs,
      grants: {
        dnsNames: request.grants.dnsNames ?? [...parent.grants.dnsNames],
        ipRanges: request.grants.ipRanges ?? [...parent.grants.ipRanges],
      },
    });
    certificateDer = issued.der;
    grants = issued.grants;
  } else {
    const narrowing = isNarrowing(policy, effective);
    if (!narrowing.ok) {
      throw new SigilError(
        'permission_denied',
        `the command certificate escalates its parent's policy: ${narrowing.reason}`,
      );
    }
    certificateDer = issueDelegateLeaf({
      parent: { issuer, certificateDer: parentDer },
      trustDomain: parent.trustDomain,
      policyOid: parent.policyOid,
      publicKey: key.publicKey,
      name: request.name,
      policy,
      ttlMs: request.ttlMs,
    }).der;
  }
  const assembled = await assembleDelegation({
    kind: request.kind,
    certificateDer,
    chainDer: parent.chainDer,
    key: key.privateKey,
    trustDomain: parent.trustDomain,
    policyOid: parent.policyOid,
    grants,
    rootFingerprint: parent.rootFingerprint,
    addresses: parent.addresses,
    bundlePem: parent.bundlePem,
    leafKeyType: request.keyType,
  });
  const files = await writeOutput(request.out, assembled, flags.force ?? false);
  return { info: assembled.info, files, dir: request.out, server: null, from: parentDir };
}

// --- the command ------------------------------------------------------------------------------

async function runDelegate(flags: DelegateFlags): Promise<void> {
  const request = await commonRequest(flags);
  const outcome =
    flags.from === undefined ? await fromServer(flags, request) : await offline(flags, request, flags.from);
  const { info } = outcome;
  const json = {
    kind: info.kind,
    spiffeId: info.spiffeId,
    serial: info.serial,
    fingerprint: info.fingerprint,
    pathLen: info.pathLen,
    notAfter: info.notAfter,
    policy: info.policy,
    effective: info.effective,
    dnsNames: info.dnsNames,
    ipRanges: info.ipRanges,
    policyOid: info.policyOid,
    issuedBy: outcome.server === null ? 'offline' : 'server',
    server: outcome.server,
    from: outcome.from,
    dir: outcome.dir,
    files: outcome.files,
  };
  printResult(flags, json, () => {
    const what = info.kind === 'command' ? 'command certificate' : 'delegation';
    const by =
      outcome.server === null ? `offline, signed with ${outcome.from}` : `by the server at ${outcome.server}`;
    const lines = [
      `created ${what} ${info.spiffeId} (${by})`,
      `  permissions:  ${permissionsText(info.effective)}`,
      `  limits:       ${limitsText(info.effective)}`,
    ];
    if (info.kind === 'delegation') {
      const names = [
        ...info.dnsNames.map((name) => `DNS ${name}`),
        ...info.ipRanges.map((range) => `IP ${range}`),
      ];
      lines.push(
        `  names:        ${names.length > 0 ? names.join(', ') : 'none (no DNS name, no IP address)'}`,
      );
    }
    if (info.pathLen !== null || info.isCa) {
      lines.push(`  path length:  ${info.pathLen === null ? 'unlimited' : info.pathLen}`);
    }
    lines.push(
      `  expires:      ${info.notAfter} (${relative(Date.parse(info.notAfter))})`,
      `  serial:       ${info.serial}`,
      `wrote ${outcome.files.join(', ')}`,
      info.kind === 'command'
        ? `use it with: sigil status --identity ${outcome.dir}`
        : `use it with: sigil status --identity ${outcome.dir}; delegate further with: sigil delegate --from ${outcome.dir} --to NAME --out DIR`,
    );
    return lines.join('\n');
  });
}

export function registerDelegateCommand(program: Command): void {
  addClientOptions(
    program
      .command('delegate')
      .description(
        'Hand a slice of authority to NAME: a delegation (a CA certificate with a policy that can only ' +
          'narrow) or, with --command, a command certificate (permissions, no resources). Without --from ' +
          'the server issues it (admin); with --from DIR a delegate signs it offline with its own delegation key. ' +
          'Writes delegation.pem/.key, cert.pem/key.pem (the identity to call with), bundle.pem and delegation.json',
      )
      .requiredOption(
        '--to <name>',
        'the delegate: one DNS label (a-z, 0-9, inner "-"); its subtree is spiffe://NAME.<parent>.d.<trust domain>',
      )
      .requiredOption('--out <dir>', 'directory to write (created 0700; keys 0600)')
      .option(
        '--from <dir>',
        'sign offline with the delegation in DIR (as sigil delegate wrote it); never contacts the server',
      )
      .option(
        '--permissions <list>',
        'comma-separated: info, create, destroy, console, log, stats, block, delegate, revoke, issue, admin ' +
          "(required without --from; with --from: the parent's)",
      )
      .option('--workloads <n>', "workloads (default 0; with --from: the parent's)")
      .option('--memory <MiB>', "memory in MiB (default 0; with --from: the parent's)")
      .option('--cpus <ids>', "cpu ids, e.g. 0,1 or 0-3 (default none; with --from: the parent's)")
      .option('--block <MiB>', "block storage in MiB (default 0; with --from: the parent's)")
      .option('--bridges <names>', "comma-separated bridge names (default none; with --from: the parent's)")
      .option(
        '--issuance-per-hour <n>',
        "certificates the subtree may have issued per hour (default 1000; with --from: the parent's)",
      )
      .option(
        '--path-len <n>',
        "how many delegation levels may follow below it (default: one less than the parent's)",
      )
      .option(
        '--ttl <duration>',
        "lifetime, e.g. 30d (default: the server's, 30 days or 1 hour for --command; with --from: the parent's remaining)",
      )
      .option(
        '--dns <names>',
        'comma-separated DNS names the delegate may certify, ".example.org" for subdomains only (default: none; with --from: the parent\'s)',
      )
      .option(
        '--ip <ranges>',
        "comma-separated CIDR ranges the delegate may certify, e.g. 10.1.0.0/16 (default: none; with --from: the parent's)",
      )
      .option('--command', 'a command certificate: a leaf with permissions only, for interactive use')
      .option('--key-type <type>', `key type of the new keys: ${KEY_TYPES.join(', ')} (default: p256)`)
      .option('--force', 'overwrite the files of an earlier run in --out')
      .option('--json', 'print the result as JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil delegate --to alice --permissions info,create,destroy,delegate,issue --workloads 2 --cpus 0,1 --memory 4096 --out ./alice',
        '$ sigil delegate --from ./alice --to carol --workloads 1 --cpus 1 --permissions info,create --out ./carol',
        '$ sigil delegate --to ops --command --permissions info,log,stats --ttl 8h --out ./ops',
        '$ sigil status --identity ./carol',
      ),
    )
    .action((flags: DelegateFlags) => runDelegate(flags));
}
