// Delegates on any sigil-protected server (MtlsServer, for embedders): a leaf
// the deployment's CAs did not sign directly lies beneath a delegation and is
// a delegate's identity, whatever name it carries. It is admitted only through
// its chain (sigil-chain-bin, which sigil's channelCredentials sends), reported
// as a delegate by peerIdentity, never matches a rule written for deployment
// identities, and loses its connection when any link is revoked.
import assert from 'node:assert/strict';
import { type KeyObject, X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  issueDelegateLeaf,
  issueDelegation,
  type NameGrants,
} from '../../src/pki/delegation-certificates.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { dnsName, ipAddress, uriName } from '../../src/pki/names.ts';
import {
  DEFAULT_POLICY_OID,
  PERMISSIONS,
  type Permission,
  type Policy,
} from '../../src/pki/policy-extension.ts';
import { type AuthorizationRules, authorizationInterceptor } from '../../src/transport/authorization.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { type PeerCall, peerIdentity } from '../../src/transport/peer-identity.ts';
import { RevocationSet } from '../../src/transport/revocation-set.ts';
import { verifySpiffeId } from '../../src/transport/server-verification.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { pemOf } from '../support/pem.ts';
import {
  closedAfterTests,
  echoService,
  ManualMaterialSource,
  mtlsClient,
  TestCa,
  TRUST_DOMAIN,
} from './fixtures.ts';

const hour = 3_600_000;
const ca = new TestCa('sigil delegates test CA', { intermediate: true });
const cleanup = closedAfterTests();

function policy(permissions: readonly Permission[], workloads = 2): Policy {
  return {
    version: 1,
    permissions: new Set(permissions),
    limits: { workloads, cpus: [0, 1], memoryMiB: 1024, blockMiB: 0, bridges: [], issuancePerHour: 100 },
  };
}

interface Delegation {
  readonly der: Buffer;
  readonly key: KeyObject;
  /** This delegation, then its chain up to (not including) the root. */
  readonly chain: readonly Buffer[];
  readonly fingerprint: string;
  readonly policy: Policy;
}

const deploymentIssuer = Issuer.fromCertificate(ca.signerDer, ca.signerKey);

/** A delegation under the deployment's intermediate (parent absent) or under `parent`. */
function delegate(
  name: string,
  permissions: readonly Permission[],
  parent?: Delegation,
  grants?: Partial<NameGrants>,
): Delegation {
  const keys = generateKeyPair('p256');
  const issued = issueDelegation({
    parent: parent
      ? {
          issuer: Issuer.fromCertificate(parent.der, parent.key),
          certificateDer: parent.der,
          policy: parent.policy,
        }
      : { issuer: deploymentIssuer, certificateDer: ca.signerDer, policy: policy(PERMISSIONS) },
    trustDomain: TRUST_DOMAIN,
    policyOid: DEFAULT_POLICY_OID,
    publicKey: keys.publicKey,
    name,
    policy: policy(permissions),
    ttlMs: (parent ? 1 : 2) * hour,
    ...(grants ? { grants } : {}),
  });
  return {
    der: issued.der,
    key: keys.privateKey,
    chain: [issued.der, ...(parent ? parent.chain : [ca.signerDer])],
    fingerprint: new X509Certificate(issued.der).fingerprint256.replaceAll(':', '').toLowerCase(),
    policy: issued.policy,
  };
}

/** The delegate's own identity leaf: what `sigil delegate` writes as cert.pem / key.pem. */
function identityOf(delegation: Delegation): { certificateChain: string; privateKey: string } {
  const keys = generateKeyPair('p256');
  const leaf = issueDelegateLeaf({
    parent: {
      issuer: Issuer.fromCertificate(delegation.der, delegation.key),
      certificateDer: delegation.der,
    },
    trustDomain: TRUST_DOMAIN,
    policyOid: DEFAULT_POLICY_OID,
    publicKey: keys.publicKey,
  });
  return {
    certificateChain: pemOf(leaf.der, ...delegation.chain),
    privateKey: privateKeyToPem(keys.privateKey),
  };
}

