// callerFrom (src/authority/identities.ts): a role comes from who issued the
// leaf, never from its name alone. Only a leaf the deployment's own CAs
// signed directly is read by its SPIFFE ID; an admitted delegate is a
// delegate whatever it is named; anyone else is 'other'.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  adminSpiffeId,
  callerFrom,
  localOperator,
  nodeSpiffeId,
  replicaSpiffeId,
  type VerifiedPeer,
} from '../../src/authority/identities.ts';
import { nodeIdFor } from '../../src/authority/node-id.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';

const TD = 'example.test';
const fp = 'cd'.repeat(32);
const nodeId = nodeIdFor(generateKeyPair('ed25519').publicKey);

const peer = (spiffeId: string | null, over: Partial<VerifiedPeer> = {}): VerifiedPeer => ({
  spiffeId,
  serial: 'a1',
  fingerprint: fp,
  issuedByDeployment: true,
  delegateKey: null,
  ...over,
});

const ADMIN = 'spiffe://example.test/admin/alice';
const NODE = `spiffe://example.test/node/${nodeId}`;
const REPLICA = 'spiffe://example.test/replica/r2';

describe('callerFrom', () => {
  it('a deployment-issued leaf gets admin, node or replica from its SPIFFE ID, with the name', () => {
    assert.deepEqual(callerFrom(peer(ADMIN), TD), {
      spiffeId: ADMIN,
      serial: 'a1',
      fingerprint: fp,
      role: 'admin',
      name: 'alice',
    });
    assert.deepEqual([callerFrom(peer(NODE), TD).role, callerFrom(peer(NODE), TD).name], ['node', nodeId]);
    assert.deepEqual(
      [callerFrom(peer(REPLICA), TD).role, callerFrom(peer(REPLICA), TD).name],
      ['replica', 'r2'],
    );
    assert.equal(adminSpiffeId(TD, 'alice'), ADMIN);
    assert.equal(nodeSpiffeId(TD, nodeId), NODE);
    assert.equal(replicaSpiffeId(TD, 'r2'), REPLICA);
  });

  it('the same names on a leaf the deployment did not issue are "other"', () => {
    for (const id of [ADMIN, NODE, REPLICA]) {
      const caller = callerFrom(peer(id, { issuedByDeployment: false }), TD);
      assert.equal(caller.role, 'other', id);
      assert.equal(caller.name, null, id);
      assert.equal(caller.spiffeId, id, 'the ID is still reported');
    }
  });

  it('an admitted delegate is "delegate" with its store key as name, whatever its SPIFFE ID says', () => {
    const carol = callerFrom(
      peer('spiffe://carol.alice.d.example.test', { issuedByDeployment: false, delegateKey: '/alice/carol' }),
      TD,
    );
    assert.deepEqual(carol, {
      spiffeId: 'spiffe://carol.alice.d.example.test',
      serial: 'a1',
      fingerprint: fp,
      role: 'delegate',
      name: '/alice/carol',
    });
    // A workload leaf of the delegation: the key says where it sits.
    const web = callerFrom(
      peer('spiffe://carol.alice.d.example.test/web', {
        issuedByDeployment: false,
        delegateKey: '/alice/carol//web',
      }),
      TD,
    );
    assert.equal(web.role, 'delegate');
    assert.equal(web.name, '/alice/carol//web');
    // An admin-looking name does not make a delegate an admin, and a deployment-issued
    // command certificate (admitted like a delegation) is a delegate too.
    for (const issuedByDeployment of [false, true]) {
      const looksAdmin = callerFrom(peer(ADMIN, { issuedByDeployment, delegateKey: '/ops' }), TD);
      assert.equal(looksAdmin.role, 'delegate', `issuedByDeployment ${issuedByDeployment}`);
      assert.equal(looksAdmin.name, '/ops');
    }
  });

  it('other trust domains, malformed or missing IDs and unknown shapes are "other"', () => {
    for (const id of [
      'spiffe://other.test/admin/alice',
      'spiffe://example.test/admin/alice/extra',
      'spiffe://example.test/admin',
      'spiffe://example.test/node/not-a-node-id',
      'spiffe://example.test/replica/bad%20id',
      'spiffe://example.test/workload/web',
      'spiffe://alice.d.example.test', // a delegated host without an admitted chain
      'spiffe://alice.d.example.test/admin/x',
      'garbage',
      '',
      null,
    ]) {
      const caller = callerFrom(peer(id), TD);
      assert.equal(caller.role, 'other', String(id));
      assert.equal(caller.name, null, String(id));
    }
    assert.equal(callerFrom(peer(null), TD).spiffeId, '');
  });

  it('localOperator acts as an admin named "local"', () => {
    assert.deepEqual(localOperator(TD), {
      spiffeId: 'spiffe://example.test/admin/local',
      serial: '',
      fingerprint: '',
      role: 'admin',
      name: 'local',
    });
  });
});
