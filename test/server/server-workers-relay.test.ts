// The two store decorators of `sigil server --workers N` on SQLite, on a real
// store file, with the IPC channel stood in for by a JSON round trip (what
// fork's IPC does to a message): store events relayed
// between processes (worker-event-relay.ts) and certificate inserts made by
// the primary (worker-certificate-writes.ts).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { SigilError } from '../../src/errors.ts';
import {
  ForwardedCertificateWrites,
  type InsertRequest,
  insertForWorker,
} from '../../src/server/worker-certificate-writes.ts';
import { StoreEventRelay } from '../../src/server/worker-event-relay.ts';
import { openStore } from '../../src/store/open-store.ts';
import type { CertificateRecord, Store, StoreEvent } from '../../src/store/store.ts';
import { sampleNode, sampleToken } from '../store/contract.ts';
import { tempDir } from '../support/temp-dir.ts';

const opened: Store[] = [];
after(async () => {
  for (const store of opened) await store.close();
});

async function freshStore(): Promise<Store> {
  const store = await openStore('sqlite', tempDir('sigil-workers-relay-'));
  opened.push(store);
  return store;
}

function certificate(serial: string): CertificateRecord {
  const now = new Date();
  return {
    serial,
    subject: 'CN=carol',
    sans: ['uri:spiffe://sigil.internal/client/carol'],
    profile: 'client',
    notBefore: now,
    notAfter: new Date(now.getTime() + 3600_000),
    issuerId: 'ca-test',
    requester: 'spiffe://sigil.internal/admin/admin',
    der: randomBytes(300),
    issuedAt: now,
    revokedAt: null,
    revocationReason: null,
  };
}

test('an event made here reaches the local subscribers and goes out once; one from elsewhere reaches them and never goes back', async () => {
  const relay = new StoreEventRelay(await freshStore(), (error) => assert.fail(error));
  const local: StoreEvent[] = [];
  const outbound: string[] = [];
  relay.store.subscribe((event) => local.push(event));
  relay.sendTo((encoded) => outbound.push(encoded));

  await relay.store.insertCertificate(certificate('a1'));
  assert.equal(await relay.store.revokeCertificate('a1', 'keyCompromise', new Date()), true);
  assert.deepEqual(local, [{ kind: 'revocation', serials: ['a1'] }]);
  assert.deepEqual(
    outbound.map((encoded) => JSON.parse(encoded)),
    [{ kind: 'revocation', serials: ['a1'] }],
  );

  relay.deliver(JSON.stringify({ kind: 'revocation', serials: ['b2'] }));
  relay.deliver(JSON.stringify({ kind: 'ca', caId: 'ca-2' }));
  assert.deepEqual(local.slice(1), [
    { kind: 'revocation', serials: ['b2'] },
    { kind: 'ca', caId: 'ca-2' },
  ]);
  assert.equal(outbound.length, 1, 'events from elsewhere are not sent on');
});

test('a relayed payload this build does not understand is dropped, and the subscribers stay', async () => {
  const relay = new StoreEventRelay(await freshStore(), (error) => assert.fail(error));
  const local: StoreEvent[] = [];
  relay.store.subscribe((event) => local.push(event));
  relay.deliver('not json');
  relay.deliver(JSON.stringify({ kind: 'revocation', serials: [7] }));
  relay.deliver(JSON.stringify({ kind: 'node', nodeId: 'n', state: 'SOMETHING' }));
  assert.deepEqual(local, []);
  relay.deliver(JSON.stringify({ kind: 'node', nodeId: 'n', state: 'UP' }));
  assert.deepEqual(local, [{ kind: 'node', nodeId: 'n', state: 'UP' }]);
});

test("a worker's certificate insert is made in the primary's store; a refusal comes back with its code", async () => {
  const primary = await freshStore();
  const workerSide = await freshStore(); // never written through: inserts go to the primary
  const forwarded = new ForwardedCertificateWrites(workerSide, (request: InsertRequest) => {
    // As fork's IPC delivers a message: through JSON.
    const overIpc = <T>(message: T): T => JSON.parse(JSON.stringify(message)) as T;
    void insertForWorker(primary, overIpc(request)).then((reply) => forwarded.settle(overIpc(reply)));
  });
  const record = certificate('c3');
  await forwarded.store.insertCertificate(record);
  const stored = await primary.getCertificate('c3');
  assert.ok(stored);
  assert.deepEqual(stored.der, record.der);
  assert.equal(stored.notAfter.getTime(), record.notAfter.getTime());
  assert.equal(await workerSide.getCertificate('c3'), null);

  const refusal = await forwarded.store.insertCertificate(record).then(
    () => assert.fail('a second insert of one serial must be refused'),
    (error: unknown) => error,
  );
  assert.ok(refusal instanceof SigilError);
  assert.equal(refusal.code, 'already_exists');
  assert.match(refusal.message, /serial c3 already exists/);
  // Reads are the worker's own store's.
  assert.equal((await forwarded.store.listCertificates({})).items.length, 0);
});

test("a worker's node certificate is made in the primary's store with the node's pointer to it, in one write", async () => {
  const primary = await freshStore();
  const workerSide = await freshStore();
  const forwarded = new ForwardedCertificateWrites(workerSide, (request: InsertRequest) => {
    const overIpc = <T>(message: T): T => JSON.parse(JSON.stringify(message)) as T;
    void insertForWorker(primary, overIpc(request)).then((reply) => forwarded.settle(overIpc(reply)));
  });
  await primary.insertToken(sampleToken('tok-node-1'));
  const registered = await primary.registerNode('tok-node-1', sampleNode('node-1', 'tok-node-1'), new Date());
  assert.equal(registered.outcome, 'created');
  const record = { ...certificate('e5'), profile: 'node', requester: 'node-1' };
  const at = new Date();
  const node = await forwarded.store.insertNodeCertificate(record, {
    id: 'node-1',
    from: ['NEW'],
    to: 'UP',
    at,
  });
  assert.ok(node, 'the node moved');
  assert.equal(node.state, 'UP');
  assert.equal(node.certificateSerial, 'e5');
  assert.deepEqual(node.publicKey, registered.node.publicKey, 'the node record survives the round trip');
  assert.equal(node.updatedAt.getTime(), at.getTime());
  assert.deepEqual(await primary.getNode('node-1'), node);
  assert.ok(await primary.getCertificate('e5'));
  assert.equal(await workerSide.getCertificate('e5'), null);
  // A node no longer in a state the step starts from: the certificate is stored, the node stays.
  const stale = await forwarded.store.insertNodeCertificate(certificate('f6'), {
    id: 'node-1',
    from: ['NEW'],
    to: 'UP',
    at,
  });
  assert.equal(stale, null);
  assert.equal((await primary.getNode('node-1'))?.certificateSerial, 'e5');
});

test('inserts in flight when the primary goes away fail, naming why', async () => {
  const forwarded = new ForwardedCertificateWrites(await freshStore(), () => {});
  const pending = forwarded.store.insertCertificate(certificate('d4'));
  forwarded.failAll();
  await assert.rejects(pending, /primary went away before the certificate was stored/);
});
