// Delegation end to end, in process: the real server (SQLite), real TLS
// sockets, delegates calling with the chains they made themselves. The admin
// delegates to Alice through the server; Alice delegates to Carol and Dan
// offline; the server checks every chain when it is presented, accounts
// usage over the whole subtree, keeps siblings apart, and ends every session
// beneath a revoked delegation.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  CertificateAuthorityClient,
  type DelegationNode,
  type RevocationEvent,
} from '../../src/gen/sigil/v1/sigil.ts';
import { parseCertificate } from '../../src/pki/certificate.ts';
import { type Policy, readPolicy } from '../../src/pki/policy-extension.ts';
import type { RunningServer } from '../../src/server/start-server.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { cancellationOnly } from '../support/cancellation.ts';
import { openssl } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';
import { failureOf } from '../support/failure.ts';
import { tempDir } from '../support/temp-dir.ts';
import { Delegates, type Held, policy } from './delegation-fixtures.ts';
import { adminIdentity, assertStatus, call, startTestServer, statusName } from './helpers.ts';

describe('delegation through the server', () => {
  const dataDir = join(tempDir(), 'data');
  let running: RunningServer;
  let trustDomain: string;
  let delegates: Delegates;
  const open: grpc.Client[] = [];
  const as = (held: Held, sendChain = true) => delegates.as(held, sendChain);
  const subDelegate = (parent: Held, name: string, p: Policy) => delegates.subDelegate(parent, name, p);

  let alice: Held;
  let carol: Held;
  let dan: Held;

  before(async () => {
    running = await startTestServer({ dataDir });
    trustDomain = running.authority.trustDomain;
    delegates = new Delegates(running.address, dataDir, trustDomain, running.authority.policyOid);
    alice = await delegates.adminDelegates(
      'alice',
      policy('info,create,destroy,delegate,revoke,issue', {
        workloads: 2,
        cpus: [0, 1],
        memoryMiB: 4096,
        blockMiB: 10240,
        bridges: ['br0', 'br1'],
      }),
    );
    carol = subDelegate(
      alice,
      'carol',
      policy('info,create,destroy', { workloads: 1, cpus: [0], memoryMiB: 1024, bridges: ['br0'] }),
    );
    dan = subDelegate(
      alice,
      'dan',
      policy('info,create,destroy,revoke', { workloads: 2, cpus: [1], memoryMiB: 2048 }),
    );
  });

  after(async () => {
    for (const client of open) client.close();
    delegates?.close();
    await running?.close();
  });

  test('the direct delegation is a CA carrying the policy extension and the subtree SPIFFE ID', () => {
    const certificate = new X509Certificate(alice.ca);
    assert.equal(certificate.ca, true);
    assert.equal(certificate.subjectAltName, `URI:spiffe://alice.d.${trustDomain}`);
    assert.deepEqual(readPolicy(alice.ca, running.authority.policyOid), alice.policy);
    // Signed by this replica's intermediate, which is sent along as the chain.
    assert.equal(alice.above.length, 1);
    assert.ok(certificate.verify(new X509Certificate(alice.above[0]).publicKey));
  });

  test('refuses: pathLen overflow, at issuance and when presented (OpenSSL refuses the handshake)', async () => {
    // A direct delegation gets pathLen 6 by default.
    assert.equal(parseCertificate(alice.ca, 'alice').pathLen, 6);
    const flat = await delegates.adminDelegates(
      'flat',
      policy('info,delegate,issue', { workloads: 0 }),
      false,
      0,
    );
    assert.throws(() => subDelegate(flat, 'below', policy('info', { workloads: 0 })), /pathLen overflow/);
    // Forged past the refusal: the chain no longer validates, so the TLS handshake fails.
    const forged = delegates.forge(
      flat,
      ['flat', 'below'],
      delegates.id(['flat', 'below']),
      policy('info', { workloads: 0 }),
    );
    const below = as(forged);
    const error = await failureOf(call(below.delegation, below.delegation.getDelegationStatus, {}));
    assert.equal(error.code, grpc.status.UNAVAILABLE, `${statusName(error.code)}: ${error.details}`);
  });

  test("Carol's status shows her effective policy (the intersection along Alice → Carol)", async () => {
    const { delegation } = as(carol);
    const status = await call(delegation, delegation.getDelegationStatus, {});
    assert.equal(status.spiffeId, `spiffe://carol.alice.d.${trustDomain}`);
    assert.deepEqual(status.policy?.permissions.sort(), ['create', 'destroy', 'info']);
    assert.equal(status.policy?.limits?.workloads, 1);
    assert.deepEqual(status.policy?.limits?.cpus, [0]);
    assert.equal(status.usage?.workloads, 0);
  });

  test('usage is accounted over the whole subtree: Carol and Dan share Alice’s two workloads', async () => {
    const c = as(carol).delegation;
    const d = as(dan).delegation;
    const first = await call(c, c.reserve, {
      holder: 'web-1',
      workloads: 1,
      cpus: [0],
      memoryMib: 512,
      blockMib: 0,
    });
    assert.equal(first.existing, false);
    // The reservation is answered with the caller's own SPIFFE ID.
    assert.equal(first.spiffeId, `spiffe://carol.alice.d.${trustDomain}`);
    // Idempotent: the same holder again changes nothing.
    assert.equal(
      (await call(c, c.reserve, { holder: 'web-1', workloads: 1, cpus: [0], memoryMib: 512, blockMib: 0 }))
        .existing,
      true,
    );
    // Carol's own limit is one workload.
    assertStatus(
      await failureOf(
        call(c, c.reserve, { holder: 'web-2', workloads: 1, cpus: [], memoryMib: 0, blockMib: 0 }),
      ),
      grpc.status.RESOURCE_EXHAUSTED,
      /your delegation's workloads limit \(1 in use of 1\)/,
    );
    await call(d, d.reserve, { holder: 'db-1', workloads: 1, cpus: [1], memoryMib: 1024, blockMib: 0 });
    // Dan may hold two, but Alice's two are now both in use; the message does not reveal Carol's figures.
    const shared = await failureOf(
      call(d, d.reserve, { holder: 'db-2', workloads: 1, cpus: [], memoryMib: 0, blockMib: 0 }),
    );
    assertStatus(shared, grpc.status.RESOURCE_EXHAUSTED, /limit of a delegation above yours$/);
    assert.doesNotMatch(shared.details, /carol|in use/);
    // A cpu outside the delegation's set.
    assertStatus(
      await failureOf(
        call(d, d.reserve, { holder: 'db-3', workloads: 0, cpus: [0], memoryMib: 0, blockMib: 0 }),
      ),
      grpc.status.PERMISSION_DENIED,
      /cpu 0 is not among/,
    );
    const a = as(alice).delegation;
    const aliceStatus = await call(a, a.getDelegationStatus, {});
    assert.equal(aliceStatus.usage?.workloads, 2);
    assert.equal(aliceStatus.usage?.memoryMib, 1536);
    // Releasing frees the shared capacity for Dan.
    assert.equal((await call(c, c.release, { holder: 'web-1' })).released, true);
    assert.equal((await call(c, c.release, { holder: 'web-1' })).released, false);
    await call(d, d.reserve, { holder: 'db-2', workloads: 1, cpus: [], memoryMib: 0, blockMib: 0 });
  });

  test("Alice's status lists what she delegated (seen in presented chains), Carol's not Dan's", async () => {
    as(carol);
    const a = as(alice).delegation;
    const status = await call(a, a.getDelegationStatus, {});
    const ids = (nodes: readonly DelegationNode[]): string[] =>
      nodes.flatMap((node) => [node.spiffeId, ...ids(node.children)]);
    const seen = ids(status.delegated);
    assert.ok(seen.includes(`spiffe://carol.alice.d.${trustDomain}`), seen.join(', '));
    assert.ok(seen.includes(`spiffe://dan.alice.d.${trustDomain}`), seen.join(', '));
    const c = as(carol).delegation;
    const carolView = ids((await call(c, c.getDelegationStatus, {})).delegated);
    assert.ok(!carolView.some((id) => id.includes('dan')), carolView.join(', '));
  });

  test('refuses: a sibling acting in another subtree gets the same answer as for a certificate that does not exist', async () => {
    const d = as(dan).delegation;
    const sibling = await failureOf(
      call(d, d.revokeDelegated, { certificate: carol.ca, chain: [alice.ca, ...alice.above], reason: '' }),
    );
    const stranger = subDelegate(alice, 'nobody', policy('info', { workloads: 0 }));
    const unknown = await failureOf(
      call(d, d.revokeDelegated, { certificate: stranger.ca, chain: [alice.ca, ...alice.above], reason: '' }),
    );
    assertStatus(sibling, grpc.status.NOT_FOUND);
    assert.equal(sibling.details, unknown.details);
    assert.equal(sibling.code, unknown.code);
  });

  test('refuses: escalation of each limit and each permission, presented in a chain Alice signed', async () => {
    const base = alice.policy.limits as NonNullable<Policy['limits']>;
    const escalations: [string, Policy][] = [
      ['workloads', policy('info', { ...base, workloads: 3 })],
      ['memoryMiB', policy('info', { ...base, memoryMiB: 4097 })],
      ['blockMiB', policy('info', { ...base, blockMiB: 10241 })],
      ['cpus', policy('info', { ...base, cpus: [0, 1, 2] })],
      ['bridges', policy('info', { ...base, bridges: ['br0', 'br9'] })],
      ['issuancePerHour', policy('info', { ...base, issuancePerHour: 101 })],
      ['permission admin', policy('info,admin', base)],
      ['permission console', policy('info,console', base)],
    ];
    for (const [what, escalated] of escalations) {
      // Signed directly with Alice's key (issueDelegation would refuse to make it).
      const held = delegates.forge(alice, ['alice', 'greedy'], delegates.id(['alice', 'greedy']), escalated);
      const { delegation } = as(held);
      const error = await failureOf(call(delegation, delegation.getDelegationStatus, {}));
      assert.equal(
        error.code,
        grpc.status.PERMISSION_DENIED,
        `${what}: ${statusName(error.code)} ${error.details}`,
      );
      assert.match(error.details, /escalates/, what);
    }
  });

  test('refuses: a chain whose CAs were not sent, a chain of ten, a delegation without "delegate" making one', async () => {
    const noChain = as(carol, false).delegation;
    assertStatus(
      await failureOf(call(noChain, noChain.getDelegationStatus, {})),
      grpc.status.PERMISSION_DENIED,
      /does not lead/,
    );

    // Carol lacks "delegate": a sub-delegation she signs anyway is refused when presented.
    const rogueHeld = delegates.forge(
      carol,
      ['alice', 'carol', 'rogue'],
      delegates.id(['alice', 'carol', 'rogue']),
      policy('info', { workloads: 0 }),
    );
    const r = as(rogueHeld).delegation;
    assertStatus(
      await failureOf(call(r, r.getDelegationStatus, {})),
      grpc.status.PERMISSION_DENIED,
      /lacks the "delegate" permission/,
    );

    // Ten certificates: replica intermediate, deep, 7 more, leaf.
    // A direct delegation allows six levels below it by default; this one asks for more.
    const deepPolicy = policy('info,delegate,issue', { workloads: 0 });
    let deep = await delegates.adminDelegates('deep', deepPolicy, false, 12);
    for (let i = 0; i < 7; i++) deep = subDelegate(deep, `l${i}`, deepPolicy);
    const d = as(deep).delegation;
    assertStatus(
      await failureOf(call(d, d.getDelegationStatus, {})),
      grpc.status.PERMISSION_DENIED,
      /(more than 9|at most 9)/,
    );
  });

  test('/delegations on the HTTP side: the whole tree for admins (bearer token from the data directory), 401/403 otherwise', async () => {
    as(carol);
    const url = `${running.httpUrl}/delegations`;
    const none = await fetch(url);
    assert.equal(none.status, 401);
    const wrong = await fetch(url, { headers: { authorization: `Bearer ${'0'.repeat(64)}` } });
    assert.equal(wrong.status, 403);
    const tokenPath = join(dataDir, 'http-admin.token');
    assert.equal(statSync(tokenPath).mode & 0o777, 0o600);
    const token = readFileSync(tokenPath, 'utf8').trim();
    const ok = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(ok.status, 200);
    const body = (await ok.json()) as {
      delegations: { spiffeId: string; children: { spiffeId: string }[] }[];
    };
    const top = body.delegations.find((node) => node.spiffeId === `spiffe://alice.d.${trustDomain}`);
    assert.ok(top, JSON.stringify(body));
    const children = top.children.map((child) => child.spiffeId);
    assert.ok(
      children.includes(`spiffe://carol.alice.d.${trustDomain}`) &&
        children.includes(`spiffe://dan.alice.d.${trustDomain}`),
      children.join(', '),
    );
  });

  test('CreateDelegation grants dns_names and ip_ranges: answered, written as name constraints, narrowed beneath', async () => {
    const netted = await delegates.adminDelegates(
      'netted',
      policy('info,delegate,issue', { workloads: 1 }),
      false,
      -1,
      {
        dnsNames: ['net.example'],
        ipRanges: ['10.9.0.0/16', 'fd00:9::/32'],
      },
    );
    // adminDelegates takes the grants from the answer's dns_names and ip_ranges.
    assert.deepEqual(netted.grants, { dnsNames: ['net.example'], ipRanges: ['10.9.0.0/16', 'fd00:9::/32'] });
    const text = await openssl(['x509', '-noout', '-text'], new X509Certificate(netted.ca).toString());
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      new RegExp(
        [
          'X509v3 Name Constraints: critical',
          'Permitted:',
          'DNS:net\\.example',
          'IP:10\\.9\\.0\\.0/255\\.255\\.0\\.0',
          'IP:FD00:9:0:0:0:0:0:0/FFFF:FFFF:0:0:0:0:0:0',
          `URI:netted\\.d\\.${trustDomain.replaceAll('.', '\\.')}`,
          `URI:\\.netted\\.d\\.${trustDomain.replaceAll('.', '\\.')}\n`,
        ].join('\\n\\s*'),
      ),
    );
    // A sub-delegation within the grant is admitted; one past it is refused at issuance.
    const inner = delegates.subDelegate(netted, 'inner', policy('info', { workloads: 1 }), {
      grants: { ipRanges: ['10.9.4.0/24'] },
    });
    assert.deepEqual(inner.grants, { dnsNames: [], ipRanges: ['10.9.4.0/24'] });
    const i = as(inner).delegation;
    assert.equal(
      (await call(i, i.getDelegationStatus, {})).spiffeId,
      `spiffe://inner.netted.d.${trustDomain}`,
    );
    assert.throws(
      () =>
        delegates.subDelegate(netted, 'outer', policy('info', { workloads: 1 }), {
          grants: { ipRanges: ['10.8.0.0/16'] },
        }),
      /IP ranges: 10\.8\.0\.0\/16 is not within 10\.9\.0\.0\/16, fd00:9::\/32/,
    );
    // Malformed ranges are refused by the server, naming the range, and nothing is issued.
    for (const [range, why] of [
      ['10.9.0.1/16', /host bits are set/],
      ['10.9.0.0/33', /prefix length/],
      ['net.example', /expected address\/prefix/],
    ] as const) {
      const error = await failureOf(
        delegates.adminDelegates('badrange', policy('info', { workloads: 0 }), false, -1, {
          ipRanges: [range],
        }),
      );
      assertStatus(error, grpc.status.INVALID_ARGUMENT, why);
      assert.ok(error.details.includes(`"${range}"`), error.details);
    }
    const granted = await delegates.adminDelegates('badrange', policy('info', { workloads: 0 }));
    assert.deepEqual(granted.grants, { dnsNames: [], ipRanges: [] });
  });

  test('refuses: a second live delegation of one name; once revoked, the name can be granted again', async () => {
    const grant = policy('info', { workloads: 1 });
    const first = await delegates.adminDelegates('repeat', grant);
    const { delegation } = as(first); // its identity leaf is now recorded under the same SPIFFE ID
    await call(delegation, delegation.getDelegationStatus, {});
    assertStatus(
      await failureOf(delegates.adminDelegates('repeat', grant)),
      grpc.status.ALREADY_EXISTS,
      /a live delegation spiffe:\/\/repeat\.d\..* exists/,
    );
    const admin = adminIdentity(dataDir);
    const adminCa = new CertificateAuthorityClient(
      running.address,
      channelCredentials({
        material: new StaticMaterialSource({ ...admin, trustBundle: delegates.trustBundle }),
      }),
    );
    open.push(adminCa);
    const serial = new X509Certificate(first.ca).serialNumber.toLowerCase().replace(/^0+/, '');
    await call(adminCa, adminCa.revoke, { serial, reason: 'superseded' });
    const second = await delegates.adminDelegates('repeat', grant);
    assert.notDeepEqual(second.ca, first.ca);
  });

  test('WatchRevocations as a delegate: only revocations beneath it, nothing of a sibling subtree', async () => {
    const top = await delegates.adminDelegates(
      'watch',
      policy('info,delegate,revoke,issue', { workloads: 4 }),
    );
    const left = subDelegate(top, 'left', policy('info,delegate', { workloads: 2 }));
    const right = subDelegate(top, 'right', policy('info,delegate', { workloads: 2 }));
    const leftChild = subDelegate(left, 'child', policy('info', { workloads: 1 }));
    const rightChild = subDelegate(right, 'child', policy('info', { workloads: 1 }));
    const fp = (der: Buffer) =>
      `fp:${new X509Certificate(der).fingerprint256.replaceAll(':', '').toLowerCase()}`;

    const streams: grpc.ClientReadableStream<RevocationEvent>[] = [];
    const streamErrors: Error[] = [];
    const watch = (held: Held) => {
      const events: RevocationEvent[] = [];
      const stream = as(held).ca.watchRevocations({});
      stream.on('data', (event: RevocationEvent) => events.push(event));
      cancellationOnly(stream, streamErrors); // cancelled at the end
      streams.push(stream);
      return events;
    };
    const topEvents = watch(top);
    const rightEvents = watch(right);
    await eventually('both snapshots', () => topEvents.length > 0 && rightEvents.length > 0);
    // Revocations elsewhere on this server (other tests) are not in a delegate's snapshot.
    assert.deepEqual(rightEvents[0], { snapshot: true, serials: [] });
    assert.deepEqual(topEvents[0], { snapshot: true, serials: [] });

    const t = as(top).delegation;
    await call(t, t.revokeDelegated, {
      certificate: leftChild.ca,
      chain: [left.ca, top.ca, ...top.above],
      reason: '',
    });
    await call(t, t.revokeDelegated, {
      certificate: rightChild.ca,
      chain: [right.ca, top.ca, ...top.above],
      reason: '',
    });
    await eventually('top to see both', () =>
      topEvents.flatMap((e) => e.serials).includes(fp(rightChild.ca)),
    );
    assert.deepEqual(
      topEvents.flatMap((e) => e.serials),
      [fp(leftChild.ca), fp(rightChild.ca)],
    );
    // Updates keep their order, so had right been told of leftChild, it would have come first.
    await eventually('right to see its child', () =>
      rightEvents.flatMap((e) => e.serials).includes(fp(rightChild.ca)),
    );
    assert.deepEqual(
      rightEvents.flatMap((e) => e.serials),
      [fp(rightChild.ca)],
    );
    for (const stream of streams) stream.cancel();
    assert.deepEqual(streamErrors, [], 'a watch stream failed');
  });

  test('revoking Alice ends every session beneath her and refuses new ones; admins cannot be impersonated by delegates', async () => {
    const carolClients = as(carol);
    const c = carolClients.delegation;
    await call(c, c.getDelegationStatus, {});
    const admin = adminIdentity(dataDir);
    const adminCa = new CertificateAuthorityClient(
      running.address,
      channelCredentials({
        material: new StaticMaterialSource({ ...admin, trustBundle: delegates.trustBundle }),
      }),
    );
    open.push(adminCa);
    // Delegates are not admins.
    assertStatus(
      await failureOf(
        call(carolClients.ca, carolClients.ca.listCertificates, {
          pageSize: 1,
          pageToken: '',
          requester: '',
          profile: '',
          revoked: '',
        }),
      ),
      grpc.status.PERMISSION_DENIED,
    );
    const serial = new X509Certificate(alice.ca).serialNumber.toLowerCase().replace(/^0+/, '');
    await call(adminCa, adminCa.revoke, { serial, reason: 'keyCompromise' });
    // The live connection is closed: the next call on it fails…
    await eventually('the revoked chain to be refused on the live connection', async () => {
      const error = await failureOf(call(c, c.getDelegationStatus, {}));
      return error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.PERMISSION_DENIED;
    });
    // …and a fresh connection with the same chain is refused.
    const fresh = as(carol).delegation;
    const error = await failureOf(call(fresh, fresh.getDelegationStatus, {}));
    assert.ok(
      error.code === grpc.status.PERMISSION_DENIED || error.code === grpc.status.UNAVAILABLE,
      `${statusName(error.code)}: ${error.details}`,
    );
  });
});
