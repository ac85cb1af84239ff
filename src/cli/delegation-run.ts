// `sigil delegation status|reserve|release|revoke` at run time (delegation.ts
// registers the commands).
import { X509Certificate } from 'node:crypto';
import { unary } from '../client/rpc.ts';
import { invalid } from '../errors.ts';
import { readInputFile } from '../files/file-sets.ts';
import { parseCertificate, readCertificates } from '../pki/certificate.ts';
import { type ClientOptionValues, clientFlags, withClients } from './client-context.ts';
import { listText, showDelegationStatus } from './delegation-status.ts';
import { printResult } from './output.ts';
import { parseCpuList, wholeNumber } from './resource-flags.ts';

export interface JsonFlags extends ClientOptionValues {
  json?: boolean;
}

export interface ReserveFlags extends JsonFlags {
  workloads?: string;
  cpus?: string;
  memory?: string;
  block?: string;
}

export interface RevokeFlags extends JsonFlags {
  reason?: string;
}

export async function runStatus(flags: JsonFlags): Promise<void> {
  await withClients(await clientFlags(flags), (clients) => showDelegationStatus(clients, flags));
}

export async function runReserve(holder: string, flags: ReserveFlags): Promise<void> {
  const name = holder.trim();
  if (name === '') throw invalid('give the holder: a name for what the resources are reserved for');
  const request = {
    holder: name,
    workloads: flags.workloads === undefined ? 0 : wholeNumber(flags.workloads, '--workloads', 0xffffffff),
    cpus: flags.cpus === undefined ? [] : parseCpuList(flags.cpus),
    memoryMib: flags.memory === undefined ? 0 : wholeNumber(flags.memory, '--memory'),
    blockMib: flags.block === undefined ? 0 : wholeNumber(flags.block, '--block'),
  };
  const reservation = await withClients(await clientFlags(flags), ({ delegation, target, context }) =>
    unary(delegation, delegation.reserve, request, { target, timeoutMs: context.timeoutMs }),
  );
  const json = {
    holder: reservation.holder || name,
    spiffeId: reservation.spiffeId,
    existing: reservation.existing,
    workloads: request.workloads,
    cpus: request.cpus,
    memoryMiB: request.memoryMib,
    blockMiB: request.blockMib,
  };
  printResult(flags, json, () =>
    reservation.existing
      ? `${json.holder} was already reserved in ${json.spiffeId || 'your subtree'}`
      : `reserved ${json.holder} in ${json.spiffeId || 'your subtree'}: ${json.workloads} workload${json.workloads === 1 ? '' : 's'}, cpus ${listText(json.cpus)}, ${json.memoryMiB} MiB memory, ${json.blockMiB} MiB block`,
  );
}

export async function runRelease(holder: string, flags: JsonFlags): Promise<void> {
  const name = holder.trim();
  if (name === '') throw invalid('give the holder to release');
  const response = await withClients(await clientFlags(flags), ({ delegation, target, context }) =>
    unary(delegation, delegation.release, { holder: name }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(flags, { holder: name, released: response.released }, () =>
    response.released ? `released ${name}` : `nothing was held as ${name}`,
  );
}

export async function runRevoke(file: string, flags: RevokeFlags): Promise<void> {
  const certificates = readCertificates(readInputFile(file, 'certificate file'), file);
  const [certificate, ...above] = certificates;
  const target = parseCertificate(certificate, file);
  // Roots are the server's own; only the links between them and the certificate travel.
  const chain = above.filter((der) => {
    const x = new X509Certificate(der);
    return !x.checkIssued(x);
  });
  const spiffeIds = (new X509Certificate(certificate).subjectAltName ?? '')
    .split(/,\s*/)
    .filter((name) => name.startsWith('URI:spiffe://'))
    .map((name) => name.slice('URI:'.length));
  const response = await withClients(await clientFlags(flags), ({ delegation, target: server, context }) => {
    // The chain goes up to the caller's own certificate and no further.
    const own = new Set(
      readCertificates(context.certificateChain, context.identitySource).map((der) => der.toString('base64')),
    );
    const cut = chain.findIndex((der) => own.has(der.toString('base64')));
    return unary(
      delegation,
      delegation.revokeDelegated,
      {
        certificate,
        chain: cut < 0 ? chain : chain.slice(0, cut + 1),
        reason: flags.reason ?? '',
      },
      { target: server, timeoutMs: context.timeoutMs },
    );
  });
  const json = {
    serial: target.serialHex,
    spiffeId: spiffeIds[0] ?? null,
    subject: target.subject,
    revoked: true,
    alreadyRevoked: response.alreadyRevoked,
    reason: flags.reason ?? 'unspecified',
  };
  printResult(flags, json, () => {
    const what = `${target.subject} (serial ${target.serialHex}${json.spiffeId ? `, ${json.spiffeId}` : ''})`;
    return response.alreadyRevoked
      ? `${what} was already revoked`
      : `revoked ${what}${target.isCa ? ' and everything beneath it' : ''}`;
  });
}
