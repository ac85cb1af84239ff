// `sigil workload …`: workloads on a node, called on the node's Workloads
// service (the node daemon, `sigil agent --dir NODE --workloads`) with the
// caller's identity (--identity DIR, or a server's admin with --data). The
// control plane says where --node serves (workload-connection.ts). Names are
// the caller's own: Carol's "web" is not Dan's "web". This file only
// registers the commands; the work is in workload-run.ts and
// workload-console.ts.
import { type Command, Option } from 'commander';
import { addClientOptions } from './client-context.ts';
import { examples } from './operator-output.ts';
import type { ConsoleFlags } from './workload-console.ts';
import type { CreateFlags, EventsFlags, JsonNodeFlags, StatsFlags } from './workload-run.ts';

const run = () => import('./workload-run.ts');

/** Repeatable options collect their values in order. */
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** --node (required) and --node-address, then the client options, on a workload, image or block command. */
export function addNodeOptions(command: Command, required = true): Command {
  const node = new Option('--node <node>', "the node's name or ID (as sigil node list shows it)");
  if (required) node.makeOptionMandatory();
  return addClientOptions(
    command
      .addOption(node)
      .addOption(
        new Option(
          '--node-address <host:port>',
          "the node's Workloads address, skipping the control plane's lookup (--node is then the node's ID)",
        ),
      ),
  );
}

export function registerWorkloadCommands(program: Command): void {
  const workload = program
    .command('workload')
    .description(
      "Workloads on a node: processes in their own namespaces with cgroup limits, within the caller's delegation",
    );

  addNodeOptions(
    workload
      .command('create')
      .description(
        "Create and start a workload from an image on the node; its resources are reserved against every level of the caller's delegation first",
      )
      .argument('<name>', "the workload name: one DNS label, in the caller's own subtree")
      .argument('[command...]', 'the command to run, after -- (default: /bin/sh)')
      .addOption(
        new Option('--image <tag>', 'the image, org/name:version (sigil image list)').makeOptionMandatory(),
      )
      .option('--memory <MiB>', 'memory limit in MiB (default: what the delegation allows)')
      .option('--cpus <ids>', 'cpu ids to pin it to, e.g. 0,1 or 0-3 (within the delegation)')
      .option('--net <bridge>', 'attach to a bridge the delegation allows (repeatable)', collect)
      .option('--block <name:/path>', 'mount a block device, e.g. data:/data (repeatable)', collect)
      .option('--restart <policy>', 'no, always, on-failure or on-failure:CODES (e.g. on-failure:1,137)')
      .option('--env <NAME=VALUE>', 'an environment variable (repeatable)', collect)
      .option('--workdir <dir>', 'the working directory inside the workload')
      .option('--user <uid[:gid]>', 'run as this numeric user (and group)')
      .option(
        '--runtime <process|vm>',
        'process (default: namespaces) or vm (the command is the init of a qemu VM)',
      )
      .option('--json', 'print the workload as JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil workload create web --node web-1 --image demo/busybox:1 --memory 64 --identity ./alice -- /bin/httpd -f -p 8080',
        '$ sigil workload create job --node web-1 --image demo/busybox:1 --restart on-failure:1 --env MODE=batch -- /bin/sh -c "work"',
        '$ sigil workload create db --node n3f… --node-address 10.0.0.7:7543 --image org/db:2 --block data:/data --net br0',
        '$ sigil workload create vm1 --node web-1 --image demo/busybox:1 --runtime vm --memory 256 --net br0 -- /bin/sh',
      ),
    )
    .action(async (name: string, command: string[], flags: CreateFlags) =>
      (await run()).runCreate(name, command, flags),
    );

  addNodeOptions(
    workload
      .command('list')
      .description("List the caller's workloads on the node")
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil workload list --node web-1 --identity ./alice',
        '$ sigil workload list --node web-1 --json',
      ),
    )
    .action(async (flags: JsonNodeFlags) => (await run()).runList(flags));

  addNodeOptions(
    workload
      .command('info')
      .description('Show one workload: state, limits, addresses, last exit')
      .argument('<name>', 'the workload name')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil workload info web --node web-1 --identity ./alice'))
    .action(async (name: string, flags: JsonNodeFlags) => (await run()).runInfo(name, flags));

  addNodeOptions(
    workload
      .command('destroy')
      .description('Stop a workload, remove everything it had on the node and release its reservation')
      .argument('<name>', 'the workload name')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', examples('$ sigil workload destroy web --node web-1 --identity ./alice'))
    .action(async (name: string, flags: JsonNodeFlags) => (await run()).runDestroy(name, flags));

  addNodeOptions(
    workload
      .command('restart')
      .description('Stop a workload and start it again, with a new command when one follows --')
      .argument('<name>', 'the workload name')
      .argument('[command...]', 'a new command, after -- (default: the same one)')
      .option('--json', 'print the workload as JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil workload restart web --node web-1',
        '$ sigil workload restart web --node web-1 -- /bin/httpd -f -p 8081',
      ),
    )
    .action(async (name: string, command: string[], flags: JsonNodeFlags) =>
      (await run()).runRestart(name, command, flags),
    );

  addNodeOptions(
    workload
      .command('console')
      .description(
        "Read a workload's console: its history (everything kept, --since or --lines), then with --follow live lines; " +
          '--interactive attaches (stdin goes to the workload; on a terminal ctrl-] detaches)',
      )
      .argument('<name>', 'the workload name')
      .option('--since <time>', 'lines since a time: a duration ago (10m) or ISO 8601')
      .option('--lines <n>', 'the last N lines')
      .option('--follow', 'keep printing new lines until interrupted')
      .option('--interactive', 'attach: raw output, stdin to the workload')
      .option('--json', 'one JSON object per line: data, atUnixMs, sequence, dropped'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil workload console web --node web-1 --lines 20',
        '$ sigil workload console web --node web-1 --since 10m --follow',
        '$ sigil workload console web --node web-1 --interactive',
        '$ echo "uptime" | sigil workload console web --node web-1 --interactive',
      ),
    )
    .action(async (name: string, flags: ConsoleFlags) =>
      (await import('./workload-console.ts')).runConsole(name, flags),
    );

  addNodeOptions(
    workload
      .command('events')
      .description(
        'Workload events (created, started, exited, oom-killed, restarted, destroyed, destroyed-by-revocation), oldest first',
      )
      .argument('[name]', 'one workload (default: every workload of the caller)')
      .option('--follow', 'keep printing new events until interrupted')
      .option('--limit <n>', 'at most N events of history (the node caps it)')
      .option('--since <time>', 'events since a time: a duration ago (1h) or ISO 8601')
      .option('--json', 'print JSON ({events: […]}; with --follow one event per line)'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil workload events --node web-1',
        '$ sigil workload events web --node web-1 --since 1h --follow',
        '$ sigil workload events web --node web-1 --limit 10 --json',
      ),
    )
    .action(async (name: string | undefined, flags: EventsFlags) => (await run()).runEvents(name, flags));

  addNodeOptions(
    workload
      .command('stats')
      .description(
        "A workload's statistics: CPU time, memory (current, peak), pids, OOM kills, network, block usage",
      )
      .argument('<name>', 'the workload name')
      .option('--watch [interval]', 'print a sample every interval until interrupted (default 2s)')
      .option('--json', 'print JSON (with --watch one sample per line)'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil workload stats web --node web-1',
        '$ sigil workload stats web --node web-1 --watch 5s',
      ),
    )
    .action(async (name: string, flags: StatsFlags) => (await run()).runStats(name, flags));
}
