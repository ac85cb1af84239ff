// Admission control of Sign and Renew (src/services/admission.ts and
// admission-handler.ts): the queue itself, and what a caller beyond the
// limits gets over real mTLS from a real authority: RESOURCE_EXHAUSTED with a
// retry-after-ms trailer, and nothing issued, recorded or counted.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { CertificateAuthorityClient, type IssuedCertificate } from '../../src/gen/sigil/v1/sigil.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { possessionFor, signChallenge } from '../../src/protocol/challenges.ts';
import { RETRY_AFTER_TRAILER } from '../../src/protocol/retry-after.ts';
import { AdmissionControl, AdmissionRefused, type Release } from '../../src/services/admission.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { sha256 } from '../support/fingerprint.ts';
import { type AdmissionServer, startAdmissionServer } from './admission-server.ts';

describe('AdmissionControl', () => {
  test('the queue drains in arrival order, one slot at a time', async () => {
    const gate = new AdmissionControl({ maxInFlight: 1, maxQueued: 3 });
    const first = await gate.enter().granted;
    const order: number[] = [];
    const releases: Release[] = [];
    const queued = [1, 2, 3].map((n) =>
      gate.enter().granted.then((release) => {
        order.push(n);
        releases.push(release);
      }),
    );
    assert.deepEqual(gate.state, { inFlight: 1, queued: 3 });
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(order, [], 'nobody runs while the slot is taken');
    first();
    await queued[0];
    assert.deepEqual(order, [1]);
    assert.deepEqual(gate.state, { inFlight: 1, queued: 2 });
    releases[0]();
    await queued[1];
    releases[1]();
    await queued[2];
    assert.deepEqual(order, [1, 2, 3]);
    releases[2]();
    assert.deepEqual(gate.state, { inFlight: 0, queued: 0 });
  });

  test('a call beyond the queue is refused at once with a hint and takes no place', async () => {
    const gate = new AdmissionControl(
      { maxInFlight: 1, maxQueued: 1, minRetryAfterMs: 100, maxRetryAfterMs: 5000 },
      { random: () => 0.5 },
    );
    const running = await gate.enter().granted;
    const waiting = gate.enter();
    assert.throws(
      () => gate.enter(),
      (error: unknown) => {
        assert.ok(error instanceof AdmissionRefused);
        assert.equal(error.code, 'resource_exhausted');
        assert.ok(error.retryAfterMs >= 100 && error.retryAfterMs <= 5000, String(error.retryAfterMs));
        assert.match(error.message, /busy issuing certificates .*nothing was done; try again in \d+ ms/);
        return true;
      },
    );
    assert.deepEqual(gate.state, { inFlight: 1, queued: 1 }, 'the refusal changed nothing');
    running();
    (await waiting.granted)();
    assert.deepEqual(gate.state, { inFlight: 0, queued: 0 });
  });

  test('a call is not queued for longer than the bound or than its deadline leaves', async () => {
    let clock = 0;
    const gate = new AdmissionControl(
      { maxInFlight: 1, maxQueued: 100, maxQueueWaitMs: 250 },
      { now: () => clock },
    );
    // Calls have been taking 100 ms.
    for (let i = 0; i < 40; i++) {
      const release = await gate.enter().granted;
      clock += 100;
      release();
    }
    const running = await gate.enter().granted;
    assert.ok(gate.averageCallMs > 95 && gate.averageCallMs <= 100, String(gate.averageCallMs));
    assert.throws(
      () => gate.enter(150),
      AdmissionRefused,
      'a 100 ms wait and a 100 ms call do not fit in 150 ms',
    );
    const second = gate.enter(1000);
    const third = gate.enter();
    assert.deepEqual(gate.state, { inFlight: 1, queued: 2 });
    assert.throws(() => gate.enter(), AdmissionRefused, 'a 300 ms expected wait is beyond the 250 ms bound');
    assert.deepEqual(gate.state, { inFlight: 1, queued: 2 }, 'refusals take no place');
    running();
    (await second.granted)();
    (await third.granted)();
    assert.deepEqual(gate.state, { inFlight: 0, queued: 0 });
  });

  test('a cancelled call leaves the queue and the next moves up; release counts once', async () => {
    const gate = new AdmissionControl({ maxInFlight: 1, maxQueued: 2 });
    const running = await gate.enter().granted;
    const gone = gate.enter();
    const next = gate.enter();
    gone.cancel();
    await assert.rejects(gone.granted, /cancelled while it waited/);
    assert.deepEqual(gate.state, { inFlight: 1, queued: 1 });
    running();
    running(); // a second release must not free a second slot
    const release = await next.granted;
    assert.deepEqual(gate.state, { inFlight: 1, queued: 0 });
    release();
    assert.deepEqual(gate.state, { inFlight: 0, queued: 0 });
  });

  test('the hint stays within its bounds however long the backlog', async () => {
    let clock = 0;
    const gate = new AdmissionControl(
      { maxInFlight: 2, maxQueued: 1000, maxQueueWaitMs: 1e9, minRetryAfterMs: 50, maxRetryAfterMs: 2000 },
      { random: () => 0.999, now: () => clock },
    );
    assert.equal(gate.retryAfterMs(), 50, 'idle: the smallest hint');
    // Calls that take 1 s each, and a long queue: the hint is capped.
    const first = await gate.enter().granted;
    clock += 1000;
    first();
    const tickets = Array.from({ length: 500 }, () => gate.enter());
    assert.equal(gate.retryAfterMs(), 2000);
    for (const ticket of tickets) ticket.cancel();
    await Promise.allSettled(tickets.map((t) => t.granted.then((release) => release())));
  });

  test('limits that make no sense are refused', () => {
    assert.throws(() => new AdmissionControl({ maxInFlight: 0 }), RangeError);
    assert.throws(() => new AdmissionControl({ maxQueued: -1 }), RangeError);
    assert.throws(() => new AdmissionControl({ minRetryAfterMs: 10, maxRetryAfterMs: 5 }), RangeError);
    assert.throws(() => new AdmissionControl({ maxQueueWaitMs: Number.NaN }), RangeError);
  });
});

