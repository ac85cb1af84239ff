// Run by connection-aging.test.ts in a child process, so that client and
// server each have an event loop of their own, as in production and in the
// benchmark (in one process the client never catches a GOAWAY mid-burst):
// unary calls on one persistent channel, `concurrency` in flight, until at
// least `minCalls` calls have been started and the channel has used at least
// `minConnections` connections (each one aged out by the server). Prints one
// JSON line: calls that succeeded, failed, the first distinct errors, and the
// connections used.
import { subscribe } from 'node:diagnostics_channel';
import * as grpc from '@grpc/grpc-js';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';

export interface LoadSpec {
  readonly port: number;
  /** sigil's channelCredentials, or grpc-js's own createSsl. */
  readonly credentials: 'sigil' | 'grpc-js';
  readonly material: TlsMaterial;
  readonly path: string;
  readonly payloadBytes: number;
  readonly concurrency: number;
  readonly minCalls: number;
  readonly minConnections: number;
}

export interface LoadResult {
  readonly ok: number;
  readonly failed: number;
  readonly errors: readonly string[];
  readonly connections: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
const identity = (value: Buffer): Buffer => value;

const sessions = new WeakSet<object>();
let connections = 0;
subscribe('http2.client.stream.created', (message) => {
  const session = (message as { stream?: { session?: object } }).stream?.session;
  if (session && !sessions.has(session)) {
    sessions.add(session);
    connections++;
  }
});

const credentials =
  spec.credentials === 'sigil'
    ? channelCredentials({ material: new StaticMaterialSource(spec.material), serverName: 'localhost' })
    : grpc.credentials.createSsl(
        Buffer.from(spec.material.trustBundle),
        Buffer.from(spec.material.privateKey),
        Buffer.from(spec.material.certificateChain),
      );
const client = new grpc.Client(`127.0.0.1:${spec.port}`, credentials, {
  'grpc.ssl_target_name_override': 'localhost',
  'grpc.use_local_subchannel_pool': 1,
  'grpc.max_send_message_length': -1,
});
const payload = Buffer.alloc(spec.payloadBytes, 7);

let started = 0;
let ok = 0;
let failed = 0;
const errors = new Set<string>();
await new Promise<void>((resolve) => {
  let inFlight = 0;
  const launch = (): void => {
    if (started >= spec.minCalls && connections >= spec.minConnections) {
      if (inFlight === 0) resolve();
      return;
    }
    started++;
    inFlight++;
    // A deadline only so that a lost call fails instead of hanging.
    client.makeUnaryRequest(
      spec.path,
      identity,
      identity,
      payload,
      { deadline: Date.now() + 30_000 },
      (error) => {
        inFlight--;
        if (error) {
          failed++;
          if (errors.size < 5) errors.add(error.message.split('\n')[0]);
        } else {
          ok++;
        }
        launch();
      },
    );
  };
  for (let i = 0; i < spec.concurrency; i++) launch();
});
client.close();
const result: LoadResult = { ok, failed, errors: [...errors], connections };
process.stdout.write(`${JSON.stringify(result)}\n`);
