// Fixtures for the interceptor tests (authorization, metrics): a throwaway CA
// made with src/pki, a tiny service with Buffer (de)serializers, and a plain
// grpc-js TLS server and client (ServerCredentials.createSsl /
// credentials.createSsl), so the interceptors are tested on an unmodified
// grpc-js over real TLS on 127.0.0.1.
import * as grpc from '@grpc/grpc-js';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { dnsName, type GeneralName, ipAddress, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { rawMethod } from '../support/raw-methods.ts';

const hour = 3_600_000;

export interface Pair {
  readonly cert: string;
  readonly key: string;
  readonly notAfter: Date;
}

export class ThrowawayCa {
  readonly pem: string;
  readonly #issuer: Issuer;

  constructor(name = 'interceptor test CA') {
    const keys = generateKeyPair('p256');
    const root = createRootCertificate({
      privateKey: keys.privateKey,
      subject: { commonName: name },
      ttlMs: 24 * hour,
      now: new Date(Date.now() - hour),
    });
    this.pem = encodePem('CERTIFICATE', root.der);
    this.#issuer = Issuer.fromCertificate(root.der, keys.privateKey);
  }

  issue(profile: 'server' | 'client', sans: readonly GeneralName[], ttlMs = hour): Pair {
    const keys = generateKeyPair('p256');
    const issued = this.#issuer.issue({
      publicKey: keys.publicKey,
      profile,
      subject: { commonName: profile },
      sans,
      ttlMs,
    });
    return {
      cert: encodePem('CERTIFICATE', issued.der),
      key: privateKeyToPem(keys.privateKey),
      notAfter: issued.notAfter,
    };
  }

  server(): Pair {
    return this.issue('server', [
      dnsName('localhost'),
      ipAddress('127.0.0.1'),
      uriName('spiffe://td/server'),
    ]);
  }

  /** A client certificate with this SPIFFE ID (and optional DNS names). */
  client(id: string | null, dnsNames: readonly string[] = []): Pair {
    return this.issue('client', [...(id ? [uriName(id)] : []), ...dnsNames.map((name) => dnsName(name))]);
  }
}

/**
 * /test.Echo: Unary, Other, Fail (answers with the status code in its request),
 * Stream (bidi echo), Hang (bidi: sends "started", then never answers).
 */
export const echoService = {
  Unary: rawMethod('/test.Echo/Unary'),
  Other: rawMethod('/test.Echo/Other'),
  Fail: rawMethod('/test.Echo/Fail'),
  Stream: rawMethod('/test.Echo/Stream', 'both'),
  Hang: rawMethod('/test.Echo/Hang', 'both'),
} satisfies grpc.ServiceDefinition;

/** /test.Admin: Reset. */
export const adminService = {
  Reset: rawMethod('/test.Admin/Reset'),
} satisfies grpc.ServiceDefinition;

/** Which handlers ran, by method name. */
export class HandlerLog {
  readonly calls: string[] = [];
  ran(method: string): boolean {
    return this.calls.includes(method);
  }
}

function echoImplementation(log: HandlerLog): grpc.UntypedServiceImplementation {
  const unaryHandler =
    (name: string): grpc.handleUnaryCall<Buffer, Buffer> =>
    (call, callback) => {
      log.calls.push(name);
      callback(null, Buffer.concat([Buffer.from(`${name}:`), call.request]));
    };
  return {
    Unary: unaryHandler('Unary'),
    Other: unaryHandler('Other'),
    Fail: ((call, callback) => {
      log.calls.push('Fail');
      callback({ code: Number(call.request.toString()), details: 'failing on purpose' });
    }) satisfies grpc.handleUnaryCall<Buffer, Buffer>,
    Stream: ((call) => {
      log.calls.push('Stream');
      call.on('data', (message: Buffer) => {
        log.calls.push(`Stream:data:${message.toString()}`);
        call.write(message);
      });
      call.on('end', () => call.end());
    }) satisfies grpc.handleBidiStreamingCall<Buffer, Buffer>,
    Hang: ((call) => {
      log.calls.push('Hang');
      call.write(Buffer.from('started'));
    }) satisfies grpc.handleBidiStreamingCall<Buffer, Buffer>,
  };
}

