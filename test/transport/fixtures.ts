// Shared fixtures for the transport tests: a throwaway CA (root, optionally an
// intermediate) issuing server and client certificates with src/pki, a
// MaterialSource the tests can push new material into, a tiny echo service
// with Buffer (de)serializers, and grpc-js clients built the plain way
// (credentials.createSsl) so the server is tested against an unmodified peer.
import type { KeyObject } from 'node:crypto';
import { after } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { createCrl, type RevokedEntry } from '../../src/pki/crl.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { MaterialSource, TlsMaterial } from '../../src/pki/material.ts';
import { dnsName, type GeneralName, ipAddress, spiffeId, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import type { Profile } from '../../src/pki/profiles.ts';
import {
  type HandshakeFailure,
  MtlsServer,
  type MtlsServerOptions,
} from '../../src/transport/mtls-server.ts';
import { type PeerIdentity, peerIdentity } from '../../src/transport/peer-identity.ts';
import { bytes, rawMethod } from '../support/raw-methods.ts';
import { serialOf } from '../support/serials.ts';

export const TRUST_DOMAIN = 'test.sigil';
const hour = 3_600_000;

/** A leaf and its key, PEM, as a peer presents them. */
export interface IssuedPair {
  readonly certificateChain: string;
  readonly privateKey: string;
  readonly serialHex: string;
  readonly der: Buffer;
  readonly spiffeId: string;
}

export interface LeafOptions {
  readonly name?: string;
  readonly profile?: Profile;
  readonly ttlMs?: number;
  readonly now?: Date;
  /** Extra SANs besides the SPIFFE ID. */
  readonly sans?: readonly GeneralName[];
  /** Leave out the SPIFFE ID URI SAN. */
  readonly withoutSpiffeId?: boolean;
}

export class TestCa {
  readonly rootDer: Buffer;
  readonly rootPem: string;
  readonly rootSerial: string;
  /** The CA that signs leaves: the intermediate when there is one, else the root. */
  readonly signerDer: Buffer;
  readonly signerKey: KeyObject;
  readonly intermediatePem: string | null;
  readonly intermediateSerial: string | null;
  readonly #rootKey: KeyObject;
  readonly #issuer: Issuer;
  #crlNumber = 1n;

  constructor(name = 'sigil transport test CA', options: { intermediate?: boolean } = {}) {
    // Born three hours ago, so tests can issue certificates that have already expired.
    const born = new Date(Date.now() - 3 * hour);
    const rootKeys = generateKeyPair('p256');
    const root = createRootCertificate({
      privateKey: rootKeys.privateKey,
      subject: { commonName: name },
      ttlMs: 24 * hour,
      now: born,
    });
    this.rootDer = root.der;
    this.rootPem = encodePem('CERTIFICATE', root.der);
    this.rootSerial = root.serialHex;
    this.#rootKey = rootKeys.privateKey;
    if (options.intermediate) {
      const keys = generateKeyPair('p256');
      const intermediate = Issuer.fromCertificate(root.der, rootKeys.privateKey).issue({
        publicKey: keys.publicKey,
        profile: 'intermediate',
        subject: { commonName: `${name} intermediate` },
        ttlMs: 12 * hour,
        now: born,
      });
      this.signerDer = intermediate.der;
      this.signerKey = keys.privateKey;
      this.intermediatePem = encodePem('CERTIFICATE', intermediate.der);
      this.intermediateSerial = intermediate.serialHex;
    } else {
      this.signerDer = root.der;
      this.signerKey = rootKeys.privateKey;
      this.intermediatePem = null;
      this.intermediateSerial = null;
    }
    this.#issuer = Issuer.fromCertificate(this.signerDer, this.signerKey);
  }

  issue(options: LeafOptions & { profile: Profile }): IssuedPair {
    const keys = generateKeyPair('p256');
    const name = options.name ?? 'peer';
    const id = spiffeId(TRUST_DOMAIN, ...name.split('/'));
    const issued = this.#issuer.issue({
      publicKey: keys.publicKey,
      profile: options.profile,
      subject: { commonName: name },
      sans: [...(options.withoutSpiffeId ? [] : [uriName(id)]), ...(options.sans ?? [])],
      ttlMs: options.ttlMs ?? hour,
      now: options.now,
    });
    const leafPem = encodePem('CERTIFICATE', issued.der);
    return {
      certificateChain: leafPem + (this.intermediatePem ?? ''),
      privateKey: privateKeyToPem(keys.privateKey),
      serialHex: issued.serialHex,
      der: issued.der,
      spiffeId: id,
    };
  }

  issueServer(options: LeafOptions = {}): IssuedPair {
    return this.issue({
      name: 'server',
      profile: 'server',
      sans: [dnsName('localhost'), ipAddress('127.0.0.1')],
      ...options,
    });
  }

  issueClient(options: LeafOptions = {}): IssuedPair {
    return this.issue({ name: 'client', profile: 'client', ...options });
  }

  /** Server material: the pair plus this CA as the only trust root. */
  material(pair: IssuedPair, extra: { trustBundle?: string; crls?: string[] } = {}): TlsMaterial {
    return {
      certificateChain: pair.certificateChain,
      privateKey: pair.privateKey,
      trustBundle: extra.trustBundle ?? this.rootPem,
      ...(extra.crls ? { crls: extra.crls } : {}),
    };
  }

  /**
   * CRLs for every CA level (OpenSSL checks each level once CRLs are on):
   * `entries` go into the CRL of the leaf-signing CA.
   */
  crls(
    entries: readonly RevokedEntry[] = [],
    times: { thisUpdate?: Date; nextUpdate?: Date } = {},
  ): string[] {
    const thisUpdate = times.thisUpdate ?? new Date(Date.now() - 60_000);
    const nextUpdate = times.nextUpdate ?? new Date(Date.now() + hour);
    const crlNumber = this.#crlNumber++;
    const signerCrl = createCrl({
      issuerCertificate: this.signerDer,
      issuerKey: this.signerKey,
      entries,
      crlNumber,
      thisUpdate,
      nextUpdate,
    });
    const out = [encodePem('X509 CRL', signerCrl)];
    if (this.intermediatePem) {
      const rootCrl = createCrl({
        issuerCertificate: this.rootDer,
        issuerKey: this.#rootKey,
        entries: [],
        crlNumber,
        thisUpdate,
        nextUpdate,
      });
      out.push(encodePem('X509 CRL', rootCrl));
    }
    return out;
  }
}

