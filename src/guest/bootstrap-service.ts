// One build's bootstrap service: firebuild's RootfsServer
// (/proto.RootfsServer/*, proto-firebuild/proto/rootfs_server.proto), which a
// guest booted for a build calls to learn its commands, fetch the files ADD
// and COPY name, stream its output, and report how the build ended.
//
// As in firebuild-shared (build/rootfs/server.go, impl.go), with sigil's
// transport: mutual TLS 1.3 through MtlsServer, trusting this build's CA only
// (bootstrap-credentials.ts), so only the guest holding this build's client
// certificate gets in. The guest's first call must be Commands, within
// firstCallTimeoutMs: anything else, or silence, fails the build. Success and
// Abort end it; after the end (or stop()) every call is refused with
// FAILED_PRECONDITION "stopped", and after stop() nothing listens.
//
// A build's connection is kept for the whole build (no connection aging): the
// bootstrap certificates last minutes, long enough to connect, not to
// reconnect late in a long build.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { invalid, messageOf, notFound, preconditionFailed, SigilError } from '../errors.ts';
import {
  type AbortRequest,
  CommandsResponse,
  type Empty,
  type LogMessage,
  type PingRequest,
  type PingResponse,
  type ResourceChunk,
  type ResourceRequest,
  RootfsServerService,
} from '../gen/firebuild/proto/rootfs_server.ts';
import { grpcStatusOf } from '../protocol/error-status.ts';
import { MtlsServer } from '../transport/mtls-server.ts';
import { StaticMaterialSource } from '../transport/static-source.ts';
import type { BootstrapCredentials } from './bootstrap-credentials.ts';
import { type BuildCommand, type ResourceResolver, serializeBuildCommand } from './build-commands.ts';
import { chunkSizeFor, resourceChunks } from './resource-chunks.ts';

export const DEFAULT_FIRST_CALL_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
export const DEFAULT_GRACEFUL_STOP_MS = 10_000;
/** What an Abort's reason may hold; the rest is cut off. */
const MAX_ABORT_REASON_CHARS = 4096;
/** Longer than any build: the one connection a guest makes stays up (see the header). */
const CONNECTION_AGE_MS = 7 * 24 * 60 * 60 * 1000;

export interface BootstrapServiceOptions {
  /** Default '127.0.0.1'. */
  readonly host?: string;
  /** Default 0: any free port. */
  readonly port?: number;
  /** The build's commands, served in order as firebuild's JSON. */
  readonly commands: readonly BuildCommand[];
  readonly resources: ResourceResolver;
  /** This build's CA chain and server certificate; only client certificates of that CA are admitted. */
  readonly credentials: Pick<BootstrapCredentials, 'caChainPem' | 'server'>;
  /** The first call (Commands) must come within this. Default 30 s. */
  readonly firstCallTimeoutMs?: number;
  /** Largest message either way; resource chunks are 90 % of it. Default 4 MiB. */
  readonly maxMessageBytes?: number;
  /** How long stop() lets running calls finish. Default 10 s. */
  readonly gracefulStopMs?: number;
}

/** How a build ended, as `done` tells it. */
export type BuildOutcome = { readonly ok: true } | { readonly ok: false; readonly error: SigilError };

export interface BootstrapEvents {
  'commands-requested': [];
  ping: [{ readonly id: string }];
  stdout: [{ readonly lines: readonly string[] }];
  stderr: [{ readonly lines: readonly string[] }];
  aborted: [{ readonly error: string }];
  success: [];
  /** A connection refused at the handshake (no, expired or foreign client certificate, ...). */
  'handshake-refused': [{ readonly reason: string; readonly message: string }];
  /** A call that failed; `message` is the server-side cause, which the guest may not have been told. */
  'call-failed': [{ readonly method: string; readonly code: grpc.status; readonly message: string }];
}

export interface BootstrapService {
  /** host:port the service listens on. */
  readonly address: string;
  readonly port: number;
  readonly events: EventEmitter<BootstrapEvents>;
  /** Settles once: Success, Abort, a missing or wrong first call, or stop(). Never rejects. */
  readonly done: Promise<BuildOutcome>;
  /** Ends the build (if it has not ended) and the listener; running calls get gracefulStopMs. */
  stop(): Promise<void>;
}

