// Calls that a GOAWAY refused before they reached the server are retried by
// grpc-js, on sigil's client connections, even when Node reports the
// cancelled request write first.
//
// When a server ages a connection (GOAWAY), every call the client had started
// on it but not yet sent is refused by the client's own HTTP/2 session, and
// every call the server never accepted is refused by the GOAWAY's last stream
// id: the stream closes with REFUSED_STREAM. Such a call never reached the
// server's application, and grpc-js retries it transparently (once) on a new
// connection. But Node may first complete the call's pending request write
// with ECANCELED, before the stream's 'close'; grpc-js then ends the call with
// UNAVAILABLE "Write error: write ECANCELED", a call it considers processed,
// and retries nothing. Under load every call in flight on the channel fails
// at once (grpc-node issues #2641, #2694).
//
// For the streams of sockets sigil's connector made, a write that fails with
// ECANCELED before the stream has closed reports its error once the stream
// has closed: grpc-js then sees the stream's REFUSED_STREAM first and retries
// the call; any other close (a dropped connection) ends the call as before.
// The streams are found through Node's diagnostics channel
// 'http2.client.stream.created' (public, experimental), which publishes each
// client stream before grpc-js writes to it; where Node does not publish it,
// nothing changes.
import { subscribe } from 'node:diagnostics_channel';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';

const kRetryRefused = Symbol('sigil.retryRefusedStreams');
/** A stream whose write failed closes within the same turn; this only bounds a wait that should not happen. */
const CLOSE_WAIT_MS = 1000;
const sessions = new WeakMap<ClientHttp2Session, boolean>();
let subscribed = false;

/** Apply this to the HTTP/2 streams grpc-js will open on `socket` (a connection sigil made). */
export function retryRefusedStreamsOn(socket: Socket): void {
  (socket as unknown as Record<symbol, unknown>)[kRetryRefused] = true;
  if (!subscribed) {
    subscribed = true;
    subscribe('http2.client.stream.created', onClientStream);
  }
}

function onClientStream(message: unknown): void {
  const stream = (message as { stream?: ClientHttp2Stream }).stream;
  const session = stream?.session as ClientHttp2Session | undefined;
  if (stream === undefined || session === undefined) return;
  let ours = sessions.get(session);
  if (ours === undefined) {
    try {
      // session.socket forwards property reads to the socket it runs on.
      ours = (session.socket as unknown as Record<symbol, unknown>)[kRetryRefused] === true;
    } catch {
      ours = false;
    }
    sessions.set(session, ours);
  }
  if (ours) reportCancelledWritesAfterClose(stream);
}

type WriteCallback = (error?: Error | null) => void;

function reportCancelledWritesAfterClose(stream: ClientHttp2Stream): void {
  let closed = false;
  // Registered before grpc-js's own 'close' listener, so it runs first.
  stream.once('close', () => {
    closed = true;
  });
  const write = stream.write;
  const patched = function (
    this: ClientHttp2Stream,
    chunk: unknown,
    encoding?: BufferEncoding | WriteCallback,
    callback?: WriteCallback,
  ): boolean {
    const cb = typeof encoding === 'function' ? encoding : callback;
    const enc = typeof encoding === 'function' ? undefined : encoding;
    if (cb === undefined) return write.call(this, chunk, enc as BufferEncoding);
    return write.call(this, chunk, enc as BufferEncoding, (error?: Error | null) => {
      if (!error || closed || (error as NodeJS.ErrnoException).code !== 'ECANCELED') {
        cb(error);
        return;
      }
      // grpc-js's 'close' listener (registered before this one) turns the
      // stream's REFUSED_STREAM into a transparent retry; the write error
      // reported afterwards changes nothing.
      let reported = false;
      const report = (): void => {
        if (reported) return;
        reported = true;
        timer.ref();
        clearTimeout(timer);
        cb(error);
      };
      const timer = setTimeout(report, CLOSE_WAIT_MS);
      timer.unref();
      stream.once('close', report);
    });
  };
  stream.write = patched as typeof stream.write;
}