/** A MaterialSource a test drives by hand. */
export class ManualMaterialSource implements MaterialSource {
  #material: TlsMaterial;
  readonly #listeners = new Set<(material: TlsMaterial) => void>();
  constructor(material: TlsMaterial) {
    this.#material = material;
  }
  current(): TlsMaterial {
    return this.#material;
  }
  subscribe(listener: (material: TlsMaterial) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  /** Announce new material (a real source validates first; this one lets tests push bad sets). */
  push(material: TlsMaterial): void {
    this.#material = material;
    for (const listener of this.#listeners) listener(material);
  }
}

// --- the echo service ---------------------------------------------------------

export const echoService = {
  unary: rawMethod('/sigil.test.Echo/Unary'),
  ticks: rawMethod('/sigil.test.Echo/Ticks', 'response'),
} satisfies grpc.ServiceDefinition;

export const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo');
export type EchoClientInstance = InstanceType<typeof EchoClient>;

export interface UnaryResult {
  readonly response: Buffer;
  /** Serial of the server certificate this call ran against, lower-case hex. */
  readonly serverSerial: string | null;
}

/** One unary call; resolves with the response and the server serial the channel saw. */
export function callUnary(client: grpc.Client, request: Buffer = Buffer.from('ping')): Promise<UnaryResult> {
  return new Promise((resolve, reject) => {
    const call = client.makeUnaryRequest(
      echoService.unary.path,
      bytes,
      bytes,
      request,
      { deadline: Date.now() + 10_000 },
      (error, response) => {
        if (error || !response) {
          reject(error ?? new Error('no response'));
          return;
        }
        const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
        resolve({ response, serverSerial: raw ? serialOf(raw) : null });
      },
    );
  });
}

/** A plain grpc-js client with a client certificate, trusting `ca`. */
export function mtlsClient(
  port: number,
  ca: string,
  client: { certificateChain: string; privateKey: string } | null,
  options: grpc.ChannelOptions = {},
): grpc.Client {
  const credentials = grpc.credentials.createSsl(
    Buffer.from(ca),
    client ? Buffer.from(client.privateKey) : null,
    client ? Buffer.from(client.certificateChain) : null,
  );
  // The name the server certificate carries (an IP as TLS server name is not allowed by RFC 6066).
  return new EchoClient(`127.0.0.1:${port}`, credentials, {
    'grpc.ssl_target_name_override': 'localhost',
    ...options,
  });
}

// --- a sigil server running the echo service -------------------------------------

/** What the server saw of the caller, sent back as JSON so tests can assert on it. */
export interface SeenIdentity {
  readonly spiffeId: string | null;
  readonly serial: string;
  readonly fingerprint: string;
  readonly dnsNames: readonly string[];
  readonly chainLength: number;
  readonly leafDerHex: string;
  /** True when a second lookup returned the same object: the identity came from the connection registry. */
  readonly parsedOnce: boolean;
}

export function describeIdentity(identity: PeerIdentity, parsedOnce = false): SeenIdentity {
  return {
    parsedOnce,
    spiffeId: identity.spiffeId,
    serial: identity.serial,
    fingerprint: identity.fingerprint,
    dnsNames: identity.dnsNames,
    chainLength: identity.chain.length,
    leafDerHex: identity.chain[0].toString('hex'),
  };
}

/** Echo handlers: unary answers with the caller's identity; ticks streams it, then a tick every 20 ms. */
export const echoImplementation: grpc.UntypedServiceImplementation = {
  unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    try {
      const identity = peerIdentity(call);
      callback(
        null,
        Buffer.from(JSON.stringify(describeIdentity(identity, identity === peerIdentity(call)))),
      );
    } catch (error) {
      callback({ code: grpc.status.UNAUTHENTICATED, details: (error as Error).message });
    }
  },
  ticks: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    const identity = peerIdentity(call);
    call.write(Buffer.from(JSON.stringify(describeIdentity(identity, identity === peerIdentity(call)))));
    let n = 0;
    const timer = setInterval(() => call.write(Buffer.from(`tick ${n++}`)), 20);
    const stop = () => clearInterval(timer);
    call.on('cancelled', stop);
    call.on('close', stop);
    call.on('error', stop);
  },
};

