// Fixtures for the client-side transport tests: a tiny grpc-js service with
// Buffer (de)serializers that answers with the caller's certificate serial,
// and peers built without sigil's server (a plain node:tls server feeding
// grpc-js through createConnectionInjector, or grpc-js's own TLS listener),
// so these tests do not depend on MtlsServer.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { failureOf } from '../support/failure.ts';
import { rawMethod } from '../support/raw-methods.ts';
import { canonicalSerial } from '../support/serials.ts';

/** One unary method answering `{ "serial": "<client certificate serial>" }`. */
export const whoAmIService = {
  whoAmI: rawMethod('/sigil.test.WhoAmI/WhoAmI'),
} satisfies grpc.ServiceDefinition;

function grpcServerWithService(): grpc.Server {
  const server = new grpc.Server();
  server.addService(whoAmIService, {
    whoAmI: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const peer = call.getAuthContext().sslPeerCertificate;
      const serial = peer ? canonicalSerial(peer.serialNumber) : null;
      callback(null, Buffer.from(JSON.stringify({ serial })));
    },
  });
  return server;
}

export interface TlsGrpcPeer {
  readonly port: number;
  readonly tlsServer: tls.Server;
  /** Errors of handshakes the server refused or that failed. */
  readonly handshakeErrors: Error[];
  /** Closes every established connection (GOAWAY), so clients must reconnect. */
  drain(): void;
  close(): Promise<void>;
}

/**
 * A gRPC server whose TLS is a plain node:tls server: TLS 1.3 and client
 * certificates unless `options` say otherwise.
 */
export async function startTlsGrpcPeer(options: tls.TlsOptions): Promise<TlsGrpcPeer> {
  const grpcServer = grpcServerWithService();
  const injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const handshakeErrors: Error[] = [];
  const sockets = new Set<tls.TLSSocket>();
  const tlsServer = tls.createServer(
    { minVersion: 'TLSv1.3', requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'], ...options },
    (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      injector.injectConnection(socket);
    },
  );
  tlsServer.on('tlsClientError', (error) => handshakeErrors.push(error));
  tlsServer.listen(0, '127.0.0.1');
  await once(tlsServer, 'listening');
  return {
    port: (tlsServer.address() as AddressInfo).port,
    tlsServer,
    handshakeErrors,
    drain: () => injector.drain(0),
    close: async () => {
      injector.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => tlsServer.close(() => resolve()));
      grpcServer.forceShutdown();
    },
  };
}

/** A gRPC server listening with grpc-js's own TLS (`bindAsync` + ServerCredentials). */
export async function startCredentialsPeer(
  credentials: grpc.ServerCredentials,
): Promise<{ port: number; close(): void }> {
  const server = grpcServerWithService();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { port, close: () => server.forceShutdown() };
}

const WhoAmIClient = grpc.makeGenericClientConstructor(whoAmIService, 'WhoAmI');

export type WhoAmIClientType = InstanceType<typeof WhoAmIClient>;

export function whoAmIClient(
  port: number,
  credentials: grpc.ChannelCredentials,
  options: grpc.ChannelOptions = {},
): WhoAmIClientType {
  // A local subchannel pool so that clients in one test never share connections.
  return new WhoAmIClient(`127.0.0.1:${port}`, credentials, {
    'grpc.use_local_subchannel_pool': 1,
    ...options,
  });
}

/** One call; resolves to the serial the server saw, or rejects with the grpc-js error. */
export function whoAmI(client: WhoAmIClientType, timeoutMs = 5000): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const method = client.whoAmI as (
      request: Buffer,
      metadata: grpc.Metadata,
      options: grpc.CallOptions,
      callback: (error: grpc.ServiceError | null, response?: Buffer) => void,
    ) => grpc.ClientUnaryCall;
    method.call(
      client,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (error, response) => {
        if (error) reject(error);
        else resolve((JSON.parse(String(response)) as { serial: string | null }).serial);
      },
    );
  });
}

/** Resolves to the error of a call that must fail. */
export async function whoAmIError(client: WhoAmIClientType, timeoutMs = 5000): Promise<grpc.ServiceError> {
  const error = await failureOf(whoAmI(client, timeoutMs), 'WhoAmI');
  if (error.code === undefined) throw error; // not a gRPC status: a broken test
  return error;
}

/** Waits until the client's connection has gone away (after drain()), so the next call reconnects. */
export async function waitUntilDisconnected(client: WhoAmIClientType): Promise<void> {
  const channel = client.getChannel();
  for (;;) {
    const state = channel.getConnectivityState(false);
    if (state !== grpc.connectivityState.READY) return;
    await new Promise<void>((resolve, reject) =>
      channel.watchConnectivityState(state, Date.now() + 5000, (error) =>
        error ? reject(error) : resolve(),
      ),
    );
  }
}
