// The load-generating side of bench/server.ts and bench/soak.ts, in its own
// process so that the servers under test (other processes) and the client
// each get a core, and so that sigil and cfssl are driven by the same client
// loop. Driven over IPC (server-protocol.ts): `setup` builds the clients and
// the key pools, `run` keeps `concurrency` calls of one subject in flight
// for a bounded time and count, `enrol` times one batch of
// Enrolment.Register calls.
//
// Client-side key work is done up front and not timed: a pool of P-256 keys,
// their CSRs (the same bytes for sigil's CSR path and for cfssl) and, per
// sigil server, their Sign proofs of possession, used in turn. The servers
// verify every proof and every CSR signature as if they were new.
import { createHash, type KeyObject, X509Certificate } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { controlPlaneVerification, enrolmentCredentials } from '../../src/client/control-plane-channel.ts';
import {
  AdminClient,
  CertificateAuthorityClient,
  EnrolmentClient,
  type IssuedCertificate,
  type ProofOfPossession,
  type RegisterResponse,
  type SignRequest,
} from '../../src/gen/sigil/v1/sigil.ts';
import { createCsr } from '../../src/pki/csr.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { DEFAULT_TRUST_DOMAIN, dnsName, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { possessionFor, registerChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { serveLoadRequests } from './load-client.ts';
import {
  CALL_DEADLINE_MS,
  type CfsslTarget,
  type FromClient,
  KEY_POOL_SIZE,
  leafNames,
  PROOF_MAX_AGE_MS,
  type Sample,
  type SigilTarget,
  type SubjectSpec,
  type ToClient,
} from './server-protocol.ts';

const MAX_ERRORS = 5;
const CFSSL_SIGN_PATH = '/api/v1/cfssl/sign';

/** Starts one operation; calls `done` exactly once with null or the error. */
type Operation = (done: (error: Error | null) => void) => void;

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

  sample(ms: number): Sample {
    return { ops: this.ops, failures: this.failures, ms, errors: [...this.errors] };
  }
}

/** Keeps `concurrency` operations in flight until `keepGoing()` says stop; resolves when the last completes. */
function drive(
  operation: Operation,
  concurrency: number,
  tally: Tally,
  keepGoing: (started: number) => boolean,
): Promise<void> {
  return new Promise((resolve) => {
    let started = 0;
    let inFlight = 0;
    const launch = (): void => {
      if (!keepGoing(started)) {
        if (inFlight === 0) resolve();
        return;
      }
      started++;
      inFlight++;
      operation((error) => {
        inFlight--;
        tally.record(error);
        launch();
      });
    };
    for (let i = 0; i < concurrency; i++) launch();
  });
}

/** Calls `done` at most once, whatever fires. */
function once(done: (error: Error | null) => void): (error: Error | null) => void {
  let called = false;
  return (error) => {
    if (called) return;
    called = true;
    done(error);
  };
}

/** cfssl's JSON answer: success with a certificate, or the first error it names. */
function cfsslOutcome(status: number, body: Buffer): Error | null {
  try {
    const answer = JSON.parse(body.toString('utf8')) as {
      success?: boolean;
      errors?: { message?: string }[];
      result?: { certificate?: string };
    };
    if (answer.success === true && typeof answer.result?.certificate === 'string') return null;
    return new Error(`cfssl: ${answer.errors?.[0]?.message ?? `HTTP ${status}`}`);
  } catch (error) {
    return error as Error;
  }
}

/** A cfssl server's sign endpoint: one HTTP/2 session over TLS, or HTTP/1.1 keep-alive in plaintext. */
class CfsslSigner {
  readonly #target: CfsslTarget;
  readonly #url: URL;
  readonly #agent: http.Agent;
  #session: http2.ClientHttp2Session | null = null;

