// Public methods on sigil's mTLS server: a client without a certificate may
// call the listed methods and nothing else, on the same port; a certificate
// that is presented but fails verification is still refused at connection;
// a valid certificate reaches everything.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { RevocationSource } from '../../src/pki/revocation-source.ts';
import { type HandshakeFailure, MtlsServer } from '../../src/transport/mtls-server.ts';
import { peerIdentity } from '../../src/transport/peer-identity.ts';
import { CLIENT_CERTIFICATE_REQUIRED, publicMethodSet } from '../../src/transport/public-methods.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { bytes, rawMethod } from '../support/raw-methods.ts';
import { refusal } from '../support/refusals.ts';
import { ManualMaterialSource, TestCa } from './fixtures.ts';

const hour = 3_600_000;
const ca = new TestCa('sigil public-methods test CA', { intermediate: true });
const otherCa = new TestCa('some other CA');

const service = {
  hello: rawMethod('/sigil.test.Door/Hello'),
  secret: rawMethod('/sigil.test.Door/Secret'),
  watch: rawMethod('/sigil.test.Door/Watch', 'response'),
} satisfies grpc.ServiceDefinition;
const DoorClient = grpc.makeGenericClientConstructor(service, 'Door');

/** Every method answers with who called: the SPIFFE ID, or "anonymous". */
function caller(call: Parameters<typeof peerIdentity>[0]): string {
  try {
    return peerIdentity(call).spiffeId ?? 'no-spiffe-id';
  } catch {
    return 'anonymous';
  }
}
const implementation: grpc.UntypedServiceImplementation = {
  hello: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
    callback(null, Buffer.from(caller(call))),
  secret: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
    callback(null, Buffer.from(`secret for ${caller(call)}`)),
  watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    call.write(Buffer.from(caller(call)));
    call.end();
  },
};

class SetRevocationSource implements RevocationSource {
  readonly revoked = new Set<string>();
  isRevoked(serialHex: string): boolean {
    return this.revoked.has(serialHex);
  }
  subscribe(): () => void {
    return () => {};
  }
}

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Running {
  readonly port: number;
  readonly failures: HandshakeFailure[];
  readonly server: MtlsServer;
}

async function start(options: { publicMethods?: string[]; revocation?: RevocationSource }): Promise<Running> {
  const failures: HandshakeFailure[] = [];
  const server = new MtlsServer({
    material: new ManualMaterialSource(ca.material(ca.issueServer())),
    onHandshakeError: (failure) => failures.push(failure),
    ...options,
  });
  server.addService(service, implementation);
  const port = await server.listen();
  cleanups.push(() => server.close(100));
  return { port, failures, server };
}

function client(port: number, pair: { certificateChain: string; privateKey: string } | null): grpc.Client {
  const credentials = grpc.credentials.createSsl(
    Buffer.from(ca.rootPem),
    pair ? Buffer.from(pair.privateKey) : null,
    pair ? Buffer.from(pair.certificateChain) : null,
  );
  const made = new DoorClient(`127.0.0.1:${port}`, credentials, {
    'grpc.ssl_target_name_override': 'localhost',
  });
  cleanups.push(() => made.close());
  return made;
}

function unary(target: grpc.Client, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    target.makeUnaryRequest(
      path,
      bytes,
      bytes,
      Buffer.from('x'),
      { deadline: Date.now() + 10_000 },
      (error, response) => {
        if (error || !response) reject(error ?? new Error('no response'));
        else resolve(response.toString());
      },
    );
  });
}