export interface RunningServer {
  readonly port: number;
  readonly log: HandlerLog;
  readonly server: grpc.Server;
  close(): Promise<void>;
}

export async function startServer(options: {
  ca: ThrowawayCa;
  interceptors: grpc.ServerInterceptor[];
  /** Default true: the TLS layer requires a client certificate. */
  requireClientCertificate?: boolean;
}): Promise<RunningServer> {
  const log = new HandlerLog();
  const server = new grpc.Server({ interceptors: options.interceptors });
  server.addService(echoService, echoImplementation(log));
  server.addService(adminService, {
    Reset: ((_call, callback) => {
      log.calls.push('Reset');
      callback(null, Buffer.from('reset'));
    }) satisfies grpc.handleUnaryCall<Buffer, Buffer>,
  });
  const pair = options.ca.server();
  const credentials = grpc.ServerCredentials.createSsl(
    Buffer.from(options.ca.pem),
    [{ cert_chain: Buffer.from(pair.cert), private_key: Buffer.from(pair.key) }],
    options.requireClientCertificate ?? true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return {
    port,
    log,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        resolve();
      }),
  };
}

export interface TestClient {
  unary(method: 'Unary' | 'Other', body?: string): Promise<Buffer>;
  fail(code: grpc.status): Promise<Buffer>;
  reset(): Promise<Buffer>;
  /** Opens the bidi stream, writes `messages`, and collects replies until the status. */
  stream(messages: readonly string[]): Promise<Buffer[]>;
  /**
   * Calls Hang and resolves with the final status: with `deadlineMs` it waits
   * for the deadline, without it the client cancels once the handler has started.
   */
  hang(deadlineMs?: number): Promise<grpc.StatusObject>;
  close(): void;
}

export function connect(
  port: number,
  ca: ThrowawayCa,
  pair: Pair | null,
  options: { interceptors?: grpc.Interceptor[] } = {},
): TestClient {
  const credentials = pair
    ? grpc.credentials.createSsl(Buffer.from(ca.pem), Buffer.from(pair.key), Buffer.from(pair.cert))
    : grpc.credentials.createSsl(Buffer.from(ca.pem));
  const clientOptions: grpc.ClientOptions = {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
    ...(options.interceptors ? { interceptors: options.interceptors } : {}),
  };
  const client = new grpc.Client(`127.0.0.1:${port}`, credentials, clientOptions);
  const identity = (value: Buffer) => value;
  const call = (path: string, body: Buffer): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(path, identity, identity, body, (error, response) =>
        error || !response ? reject(error) : resolve(response),
      );
    });
  return {
    unary: (method, body = 'hello') => call(`/test.Echo/${method}`, Buffer.from(body)),
    fail: (code) => call('/test.Echo/Fail', Buffer.from(String(code))),
    reset: () => call('/test.Admin/Reset', Buffer.alloc(0)),
    stream: (messages) =>
      new Promise((resolve, reject) => {
        const stream = client.makeBidiStreamRequest('/test.Echo/Stream', identity, identity);
        const replies: Buffer[] = [];
        stream.on('data', (reply: Buffer) => replies.push(reply));
        stream.on('error', reject);
        stream.on('status', (status: grpc.StatusObject) => {
          if (status.code === grpc.status.OK) resolve(replies);
        });
        for (const message of messages) stream.write(Buffer.from(message));
        stream.end();
      }),
    hang: (deadlineMs) =>
      new Promise((resolve) => {
        const stream = client.makeBidiStreamRequest(
          '/test.Echo/Hang',
          identity,
          identity,
          deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs },
        );
        stream.on('error', () => undefined);
        stream.on('status', resolve);
        stream.on('data', () => {
          if (deadlineMs === undefined) stream.cancel();
        });
      }),
    close: () => client.close(),
  };
}
