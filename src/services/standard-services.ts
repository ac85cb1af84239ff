// The services every gRPC server is expected to offer, on the control plane:
// health (health.ts) and reflection (reflection.ts). Added to the same
// MtlsServer as sigil's API, so they sit behind the same mTLS and the same
// authorization table (authorization-rules.ts: any authenticated peer).
import { HealthService } from './health.ts';
import { ServerReflection, type ServiceHost } from './reflection.ts';

export interface StandardServices {
  readonly health: HealthService;
  /** Shutdown: NOT_SERVING to health watchers, then every health and reflection stream ends with OK. */
  close(): void;
}

/** `services`: the full names of the API's services ("sigil.v1.Admin"), reported SERVING by health. */
export function addStandardServices(host: ServiceHost, services: readonly string[]): StandardServices {
  const health = new HealthService(services);
  host.addService(health.definition, health.implementation());
  const reflection = new ServerReflection();
  reflection.addTo(host);
  return {
    health,
    close() {
      health.close();
      reflection.close();
    },
  };
}
