// gRPC server reflection (grpc.reflection.v1 and v1alpha, by @grpc/reflection)
// for sigil's API and the health service, so grpcurl and other generic
// clients can list and call them without a copy of the .proto files. The
// descriptors come from proto/sigil/v1/sigil.proto (shipped with the package)
// and the standard health.proto.
//
// Reflection streams are tracked and ended with OK at shutdown: the library
// ends a stream only when its client half-closes, and an idle grpcurl or IDE
// session would otherwise hold the drain for the whole grace period.
// Who may call it: see authorization-rules.ts (any authenticated peer).
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { healthPackageDefinition } from './health.ts';

export const REFLECTION_SERVICE_NAMES: readonly string[] = Object.freeze([
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
]);

/** Path of sigil's own proto, beside src/ and dist/ alike. */
export function sigilProtoPath(): string {
  return fileURLToPath(new URL('../../proto/sigil/v1/sigil.proto', import.meta.url));
}

function sigilPackageDefinition(): PackageDefinition {
  return loadSync(sigilProtoPath(), { keepCase: true, longs: String, enums: String, defaults: true });
}

/** What MtlsServer (or grpc.Server) offers for adding a service. */
export interface ServiceHost {
  addService(service: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): void;
}

interface Stream {
  end(): void;
  on(event: string, listener: () => void): unknown;
}

export class ServerReflection {
  readonly #streams = new Set<Stream>();
  #closed = false;

  /** Adds grpc.reflection.v1 and v1alpha to `host`, describing sigil's API and health. */
  addTo(host: ServiceHost): void {
    const reflection = new ReflectionService({ ...sigilPackageDefinition(), ...healthPackageDefinition() });
    reflection.addToServer({
      addService: (service, implementation) => {
        const wrapped: grpc.UntypedServiceImplementation = {};
        for (const [name, handler] of Object.entries(implementation)) {
          wrapped[name] = ((stream: Stream) => {
            if (this.#closed) {
              stream.end();
              return;
            }
            this.#streams.add(stream);
            const forget = () => this.#streams.delete(stream);
            stream.on('close', forget);
            stream.on('cancelled', forget);
            stream.on('error', forget);
            (handler as (stream: Stream) => void)(stream);
          }) as grpc.UntypedHandleCall;
        }
        host.addService(service, wrapped);
      },
    });
  }

  /** Shutdown: every open reflection stream ends with OK; later ones end at once. */
  close(): void {
    this.#closed = true;
    for (const stream of [...this.#streams]) {
      this.#streams.delete(stream);
      stream.end();
    }
  }
}
