// `sigil build`: a Dockerfile built on a node (the node daemon, `sigil agent
// --workloads --bridge …`) as a workload of the caller, stored there as an
// image that `sigil workload create --image` runs. This file only registers
// the command; the work is in build-run.ts.
import type { Command } from 'commander';
import type { BuildFlags } from './build-run.ts';
import { examples } from './operator-output.ts';
import { addNodeOptions } from './workload.ts';

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

export function registerBuildCommand(program: Command): void {
  addNodeOptions(
    program
      .command('build')
      .description(
        "Build an image from a Dockerfile on a node, as a workload of the caller (firebuild's bootstrap: sigil vminit in the guest)",
      )
      .argument('<context>', 'the build context directory (its .dockerignore is honoured on the node)')
      .option('-f, --file <Dockerfile>', 'the Dockerfile (default: CONTEXT/Dockerfile)')
      .requiredOption('-t, --tag <org/name:version>', 'the image to make')
      .option('--build-arg <NAME=VALUE>', 'a build argument (repeatable)', collect)
      .option('--net <bridge>', "the bridge the build joins (default: the node's first)")
      .option(
        '--memory <MiB>',
        'memory limit of the build workload in MiB (default: what the delegation allows)',
      )
      .option(
        '--runtime <process|vm>',
        'process (the default) or vm: each stage a qemu VM, with at least 256 MiB of memory',
      )
      .option('--json', 'print the image as JSON'),
  )
    .addHelpText(
      'after',
      examples(
        '$ sigil build -t demo/hello:1 --node web-1 --identity ./alice ./hello',
        '$ sigil build -f ci/Dockerfile -t org/api:2 --build-arg VERSION=2 --node web-1 --data ./server .',
      ),
    )
    .action(async (context: string, flags: BuildFlags) =>
      (await import('./build-run.ts')).runBuild(context, flags),
    );
}
