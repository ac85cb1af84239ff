import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checkDelegationChain, delegationPath } from '../../src/authority/delegation.ts';
import { SigilError } from '../../src/errors.ts';
import { signatureAlgorithmFor, signWith } from '../../src/pki/algorithms.ts';
import { bitString, explicit, integer, sequence, time, unsignedInteger } from '../../src/pki/der.ts';
import { basicConstraints, extension, subjectAltName } from '../../src/pki/extensions.ts';
import type { IssuedCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, spkiDer } from '../../src/pki/keys.ts';
import type { GeneralName } from '../../src/pki/names.ts';
import { encodePem as toPem } from '../../src/pki/pem.ts';
import {
  PERMISSIONS,
  POLICY_EXTENSION_OID,
  type Policy,
  policyExtension,
} from '../../src/pki/policy-extension.ts';
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
  testRoot,
} from './delegation-fixtures.ts';

const denied = (pattern: RegExp) => (error: unknown) => {
  assert.ok(error instanceof SigilError, `a SigilError, got ${String(error)}`);
  assert.equal(error.code, 'permission_denied');
  assert.match(error.message, pattern);
  return true;
};

const { certificate: root, issuer: rootIssuer } = testRoot('sigil delegation test root');
const admin = { issuer: rootIssuer, certificateDer: root.der, policy: ADMIN };

const alice = delegate(admin, 'alice', ALICE, { pathLen: 2, ttlMs: 10 * DAY });
const carol = delegate(alice.parent, 'carol', CAROL, { pathLen: 0, ttlMs: 5 * DAY });

/** A leaf under `issuer` with the given SPIFFE path segments below /d/. */
function leaf(issuer: Issuer, segments: string[], p?: Policy): IssuedCertificate {
  return issuer.issue({
    publicKey: generateKeyPair('p256').publicKey,
    profile: 'client',
    sans: [{ type: 'uri', value: delegationPath(TD, segments) }],
    ttlMs: HOUR,
    extensions: p ? [policyExtension(p)] : [],
  });
}

/** A CA certificate "under" alice forged with issuer.issue, bypassing issueDelegation's checks. */
function forgedUnderAlice(name: string, extensions: { oid: string; value: Buffer }[]): Buffer {
  return alice.issuer.issue({
    publicKey: generateKeyPair('p256').publicKey,
    profile: 'intermediate',
    subject: { commonName: `forged ${name}` },
    sans: [{ type: 'uri', value: delegationPath(TD, ['alice', name]) }],
    ttlMs: DAY,
    pathLen: 0,
    extensions,
  }).der;
}

/** A CA certificate signed by alice's key with exactly these extensions and validity (things the Issuer won't write). */
function handMadeUnderAlice(extensions: Buffer[], notAfter: Date): Buffer {
  const algorithm = signatureAlgorithmFor(alice.key);
  const subject = Buffer.from(alice.issued.subjectDer);
  const now = Date.now();
  const tbs = sequence(
    explicit(0, integer(2)),
    unsignedInteger(Buffer.of(1, 2, 3)),
    algorithm.algorithmIdentifier,
    subject,
    sequence(time(new Date(now - 60_000)), time(notAfter)),
    subject,
    spkiDer(generateKeyPair('p256').publicKey),
    explicit(
      3,
      sequence(
        basicConstraints(true, 0),
        subjectAltName([{ type: 'uri', value: delegationPath(TD, ['alice', 'mallory']) }]),
        ...extensions,
      ),
    ),
  );
  return sequence(tbs, algorithm.algorithmIdentifier, bitString(signWith(algorithm, alice.key, tbs)));
}

const check = (chain: Buffer[]) => checkDelegationChain(chain, { trustDomain: TD, adminPolicy: ADMIN });

describe('delegationPath', () => {
  it('builds spiffe://<td>/d/<segments>', () => {
    assert.equal(delegationPath(TD, ['alice', 'carol']), 'spiffe://example.test/d/alice/carol');
  });
  it('refuses bad segment names', () => {
    for (const bad of ['Alice', '', 'a/b', '..', 'a b']) {
      assert.throws(() => delegationPath(TD, [bad]), SigilError);
    }
    assert.throws(() => delegationPath(TD, []), SigilError);
  });
});

