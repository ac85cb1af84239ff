// sigil's own authorization table: every method of the API has a rule,
// admins reach everything, other peers of the trust domain only what the
// authority then narrows, Enrolment is public, and peers of another trust
// domain nothing.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { DelegationService } from '../../src/gen/sigil/v1/sigil.ts';
import {
  ALL_METHODS,
  PUBLIC_METHODS,
  sigilAuthorizationRules,
} from '../../src/services/authorization-rules.ts';
import { AuthorizationPolicy } from '../../src/transport/authorization.ts';
import type { PeerIdentity } from '../../src/transport/peer-identity.ts';

const policy = new AuthorizationPolicy(sigilAuthorizationRules('example.test'));

function peer(spiffeId: string | null): PeerIdentity {
  return {
    spiffeId,
    dnsNames: [],
    ipAddresses: [],
    serial: '1',
    fingerprint: '00'.repeat(32),
    notAfter: new Date(Date.now() + 60_000),
    chain: [],
    extensions: [],
  };
}

const allowed = (method: string, id: string | null) => policy.decide(method, peer(id)).allowed;

describe('sigil authorization rules', () => {
  test('every method of the API is covered by a rule (nothing falls to default deny)', () => {
    assert.equal(ALL_METHODS.length, 23);
    for (const method of ALL_METHODS) assert.notEqual(policy.ruleFor(method), null, method);
  });

  test('Enrolment is the public service', () => {
    assert.deepEqual([...PUBLIC_METHODS].sort(), [
      '/sigil.v1.Enrolment/GetTrustBundle',
      '/sigil.v1.Enrolment/JoinReplica',
      '/sigil.v1.Enrolment/Register',
      '/sigil.v1.Enrolment/Rejoin',
    ]);
  });

  test('admins may call everything', () => {
    for (const method of ALL_METHODS) assert.ok(allowed(method, 'spiffe://example.test/admin/alice'), method);
  });

  test('Admin/*, Sign and ListCertificates are admin only', () => {
    for (const id of [
      'spiffe://example.test/node/n1',
      'spiffe://example.test/client/bob',
      'spiffe://example.test/admin',
    ]) {
      for (const method of [
        '/sigil.v1.Admin/GetStatus',
        '/sigil.v1.Admin/CreateToken',
        '/sigil.v1.CertificateAuthority/Sign',
        '/sigil.v1.CertificateAuthority/ListCertificates',
      ]) {
        const decision = policy.decide(method, peer(id));
        assert.equal(decision.allowed, false, `${id} ${method}`);
        if (!decision.allowed) assert.equal(decision.code, grpc.status.PERMISSION_DENIED);
      }
    }
  });

  test('Renew, Revoke, GetTrustBundle and WatchRevocations: any peer of the trust domain', () => {
    for (const method of ['Renew', 'Revoke', 'GetTrustBundle', 'WatchRevocations']) {
      assert.ok(allowed(`/sigil.v1.CertificateAuthority/${method}`, 'spiffe://example.test/node/n1'), method);
      assert.ok(
        allowed(`/sigil.v1.CertificateAuthority/${method}`, 'spiffe://example.test/client/bob'),
        method,
      );
      assert.equal(
        allowed(`/sigil.v1.CertificateAuthority/${method}`, 'spiffe://other.test/admin/eve'),
        false,
      );
      assert.equal(allowed(`/sigil.v1.CertificateAuthority/${method}`, null), false);
    }
  });

  test('Delegation/*: any peer of the trust domain reaches the authority, which decides on the admitted chain', () => {
    for (const method of Object.values(DelegationService).map((m) => m.path)) {
      assert.equal(allowed(method, `spiffe://example.test/d/alice/carol`), true, method);
      assert.equal(allowed(method, `spiffe://example.test/admin/root`), true, method);
      assert.equal(allowed(method, 'spiffe://elsewhere.example/d/alice'), false, method);
      assert.equal(allowed(method, null), false, method);
    }
  });

  test('a peer of another trust domain gets nothing, not even with an admin path', () => {
    for (const method of ALL_METHODS)
      assert.equal(allowed(method, 'spiffe://other.test/admin/eve'), false, method);
  });
});
