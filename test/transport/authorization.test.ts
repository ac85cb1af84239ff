import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  type AuthorizationDenial,
  AuthorizationPolicy,
  type AuthorizationRules,
  authorizationInterceptor,
} from '../../src/transport/authorization.ts';
import type { PeerIdentity } from '../../src/transport/peer-identity.ts';
import { failureOf } from '../support/failure.ts';
import { assertThrowsRefusal } from '../support/refusals.ts';
import { connect, type Pair, startServer, type TestClient, ThrowawayCa } from './interceptor-fixtures.ts';

const ALICE = 'spiffe://td/client/alice';
const BOB = 'spiffe://td/client/bob';

const ca = new ThrowawayCa();
const alice = ca.client(ALICE);
const bob = ca.client(BOB);
const outsider = ca.client('spiffe://other.td/client/eve');

/** Start a server with these rules, run `body` with a client per pair, close everything. */
async function withServer(
  rules: AuthorizationRules,
  body: (connectAs: (pair: Pair | null) => TestClient, ran: (method: string) => boolean) => Promise<void>,
  options: Parameters<typeof authorizationInterceptor>[1] & { requireClientCertificate?: boolean } = {},
): Promise<void> {
  const server = await startServer({
    ca,
    // A plain grpc-js server cannot tell who issued a leaf: the test CA is the deployment's.
    interceptors: [
      authorizationInterceptor(rules, {
        deploymentAuthorities: [new X509Certificate(ca.pem)],
        ...options,
      }),
    ],
    requireClientCertificate: options.requireClientCertificate,
  });
  const clients: TestClient[] = [];
  try {
    await body(
      (pair) => {
        const client = connect(server.port, ca, pair);
        clients.push(client);
        return client;
      },
      (method) => server.log.ran(method),
    );
  } finally {
    for (const client of clients) client.close();
    await server.close();
  }
}

