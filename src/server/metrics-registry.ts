// The server's Prometheus registry and what records into it: the transport
// (handshakes, connections), the services and the audited CA operations,
// and Node's default process metrics. Served on the HTTP side's /metrics.
import { collectDefaultMetrics, Registry } from 'prom-client';
import { ServerMetrics } from '../services/server-metrics.ts';
import { TransportMetrics } from '../transport/metrics.ts';

export interface ServerMetricSet {
  readonly registry: Registry;
  readonly transport: TransportMetrics;
  readonly server: ServerMetrics;
}

export function createServerMetrics(): ServerMetricSet {
  const registry = new Registry();
  const transport = new TransportMetrics({ registry });
  const server = new ServerMetrics(registry);
  collectDefaultMetrics({ register: registry });
  return { registry, transport, server };
}