const buildFailed = (message: string): SigilError => new SigilError('failed_precondition', message);

function positive(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value <= 0)
    throw invalid(`${what} must be a positive whole number (got ${value})`);
  return value;
}

/** The build's progress: waiting for Commands, running, or ended with an outcome. */
class BuildProgress {
  readonly done: Promise<BuildOutcome>;
  #settle!: (outcome: BuildOutcome) => void;
  #phase: 'waiting' | 'running' | 'ended' = 'waiting';
  #timer: NodeJS.Timeout | undefined;

  constructor(firstCallTimeoutMs: number) {
    this.done = new Promise((resolve) => {
      this.#settle = resolve;
    });
    this.#timer = setTimeout(
      () =>
        this.end({
          ok: false,
          error: buildFailed(
            `the guest made no Commands call within ${firstCallTimeoutMs} ms: it never started its build`,
          ),
        }),
      firstCallTimeoutMs,
    );
  }

  /** Lets a call of `method` through, or throws its refusal; a wrong first call ends the build. */
  admit(method: string): void {
    if (this.#phase === 'ended') throw preconditionFailed('stopped');
    if (this.#phase === 'waiting') {
      if (method !== 'Commands') {
        this.end({
          ok: false,
          error: buildFailed(`the guest's first call was ${method}, not Commands: the build is refused`),
        });
        throw preconditionFailed(`stopped: the first call must be Commands, not ${method}`);
      }
      clearTimeout(this.#timer);
      this.#phase = 'running';
    }
  }

  end(outcome: BuildOutcome): void {
    if (this.#phase === 'ended') return;
    this.#phase = 'ended';
    clearTimeout(this.#timer);
    this.#settle(outcome);
  }
}

/** Resolves when `call` can take more, or is gone. */
function drained(call: grpc.ServerWritableStream<ResourceRequest, ResourceChunk>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      call.off('cancelled', done);
      call.off('close', done);
      resolve();
    };
    call.once('drain', done);
    call.once('cancelled', done);
    call.once('close', done);
  });
}

/** What a failed call sends: a SigilError's own message (written for the caller), anything else a bare INTERNAL. */
function statusOf(error: unknown): { code: grpc.status; details: string } {
  if (error instanceof SigilError && error.code !== 'internal')
    return { code: grpcStatusOf(error.code), details: error.message };
  return { code: grpc.status.INTERNAL, details: 'internal error' };
}

type FailureReport = (error: unknown, status: { code: grpc.status; details: string }) => void;

function unary<Request, Response>(
  report: FailureReport,
  handle: (request: Request) => Promise<Response>,
): grpc.handleUnaryCall<Request, Response> {
  return (call, callback) => {
    handle(call.request).then(
      (response) => callback(null, response),
      (error: unknown) => {
        const status = statusOf(error);
        report(error, status);
        callback(status);
      },
    );
  };
}

