// Security issue #9 from the client's side: a delegate can sign a server
// certificate for any name its delegation permits, so clients must
// authenticate the control plane as the control plane, not as "something the
// root vouches for". A real server (in process) hands out delegations through
// the real `sigil delegate`; the attacker mints server certificates under them
// with the openssl CLI and serves them.
//
//   4. a fake control plane (TLS 1.3 + HTTP/2, recording every request)
//      presenting spiffe://<td>/replica/fake, or spiffe://alice.d.<td>/replica/fake,
//      signed by alice's delegation, with the DNS name and IP address alice was
//      granted so that OpenSSL's name constraints pass where they can: `sigil
//      enrol` and the operator CLI refuse it (exit 1, one line naming why), and
//      it sees no Register, no Rejoin and no token secret. The same token and
//      commands work against the real server.
//   5. a server certificate with IP 127.0.0.1 minted by a delegate that was not
//      granted it: sigil's channelCredentials (trusting bundle.pem) refuse it;
//      granted --ip 127.0.0.1/32, and with the client accepting its SPIFFE ID,
//      it is accepted.
//   6. a CN-only server certificate (CN=www.example.com, no SANs) minted by a
//      delegate: openssl verify refuses it (name constraints apply to the CN)
//      and so do sigil's channelCredentials for www.example.com; under a CA
//      without constraints the same certificate is accepted (control).
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { EnrolmentClient, EnrolmentService } from '../../src/gen/sigil/v1/sigil.ts';
import { createRootCertificate } from '../../src/pki/issuer.ts';
import { readPrivateKey } from '../../src/pki/keys.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { encodeJoinToken, parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { joinReplica } from '../../src/server/replica-join.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import {
  type ServerVerification,
  verifyAll,
  verifyServerName,
  verifySpiffeId,
} from '../../src/transport/server-verification.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { enrol, startTestServer, type TestServer } from '../agent/server-fixture.ts';
import {
  bundleOf,
  type FakeControlPlane,
  type Forged,
  Forger,
  identityIn,
  LOCAL_GRANTS,
  openssl,
  startFakeControlPlane,
  verifyForged,
} from '../server/forgery-fixtures.ts';
import { adminJoinToken } from '../server/helpers.ts';
import { type RunResult, sigil } from '../support/cli.ts';
import { assertRefused } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { delegateArgs, derOf, jsonOf, NEW_P256_KEY, pemCertificates } from './pki-helpers.ts';

interface StatusJson {
  server: string;
  spiffeId?: string;
  trustDomain?: string;
}

/** Every way the token's secret could travel: raw, hex, base64 and base64url. */
function secretForms(secret: Buffer): Buffer[] {
  return [
    secret,
    ...['hex', 'base64', 'base64url'].map((e) => Buffer.from(secret.toString(e as BufferEncoding))),
  ];
}

/** What the fake control plane received: nothing but the unauthenticated step-1 GetTrustBundle, and no secret. */
function assertNothingSent(fake: FakeControlPlane, secret: Buffer | null, allowBundleFetch: boolean): void {
  for (const request of fake.requests) {
    assert.doesNotMatch(
      request.path,
      /Register|Rejoin|JoinReplica/,
      `the fake control plane received ${request.path}`,
    );
    if (secret) {
      const headers = Buffer.from(JSON.stringify(request.headers));
      for (const form of secretForms(secret)) {
        assert.equal(
          request.body.includes(form),
          false,
          `the token secret reached the fake (${request.path} body)`,
        );
        assert.equal(
          headers.includes(form),
          false,
          `the token secret reached the fake (${request.path} headers)`,
        );
      }
    }
  }
  if (allowBundleFetch) {
    // Step 1 of enrolment: one empty GetTrustBundle over an unverified session, to find the pinned root.
    for (const request of fake.requests) {
      assert.equal(request.path, '/sigil.v1.Enrolment/GetTrustBundle');
      assert.deepEqual([...request.body], [0, 0, 0, 0, 0], 'step 1 sends the empty request only');
    }
  } else {
    assert.deepEqual(
      fake.requests.map((r) => r.path),
      [],
      'the operator CLI sent a request to the fake control plane',
    );
  }
}

