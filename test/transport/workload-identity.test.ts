// Workload identities on a MtlsServer: a leaf the deployment's intermediate
// signed directly for spiffe://carol.alice.d.<td>/workload/web, without a
// policy, is a deployment identity of Carol's subtree (peerIdentity reports
// `workload`), accepted by a rule that names it and by nothing written for
// admins or nodes; a leaf Carol signs with the same name is a delegate, never
// a workload identity, whatever rule names it. Real TLS sockets on 127.0.0.1.
import assert from 'node:assert/strict';
import type { KeyObject } from 'node:crypto';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { issueDelegation } from '../../src/pki/delegation-certificates.ts';
import { Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { uriName } from '../../src/pki/names.ts';
import {
  DEFAULT_POLICY_OID,
  PERMISSIONS,
  type Permission,
  type Policy,
} from '../../src/pki/policy-extension.ts';
import { workloadSpiffeId } from '../../src/pki/workload-names.ts';
import {
  ALL_METHODS,
  sigilAuthorizationInterceptor,
  sigilAuthorizationRules,
} from '../../src/services/authorization-rules.ts';
import {
  AuthorizationPolicy,
  type AuthorizationRules,
  authorizationInterceptor,
} from '../../src/transport/authorization.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { MtlsServer } from '../../src/transport/mtls-server.ts';
import { identityFromChain, type PeerCall, peerIdentity } from '../../src/transport/peer-identity.ts';
import { workloadPeerOf } from '../../src/transport/workload-peers.ts';
import { failureOf } from '../support/failure.ts';
import { pemOf } from '../support/pem.ts';
import { bytes, rawMethod } from '../support/raw-methods.ts';
import { closedAfterTests, echoService, ManualMaterialSource, TestCa, TRUST_DOMAIN } from './fixtures.ts';

const hour = 3_600_000;
const ca = new TestCa('sigil workload identity test CA', { intermediate: true });
const cleanup = closedAfterTests();
const deploymentIssuer = Issuer.fromCertificate(ca.signerDer, ca.signerKey);
const WEB = workloadSpiffeId(TRUST_DOMAIN, ['alice', 'carol'], 'web');
const CAROL = `spiffe://carol.alice.d.${TRUST_DOMAIN}`;

interface Delegation {
  readonly der: Buffer;
  readonly key: KeyObject;
  /** This delegation, then its chain up to (not including) the root. */
  readonly chain: readonly Buffer[];
  readonly policy: Policy;
}

function policy(permissions: readonly Permission[]): Policy {
  return {
    version: 1,
    permissions: new Set(permissions),
    limits: { workloads: 2, cpus: [0], memoryMiB: 1024, blockMiB: 0, bridges: [], issuancePerHour: 100 },
  };
}

function delegate(name: string, permissions: readonly Permission[], parent?: Delegation): Delegation {
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
  });
  return {
    der: issued.der,
    key: keys.privateKey,
    chain: [issued.der, ...(parent ? parent.chain : [ca.signerDer])],
    policy: issued.policy,
  };
}

const alice = delegate('alice', ['info', 'create', 'delegate', 'issue']);
const carol = delegate('carol', ['info', 'create', 'issue'], alice);

interface Identity {
  readonly certificateChain: string;
  readonly privateKey: string;
  readonly der: Buffer;
}

/** A leaf for `uri` signed by `signer`, presented with `above` (its issuer first). */
function leafFor(uri: string, signer: Issuer, above: readonly Buffer[]): Identity {
  const keys = generateKeyPair('p256');
  const leaf = signer.issue({
    publicKey: keys.publicKey,
    profile: 'server+client',
    subject: { commonName: 'workload web' },
    sans: [uriName(uri)],
    ttlMs: hour,
  });
  return {
    certificateChain: pemOf(leaf.der, ...above),
    privateKey: privateKeyToPem(keys.privateKey),
    der: leaf.der,
  };
}

