// `sigil server` at run time: start the control plane, tell the operator
// where it is (and, after a bootstrap, the CA fingerprint and what to do
// next), then serve until SIGINT or SIGTERM and shut down gracefully:
// stop accepting, drain running calls for up to 10 s, close the store.
// A second signal during the drain stops at once (exit code 130).
import { invalid } from '../errors.ts';
import { DEFAULT_DATA_DIR } from '../files/data-directory-names.ts';
import { createLogger, type LogLevel } from '../logging.ts';
import { DEFAULT_SHUTDOWN_GRACE_MS } from '../server/shutdown.ts';
import { type RunningServer, type ServerOptions, startServer } from '../server/start-server.ts';

/** The flags of `sigil server` (server.ts), as commander fills them from flags or SIGIL_* variables. */
export interface ServerFlags
  extends Pick<
    ServerOptions,
    'listen' | 'httpListen' | 'httpAdvertise' | 'store' | 'trustDomain' | 'policyOid' | 'replicaId' | 'join'
  > {
  readonly data?: string;
  readonly advertise?: string[];
  readonly logLevel?: string;
  /** --workers, as typed (checked by parseWorkers). */
  readonly workers?: string;
}

/** --workers N: a whole number (startServer checks the range). */
function parseWorkers(text: string | undefined): number {
  if (text === undefined) return 1;
  if (!/^\s*\d+\s*$/.test(text))
    throw invalid(`--workers ${JSON.stringify(text)}: give a whole number of processes`);
  return Number(text);
}

function shellQuote(text: string): string {
  return /^[A-Za-z0-9_./:@=-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

function announce(running: RunningServer, write: (line: string) => void): void {
  const boot = running.bootstrapped;
  if (boot) {
    write(`sigil: bootstrapped trust domain ${boot.trustDomain}`);
    write(`  CA fingerprint (SHA-256): ${boot.rootFingerprint}`);
    write(`  policy extension OID: ${running.authority.policyOid.text} (fixed for this deployment)`);
    write(`  admin identity: ${boot.adminCertificatePath}, ${boot.adminKeyPath} (0600; keep them private)`);
    write(`  make a join token:  sigil token create --data ${shellQuote(running.dataDir)}`);
  }
  write(
    `sigil: serving ${running.info.trustDomain} as replica ${running.info.replicaId} on ${running.address} (gRPC), ` +
      `${running.httpUrl} (CRLs, metrics, health); CA fingerprint ${running.info.rootFingerprint}`,
  );
}

export async function runServer(flags: ServerFlags): Promise<void> {
  const workers = parseWorkers(flags.workers);
  const logger = createLogger(flags.logLevel ? { level: flags.logLevel as LogLevel } : {});
  // Handlers go in before anything starts: server.json appears during
  // start-up, and a SIGINT that arrives right after it must still drain
  // gracefully rather than kill the process. A second signal stops at once.
  let received: NodeJS.Signals | null = null;
  let wake = (): void => {};
  const onSignal = (signal: NodeJS.Signals): void => {
    if (received) {
      logger.warn({ signal }, 'second signal: stopping without draining');
      process.exit(130);
    }
    received = signal;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const running = await startServer({
      dataDir: flags.data ?? DEFAULT_DATA_DIR,
      ...(flags.listen ? { listen: flags.listen } : {}),
      ...(flags.httpListen ? { httpListen: flags.httpListen } : {}),
      ...(flags.advertise && flags.advertise.length > 0 ? { advertise: flags.advertise } : {}),
      ...(flags.httpAdvertise ? { httpAdvertise: flags.httpAdvertise } : {}),
      ...(flags.store ? { store: flags.store } : {}),
      ...(flags.trustDomain ? { trustDomain: flags.trustDomain } : {}),
      ...(flags.policyOid ? { policyOid: flags.policyOid } : {}),
      ...(flags.replicaId ? { replicaId: flags.replicaId } : {}),
      ...(flags.join ? { join: flags.join } : {}),
      workers,
      logger,
    });
    announce(running, (line) => process.stdout.write(`${line}\n`));
    if (!received) await new Promise<void>((resolve) => (wake = resolve));
    logger.info({ signal: received }, 'signal received');
    // A shutdown that outlives its grace period by this much is stuck: say so and stop.
    setTimeout(() => {
      logger.error('shutdown did not finish in time; exiting without it');
      process.exit(1);
    }, DEFAULT_SHUTDOWN_GRACE_MS + 10_000).unref();
    await running.close(DEFAULT_SHUTDOWN_GRACE_MS);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  // Everything is closed; should a library still hold a handle, do not hang on it.
  setTimeout(() => process.exit(process.exitCode ?? 0), 5_000).unref();
}
