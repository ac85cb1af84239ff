// What an attacker holding a delegation directory can do without sigil's
// help, for the security tests of issue #9 ("a delegation can mint any
// identity"): mint certificates with the `openssl` CLI under the delegation's
// CA key (`openssl x509 -req -CA A/delegation.pem -CAkey A/delegation.key`),
// call a real sigil server with them, and stand up a fake control plane that
// records every request a client sends it. Also the plumbing those tests
// share: the real `sigil server` as a subprocess (started with helpers.ts,
// its JSON log lines read here), gRPC clients calling with a given chain, and
// calls that keep the raw gRPC status.
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { TrustBundle } from '../../src/gen/sigil/v1/sigil.ts';
import type { ServerInfoFile } from '../../src/server/data-directory.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import type { ServerVerification } from '../../src/transport/server-verification.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { derOf, NEW_P256_KEY, pemCertificates } from '../cli/pki-helpers.ts';
import { openssl as runOpenssl } from '../support/cli.ts';
import { type OpensslVerdict, verifyWithOpenssl } from '../support/peers.ts';
import { serialOf } from '../support/serials.ts';
import {
  type Clients,
  clients,
  type ServerProcess,
  serverFlags,
  spawnServer,
  type Unary,
  waitForServer,
} from './helpers.ts';

// --- what `sigil delegate` hands out ------------------------------------------------

/**
 * `sigil delegate` grants of this machine's name and address: a delegation
 * holding them may mint a server certificate for localhost and 127.0.0.1
 * that passes its name constraints, as a fake control plane here needs.
 */
export const LOCAL_GRANTS: readonly string[] = ['--dns', 'localhost', '--ip', '127.0.0.1/32'];

/** A certificate chain and its key in `dir`: cert.pem and key.pem (an identity `sigil` wrote) unless named. */
export function identityIn(dir: string, cert = 'cert.pem', key = 'key.pem'): { chain: string; key: string } {
  return { chain: readFileSync(join(dir, cert), 'utf8'), key: readFileSync(join(dir, key), 'utf8') };
}

// --- the openssl CLI, as the attacker uses it ------------------------------------