// One slot, no queue, a fixed 700 ms hint. Started at the top level: the
// fixture's server closes after the whole file (its after() hook).
const gate = new AdmissionControl(
  { maxInFlight: 1, maxQueued: 0, minRetryAfterMs: 700, maxRetryAfterMs: 700 },
  { random: () => 0 },
);
const server: AdmissionServer = await startAdmissionServer(gate);

describe('Sign and Renew beyond the admission limits, over mTLS', () => {
  const clients: CertificateAuthorityClient[] = [];
  after(() => {
    for (const client of clients) client.close();
  });

  const clientFor = (material: AdmissionServer['node']) => {
    const client = new CertificateAuthorityClient(
      server.address,
      channelCredentials({ material: new StaticMaterialSource(material) }),
    );
    clients.push(client);
    return client;
  };

  /** One raw call (no client-side retry), so the test sees the status and trailers as sent. */
  const call = <Request>(
    method: (
      request: Request,
      metadata: grpc.Metadata,
      options: Partial<grpc.CallOptions>,
      callback: (error: grpc.ServiceError | null, response: IssuedCertificate) => void,
    ) => grpc.ClientUnaryCall,
    client: CertificateAuthorityClient,
    request: Request,
  ) =>
    new Promise<{ error: grpc.ServiceError | null; response: IssuedCertificate | undefined }>((resolve) => {
      method.call(
        client,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + 15_000 },
        (error, response) => resolve({ error, response }),
      );
    });

  const renewals = () => server.control.running.registry.getSingleMetric('sigil_certificates_issued_total');
  const issuedByKind = async (kind: string) => {
    const metric = renewals();
    const values = metric ? (await metric.get()).values : [];
    return values.filter((v) => v.labels.kind === kind).reduce((sum, v) => sum + Number(v.value), 0);
  };

  test('an over-limit Renew gets RESOURCE_EXHAUSTED with retry-after-ms and changes nothing', async () => {
    const node = clientFor(server.node);
    const certificatesBefore = await server.certificates();
    const renewedBefore = await issuedByKind('renew');
    const held = await gate.enter().granted; // the one slot, taken
    try {
      const { error, response } = await call(node.renew, node, {});
      assert.equal(response, undefined);
      assert.ok(error);
      assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(error.details, /busy issuing certificates .*nothing was done; try again in 700 ms/);
      assert.deepEqual(error.metadata.get(RETRY_AFTER_TRAILER), ['700']);
    } finally {
      held();
    }
    assert.deepEqual(await server.certificates(), certificatesBefore, 'no certificate issued or revoked');
    assert.equal(await issuedByKind('renew'), renewedBefore, 'no renewal counted');
    assert.equal(
      await server.counter('sigil_issuance_admission_total', { method: 'renew', outcome: 'refused' }),
      1,
    );
    assert.equal(
      await server.counter('sigil_issuance_admission_total', { method: 'renew', outcome: 'admitted' }),
      0,
    );

    // With the slot free, the same node renews: the refusal left its issuance limits untouched.
    const { error, response } = await call(node.renew, node, {});
    assert.equal(error, null);
    assert.ok(response && response.certificate.length > 0);
    assert.equal(await issuedByKind('renew'), renewedBefore + 1);
    assert.equal((await server.certificates()).length, certificatesBefore.length + 1);
    assert.equal(
      await server.counter('sigil_issuance_admission_total', { method: 'renew', outcome: 'admitted' }),
      1,
    );
    assert.deepEqual(gate.state, { inFlight: 0, queued: 0 });
  });

  test('an over-limit Sign gets RESOURCE_EXHAUSTED with retry-after-ms and issues nothing', async () => {
    const admin = clientFor(server.admin);
    const key = generateKeyPair('p256').privateKey;
    const request = {
      key: {
        $case: 'possession' as const,
        value: possessionFor(
          key,
          signChallenge(sha256(new X509Certificate(server.admin.certificateChain).raw)),
        ),
      },
      profile: 'client',
      commonName: 'over-limit',
      dnsNames: [],
      ipAddresses: [],
      uris: [],
      ttlSeconds: 0,
    };
    const certificatesBefore = await server.certificates();
    const signedBefore = await issuedByKind('sign');
    const held = await gate.enter().granted;
    try {
      const { error } = await call(admin.sign, admin, request);
      assert.ok(error);
      assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.deepEqual(error.metadata.get(RETRY_AFTER_TRAILER), ['700']);
    } finally {
      held();
    }
    assert.deepEqual(await server.certificates(), certificatesBefore, 'no certificate issued');
    assert.equal(await issuedByKind('sign'), signedBefore);
    assert.equal(
      await server.counter('sigil_issuance_admission_total', { method: 'sign', outcome: 'refused' }),
      1,
    );
    // The same request, once admitted, is signed.
    const { error, response } = await call(admin.sign, admin, request);
    assert.equal(error, null);
    assert.ok(response && response.certificate.length > 0);
    assert.equal(await issuedByKind('sign'), signedBefore + 1);
  });
});
