// The node agent against a real server: renewal when due (the agent's
// schedule clock is injected, the server's is real), forced renewal from the
// CLI, re-join after expiry, refusal once the node is revoked, trust bundle
// following, key rotation, and the material it feeds to in-process gRPC
// clients. No test asserts on how long anything takes.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { NodeAgent, type RenewalOutcome } from '../../src/agent/agent.ts';
import { controlPlaneVerification } from '../../src/client/control-plane-channel.ts';
import { rootFingerprints } from '../../src/client/trust-bundle.ts';
import { CertificateAuthorityClient } from '../../src/gen/sigil/v1/sigil.ts';
import { readPrivateKey } from '../../src/pki/keys.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { snapshot } from '../cli/pki-helpers.ts';
import { openssl, sigil, startSigil } from '../support/cli.ts';
import { assertRefused } from '../support/refusals.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';
import { enrol, expireCertificate, nodeFile, startTestServer } from './server-fixture.ts';

const server = await startTestServer();

function certificateOf(dir: string): X509Certificate {
  return new X509Certificate(readFileSync(join(dir, 'cert.pem')));
}

function spiffeIdOf(certificate: X509Certificate): string | undefined {
  return /URI:(spiffe:\/\/[^,\s]+)/.exec(certificate.subjectAltName ?? '')?.[1];
}

async function verifies(dir: string): Promise<void> {
  const result = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'cert.pem')]);
  assert.equal(result.code, 0, result.stderr);
}

/** A clock `offsetMs` ahead of the real one: only the agent's schedule sees it. */
const ahead = (offsetMs: number) => () => new Date(Date.now() + offsetMs);

