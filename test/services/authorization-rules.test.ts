// sigil's own authorization table: every method of the API has a rule,
// admins reach everything, other peers of the trust domain only what the
// authority then narrows, Enrolment is public, and peers of another trust
// domain nothing. A name binds only when the deployment's own CAs issued the
// leaf: beneath a delegation, whatever SPIFFE ID a leaf carries, it is a
// delegate (admitted: the members' methods, never an admin's) or nothing.
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
import { admittedCarol, peer } from './peer-fixtures.ts';

const policy = new AuthorizationPolicy(sigilAuthorizationRules('example.test'));

const allowed = (method: string, id: string | null) => policy.decide(method, peer(id)).allowed;

const ADMIN_ONLY = [
  '/sigil.v1.Admin/GetStatus',
  '/sigil.v1.Admin/CreateToken',
  '/sigil.v1.CertificateAuthority/Sign',
  '/sigil.v1.CertificateAuthority/ListCertificates',
];

describe('sigil authorization rules', () => {
  test('every method of the API is covered by a rule (nothing falls to default deny)', () => {
    assert.equal(ALL_METHODS.length, 29);
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
      for (const method of ADMIN_ONLY) {
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
      assert.equal(policy.decide(method, admittedCarol()).allowed, true, method);
      assert.equal(allowed(method, `spiffe://example.test/admin/root`), true, method);
      assert.equal(allowed(method, 'spiffe://alice.d.elsewhere.example'), false, method);
      assert.equal(allowed(method, null), false, method);
    }
  });

  test("an admitted delegate reaches the members' methods, never an admin's, whatever its chain grants", () => {
    for (const carol of [admittedCarol(), admittedCarol('spiffe://carol.alice.d.example.test/web')]) {
      for (const method of ADMIN_ONLY) {
        const decision = policy.decide(method, carol);
        assert.equal(decision.allowed, false, method);
        if (!decision.allowed) {
          assert.equal(decision.code, grpc.status.PERMISSION_DENIED);
          assert.match(decision.message, /delegate spiffe:\/\/carol\.alice\.d\.example\.test/);
        }
      }
      for (const method of ['Renew', 'Revoke', 'GetTrustBundle', 'WatchRevocations']) {
        assert.equal(policy.decide(`/sigil.v1.CertificateAuthority/${method}`, carol).allowed, true, method);
      }
    }
  });

  test('a leaf beneath a delegation that names itself an admin is no admin: not admitted, it gets nothing', () => {
    const forged = peer('spiffe://example.test/admin/alice', 'delegated');
    for (const method of ALL_METHODS) {
      const decision = policy.decide(method, forged);
      assert.equal(decision.allowed, false, method);
      if (!decision.allowed) {
        assert.equal(decision.code, grpc.status.PERMISSION_DENIED);
        assert.match(decision.message, /beneath a delegation, not admitted/);
      }
    }
    // Admitted, the same forged name is a delegate and still reaches no admin method.
    const admitted = admittedCarol('spiffe://example.test/admin/alice');
    for (const method of ADMIN_ONLY) assert.equal(policy.decide(method, admitted).allowed, false, method);
  });

  test('a peer whose issuer is unknown gets nothing, whatever its name', () => {
    for (const method of ALL_METHODS) {
      assert.equal(
        policy.decide(method, peer('spiffe://example.test/admin/alice', 'unknown')).allowed,
        false,
        method,
      );
    }
  });

  test('IssueWorkloadIdentity: nodes (and admins) only; a workload identity reaches no method at all', () => {
    const method = '/sigil.v1.WorkloadPlacement/IssueWorkloadIdentity';
    assert.ok(allowed(method, 'spiffe://example.test/node/n1'));
    assert.equal(allowed(method, 'spiffe://example.test/client/bob'), false);
    assert.equal(policy.decide(method, admittedCarol()).allowed, false);
    // Issued by the deployment for Carol's workload "web": its host is not the trust domain.
    const web = peer('spiffe://carol.alice.d.example.test/workload/web');
    for (const each of ALL_METHODS) assert.equal(policy.decide(each, web).allowed, false, each);
  });

  test('a peer of another trust domain gets nothing, not even with an admin path', () => {
    for (const method of ALL_METHODS)
      assert.equal(allowed(method, 'spiffe://other.test/admin/eve'), false, method);
  });
});