describe('authorization interceptor over real TLS', () => {
  test('allowed SPIFFE ID passes', async () => {
    await withServer({ '/test.Echo/Unary': { spiffeIds: [ALICE] } }, async (connectAs, ran) => {
      const reply = await connectAs(alice).unary('Unary', 'hi');
      assert.equal(reply.toString(), 'Unary:hi');
      assert.ok(ran('Unary'));
    });
  });

  test('disallowed SPIFFE ID gets PERMISSION_DENIED naming the rule and the handler did not run', async () => {
    const denials: AuthorizationDenial[] = [];
    await withServer(
      { '/test.Echo/*': { spiffeIds: [ALICE] } },
      async (connectAs, ran) => {
        const error = await failureOf(connectAs(bob).unary('Unary'));
        assert.equal(error.code, grpc.status.PERMISSION_DENIED);
        assert.equal(
          error.details,
          `method /test.Echo/Unary: peer ${BOB} is not in allowed SPIFFE IDs of rule "/test.Echo/*"`,
        );
        assert.equal(ran('Unary'), false, 'the handler must not run for a denied call');
      },
      { onDenied: (denial) => denials.push(denial) },
    );
    assert.deepEqual(denials, [
      {
        method: '/test.Echo/Unary',
        rule: '/test.Echo/*',
        code: grpc.status.PERMISSION_DENIED,
        message: `method /test.Echo/Unary: peer ${BOB} is not in allowed SPIFFE IDs of rule "/test.Echo/*"`,
      },
    ]);
  });

  test('method not in the table denied by default', async () => {
    await withServer({ '/test.Echo/Unary': { allow: 'any-authenticated' } }, async (connectAs, ran) => {
      const client = connectAs(alice);
      await client.unary('Unary');
      const other = await failureOf(client.unary('Other'));
      assert.equal(other.code, grpc.status.PERMISSION_DENIED);
      assert.match(other.details, /^method \/test\.Echo\/Other: no authorization rule covers this method/);
      const admin = await failureOf(client.reset());
      assert.equal(admin.code, grpc.status.PERMISSION_DENIED);
      assert.match(admin.details, /\/test\.Admin\/Reset: no authorization rule/);
      assert.equal(ran('Other'), false);
      assert.equal(ran('Reset'), false);
    });
  });

  test('trust-domain pattern', async () => {
    await withServer({ '/test.Echo/*': { spiffePatterns: ['spiffe://td/*'] } }, async (connectAs, ran) => {
      assert.equal((await connectAs(alice).unary('Unary')).toString(), 'Unary:hello');
      assert.equal((await connectAs(bob).unary('Other')).toString(), 'Other:hello');
      const error = await failureOf(connectAs(outsider).unary('Unary'));
      assert.equal(error.code, grpc.status.PERMISSION_DENIED);
      assert.equal(
        error.details,
        'method /test.Echo/Unary: peer spiffe://other.td/client/eve is not in allowed SPIFFE ID patterns of rule "/test.Echo/*"',
      );
      assert.deepEqual(ran('Unary') && ran('Other'), true, 'the allowed calls reached their handlers');
    });
  });

  test('path pattern matches below the prefix only, segment-wise', async () => {
    const client = ca.client('spiffe://td/client');
    const sibling = ca.client('spiffe://td/clients/x');
    await withServer({ '/test.Echo/*': { spiffePatterns: ['spiffe://td/client/*'] } }, async (connectAs) => {
      await connectAs(alice).unary('Unary');
      for (const pair of [client, sibling]) {
        const error = await failureOf(connectAs(pair).unary('Unary'));
        assert.equal(error.code, grpc.status.PERMISSION_DENIED);
      }
    });
  });

  test('exact rule beats wildcard', async () => {
    const rules: AuthorizationRules = {
      '/test.Echo/*': { spiffeIds: [ALICE] },
      '/test.Echo/Other': { spiffeIds: [BOB] },
    };
    await withServer(rules, async (connectAs, ran) => {
      await connectAs(alice).unary('Unary');
      const error = await failureOf(connectAs(alice).unary('Other'));
      assert.equal(error.code, grpc.status.PERMISSION_DENIED);
      assert.equal(
        error.details,
        `method /test.Echo/Other: peer ${ALICE} is not in allowed SPIFFE IDs of rule "/test.Echo/Other"`,
      );
      assert.equal(ran('Other'), false);
      // The exact rule admits bob even though the wildcard would not.
      assert.equal((await connectAs(bob).unary('Other')).toString(), 'Other:hello');
      assert.equal((await failureOf(connectAs(bob).unary('Unary'))).code, grpc.status.PERMISSION_DENIED);
    });
  });

  test('permission required without a permission source denied', async () => {
    await withServer(
      { '/test.Echo/Unary': { spiffeIds: [ALICE], requirePermission: 'echo' } },
      async (connectAs, ran) => {
        const error = await failureOf(connectAs(alice).unary('Unary'));
        assert.equal(error.code, grpc.status.PERMISSION_DENIED);
        assert.equal(
          error.details,
          'method /test.Echo/Unary: rule "/test.Echo/Unary" requires permission "echo" but no permission source is configured',
        );
        assert.equal(ran('Unary'), false);
      },
    );
  });

  test('permission present via callback allowed', async () => {
    const asked: (string | null)[] = [];
    const permissionsOf = (identity: PeerIdentity): ReadonlySet<string> => {
      asked.push(identity.spiffeId);
      return new Set(identity.spiffeId === ALICE ? ['echo', 'other'] : ['other']);
    };
    await withServer(
      { '/test.Echo/*': { spiffePatterns: ['spiffe://td/client/*'], requirePermission: 'echo' } },
      async (connectAs, ran) => {
        assert.equal((await connectAs(alice).unary('Unary')).toString(), 'Unary:hello');
        const error = await failureOf(connectAs(bob).unary('Unary'));
        assert.equal(error.code, grpc.status.PERMISSION_DENIED);
        assert.equal(
          error.details,
          `method /test.Echo/Unary: peer ${BOB} lacks permission "echo" required by rule "/test.Echo/*"`,
        );
        assert.equal(ran('Unary'), true);
      },
      { permissionsOf },
    );
    assert.deepEqual(asked, [ALICE, BOB]);
  });

  test('a permission source that throws fails closed', async () => {
    await withServer(
      { '/test.Echo/*': { requirePermission: 'echo' } },
      async (connectAs, ran) => {
        const error = await failureOf(connectAs(alice).unary('Unary'));
        assert.equal(error.code, grpc.status.PERMISSION_DENIED);
        assert.equal(
          error.details,
          `method /test.Echo/Unary: the permissions of peer ${ALICE} could not be read for rule "/test.Echo/*"`,
        );
        assert.doesNotMatch(error.details, /secret-detail/);
        assert.equal(ran('Unary'), false);
      },
      {
        permissionsOf: () => {
          throw new Error('secret-detail');
        },
      },
    );
  });

  test('streaming method denied before the first message', async () => {
    await withServer(
      { '/test.Echo/Stream': { spiffeIds: [ALICE] }, '/test.Echo/Unary': { spiffeIds: [BOB] } },
      async (connectAs, ran) => {
        const error = await failureOf(connectAs(bob).stream(['first', 'second']));
        assert.equal(error.code, grpc.status.PERMISSION_DENIED);
        assert.equal(
          error.details,
          `method /test.Echo/Stream: peer ${BOB} is not in allowed SPIFFE IDs of rule "/test.Echo/Stream"`,
        );
        assert.equal(ran('Stream'), false, 'the streaming handler must not start');
        assert.equal(ran('Stream:data:first'), false, 'no request message may reach the handler');
        // And the stream works for the allowed peer.
        const replies = await connectAs(alice).stream(['a', 'b']);
        assert.deepEqual(
          replies.map((reply) => reply.toString()),
          ['a', 'b'],
        );
      },
    );
  });

  test('DNS name rule matches the peer certificate DNS SANs', async () => {
    const worker = ca.client(null, ['worker.example.com']);
    await withServer({ '/test.Echo/*': { dnsNames: ['worker.example.com'] } }, async (connectAs) => {
      assert.equal((await connectAs(worker).unary('Unary')).toString(), 'Unary:hello');
      const error = await failureOf(connectAs(alice).unary('Unary'));
      assert.equal(
        error.details,
        `method /test.Echo/Unary: peer ${ALICE} is not in allowed DNS names of rule "/test.Echo/*"`,
      );
    });
  });

  test('allow none carves a method out of a wildcard', async () => {
    await withServer(
      { '/test.Echo/*': { allow: 'any-authenticated' }, '/test.Echo/Other': { allow: 'none' } },
      async (connectAs, ran) => {
        await connectAs(alice).unary('Unary');
        const error = await failureOf(connectAs(alice).unary('Other'));
        assert.equal(error.code, grpc.status.PERMISSION_DENIED);
        assert.equal(error.details, 'method /test.Echo/Other: rule "/test.Echo/Other" denies every peer');
        assert.equal(ran('Other'), false);
      },
    );
  });

  test('no client certificate gets UNAUTHENTICATED', async () => {
    await withServer(
      { '/test.Echo/*': { allow: 'any-authenticated' } },
      async (connectAs, ran) => {
        const error = await failureOf(connectAs(null).unary('Unary'));
        assert.equal(error.code, grpc.status.UNAUTHENTICATED);
        assert.match(error.details, /no client certificate/);
        assert.equal(ran('Unary'), false);
        // Authentication comes before the table: an unlisted method also says UNAUTHENTICATED.
        assert.equal((await failureOf(connectAs(null).reset())).code, grpc.status.UNAUTHENTICATED);
      },
      { requireClientCertificate: false },
    );
  });
});

