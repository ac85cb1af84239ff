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
//
// `--workloads` also runs the node's workload daemon
// (src/agent/workload-daemon.ts): the Workloads service on --listen
// (default 127.0.0.1:7543), bridges from --bridge NAME=ADDRESS/PREFIX, and
// Prometheus text on --metrics-listen when given. It must run as root. On
// SIGINT/SIGTERM it stops serving and kills its workloads; they stay desired
// and start again with the next `sigil agent --workloads`.
import { type Command, Option } from 'commander';
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
  workloads?: boolean;
  listen?: string;
  bridge: string[];
  metricsListen?: string;
  cgroupBase?: string;
}

async function runWorkloadDaemon(flags: AgentFlags): Promise<void> {
  const { rootRefusal, WorkloadDaemon } = await import('../agent/workload-daemon.ts');
  const { SigilError } = await import('../errors.ts');
  const refusal = rootRefusal(process.getuid?.());
  if (refusal !== null) throw new SigilError('failed_precondition', refusal);
  const { parseDuration } = await import('../pki/duration.ts');
  const { createLogger } = await import('../logging.ts');
  const { NodeAgent } = await import('../agent/agent.ts');
  const logger = createLogger(flags.json ? { pretty: false } : {});
  const agent = await NodeAgent.open({
    dir: flags.dir,
    rotateKey: flags.rotateKey,
    bundleRefreshMs: parseDuration(flags.bundleRefresh),
    logger,
  });
  if (flags.exec !== undefined) {
    const { RenewalHook } = await import('../agent/renewal-hook.ts');
    const hook = new RenewalHook({ command: flags.exec, dir: flags.dir, nodeId: agent.info.nodeId, logger });
    agent.on('renewed', (outcome) => hook.run(outcome));
  }
  const revoked = new Promise<never>((_resolve, reject) => agent.once('revoked', reject));
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      logger.info({ signal }, 'workload daemon stopping');
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  const keepAlive = setInterval(() => {}, 1 << 30);
  try {
    agent.start();
    const daemon = await WorkloadDaemon.start({
      dir: flags.dir,
      agent,
      logger,
      bridges: flags.bridge,
      ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
      ...(flags.metricsListen !== undefined ? { metricsListen: flags.metricsListen } : {}),
      ...(flags.cgroupBase !== undefined ? { cgroupBase: flags.cgroupBase } : {}),
    });
    try {
      await Promise.race([stopped, revoked]);
    } finally {
      await daemon.close();
    }
  } finally {
    clearInterval(keepAlive);
    await agent.close();
  }
}

async function runAgent(flags: AgentFlags): Promise<void> {
  if (flags.workloads) return runWorkloadDaemon(flags);
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
    .option('--workloads', "also serve the node's Workloads service (must run as root)")
    .addOption(
      new Option(
        '--listen <host:port>',
        'with --workloads: where the Workloads service listens (default 127.0.0.1:7543; port 0 picks a free one)',
      ).env('SIGIL_WORKLOADS_LISTEN'),
    )
    .option(
      '--bridge <name=address/prefix>',
      'with --workloads: a bridge workloads may join, e.g. br0=10.77.0.1/24 (repeatable)',
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option('--metrics-listen <host:port>', "with --workloads: serve the workloads' Prometheus metrics here")
    .option(
      '--cgroup-base <name>',
      "with --workloads: the cgroup directory workloads go beneath, inside the daemon's own (default sigil-workloads)",
    )
    .addHelpText(
      'after',
      examples(
        '$ sigil agent --dir /etc/sigil/node',
        '$ sigil agent --dir ./node --once --json',
        '$ sigil agent --dir ./node --once --force',
        "$ sigil agent --dir /etc/sigil/node --exec 'systemctl reload envoy'",
        '$ sudo sigil agent --dir /etc/sigil/node --workloads --bridge br0=10.77.0.1/24',
      ),
    )
    .action((flags: AgentFlags, command: Command) => {
      if (flags.force && !flags.once) command.error('error: --force applies with --once only');
      if (flags.workloads && flags.once)
        command.error('error: --workloads runs a daemon; it does not go with --once');
      const daemonOnly =
        // $SIGIL_WORKLOADS_LISTEN is for the daemon when there is one; only the flag is a mistake without it.
        (flags.listen !== undefined && command.getOptionValueSource('listen') === 'cli') ||
        flags.bridge.length > 0 ||
        flags.metricsListen !== undefined ||
        flags.cgroupBase !== undefined;
      if (daemonOnly && !flags.workloads)
        command.error(
          'error: --listen, --bridge, --metrics-listen and --cgroup-base apply with --workloads only',
        );
      return runAgent(flags);
    });
}
