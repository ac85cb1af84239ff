import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checkDelegationChain, delegationPath, issueDelegateLeaf } from '../../src/authority/delegation.ts';
import { SigilError } from '../../src/errors.ts';
import { type IssuedCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { encodePem as toPem } from '../../src/pki/pem.ts';
import { type Permission, type Policy, policyExtension, readPolicy } from '../../src/pki/policy-extension.ts';
import { ExtendedKeyUsage } from '../../src/pki/profiles.ts';
import {
  ADMIN,
  ALICE,
  CAROL,
  DAY,
  delegate,
  HOUR,
  limits,
  policy,
  TD,
  testIntermediate,
  testRoot,
} from './delegation-fixtures.ts';

// May delegate but not issue leaves.
const DAVE = policy(['info', 'create', 'delegate'], limits({ workloads: 1 }));

const failsWith = (code: string, pattern: RegExp) => (error: unknown) => {
  assert.ok(error instanceof SigilError, `a SigilError, got ${String(error)}`);
  assert.equal(error.code, code);
  assert.match(error.message, pattern);
  return true;
};
const denied = (pattern: RegExp) => failsWith('permission_denied', pattern);

const { certificate: root, issuer: rootIssuer } = testRoot('sigil delegate-leaf test root');
// The replica intermediate: no policy, no SPIFFE ID under /d/.
const { certificate: replica, issuer: replicaIssuer } = testIntermediate(
  rootIssuer,
  'sigil delegate-leaf test replica',
);
const admin = { issuer: replicaIssuer, certificateDer: replica.der, policy: ADMIN };

const alice = delegate(admin, 'alice', ALICE, { pathLen: 2, ttlMs: 10 * DAY });
const carol = delegate(alice.parent, 'carol', CAROL, { pathLen: 0, ttlMs: 5 * DAY });
const dave = delegate(alice.parent, 'dave', DAVE, { pathLen: 1, ttlMs: 5 * DAY });

const check = (chain: Buffer[]) => checkDelegationChain(chain, { trustDomain: TD, adminPolicy: ADMIN });

const newKey = () => generateKeyPair('p256').publicKey;

const spiffeUris = (der: Buffer): string[] =>
  (new X509Certificate(der).subjectAltName ?? '')
    .split(', ')
    .filter((name) => name.startsWith('URI:'))
    .map((name) => name.slice(4));

describe('issueDelegateLeaf: the delegate identity leaf (no name)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-delegate-leaf-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const openssl = (leafDer: Buffer, chain: Buffer[], extra: string[] = []): string => {
    writeFileSync(join(dir, 'root.pem'), toPem('CERTIFICATE', root.der));
    writeFileSync(join(dir, 'chain.pem'), chain.map((der) => toPem('CERTIFICATE', der)).join(''));
    writeFileSync(join(dir, 'leaf.pem'), toPem('CERTIFICATE', leafDer));
    try {
      return execFileSync(
        'openssl',
        ['verify', '-x509_strict', ...extra, '-CAfile', 'root.pem', '-untrusted', 'chain.pem', 'leaf.pem'],
        { cwd: dir, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] },
      );
    } catch (error) {
      return String((error as { stderr?: string }).stderr ?? error);
    }
  };

  it("carries the parent's SPIFFE ID, is a client certificate, passes openssl and gets the delegation's effective policy", () => {
    const identity = issueDelegateLeaf({ parent: carol.parent, trustDomain: TD, publicKey: newKey() });
    assert.equal(identity.id, carol.issued.id);
    assert.equal(identity.id, 'spiffe://example.test/d/alice/carol');
    assert.deepEqual(spiffeUris(identity.der), [carol.issued.id]);

    const x509 = new X509Certificate(identity.der);
    assert.equal(x509.ca, false);
    assert.deepEqual(x509.keyUsage, [ExtendedKeyUsage.clientAuth]);
    assert.ok(x509.checkIssued(new X509Certificate(carol.issued.der)));
    assert.equal(readPolicy(identity.der), null, 'an identity leaf carries no policy of its own');
    // Default lifetime: the parent's remaining one.
    assert.equal(identity.notAfter.getTime(), carol.issued.notAfter.getTime());

    const chain = [carol.issued.der, alice.issued.der, replica.der];
    assert.match(openssl(identity.der, chain), /leaf\.pem: OK/);
    assert.match(openssl(identity.der, chain, ['-purpose', 'sslclient']), /leaf\.pem: OK/);
    // It is not a server certificate.
    assert.doesNotMatch(openssl(identity.der, chain, ['-purpose', 'sslserver']), /leaf\.pem: OK/);

    const result = check([identity.der, carol.issued.der, alice.issued.der, replica.der]);
    assert.deepEqual(result.path, ['d', 'alice', 'carol']);
    assert.deepEqual(result.effective, CAROL);
    assert.deepEqual(check([identity.der, carol.issued.der, alice.issued.der]).effective, CAROL);
  });

  it('an identity leaf needs no "issue": a delegate without it still gets its own identity', () => {
    const identity = issueDelegateLeaf({ parent: dave.parent, trustDomain: TD, publicKey: newKey() });
    assert.equal(identity.id, 'spiffe://example.test/d/alice/dave');
    assert.deepEqual(check([identity.der, dave.issued.der, alice.issued.der]).effective, DAVE);
  });

  it('honours a ttl within the parent', () => {
    const identity = issueDelegateLeaf({
      parent: carol.parent,
      trustDomain: TD,
      publicKey: newKey(),
      ttlMs: HOUR,
    });
    const lifetime = identity.notAfter.getTime() - Date.now();
    assert.ok(lifetime <= HOUR && lifetime > HOUR - 60_000, `lifetime ${lifetime}`);
  });

  it('refuses: an identity leaf under a parent that is not a delegation', () => {
    for (const parent of [
      { issuer: replicaIssuer, certificateDer: replica.der },
      { issuer: rootIssuer, certificateDer: root.der },
    ]) {
      assert.throws(
        () => issueDelegateLeaf({ parent, trustDomain: TD, publicKey: newKey() }),
        denied(/an identity leaf needs a delegation as its parent/),
      );
    }
  });

  it('refuses: a ttl past the parent (not clamped)', () => {
    assert.throws(
      () => issueDelegateLeaf({ parent: carol.parent, trustDomain: TD, publicKey: newKey(), ttlMs: 6 * DAY }),
      denied(/the certificate would outlive its parent/),
    );
    assert.throws(
      () =>
        issueDelegateLeaf({
          parent: carol.parent,
          trustDomain: TD,
          publicKey: newKey(),
          name: 'cmd',
          policy: policy(['info'], null),
          ttlMs: 6 * DAY,
        }),
      denied(/the certificate would outlive its parent/),
    );
  });
});