describe('issueDelegation', () => {
  it('writes the SPIFFE ID, pathLen and policy', () => {
    assert.equal(alice.issued.id, 'spiffe://example.test/d/alice');
    assert.equal(carol.issued.id, 'spiffe://example.test/d/alice/carol');
    assert.equal(alice.issued.pathLen, 2);
    assert.equal(carol.issued.pathLen, 0);
    assert.deepEqual(check([carol.issued.der, alice.issued.der]).effective, CAROL);
  });

  it('refuses: escalation of a limit', () => {
    const greedy = policy(['info'], limits({ workloads: 3 }));
    assert.throws(() => delegate(alice.parent, 'dan', greedy), denied(/escalates.*workloads 3 exceeds/));
  });

  it('refuses: escalation of a permission', () => {
    const greedy = policy(['info', 'revoke'], limits({ workloads: 1 }));
    assert.throws(() => delegate(alice.parent, 'dan', greedy), denied(/permission revoke not held/));
  });

  it('refuses: escalation of each limit and each permission, at issuance and in a forged chain', () => {
    const cases: [string, Policy, RegExp][] = [
      ['workloads', policy([], limits({ workloads: 3 })), /workloads 3 exceeds/],
      ['memoryMiB', policy([], limits({ memoryMiB: 4097 })), /memoryMiB 4097 exceeds/],
      ['blockMiB', policy([], limits({ blockMiB: 1025 })), /blockMiB 1025 exceeds/],
      ['issuancePerHour', policy([], limits({ issuancePerHour: 61 })), /issuancePerHour 61 exceeds/],
      ['cpus', policy([], limits({ cpus: [0, 2] })), /cpus 2 not granted/],
      ['bridges', policy([], limits({ bridges: ['wan'] })), /bridges wan not granted/],
    ];
    for (const permission of PERMISSIONS.filter((p) => !ALICE.permissions.has(p))) {
      cases.push([permission, policy([permission], null), new RegExp(`permission ${permission} not held`)]);
    }
    for (const [what, greedy, reason] of cases) {
      assert.throws(() => delegate(alice.parent, 'dan', greedy), denied(reason), `issuance: ${what}`);
      const forged = forgedUnderAlice('dan', [policyExtension(greedy)]);
      assert.throws(() => check([forged, alice.issued.der]), denied(reason), `forged chain: ${what}`);
    }
  });

  it('refuses: a parent without the delegate permission', () => {
    assert.throws(
      () => delegate(carol.parent, 'erin', policy(['info'], null)),
      denied(/lacks the "delegate" permission/),
    );
  });

  it('refuses: pathLen overflow', () => {
    assert.throws(
      () => delegate(alice.parent, 'dan', policy(['info'], null), { pathLen: 2 }),
      denied(/pathLen overflow.*2 is not below the parent's pathLen 2/),
    );
    // A parent at pathLen 0 may hold "delegate" yet issue no CA beneath it.
    const bob = delegate(alice.parent, 'bob', policy(['info', 'delegate'], null), { pathLen: 0 });
    assert.throws(
      () => delegate(bob.parent, 'x', policy(['info'], null)),
      denied(/pathLen overflow: the parent has pathLen 0/),
    );
  });

  it('refuses: a delegation that outlives its parent (not clamped)', () => {
    assert.throws(
      () => delegate(alice.parent, 'dan', policy(['info'], null), { ttlMs: 11 * DAY }),
      denied(/outlive its parent/),
    );
  });
});

describe('checkDelegationChain', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-delegation-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('admin → alice → carol → leaf passes openssl verify -x509_strict and yields the intersection', () => {
    const web = leaf(carol.issuer, ['alice', 'carol', 'web']);
    writeFileSync(join(dir, 'root.pem'), toPem('CERTIFICATE', root.der));
    writeFileSync(
      join(dir, 'chain.pem'),
      toPem('CERTIFICATE', carol.issued.der) + toPem('CERTIFICATE', alice.issued.der),
    );
    writeFileSync(join(dir, 'leaf.pem'), toPem('CERTIFICATE', web.der));
    const out = execFileSync(
      'openssl',
      ['verify', '-x509_strict', '-CAfile', 'root.pem', '-untrusted', 'chain.pem', 'leaf.pem'],
      { cwd: dir, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] },
    );
    assert.match(out, /leaf\.pem: OK/);

    const result = check([web.der, carol.issued.der, alice.issued.der]);
    assert.deepEqual(result.path, ['d', 'alice', 'carol', 'web']);
    assert.deepEqual(result.effective, CAROL);
    // A leaf policy narrower still is intersected in.
    const narrow = policy(['info'], limits({ workloads: 1, cpus: [1], bridges: [], memoryMiB: 512 }));
    const narrowLeaf = leaf(carol.issuer, ['alice', 'carol', 'db'], narrow);
    assert.deepEqual(check([narrowLeaf.der, carol.issued.der, alice.issued.der]).effective, {
      version: 1,
      permissions: new Set(['info']),
      limits: limits({ workloads: 1, cpus: [1], bridges: [], memoryMiB: 512 }),
    });
    // Without the admin policy the topmost delegation is checked against nothing.
    assert.deepEqual(
      checkDelegationChain([web.der, carol.issued.der, alice.issued.der], { trustDomain: TD }).effective,
      CAROL,
    );
  });

  it('refuses (openssl): a name-constraint violation: DNS outside what the delegation was given', () => {
    // Constraints accumulate down the chain: alice was given no DNS names, so a
    // DNS-carrying subtree needs a parent that was given some.
    const frank = delegate(admin, 'frank', ALICE, {
      pathLen: 1,
      ttlMs: 10 * DAY,
      dnsNames: ['example.test'],
    });
    const erin = delegate(frank.parent, 'erin', policy(['info', 'issue'], null), {
      pathLen: 0,
      dnsNames: ['erin.example.test'],
    });
    const verify = (sans: GeneralName[], issuer: Issuer, chain: Buffer[]) => {
      const der = issuer.issue({
        publicKey: generateKeyPair('p256').publicKey,
        profile: 'server',
        subject: { commonName: 'dns constraint test' },
        sans,
        ttlMs: HOUR,
      }).der;
      writeFileSync(join(dir, 'root.pem'), toPem('CERTIFICATE', root.der));
      writeFileSync(join(dir, 'nc-chain.pem'), chain.map((c) => toPem('CERTIFICATE', c)).join(''));
      writeFileSync(join(dir, 'nc-leaf.pem'), toPem('CERTIFICATE', der));
      try {
        execFileSync(
          'openssl',
          ['verify', '-x509_strict', '-CAfile', 'root.pem', '-untrusted', 'nc-chain.pem', 'nc-leaf.pem'],
          { cwd: dir, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] },
        );
        return 'OK';
      } catch (error) {
        return String((error as { stderr?: string }).stderr ?? error);
      }
    };
    const erinChain = [erin.issued.der, frank.issued.der];
    const id = { type: 'uri' as const, value: delegationPath(TD, ['frank', 'erin', 'web']) };
    assert.equal(verify([id, { type: 'dns', value: 'api.erin.example.test' }], erin.issuer, erinChain), 'OK');
    for (const outside of ['evil.example.com', 'frank.example.test']) {
      assert.match(
        verify([id, { type: 'dns', value: outside }], erin.issuer, erinChain),
        /permitted subtree violation/,
        outside,
      );
    }
    assert.equal(check([erinChain[0], erinChain[1]]).path.join('/'), 'd/frank/erin');
    // carol was given no DNS names: any DNS name under her is refused.
    const carolId = { type: 'uri' as const, value: delegationPath(TD, ['alice', 'carol', 'web']) };
    assert.match(
      verify([carolId, { type: 'dns', value: 'carol.example.test' }], carol.issuer, [
        carol.issued.der,
        alice.issued.der,
      ]),
      /permitted subtree violation/,
    );
    // A URI in another trust domain is refused too.
    assert.match(
      verify([{ type: 'uri', value: 'spiffe://other.test/d/frank/erin/x' }], erin.issuer, erinChain),
      /permitted subtree violation/,
    );
  });

  it('refuses: escalation of a limit in a forged chain', () => {
    const forged = forgedUnderAlice('dan', [policyExtension(policy(['info'], limits({ memoryMiB: 8192 })))]);
    assert.throws(() => check([forged, alice.issued.der]), denied(/escalates.*memoryMiB 8192 exceeds/));
  });

  it('refuses: escalation of a permission in a forged chain', () => {
    const forged = forgedUnderAlice('dan', [policyExtension(policy(['info', 'admin'], null))]);
    assert.throws(() => check([forged, alice.issued.der]), denied(/permission admin not held/));
  });

  it('refuses: a sibling leaf placed under another subtree (path outside the parent subtree)', () => {
    const dan = delegate(alice.parent, 'dan', policy(['info', 'issue'], limits({ workloads: 1 })));
    // carol signs a leaf naming a place in dan's subtree.
    const intruder = leaf(carol.issuer, ['alice', 'dan', 'web']);
    assert.throws(
      () => check([intruder.der, carol.issued.der, alice.issued.der]),
      denied(/outside its parent's subtree \/d\/alice\/carol/),
    );
    // OpenSSL accepts it (URI name constraints cover the host only): the refusal is sigil's.
    writeFileSync(join(dir, 'root.pem'), toPem('CERTIFICATE', root.der));
    writeFileSync(
      join(dir, 'chain.pem'),
      toPem('CERTIFICATE', carol.issued.der) + toPem('CERTIFICATE', alice.issued.der),
    );
    writeFileSync(join(dir, 'intruder.pem'), toPem('CERTIFICATE', intruder.der));
    assert.match(
      execFileSync(
        'openssl',
        ['verify', '-x509_strict', '-CAfile', 'root.pem', '-untrusted', 'chain.pem', 'intruder.pem'],
        { cwd: dir, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] },
      ),
      /intruder\.pem: OK/,
    );
    // And dan's own leaf is fine under dan.
    assert.deepEqual(
      check([leaf(dan.issuer, ['alice', 'dan', 'web']).der, dan.issued.der, alice.issued.der]).path,
      ['d', 'alice', 'dan', 'web'],
    );
  });

  it('refuses: a chain of 10 certificates', () => {
    const wide = policy(['info', 'delegate', 'issue'], null);
    let parent = { issuer: rootIssuer, certificateDer: root.der, policy: wide };
    const chain: Buffer[] = [];
    for (let i = 0; i < 9; i++) {
      const next = delegate(parent, `n${i}`, wide);
      chain.unshift(next.issued.der);
      parent = next.parent;
    }
    const segments = Array.from({ length: 9 }, (_, i) => `n${i}`);
    chain.unshift(leaf(parent.issuer, [...segments, 'web']).der);
    assert.equal(chain.length, 10);
    assert.throws(() => check(chain), denied(/10 certificates; at most 9/));
    // Nine are fine.
    assert.equal(check(chain.slice(1)).path.length, 10);
  });

  it('refuses: a chain that carries no policy at all, even with an admin policy given', () => {
    const plain = rootIssuer.issue({
      publicKey: generateKeyPair('p256').publicKey,
      profile: 'client',
      sans: [{ type: 'uri', value: `spiffe://${TD}/node/n1` }],
      ttlMs: HOUR,
    });
    assert.throws(() => check([plain.der]), denied(/carries no delegation policy/));
  });

  it('refuses: a malformed extension', () => {
    const forged = forgedUnderAlice('dan', [{ oid: POLICY_EXTENSION_OID, value: Buffer.from('garbage') }]);
    assert.throws(() => check([forged, alice.issued.der]), denied(/policy extension refused/));
  });

  it('refuses: the extension marked critical', () => {
    const value = policyExtension(policy(['info'], null)).value;
    const forged = handMadeUnderAlice(
      [extension(POLICY_EXTENSION_OID, true, value)],
      new Date(Date.now() + DAY),
    );
    assert.throws(() => check([forged, alice.issued.der]), denied(/marked critical/));
  });

  it('refuses: a delegation that outlives its parent', () => {
    const forged = handMadeUnderAlice(
      [extension(POLICY_EXTENSION_OID, false, policyExtension(policy(['info'], null)).value)],
      new Date(Date.now() + 20 * DAY),
    );
    assert.throws(() => check([forged, alice.issued.der]), denied(/outlives its parent/));
  });
});
