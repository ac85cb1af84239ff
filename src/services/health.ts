// The standard gRPC health service (grpc.health.v1.Health: Check, Watch,
// List), so grpc_health_probe, grpcurl, Kubernetes gRPC probes and load
// balancers can ask the control plane whether it serves. The proto is the
// gRPC authors' own (shipped in the grpc-health-check package); the
// implementation is sigil's, because it must end its Watch streams when the
// server shuts down (the package's never ends them, so a watching probe would
// hold the drain for the whole grace period).
//
// Statuses: "" (the server as a whole) and each of sigil's services are
// SERVING from start until shutdown begins, then NOT_SERVING; every open
// Watch gets NOT_SERVING and is ended with OK. An unknown service name is
// NOT_FOUND for Check and SERVICE_UNKNOWN for Watch, as the proto says.
// Who may call it: see authorization-rules.ts (any authenticated peer).
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import { loadSync, type PackageDefinition, type ServiceDefinition } from '@grpc/proto-loader';

export type ServingStatus = 'SERVING' | 'NOT_SERVING';
type WatchStatus = ServingStatus | 'SERVICE_UNKNOWN';

export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';
/** The service name the proto reserves for the server as a whole. */
export const OVERALL = '';
/** Longest service name a caller may ask about (every real one is far shorter). */
const MAX_SERVICE_NAME = 256;

const require = createRequire(import.meta.url);

/** Path of the standard health.proto (from the grpc-health-check package). */
export function healthProtoPath(): string {
  return require.resolve('grpc-health-check/proto/health/v1/health.proto');
}

let loaded: PackageDefinition | undefined;

/** The health proto, loaded once (proto-loader: descriptors for reflection too). */
export function healthPackageDefinition(): PackageDefinition {
  loaded ??= loadSync(healthProtoPath(), { keepCase: true, longs: String, enums: String, defaults: true });
  return loaded;
}

interface HealthCheckRequest {
  readonly service?: string;
}

interface HealthCheckResponse {
  readonly status: WatchStatus;
}

interface Watcher {
  readonly service: string;
  readonly call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>;
}

export class HealthService {
  readonly definition: ServiceDefinition;
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Set<Watcher>();
  #closed = false;

  /** `services`: the full names served ("sigil.v1.Admin"); all start SERVING, with the overall "". */
  constructor(services: readonly string[]) {
    this.definition = healthPackageDefinition()[HEALTH_SERVICE_NAME] as ServiceDefinition;
    for (const name of [OVERALL, ...services]) this.#statuses.set(name, 'SERVING');
  }

  status(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  /** Sets every known service's status and tells their watchers. */
  setAll(status: ServingStatus): void {
    for (const name of this.#statuses.keys()) this.#statuses.set(name, status);
    for (const watcher of this.#watchers) this.#write(watcher, status);
  }

  /** Shutdown: NOT_SERVING to everyone, then every Watch stream ends with OK. New calls see NOT_SERVING. */
  close(): void {
    this.setAll('NOT_SERVING');
    this.#closed = true;
    for (const watcher of [...this.#watchers]) {
      this.#watchers.delete(watcher);
      watcher.call.end();
    }
  }

  /** Open Watch streams (for tests and metrics). */
  get watching(): number {
    return this.#watchers.size;
  }

  implementation(): grpc.UntypedServiceImplementation {
    return {
      Check: (
        call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>,
        callback: grpc.sendUnaryData<HealthCheckResponse>,
      ) => {
        const service = serviceName(call.request);
        if (service === null) {
          callback({ code: grpc.status.INVALID_ARGUMENT, details: 'service: too long' });
          return;
        }
        const status = this.#statuses.get(service);
        if (status === undefined) {
          callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${JSON.stringify(service)}` });
          return;
        }
        callback(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = serviceName(call.request);
        if (service === null) {
          call.destroy(Object.assign(new Error('service: too long'), { code: grpc.status.INVALID_ARGUMENT }));
          return;
        }
        const status = this.#statuses.get(service) ?? 'SERVICE_UNKNOWN';
        if (this.#closed) {
          // Shutting down: say so and end, rather than hold the drain.
          call.write({ status });
          call.end();
          return;
        }
        const watcher: Watcher = { service, call };
        this.#watchers.add(watcher);
        const forget = () => this.#watchers.delete(watcher);
        call.on('cancelled', forget);
        call.on('close', forget);
        call.on('error', forget);
        call.write({ status });
      },
      List: (
        _call: grpc.ServerUnaryCall<unknown, { statuses: Record<string, HealthCheckResponse> }>,
        callback: grpc.sendUnaryData<{ statuses: Record<string, HealthCheckResponse> }>,
      ) => {
        const statuses: Record<string, HealthCheckResponse> = {};
        for (const [name, status] of this.#statuses) statuses[name] = { status };
        callback(null, { statuses });
      },
    };
  }

  #write(watcher: Watcher, status: ServingStatus): void {
    if (!this.#statuses.has(watcher.service)) return;
    if (watcher.call.cancelled || watcher.call.destroyed) return;
    watcher.call.write({ status });
  }
}

function serviceName(request: HealthCheckRequest): string | null {
  const service = typeof request.service === 'string' ? request.service : '';
  return service.length > MAX_SERVICE_NAME ? null : service;
}
