// Connection aging for MtlsServer, driven by sigil instead of grpc-js's
// max-connection-age timer, so that aging a busy connection loses no call.
//
// Clients pick up rotated material only on a new connection, so the server
// ends each connection after an age: an HTTP/2 GOAWAY, then the calls still
// running get a grace period. grpc-js's own aging (grpc.max_connection_age_ms)
// fires at a random moment under load and sends GOAWAY(2^31-1) and, in the
// same flush, session.close()'s GOAWAY with the last stream id nghttp2 had
// processed *when close() was called*. Two things go wrong with that:
//   - The calls a client starts in the moments before it reads the GOAWAY are
//     refused. A call the client had not even sent yet is refused by its own
//     HTTP/2 session (REFUSED_STREAM); grpc-js retries a refused call once,
//     transparently, but when Node cancels the call's pending request write
//     (write ECANCELED) before it closes the stream, grpc-js reports that
//     write error instead (UNAVAILABLE "Write error: write ECANCELED") and
//     retries nothing: all the calls in flight on the channel fail together.
//     The client side of that is refused-stream-retry.ts; here the server
//     sends the GOAWAY when it is least likely to catch a client mid-burst:
//     as the connection's next request arrives, i.e. ahead of the responses
//     the client is waiting for, not right behind responses it is about to
//     answer with new calls.
//   - A stream nghttp2 accepts between close() and the flush is processed
//     but lies beyond the announced last stream id, so the client is told it
//     was refused and may send it again.
// Here the first GOAWAY (2^31-1) goes out alone; once it is on the wire
// nghttp2 accepts no new stream (it ignores them), so the second GOAWAY
// (session.close(): the last stream id actually processed) is exact: every
// stream beyond it never reached the application and the client may retry it.
// A PING round trip in between, as the gRPC spec does it, gains nothing with
// nghttp2 (streams arriving after the first GOAWAY are never accepted) and
// Node clients stop answering PINGs once they have received a GOAWAY.
//
// The server sessions are found through Node's diagnostics channel
// 'http2.server.stream.created' (a public, experimental API): the session of
// a stream on one of our sockets is that connection's. A connection that has
// carried no request yet has nothing to lose and is aged at its first
// request. Where Node publishes nothing on that channel, a due connection is
// closed at the socket (TLS close_notify) instead, as before minus GOAWAY.
//
// Timers: Node keeps one TimersList per distinct duration and keeps an
// emptied list of unref'd timers until it would have fired; the jitter is
// therefore taken from a few steps, and timers are ref'd before they are
// cleared (see test/transport/connection-timers.test.ts).
import { subscribe } from 'node:diagnostics_channel';
import { type Http2Session, constants as http2Constants, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';

export interface ConnectionAgingOptions {
  /** A connection is aged after this long, ±10% jitter. */
  readonly maxAgeMs: number;
  /** After the GOAWAY, calls still running get this long before the connection is destroyed. */
  readonly graceMs: number;
  /**
   * Once due, how long to wait for the connection's next request before the
   * GOAWAY goes out anyway (a connection with only long-running calls).
   * Default: the age, at most one second.
   */
  readonly quietMs?: number;
}

/** The ±10% jitter in this many steps: at most this many timer durations. */
const JITTER_STEPS = 9;
const MAX_STREAM_ID = 2 ** 31 - 1;
const MAX_AGE_DATA = Buffer.from('max_age');
/** Event-loop turns to wait for the first GOAWAY to leave nghttp2's queue. */
const FLUSH_TURNS = 4;

const kConnection = Symbol('sigil.agedConnection');
const sessions = new WeakMap<Http2Session, AgedConnection | null>();
let subscribed = false;
/** Whether Node has published a server stream on the channel in this process. */
let channelSeen = false;

function onServerStream(message: unknown): void {
  channelSeen = true;
  const session = (message as { stream?: ServerHttp2Stream }).stream?.session;
  if (session === undefined) return;
  let connection = sessions.get(session);
  if (connection === undefined) {
    connection = connectionOf(session);
    sessions.set(session, connection);
    connection?.attach(session);
  }
  connection?.requestArrived();
}

/** The aged connection of a session on one of our sockets (session.socket forwards property reads to it). */
function connectionOf(session: Http2Session): AgedConnection | null {
  try {
    const found: unknown = (session.socket as unknown as Record<symbol, unknown>)[kConnection];
    return found instanceof AgedConnection ? found : null;
  } catch {
    return null; // the session has no socket any more
  }
}

function clear(timer: NodeJS.Timeout | undefined): void {
  if (timer === undefined) return;
  // A cleared unref'd timer leaves its TimersList behind; a ref'd one does not.
  timer.ref();
  clearTimeout(timer);
}

function unrefTimer(ms: number, run: () => void): NodeJS.Timeout {
  const timer = setTimeout(run, ms);
  timer.unref();
  return timer;
}

class AgedConnection {
  readonly #socket: Socket;
  readonly #options: Required<ConnectionAgingOptions>;
  readonly #forget: (connection: AgedConnection) => void;
  #session: Http2Session | undefined;
  #state: 'young' | 'due' | 'draining' | 'done' = 'young';
  #timer: NodeJS.Timeout | undefined;

  constructor(
    socket: Socket,
    options: Required<ConnectionAgingOptions>,
    forget: (connection: AgedConnection) => void,
  ) {
    this.#socket = socket;
    this.#options = options;
    this.#forget = forget;
    const step = Math.floor(Math.random() * JITTER_STEPS);
    const jitter = 0.9 + (0.2 * step) / (JITTER_STEPS - 1);
    this.#timer = unrefTimer(Math.max(1, Math.round(options.maxAgeMs * jitter)), () => this.#due());
    socket.once('close', () => this.stop());
  }

  attach(session: Http2Session): void {
    this.#session ??= session;
  }

  /** A new stream (request) on this connection: a due connection is aged now, ahead of its response. */
  requestArrived(): void {
    if (this.#state !== 'due') return;
    this.#state = 'draining';
    clear(this.#timer);
    this.#timer = undefined;
    // After the stream callback: the GOAWAY is queued before the response.
    process.nextTick(() => this.#goaway());
  }

  stop(): void {
    if (this.#state === 'done') return;
    this.#state = 'done';
    clear(this.#timer);
    this.#timer = undefined;
    this.#forget(this);
  }

  #due(): void {
    if (this.#state !== 'young') return;
    this.#state = 'due';
    this.#timer = unrefTimer(this.#options.quietMs, () => this.#quiet());
  }

  /** No request arrived since the connection became due. */
  #quiet(): void {
    this.#timer = undefined;
    if (this.#state !== 'due') return;
    if (this.#session !== undefined) {
      this.#state = 'draining';
      this.#goaway();
      return;
    }
    // No request ever: nothing to lose. Wait for the first one, unless Node
    // never reports streams here, in which case close it the old way.
    if (!channelSeen) {
      this.#state = 'draining';
      this.#socket.end();
      this.#timer = unrefTimer(this.#options.graceMs, () => this.#socket.destroy());
    }
  }

  #goaway(): void {
    const session = this.#session;
    if (session === undefined || this.#state !== 'draining') return;
    if (session.closed || session.destroyed) return;
    try {
      session.goaway(http2Constants.NGHTTP2_NO_ERROR, MAX_STREAM_ID, MAX_AGE_DATA);
    } catch {
      session.destroy();
      return;
    }
    this.#afterFlush(session, FLUSH_TURNS);
  }

  /** Once the first GOAWAY has left nghttp2's queue, the last processed stream id is final. */
  #afterFlush(session: Http2Session, turns: number): void {
    setImmediate(() => {
      if (this.#state !== 'draining' || session.destroyed) return;
      let queued = 0;
      try {
        queued = session.state.outboundQueueSize ?? 0;
      } catch {
        queued = 0;
      }
      if (queued > 0 && turns > 1) {
        this.#afterFlush(session, turns - 1);
        return;
      }
      // The second GOAWAY, with the last stream processed; Node ends the
      // connection once the streams it has are done.
      if (!session.closed) session.close();
      this.#timer = unrefTimer(this.#options.graceMs, () => {
        this.#timer = undefined;
        if (!session.destroyed) session.destroy();
      });
    });
  }
}

/** Ages the connections of one server. */
export class ConnectionAging {
  readonly #options: Required<ConnectionAgingOptions>;
  readonly #connections = new Set<AgedConnection>();

  constructor(options: ConnectionAgingOptions) {
    this.#options = {
      maxAgeMs: options.maxAgeMs,
      graceMs: options.graceMs,
      quietMs: options.quietMs ?? Math.max(1, Math.min(options.maxAgeMs, 1000)),
    };
    if (!subscribed) {
      subscribed = true;
      subscribe('http2.server.stream.created', onServerStream);
    }
  }

  /** Age this connection from now on; call right after handing it to grpc-js. */
  track(socket: Socket): void {
    if (socket.destroyed) return;
    const connection = new AgedConnection(socket, this.#options, (done) => this.#connections.delete(done));
    (socket as unknown as Record<symbol, unknown>)[kConnection] = connection;
    this.#connections.add(connection);
  }

  /** Stop aging (the server is shutting down and closes its connections itself). */
  stop(): void {
    for (const connection of [...this.#connections]) connection.stop();
  }
}