describe('issueDelegateLeaf: command certificates (a name and a policy without limits)', () => {
  const INFO = policy(['info'], null);

  it('lands at …/d/<parent path>/<name> and checks with the command policy intersected', () => {
    const command = issueDelegateLeaf({
      parent: carol.parent,
      trustDomain: TD,
      publicKey: newKey(),
      name: 'ops',
      policy: INFO,
    });
    assert.equal(command.id, 'spiffe://example.test/d/alice/carol/ops');
    assert.deepEqual(spiffeUris(command.der), [command.id]);
    const x509 = new X509Certificate(command.der);
    assert.equal(x509.ca, false);
    assert.deepEqual(x509.keyUsage, [ExtendedKeyUsage.clientAuth]);
    assert.deepEqual(readPolicy(command.der), INFO);
    const result = check([command.der, carol.issued.der, alice.issued.der]);
    assert.deepEqual(result.path, ['d', 'alice', 'carol', 'ops']);
    assert.deepEqual(result.effective, { version: 1, permissions: new Set(['info']), limits: null });
  });

  it("an admin's command certificate under the replica intermediate lands at /d/<name>", () => {
    const command = issueDelegateLeaf({
      parent: { issuer: replicaIssuer, certificateDer: replica.der },
      trustDomain: TD,
      publicKey: newKey(),
      name: 'ops',
      policy: policy(['info', 'revoke'], null),
      ttlMs: HOUR,
    });
    assert.equal(command.id, 'spiffe://example.test/d/ops');
    const result = check([command.der, replica.der]);
    assert.deepEqual(result.path, ['d', 'ops']);
    assert.deepEqual([...result.effective.permissions].sort(), ['info', 'revoke']);
    assert.equal(result.effective.limits, null);
  });

  it('a named leaf without a policy (a workload) inherits the effective policy', () => {
    const workload = issueDelegateLeaf({
      parent: carol.parent,
      trustDomain: TD,
      publicKey: newKey(),
      name: 'web',
    });
    assert.equal(workload.id, 'spiffe://example.test/d/alice/carol/web');
    assert.deepEqual(check([workload.der, carol.issued.der, alice.issued.der]).effective, CAROL);
  });

  it('refuses: a command certificate carrying limits (invalid_argument)', () => {
    assert.throws(
      () =>
        issueDelegateLeaf({
          parent: carol.parent,
          trustDomain: TD,
          publicKey: newKey(),
          name: 'ops',
          policy: policy(['info'], limits({ workloads: 1, cpus: [1], bridges: ['br0'] })),
        }),
      failsWith('invalid_argument', /a command certificate carries permissions only, no resource limits/),
    );
  });

  it("refuses: a command certificate whose policy escalates the parent's", () => {
    for (const permission of ['destroy', 'delegate', 'revoke', 'admin'] as Permission[]) {
      assert.throws(
        () =>
          issueDelegateLeaf({
            parent: carol.parent,
            trustDomain: TD,
            publicKey: newKey(),
            name: 'ops',
            policy: policy(['info', permission], null),
          }),
        denied(
          new RegExp(
            `the command certificate escalates its parent's policy: permission ${permission} not held`,
          ),
        ),
        permission,
      );
    }
  });

  it('refuses: a parent without "issue" issuing a named leaf (command or workload)', () => {
    assert.throws(
      () =>
        issueDelegateLeaf({
          parent: dave.parent,
          trustDomain: TD,
          publicKey: newKey(),
          name: 'ops',
          policy: policy(['info'], null),
        }),
      denied(/the parent lacks the "issue" permission/),
    );
    assert.throws(
      () => issueDelegateLeaf({ parent: dave.parent, trustDomain: TD, publicKey: newKey(), name: 'web' }),
      denied(/the parent lacks the "issue" permission/),
    );
  });

  it('refuses: a bad name', () => {
    for (const bad of ['Ops', '', 'a/b', '..']) {
      assert.throws(
        () => issueDelegateLeaf({ parent: carol.parent, trustDomain: TD, publicKey: newKey(), name: bad }),
        failsWith('invalid_argument', /delegation name/),
        bad,
      );
    }
  });
});