function stream(target: grpc.Client, path: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const out: string[] = [];
    const call = target.makeServerStreamRequest(path, bytes, bytes, Buffer.from('x'), {
      deadline: Date.now() + 10_000,
    });
    call.on('data', (chunk: Buffer) => out.push(chunk.toString()));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

describe('MtlsServer publicMethods', () => {
  test('a client without a certificate may call a public method, and only that', async () => {
    const running = await start({ publicMethods: ['/sigil.test.Door/Hello'] });
    const anonymous = client(running.port, null);
    assert.equal(await unary(anonymous, '/sigil.test.Door/Hello'), 'anonymous');
    const secret = await failureOf(unary(anonymous, '/sigil.test.Door/Secret'));
    assert.equal(secret.code, grpc.status.UNAUTHENTICATED);
    assert.equal(secret.details, CLIENT_CERTIFICATE_REQUIRED);
    const watch = await failureOf(stream(anonymous, '/sigil.test.Door/Watch'));
    assert.equal(watch.code, grpc.status.UNAUTHENTICATED);
    assert.equal(watch.details, CLIENT_CERTIFICATE_REQUIRED);
    // The anonymous connection is not a tracked (authenticated) connection.
    assert.equal(running.server.connections.size, 0);
    assert.deepEqual(running.failures, []);
  });

  test('a valid certificate can call every method, public or not', async () => {
    const running = await start({ publicMethods: ['/sigil.test.Door/Hello'] });
    const alice = ca.issueClient({ name: 'alice' });
    const authenticated = client(running.port, alice);
    assert.equal(await unary(authenticated, '/sigil.test.Door/Hello'), 'spiffe://test.sigil/alice');
    assert.equal(
      await unary(authenticated, '/sigil.test.Door/Secret'),
      'secret for spiffe://test.sigil/alice',
    );
    assert.deepEqual(await stream(authenticated, '/sigil.test.Door/Watch'), ['spiffe://test.sigil/alice']);
    assert.equal(running.server.connections.size, 1);
  });

  test('a certificate from another CA is refused at connection, as without public methods', async () => {
    const running = await start({ publicMethods: ['/sigil.test.Door/Hello'] });
    const stranger = client(running.port, otherCa.issueClient({ name: 'stranger' }));
    const error = await failureOf(unary(stranger, '/sigil.test.Door/Hello'));
    assert.equal(error.code, grpc.status.UNAVAILABLE, `${error.code} ${error.details}`);
    const failure = await eventually('a handshake failure report', () => running.failures[0]);
    assert.match(failure.reason, /^UNABLE_TO_(GET_ISSUER_CERT_LOCALLY|VERIFY_LEAF_SIGNATURE)$/);
    assert.equal(running.server.connections.size, 0);
  });

  test('an expired certificate is refused at connection, even for a public method', async () => {
    const running = await start({ publicMethods: ['/sigil.test.Door/Hello'] });
    const expired = ca.issueClient({ name: 'expired', now: new Date(Date.now() - 2 * hour), ttlMs: hour });
    const error = await failureOf(unary(client(running.port, expired), '/sigil.test.Door/Hello'));
    assert.equal(error.code, grpc.status.UNAVAILABLE, `${error.code} ${error.details}`);
    const failure = await eventually('a handshake failure report', () => running.failures[0]);
    assert.equal(failure.reason, 'CERT_HAS_EXPIRED');
  });

  test('a certificate with the wrong purpose is refused at connection', async () => {
    const running = await start({ publicMethods: ['/sigil.test.Door/Hello'] });
    const serverOnly = ca.issue({ name: 'server-only', profile: 'server' });
    await failureOf(unary(client(running.port, serverOnly), '/sigil.test.Door/Hello'));
    const failure = await eventually('a handshake failure report', () => running.failures[0]);
    assert.equal(failure.reason, 'INVALID_PURPOSE');
  });

  test('revocation: anonymous public calls pass, a revoked certificate is refused', async () => {
    const revocation = new SetRevocationSource();
    const running = await start({ publicMethods: ['/sigil.test.Door/Hello'], revocation });
    assert.equal(await unary(client(running.port, null), '/sigil.test.Door/Hello'), 'anonymous');
    const bob = ca.issueClient({ name: 'bob' });
    revocation.revoked.add(bob.serialHex);
    await failureOf(unary(client(running.port, bob), '/sigil.test.Door/Hello'));
    const failure = await eventually('a handshake failure report', () => running.failures[0]);
    assert.equal(failure.reason, 'CERT_REVOKED');
  });

  test('without publicMethods a client without a certificate is refused at the handshake', async () => {
    const running = await start({});
    const error = await failureOf(unary(client(running.port, null), '/sigil.test.Door/Hello'));
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    const failure = await eventually('a handshake failure report', () => running.failures[0]);
    assert.equal(failure.reason, 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
  });

  test('malformed method paths are refused at construction', () => {
    for (const bad of ['/sigil.test.Door/*', 'sigil.test.Door/Hello', '/Door', '']) {
      assert.throws(() => publicMethodSet([bad]), refusal('invalid_argument'), bad);
    }
    assert.throws(
      () =>
        new MtlsServer({
          material: new ManualMaterialSource(ca.material(ca.issueServer())),
          publicMethods: ['/sigil.test.Door/*'],
        }),
      /invalid method path/,
    );
  });
});
