// Who may call the standard services on the control plane (health and
// reflection): any authenticated peer of the deployment (admins, nodes, other
// deployment identities of the trust domain, admitted delegates); nobody of
// another trust domain, no unadmitted leaf beneath a delegation, and no
// anonymous caller (MtlsServer refuses those before this table; see
// test/server/standard-services.test.ts).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  PUBLIC_METHODS,
  STANDARD_METHODS,
  STANDARD_SERVICES,
  sigilAuthorizationRules,
} from '../../src/services/authorization-rules.ts';
import { HEALTH_SERVICE_NAME } from '../../src/services/health.ts';
import { REFLECTION_SERVICE_NAMES } from '../../src/services/reflection.ts';
import { AuthorizationPolicy } from '../../src/transport/authorization.ts';
import { admittedCarol, peer } from './peer-fixtures.ts';

const policy = new AuthorizationPolicy(sigilAuthorizationRules('example.test'));

const carol = admittedCarol();

describe('standard services in the authorization table', () => {
  test('the table names exactly the services the server adds', () => {
    assert.deepEqual(
      [...STANDARD_SERVICES].sort(),
      [HEALTH_SERVICE_NAME, ...REFLECTION_SERVICE_NAMES].sort(),
    );
    for (const method of STANDARD_METHODS) assert.notEqual(policy.ruleFor(method), null, method);
  });

  test('admins, nodes, other deployment identities and admitted delegates may call them', () => {
    for (const method of STANDARD_METHODS) {
      for (const id of [
        'spiffe://example.test/admin/root',
        'spiffe://example.test/node/n1',
        'spiffe://example.test/replica/r1',
      ]) {
        assert.equal(policy.decide(method, peer(id)).allowed, true, `${id} ${method}`);
      }
      assert.equal(policy.decide(method, carol).allowed, true, `carol ${method}`);
    }
  });

  test('another trust domain, an unadmitted delegated leaf, an unknown issuer and no SPIFFE ID get nothing', () => {
    for (const method of STANDARD_METHODS) {
      assert.equal(policy.decide(method, peer('spiffe://other.test/admin/eve')).allowed, false, method);
      assert.equal(policy.decide(method, peer('spiffe://example.test/admin/x', 'delegated')).allowed, false);
      assert.equal(policy.decide(method, peer('spiffe://example.test/admin/x', 'unknown')).allowed, false);
      assert.equal(policy.decide(method, peer(null)).allowed, false, method);
    }
  });

  test('they are not public: no standard method is callable without a client certificate', () => {
    for (const method of STANDARD_METHODS) assert.equal(PUBLIC_METHODS.includes(method), false, method);
  });
});
