// /metrics of `sigil server --workers N`: the first process's registry and
// every worker's, summed the way prom-client sums a cluster's
// (AggregatorRegistry: counters and histograms add up, the default metrics
// carry their own rule). A worker that does not answer in time is left out of
// that scrape and logged, so one stuck process never blocks monitoring.
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { MetricsSource } from './metrics-http.ts';

/** How long a scrape waits for a worker's metrics. */
export const WORKER_METRICS_TIMEOUT_MS = 2_000;

/** Each worker's metrics as `registry.getMetricsAsJSON()` gives them. */
export type WorkerMetricsReader = () => Promise<readonly object[][]>;

/** `registry` alone until `workers` is set (the pool starts after the HTTP side), then all of them. */
export class AggregatedMetrics implements MetricsSource {
  readonly #registry: Registry;
  #workers: WorkerMetricsReader | null = null;

  constructor(registry: Registry) {
    this.#registry = registry;
  }

  get contentType(): string {
    return this.#registry.contentType;
  }

  includeWorkers(workers: WorkerMetricsReader): void {
    this.#workers = workers;
  }

  async metrics(): Promise<string> {
    if (!this.#workers) return this.#registry.metrics();
    const own = await this.#registry.getMetricsAsJSON();
    const others = await this.#workers();
    return AggregatorRegistry.aggregate([own, ...others]).metrics();
  }
}