describe('checkDelegationChain: "issue" and "delegate" along the chain', () => {
  /** A leaf signed by `issuer` at the given path, bypassing issueDelegateLeaf's checks. */
  function forgedLeaf(issuer: Issuer, segments: string[], p?: Policy): IssuedCertificate {
    return issuer.issue({
      publicKey: newKey(),
      profile: 'client',
      sans: [{ type: 'uri', value: delegationPath(TD, segments) }],
      ttlMs: HOUR,
      extensions: p ? [policyExtension(p)] : [],
    });
  }

  /** A CA certificate at the given path signed by `parent`, bypassing issueDelegation's checks. */
  function forgedCa(
    parent: Issuer,
    segments: string[],
    p: Policy,
  ): { certificate: IssuedCertificate; issuer: Issuer } {
    const key = generateKeyPair('p256');
    const certificate = parent.issue({
      publicKey: key.publicKey,
      profile: 'intermediate',
      subject: { commonName: `forged ${segments[segments.length - 1]}` },
      sans: [{ type: 'uri', value: delegationPath(TD, segments) }],
      ttlMs: DAY,
      pathLen: 0,
      extensions: [policyExtension(p)],
    });
    return { certificate, issuer: Issuer.fromIssued(certificate, key.privateKey) };
  }

  it('a leaf at a different path than its issuer needs "issue" in the issuer\'s effective policy', () => {
    const web = forgedLeaf(dave.issuer, ['alice', 'dave', 'web']);
    assert.throws(
      () => check([web.der, dave.issued.der, alice.issued.der]),
      denied(
        /leaf #0 .* was made by delegation #1 "CN=sigil delegation alice\/dave", which lacks the "issue" permission/,
      ),
    );
    // Deeper below dave too.
    const deep = forgedLeaf(dave.issuer, ['alice', 'dave', 'x', 'y']);
    assert.throws(
      () => check([deep.der, dave.issued.der, alice.issued.der]),
      denied(/lacks the "issue" permission/),
    );
    // A leaf with a narrower policy of its own does not help.
    const cmd = forgedLeaf(dave.issuer, ['alice', 'dave', 'cmd'], policy(['info'], null));
    assert.throws(
      () => check([cmd.der, dave.issued.der, alice.issued.der]),
      denied(/lacks the "issue" permission/),
    );
    // Same path as the issuer: the delegate's own identity, no "issue" needed.
    const own = forgedLeaf(dave.issuer, ['alice', 'dave']);
    assert.deepEqual(check([own.der, dave.issued.der, alice.issued.der]).path, ['d', 'alice', 'dave']);
    // And with "issue" (carol) the same shape of leaf passes.
    const carolWeb = forgedLeaf(carol.issuer, ['alice', 'carol', 'web']);
    assert.deepEqual(check([carolWeb.der, carol.issued.der, alice.issued.der]).effective, CAROL);
  });

  it('"issue" is judged on the effective policy, not only the issuer\'s own', () => {
    // erin under dave: dave lacks "issue", so erin cannot hold it either (a narrowing).
    // Forge erin with "issue" under dave: the chain is refused as an escalation.
    const { certificate: erin, issuer: erinIssuer } = forgedCa(
      dave.issuer,
      ['alice', 'dave', 'erin'],
      policy(['info', 'issue'], null),
    );
    const web = forgedLeaf(erinIssuer, ['alice', 'dave', 'erin', 'web']);
    assert.throws(
      () => check([web.der, erin.der, dave.issued.der, alice.issued.der]),
      denied(/escalates .*permission issue not held/),
    );
  });

  // gina may issue but not delegate; her pathLen (1) would let OpenSSL accept a CA beneath her,
  // so only sigil's "delegate" rule stands in the way.
  const gina = delegate(alice.parent, 'gina', policy(['info', 'create', 'issue'], limits({ workloads: 1 })), {
    pathLen: 1,
    ttlMs: 5 * DAY,
  });
  const { certificate: sub, issuer: subIssuer } = forgedCa(
    gina.issuer,
    ['alice', 'gina', 'sub'],
    policy(['info', 'issue'], null),
  );

  it('a CA below a delegation needs "delegate" in its parent\'s effective policy', () => {
    assert.throws(
      () => delegate(gina.parent, 'sub', policy(['info'], null)),
      denied(/lacks the "delegate" permission/),
      'issueDelegation refuses it',
    );
    // A leaf signed by the forged sub-CA: the sub-CA sits in the middle of the chain.
    const web = forgedLeaf(subIssuer, ['alice', 'gina', 'sub', 'web']);
    assert.throws(
      () => check([web.der, sub.der, gina.issued.der, alice.issued.der]),
      denied(
        /delegation #1 "CN=forged sub" was made by delegation #2 "CN=sigil delegation alice\/gina", which lacks the "delegate" permission/,
      ),
    );
    // dave holds "delegate": a sub-delegation made properly under him passes in the middle of a
    // chain (below it, frank's own identity leaf).
    const frank = delegate(dave.parent, 'frank', policy(['info'], null), { pathLen: 0 });
    const frankIdentity = issueDelegateLeaf({ parent: frank.parent, trustDomain: TD, publicKey: newKey() });
    const result = check([frankIdentity.der, frank.issued.der, dave.issued.der, alice.issued.der]);
    assert.deepEqual(result.path, ['d', 'alice', 'dave', 'frank']);
    assert.deepEqual([...result.effective.permissions], ['info']);
  });

  it('a CA certificate checked as chain[0] is held to "delegate", not "issue"', () => {
    // checkDelegationChain decides "delegate" vs "issue" by position (index 0 is
    // the leaf), not by the CA flag: the forged sub-CA under gina (no
    // "delegate") is accepted when it is the first certificate of the chain,
    // e.g. presented as a client certificate or checked on its own.
    assert.equal(new X509Certificate(sub.der).ca, true);
    assert.throws(
      () => check([sub.der, gina.issued.der, alice.issued.der]),
      denied(/lacks the "delegate" permission/),
    );
  });
});
