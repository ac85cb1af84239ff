// `sigil status`: what the control plane says about itself (Admin.GetStatus),
// asked as an admin: trust domain, pinned root, replicas and their
// intermediates, certificate and node counts, store, whether the root key is
// online, the policy extension OID fixed at bootstrap. Called with a
// delegate's identity (an --identity directory written by `sigil delegate`,
// or a leaf whose SPIFFE ID lies beneath <name>.d.<td>) it shows the
// delegation status instead, as `sigil delegation status` does: a delegate
// has no business with the deployment's state.
//
// It also says how long the identity it called with has left, and warns once
// that identity is in its renewal window (cli/identity-expiry.ts): the admin
// identity in a data directory is renewed by its server, a copied one is not.
import type { Command } from 'commander';
import { addClientOptions, type ClientOptionValues, clientFlags, withClients } from './client-context.ts';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';

interface StatusFlags extends ClientOptionValues {
  json?: boolean;
}

async function runStatus(flags: StatusFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const { instant, relative, table } = await import('./operator-output.ts');
  const { isDelegateIdentity, showDelegationStatus } = await import('./delegation-status.ts');
  const { identityExpiry } = await import('./identity-expiry.ts');
  const values = await clientFlags(flags);
  const result = await withClients(values, async (clients) => {
    const { admin, target, context } = clients;
    if (await isDelegateIdentity(values.identity, context.certificateChain, context.trustDomain)) {
      await showDelegationStatus(clients, flags);
      return null;
    }
    return {
      target,
      status: await unary(admin, admin.getStatus, {}, { target, timeoutMs: context.timeoutMs }),
      identity: identityExpiry(context.certificateChain, context.identitySource, {
        fromDataDirectory: values.identity === undefined,
      }),
    };
  });
  if (result === null) return;
  const { status, target, identity } = result;
  const json = {
    server: target,
    trustDomain: status.trustDomain,
    policyOid: status.policyOid,
    rootFingerprint: status.rootFingerprint,
    replicaId: status.replicaId,
    store: status.store,
    rootKeyOnline: status.rootKeyOnline,
    certificates: { issued: status.certificatesIssued, revoked: status.certificatesRevoked },
    nodes: { new: status.nodesNew, up: status.nodesUp, revoked: status.nodesRevoked },
    replicas: status.replicas.map((replica) => ({
      replicaId: replica.replicaId,
      intermediateSerial: replica.intermediateSerial,
      intermediateNotAfter: instant(replica.intermediateNotAfterUnixMs),
    })),
    identity,
  };
  printResult(flags, json, () => {
    const now = Date.now();
    const lines = [
      `sigil server at ${target} (replica ${json.replicaId || '-'}, ${json.store || 'unknown'} store)`,
      `  trust domain:   ${json.trustDomain}`,
      `  policy OID:     ${json.policyOid || 'unknown (an older server)'}`,
      `  root CA:        ${json.rootFingerprint} (key ${json.rootKeyOnline ? 'online' : 'offline'})`,
      `  certificates:   ${json.certificates.issued} issued, ${json.certificates.revoked} revoked`,
      `  nodes:          ${json.nodes.up} up, ${json.nodes.new} waiting for approval, ${json.nodes.revoked} revoked`,
      `  called as:      ${identity.spiffeId ?? '-'}, valid until ${identity.notAfter} (renewal from ${identity.renewFrom})`,
    ];
    if (identity.warning) lines.push(`  warning:        ${identity.warning}`);
    if (status.replicas.length > 0) {
      lines.push(
        '',
        table(
          ['REPLICA', 'INTERMEDIATE', 'EXPIRES'],
          status.replicas.map((replica) => [
            replica.replicaId,
            replica.intermediateSerial,
            relative(replica.intermediateNotAfterUnixMs, now),
          ]),
        ),
      );
    }
    return lines.join('\n');
  });
}

export function registerStatusCommand(program: Command): void {
  addClientOptions(
    program
      .command('status')
      .description(
        "The control plane's state: trust domain, policy OID, root CA, replicas, certificate and node counts; " +
          'as a delegate (--identity DIR from sigil delegate): its policy, usage and what it delegated',
      )
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil status',
        '$ sigil status --data /var/lib/sigil --json',
        '$ sigil status --identity ./alice --json',
      ),
    )
    .action((flags: StatusFlags) => runStatus(flags));
}
