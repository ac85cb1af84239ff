// `sigil delegate --from DIR`: the delegation directory (as `sigil delegate`
// wrote it, delegation-directory.ts) whose delegation signs offline. Its
// files are read and checked to belong together; what it may sign is
// authority/offline-delegation.ts's to judge.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE_FILE } from '../agent/identity-files.ts';
import {
  checkAnchoredAtRoot,
  checkParentChain,
  type ParentDelegation,
} from '../authority/offline-delegation.ts';
import { rootFingerprints, rootsOf } from '../client/trust-bundle.ts';
import { invalid, notFound } from '../errors.ts';
import { readCertificates } from '../pki/certificate.ts';
import { type NameGrants, parseGrants } from '../pki/delegation-certificates.ts';
import { readPrivateKey } from '../pki/keys.ts';
import { type PolicyOid, parsePolicyOid } from '../pki/policy-extension.ts';
import { DELEGATION_INFO_FILE, parseDelegationServerInfo } from './client-context.ts';
import { DELEGATION_CERTIFICATE_FILE, DELEGATION_KEY_FILE } from './delegation-directory.ts';

export interface ParentDirectory extends ParentDelegation {
  readonly dir: string;
  /** delegation.pem: the parent delegation first, then its chain (root excluded). */
  readonly chainDer: Buffer[];
  /** bundle.pem, verbatim: handed on to the new delegation. */
  readonly bundlePem: string;
  readonly rootFingerprint: string;
  readonly addresses: readonly string[];
}

/** Reads `dir` as the parent of an offline sub-delegation; refuses files that do not belong together. */
export function readParent(dir: string): ParentDirectory {
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
  const chainPath = join(dir, DELEGATION_CERTIFICATE_FILE);
  const chainDer = readCertificates(read(DELEGATION_CERTIFICATE_FILE, notDelegation), chainPath);
  const key = readPrivateKey(read(DELEGATION_KEY_FILE, notDelegation), {
    source: join(dir, DELEGATION_KEY_FILE),
  });
  const bundlePath = join(dir, BUNDLE_FILE);
  const bundlePem = read(BUNDLE_FILE);
  const infoPath = join(dir, DELEGATION_INFO_FILE);
  const info = parseDelegationServerInfo(read(DELEGATION_INFO_FILE, notDelegation), infoPath);

  // The files must belong together: each certificate signed by the next, the last by a root of the bundle.
  checkParentChain(chainDer, chainPath);
  checkAnchoredAtRoot(chainDer, rootsOf(bundlePem, bundlePath), { chain: chainPath, bundle: bundlePath });
  const fingerprints = rootFingerprints(bundlePem, bundlePath);
  const rootFingerprint = info.rootFingerprint ?? fingerprints[0];
  if (!fingerprints.includes(rootFingerprint)) {
    throw invalid(`${infoPath} pins root ${rootFingerprint}, which is not in ${bundlePath}`);
  }
  const trustDomain = info.trustDomain;
  if (trustDomain === undefined) throw invalid(`${infoPath} names no trust domain`);
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