/** A grpc-js server presenting `identity` over TLS that answers Enrolment.GetTrustBundle. */
async function startTlsServer(identity: { chain: string; key: string }) {
  const server = new grpc.Server();
  server.addService(EnrolmentService, {
    getTrustBundle: (
      _call: unknown,
      callback: (
        error: null,
        response: {
          trustDomain: string;
          roots: [];
          intermediates: [];
          rootFingerprint: string;
          policyOid: string;
        },
      ) => void,
    ) =>
      callback(null, {
        trustDomain: 'answered',
        roots: [],
        intermediates: [],
        rootFingerprint: '',
        policyOid: '',
      }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(null, [
        { cert_chain: Buffer.from(identity.chain), private_key: Buffer.from(identity.key) },
      ]),
      (error, bound) => (error ? reject(error) : resolve(bound)),
    ),
  );
  return { port, close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())) };
}

/** One GetTrustBundle through sigil's channelCredentials: 'accepted', or the gRPC error. */
async function callThrough(
  port: number,
  client: { chain: string; key: string; bundle: string },
  options: { verify?: ServerVerification; serverName?: string } = {},
): Promise<{ ok: true } | { ok: false; code: grpc.status; details: string }> {
  const credentials = channelCredentials({
    material: new StaticMaterialSource({
      certificateChain: client.chain,
      privateKey: client.key,
      trustBundle: client.bundle,
    }),
    ...options,
  });
  const enrolment = new EnrolmentClient(`127.0.0.1:${port}`, credentials, {
    'grpc.use_local_subchannel_pool': 1,
  });
  try {
    return await new Promise((resolve) => {
      enrolment.getTrustBundle(
        {},
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (error, response) => {
          if (error) resolve({ ok: false, code: error.code, details: error.details });
          else {
            assert.equal(response.trustDomain, 'answered');
            resolve({ ok: true });
          }
        },
      );
    });
  } finally {
    enrolment.close();
  }
}

// The real control plane, in this process (its clean-up hook belongs to the file, so it starts here).
const work = tempDir('sigil-cp-auth-');
const server: TestServer = await startTestServer(join(work, 'data'));

