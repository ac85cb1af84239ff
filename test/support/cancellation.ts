// A gRPC stream a test ends itself (stream.cancel(), or a server shutdown)
// must still say when it failed for another reason: its 'error' event is
// handled (an unhandled one would crash the test process), CANCELLED is
// expected, and anything else is kept for the test to assert empty.
import * as grpc from '@grpc/grpc-js';

interface ErrorEmitter {
  on(event: 'error', listener: (error: grpc.ServiceError) => void): unknown;
}

/** Ignores the CANCELLED error of `stream`; records any other error in `unexpected` (returned). */
export function cancellationOnly(stream: ErrorEmitter, unexpected: Error[] = []): Error[] {
  stream.on('error', (error) => {
    if (error.code !== grpc.status.CANCELLED) unexpected.push(error);
  });
  return unexpected;
}