function serverStream<Request, Response>(
  report: FailureReport,
  handle: (call: grpc.ServerWritableStream<Request, Response>) => Promise<void>,
): grpc.handleServerStreamingCall<Request, Response> {
  return (call) => {
    handle(call).catch((error: unknown) => {
      const status = statusOf(error);
      report(error, status);
      if (!call.cancelled) call.emit('error', status);
    });
  };
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** Starts listening; throws SigilError invalid for bad options or commands too large for one message. */
export async function startBootstrapService(options: BootstrapServiceOptions): Promise<BootstrapService> {
  const maxMessageBytes = positive(options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, 'maxMessageBytes');
  const firstCallTimeoutMs = positive(
    options.firstCallTimeoutMs ?? DEFAULT_FIRST_CALL_TIMEOUT_MS,
    'firstCallTimeoutMs',
  );
  const gracefulStopMs = positive(options.gracefulStopMs ?? DEFAULT_GRACEFUL_STOP_MS, 'gracefulStopMs');
  const chunkBytes = chunkSizeFor(maxMessageBytes);
  const commands: CommandsResponse = { command: options.commands.map(serializeBuildCommand) };
  const commandsBytes = CommandsResponse.encode(commands).finish().length;
  if (commandsBytes > maxMessageBytes)
    throw invalid(
      `the build's ${commands.command.length} commands take ${commandsBytes} bytes, more than one message may hold (${maxMessageBytes})`,
    );

  const events = new EventEmitter<BootstrapEvents>();
  const server = new MtlsServer({
    material: new StaticMaterialSource({
      certificateChain: options.credentials.server.certificateChain,
      privateKey: options.credentials.server.privateKey,
      trustBundle: options.credentials.caChainPem,
    }),
    // A guest is a leaf of this build's CA; nothing is ever delegated here.
    delegates: 'refuse',
    maxConnectionAgeMs: CONNECTION_AGE_MS,
    grpcOptions: {
      'grpc.max_receive_message_length': maxMessageBytes,
      'grpc.max_send_message_length': maxMessageBytes,
    },
    onHandshakeError: (failure) =>
      events.emit('handshake-refused', { reason: failure.reason, message: failure.message }),
    onError: (error) =>
      events.emit('call-failed', {
        method: '(listener)',
        code: grpc.status.INTERNAL,
        message: error.message,
      }),
  });

  const progress = new BuildProgress(firstCallTimeoutMs);
  const handler =
    (method: string): FailureReport =>
    (error, status) =>
      events.emit('call-failed', {
        method: `/proto.RootfsServer/${method}`,
        code: status.code,
        message: messageOf(error),
      });
  const empty: Empty = {};

  server.addService(RootfsServerService, {
    commands: unary<Empty, CommandsResponse>(handler('Commands'), async () => {
      progress.admit('Commands');
      events.emit('commands-requested');
      return commands;
    }),
    ping: unary<PingRequest, PingResponse>(handler('Ping'), async (request) => {
      progress.admit('Ping');
      events.emit('ping', { id: request.id });
      return { id: request.id };
    }),
    resource: serverStream<ResourceRequest, ResourceChunk>(handler('Resource'), async (call) => {
      progress.admit('Resource');
      const { path, stage } = call.request;
      const entries = await options.resources(path, stage);
      if (entries === null) throw notFound(`not found: '${stage}/${path}'`);
      for await (const message of resourceChunks(entries, chunkBytes)) {
        if (call.cancelled) return;
        if (!call.write(message)) await drained(call);
      }
      call.end();
    }),
    stdErr: unary<LogMessage, Empty>(handler('StdErr'), async (request) => {
      progress.admit('StdErr');
      events.emit('stderr', { lines: request.line });
      return empty;
    }),
    stdOut: unary<LogMessage, Empty>(handler('StdOut'), async (request) => {
      progress.admit('StdOut');
      events.emit('stdout', { lines: request.line });
      return empty;
    }),
    abort: unary<AbortRequest, Empty>(handler('Abort'), async (request) => {
      progress.admit('Abort');
      const reason = request.error.slice(0, MAX_ABORT_REASON_CHARS);
      events.emit('aborted', { error: reason });
      // The guest's words go into a one-line message for logs: first line, no control characters.
      const firstLine =
        reason
          .split('\n')[0]
          .replace(/[\p{Cc}]/gu, ' ')
          .trim() || '(no reason given)';
      progress.end({ ok: false, error: buildFailed(`the guest aborted the build: ${firstLine}`) });
      return empty;
    }),
    success: unary<Empty, Empty>(handler('Success'), async () => {
      progress.admit('Success');
      events.emit('success');
      progress.end({ ok: true });
      return empty;
    }),
  });

  const host = options.host ?? '127.0.0.1';
  let port: number;
  try {
    port = await server.listen(host, options.port ?? 0);
  } catch (error) {
    const refusal = buildFailed(
      `the bootstrap service cannot listen on ${hostPort(host, options.port ?? 0)}: ${messageOf(error)}`,
    );
    progress.end({ ok: false, error: refusal });
    await server.close(0);
    throw refusal;
  }

  let stopped: Promise<void> | undefined;
  return {
    address: hostPort(host, port),
    port,
    events,
    done: progress.done,
    stop() {
      stopped ??= (async () => {
        progress.end({
          ok: false,
          error: buildFailed('the bootstrap service was stopped before the build finished'),
        });
        await server.close(gracefulStopMs);
      })();
      return stopped;
    },
  };
}
