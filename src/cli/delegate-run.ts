// `sigil delegate` at run time (delegate.ts registers the command). Two ways,
// one output directory (delegation-directory.ts):
//   - from the server (no --from): an admin (the identity from --data or
//     --identity) asks Delegation.CreateDelegation for a direct delegation, or
//     with --command a command certificate, under the replica's intermediate.
//     The delegate's key is made here and never leaves this machine; the call
//     carries a proof of possession bound to the caller's certificate.
//   - offline (--from DIR): a delegate signs a sub-delegation with its own
//     delegation key from DIR (authority/offline-delegation.ts). Nothing
//     contacts the server. Limits and permissions not given default to the
//     parent's effective ones, so a flag narrows exactly what it names.
import { resolve } from 'node:path';
import { parentEffectivePolicy, signOffline } from '../authority/offline-delegation.ts';
import { unary } from '../client/rpc.ts';
import { rootFingerprints, rootsOf } from '../client/trust-bundle.ts';
import { invalid } from '../errors.ts';
import type { DelegationCertificate } from '../gen/sigil/v1/sigil.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';
import { DELEGATION_LABEL } from '../pki/delegation-names.ts';
import { sha256Hex } from '../pki/fingerprint.ts';
import { generateKeyPair, keysMatch } from '../pki/keys.ts';
import { parseSpiffeId } from '../pki/names.ts';
import { encodePem } from '../pki/pem.ts';
import { type Policy, parsePolicyOid } from '../pki/policy-extension.ts';
import { possessionFor, signChallenge } from '../protocol/challenges.ts';
import { policyMessage } from '../protocol/policy-messages.ts';
import { type ClientContext, clientFlags, withClients } from './client-context.ts';
import {
  type DelegateFlags,
  type DelegateRequest,
  delegateRequest,
  limitsFrom,
  permissionsFrom,
  SERVER_DEFAULT_LIMITS,
} from './delegate-request.ts';
import { assembleDelegation, checkOutput, type DelegationInfo, writeOutput } from './delegation-directory.ts';
import { readParent } from './delegation-parent.ts';
import { limitsText, permissionsText } from './delegation-status.ts';
import { relative } from './operator-output.ts';
import { printResult } from './output.ts';

interface Outcome {
  readonly info: DelegationInfo;
  readonly files: string[];
  readonly dir: string;
  readonly server: string | null;
  readonly from: string | null;
}

// --- from the server ---------------------------------------------------------------------

/** The trust bundle to hand the delegate: the operator's file when it holds the pinned root, else the server's roots. */
async function operatorBundle(context: ClientContext, fetchRoots: () => Promise<Buffer[]>): Promise<string> {
  if (
    context.trustBundle !== undefined &&
    rootFingerprints(context.trustBundle).includes(context.rootFingerprint)
  ) {
    return context.trustBundle;
  }
  return (await fetchRoots()).map((der) => encodePem('CERTIFICATE', der)).join('');
}

async function fromServer(flags: DelegateFlags, request: DelegateRequest): Promise<Outcome> {
  if (flags.permissions === undefined) {
    throw invalid(
      'give --permissions (e.g. --permissions info,create,delegate): a delegation grants no permission unless named',
    );
  }
  const permissions = permissionsFrom(flags.permissions);
  const policy: Policy = {
    version: 1,
    permissions,
    limits: request.kind === 'command' ? null : limitsFrom(flags, SERVER_DEFAULT_LIMITS),
  };
  const ttlSeconds = request.ttlMs === undefined ? 0 : Math.ceil(request.ttlMs / 1000);
  if (ttlSeconds > 0xffffffff) throw invalid(`--ttl ${flags.ttl} is too long`);
  checkOutput(request.out, request.kind, flags.force ?? false);

  const key = generateKeyPair(request.keyType);
  const { response, context, target, bundlePem } = await withClients(
    await clientFlags(flags),
    async ({ delegation, ca, target, context }) => {
      const settings = { target, timeoutMs: context.timeoutMs };
      const caller = readCertificates(context.certificateChain, context.identitySource)[0];
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
          possession: possessionFor(key.privateKey, signChallenge(sha256Hex(caller))),
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
  if (!keysMatch(key.privateKey, parseCertificate(certificateDer, 'the issued certificate').publicKey)) {
    throw invalid(`the server at ${target} issued a certificate for another key`);
  }
  const rootDers = new Set(rootsOf(bundlePem).map((der) => der.toString('base64')));
  const chainDer = issued.chain
    .map((der) => Buffer.from(der))
    .filter((der) => !rootDers.has(der.toString('base64')));
  const spiffeId = response.spiffeId || issued.spiffeId;
  const host = parseSpiffeId(spiffeId).trustDomain;
  const trustDomain =
    context.trustDomain ?? host.slice(host.indexOf(`.${DELEGATION_LABEL}.`) + DELEGATION_LABEL.length + 2);
  if (response.policyOid === '') {
    throw invalid(`the server at ${target} did not say which policy extension OID it uses (upgrade it)`);
  }
  const assembled = assembleDelegation({
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
  const files = writeOutput(request.out, assembled, flags.force ?? false);
  return { info: assembled.info, files, dir: request.out, server: target, from: null };
}

// --- offline, from a delegation directory ---------------------------------------------------

function offline(flags: DelegateFlags, request: DelegateRequest, from: string): Outcome {
  const parentDir = resolve(from);
  if (parentDir === request.out) throw invalid('--out must not be the --from directory');
  const parent = readParent(parentDir);
  const effective = parentEffectivePolicy(parent);
  const permissions =
    flags.permissions === undefined ? effective.permissions : permissionsFrom(flags.permissions);
  const policy: Policy = {
    version: 1,
    permissions,
    limits: request.kind === 'command' ? null : limitsFrom(flags, effective.limits),
  };
  checkOutput(request.out, request.kind, flags.force ?? false);

  const key = generateKeyPair(request.keyType);
  const signed = signOffline(parent, {
    kind: request.kind,
    name: request.name,
    policy,
    effective,
    publicKey: key.publicKey,
    pathLen: request.pathLen,
    ttlMs: request.ttlMs,
    grants: request.grants,
  });
  const assembled = assembleDelegation({
    kind: request.kind,
    certificateDer: signed.certificateDer,
    chainDer: parent.chainDer,
    key: key.privateKey,
    trustDomain: parent.trustDomain,
    policyOid: parent.policyOid,
    grants: signed.grants,
    rootFingerprint: parent.rootFingerprint,
    addresses: parent.addresses,
    bundlePem: parent.bundlePem,
    leafKeyType: request.keyType,
  });
  const files = writeOutput(request.out, assembled, flags.force ?? false);
  return { info: assembled.info, files, dir: request.out, server: null, from: parentDir };
}

// --- the result ---------------------------------------------------------------------------

function resultLines(outcome: Outcome): string {
  const { info } = outcome;
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
}

export async function runDelegate(flags: DelegateFlags): Promise<void> {
  const request = delegateRequest(flags);
  const outcome =
    flags.from === undefined ? await fromServer(flags, request) : offline(flags, request, flags.from);
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
  printResult(flags, json, () => resultLines(outcome));
}