  constructor(target: CfsslTarget, concurrency: number) {
    this.#target = target;
    this.#url = new URL(CFSSL_SIGN_PATH, target.url);
    this.#agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  }

  sign(body: Buffer, done: (error: Error | null) => void): void {
    if (this.#target.rootPem === null) this.#signHttp1(body, once(done));
    else this.#signHttp2(body, this.#target.rootPem, once(done));
  }

  /** The one HTTP/2 connection, reopened only if it was lost. */
  #http2Session(rootPem: string): http2.ClientHttp2Session {
    const current = this.#session;
    if (current !== null && !current.closed && !current.destroyed) return current;
    const session = http2.connect(this.#url.origin, { ca: rootPem, minVersion: 'TLSv1.3' });
    session.on('error', () => {}); // each stream reports its own failure
    session.on('close', () => {
      if (this.#session === session) this.#session = null;
    });
    this.#session = session;
    return session;
  }

  #signHttp2(body: Buffer, rootPem: string, done: (error: Error | null) => void): void {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.#http2Session(rootPem).request({
        ':method': 'POST',
        ':path': this.#url.pathname,
        'content-type': 'application/json',
        'content-length': body.length,
      });
    } catch (error) {
      done(error as Error);
      return;
    }
    let status = 0;
    const chunks: Buffer[] = [];
    stream.setTimeout(CALL_DEADLINE_MS, () => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      done(new Error('cfssl request timed out'));
    });
    stream.on('response', (headers) => {
      status = Number(headers[':status']);
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => done(cfsslOutcome(status, Buffer.concat(chunks))));
    stream.on('error', (error) => done(error));
    stream.on('close', () => done(new Error(`cfssl stream closed (code ${stream.rstCode})`)));
    stream.end(body);
  }

  #signHttp1(body: Buffer, done: (error: Error | null) => void): void {
    const request = http.request(
      this.#url,
      {
        method: 'POST',
        agent: this.#agent,
        headers: { 'content-type': 'application/json', 'content-length': body.length },
        timeout: CALL_DEADLINE_MS,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', (error) => done(error));
        response.on('end', () => done(cfsslOutcome(response.statusCode ?? 0, Buffer.concat(chunks))));
      },
    );
    request.on('timeout', () => request.destroy(new Error('cfssl request timed out')));
    request.on('error', (error) => done(error));
    request.end(body);
  }

  close(): void {
    this.#session?.close();
    this.#agent.destroy();
  }
}

/** Channels to one sigil server: its admin identity, proofs that name it, and channel groups. */
class SigilServer {
  readonly target: SigilTarget;
  readonly #credentials: grpc.ChannelCredentials;
  readonly #adminFingerprint: string;
  readonly #groups = new Map<number, { clients: CertificateAuthorityClient[]; next: number }>();
  readonly admin: AdminClient;
  readonly enrolment: EnrolmentClient;
  proofs: ProofOfPossession[] = [];
  #proofsMadeAt = 0;