/** What the control plane would issue: the deployment's intermediate signs web's identity directly. */
const workloadIdentity = leafFor(WEB, deploymentIssuer, [ca.signerDer]);
/** Carol signs a leaf with the very same name: a delegate's leaf, never a workload identity. */
const carolsForgery = leafFor(WEB, Issuer.fromCertificate(carol.der, carol.key), carol.chain);

interface Seen {
  readonly spiffeId: string | null;
  readonly issuedBy: string;
  readonly delegate: string | null;
  readonly workload: { subtree: string[]; name: string; owner: string; spiffeId: string } | null;
}

const whoami: grpc.UntypedServiceImplementation = {
  unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    const identity = peerIdentity(call as unknown as PeerCall);
    const seen: Seen = {
      spiffeId: identity.spiffeId,
      issuedBy: identity.issuedBy,
      delegate: identity.delegate?.spiffeId ?? null,
      workload: identity.workload && { ...identity.workload, subtree: [...identity.workload.subtree] },
    };
    callback(null, Buffer.from(JSON.stringify(seen)));
  },
  ticks: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.end(),
};

const serverPair = ca.issueServer();

async function startServer(options: { rules?: AuthorizationRules; interceptor?: grpc.ServerInterceptor }) {
  const server = new MtlsServer({
    material: new ManualMaterialSource(ca.material(serverPair)),
    interceptors: options.interceptor
      ? [options.interceptor]
      : options.rules
        ? [authorizationInterceptor(options.rules)]
        : [],
  });
  return server;
}

async function listen(server: MtlsServer): Promise<number> {
  const port = await server.listen();
  cleanup.closeLater(() => server.close(100));
  return port;
}

/** A client through sigil's channelCredentials (it sends a delegate's chain with every call). */
function client(port: number, identity: { certificateChain: string; privateKey: string }): grpc.Client {
  const material: TlsMaterial = { ...identity, trustBundle: ca.rootPem };
  const made = new grpc.Client(
    `127.0.0.1:${port}`,
    channelCredentials({ material: new ManualMaterialSource(material), serverName: 'localhost' }),
  );
  cleanup.closeLater(() => made.close());
  return made;
}

function unary(made: grpc.Client, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    made.makeUnaryRequest(
      path,
      bytes,
      bytes,
      Buffer.from('who'),
      { deadline: Date.now() + 10_000 },
      (error, response) => (error || !response ? reject(error) : resolve(response)),
    );
  });
}

const ask = async (made: grpc.Client): Promise<Seen> =>
  JSON.parse((await unary(made, echoService.unary.path)).toString()) as Seen;