describe('clients authenticate the control plane (a delegate-signed fake cannot pose as it)', {
  concurrency: 3,
}, () => {
  const dirs = { alice: join(work, 'alice'), bob: join(work, 'bob') };
  let td: string;
  let bundlePem: string;
  let alice: Forger;
  let bob: Forger;
  const fakes: FakeControlPlane[] = [];
  /** A number for each test's own names (node directories, replica IDs, token names). */
  let runs = 0;
  const servers: { close(): Promise<void> }[] = [];
  let aliceClient: { chain: string; key: string; bundle: string };
  /** `sigil status` as the admin and as alice against the real server. */
  let realStatuses: RunResult[];

  before(async () => {
    td = server.running.info.trustDomain;
    const [a, b] = await Promise.all([
      server.cli(delegateArgs('alice', 'info,issue', dirs.alice, ...LOCAL_GRANTS, '--json')),
      server.cli(delegateArgs('bob', 'info,issue', dirs.bob, '--json')),
    ]);
    jsonOf(a, 'delegate --to alice');
    jsonOf(b, 'delegate --to bob');
    bundlePem = readFileSync(join(dirs.alice, 'bundle.pem'), 'utf8');
    alice = Forger.fromDelegationDirectory(join(work, 'forge-alice'), dirs.alice);
    bob = Forger.fromDelegationDirectory(join(work, 'forge-bob'), dirs.bob);
    realStatuses = await Promise.all([
      sigil(['status', '--data', server.dataDir, '--json']),
      sigil(['status', '--identity', dirs.alice, '--json']),
      sigil([
        'status',
        '--data',
        server.dataDir,
        '--ca-fingerprint',
        server.running.info.rootFingerprint,
        '--server',
        server.running.address,
        '--json',
      ]),
    ]);
    aliceClient = { ...identityIn(dirs.alice), bundle: bundlePem };
  });

  after(async () => {
    for (const fake of fakes) await fake.close();
    for (const s of servers) await s.close();
    await server.close();
  });

  /** What the fake control plane presents: a certificate chain (leaf first) and its key. */
  interface Presented {
    readonly leaf: Forged;
    readonly chain: string;
  }

  async function fakeWith(presented: Presented): Promise<FakeControlPlane> {
    const fake = await startFakeControlPlane({
      chain: presented.chain,
      key: presented.leaf.key,
      bundle: bundleOf(bundlePem, td),
    });
    fakes.push(fake);
    return fake;
  }

  /** A join token from the real admin (CreateToken through the real server), and its parts. */
  async function realToken(name: string, replica: boolean) {
    const text = await adminJoinToken(server.running.address, server.dataDir, name, replica);
    return { text, parsed: parseJoinToken(text) };
  }

  const inHostLeaf = () =>
    alice.mint({
      commonName: 'fake',
      uris: [`spiffe://alice.d.${td}/replica/fake`],
      dns: ['localhost'],
      ips: ['127.0.0.1'],
    });

  const variants: Record<
    string,
    {
      present(): Promise<Presented>;
      opensslAccepts: boolean;
      enrolRefusal: RegExp;
      operatorRefusal: RegExp;
    }
  > = {
    // Outside alice's host: OpenSSL's URI name constraint refuses it on the client.
    'spiffe://<td>/replica/fake': {
      present: async () => {
        const leaf = await alice.mint({
          commonName: 'fake',
          uris: [`spiffe://${td}/replica/fake`],
          dns: ['localhost'],
          ips: ['127.0.0.1'],
        });
        return { leaf, chain: leaf.chain };
      },
      opensslAccepts: false,
      enrolRefusal: /permitted subtree violation/,
      operatorRefusal: /permitted subtree violation/,
    },
    // Inside it: OpenSSL accepts the chain; only sigil's control-plane check can refuse it.
    'spiffe://alice.d.<td>/replica/fake': {
      present: async () => {
        const leaf = await inHostLeaf();
        return { leaf, chain: leaf.chain };
      },
      opensslAccepts: true,
      enrolRefusal:
        /server identity rejected: spiffe:\/\/alice\.d\.[^ ]+\/replica\/fake is not a control-plane certificate/,
      operatorRefusal: /server identity rejected/,
    },
    // The same leaf, and before alice's delegation certificate in the chain an expired self-issued
    // "twin" of it: alice's subject, key and key identifier, signed by alice's own key (sigil's
    // createRootCertificate stands in for openssl here, which cannot backdate a self-signed
    // certificate). OpenSSL prefers the time-valid issuer and verifies leaf → alice → replica
    // intermediate → root; Node's issuerCertificate links take the first presented certificate
    // whose name and key identifier match, so what sigil's control-plane check walks is
    // leaf → twin, a self-issued certificate that signs the leaf. The check must still refuse it.
    'spiffe://alice.d.<td>/replica/fake behind an expired self-issued twin of alice': {
      present: async () => {
        const leaf = await inHostLeaf();
        const aliceDer = derOf(pemCertificates(readFileSync(join(dirs.alice, 'delegation.pem'), 'utf8'))[0]);
        const aliceCert = new X509Certificate(aliceDer);
        const twin = createRootCertificate({
          privateKey: readPrivateKey(readFileSync(join(dirs.alice, 'delegation.key'), 'utf8')),
          subject: { commonName: aliceCert.subject.replace(/^CN=/, '') },
          ttlMs: 3_600_000,
          now: new Date(Date.now() - 10 * 24 * 3_600_000),
        });
        const twinCert = new X509Certificate(twin.der);
        assert.equal(twinCert.subject, aliceCert.subject);
        assert.ok(new X509Certificate(leaf.cert).checkIssued(twinCert), 'the twin looks like the issuer');
        assert.ok(twinCert.validToDate.getTime() < Date.now(), 'the twin is expired');
        return {
          leaf,
          chain: leaf.cert + encodePem('CERTIFICATE', twin.der) + leaf.chain.slice(leaf.cert.length),
        };
      },
      opensslAccepts: true,
      enrolRefusal: /server identity rejected/,
      operatorRefusal: /server identity rejected/,
    },
  };

  for (const [name, variant] of Object.entries(variants)) {
    test(`4. sigil enrol against a fake control plane presenting ${name} signed by alice: exit 1, no Register, no secret; the same token enrols with the real server`, async (t) => {
      const run = ++runs;
      const presented = await variant.present();
      const checked = await verifyForged(
        { cert: presented.leaf.cert, chain: presented.chain },
        bundlePem,
        'server',
        'localhost',
      );
      assert.equal(checked.ok, variant.opensslAccepts, checked.output);
      const fake = await fakeWith(presented);

      const token = await realToken(`node ${run}`, false);
      const pointed = encodeJoinToken({ ...token.parsed, addresses: [fake.address] });
      const dir = join(work, `node-${run}`);
      const result = await enrol(pointed, dir);
      t.diagnostic(`enrol: ${result.stderr.trim()}`);
      // Whatever the outcome, the fake must have seen nothing but the step-1 bundle fetch.
      assert.ok(fake.requests.length >= 1, 'the fake control plane was never reached');
      assertNothingSent(fake, token.parsed.secret, true);
      assertRefused(result, variant.enrolRefusal);
      assert.equal(existsSync(join(dir, 'cert.pem')), false, 'enrol wrote a certificate');

      // Positive control: the same client and the same token, pointed at the real server.
      const enrolled = await enrol(token.text, dir, '--json');
      const out = jsonOf<{ state: string; server: string }>(enrolled, 'enrol with the real server');
      assert.equal(out.state, 'UP');
      assert.equal(out.server, server.running.address);
    });

    test(`4. a replica joining (what \`sigil server --join\` runs) refuses a fake control plane presenting ${name}: no JoinReplica, no secret`, async () => {
      const run = ++runs;
      const fake = await fakeWith(await variant.present());
      const token = await realToken(`replica ${run}`, true);
      const refusal = await joinReplica({
        token: encodeJoinToken({ ...token.parsed, addresses: [fake.address] }),
        replicaId: `victim-${run}`,
        timeoutMs: 5_000,
      }).then(
        () => null,
        (error: Error) => error,
      );
      // The fake must have seen nothing but the step-1 bundle fetch, whatever the outcome.
      assertNothingSent(fake, token.parsed.secret, true);
      assert.ok(refusal, 'the replica joined through the fake control plane');
      assert.match(refusal.message, variant.enrolRefusal);
      // Positive control: the same token joins through the real server (its root key is online).
      const joined = await joinReplica({
        token: token.text,
        replicaId: `victim-${run}`,
        timeoutMs: 10_000,
      });
      assert.match(new X509Certificate(joined.intermediate).subject, new RegExp(`victim-${run}`));
    });

    test(`4. the operator CLI (--data, --identity, --ca-fingerprint) refuses a fake control plane presenting ${name}: no request reaches it`, async (t) => {
      const fake = await fakeWith(await variant.present());
      const fingerprint = server.running.info.rootFingerprint;
      const who = [
        ['the admin (--data)', ['--data', server.dataDir]],
        ['alice (--identity)', ['--identity', dirs.alice]],
        // With --server and --ca-fingerprint server.json is not read: no trust domain is known.
        ['the admin (--data, --ca-fingerprint)', ['--data', server.dataDir, '--ca-fingerprint', fingerprint]],
      ] as const;
      const refusals = await Promise.all(
        who.map(([, args]) => sigil(['status', ...args, '--server', fake.address, '--json'])),
      );
      refusals.forEach((refused, index) => {
        t.diagnostic(`status as ${who[index][0]}: ${refused.stderr.trim()}`);
      });
      assertNothingSent(fake, null, false);
      for (const refused of refusals) assertRefused(refused, variant.operatorRefusal);
      // Positive control: the same commands against the real server (run once, in \`before\`).
      assert.equal(realStatuses.length, who.length);
      realStatuses.forEach((result, index) => {
        const status = jsonOf<StatusJson>(result, `sigil status as ${who[index][0]}`);
        assert.equal(status.server, server.running.address);
      });
    });
  }

  test('5. a delegate-minted server certificate for IP 127.0.0.1 is refused unless the delegation was granted the address and the client accepts its SPIFFE ID', async () => {
    // bob was granted no address: every IP is excluded from what he may certify.
    const bobs = await bob.mint({
      commonName: 'api',
      uris: [`spiffe://bob.d.${td}/api`],
      ips: ['127.0.0.1'],
    });
    const refusedByOpenssl = await verifyForged(bobs, bundlePem, 'server');
    assert.equal(refusedByOpenssl.ok, false);
    assert.match(refusedByOpenssl.output, /excluded subtree violation/);
    const bobServer = await startTlsServer(bobs);
    servers.push(bobServer);
    for (const verify of [
      undefined,
      verifyAll(verifyServerName(), verifySpiffeId(`spiffe://bob.d.${td}/api`)),
    ]) {
      const outcome = await callThrough(bobServer.port, aliceClient, verify ? { verify } : {});
      assert.equal(outcome.ok, false, 'a client accepted an IP address the delegate was not granted');
      if (!outcome.ok) assert.equal(outcome.code, grpc.status.UNAVAILABLE, outcome.details);
    }

    // alice was granted --ip 127.0.0.1/32.
    const alices = await alice.mint({
      commonName: 'api',
      uris: [`spiffe://alice.d.${td}/api`],
      ips: ['127.0.0.1'],
    });
    const aliceServer = await startTlsServer(alices);
    servers.push(aliceServer);
    const accepted = await callThrough(aliceServer.port, aliceClient, {
      verify: verifyAll(verifyServerName(), verifySpiffeId(`spiffe://alice.d.${td}/api`)),
    });
    assert.deepEqual(accepted, { ok: true });
    // A client that accepts the deployment's own workloads (spiffe://<td>/*) never matches a delegated identity.
    const deploymentOnly = await callThrough(aliceServer.port, aliceClient, {
      verify: verifyAll(verifyServerName(), verifySpiffeId(`spiffe://${td}/*`)),
    });
    assert.equal(deploymentOnly.ok, false, 'spiffe://<td>/* matched a delegated identity');
  });

  test('6. a CN-only server certificate (CN=www.example.com, no SANs) minted by a delegate is refused by openssl verify and by channelCredentials', async () => {
    const cnOnly = await alice.mint({ commonName: 'www.example.com' });
    const verdict = await verifyForged(cnOnly, bundlePem, 'server');
    assert.equal(verdict.ok, false, 'openssl verify accepted the CN-only leaf');
    assert.match(verdict.output, /permitted subtree violation/);
    const cnServer = await startTlsServer(cnOnly);
    servers.push(cnServer);
    for (const verify of [
      undefined,
      // Even Node's own rules, which fall back to the common name.
      verifyServerName(undefined, { nodeCheckServerIdentity: true }),
    ]) {
      const outcome = await callThrough(cnServer.port, aliceClient, {
        serverName: 'www.example.com',
        ...(verify ? { verify } : {}),
      });
      assert.equal(outcome.ok, false, 'channelCredentials accepted the CN-only leaf');
      if (!outcome.ok) assert.equal(outcome.code, grpc.status.UNAVAILABLE, outcome.details);
    }

    // Control: the same kind of certificate under a CA without name constraints passes OpenSSL, and
    // is accepted by a client that asked for Node's common-name rules (never by sigil's default).
    const caDir = join(work, 'plain-ca');
    mkdirSync(caDir, { recursive: true, mode: 0o700 });
    await openssl([
      'req',
      '-x509',
      ...NEW_P256_KEY,
      '-keyout',
      join(caDir, 'root.key'),
      '-out',
      join(caDir, 'root.pem'),
      '-subj',
      '/CN=plain test root',
      '-days',
      '2',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const rootPem = readFileSync(join(caDir, 'root.pem'), 'utf8');
    const plainForger = new Forger(
      join(caDir, 'forge'),
      rootPem,
      readFileSync(join(caDir, 'root.key'), 'utf8'),
    );
    const plainLeaf = await plainForger.mint({ commonName: 'www.example.com' });
    const plainVerdict = await verifyForged(plainLeaf, rootPem, 'server');
    assert.equal(plainVerdict.ok, true, plainVerdict.output);
    const plainServer = await startTlsServer(plainLeaf);
    servers.push(plainServer);
    const client = { ...aliceClient, bundle: rootPem };
    const legacy = await callThrough(plainServer.port, client, {
      serverName: 'www.example.com',
      verify: verifyServerName(undefined, { nodeCheckServerIdentity: true }),
    });
    assert.deepEqual(legacy, { ok: true });
    const strict = await callThrough(plainServer.port, client, { serverName: 'www.example.com' });
    assert.equal(strict.ok, false, "sigil's default name check used the common name");
  });
});
