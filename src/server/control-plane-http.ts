// The HTTP side of `sigil server` (http-side.ts) fed by the authority: its
// CRLs and delegation tree, the server's metrics, readiness (readiness.ts),
// and the data directory's admin token for /delegations.
import type { Authority } from '../authority/authority.ts';
import { firstLineOf, SigilError } from '../errors.ts';
import type { Logger } from '../logging.ts';
import { httpAdminToken } from './data-directory.ts';
import { type HttpSide, startHttpSide } from './http-side.ts';
import { formatAddress, type ListenAddress } from './listen-address.ts';
import type { MetricsSource } from './metrics-http.ts';
import type { ServerMetricSet } from './metrics-registry.ts';
import type { Readiness } from './readiness.ts';

/** Starts the HTTP side; resolves once listening (a failed listen names --http-listen). */
export function startControlPlaneHttp(options: {
  readonly authority: Authority;
  readonly metrics: ServerMetricSet;
  /** What /metrics serves; default `metrics.registry` (--workers: every process's, worker-metrics.ts). */
  readonly scrape?: MetricsSource;
  readonly readiness: Readiness;
  readonly dataDir: string;
  readonly listen: ListenAddress;
  readonly log: Logger;
}): Promise<HttpSide> {
  const { authority, listen, log } = options;
  return startHttpSide(
    {
      crl: (issuerId) => authority.crl(issuerId),
      crlIssuers: () => authority.crlIssuers(),
      metrics: options.scrape ?? options.metrics.registry,
      delegations: () => authority.delegationTree(),
      adminToken: httpAdminToken(options.dataDir),
      readiness: options.readiness.check,
    },
    {
      host: listen.host,
      port: listen.port,
      onError: (error) => log.error({ err: error }, 'HTTP side problem'),
    },
  ).catch((error: unknown) => {
    throw new SigilError(
      'failed_precondition',
      `cannot listen on ${formatAddress(listen.host, listen.port)} (--http-listen): ${firstLineOf(error)}`,
      { cause: error },
    );
  });
}
