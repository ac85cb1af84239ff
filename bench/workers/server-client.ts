// The load-generating side of bench/server.ts, in its own process so that the
// server under test (another process) and the client each get a core, and so
// that sigil and cfssl are driven by the same client loop. Driven over IPC
// (server-protocol.ts): `setup` builds the clients and the key pools, `run`
// keeps `concurrency` sign calls in flight for a bounded time and count,
// `enrol` times one batch of Enrolment.Register calls.
//
// Client-side key work is done up front and not timed: a pool of P-256 keys,
// their CSRs (the same bytes for sigil's CSR path and for cfssl) and their
// Sign proofs of possession, used in turn. The server verifies every proof
// and every CSR signature as if they were new.
import { createHash, X509Certificate } from 'node:crypto';
import http from 'node:http';
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
import { dnsName, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { possessionFor, registerChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { serveLoadRequests } from './load-client.ts';
import {
  CALL_DEADLINE_MS,
  type FromClient,
  KEY_POOL_SIZE,
  leafNames,
  PROOF_MAX_AGE_MS,
  type Sample,
  type SigilTarget,
  type SignSubject,
  type ToClient,
} from './server-protocol.ts';

const MAX_ERRORS = 5;

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

interface PoolEntry {
  readonly index: number;
  readonly csrDer: Buffer;
  /** The cfssl request body: {"certificate_request": PEM}. */
  readonly cfsslBody: Buffer;
  proof: ProofOfPossession;
}

/** The bench state after `setup`. */
class Load {
  readonly #target: SigilTarget;
  readonly #concurrency: number;
  readonly #ca: CertificateAuthorityClient;
  readonly #admin: AdminClient;
  readonly #enrolment: EnrolmentClient;
  readonly #adminFingerprint: string;
  readonly #pool: PoolEntry[];
  readonly #keys: ReturnType<typeof generateKeyPair>[];
  readonly #cfssl: { readonly url: URL; readonly agent: http.Agent } | null;
  #proofsMadeAt = 0;
  #next = 0;

  constructor(target: SigilTarget, cfsslUrl: string | null, concurrency: number) {
    this.#target = target;
    this.#concurrency = concurrency;
    const credentials = channelCredentials({ material: new StaticMaterialSource(target.admin) });
    // One channel (one HTTP/2 connection) per client, like a real operator tool or service.
    const options = { 'grpc.use_local_subchannel_pool': 1 };
    this.#ca = new CertificateAuthorityClient(target.address, credentials, options);
    this.#admin = new AdminClient(target.address, credentials, options);
    // Enrolment runs before a node has a certificate: server-authenticated TLS only, with the
    // credentials a node uses (the root pinned by fingerprint, the server must be a replica).
    const root = new X509Certificate(target.admin.trustBundle);
    this.#enrolment = new EnrolmentClient(
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
    this.#keys = [];
    this.#pool = [];
    for (let index = 0; index < KEY_POOL_SIZE; index++) {
      const keys = generateKeyPair('p256');
      const names = leafNames(target.trustDomain, index);
      const csrDer = createCsr(keys.privateKey, {
        commonName: names.commonName,
        sans: [dnsName(names.dns), uriName(names.uri)],
      });
      this.#keys.push(keys);
      this.#pool.push({
        index,
        csrDer,
        cfsslBody: Buffer.from(
          JSON.stringify({ certificate_request: encodePem('CERTIFICATE REQUEST', csrDer) }),
        ),
        proof: { spki: Buffer.alloc(0), challenge: Buffer.alloc(0), signature: Buffer.alloc(0) },
      });
    }
    this.#refreshProofs();
    this.#cfssl = cfsslUrl
      ? {
          url: new URL('/api/v1/cfssl/sign', cfsslUrl),
          agent: new http.Agent({ keepAlive: true, maxSockets: concurrency }),
        }
      : null;
  }

  /** Sign proofs name the admin certificate and the minute: remade when they get old. */
  #refreshProofs(): void {
    if (performance.now() - this.#proofsMadeAt < PROOF_MAX_AGE_MS && this.#proofsMadeAt !== 0) return;
    for (const entry of this.#pool) {
      entry.proof = possessionFor(this.#keys[entry.index].privateKey, signChallenge(this.#adminFingerprint));
    }
    this.#proofsMadeAt = performance.now();
  }

  #take(): PoolEntry {
    const entry = this.#pool[this.#next];
    this.#next = (this.#next + 1) % this.#pool.length;
    return entry;
  }

  #signRequest(entry: PoolEntry, key: SignRequest['key']): SignRequest {
    const names = leafNames(this.#target.trustDomain, entry.index);
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

  #sigilSign(request: SignRequest, done: (error: Error | null) => void): void {
    this.#ca.sign(
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + CALL_DEADLINE_MS },
      (error: grpc.ServiceError | null, response: IssuedCertificate) => {
        if (error) done(error);
        else if (!response?.certificate || response.certificate.length === 0)
          done(new Error('no certificate'));
        else done(null);
      },
    );
  }

  #cfsslSign(done: (error: Error | null) => void): void {
    const cfssl = this.#cfssl;
    if (!cfssl) {
      done(new Error('cfssl is not running'));
      return;
    }
    const body = this.#take().cfsslBody;
    const request = http.request(
      cfssl.url,
      {
        method: 'POST',
        agent: cfssl.agent,
        headers: { 'content-type': 'application/json', 'content-length': body.length },
        timeout: CALL_DEADLINE_MS,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', (error) => done(error));
        response.on('end', () => {
          try {
            const answer = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
              success?: boolean;
              errors?: { message?: string }[];
              result?: { certificate?: string };
            };
            if (answer.success === true && typeof answer.result?.certificate === 'string') done(null);
            else done(new Error(`cfssl: ${answer.errors?.[0]?.message ?? `HTTP ${response.statusCode}`}`));
          } catch (error) {
            done(error as Error);
          }
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('cfssl request timed out')));
    request.on('error', (error) => done(error));
    request.end(body);
  }

  operation(subject: SignSubject): Operation {
    this.#refreshProofs();
    switch (subject) {
      case 'sigil-spki':
        return (done) => {
          const entry = this.#take();
          this.#sigilSign(this.#signRequest(entry, { $case: 'possession', value: entry.proof }), done);
        };
      case 'sigil-csr':
        return (done) => {
          const entry = this.#take();
          this.#sigilSign(this.#signRequest(entry, { $case: 'csr', value: entry.csrDer }), done);
        };
      case 'cfssl':
        return (done) => this.#cfsslSign(done);
    }
  }

  async run(subject: SignSubject, maxMs: number, maxOps: number): Promise<Sample> {
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

  async enrol(count: number, concurrency: number): Promise<Sample> {
    const created = await new Promise<string>((resolve, reject) => {
      this.#admin.createToken(
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
      this.#enrolment.register(
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
    this.#ca.close();
    this.#admin.close();
    this.#enrolment.close();
    this.#cfssl?.agent.destroy();
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
      load = new Load(message.sigil, message.cfsslUrl, message.concurrency);
      return { type: 'ok' };
    case 'run':
      return {
        type: 'sample',
        sample: await requireLoad().run(message.subject, message.maxMs, message.maxOps),
      };
    case 'enrol':
      return { type: 'sample', sample: await requireLoad().enrol(message.count, message.concurrency) };
    case 'teardown':
      load?.close();
      load = null;
      return { type: 'ok' };
  }
}

serveLoadRequests(handle);