describe('workload identities on a MtlsServer', () => {
  test('a workload identity is accepted by a rule naming it and reported with its owner and name', async () => {
    const server = await startServer({ rules: { '/sigil.test.Echo/Unary': { spiffeIds: [WEB] } } });
    server.addService(echoService, whoami);
    const port = await listen(server);
    assert.deepEqual(await ask(client(port, workloadIdentity)), {
      spiffeId: WEB,
      issuedBy: 'deployment',
      delegate: null,
      workload: { subtree: ['alice', 'carol'], name: 'web', owner: CAROL, spiffeId: WEB },
    });
  });

  test("a pattern over Carol's workloads matches it; a delegates rule for Carol's subtree does not", async () => {
    const server = await startServer({
      rules: {
        '/sigil.test.Echo/Unary': { spiffePatterns: [`${CAROL}/workload/*`] },
        '/sigil.test.Echo/Ticks': { delegates: [CAROL] },
      },
    });
    server.addService(echoService, whoami);
    const port = await listen(server);
    const made = client(port, workloadIdentity);
    assert.equal((await ask(made)).workload?.name, 'web');
    const error = await failureOf(unary(made, echoService.ticks.path));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    assert.match(error.details, /a workload of spiffe:\/\/carol\.alice\.d\.test\.sigil/);
  });

  test('refused: a leaf Carol signs with the same SPIFFE ID is a delegate, not the workload identity', async () => {
    const server = await startServer({
      rules: {
        '/sigil.test.Echo/Unary': { spiffeIds: [WEB] },
        '/sigil.test.Echo/Ticks': { delegates: [CAROL] },
      },
    });
    server.addService(echoService, {
      ...whoami,
      // Ticks answers like Unary: what the server made of the caller.
      ticks: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const identity = peerIdentity(call as unknown as PeerCall);
        call.write(Buffer.from(JSON.stringify({ issuedBy: identity.issuedBy, workload: identity.workload })));
        call.end();
      },
    });
    const port = await listen(server);
    const made = client(port, carolsForgery);
    const error = await failureOf(unary(made, echoService.unary.path));
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
    assert.match(
      error.details,
      /delegate spiffe:\/\/carol\.alice\.d\.test\.sigil\/workload\/web is not in allowed SPIFFE IDs/,
    );
    // Admitted through Carol's rule, it is Carol's delegate and no workload identity.
    const seen = await new Promise<Buffer>((resolve, reject) => {
      const stream = made.makeServerStreamRequest(echoService.ticks.path, bytes, bytes, Buffer.from('x'));
      stream.once('data', resolve);
      stream.once('error', reject);
    });
    assert.deepEqual(JSON.parse(seen.toString()), { issuedBy: 'delegated', workload: null });
    // The same bytes read as a deployment identity would be one: only the signature tells them apart.
    assert.equal(
      workloadPeerOf(carolsForgery.der, { trustDomain: TRUST_DOMAIN, policyOid: DEFAULT_POLICY_OID })?.name,
      'web',
    );
    assert.equal(identityFromChain([carolsForgery.der], 'delegated', null, null).workload, null);
  });

  test('refused: a workload identity calls no admin or node method of the control plane', async () => {
    const paths = [
      '/sigil.v1.Admin/ListNodes',
      '/sigil.v1.CertificateAuthority/Sign',
      '/sigil.v1.CertificateAuthority/Renew',
      '/sigil.v1.WorkloadPlacement/ReserveWorkload',
      '/sigil.v1.WorkloadPlacement/IssueWorkloadIdentity',
    ];
    const server = await startServer({ interceptor: sigilAuthorizationInterceptor(TRUST_DOMAIN) });
    const handlers: grpc.UntypedServiceImplementation = {};
    const service: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
    for (const path of paths) {
      service[path] = rawMethod(path);
      handlers[path] = (_call: unknown, callback: grpc.sendUnaryData<Buffer>) =>
        callback(null, Buffer.from('ran'));
    }
    server.addService(service, handlers);
    const port = await listen(server);
    const made = client(port, workloadIdentity);
    for (const path of paths) {
      const error = await failureOf(unary(made, path));
      assert.equal(error.code, grpc.status.PERMISSION_DENIED, path);
      assert.match(error.details, /spiffe:\/\/carol\.alice\.d\.test\.sigil\/workload\/web \(a workload of/);
    }
    // Control: a node reaches its own method through the same table.
    const node = client(port, ca.issueClient({ name: 'node/n1' }));
    assert.equal((await unary(node, '/sigil.v1.WorkloadPlacement/IssueWorkloadIdentity')).toString(), 'ran');

    // And the whole table: every method of sigil's API refuses it.
    const policyTable = new AuthorizationPolicy(sigilAuthorizationRules(TRUST_DOMAIN));
    const identity = identityFromChain(
      [workloadIdentity.der],
      'deployment',
      null,
      workloadPeerOf(workloadIdentity.der, { trustDomain: TRUST_DOMAIN, policyOid: DEFAULT_POLICY_OID }),
    );
    assert.equal(identity.workload?.owner, CAROL);
    for (const method of ALL_METHODS) {
      assert.equal(policyTable.decide(method, identity).allowed, false, method);
    }
  });
});