/** `openssl ARGS`: its output, failing the test with what openssl printed when it exits non-zero. */
export async function openssl(args: readonly string[]): Promise<string> {
  const result = await runOpenssl(args);
  if (result.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${result.stdout}${result.stderr}`);
  return result.stdout;
}

/**
 * `openssl verify` of a forged certificate, with the chain it is presented
 * with (its issuers after it), against `roots` (a PEM bundle).
 */
export function verifyForged(
  forged: { readonly cert: string; readonly chain: string },
  roots: string,
  usage: 'client' | 'server',
  dnsName?: string,
): Promise<OpensslVerdict> {
  const issuers = forged.chain.slice(forged.cert.length);
  return verifyWithOpenssl({
    roots: [roots],
    intermediates: issuers === '' ? [] : [issuers],
    leaf: forged.cert,
    usage,
    ...(dnsName === undefined ? {} : { dnsName }),
  });
}

/** What a forged certificate says. */
export interface ForgeRequest {
  /** The subject common name (always present: an empty subject is malformed). */
  readonly commonName: string;
  readonly uris?: readonly string[];
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
  /** A CA certificate (CA:TRUE, keyCertSign) instead of a TLS leaf. */
  readonly ca?: boolean;
  /** The serial number, hex without 0x (default random). */
  readonly serial?: string;
  readonly days?: number;
}

/** A certificate minted by the attacker: PEM, its key, and its chain for presenting (leaf first). */
export interface Forged {
  readonly cert: string;
  readonly key: string;
  /** The certificate followed by the issuer's chain as the attacker holds it (roots left out). */
  readonly chain: string;
  readonly der: Buffer;
  readonly serial: string;
}

/**
 * An attacker's CA: a certificate (first in `chainPem`) and its key, e.g. a
 * delegation directory's delegation.pem and delegation.key. Every certificate
 * is minted by the openssl CLI: `openssl req -new` for the key and request,
 * then `openssl x509 -req -CA … -CAkey …` with the extensions asked for.
 */
export class Forger {
  readonly #dir: string;
  readonly #chainPem: string;
  #count = 0;

  constructor(workDir: string, chainPem: string, keyPem: string) {
    this.#dir = workDir;
    mkdirSync(workDir, { recursive: true, mode: 0o700 });
    this.#chainPem = pemCertificates(chainPem)
      .filter((pem) => {
        const x = new X509Certificate(pem);
        return !x.checkIssued(x);
      })
      .join('');
    writeFileSync(join(workDir, 'issuer.pem'), pemCertificates(chainPem)[0]);
    writeFileSync(join(workDir, 'issuer.key'), keyPem, { mode: 0o600 });
  }

  /** The attacker's CA from a delegation directory written by `sigil delegate`. */
  static fromDelegationDirectory(workDir: string, delegationDir: string): Forger {
    const delegation = identityIn(delegationDir, 'delegation.pem', 'delegation.key');
    return new Forger(workDir, delegation.chain, delegation.key);
  }

  async mint(request: ForgeRequest): Promise<Forged> {
    const base = `f${this.#count++}`;
    const file = (extension: string) => join(this.#dir, `${base}.${extension}`);
    const sans = [
      ...(request.uris ?? []).map((uri) => `URI:${uri}`),
      ...(request.dns ?? []).map((name) => `DNS:${name}`),
      ...(request.ips ?? []).map((ip) => `IP:${ip}`),
    ];
    const extensions = request.ca
      ? ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,digitalSignature,keyCertSign,cRLSign']
      : [
          'basicConstraints=critical,CA:FALSE',
          'keyUsage=critical,digitalSignature',
          'extendedKeyUsage=clientAuth,serverAuth',
        ];
    extensions.push('subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid');
    if (sans.length > 0) extensions.push(`subjectAltName=${sans.join(',')}`);
    writeFileSync(
      file('cnf'),
      [
        '[req]',
        'distinguished_name = dn',
        'prompt = no',
        '[dn]',
        `CN = ${request.commonName}`,
        '[ext]',
        ...extensions,
        '',
      ].join('\n'),
    );
    await openssl([
      'req',
      '-new',
      ...NEW_P256_KEY,
      '-keyout',
      file('key'),
      '-config',
      file('cnf'),
      '-out',
      file('csr'),
    ]);
    const serial = request.serial ?? randomSerial();
    await openssl([
      'x509',
      '-req',
      '-in',
      file('csr'),
      '-CA',
      join(this.#dir, 'issuer.pem'),
      '-CAkey',
      join(this.#dir, 'issuer.key'),
      '-set_serial',
      `0x${serial}`,
      '-days',
      String(request.days ?? 1),
      '-sha256',
      '-extfile',
      file('cnf'),
      '-extensions',
      'ext',
      '-out',
      file('pem'),
    ]);
    const cert = readFileSync(file('pem'), 'utf8');
    return {
      cert,
      key: readFileSync(file('key'), 'utf8'),
      chain: cert + this.#chainPem,
      der: derOf(cert),
      serial: serialOf(cert),
    };
  }
}

/** A positive 128-bit serial, hex. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] & 0x7f) | 0x10;
  return bytes.toString('hex');
}

// --- the real `sigil server` -----------------------------------------------------

export interface SpawnedServer {
  readonly process: ServerProcess;
  readonly dataDir: string;
  readonly info: ServerInfoFile;
  /** The server's JSON log lines so far. */
  logLines(): Record<string, unknown>[];
  /** Reasons of the handshakes the server refused so far ("PERMITTED_SUBTREE_VIOLATION", …). */
  handshakeRefusals(): string[];
  stop(): Promise<void>;
}

/**
 * `sigil server --data DIR` on free ports with debug logging (handshake
 * refusals are logged at debug level, with their reason), once it serves.
 */
export async function startSigilServer(
  dataDir: string,
  extra: readonly string[] = [],
): Promise<SpawnedServer> {
  const child = spawnServer([...serverFlags(dataDir, 'debug'), ...extra]);
  const info = await waitForServer(child, dataDir, 60_000);
  const logLines = () =>
    child
      .stderr()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  return {
    process: child,
    dataDir,
    info,
    logLines,
    handshakeRefusals: () =>
      logLines()
        .filter((line) => typeof line.msg === 'string' && line.msg.startsWith('handshake refused'))
        .map((line) => String(line.reason)),
    async stop() {
      if (child.child.exitCode !== null || child.child.signalCode !== null) return;
      child.child.kill('SIGTERM');
      const timer = setTimeout(() => child.child.kill('SIGKILL'), 10_000);
      await child.exited;
      clearTimeout(timer);
    },
  };
}

// --- gRPC clients calling with a given chain ---------------------------------------

/**
 * Clients of `address` calling with `chain` (leaf first) and `key`, trusting
 * `trustBundle`, through sigil's own channel credentials: TLS 1.3, and the
 * delegation CAs of the chain sent as sigil-chain-bin, as every sigil client
 * does. By default the server must be valid for the target host (its IP SAN).
 */
export function callerWith(
  address: string,
  identity: { chain: string; key: string },
  trustBundle: string,
  verify?: ServerVerification,
): Clients {
  const credentials = channelCredentials({
    material: new StaticMaterialSource({
      certificateChain: identity.chain,
      privateKey: identity.key,
      trustBundle,
    }),
    ...(verify ? { verify } : {}),
  });
  // A fresh channel per caller: no connection is shared with another identity.
  return clients(address, credentials, { 'grpc.use_local_subchannel_pool': 1 });
}

/** The outcome of one unary call (5 s deadline): its response, or its gRPC error. */
export type Outcome<Response> =
  | { readonly ok: true; readonly response: Response }
  | { readonly ok: false; readonly code: grpc.status; readonly details: string };

export function attempt<Request, Response>(
  client: grpc.Client,
  method: Unary<Request, Response>,
  request: Request,
  timeoutMs = 5_000,
): Promise<Outcome<Response>> {
  return new Promise((resolve) => {
    method.call(
      client,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (error, response) => {
        if (error) resolve({ ok: false, code: error.code, details: error.details });
        else resolve({ ok: true, response });
      },
    );
  });
}

/** Asserts a refusal with `code` (details matching `details`) and returns the details. */
export function assertRefusedWith(
  outcome: Outcome<unknown>,
  code: grpc.status,
  what: string,
  details?: RegExp,
): string {
  assert.equal(outcome.ok, false, `${what}: the call succeeded`);
  if (outcome.ok) return '';
  assert.equal(
    outcome.code,
    code,
    `${what}: expected ${grpc.status[code]}, got ${grpc.status[outcome.code]}: ${outcome.details}`,
  );
  if (details) assert.match(outcome.details, details, what);
  return outcome.details;
}

export function assertSucceeded<Response>(outcome: Outcome<Response>, what: string): Response {
  if (!outcome.ok) assert.fail(`${what}: ${grpc.status[outcome.code]}: ${outcome.details}`);
  return outcome.response;
}

// --- a fake control plane -----------------------------------------------------------

/** One HTTP/2 request the fake control plane received. */
export interface RecordedRequest {
  readonly path: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

export interface FakeControlPlane {
  readonly address: string;
  /** Every HTTP/2 request received, in order (whatever the connection). */
  readonly requests: RecordedRequest[];
  /** TLS connections that completed the server's side of the handshake, and the client certificates they showed. */
  readonly connections: { clientCertificate: string | null }[];
  /** TLS errors the server saw (a client aborting the handshake). */
  readonly tlsErrors: string[];
  close(): Promise<void>;
}

const GET_TRUST_BUNDLE = '/sigil.v1.Enrolment/GetTrustBundle';

/**
 * A TLS 1.3 + HTTP/2 server posing as the control plane with `chain` (leaf
 * first) and `key`: it answers GetTrustBundle with `bundle` (what anyone can
 * read from a bundle.pem: the real roots, so a client pinning the root's
 * fingerprint finds it) and every other call with UNIMPLEMENTED, and records
 * every request, headers and body, before answering. It asks for a client
 * certificate and accepts any.
 */
export async function startFakeControlPlane(options: {
  chain: string;
  key: string;
  bundle: TrustBundle;
}): Promise<FakeControlPlane> {
  const requests: RecordedRequest[] = [];
  const connections: { clientCertificate: string | null }[] = [];
  const tlsErrors: string[] = [];
  const server = http2.createSecureServer({
    cert: options.chain,
    key: options.key,
    minVersion: 'TLSv1.3',
    requestCert: true,
    rejectUnauthorized: false,
    ALPNProtocols: ['h2'],
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    const peer = socket.getPeerX509Certificate();
    connections.push({ clientCertificate: peer ? peer.toString() : null });
  });
  server.on('tlsClientError', (error) => tlsErrors.push(error.message));
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', () => {});
    stream.on('end', () => {
      const path = String(headers[':path']);
      requests.push({ path, headers: { ...headers }, body: Buffer.concat(chunks) });
      if (stream.destroyed) return;
      if (path === GET_TRUST_BUNDLE) {
        const message = Buffer.from(TrustBundle.encode(options.bundle).finish());
        const frame = Buffer.alloc(5 + message.length);
        frame.writeUInt32BE(message.length, 1);
        message.copy(frame, 5);
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(frame);
      } else {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12', 'grpc-message': 'fake' },
          { endStream: true },
        );
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    requests,
    connections,
    tlsErrors,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The trust bundle a fake control plane serves: the real roots (public), as a bundle.pem holds them. */
export function bundleOf(bundlePem: string, trustDomain: string): TrustBundle {
  return {
    trustDomain,
    roots: pemCertificates(bundlePem).map(derOf),
    intermediates: [],
    rootFingerprint: new X509Certificate(pemCertificates(bundlePem)[0]).fingerprint256
      .replaceAll(':', '')
      .toLowerCase(),
    policyOid: '',
  };
}
