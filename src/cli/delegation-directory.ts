// The directory `sigil delegate` writes (created 0700; keys 0600; all files
// or none; an existing file is replaced only with --force):
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
//                      (read back by delegation-parent.ts)
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { BUNDLE_FILE, CERTIFICATE_FILE, KEY_FILE } from '../agent/identity-files.ts';
import { alreadyExists, invalid } from '../errors.ts';
import { exists, type PlannedFile, PRIVATE, PUBLIC, writeFilesAtomically } from '../files/file-sets.ts';
import { parseCertificate } from '../pki/certificate.ts';
import { issueDelegateLeaf, type NameGrants } from '../pki/delegation-certificates.ts';
import { checkDelegationChain } from '../pki/delegation-chain.ts';
import { Issuer } from '../pki/issuer.ts';
import { generateKeyPair, type KeyType, privateKeyToPem } from '../pki/keys.ts';
import { encodePem } from '../pki/pem.ts';
import { type PolicyJson, type PolicyOid, policyToJson } from '../pki/policy-extension.ts';
import { DELEGATION_INFO_FILE } from './client-context.ts';
import { withDirectories } from './directories.ts';

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

const pemChain = (ders: readonly Buffer[]): string =>
  ders.map((der) => encodePem('CERTIFICATE', der)).join('');

/**
 * The identity leaf (for a delegation), delegation.json and the files.
 * Checks the chain as the server will (checkDelegationChain) for the
 * effective policy, so nothing is written that the server would refuse.
 */
export function assembleDelegation(parts: DelegationParts): AssembledDelegation {
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
      if (parts.kind === 'delegation') files.push(file(DELEGATION_CERTIFICATE_FILE, pemChain(chain), PUBLIC));
      files.push(file(CERTIFICATE_FILE, pemChain(identity.chain), PUBLIC));
      return files;
    },
  };
}

/**
 * Refuses, before anything is made, an output directory that already holds
 * any delegation file (unless --force), and one holding a delegation key
 * that a command certificate would be mixed into (even with --force).
 */
export function checkOutput(dir: string, kind: DelegationKind, force: boolean): void {
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

/** Writes every file (all or none); returns their paths. */
export function writeOutput(dir: string, assembled: AssembledDelegation, force: boolean): string[] {
  const files = assembled.files(dir);
  withDirectories([dir], () => writeFilesAtomically(files, { force }));
  return files.map((file) => file.path);
}