export interface RunningServer {
  readonly server: MtlsServer;
  readonly port: number;
  readonly failures: HandshakeFailure[];
  readonly errors: Error[];
  close(): Promise<void>;
}

/** An MtlsServer with the echo service on 127.0.0.1, recording handshake failures and errors. */
export async function startEchoServer(options: Partial<MtlsServerOptions> & { material: MaterialSource }) {
  const failures: HandshakeFailure[] = [];
  const errors: Error[] = [];
  const server = new MtlsServer({
    onHandshakeError: (failure) => failures.push(failure),
    onError: (error) => errors.push(error),
    ...options,
  });
  server.addService(echoService, echoImplementation);
  const port = await server.listen();
  const running: RunningServer = { server, port, failures, errors, close: () => server.close(100) };
  return running;
}

/**
 * start() and client() for one test file: every server and client they make
 * is closed (newest first) when the file's tests are done.
 */
export function closedAfterTests(): {
  start(options: Parameters<typeof startEchoServer>[0]): Promise<RunningServer>;
  client(...args: Parameters<typeof mtlsClient>): grpc.Client;
  /** Anything else to close with them. */
  closeLater(cleanup: () => unknown): void;
} {
  const cleanups: (() => unknown)[] = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });
  return {
    async start(options) {
      const running = await startEchoServer(options);
      cleanups.push(() => running.close());
      return running;
    },
    client(...args) {
      const made = mtlsClient(...args);
      cleanups.push(() => made.close());
      return made;
    },
    closeLater(cleanup) {
      cleanups.push(cleanup);
    },
  };
}
