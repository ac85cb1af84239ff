// A node's renewal against a server that sheds load: the refusal's
// retry-after hint is honoured (the call is made again after the hint, with
// jitter) and the renewal then succeeds; hints are kept inside the
// certificate's remaining life and inside the call's deadline; a malformed
// hint is ignored and the ordinary backoff applies.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NodeAgent } from '../../src/agent/agent.ts';
import { HINT_JITTER, renewalPolicy, retryDelay } from '../../src/agent/renewal-schedule.ts';
import { hintedDelay, MIN_RETRY_WAIT_MS, RpcError, unary } from '../../src/client/rpc.ts';
import { CertificateAuthorityClient } from '../../src/gen/sigil/v1/sigil.ts';
import { MAX_RETRY_AFTER_MS, parseRetryAfter } from '../../src/protocol/retry-after.ts';
import { AdmissionControl } from '../../src/services/admission.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { startAdmissionServer } from '../services/admission-server.ts';

const HOUR = 3_600_000;
const day = { notBefore: new Date(0), notAfter: new Date(24 * HOUR) };
const at = (ms: number) => new Date(ms);

describe('retryDelay with a retry-after hint', () => {
  test('the hint replaces the backoff, plus up to HINT_JITTER of it', () => {
    const now = at(16 * HOUR);
    assert.equal(
      retryDelay(1, day, now, () => 0, undefined, 4000),
      4000,
    );
    assert.equal(
      retryDelay(1, day, now, () => 0.999999, undefined, 4000),
      Math.floor(4000 * (1 + HINT_JITTER * 0.999999)),
    );
    // After many failures the backoff would be minutes; the hint is what counts.
    assert.equal(
      retryDelay(12, day, now, () => 0, undefined, 1500),
      1500,
    );
    // A hint beyond maxRetryMs is still followed while the certificate has time.
    const policy = renewalPolicy({ maxRetryMs: 10_000 });
    assert.equal(
      retryDelay(1, day, now, () => 0, policy, 60_000),
      60_000,
    );
  });

  test('a hint longer than the remaining life is capped inside it', () => {
    const tenMinutesLeft = at(24 * HOUR - 10 * 60_000);
    const delay = retryDelay(1, day, tenMinutesLeft, () => 0.5, undefined, 2 * HOUR);
    assert.equal(delay, 5 * 60_000, 'at most half the time left');
    assert.ok(tenMinutesLeft.getTime() + delay < day.notAfter.getTime());
    // With less than minDelayMs left, the retry lands at expiry (then the agent re-joins).
    assert.equal(
      retryDelay(1, day, at(24 * HOUR - 50), () => 0, undefined, HOUR),
      50,
    );
  });

  test('a malformed hint is ignored: the ordinary backoff applies', () => {
    const now = at(16 * HOUR);
    const backoff = retryDelay(3, day, now, () => 0);
    for (const hint of [Number.NaN, -1, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      assert.equal(
        retryDelay(3, day, now, () => 0, undefined, hint),
        backoff,
        String(hint),
      );
    }
    assert.equal(
      retryDelay(3, day, now, () => 0, undefined, undefined),
      backoff,
    );
  });
});

describe('the retry-after-ms trailer', () => {
  test('only a plain count of milliseconds is believed', () => {
    assert.equal(parseRetryAfter(['0']), 0);
    assert.equal(parseRetryAfter(['1500']), 1500);
    assert.equal(parseRetryAfter([String(MAX_RETRY_AFTER_MS)]), MAX_RETRY_AFTER_MS);
    for (const values of [
      [],
      ['1', '2'],
      [''],
      ['-5'],
      ['+5'],
      ['1.5'],
      ['1e3'],
      ['15 ms'],
      [' 15'],
      ['0x10'],
      ['abc'],
      ['999999999'],
      [String(MAX_RETRY_AFTER_MS + 1)],
      [Buffer.from('100')],
    ]) {
      assert.equal(parseRetryAfter(values), undefined, JSON.stringify(values));
    }
  });

  test('the wait after a hint is the hint plus jitter, never a busy loop', () => {
    assert.equal(
      hintedDelay(1000, () => 0),
      1000,
    );
    assert.equal(
      hintedDelay(1000, () => 0.5),
      1100,
    );
    assert.equal(
      hintedDelay(0, () => 0),
      MIN_RETRY_WAIT_MS,
    );
  });
});

// One slot, no queue, a fixed 300 ms hint; the fixture closes after the file.
const HINT_MS = 300;
const gate = new AdmissionControl(
  { maxInFlight: 1, maxQueued: 0, minRetryAfterMs: HINT_MS, maxRetryAfterMs: HINT_MS },
  { random: () => 0 },
);
const server = await startAdmissionServer(gate);

const refusals = () =>
  server.counter('sigil_issuance_admission_total', { method: 'renew', outcome: 'refused' });

async function until(condition: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error('condition not reached in 1000 polls');
}

describe('renewal against a server that sheds load', () => {
  test("the agent's renewal retries after the hint and succeeds", async () => {
    const agent = await NodeAgent.open({ dir: server.nodeDir });
    const failures: unknown[] = [];
    agent.on('failure', (failure) => failures.push(failure));
    const previous = agent.certificate.serial;
    const refusedBefore = await refusals();
    const held = await gate.enter().granted;
    let renewal: ReturnType<NodeAgent['renewIfDue']>;
    try {
      renewal = agent.renewIfDue({ force: true });
      await until(async () => (await refusals()) > refusedBefore);
    } finally {
      held();
    }
    const outcome = await renewal;
    try {
      assert.equal(outcome.kind, 'renewed');
      assert.notEqual(outcome.certificate.serial, previous);
      // Exactly one refusal: the agent waited for the hint instead of hammering the full server.
      assert.equal((await refusals()) - refusedBefore, 1);
      assert.deepEqual(failures, [], 'a refusal honoured within the call is not a failed renewal');
      assert.equal(
        await server.counter('sigil_issuance_admission_total', { method: 'renew', outcome: 'admitted' }),
        1,
      );
    } finally {
      await agent.close();
    }
  });

  test('a hint that does not fit in the call deadline is returned, not waited for', async () => {
    const client = new CertificateAuthorityClient(
      server.address,
      channelCredentials({ material: new StaticMaterialSource(server.node) }),
    );
    const held = await gate.enter().granted;
    const refusedBefore = await refusals();
    try {
      await assert.rejects(
        unary(client, client.renew, {}, { target: server.address, timeoutMs: 2 * HINT_MS - 1 }),
        (error: unknown) => {
          assert.ok(error instanceof RpcError);
          assert.equal(error.statusName, 'RESOURCE_EXHAUSTED');
          assert.equal(error.code, 'resource_exhausted');
          assert.equal(error.retryAfterMs, HINT_MS);
          assert.match(error.message, /busy issuing certificates/);
          return true;
        },
      );
      assert.equal((await refusals()) - refusedBefore, 1, 'one attempt only');
    } finally {
      held();
      client.close();
    }
  });
});
