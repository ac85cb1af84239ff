// A node's new certificate and its node record are one store write
// (store.insertNodeCertificate, node-certificates.ts): Renew and Register make
// that one call and never a separate insert and transition, and a node revoked
// while its renewal was being signed gets a certificate that is recorded,
// revoked (cessationOfOperation) and never handed out.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { possessionFor, registerChallenge } from '../../src/protocol/challenges.ts';
import { parseJoinToken } from '../../src/protocol/join-tokens.ts';
import type { Store } from '../../src/store/store.ts';
import { refusal } from '../support/refusals.ts';
import { callerFromIssued, type Fixture, newFixture } from './helpers.ts';

/** `store` with its writes of a node's certificate counted, and a hook run before insertNodeCertificate. */
function watchedStore(store: Store, beforeNodeWrite: (nodeId: string) => Promise<void> = async () => {}) {
  const calls: string[] = [];
  const watched = new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const name = String(property);
      if (name === 'insertNodeCertificate') {
        return async (...args: Parameters<Store['insertNodeCertificate']>) => {
          calls.push(name);
          await beforeNodeWrite(args[1].id);
          return target.insertNodeCertificate(...args);
        };
      }
      if (name === 'insertCertificate' || name === 'transitionNode') {
        return (...args: unknown[]) => {
          calls.push(name);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
  return { store: watched, calls };
}

describe("a node's certificate and its node record: one store write", () => {
  let f: Fixture;
  before(async () => {
    f = await newFixture();
  });
  after(() => f.close());

  async function enrolled(authority = f.authority) {
    const parsed = parseJoinToken((await f.authority.createToken(f.admin, { autoApprove: true })).token);
    const key = generateKeyPair('ed25519');
    const result = await authority.register({
      tokenId: parsed.id,
      tokenSecret: parsed.secret,
      possession: possessionFor(key.privateKey, registerChallenge(parsed.id, parsed.secret)),
    });
    assert.ok(result.certificate);
    return { nodeId: result.node.id, certificate: result.certificate };
  }

  it('Register and Renew each record the certificate and point the node at it with one insertNodeCertificate', async () => {
    const watched = watchedStore(f.store);
    const { authority } = await f.reopen({ store: watched.store });
    watched.calls.length = 0; // opening issued the server's own certificate
    const node = await enrolled(authority);
    const registerCalls = [...watched.calls];
    watched.calls.length = 0;
    const renewed = await authority.renew(callerFromIssued(node.certificate, authority));
    // Register admits the node (NEW to UP), then issues its certificate as one write.
    assert.deepEqual(registerCalls, ['transitionNode', 'insertNodeCertificate']);
    assert.deepEqual(watched.calls, ['insertNodeCertificate']);
    const stored = await f.store.getNode(node.nodeId);
    assert.equal(stored?.state, 'UP');
    assert.equal(stored?.certificateSerial, renewed.serial);
    const record = await f.store.getCertificate(renewed.serial);
    assert.equal(record?.revokedAt, null);
    assert.deepEqual(record?.der, renewed.certificate);
  });

  it('a node revoked while its renewal is signed: refused naming why; the certificate is recorded revoked (cessationOfOperation), the node keeps its state and serial', async () => {
    const node = await enrolled();
    const caller = callerFromIssued(node.certificate, f.authority);
    const watched = watchedStore(f.store, async (nodeId) => {
      await f.store.transitionNode(nodeId, ['UP'], 'REVOKED', { at: f.clock.now() });
    });
    const { authority } = await f.reopen({ store: watched.store });
    const revokedEvents: string[][] = [];
    const unsubscribe = f.store.subscribe((event) => {
      if (event.kind === 'revocation') revokedEvents.push([...event.serials]);
    });
    try {
      const before = await f.store.listCertificates({ requester: node.nodeId, pageSize: 1000 });
      await assert.rejects(
        authority.renew(caller),
        refusal('permission_denied', new RegExp(`node ${node.nodeId} has been revoked`)),
      );
      const stored = await f.store.getNode(node.nodeId);
      assert.equal(stored?.state, 'REVOKED');
      assert.equal(stored?.certificateSerial, node.certificate.serial);
      const afterwards = await f.store.listCertificates({ requester: node.nodeId, pageSize: 1000 });
      const added = afterwards.items.filter((r) => !before.items.some((b) => b.serial === r.serial));
      assert.equal(added.length, 1);
      assert.equal(added[0].revocationReason, 'cessationOfOperation');
      assert.notEqual(added[0].revokedAt, null);
      assert.deepEqual(revokedEvents, [[added[0].serial]]);
      assert.equal((await f.store.getCertificate(node.certificate.serial))?.revokedAt, null);
    } finally {
      unsubscribe();
    }
  });

  it('a renewal whose certificate cannot be recorded (a duplicate serial) is refused and leaves the node as it was', async () => {
    const node = await enrolled();
    const caller = callerFromIssued(node.certificate, f.authority);
    // The renewal's write collides: its serial is taken just before it is recorded.
    const watched = watchedStore(f.store);
    const colliding = new Proxy(watched.store, {
      get(target, property) {
        if (property !== 'insertNodeCertificate') return Reflect.get(target, property, target);
        return async (...args: Parameters<Store['insertNodeCertificate']>) => {
          await f.store.insertCertificate({ ...args[0], subject: 'CN=collision' });
          return target.insertNodeCertificate(...args);
        };
      },
    });
    const { authority } = await f.reopen({ store: colliding });
    const nodeBefore = await f.store.getNode(node.nodeId);
    await assert.rejects(authority.renew(caller), refusal('already_exists', /already exists/));
    assert.deepEqual(await f.store.getNode(node.nodeId), nodeBefore);
  });
});
