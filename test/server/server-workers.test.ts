// `sigil server --workers N`: the real command with worker processes sharing
// one port (SO_REUSEPORT) and one SQLite store. Which process serves a
// connection is the kernel's choice: each test opens connections (one per
// channel) until it has seen the processes it needs, learning which one
// answered from the `worker` field of the log line a probe call leaves (none:
// the primary). Bounded: every process is seen within a few connections
// unless the kernel stops spreading them, which fails the test.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, type TestContext, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { possessionFor, registerChallenge, signChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import { type RunningProcess, SIGIL_BIN, start } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { sha256 } from '../support/fingerprint.ts';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { tempDir } from '../support/temp-dir.ts';
import {
  adminIdentity,
  anonymousCredentials,
  type Clients,
  call,
  clients,
  credentialsFor,
  type Identity,
  identityOf,
  serverFlags,
  spawnServer,
  waitForServer,
} from './helpers.ts';

/** Connections a test opens at most to see the processes it needs. */
const MAX_CONNECTIONS = 60;
/** A channel of its own: one connection, not shared with other channels of the same target. */
const OWN_CONNECTION: grpc.ChannelOptions = { 'grpc.use_local_subchannel_pool': 1 };

type LogLine = Record<string, unknown>;

function logLines(server: RunningProcess): LogLine[] {
  return server
    .stderr()
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as LogLine];
      } catch {
        return [];
      }
    });
}

/** Whether the process with this ID is gone (or a zombie about to be reaped). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

interface WorkersServer {
  readonly server: RunningProcess;
  readonly dataDir: string;
  readonly address: string;
  /** The HTTP side (/metrics), served by the primary. */
  readonly httpUrl: string;
  /** The primary's process ID. */
  readonly pid: number;
  /** Worker index -> process ID, as the primary logged them serving. */
  workerPids(): Map<number, number>;
}

async function startWorkers(
  t: { after(fn: () => void | Promise<void>): void },
  workers: number,
  extra: readonly string[] = [],
): Promise<WorkersServer> {
  const dataDir = join(tempDir('sigil-workers-'), 'data');
  const server = spawnServer([...serverFlags(dataDir, 'debug'), '--workers', String(workers), ...extra]);
  const pids = (): Map<number, number> => {
    const found = new Map<number, number>();
    for (const line of logLines(server)) {
      // The primary's line (its workers' own carry a port too).
      if (line.msg === 'worker serving' && line.port === undefined)
        found.set(line.worker as number, line.pid as number);
    }
    return found;
  };
  t.after(async () => {
    const workerPids = [...pids().values()];
    server.child.kill('SIGKILL');
    await server.exited;
    // The workers leave once their channel to the primary closes: none may be left behind.
    await eventually('every worker gone', () => workerPids.every(gone), 10_000);
  });
  const info = await waitForServer(server, dataDir);
  // The primary logged each worker serving before it announced (stderr may be read after stdout).
  await eventually('every worker serving', () => pids().size === workers - 1, 5_000);
  return { server, dataDir, address: info.listen, httpUrl: info.httpUrl, pid: info.pid, workerPids: pids };
}

/**
 * Which process served `probe`: the `worker` of the first new log line for
 * `method` (0: the primary). Probes run one at a time.
 */
async function servedBy(server: RunningProcess, method: string, probe: () => Promise<unknown>) {
  const seen = () => logLines(server).filter((line) => line.method === method);
  const before = seen().length;
  await probe().catch(() => {});
  const line = await eventually(`the log line of ${method}`, () => seen()[before]);
  return (line.worker as number | undefined) ?? 0;
}

/**
 * Opens channels (one connection each) until `wanted` processes have one;
 * returns one client per process, the others closed.
 */
async function connectionsTo(
  server: RunningProcess,
  wanted: readonly number[],
  open: () => Clients,
  probe: (clients: Clients) => { method: string; call: () => Promise<unknown> },
): Promise<Map<number, Clients>> {
  const kept = new Map<number, Clients>();
  for (let attempt = 0; attempt < MAX_CONNECTIONS && kept.size < wanted.length; attempt += 1) {
    const candidate = open();
    const { method, call: run } = probe(candidate);
    const process = await servedBy(server, method, run);
    if (wanted.includes(process) && !kept.has(process)) kept.set(process, candidate);
    else candidate.close();
  }
  assert.equal(
    kept.size,
    wanted.length,
    `saw processes ${[...kept.keys()]} of ${wanted} in ${MAX_CONNECTIONS} connections`,
  );
  return kept;
}

