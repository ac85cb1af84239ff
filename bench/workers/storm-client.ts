// The load process of bench/storm.ts: many nodes, each with its own key and
// node certificate, renewing once each within a window, every node over its
// own mutual-TLS connection (a fresh handshake) as a real node's agent does.
// Failed attempts are retried as the agent retries them (renewal-schedule.ts
// retryDelay, honouring a server's retry-after hint). Two clients: `lean`
// (default; storm-renew.ts: the same bytes on the wire, a fraction of the
// client CPU) and `sigil` (grpc-js with sigil's client checks, the agent's
// own stack, which needs about 17 ms of CPU per new connection here).
//
// Setup (untimed) enrols the nodes through Enrolment.Register with an
// auto-approve join token, so every node is UP with one certificate, exactly
// what a fleet looks like before its renewals.
import { createHash, X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { retryDelay } from '../../src/agent/renewal-schedule.ts';
import { controlPlaneVerification, enrolmentCredentials } from '../../src/client/control-plane-channel.ts';
import { RpcError, unary } from '../../src/client/rpc.ts';
import { chainPem } from '../../src/client/trust-bundle.ts';
import { AdminClient, CertificateAuthorityClient, EnrolmentClient } from '../../src/gen/sigil/v1/sigil.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import type { TlsMaterial } from '../../src/pki/material.ts';
import { possessionFor, registerChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { serveLoadRequests } from './load-client.ts';
import {
  percentiles,
  type SetupReport,
  type StormReply,
  type StormReport,
  type ToStormClient,
} from './storm-protocol.ts';
import { NodeConnection, RenewFailure } from './storm-renew.ts';

const SETUP_CALL_TIMEOUT_MS = 30_000;
const MAX_MESSAGES = 8;

interface StormNode {
  readonly material: TlsMaterial;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

interface Fleet {
  readonly address: string;
  readonly trustDomain: string;
  readonly rootFingerprint: string;
  readonly nodes: StormNode[];
}

let fleet: Fleet | null = null;

interface RenewConnection {
  renew(timeoutMs: number): Promise<Buffer>;
  close(): void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `task` over `items` with at most `concurrency` at once. */
async function pool<T>(items: readonly T[], concurrency: number, task: (item: T) => Promise<void>) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) await task(items[next++]);
  });
  await Promise.all(lanes);
}

async function setup(message: Extract<ToStormClient, { type: 'setup' }>): Promise<SetupReport> {
  const started = performance.now();
  const { address, trustDomain, admin } = message;
  const target = address;
  const adminClient = new CertificateAuthorityClient(
    address,
    channelCredentials({ material: new StaticMaterialSource(admin) }),
  );
  const adminApi = new AdminClient(
    address,
    channelCredentials({ material: new StaticMaterialSource(admin) }),
  );
  const rootFingerprint = createHash('sha256')
    .update(new X509Certificate(admin.trustBundle).raw)
    .digest('hex');
  const enrolment = new EnrolmentClient(
    address,
    enrolmentCredentials({
      roots: [admin.trustBundle],
      verify: controlPlaneVerification(rootFingerprint, trustDomain),
    }),
  );
  try {
    const created = await unary(
      adminApi,
      adminApi.createToken,
      { ttlSeconds: 3600, uses: message.nodes, autoApprove: true, name: 'bench-storm', replica: false },
      { target, timeoutMs: SETUP_CALL_TIMEOUT_MS },
    );
    const token = parseJoinToken(created.token);
    const challenge = registerChallenge(token.id, token.secret);
    const nodes: StormNode[] = [];
    const indexes = Array.from({ length: message.nodes }, (_, i) => i);
    await pool(indexes, message.concurrency, async (index) => {
      const keys = generateKeyPair('p256');
      const response = await unary(
        enrolment,
        enrolment.register,
        {
          tokenId: token.id,
          tokenSecret: token.secret,
          possession: possessionFor(keys.privateKey, challenge),
          name: `storm-${index}`,
        },
        { target, timeoutMs: SETUP_CALL_TIMEOUT_MS },
      );
      if (response.state !== 'UP' || !response.certificate) {
        throw new Error(`node ${response.nodeId} is ${response.state} without a certificate`);
      }
      const material: TlsMaterial = {
        certificateChain: chainPem(response.certificate),
        privateKey: privateKeyToPem(keys.privateKey),
        trustBundle: admin.trustBundle,
      };
      nodes.push({
        material,
        notBefore: new Date(response.certificate.notBeforeUnixMs),
        notAfter: new Date(response.certificate.notAfterUnixMs),
      });
    });
    fleet = { address, trustDomain, rootFingerprint, nodes };
    return { nodes: nodes.length, ms: performance.now() - started };
  } finally {
    adminClient.close();
    adminApi.close();
    enrolment.close();
  }
}

function cpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/** When each node becomes due: uniform in [0, windowMs), ascending. */
function dueTimes(count: number, windowMs: number): number[] {
  return Array.from({ length: count }, () => Math.random() * windowMs).sort((a, b) => a - b);
}

async function storm(message: Extract<ToStormClient, { type: 'storm' }>): Promise<StormReport> {
  if (!fleet) throw new Error('setup first');
  const { address, trustDomain, rootFingerprint, nodes } = fleet;
  const verify = controlPlaneVerification(rootFingerprint, trustDomain);
  /** The node's connection: the lean client, or sigil's own (grpc-js and sigil's checks, as the agent). */
  const openConnection = (node: StormNode): RenewConnection => {
    if (message.client === 'lean') return new NodeConnection(address, node.material);
    const client = new CertificateAuthorityClient(
      address,
      channelCredentials({ material: new StaticMaterialSource(node.material), verify }),
      // Its own connection, as each node is its own process.
      { 'grpc.use_local_subchannel_pool': 1 },
    );
    return {
      renew: async (timeoutMs) =>
        (await unary(client, client.renew, {}, { target: address, timeoutMs })).certificate,
      close: () => client.close(),
    };
  };
  const attempts: Record<string, number> = {};
  const messages = new Set<string>();
  const latencies: number[] = [];
  const fromDue: number[] = [];
  let hinted = 0;
  let heldBack = 0;
  let renewed = 0;
  let inFlight = 0;
  const waiting: (() => void)[] = [];
  const cpuStart = cpuMs();
  const t0 = performance.now();
  const budgetEnd = t0 + message.budgetMs;
  let firstAttempt = Number.POSITIVE_INFINITY;
  let lastSuccess = t0;

  const count = (outcome: string) => {
    attempts[outcome] = (attempts[outcome] ?? 0) + 1;
  };

  const renewOne = async (node: StormNode, dueAt: number): Promise<void> => {
    if (inFlight >= message.maxInFlight) {
      heldBack++;
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
    inFlight++;
    const connection = openConnection(node);
    const started = performance.now();
    firstAttempt = Math.min(firstAttempt, started);
    let failures = 0;
    try {
      while (performance.now() < budgetEnd) {
        try {
          await connection.renew(message.callTimeoutMs);
          count('OK');
          const done = performance.now();
          lastSuccess = Math.max(lastSuccess, done);
          latencies.push(done - started);
          fromDue.push(done - (t0 + dueAt));
          renewed++;
          return;
        } catch (error) {
          failures++;
          const name =
            error instanceof RpcError
              ? error.statusName
              : error instanceof RenewFailure
                ? error.status
                : 'CLIENT';
          count(name);
          const hint =
            error instanceof RpcError || error instanceof RenewFailure ? error.retryAfterMs : undefined;
          if (hint !== undefined) hinted++;
          if (messages.size < MAX_MESSAGES) {
            messages.add(`${name}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
          }
          const delay = retryDelay(
            failures,
            { notBefore: node.notBefore, notAfter: node.notAfter },
            new Date(),
            Math.random,
            undefined,
            hint,
          );
          await sleep(Math.min(delay, Math.max(0, budgetEnd - performance.now())));
        }
      }
    } finally {
      connection.close();
      inFlight--;
      waiting.shift()?.();
    }
  };

  const due = dueTimes(nodes.length, message.windowMs);
  const running: Promise<void>[] = [];
  for (let i = 0; i < nodes.length; i++) {
    const wait = t0 + due[i] - performance.now();
    if (wait > 1) await sleep(wait);
    running.push(renewOne(nodes[i], due[i]));
  }
  await Promise.all(running);
  return {
    nodes: nodes.length,
    renewed,
    unfinished: nodes.length - renewed,
    ms: lastSuccess - Math.min(firstAttempt, lastSuccess),
    attempts,
    hinted,
    messages: [...messages],
    latency: percentiles(latencies),
    fromDue: percentiles(fromDue),
    heldBack,
    clientCpuMs: cpuMs() - cpuStart,
  };
}

async function handle(message: ToStormClient): Promise<StormReply> {
  switch (message.type) {
    case 'setup':
      return { type: 'sample', sample: await setup(message) };
    case 'storm':
      return { type: 'sample', sample: await storm(message) };
    case 'teardown':
      fleet = null;
      return { type: 'ok' };
  }
}

// grpc-js logs nothing unless asked; keep it that way under load.
grpc.setLogVerbosity(grpc.logVerbosity.NONE);
serveLoadRequests(handle);