describe('authorization table validation', () => {
  const refused = (rules: unknown, pattern: RegExp): void =>
    assertThrowsRefusal(
      () => authorizationInterceptor(rules as AuthorizationRules),
      'invalid_argument',
      pattern,
    );

  test('partial wildcard pattern refused at construction', () => {
    for (const pattern of [
      'spiffe://td/client/bo*',
      'spiffe://td/*/alice',
      'spiffe://td/client*',
      'spiffe://*/client',
      'spiffe://*',
      'spiffe://td/**',
      'spiffe://t*/x/*',
    ]) {
      refused(
        { '/test.Echo/*': { spiffePatterns: [pattern] } },
        /invalid SPIFFE ID pattern .*wildcard may only be the whole last segment|invalid SPIFFE ID pattern/,
      );
    }
    refused(
      { '/test.Echo/*': { spiffePatterns: ['spiffe://td/client/bo*'] } },
      /rule "\/test\.Echo\/\*": invalid SPIFFE ID pattern "spiffe:\/\/td\/client\/bo\*": a wildcard may only be the whole last segment/,
    );
    refused({ '/test.Echo/*': { spiffePatterns: ['spiffe://td/client'] } }, /must end in "\/\*"/);
    refused({ '/test.Echo/*': { spiffeIds: ['spiffe://td/client/*'] } }, /wildcards go in spiffePatterns/);
    refused({ '/test.Echo/*': { dnsNames: ['*.example.com'] } }, /wildcards are not allowed/);
  });

  test('malformed method paths refused at construction', () => {
    for (const key of [
      'test.Echo/Unary',
      '/test.Echo',
      '/test.Echo/',
      '/test.Echo/Un*',
      '/*/Unary',
      '/*',
      '/test.Echo/Unary/extra',
      '/test..Echo/Unary',
      '',
    ]) {
      refused({ [key]: { allow: 'any-authenticated' } }, /invalid method path/);
    }
    refused(
      { '/test.Echo/Un*': { allow: 'any-authenticated' } },
      /wildcard may only stand for the whole method name/,
    );
  });

  test('malformed rules refused at construction', () => {
    refused(
      { '/test.Echo/*': {} },
      /a rule needs spiffeIds, spiffePatterns, dnsNames, delegates or requirePermission/,
    );
    refused({ '/test.Echo/*': { spiffeIds: [] } }, /admit nobody/);
    refused({ '/test.Echo/*': { allow: 'everyone' } }, /allow must be/);
    refused({ '/test.Echo/*': { allow: 'any-authenticated', spiffeIds: [ALICE] } }, /cannot be combined/);
    refused({ '/test.Echo/*': { spiffeId: [ALICE] } }, /unknown field "spiffeId"/);
    refused({ '/test.Echo/*': { spiffeIds: ['SPIFFE://td/x'] } }, /invalid SPIFFE ID/);
    refused({ '/test.Echo/*': { requirePermission: '' } }, /requirePermission must be a non-empty string/);
  });

  test('the policy resolves exact rules before service wildcards', () => {
    const policy = new AuthorizationPolicy({
      '/test.Echo/*': { allow: 'any-authenticated' },
      '/test.Echo/Other': { allow: 'none' },
    });
    assert.equal(policy.ruleFor('/test.Echo/Unary'), '/test.Echo/*');
    assert.equal(policy.ruleFor('/test.Echo/Other'), '/test.Echo/Other');
    assert.equal(policy.ruleFor('/test.EchoX/Unary'), null);
    assert.equal(policy.ruleFor('/test/Echo/Unary'), null);
  });
});