const REVOKE = '/sigil.v1.CertificateAuthority/Revoke';
const GET_STATUS = '/sigil.v1.Admin/GetStatus';
const REGISTER = '/sigil.v1.Enrolment/Register';
const RENEW = '/sigil.v1.CertificateAuthority/Renew';

/** An admin call refused as invalid (logged at debug with its method): changes nothing. */
const adminProbe = (admin: Clients) => ({
  method: REVOKE,
  call: () => call(admin.ca, admin.ca.revoke, { serial: 'zz-not-hex', reason: '' }),
});

const postgresSkip = postgresUnavailable() ?? undefined;

describe('sigil server --workers', { timeout: 120_000 }, () => {
  let postgres: TestPostgres | undefined;
  after(async () => {
    await postgres?.stop();
  });

  test('a certificate revoked through one worker closes its live sessions on every other process (SQLite: relayed by the primary)', async (t) => {
    await revocationReachesEveryProcess(t, []);
  });

  test('the same on PostgreSQL, where every process LISTENs itself', { skip: postgresSkip }, async (t) => {
    postgres = await startPostgres();
    await revocationReachesEveryProcess(t, ['--store', postgres.url]);
  });

  async function revocationReachesEveryProcess(t: TestContext, storeFlags: readonly string[]) {
    const running = await startWorkers(t, 3, storeFlags);
    const { server, dataDir, address } = running;
    const adminId = adminIdentity(dataDir);
    const openAdmin = () => clients(address, credentialsFor(dataDir, adminId), OWN_CONNECTION);
    // The admin's connection to worker 1 is where the revocation comes in.
    const [viaWorker] = (await connectionsTo(server, [1], openAdmin, adminProbe)).values();
    t.after(() => viaWorker.close());

    const { privateKey } = generateKeyPair('p256');
    const adminFingerprint = sha256(new X509Certificate(adminId.certificateChain).raw);
    const issued = await call(viaWorker.ca, viaWorker.ca.sign, {
      key: { $case: 'possession', value: possessionFor(privateKey, signChallenge(adminFingerprint)) },
      profile: 'client',
      commonName: 'carol',
      dnsNames: [],
      ipAddresses: [],
      uris: [],
      ttlSeconds: 3600,
    });
    const carol: Identity = identityOf(issued, privateKeyToPem(privateKey));
    // carol's sessions on the primary (0) and the other worker (2); her GetStatus is denied (logged).
    const sessions = await connectionsTo(
      server,
      [0, 2],
      () => clients(address, credentialsFor(dataDir, carol), OWN_CONNECTION),
      (held) => ({ method: GET_STATUS, call: () => call(held.admin, held.admin.getStatus, {}) }),
    );
    t.after(() => {
      for (const held of sessions.values()) held.close();
    });
    // The state of the channel each probe connected (clients() opens one per service).
    const state = (client: grpc.Client) => client.getChannel().getConnectivityState(false);
    for (const held of sessions.values()) assert.equal(state(held.admin), grpc.connectivityState.READY);

    const revoked = await call(viaWorker.ca, viaWorker.ca.revoke, { serial: issued.serial, reason: '' });
    assert.equal(revoked.alreadyRevoked, false);
    for (const [process, held] of sessions) {
      await eventually(
        `carol's session on process ${process} closed`,
        () => state(held.admin) !== grpc.connectivityState.READY,
      );
    }
    // The admin's own session, on worker 1, is untouched.
    assert.equal(state(viaWorker.ca), grpc.connectivityState.READY);
  }

  test('registrations through two processes never use a token more often than it allows', async (t) => {
    const { server, dataDir, address } = await startWorkers(t, 2);
    const admin = clients(address, credentialsFor(dataDir, adminIdentity(dataDir)));
    t.after(() => admin.close());
    const uses = 3;
    const created = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 600,
      uses,
      autoApprove: true,
      name: 'edge',
      replica: false,
    });
    const token = parseJoinToken(created.token);
    // Twelve connections, each probed (an empty Register is refused and logged), spread over both processes.
    const anonymous: Clients[] = [];
    const served = new Set<number>();
    t.after(() => {
      for (const each of anonymous) each.close();
    });
    while (anonymous.length < 12 || served.size < 2) {
      assert.ok(anonymous.length < MAX_CONNECTIONS, 'connections spread over both processes');
      const each = clients(address, anonymousCredentials(dataDir), OWN_CONNECTION);
      anonymous.push(each);
      served.add(
        await servedBy(server, REGISTER, () =>
          call(each.enrolment, each.enrolment.register, {
            tokenId: '',
            tokenSecret: Buffer.alloc(0),
            possession: undefined,
            name: '',
          }),
        ),
      );
    }

    const outcomes = await Promise.allSettled(
      anonymous.map((each) => {
        const key = generateKeyPair('ed25519');
        return call(each.enrolment, each.enrolment.register, {
          tokenId: token.id,
          tokenSecret: token.secret,
          possession: possessionFor(key.privateKey, registerChallenge(token.id, token.secret)),
          name: 'edge',
        });
      }),
    );
    const registered = outcomes.filter((outcome) => outcome.status === 'fulfilled');
    assert.equal(registered.length, uses, 'exactly as many nodes as the token has uses');
    const nodes = await call(admin.admin, admin.admin.listNodes, { state: '' });
    assert.equal(nodes.nodes.length, uses);
  });

  test('a node renewing over connections to several processes gets no more than over one (identity decisions serialized by the primary)', async (t) => {
    const { server, dataDir, address } = await startWorkers(t, 3);
    const admin = clients(address, credentialsFor(dataDir, adminIdentity(dataDir)));
    t.after(() => admin.close());
    const created = await call(admin.admin, admin.admin.createToken, {
      ttlSeconds: 600,
      uses: 1,
      autoApprove: true,
      name: 'edge',
      replica: false,
    });
    const token = parseJoinToken(created.token);
    const key = generateKeyPair('ed25519');
    const registered = await call(admin.enrolment, admin.enrolment.register, {
      tokenId: token.id,
      tokenSecret: token.secret,
      possession: possessionFor(key.privateKey, registerChallenge(token.id, token.secret)),
      name: 'edge',
    });
    assert.ok(registered.certificate, 'the node is UP with a certificate');
    const node = identityOf(registered.certificate, privateKeyToPem(key.privateKey));
    // The node's sessions on all three processes; a Renew with an empty proof is refused (and logged).
    const sessions = await connectionsTo(
      server,
      [0, 1, 2],
      () => clients(address, credentialsFor(dataDir, node), OWN_CONNECTION),
      (held) => ({
        method: RENEW,
        call: () =>
          call(held.ca, held.ca.renew, {
            possession: { spki: Buffer.alloc(0), challenge: Buffer.alloc(0), signature: Buffer.alloc(0) },
          }),
      }),
    );
    t.after(() => {
      for (const held of sessions.values()) held.close();
    });

    // The attack: many renewals at once, spread over every process. One process allows exactly one (the
    // node then holds two valid certificates and the newest is not half way through its life).
    const attempts = [...sessions.values()].flatMap((held) =>
      Array.from({ length: 6 }, () => call(held.ca, held.ca.renew, {})),
    );
    const outcomes = await Promise.allSettled(attempts);
    const renewed = outcomes.filter((outcome) => outcome.status === 'fulfilled');
    assert.equal(renewed.length, 1, 'exactly one renewal, as over one connection');
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') {
        const error = outcome.reason as grpc.ServiceError;
        assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED, error.details);
      }
    }
    const listed = await call(admin.ca, admin.ca.listCertificates, {
      requester: registered.nodeId,
      pageSize: 100,
      pageToken: '',
      profile: '',
      revoked: '',
    });
    assert.equal(listed.certificates.length, 2, 'the registration and one renewal, nothing more stored');
  });

  test("/metrics counts every process's calls, not only the primary's", async (t) => {
    const { server, dataDir, address, httpUrl } = await startWorkers(t, 2);
    const adminId = adminIdentity(dataDir);
    const openAdmin = () => clients(address, credentialsFor(dataDir, adminId), OWN_CONNECTION);
    const sessions = await connectionsTo(server, [0, 1], openAdmin, adminProbe);
    t.after(() => {
      for (const held of sessions.values()) held.close();
    });
    const adminFingerprint = sha256(new X509Certificate(adminId.certificateChain).raw);
    const perProcess = 3;
    for (const held of sessions.values()) {
      for (let i = 0; i < perProcess; i += 1) {
        const { privateKey } = generateKeyPair('p256');
        await call(held.ca, held.ca.sign, {
          key: { $case: 'possession', value: possessionFor(privateKey, signChallenge(adminFingerprint)) },
          profile: 'client',
          commonName: `counted-${i}`,
          dnsNames: [],
          ipAddresses: [],
          uris: [],
          ttlSeconds: 600,
        });
      }
    }
    const scraped = await (await fetch(`${httpUrl}/metrics`)).text();
    const admitted =
      /^sigil_issuance_admission_total\{[^}]*method="sign"[^}]*outcome="admitted"[^}]*\} (\d+)$/m.exec(
        scraped,
      );
    assert.ok(admitted, 'the admission counter is scraped');
    assert.equal(Number(admitted[1]), perProcess * sessions.size, 'the Sign calls of both processes');
  });

  test('a worker that dies is restarted; SIGTERM drains every worker and the primary exits 0', async (t) => {
    const { server, address, dataDir, workerPids } = await startWorkers(t, 2);
    const first = workerPids().get(1);
    assert.ok(first);
    process.kill(first, 'SIGKILL');
    await server.printed('server worker stopped; restarting it');
    const restarted = await eventually('the restarted worker', () => {
      const line = logLines(server).find((each) => each.msg === 'server worker restarted');
      return line?.pid as number | undefined;
    });
    assert.notEqual(restarted, first);
    assert.ok(gone(first));
    // It serves: a connection to it answers.
    const openAdmin = () => clients(address, credentialsFor(dataDir, adminIdentity(dataDir)), OWN_CONNECTION);
    const [toRestarted] = (await connectionsTo(server, [1], openAdmin, adminProbe)).values();
    const status = await call(toRestarted.admin, toRestarted.admin.getStatus, {});
    toRestarted.close();
    assert.ok(status.certificatesIssued >= 1);

    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0);
    assert.match(server.stderr(), /"msg":"stopped"/);
    await eventually('the restarted worker gone', () => gone(restarted), 5_000);
  });

  test('a worker that cannot start fails the start, naming its error, and leaves no process', async (t) => {
    const dataDir = join(tempDir('sigil-workers-'), 'data');
    // Loaded by the primary and, through execArgv, by every worker: only a worker has an IPC channel.
    const fault = join(tempDir('sigil-workers-fault-'), 'fault.mjs');
    writeFileSync(fault, "if (process.send) process.env.SIGIL_STORE_KEY = 'not base64!';\n");
    const server = start(process.execPath, [
      '--import',
      fault,
      SIGIL_BIN,
      'server',
      ...serverFlags(dataDir, 'info'),
      '--workers',
      '3',
    ]);
    t.after(() => {
      server.child.kill('SIGKILL');
    });
    const code = await server.exited;
    assert.equal(code, 1);
    assert.match(server.stderr(), /server worker [12] did not start: SIGIL_STORE_KEY is not base64/);
    assert.equal(existsSync(join(dataDir, 'server.json')), false, 'no server.json: it never served');
  });

  for (const value of ['0', 'two', '257']) {
    test(`--workers ${value} is refused before anything is created`, async () => {
      const dataDir = join(tempDir('sigil-workers-'), 'data');
      const server = spawnServer([...serverFlags(dataDir, 'info'), '--workers', value]);
      assert.equal(await server.exited, 2, 'bad usage');
      assert.match(server.stderr(), /--workers must be a whole number from [01] to 256/);
      assert.equal(existsSync(dataDir), false);
    });
  }
});