describe('sigil agent', { concurrency: 4 }, () => {
  test('--once when nothing is due renews nothing and changes no file', async () => {
    const dir = await server.enrolledNode();
    const before = snapshot(dir);
    const result = await sigil(['agent', '--dir', dir, '--once', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as {
      action: string;
      serial: string;
      previousSerial: string | null;
    };
    assert.equal(out.action, 'not-due');
    assert.equal(out.previousSerial, null);
    assert.equal(out.serial, serialOf(certificateOf(dir)));
    assert.deepEqual(snapshot(dir), before);
  });

  test('--once --force renews now: same SPIFFE ID, new serial, verified by openssl', async () => {
    const dir = await server.enrolledNode();
    const old = certificateOf(dir);
    const key = readFileSync(join(dir, 'key.pem'), 'utf8');
    const result = await sigil(['agent', '--dir', dir, '--once', '--force', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { action: string; serial: string; previousSerial: string };
    assert.equal(out.action, 'renewed');
    assert.equal(out.previousSerial, serialOf(old));
    const renewed = certificateOf(dir);
    assert.notEqual(serialOf(renewed), serialOf(old));
    assert.equal(out.serial, serialOf(renewed));
    assert.equal(spiffeIdOf(renewed), spiffeIdOf(old));
    assert.equal(readFileSync(join(dir, 'key.pem'), 'utf8'), key, 'the enrolled key is kept');
    assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
    await verifies(dir);
  });

  test('renews once its clock reaches the renewal time (about 2/3 of the lifetime)', async () => {
    const dir = await server.enrolledNode();
    const old = certificateOf(dir);
    const probe = await NodeAgent.open({ dir });
    const { renewAt, notBefore, notAfter } = probe.certificate;
    await probe.close();
    const fraction = (renewAt.getTime() - notBefore.getTime()) / (notAfter.getTime() - notBefore.getTime());
    assert.ok(fraction > 0.6 && fraction < 0.72, `renewal planned at ${fraction} of the lifetime`);

    // Without jitter (random 0.5) renewal is planned at exactly 2/3; a clock a
    // second past that makes the certificate due, well before it expires.
    const twoThirds = notBefore.getTime() + ((notAfter.getTime() - notBefore.getTime()) * 2) / 3;
    const agent = await NodeAgent.open({ dir, random: () => 0.5, now: ahead(twoThirds + 1000 - Date.now()) });
    try {
      assert.equal(agent.isDue(), true);
      const outcome = await agent.renewIfDue();
      assert.equal(outcome.kind, 'renewed');
      const renewed = certificateOf(dir);
      assert.equal(spiffeIdOf(renewed), spiffeIdOf(old));
      assert.notEqual(serialOf(renewed), serialOf(old));
      assert.equal(agent.certificate.serial, serialOf(renewed));
      await verifies(dir);
    } finally {
      await agent.close();
    }
  });

  test('a running agent renews on schedule and feeds agent.material to in-process clients', async () => {
    const dir = await server.enrolledNode();
    const old = serialOf(certificateOf(dir));
    // A clock 20 hours ahead: a 24-hour certificate is due at once.
    const agent = await NodeAgent.open({ dir, now: ahead(20 * 3_600_000) });
    const renewed = new Promise<RenewalOutcome>((resolve) => agent.once('renewed', resolve));
    const seen: string[] = [];
    agent.material.subscribe((material) => {
      seen.push(serialOf(new X509Certificate(material.certificateChain)));
    });
    agent.start();
    try {
      const outcome = await renewed;
      assert.equal(outcome.kind, 'renewed');
      assert.notEqual(outcome.certificate.serial, old);
      assert.ok(
        seen.includes(outcome.certificate.serial),
        'the material provider announced the new certificate',
      );

      // The node's identity, straight from the agent, authenticates a call.
      const client = new CertificateAuthorityClient(
        server.running.address,
        channelCredentials({
          material: agent.material,
          verify: controlPlaneVerification(rootFingerprints(agent.material.current().trustBundle)),
        }),
      );
      try {
        const bundle = await new Promise<{ trustDomain: string }>((resolve, reject) =>
          client.getTrustBundle({}, (error, response) => (error ? reject(error) : resolve(response))),
        );
        assert.equal(bundle.trustDomain, server.running.info.trustDomain);
      } finally {
        client.close();
      }
    } finally {
      await agent.close();
    }
  });

  test('after `sigil node revoke` the renewal is refused with one line naming the node', async () => {
    const dir = await server.enrolledNode();
    const { nodeId } = nodeFile(dir);
    const revoked = await server.json<{ state: string }>([
      'node',
      'revoke',
      nodeId,
      '--reason',
      'keyCompromise',
    ]);
    assert.equal(revoked.state, 'REVOKED');
    const before = snapshot(dir);
    const result = await sigil(['agent', '--dir', dir, '--once', '--force']);
    assertRefused(result, new RegExp(`node ${nodeId} has been revoked`));
    assert.deepEqual(snapshot(dir), before);
  });

  test('--once re-joins when the certificate expired while the node was down', async () => {
    const dir = await server.enrolledNode();
    const spiffeId = nodeFile(dir).spiffeId;
    expireCertificate(dir);
    const result = await sigil(['agent', '--dir', dir, '--once', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { action: string; spiffeId: string };
    assert.equal(out.action, 'rejoined');
    const fresh = certificateOf(dir);
    assert.equal(spiffeIdOf(fresh), spiffeId);
    assert.ok(new Date(fresh.validTo).getTime() > Date.now());
    await verifies(dir);
  });

  test('a revoked node cannot re-join after an expiry', async () => {
    const dir = await server.enrolledNode();
    const { nodeId } = nodeFile(dir);
    await server.json(['node', 'revoke', nodeId]);
    expireCertificate(dir);
    const result = await sigil(['agent', '--dir', dir, '--once']);
    assertRefused(result, new RegExp(`node ${nodeId} has been revoked`));
  });

  test('NodeAgent.open re-joins when its clock says the certificate has expired', async () => {
    const dir = await server.enrolledNode();
    const old = serialOf(certificateOf(dir));
    const agent = await NodeAgent.open({ dir, now: ahead(25 * 3_600_000) });
    try {
      assert.equal(agent.rejoinedFrom, old);
      assert.notEqual(agent.certificate.serial, old);
      assert.equal(serialOf(certificateOf(dir)), agent.certificate.serial);
    } finally {
      await agent.close();
    }
  });

  test('follows the trust bundle: a stale bundle.pem is replaced by the server bundle', async () => {
    const dir = await server.enrolledNode();
    const bundle = readFileSync(join(dir, 'bundle.pem'), 'utf8');
    const rootOnly =
      bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/)?.[0] ?? '';
    assert.notEqual(rootOnly, bundle, 'the bundle holds the root and the intermediate');
    writeFileSync(join(dir, 'bundle.pem'), rootOnly);
    const agent = await NodeAgent.open({ dir });
    const changes: { roots: number; intermediates: number }[] = [];
    agent.on('bundle', (change) => changes.push(change));
    try {
      assert.equal(await agent.refreshTrustBundle(), true);
      assert.equal(readFileSync(join(dir, 'bundle.pem'), 'utf8'), bundle);
      assert.equal(agent.material.current().trustBundle, bundle);
      assert.deepEqual(changes, [{ roots: 1, intermediates: 1 }]);
      assert.equal(await agent.refreshTrustBundle(), false, 'nothing changes the second time');
    } finally {
      await agent.close();
    }
  });

  test('--rotate-key replaces the key with every renewal', async () => {
    const dir = await server.enrolledNode();
    const oldKey = readFileSync(join(dir, 'key.pem'), 'utf8');
    const result = await sigil(['agent', '--dir', dir, '--once', '--force', '--rotate-key']);
    assert.equal(result.code, 0, result.stderr);
    const newKey = readFileSync(join(dir, 'key.pem'), 'utf8');
    assert.notEqual(newKey, oldKey);
    assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600);
    const certificate = certificateOf(dir);
    assert.equal(certificate.checkPrivateKey(readPrivateKey(newKey)), true);
    await verifies(dir);
  });

  test('runs until SIGTERM, logging JSON lines', async () => {
    const dir = await server.enrolledNode();
    const agent = startSigil(['agent', '--dir', dir, '--json'], { timeoutMs: 60_000 });
    await agent.printed('agent started');
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0, agent.stderr());
    const stderr = agent.stderr();
    const lines = stderr
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as { msg: string; nodeId?: string });
    assert.deepEqual(
      lines.map((line) => line.msg),
      ['agent started', 'agent stopping'],
    );
    assert.equal(lines[0].nodeId, nodeFile(dir).nodeId);
  });

  test('a directory still waiting for approval is refused with the approve command', async () => {
    const dir = join(tempDir('sigil-node-'), 'node');
    assert.equal((await enrol(await server.token(), dir)).code, 0);
    const { nodeId } = nodeFile(dir);
    assertRefused(
      await sigil(['agent', '--dir', dir, '--once']),
      new RegExp(`node ${nodeId} in \\S+ is waiting for approval \\(sigil node approve ${nodeId}\\)`),
    );
  });
});