/** A leaf the delegation signs with whatever names an attacker likes. */
function forged(
  delegation: Delegation,
  uri: string,
  options: {
    profile?: 'client' | 'server';
    extraSans?: ReturnType<typeof dnsName | typeof ipAddress>[];
  } = {},
): { certificateChain: string; privateKey: string } {
  const keys = generateKeyPair('p256');
  const leaf = Issuer.fromCertificate(delegation.der, delegation.key).issue({
    publicKey: keys.publicKey,
    profile: options.profile ?? 'client',
    subject: { commonName: 'mallory' },
    sans: [uriName(uri), ...(options.extraSans ?? [])],
    ttlMs: hour,
  });
  return {
    certificateChain: pemOf(leaf.der, ...delegation.chain),
    privateKey: privateKeyToPem(keys.privateKey),
  };
}

/** What the handler saw of the caller. */
interface Seen {
  readonly spiffeId: string | null;
  readonly issuedBy: string;
  readonly delegate: { spiffeId: string; subtree: string[]; permissions: string[] } | null;
}

const whoami: grpc.UntypedServiceImplementation = {
  unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    const identity = peerIdentity(call as unknown as PeerCall);
    const seen: Seen = {
      spiffeId: identity.spiffeId,
      issuedBy: identity.issuedBy,
      delegate: identity.delegate && {
        spiffeId: identity.delegate.spiffeId,
        subtree: [...identity.delegate.subtree],
        permissions: [...identity.delegate.effective.permissions],
      },
    };
    callback(null, Buffer.from(JSON.stringify(seen)));
  },
  ticks: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    call.write(Buffer.from('first'));
    const timer = setInterval(() => call.write(Buffer.from('tick')), 20);
    const stop = () => clearInterval(timer);
    call.on('cancelled', stop);
    call.on('close', stop);
    call.on('error', stop);
  },
};

const serverPair = ca.issueServer();

async function startServer(
  options: { rules?: AuthorizationRules; revocation?: RevocationSet; delegates?: 'refuse' } = {},
) {
  const { MtlsServer } = await import('../../src/transport/mtls-server.ts');
  const failures: string[] = [];
  const server = new MtlsServer({
    material: new ManualMaterialSource(ca.material(serverPair)),
    ...(options.revocation ? { revocation: options.revocation } : {}),
    ...(options.delegates ? { delegates: options.delegates } : {}),
    interceptors: options.rules ? [authorizationInterceptor(options.rules)] : [],
    onHandshakeError: (failure) => failures.push(failure.reason),
  });
  server.addService(echoService, whoami);
  const port = await server.listen();
  cleanup.closeLater(() => server.close(100));
  return { port, failures };
}

/** A client through sigil's channelCredentials, which sends a delegate's chain with every call. */
function sigilClient(port: number, identity: { certificateChain: string; privateKey: string }): grpc.Client {
  const material: TlsMaterial = { ...identity, trustBundle: ca.rootPem };
  const client = new grpc.Client(
    `127.0.0.1:${port}`,
    channelCredentials({ material: new ManualMaterialSource(material), serverName: 'localhost' }),
  );
  cleanup.closeLater(() => client.close());
  return client;
}

function call(client: grpc.Client): Promise<Seen> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      echoService.unary.path,
      (value: Buffer) => value,
      (value: Buffer) => value,
      Buffer.from('who'),
      { deadline: Date.now() + 10_000 },
      (error, response) => (error || !response ? reject(error) : resolve(JSON.parse(response.toString()))),
    );
  });
}

const alice = delegate('alice', ['info', 'create', 'delegate', 'issue']);
const carol = delegate('carol', ['info'], alice);
const bob = delegate('bob', ['info', 'create']);

