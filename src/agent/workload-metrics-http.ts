// The node daemon's /metrics for Prometheus (`--metrics-listen HOST:PORT`):
// GET or HEAD /metrics answers the text exposition format; 404 elsewhere,
// 405 for other methods. sigil never opens a plaintext listener to the
// network, so this binds loopback addresses only (a scraper or agent on the
// node itself).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { firstLineOf, invalid } from '../errors.ts';
import type { Logger } from '../logging.ts';
import type { WorkloadSupervisor } from '../workloads/supervisor.ts';
import { renderWorkloadMetrics, type WorkloadMetricsInput } from '../workloads/workload-metrics.ts';

const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface WorkloadMetricsServer {
  /** HOST:PORT it listens on. */
  readonly address: string;
  close(): Promise<void>;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export async function serveWorkloadMetrics(
  host: string,
  port: number,
  render: () => string,
  logger: Logger,
): Promise<WorkloadMetricsServer> {
  if (!isLoopback(host))
    throw invalid(`--metrics-listen ${host}: metrics are served on a loopback address only (e.g. 127.0.0.1)`);
  const server = http.createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      response.writeHead(404).end();
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    let body: string;
    try {
      body = render();
    } catch (error) {
      logger.warn({ err: firstLineOf(error) }, 'could not collect workload metrics');
      response.writeHead(500).end();
      return;
    }
    response.writeHead(200, { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
    response.end(request.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return {
    address: host.includes(':') ? `[${host}]:${bound.port}` : `${host}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Every workload's figures as Prometheus text (workloads/workload-metrics.ts). */
export function workloadMetricsOf(supervisor: WorkloadSupervisor): string {
  const inputs: WorkloadMetricsInput[] = [];
  for (const info of supervisor.list()) {
    try {
      const { state: _state, interfaces, ...stats } = supervisor.stats(info.key);
      inputs.push({ ...stats, workload: info.key, interfaces });
    } catch {
      // Destroyed meanwhile.
    }
  }
  return renderWorkloadMetrics(inputs);
}
