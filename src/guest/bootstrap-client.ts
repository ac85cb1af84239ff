// The guest's side of the bootstrap service (bootstrap-service.ts): what
// vminit calls, over mutual TLS 1.3 with the Bootstrap section of its
// metadata (the build's CA chain, its client certificate and key, and the
// name the server certificate must carry). The same calls as firebuild-shared's
// build/rootfs/client.go, but every answer is checked: commands are parsed
// (build-commands.ts), a ping must echo its id, and every resource chunk must
// match its SHA-256 (resource-chunks.ts).
import { randomUUID } from 'node:crypto';
import {
  type ChannelOptions,
  type ClientUnaryCall,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { type ErrorCode, invalid, messageOf, SigilError } from '../errors.ts';
import { RootfsServerClient } from '../gen/firebuild/proto/rootfs_server.ts';
import { channelCredentials } from '../transport/client-credentials.ts';
import { connectionRefusal } from '../transport/connection-failure.ts';
import { StaticMaterialSource } from '../transport/static-source.ts';
import { type BuildCommand, parseBuildCommand } from './build-commands.ts';
import { type ReceivedResource, ResourceAssembler } from './resource-chunks.ts';

export type { ReceivedResource } from './resource-chunks.ts';

export const DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024;
/** Deadline of each unary call; a resource stream has none (a large file takes what it takes). */
const CALL_TIMEOUT_MS = 30_000;

const ERROR_CODES: Readonly<Partial<Record<status, ErrorCode>>> = {
  [status.INVALID_ARGUMENT]: 'invalid_argument',
  [status.NOT_FOUND]: 'not_found',
  [status.ALREADY_EXISTS]: 'already_exists',
  [status.PERMISSION_DENIED]: 'permission_denied',
  [status.FAILED_PRECONDITION]: 'failed_precondition',
  [status.RESOURCE_EXHAUSTED]: 'resource_exhausted',
  [status.UNAUTHENTICATED]: 'unauthenticated',
};

/** A call the service refused or that never reached it, with its gRPC status kept for callers that branch on it. */
export class BootstrapCallError extends SigilError {
  readonly status: status;
  constructor(code: status, message: string, cause: unknown) {
    super(ERROR_CODES[code] ?? 'internal', message, { cause });
    this.name = 'BootstrapCallError';
    this.status = code;
  }
}

const isServiceError = (error: unknown): error is ServiceError =>
  error instanceof Error && typeof (error as Partial<ServiceError>).code === 'number';

/** One line for a failed call: the service's own message, or who refused whom at the handshake. */
function callError(error: unknown, target: string): SigilError {
  if (error instanceof SigilError) return error;
  if (!isServiceError(error)) return new SigilError('internal', messageOf(error), { cause: error });
  const details = (error.details ?? '').split('\n')[0].trim();
  if (error.code === status.UNAVAILABLE) {
    const refusal = connectionRefusal(
      details.replace(/^No connection established\. Last error: /, ''),
      target,
    );
    const message = refusal?.message ?? `cannot reach the bootstrap service at ${target}: ${details}`;
    return new BootstrapCallError(error.code, message, error);
  }
  if (error.code === status.DEADLINE_EXCEEDED)
    return new BootstrapCallError(
      error.code,
      `the bootstrap service at ${target} did not answer in time`,
      error,
    );
  return new BootstrapCallError(error.code, details || `${status[error.code]} from ${target}`, error);
}

type UnaryMethod<Request, Response> = (
  request: Request,
  metadata: Metadata,
  options: { deadline: number },
  callback: (error: ServiceError | null, response: Response) => void,
) => ClientUnaryCall;

export interface BootstrapClientOptions {
  /** host:port of the bootstrap service (metadata Bootstrap.HostPort). */
  hostPort: string;
  caChainPem: string;
  certPem: string;
  keyPem: string;
  /** The name the server certificate must be valid for (metadata Bootstrap.ServerName). */
  serverName: string;
  /** Largest message accepted, and sent. Default 4 MiB, as the service's. */
  maxReceiveBytes?: number;
}

export class BootstrapClient {
  readonly #client: RootfsServerClient;
  readonly #target: string;

  private constructor(client: RootfsServerClient, target: string) {
    this.#client = client;
    this.#target = target;
  }

  /**
   * A client for the service; connects on the first call. Throws SigilError
   * invalid when the certificate, key and CA chain do not fit together or the
   * certificate has expired.
   */
  static connect(options: BootstrapClientOptions): BootstrapClient {
    const maxBytes = options.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0)
      throw invalid(`maxReceiveBytes must be a positive whole number (got ${maxBytes})`);
    const material = new StaticMaterialSource({
      certificateChain: options.certPem,
      privateKey: options.keyPem,
      trustBundle: options.caChainPem,
    });
    const channelOptions: ChannelOptions = {
      'grpc.max_receive_message_length': maxBytes,
      'grpc.max_send_message_length': maxBytes,
    };
    const client = new RootfsServerClient(
      options.hostPort,
      channelCredentials({ material, serverName: options.serverName }),
      channelOptions,
    );
    return new BootstrapClient(client, options.hostPort);
  }

  /** The build's commands, in order, each parsed and checked. */
  async commands(): Promise<BuildCommand[]> {
    const response = await this.#call(this.#client.commands, {});
    return response.command.map((json, index) => parseBuildCommand(json, index));
  }

  /** Fails unless the service answers with the id it was sent. */
  async ping(): Promise<void> {
    const id = randomUUID();
    const response = await this.#call(this.#client.ping, { id });
    if (response.id !== id)
      throw invalid(`the bootstrap service answered ping ${id} with id '${response.id.slice(0, 64)}'`);
  }

  /**
   * The entries of one resource path (`stage` "" for the build context), each
   * complete and checksummed. NOT_FOUND becomes SigilError not_found; a bad
   * checksum or a malformed stream SigilError invalid naming the path.
   */
  async *resource(path: string, stage: string): AsyncIterable<ReceivedResource> {
    const requested = stage === '' ? path : `${stage}/${path}`;
    const assembler = new ResourceAssembler(requested);
    const stream = this.#client.resource({ path, stage });
    let ended = false;
    try {
      for await (const message of stream) {
        const entry = assembler.accept(message);
        if (entry) yield entry;
      }
      ended = true;
      assembler.finish();
    } catch (error) {
      // Ours unchanged; a gRPC status as BootstrapCallError (NOT_FOUND has the code not_found).
      throw callError(error, this.#target);
    } finally {
      // A consumer that stops early, or a refused stream: the server stops sending.
      if (!ended) stream.cancel();
    }
  }

  stdout(lines: string[]): Promise<void> {
    return this.#log('stdout', lines);
  }

  stderr(lines: string[]): Promise<void> {
    return this.#log('stderr', lines);
  }

  /** Ends the build as failed, with `error` as the reason. */
  async abort(error: string): Promise<void> {
    await this.#call(this.#client.abort, { error });
  }

  /** Ends the build as successful. */
  async success(): Promise<void> {
    await this.#call(this.#client.success, {});
  }

  close(): void {
    this.#client.close();
  }

  async #log(stream: 'stdout' | 'stderr', lines: string[]): Promise<void> {
    const method = stream === 'stdout' ? this.#client.stdOut : this.#client.stdErr;
    await this.#call(method, { line: lines });
  }

  #call<Request, Response>(method: UnaryMethod<Request, Response>, request: Request): Promise<Response> {
    return new Promise((resolve, reject) => {
      method.call(
        this.#client,
        request,
        new Metadata(),
        { deadline: Date.now() + CALL_TIMEOUT_MS },
        (error, response) => (error ? reject(callError(error, this.#target)) : resolve(response)),
      );
    });
  }
}
