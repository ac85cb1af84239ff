// gRPC methods of the tests' own services, which carry raw bytes (no
// protobuf): what a handler receives is the Buffer the client sent.
import type * as grpc from '@grpc/grpc-js';

/** The identity (de)serializer: a message is its bytes. */
export const bytes = (value: Buffer): Buffer => value;

/** A method at `path`: unary, server streaming ('response') or bidirectional ('both'). */
export function rawMethod(
  path: string,
  streaming: 'none' | 'response' | 'both' = 'none',
): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: streaming === 'both',
    responseStream: streaming !== 'none',
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  };
}
