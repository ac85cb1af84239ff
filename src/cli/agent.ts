// `sigil agent --dir DIR`: keep an enrolled node's identity fresh (the work
// is in src/agent/agent.ts). Runs until SIGINT or SIGTERM, logging every
// renewal, re-join, trust bundle change and failure (pino: JSON lines, or
// short human lines on a terminal). `--once` does what is due now — re-join
// if the certificate expired, renew if it is in its renewal window (or
// always, with --force), refresh the trust bundle — prints the result and exits.
// A node the control plane has revoked exits 1 with "this node's certificate
// has been revoked" (at start, or as soon as the agent learns it; see
// src/agent/node-revoked.ts). `--exec CMD` runs CMD after every renewal or
// re-join, with the new files in place (src/agent/renewal-hook.ts); its
// failure is logged, never fatal.
import type { Command } from 'commander';
import type { RenewalOutcome } from '../agent/agent.ts';
import { examples } from './operator-output.ts';
import { printResult } from './output.ts';

interface AgentFlags {
  dir: string;
  once?: boolean;
  force?: boolean;
  rotateKey?: boolean;
  bundleRefresh: string;
  exec?: string;
  json?: boolean;
}

async function runAgent(flags: AgentFlags): Promise<void> {
  const { parseDuration } = await import('../pki/duration.ts');
  const { createLogger } = await import('../logging.ts');
  const { NodeAgent } = await import('../agent/agent.ts');
  const { RenewalHook } = await import('../agent/renewal-hook.ts');
  const bundleRefreshMs = parseDuration(flags.bundleRefresh);
  const logger = createLogger(flags.json ? { pretty: false } : {});
  const hookFor = (nodeId: string) =>
    flags.exec === undefined
      ? undefined
      : new RenewalHook({ command: flags.exec, dir: flags.dir, nodeId, logger });
  if (flags.once) {
    const agent = await NodeAgent.open({ dir: flags.dir, rotateKey: flags.rotateKey, bundleRefreshMs });
    try {
      // A bundle refresh refused with this certificate may end in a re-join ('renewed', kind 'rejoined').
      const seen: RenewalOutcome[] = [];
      agent.on('renewed', (outcome) => seen.push(outcome));
      let outcome: RenewalOutcome =
        agent.rejoinedFrom !== undefined
          ? { kind: 'rejoined' as const, certificate: agent.certificate, previousSerial: agent.rejoinedFrom }
          : await agent.renewIfDue({ force: flags.force });
      const bundleChanged = outcome.kind === 'not-due' ? await agent.refreshTrustBundle() : false;
      outcome = seen.at(-1) ?? outcome;
      if (outcome.kind !== 'not-due') await hookFor(agent.info.nodeId)?.run(outcome);
      const result = {
        nodeId: agent.info.nodeId,
        action: outcome.kind,
        serial: outcome.certificate.serial,
        previousSerial: outcome.kind === 'not-due' ? null : outcome.previousSerial,
        spiffeId: outcome.certificate.spiffeId,
        notBefore: outcome.certificate.notBefore.toISOString(),
        notAfter: outcome.certificate.notAfter.toISOString(),
        renewAt: outcome.certificate.renewAt.toISOString(),
        bundleChanged,
      };
      printResult(flags, result, () => {
        switch (outcome.kind) {
          case 'renewed':
            return `renewed the certificate of node ${result.nodeId}: serial ${result.serial} (was ${result.previousSerial}), valid until ${result.notAfter}`;
          case 'rejoined':
            return `the certificate of node ${result.nodeId} had expired; re-joined: serial ${result.serial}, valid until ${result.notAfter}`;
          default:
            return `node ${result.nodeId}: certificate ${result.serial} is not due for renewal until ${result.renewAt} (valid until ${result.notAfter})${bundleChanged ? '; trust bundle updated' : ''}`;
        }
      });
    } finally {
      await agent.close();
    }
    return;
  }

  const agent = await NodeAgent.open({ dir: flags.dir, rotateKey: flags.rotateKey, bundleRefreshMs, logger });
  const hook = hookFor(agent.info.nodeId);
  if (hook) {
    if (agent.rejoinedFrom !== undefined) {
      hook.run({ kind: 'rejoined', certificate: agent.certificate, previousSerial: agent.rejoinedFrom });
    }
    agent.on('renewed', (outcome) => hook.run(outcome));
  }
  // A revoked node stops the agent: exit 1 with the reason (main prints it).
  const revoked = new Promise<never>((_resolve, reject) => agent.once('revoked', reject));
  // Signals are handled from here on, before anything announces that the agent runs.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      logger.info({ signal }, 'agent stopping');
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  // The agent's timers are unref'd; this handle keeps the process alive until a signal.
  const keepAlive = setInterval(() => {}, 1 << 30);
  const certificate = agent.certificate;
  logger.info(
    {
      nodeId: agent.info.nodeId,
      serial: certificate.serial,
      notAfter: certificate.notAfter.toISOString(),
      renewAt: certificate.renewAt.toISOString(),
      ...(agent.rejoinedFrom !== undefined ? { rejoinedFrom: agent.rejoinedFrom } : {}),
    },
    'agent started',
  );
  try {
    agent.start();
    await Promise.race([stopped, revoked]);
  } finally {
    clearInterval(keepAlive);
    await agent.close();
    await hook?.idle();
  }
}

export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description(
      "Keep a node's identity fresh: renew at about 2/3 of the certificate's life, retry with backoff, " +
        're-join after an expiry, follow trust bundle changes; files are replaced atomically',
    )
    .requiredOption('--dir <dir>', 'the identity directory sigil enrol wrote')
    .option('--once', 'do what is due now (re-join, renew, refresh the bundle), print the result and exit')
    .option('--force', 'with --once: renew now even if the certificate is not due')
    .option(
      '--rotate-key',
      'replace the key at every renewal (re-joining after an expiry then needs the enrolled key)',
    )
    .option('--bundle-refresh <duration>', 'how often to fetch the trust bundle', '10m')
    .option(
      '--exec <command>',
      'run this shell command after every renewal, with the new files in place ' +
        '($SIGIL_CERT_FILE, $SIGIL_KEY_FILE, $SIGIL_SERIAL, …); a failure is logged, not fatal',
    )
    .option('--json', 'JSON log lines (and JSON output with --once)')
    .addHelpText(
      'after',
      examples(
        '$ sigil agent --dir /etc/sigil/node',
        '$ sigil agent --dir ./node --once --json',
        '$ sigil agent --dir ./node --once --force',
        "$ sigil agent --dir /etc/sigil/node --exec 'systemctl reload envoy'",
      ),
    )
    .action((flags: AgentFlags, command: Command) => {
      if (flags.force && !flags.once) command.error('error: --force applies with --once only');
      return runAgent(flags);
    });
}
