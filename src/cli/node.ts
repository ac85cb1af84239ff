// `sigil node list|show|approve|revoke`: enrolled nodes and their state
// (NEW → UP → REVOKED), managed by an admin over the Admin API. Approving a
// NEW node issues its certificate (the node collects it by running
// `sigil enrol` again, or is already waiting with --wait); revoking a node
// revokes its certificates and refuses its renewals and re-joins.
import { type Command, Option } from 'commander';
import { invalid } from '../errors.ts';
import { addClientOptions, type ClientOptionValues, clientFlags, withClients } from './client-context.ts';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';

interface JsonFlags extends ClientOptionValues {
  json?: boolean;
}

interface ListFlags extends JsonFlags {
  state?: string;
}

interface RevokeFlags extends JsonFlags {
  reason?: string;
}

const STATES = ['NEW', 'UP', 'REVOKED'];

async function runList(flags: ListFlags): Promise<void> {
  const state = flags.state?.trim().toUpperCase() ?? '';
  if (state !== '' && !STATES.includes(state)) {
    throw invalid(`unknown node state ${JSON.stringify(flags.state)} (expected NEW, UP or REVOKED)`);
  }
  const { unary } = await import('../client/rpc.ts');
  const { nodeJson, relative, table } = await import('./operator-output.ts');
  const response = await withClients(await clientFlags(flags), ({ admin, target, context }) =>
    unary(admin, admin.listNodes, { state }, { target, timeoutMs: context.timeoutMs }),
  );
  const nodes = response.nodes.map(nodeJson);
  printResult(flags, { nodes }, () => {
    if (nodes.length === 0) return state ? `no ${state} nodes` : 'no nodes';
    const now = Date.now();
    return table(
      ['ID', 'NAME', 'STATE', 'UPDATED', 'CERTIFICATE'],
      response.nodes.map((node) => [
        node.id,
        node.name || '-',
        node.state,
        relative(node.updatedAtUnixMs, now),
        node.certificateSerial || '-',
      ]),
    );
  });
}

async function runShow(id: string, flags: JsonFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const { nodeJson, nodeLines } = await import('./operator-output.ts');
  const node = await withClients(await clientFlags(flags), ({ admin, target, context }) =>
    unary(admin, admin.getNode, { id: id.trim() }, { target, timeoutMs: context.timeoutMs }),
  );
  const json = nodeJson(node);
  printResult(flags, json, () => nodeLines(json));
}

async function runApprove(id: string, flags: JsonFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const { nodeJson, nodeLines } = await import('./operator-output.ts');
  const node = await withClients(await clientFlags(flags), ({ admin, target, context }) =>
    unary(admin, admin.approveNode, { id: id.trim() }, { target, timeoutMs: context.timeoutMs }),
  );
  const json = nodeJson(node);
  printResult(flags, json, () => `approved node ${json.id}: it is ${json.state}\n${nodeLines(json)}`);
}

async function runRevoke(id: string, flags: RevokeFlags): Promise<void> {
  const { unary } = await import('../client/rpc.ts');
  const { nodeJson, nodeLines } = await import('./operator-output.ts');
  const node = await withClients(await clientFlags(flags), ({ admin, target, context }) =>
    unary(
      admin,
      admin.revokeNode,
      { id: id.trim(), reason: flags.reason ?? '' },
      { target, timeoutMs: context.timeoutMs },
    ),
  );
  const json = nodeJson(node);
  printResult(flags, json, () => `revoked node ${json.id}\n${nodeLines(json)}`);
}

export function registerNodeCommands(program: Command): void {
  const node = program
    .command('node')
    .description('Enrolled nodes: list them, approve new ones, revoke them');

  addClientOptions(
    node
      .command('list')
      .description('List nodes')
      .addOption(new Option('--state <state>', 'only nodes in this state').choices(['NEW', 'UP', 'REVOKED']))
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil node list', '$ sigil node list --state NEW --json'))
    .action((flags: ListFlags) => runList(flags));

  addClientOptions(
    node
      .command('show')
      .description('Show one node')
      .argument('<id>', 'the node ID ("n" and 32 hex digits)')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil node show n5d2c8e0f4a7b91c3d6e2f0a18b4c7d9e'))
    .action((id: string, flags: JsonFlags) => runShow(id, flags));

  addClientOptions(
    node
      .command('approve')
      .description('Approve a NEW node: it becomes UP and gets its certificate')
      .argument('<id>', 'the node ID, as sigil enrol printed it')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples('$ sigil node list --state NEW', '$ sigil node approve n5d2c8e0f4a7b91c3d6e2f0a18b4c7d9e'),
    )
    .action((id: string, flags: JsonFlags) => runApprove(id, flags));

  addClientOptions(
    node
      .command('revoke')
      .description('Revoke a node: its certificates are revoked and it can neither renew nor re-join')
      .argument('<id>', 'the node ID')
      .option('--reason <reason>', 'RFC 5280 reason, e.g. keyCompromise, cessationOfOperation')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples('$ sigil node revoke n5d2c8e0f4a7b91c3d6e2f0a18b4c7d9e --reason keyCompromise'),
    )
    .action((id: string, flags: RevokeFlags) => runRevoke(id, flags));
}