  constructor(target: SigilTarget) {
    this.target = target;
    this.#credentials = channelCredentials({ material: new StaticMaterialSource(target.admin) });
    const options = { 'grpc.use_local_subchannel_pool': 1 };
    this.admin = new AdminClient(target.address, this.#credentials, options);
    // Enrolment runs before a node has a certificate: server-authenticated TLS only, with the
    // credentials a node uses (the root pinned by fingerprint, the server must be a replica).
    const root = new X509Certificate(target.admin.trustBundle);
    this.enrolment = new EnrolmentClient(
      target.address,
      enrolmentCredentials({
        roots: [target.admin.trustBundle],
        verify: controlPlaneVerification(
          createHash('sha256').update(root.raw).digest('hex'),
          target.trustDomain,
        ),
      }),
      options,
    );
    const adminLeaf = new X509Certificate(target.admin.certificateChain);
    this.#adminFingerprint = createHash('sha256').update(adminLeaf.raw).digest('hex');
  }

  /**
   * `count` CA clients, each its own channel and so its own HTTP/2
   * connection (a local subchannel pool), like as many separate callers.
   */
  #group(count: number): { clients: CertificateAuthorityClient[]; next: number } {
    let group = this.#groups.get(count);
    if (group === undefined) {
      const clients = Array.from(
        { length: count },
        (_, i) =>
          new CertificateAuthorityClient(this.target.address, this.#credentials, {
            'grpc.use_local_subchannel_pool': 1,
            // Distinct options keep grpc-js from ever sharing a channel between the group's clients.
            'sigil.bench.connection': i,
          }),
      );
      group = { clients, next: 0 };
      this.#groups.set(count, group);
    }
    return group;
  }

  /** The next client of a group of `count` connections, in turn. */
  client(count: number): CertificateAuthorityClient {
    const group = this.#group(count);
    const client = group.clients[group.next];
    group.next = (group.next + 1) % group.clients.length;
    return client;
  }

  /** Sign proofs name the admin certificate and the minute: remade when they get old. */
  refreshProofs(keys: readonly KeyObject[]): void {
    if (this.#proofsMadeAt !== 0 && performance.now() - this.#proofsMadeAt < PROOF_MAX_AGE_MS) return;
    const challenge = signChallenge(this.#adminFingerprint);
    this.proofs = keys.map((key) => possessionFor(key, challenge));
    this.#proofsMadeAt = performance.now();
  }

  close(): void {
    for (const group of this.#groups.values()) for (const client of group.clients) client.close();
    this.admin.close();
    this.enrolment.close();
  }
}

function signCall(
  client: CertificateAuthorityClient,
  request: SignRequest,
  done: (error: Error | null) => void,
): void {
  client.sign(
    request,
    new grpc.Metadata(),
    { deadline: Date.now() + CALL_DEADLINE_MS },
    (error: grpc.ServiceError | null, response: IssuedCertificate) => {
      if (error) done(error);
      else if (!response?.certificate || response.certificate.length === 0) done(new Error('no certificate'));
      else done(null);
    },
  );
}

/** The bench state after `setup`. */
class Load {
  readonly #concurrency: number;
  readonly #trustDomain: string;
  readonly #sigil = new Map<string, SigilServer>();
  readonly #cfssl = new Map<string, CfsslSigner>();
  readonly #subjects: Readonly<Record<string, SubjectSpec>>;
  readonly #keys: KeyObject[] = [];
  readonly #csrs: Buffer[] = [];
  /** The cfssl request bodies: {"certificate_request": PEM} of the same CSRs. */
  readonly #cfsslBodies: Buffer[] = [];
  #next = 0;

  constructor(message: Extract<ToClient, { type: 'setup' }>) {
    this.#concurrency = message.concurrency;
    this.#subjects = message.subjects;
    const domains = new Set(Object.values(message.sigil).map((target) => target.trustDomain));
    if (domains.size > 1) throw new Error(`the sigil servers must share a trust domain, not ${[...domains]}`);
    this.#trustDomain = [...domains][0] ?? DEFAULT_TRUST_DOMAIN;
    for (const [name, target] of Object.entries(message.sigil))
      this.#sigil.set(name, new SigilServer(target));
    for (const [name, target] of Object.entries(message.cfssl))
      this.#cfssl.set(name, new CfsslSigner(target, message.concurrency));
    for (const [name, spec] of Object.entries(message.subjects)) {
      const known = spec.kind === 'sigil' ? this.#sigil.has(spec.server) : this.#cfssl.has(spec.server);
      if (!known) throw new Error(`subject ${name} names an unknown ${spec.kind} server ${spec.server}`);
    }
    for (let index = 0; index < KEY_POOL_SIZE; index++) {
      const keys = generateKeyPair('p256');
      const names = leafNames(this.#trustDomain, index);
      const csrDer = createCsr(keys.privateKey, {
        commonName: names.commonName,
        sans: [dnsName(names.dns), uriName(names.uri)],
      });
      this.#keys.push(keys.privateKey);
      this.#csrs.push(csrDer);
      this.#cfsslBodies.push(
        Buffer.from(JSON.stringify({ certificate_request: encodePem('CERTIFICATE REQUEST', csrDer) })),
      );
    }
    for (const server of this.#sigil.values()) server.refreshProofs(this.#keys);
  }

  #take(): number {
    const index = this.#next;
    this.#next = (this.#next + 1) % KEY_POOL_SIZE;
    return index;
  }

  #signRequest(index: number, key: SignRequest['key']): SignRequest {
    const names = leafNames(this.#trustDomain, index);
    return {
      key,
      profile: 'server+client',
      commonName: names.commonName,
      dnsNames: [names.dns],
      ipAddresses: [],
      uris: [names.uri],
      ttlSeconds: 0,
    };
  }

  #sigilServer(name: string): SigilServer {
    const server = this.#sigil.get(name);
    if (server === undefined) throw new Error(`no sigil server ${name}`);
    return server;
  }

  operation(subject: string): Operation {
    const spec = this.#subjects[subject];
    if (spec === undefined) throw new Error(`unknown subject ${subject}`);
    if (spec.kind === 'cfssl') {
      const cfssl = this.#cfssl.get(spec.server) as CfsslSigner;
      return (done) => cfssl.sign(this.#cfsslBodies[this.#take()], done);
    }
    const server = this.#sigilServer(spec.server);
    server.refreshProofs(this.#keys);
    const { connections } = spec;
    if (spec.path === 'possession') {
      return (done) => {
        const index = this.#take();
        const request = this.#signRequest(index, { $case: 'possession', value: server.proofs[index] });
        signCall(server.client(connections), request, done);
      };
    }
    return (done) => {
      const index = this.#take();
      const request = this.#signRequest(index, { $case: 'csr', value: this.#csrs[index] });
      signCall(server.client(connections), request, done);
    };
  }

  async run(subject: string, maxMs: number, maxOps: number): Promise<Sample> {
    const operation = this.operation(subject);
    const tally = new Tally();
    const start = performance.now();
    const deadline = start + maxMs;
    await drive(
      operation,
      this.#concurrency,
      tally,
      (started) => started < maxOps && performance.now() < deadline,
    );
    return tally.sample(performance.now() - start);
  }

  async enrol(serverName: string, count: number, concurrency: number): Promise<Sample> {
    const server = this.#sigilServer(serverName);
    const created = await new Promise<string>((resolve, reject) => {
      server.admin.createToken(
        { ttlSeconds: 600, uses: count, autoApprove: true, name: 'bench-enrol', replica: false },
        new grpc.Metadata(),
        { deadline: Date.now() + CALL_DEADLINE_MS },
        (error, response) => (error ? reject(error) : resolve(response.token)),
      );
    });
    const token = parseJoinToken(created);
    const challenge = registerChallenge(token.id, token.secret);
    const requests = Array.from({ length: count }, (_, i) => {
      const keys = generateKeyPair('ed25519');
      return {
        tokenId: token.id,
        tokenSecret: token.secret,
        possession: possessionFor(keys.privateKey, challenge),
        name: `bench-node-${i}`,
      };
    });
    let next = 0;
    const operation: Operation = (done) => {
      const request = requests[next++];
      server.enrolment.register(
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + CALL_DEADLINE_MS },
        (error: grpc.ServiceError | null, response: RegisterResponse) => {
          if (error) done(error);
          else if (response.state !== 'UP' || !response.certificate) {
            done(new Error(`node ${response.nodeId} is ${response.state} without a certificate`));
          } else done(null);
        },
      );
    };
    const tally = new Tally();
    const start = performance.now();
    await drive(operation, concurrency, tally, (started) => started < count);
    return tally.sample(performance.now() - start);
  }

  close(): void {
    for (const server of this.#sigil.values()) server.close();
    for (const cfssl of this.#cfssl.values()) cfssl.close();
  }
}

let load: Load | null = null;

function requireLoad(): Load {
  if (!load) throw new Error('setup first');
  return load;
}

async function handle(message: ToClient): Promise<FromClient> {
  switch (message.type) {
    case 'setup':
      load?.close();
      load = null;
      load = new Load(message);
      return { type: 'ok' };
    case 'run':
      return {
        type: 'sample',
        sample: await requireLoad().run(message.subject, message.maxMs, message.maxOps),
      };
    case 'enrol':
      return {
        type: 'sample',
        sample: await requireLoad().enrol(message.server, message.count, message.concurrency),
      };
    case 'teardown':
      load?.close();
      load = null;
      return { type: 'ok' };
  }
}

serveLoadRequests(handle);
