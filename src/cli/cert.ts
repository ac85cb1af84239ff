// `sigil cert list|show|revoke`: the certificates the control plane issued,
// from its store, over CertificateAuthority.ListCertificates (paged) and
// Revoke. `list` prints one page unless --all follows every page; `show`
// looks a serial up by paging through the list (the API has no single-
// certificate lookup).
import { type Command, Option } from 'commander';
import { invalid, notFound } from '../errors.ts';
import type { CertificateAuthorityClient, CertificateSummary } from '../gen/sigil/v1/sigil.ts';
import { parseSerial } from '../pki/serial.ts';
import { addClientOptions, type ClientOptionValues, clientFlags, withClients } from './client-context.ts';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';

interface JsonFlags extends ClientOptionValues {
  json?: boolean;
}

interface ListFlags extends JsonFlags {
  requester?: string;
  profile?: string;
  revoked?: 'yes' | 'no';
  all?: boolean;
  pageSize: string;
  pageToken?: string;
}

interface RevokeFlags extends JsonFlags {
  reason?: string;
}

const MAX_PAGE_SIZE = 1000;

interface Page {
  readonly certificates: readonly CertificateSummary[];
  readonly nextPageToken: string;
}

async function listPages(
  ca: CertificateAuthorityClient,
  request: { pageSize: number; pageToken: string; requester: string; profile: string; revoked: string },
  settings: { target: string; timeoutMs?: number },
  all: boolean,
  stop?: (page: Page) => boolean,
): Promise<Page> {
  const { unary } = await import('../client/rpc.ts');
  const collected: CertificateSummary[] = [];
  let pageToken = request.pageToken;
  for (;;) {
    const page = await unary(ca, ca.listCertificates, { ...request, pageToken }, settings);
    collected.push(...page.certificates);
    if (stop?.(page)) return { certificates: collected, nextPageToken: page.nextPageToken };
    if (!all || page.nextPageToken === '')
      return { certificates: collected, nextPageToken: page.nextPageToken };
    pageToken = page.nextPageToken;
  }
}

async function runList(flags: ListFlags): Promise<void> {
  const pageSize = Number(flags.pageSize);
  if (!/^[0-9]+$/.test(flags.pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) {
    throw invalid(
      `--page-size must be a whole number from 1 to ${MAX_PAGE_SIZE}, got ${JSON.stringify(flags.pageSize)}`,
    );
  }
  const { certificateJson, table } = await import('./operator-output.ts');
  const page = await withClients(await clientFlags(flags), ({ ca, target, context }) =>
    listPages(
      ca,
      {
        pageSize,
        pageToken: flags.pageToken ?? '',
        requester: flags.requester ?? '',
        profile: flags.profile ?? '',
        revoked: flags.revoked ?? '',
      },
      { target, timeoutMs: context.timeoutMs },
      flags.all ?? false,
    ),
  );
  const certificates = page.certificates.map(certificateJson);
  printResult(flags, { certificates, nextPageToken: page.nextPageToken || null }, () => {
    const lines =
      certificates.length === 0
        ? ['no certificates']
        : [
            table(
              ['SERIAL', 'PROFILE', 'SUBJECT', 'NOT AFTER', 'REVOKED', 'REQUESTER'],
              certificates.map((c) => [
                c.serial,
                c.profile,
                c.subject,
                c.notAfter ?? '-',
                c.revoked ? (c.revocationReason ?? 'yes') : 'no',
                c.requester || '-',
              ]),
            ),
          ];
    if (page.nextPageToken) lines.push(`(more: --page-token ${page.nextPageToken}, or --all)`);
    return lines.join('\n');
  });
}

async function runShow(serialText: string, flags: JsonFlags): Promise<void> {
  const serial = parseSerial(serialText);
  const { certificateJson, certificateLines } = await import('./operator-output.ts');
  const found = await withClients(await clientFlags(flags), async ({ ca, target, context }) => {
    const page = await listPages(
      ca,
      { pageSize: MAX_PAGE_SIZE, pageToken: '', requester: '', profile: '', revoked: '' },
      { target, timeoutMs: context.timeoutMs },
      true,
      (p) => p.certificates.some((c) => c.serial === serial),
    );
    return page.certificates.find((c) => c.serial === serial);
  });
  if (found === undefined) throw notFound(`no certificate with serial ${serial}`);
  const json = certificateJson(found);
  printResult(flags, json, () => certificateLines(json));
}

async function runRevoke(serialText: string, flags: RevokeFlags): Promise<void> {
  const serial = parseSerial(serialText);
  const { unary } = await import('../client/rpc.ts');
  const response = await withClients(await clientFlags(flags), ({ ca, target, context }) =>
    unary(ca, ca.revoke, { serial, reason: flags.reason ?? '' }, { target, timeoutMs: context.timeoutMs }),
  );
  printResult(
    flags,
    { serial, revoked: true, alreadyRevoked: response.alreadyRevoked, reason: flags.reason ?? 'unspecified' },
    () =>
      response.alreadyRevoked ? `certificate ${serial} was already revoked` : `revoked certificate ${serial}`,
  );
}

export function registerCertCommands(program: Command): void {
  const cert = program
    .command('cert')
    .description('Certificates issued by the control plane: list, show, revoke');

  addClientOptions(
    cert
      .command('list')
      .description('List issued certificates, newest first, one page at a time')
      .option('--requester <who>', 'only certificates requested by this SPIFFE ID or node ID')
      .option('--profile <profile>', 'only this profile (node, client, server, admin, …)')
      .addOption(
        new Option('--revoked <yes|no>', 'only revoked (yes) or only unrevoked (no)').choices(['yes', 'no']),
      )
      .option('--all', 'follow every page')
      .option('--page-size <n>', `certificates per page (1 to ${MAX_PAGE_SIZE})`, '100')
      .option('--page-token <token>', 'continue after a previous page')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil cert list',
        '$ sigil cert list --profile node --revoked no --all --json',
        '$ sigil cert list --requester spiffe://sigil.internal/admin/admin',
      ),
    )
    .action((flags: ListFlags) => runList(flags));

  addClientOptions(
    cert
      .command('show')
      .description('Show one issued certificate')
      .argument('<serial>', 'the serial number (hex)')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil cert show 5f3a9c0e1d2b'))
    .action((serial: string, flags: JsonFlags) => runShow(serial, flags));

  addClientOptions(
    cert
      .command('revoke')
      .description('Revoke a certificate: every live session using it is closed')
      .argument('<serial>', 'the serial number (hex)')
      .option('--reason <reason>', 'RFC 5280 reason, e.g. keyCompromise, superseded (default: unspecified)')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil cert revoke 5f3a9c0e1d2b --reason keyCompromise'))
    .action((serial: string, flags: RevokeFlags) => runRevoke(serial, flags));
}