describe('delegates on a MtlsServer', () => {
  test('a deployment identity is reported as issued by the deployment, with no delegate', async () => {
    const { port } = await startServer();
    const seen = await call(sigilClient(port, ca.issueClient({ name: 'client/web' })));
    assert.equal(seen.issuedBy, 'deployment');
    assert.equal(seen.delegate, null);
    assert.equal(seen.spiffeId, `spiffe://${TRUST_DOMAIN}/client/web`);
  });

  test('a delegate is admitted through its chain and reported with its subtree and effective policy', async () => {
    const { port } = await startServer();
    const seen = await call(sigilClient(port, identityOf(carol)));
    assert.equal(seen.issuedBy, 'delegated');
    assert.deepEqual(seen.delegate?.subtree, ['alice', 'carol']);
    assert.equal(seen.delegate?.spiffeId, `spiffe://carol.alice.d.${TRUST_DOMAIN}`);
    // The intersection along the chain: Carol's own "info" only.
    assert.deepEqual(seen.delegate?.permissions, ['info']);
  });

  test('a leaf a delegation signs with a deployment name is refused at the handshake (name constraints)', async () => {
    const { port, failures } = await startServer();
    const mallory = forged(alice, `spiffe://${TRUST_DOMAIN}/admin/mallory`);
    const error = await failureOf(call(sigilClient(port, mallory)));
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    // OpenSSL refuses the chain; the next test shows the same delegation's in-host leaf is admitted.
    await eventually('the handshake failure', () => failures.length > 0 || undefined);
  });

  test('an admin-looking path inside the delegation host is a delegate: a rule for the trust domain does not match it', async () => {
    const rules: AuthorizationRules = {
      '/sigil.test.Echo/*': { spiffePatterns: [`spiffe://${TRUST_DOMAIN}/*`] },
    };
    const { port } = await startServer({ rules });
    const inside = forged(alice, `spiffe://alice.d.${TRUST_DOMAIN}/admin/mallory`);
    const error = await failureOf(call(sigilClient(port, inside)));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    assert.match(
      error.details,
      /delegate spiffe:\/\/alice\.d\.test\.sigil\/admin\/mallory is not in allowed/,
    );
    // Control: the deployment's own client passes the same rule.
    const seen = await call(sigilClient(port, ca.issueClient({ name: 'admin/root' })));
    assert.equal(seen.issuedBy, 'deployment');
  });

  test('a delegates rule admits delegates at or beneath the listed subtrees only', async () => {
    const rules: AuthorizationRules = {
      '/sigil.test.Echo/*': { delegates: [`spiffe://alice.d.${TRUST_DOMAIN}`] },
    };
    const { port } = await startServer({ rules });
    assert.equal(
      (await call(sigilClient(port, identityOf(alice)))).delegate?.spiffeId,
      `spiffe://alice.d.${TRUST_DOMAIN}`,
    );
    assert.deepEqual((await call(sigilClient(port, identityOf(carol)))).delegate?.subtree, [
      'alice',
      'carol',
    ]);
    const error = await failureOf(call(sigilClient(port, identityOf(bob))));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    // A deployment identity never matches a delegates rule either.
    const deployment = await failureOf(call(sigilClient(port, ca.issueClient({ name: 'client/x' }))));
    assert.equal(deployment.code, grpc.status.PERMISSION_DENIED);
  });

  test("requirePermission for a delegate reads its chain's effective permissions", async () => {
    const rules: AuthorizationRules = {
      '/sigil.test.Echo/*': { delegates: 'any', requirePermission: 'create' },
    };
    const { port } = await startServer({ rules });
    assert.ok((await call(sigilClient(port, identityOf(alice)))).delegate);
    const error = await failureOf(call(sigilClient(port, identityOf(carol))));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    assert.match(error.details, /lacks permission "create"/);
  });

  test('a delegate that does not send its chain (a plain grpc-js client) is refused before the handler', async () => {
    const { port } = await startServer();
    const identity = identityOf(alice);
    const client = mtlsClient(port, ca.rootPem, identity);
    cleanup.closeLater(() => client.close());
    const error = await failureOf(call(client));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    assert.match(error.details, /send the chain's CA certificates in sigil-chain-bin/);
  });

  test("delegates: 'refuse' refuses every delegated leaf, and deployment identities still pass", async () => {
    const { port } = await startServer({ delegates: 'refuse' });
    const error = await failureOf(call(sigilClient(port, identityOf(alice))));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    assert.match(error.details, /admits no delegates/);
    assert.equal((await call(sigilClient(port, ca.issueClient()))).issuedBy, 'deployment');
  });

  test('revoking a link of the chain closes the live connection and refuses new calls', async () => {
    const revocation = new RevocationSet();
    const { port } = await startServer({ revocation });
    const client = sigilClient(port, identityOf(carol));
    await call(client);
    const stream = client.makeServerStreamRequest(
      echoService.ticks.path,
      (value: Buffer) => value,
      (value: Buffer) => value,
      Buffer.from('go'),
    );
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    await new Promise((resolve) => stream.once('data', resolve));
    revocation.revoke(`fp:${alice.fingerprint}`);
    const error = await ended;
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    const again = await failureOf(call(sigilClient(port, identityOf(carol))));
    assert.equal(again.code, grpc.status.PERMISSION_DENIED);
    assert.match(again.details, /revoked/);
  });

  test('a CA certificate presented as a client is refused at the handshake', async () => {
    const { port, failures } = await startServer();
    const asClient = { certificateChain: pemOf(...alice.chain), privateKey: privateKeyToPem(alice.key) };
    const error = await failureOf(call(sigilClient(port, asClient)));
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    await eventually(
      'the handshake failure',
      () => failures.includes('CA_CERTIFICATE_AS_CLIENT') || undefined,
    );
  });
});

describe("delegate-minted server certificates and sigil's channelCredentials", () => {
  async function serverWith(pair: { certificateChain: string; privateKey: string }) {
    const { MtlsServer } = await import('../../src/transport/mtls-server.ts');
    const server = new MtlsServer({
      material: new ManualMaterialSource({ ...pair, trustBundle: ca.rootPem }),
    });
    server.addService(echoService, whoami);
    const port = await server.listen();
    cleanup.closeLater(() => server.close(100));
    return port;
  }

  function clientFor(port: number, verify?: ReturnType<typeof verifySpiffeId>): grpc.Client {
    const material: TlsMaterial = { ...ca.issueClient(), trustBundle: ca.rootPem };
    const client = new grpc.Client(
      `127.0.0.1:${port}`,
      channelCredentials({
        material: new ManualMaterialSource(material),
        serverName: '127.0.0.1',
        ...(verify ? { verify } : {}),
      }),
    );
    cleanup.closeLater(() => client.close());
    return client;
  }

  test('an IP-SAN server certificate a delegate minted without an IP grant is refused', async () => {
    const pair = forged(alice, `spiffe://alice.d.${TRUST_DOMAIN}/api`, {
      profile: 'server',
      extraSans: [ipAddress('127.0.0.1')],
    });
    const port = await serverWith(pair);
    const error = await failureOf(call(clientFor(port)));
    assert.equal(error.code, grpc.status.UNAVAILABLE);
  });

  test('with 127.0.0.1/32 granted, the same certificate is accepted (the refusal above came from the grant)', async () => {
    const granted = delegate('grantee', ['info', 'issue'], undefined, { ipRanges: ['127.0.0.1/32'] });
    const pair = forged(granted, `spiffe://grantee.d.${TRUST_DOMAIN}/api`, {
      profile: 'server',
      extraSans: [ipAddress('127.0.0.1')],
    });
    const port = await serverWith(pair);
    const seen = await call(clientFor(port, verifySpiffeId(`spiffe://grantee.d.${TRUST_DOMAIN}/api`)));
    assert.equal(seen.issuedBy, 'deployment');
  });

  test('a DNS-SAN server certificate outside the DNS grant is refused', async () => {
    const granted = delegate('dnsgrantee', ['info', 'issue'], undefined, {
      dnsNames: ['svc.example.org'],
      ipRanges: ['127.0.0.1/32'],
    });
    const pair = forged(granted, `spiffe://dnsgrantee.d.${TRUST_DOMAIN}/api`, {
      profile: 'server',
      extraSans: [ipAddress('127.0.0.1'), dnsName('bank.example.com')],
    });
    const port = await serverWith(pair);
    const error = await failureOf(call(clientFor(port)));
    assert.equal(error.code, grpc.status.UNAVAILABLE);
  });
});
