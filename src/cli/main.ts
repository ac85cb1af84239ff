// The `sigil` command. Each command group lives in its own file and registers
// itself on the program; this file owns the one mapping from errors to exit
// codes: 0 ok, 1 failure (one line on stderr), 2 bad usage: commander's own
// (unknown command or option, missing argument, a flag value that
// flag-values.ts refuses at parse time) and UsageError (usage.ts); a command
// with codes of its own (vminit) throws ExitStatus.
import { Command, CommanderError } from 'commander';
import { describeError, exitCodeFor } from '../errors.ts';
import { registerAgentCommand } from './agent.ts';
import { registerBlockCommands } from './block.ts';
import { registerBuildCommand } from './build.ts';
import { registerCaCommands } from './ca.ts';
import { registerCertCommands } from './cert.ts';
import { registerCompletionCommand } from './completion.ts';
import { registerDelegateCommand } from './delegate.ts';
import { registerDelegationCommands } from './delegation.ts';
import { registerEnrolCommand } from './enrol.ts';
import { checkFlagValues } from './flag-values.ts';
import { registerImageCommands } from './image.ts';
import { registerNodeCommands } from './node.ts';
import { registerPkiCommands } from './pki.ts';
import { registerServerCommand } from './server.ts';
import { registerStatusCommand } from './status.ts';
import { registerTokenCommands } from './token.ts';
import { UsageError } from './usage.ts';
import { packageVersion, registerVersionCommand } from './version.ts';
import { ExitStatus, registerVminitCommand } from './vminit.ts';
import { registerWorkloadCommands } from './workload.ts';

const USAGE_HINT = '(run with --help for usage)';

export function buildProgram(): Command {
  const program = new Command('sigil')
    .description(
      'A certificate-native control plane for gRPC: mTLS everywhere, enrolment, delegation, revocation.',
    )
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError(USAGE_HINT)
    .configureOutput({ outputError: (text, write) => write(text) })
    .exitOverride();
  registerPkiCommands(program);
  registerServerCommand(program);
  registerTokenCommands(program);
  registerNodeCommands(program);
  registerCertCommands(program);
  registerStatusCommand(program);
  registerDelegateCommand(program);
  registerDelegationCommands(program);
  registerEnrolCommand(program);
  registerAgentCommand(program);
  registerCaCommands(program);
  registerWorkloadCommands(program);
  registerImageCommands(program);
  registerBlockCommands(program);
  registerBuildCommand(program);
  registerVminitCommand(program);
  registerVersionCommand(program);
  registerCompletionCommand(program);
  checkFlagValues(program);
  return program;
}

/** Runs the CLI and resolves to the process exit code; never calls process.exit. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end through here with exitCode 0; usage errors are 2.
      if (error.exitCode === 0) return 0;
      return 2;
    }
    // A command with exit codes of its own (vminit's are firebuild's) has already said why.
    if (error instanceof ExitStatus) return error.exitCode;
    if (error instanceof UsageError) {
      process.stderr.write(`sigil: ${error.message}\n${USAGE_HINT}\n`);
      return 2;
    }
    process.stderr.write(`sigil: ${describeError(error)}\n`);
    return exitCodeFor(error);
  }
}
