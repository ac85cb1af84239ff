// What bench/transport.ts and its load-generating child share: a unary echo
// service with Buffer (de)serializers (so neither side of a comparison pays
// for protobuf), and the messages the two processes exchange over IPC.
import type * as grpc from '@grpc/grpc-js';
import type { TlsMaterial } from '../../src/pki/material.ts';

export const ECHO_PATH = '/sigil.bench.Echo/Echo';

const identity = (value: Buffer): Buffer => value;

export const echoService: grpc.ServiceDefinition = {
  echo: {
    path: ECHO_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export const echoImplementation: grpc.UntypedServiceImplementation = {
  echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
    callback(null, call.request),
};

/** How the child reaches a server: sigil's client credentials, or none (plaintext). */
export type ClientCredentialsSpec =
  | { readonly kind: 'sigil'; readonly material: TlsMaterial; readonly serverName: string }
  | { readonly kind: 'insecure' };

/** One thing the child can drive; each runs `concurrency` operations at a time. */
export type LoadSpec =
  /** Echo calls on one persistent channel. */
  | {
      readonly kind: 'unary';
      readonly port: number;
      readonly credentials: ClientCredentialsSpec;
      readonly concurrency: number;
    }
  /** A new grpc-js client (own subchannel, so a new connection) + one echo call, then close. */
  | {
      readonly kind: 'connect';
      readonly port: number;
      readonly credentials: ClientCredentialsSpec;
      readonly concurrency: number;
    }
  /** A bare TLS 1.3 connection with a client certificate, until the server's first byte. */
  | {
      readonly kind: 'tls';
      readonly port: number;
      readonly material: TlsMaterial;
      readonly serverName: string;
      readonly concurrency: number;
    };

export type ToClient =
  | { readonly type: 'setup'; readonly subjects: Readonly<Record<string, LoadSpec>> }
  | { readonly type: 'run'; readonly subject: string; readonly maxMs: number; readonly maxOps: number }
  | { readonly type: 'start'; readonly subjects: readonly string[] }
  | { readonly type: 'stop' }
  | { readonly type: 'teardown' };

export interface Sample {
  /** Operations that succeeded. */
  readonly ops: number;
  readonly failures: number;
  readonly ms: number;
  /** Up to a few distinct error messages. */
  readonly errors: readonly string[];
  /** After `stop`: the same counts per subject. */
  readonly bySubject?: Readonly<Record<string, { readonly ops: number; readonly failures: number }>>;
}

export type FromClient =
  | { readonly type: 'ok' }
  | { readonly type: 'sample'; readonly sample: Sample }
  | { readonly type: 'error'; readonly message: string };

/** A little payload: a realistic small unary message. */
export const PAYLOAD_BYTES = 128;
/** Every call gets a deadline, so a lost call fails instead of hanging the bench. */
export const CALL_DEADLINE_MS = 10_000;
