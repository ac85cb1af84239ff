// The load-generating side of bench/transport.ts, in its own process so that
// on a small machine the server and the client each get a core and every
// comparison sees the same client. Driven over IPC (see echo.ts): `setup`
// builds the clients, `run` drives one subject for a bounded time and count
// and reports what completed, `start`/`stop` keep subjects running until told.
import { createSecureContext, type SecureContext, connect as tlsConnect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import {
  CALL_DEADLINE_MS,
  type ClientCredentialsSpec,
  ECHO_PATH,
  type FromClient,
  type LoadSpec,
  PAYLOAD_BYTES,
  type Sample,
  type ToClient,
} from './echo.ts';
import { serveLoadRequests } from './load-client.ts';

const payload = Buffer.alloc(PAYLOAD_BYTES, 7);
const identity = (value: Buffer): Buffer => value;
const MAX_ERRORS = 5;

/** Starts one operation; calls `done` exactly once with null or the error. */
type Operation = (done: (error: Error | null) => void) => void;

function credentialsOf(spec: ClientCredentialsSpec): grpc.ChannelCredentials {
  if (spec.kind === 'insecure') return grpc.credentials.createInsecure();
  return channelCredentials({
    material: new StaticMaterialSource(spec.material),
    serverName: spec.serverName,
  });
}

function echo(client: grpc.Client, done: (error: Error | null) => void): void {
  client.makeUnaryRequest(
    ECHO_PATH,
    identity,
    identity,
    payload,
    { deadline: Date.now() + CALL_DEADLINE_MS },
    (error) => done(error ?? null),
  );
}

class Subject {
  readonly concurrency: number;
  readonly operation: Operation;
  readonly #close: () => void;

  constructor(spec: LoadSpec) {
    this.concurrency = spec.concurrency;
    const target = `127.0.0.1:${spec.port}`;
    if (spec.kind === 'unary') {
      const client = new grpc.Client(target, credentialsOf(spec.credentials), {
        'grpc.use_local_subchannel_pool': 1,
      });
      this.operation = (done) => echo(client, done);
      this.#close = () => client.close();
    } else if (spec.kind === 'connect') {
      const credentials = credentialsOf(spec.credentials);
      this.operation = (done) => {
        // A local subchannel pool: this client's connection is its own, and close() ends it.
        const client = new grpc.Client(target, credentials, { 'grpc.use_local_subchannel_pool': 1 });
        echo(client, (error) => {
          client.close();
          done(error);
        });
      };
      this.#close = () => {};
    } else {
      const secureContext: SecureContext = createSecureContext({
        cert: spec.material.certificateChain,
        key: spec.material.privateKey,
        ca: spec.material.trustBundle,
        minVersion: 'TLSv1.3',
      });
      this.operation = (done) => {
        const socket = tlsConnect({
          host: '127.0.0.1',
          port: spec.port,
          secureContext,
          servername: spec.serverName,
          ALPNProtocols: ['h2'],
        });
        let finished = false;
        const finish = (error: Error | null) => {
          if (finished) return;
          finished = true;
          socket.destroy();
          done(error);
        };
        // The server writes a byte once it has verified our certificate: a full mutual handshake.
        socket.once('data', () => finish(null));
        socket.once('error', (error) => finish(error));
        socket.once('close', () => finish(new Error('closed before the server answered')));
      };
      this.#close = () => {};
    }
  }

  close(): void {
    this.#close();
  }
}

/** Bookkeeping of operations run by one or more drivers. */
class Tally {
  ops = 0;
  failures = 0;
  readonly errors = new Set<string>();

  record(error: Error | null): void {
    if (error === null) {
      this.ops++;
      return;
    }
    this.failures++;
    if (this.errors.size < MAX_ERRORS) this.errors.add(error.message.split('\n')[0]);
  }
}

/**
 * Keeps `subject.concurrency` operations in flight until `keepGoing()` says
 * stop, then resolves when the last one has completed.
 */
function drive(subject: Subject, tally: Tally, keepGoing: (started: number) => boolean): Promise<void> {
  return new Promise((resolve) => {
    let started = 0;
    let inFlight = 0;
    const launch = () => {
      if (!keepGoing(started)) {
        if (inFlight === 0) resolve();
        return;
      }
      started++;
      inFlight++;
      subject.operation((error) => {
        inFlight--;
        tally.record(error);
        launch();
      });
    };
    for (let i = 0; i < subject.concurrency; i++) launch();
  });
}

const subjects = new Map<string, Subject>();
let running: { stop: boolean; tallies: Map<string, Tally>; done: Promise<unknown>; started: number } | null =
  null;

function subjectNamed(name: string): Subject {
  const subject = subjects.get(name);
  if (!subject) throw new Error(`no subject "${name}"`);
  return subject;
}

function sampleOf(tally: Tally, ms: number): Sample {
  return { ops: tally.ops, failures: tally.failures, ms, errors: [...tally.errors] };
}

async function handle(message: ToClient): Promise<FromClient> {
  switch (message.type) {
    case 'setup':
      for (const [name, spec] of Object.entries(message.subjects)) {
        subjects.get(name)?.close();
        subjects.set(name, new Subject(spec));
      }
      return { type: 'ok' };
    case 'run': {
      const subject = subjectNamed(message.subject);
      const tally = new Tally();
      const start = performance.now();
      const deadline = start + message.maxMs;
      await drive(subject, tally, (started) => started < message.maxOps && performance.now() < deadline);
      return { type: 'sample', sample: sampleOf(tally, performance.now() - start) };
    }
    case 'start': {
      const tallies = new Map(message.subjects.map((name) => [name, new Tally()]));
      const state = {
        stop: false,
        tallies,
        done: Promise.resolve() as Promise<unknown>,
        started: performance.now(),
      };
      state.done = Promise.all(
        message.subjects.map((name) => drive(subjectNamed(name), tallies.get(name)!, () => !state.stop)),
      );
      running = state;
      return { type: 'ok' };
    }
    case 'stop': {
      const state = running;
      if (!state) throw new Error('nothing is running');
      state.stop = true;
      await state.done;
      running = null;
      const all = new Tally();
      const bySubject: Record<string, { ops: number; failures: number }> = {};
      for (const [name, tally] of state.tallies) {
        all.ops += tally.ops;
        all.failures += tally.failures;
        for (const error of tally.errors) if (all.errors.size < MAX_ERRORS) all.errors.add(error);
        bySubject[name] = { ops: tally.ops, failures: tally.failures };
      }
      return {
        type: 'sample',
        sample: { ...sampleOf(all, performance.now() - state.started), bySubject },
      };
    }
    case 'teardown':
      for (const subject of subjects.values()) subject.close();
      subjects.clear();
      return { type: 'ok' };
  }
}

serveLoadRequests(handle);
