// checkDelegationChain (src/pki/delegation-chain.ts): what a chain that
// OpenSSL has verified grants its leaf, and every rule it refuses by. Chains
// are made with issueDelegation where the rule is about a legitimate shape,
// and signed by hand (signedLeaf, signedCa, handMadeUnderAlice) where it is
// about what a delegate could sign with its own key.
import assert from 'node:assert/strict';
import type { KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import { signatureAlgorithmFor, signWith } from '../../src/pki/algorithms.ts';
import {
  checkDelegationChain,
  DEFAULT_MAX_CHAIN_LENGTH,
  delegatedKey,
} from '../../src/pki/delegation-chain.ts';
import { bitString, explicit, integer, sequence, time, unsignedInteger } from '../../src/pki/der.ts';
import { basicConstraints, extension, subjectAltName } from '../../src/pki/extensions.ts';
import { generateKeyPair, spkiDer } from '../../src/pki/keys.ts';
import { dnsName, ipAddress } from '../../src/pki/names.ts';
import {
  DEFAULT_POLICY_OID,
  encodePolicy,
  PERMISSIONS,
  type Policy,
  parsePolicyOid,
} from '../../src/pki/policy-extension.ts';
import { denied } from '../support/refusals.ts';
import {
  ALICE,
  ALICE_ESCALATIONS,
  CAROL,
  check,
  DAVE,
  DAY,
  delegate,
  delegateLeaf,
  HOUR,
  idOf,
  limits,
  OID,
  opensslVerifier,
  policy,
  signedCa,
  signedLeaf,
  TD,
  testDeployment,
  uri,
} from './delegation-fixtures.ts';

// The deployment (a root, a replica intermediate, alice, carol and dave), and bob beside carol.
const { root, rootIssuer, replica, replicaIssuer, admin, alice, carol, dave } = testDeployment();
const bob = delegate(alice.parent, 'bob', CAROL, { pathLen: 0, ttlMs: 5 * DAY });

const CAROL_ID = 'spiffe://carol.alice.d.example.test';
const carolChain = [carol.issued.der, alice.issued.der];

/** openssl verify -x509_strict of `leaf` under the root with `chain` untrusted. */
const opensslVerdict = opensslVerifier(root, replica);

/**
 * A certificate signed by `signer`'s key with exactly this name, CA flag,
 * validity and extensions: what the Issuer won't write (it clamps lifetimes
 * and refuses critical custom extensions). Subject and issuer name are the
 * signer's; openssl is not asked about these.
 */
function handMade(
  signer: { key: KeyObject; issued: { subjectDer: Buffer } },
  spiffeId: string,
  isCa: boolean,
  notAfter: Date,
  extensions: Buffer[] = [],
): Buffer {
  const algorithm = signatureAlgorithmFor(signer.key);
  const subject = Buffer.from(signer.issued.subjectDer);
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
        isCa ? basicConstraints(true, 0) : basicConstraints(false),
        subjectAltName([uri(spiffeId)]),
        ...extensions,
      ),
    ),
  );
  return sequence(tbs, algorithm.algorithmIdentifier, bitString(signWith(algorithm, signer.key, tbs)));
}

/** A CA named spiffe://mallory.alice.d.<td>, signed by alice's key with these extensions and end. */
const handMadeUnderAlice = (extensions: Buffer[], notAfter: Date): Buffer =>
  handMade(alice, idOf(['alice', 'mallory']), true, notAfter, extensions);

/** Chains ending at a CA are checked as a delegate reads its own. */
const atDelegation = { endsAtDelegation: true } as const;

/** A CA "under" alice, signed with alice's key, named `name` beneath her, carrying `p`. */
const forgedUnderAlice = (name: string, p: Policy) =>
  signedCa(alice.issuer, [uri(idOf(['alice', name]))], p, { commonName: `forged ${name}` }).certificate.der;

describe('checkDelegationChain: what a chain grants', () => {
  it('root → replica → alice → carol → workload leaf: openssl accepts it; the result names the leaf, its subtree and key', async () => {
    const web = signedLeaf(carol.issuer, idOf(['alice', 'carol'], '/web'));
    const verdict = await opensslVerdict(web.der, carolChain);
    assert.ok(verdict.ok, verdict.output);

    const result = check([web.der, carol.issued.der, alice.issued.der, replica.der]);
    assert.equal(result.spiffeId, 'spiffe://carol.alice.d.example.test/web');
    assert.deepEqual(result.subtree, ['alice', 'carol']);
    assert.equal(result.path, '/web');
    assert.equal(result.key, '/alice/carol//web');
    assert.deepEqual(result.effective, CAROL);
    assert.deepEqual(
      result.links.map((link) => [link.spiffeId, link.subtree, link.policy === null]),
      [
        ['spiffe://carol.alice.d.example.test/web', ['alice', 'carol'], true],
        [CAROL_ID, ['alice', 'carol'], false],
        ['spiffe://alice.d.example.test', ['alice'], false],
        [null, null, true],
      ],
    );
    assert.deepEqual(result.links[1].policy, CAROL);
    assert.deepEqual(result.links[2].policy, ALICE);
    // Without the replica intermediate the answer is the same.
    assert.deepEqual(check([web.der, ...carolChain]).effective, CAROL);
  });

  it('a leaf policy narrower still is intersected in', () => {
    const narrow = policy(['info'], limits({ workloads: 1, cpus: [1], bridges: [], memoryMiB: 512 }));
    const db = signedLeaf(carol.issuer, idOf(['alice', 'carol'], '/db'), { policy: narrow });
    assert.deepEqual(check([db.der, ...carolChain]).effective, {
      version: 1,
      permissions: new Set(['info']),
      limits: limits({ workloads: 1, cpus: [1], bridges: [], memoryMiB: 512 }),
    });
  });

  it("the delegate's own identity leaf: its delegation's ID, key and policy", () => {
    const identity = delegateLeaf(carol.parent);
    const result = check([identity.der, ...carolChain]);
    assert.equal(result.spiffeId, CAROL_ID);
    assert.deepEqual(result.subtree, ['alice', 'carol']);
    assert.equal(result.path, '');
    assert.equal(result.key, '/alice/carol');
    assert.deepEqual(result.effective, CAROL);
  });

  it('a command certificate one name below its delegation: its own subtree and key', () => {
    const ci = signedLeaf(carol.issuer, idOf(['alice', 'carol', 'ci']), { policy: policy(['info'], null) });
    const result = check([ci.der, ...carolChain]);
    assert.equal(result.spiffeId, 'spiffe://ci.carol.alice.d.example.test');
    assert.deepEqual(result.subtree, ['alice', 'carol', 'ci']);
    assert.equal(result.path, '');
    assert.equal(result.key, '/alice/carol/ci');
    assert.deepEqual(result.effective, policy(['info'], null));
  });

  it("a command certificate the deployment issued directly (an admin's): spiffe://<name>.d.<td>", () => {
    const ops = signedLeaf(replicaIssuer, idOf(['ops']), { policy: policy(['info', 'revoke'], null) });
    const result = check([ops.der, replica.der]);
    assert.deepEqual(result.subtree, ['ops']);
    assert.equal(result.key, '/ops');
    assert.deepEqual(result.effective, policy(['info', 'revoke'], null));
  });

  it('delegatedKey: the subtree key, and a workload path after a double slash', () => {
    assert.equal(delegatedKey(['alice', 'carol'], ''), '/alice/carol');
    assert.equal(delegatedKey(['alice', 'carol'], '/web'), '/alice/carol//web');
    assert.equal(delegatedKey(['alice'], '/a/b'), '/alice//a/b');
    // A workload key sorts beneath its delegation, apart from any sub-delegation.
    assert.ok(delegatedKey(['alice', 'carol'], '/web').startsWith('/alice/carol/'));
    assert.notEqual(delegatedKey(['alice', 'carol'], '/web'), delegatedKey(['alice', 'carol', 'web'], ''));
  });

  it('endsAtDelegation: a delegate reading its own chain gets its delegation', () => {
    const result = check(carolChain, { endsAtDelegation: true });
    assert.equal(result.spiffeId, CAROL_ID);
    assert.deepEqual(result.subtree, ['alice', 'carol']);
    assert.equal(result.key, '/alice/carol');
    assert.deepEqual(result.effective, CAROL);
    assert.deepEqual(check([alice.issued.der, replica.der], { endsAtDelegation: true }).effective, ALICE);
  });
});

describe('checkDelegationChain: the policy OID is a parameter', () => {
  it('a chain whose policies are under another OID carries none under this one', () => {
    const other = parsePolicyOid('2.999.42.8');
    const elsewhere = delegate(admin, 'alice', ALICE, { policyOid: other });
    const identity = delegateLeaf(
      { issuer: elsewhere.issuer, certificateDer: elsewhere.issued.der },
      { policyOid: other },
    );
    assert.deepEqual(check([identity.der, elsewhere.issued.der], { policyOid: other }).effective, ALICE);
    assert.throws(
      () => check([identity.der, elsewhere.issued.der]),
      denied(/CA #1 "CN=sigil delegation alice" names a delegation subtree but carries no policy/),
    );
    assert.throws(
      () => check([elsewhere.issued.der], { endsAtDelegation: true }),
      denied(/names a delegation subtree but carries no policy/),
    );
    assert.throws(
      () => check(carolChain, { endsAtDelegation: true, policyOid: DEFAULT_POLICY_OID }),
      denied(/names a delegation subtree but carries no policy/),
    );
  });
});

describe('checkDelegationChain: escalation, extension and lifetime refusals', () => {
  it('refuses: escalation of each limit and each permission in a forged chain', () => {
    assert.equal(ALICE_ESCALATIONS.length, 6 + PERMISSIONS.length - ALICE.permissions.size);
    for (const [what, greedy, reason] of ALICE_ESCALATIONS) {
      const forged = forgedUnderAlice('dan', greedy);
      assert.throws(() => check([forged, alice.issued.der], atDelegation), denied(reason), what);
      // And on a leaf's own policy.
      const leaf = signedLeaf(alice.issuer, idOf(['alice'], '/web'), { policy: greedy });
      assert.throws(() => check([leaf.der, alice.issued.der]), denied(reason), `leaf: ${what}`);
    }
  });

  it('refuses: a malformed policy extension', () => {
    const forged = handMadeUnderAlice(
      [extension(OID.text, false, Buffer.from('garbage'))],
      new Date(Date.now() + DAY),
    );
    assert.throws(() => check([forged, alice.issued.der], atDelegation), denied(/policy extension refused/));
  });

  it('refuses: the policy extension marked critical', () => {
    const forged = handMadeUnderAlice(
      [extension(OID.text, true, encodePolicy(policy(['info'], null)))],
      new Date(Date.now() + DAY),
    );
    assert.throws(() => check([forged, alice.issued.der], atDelegation), denied(/marked critical/));
  });

  it('refuses: a delegation that outlives its parent', () => {
    const forged = handMadeUnderAlice(
      [extension(OID.text, false, encodePolicy(policy(['info'], null)))],
      new Date(Date.now() + 20 * DAY),
    );
    assert.throws(
      () => check([forged, alice.issued.der], atDelegation),
      denied(/CA #0 .* outlives its parent/),
    );
    // Within the parent's lifetime the same shape passes.
    const fine = handMadeUnderAlice(
      [extension(OID.text, false, encodePolicy(policy(['info'], null)))],
      new Date(Date.now() + DAY),
    );
    assert.deepEqual(check([fine, alice.issued.der], atDelegation).subtree, ['alice', 'mallory']);
  });

  it('refuses: a leaf that outlives its delegation', () => {
    const web = idOf(['alice', 'carol'], '/web');
    const long = handMade(carol, web, false, new Date(carol.issued.notAfter.getTime() + HOUR));
    assert.throws(() => check([long, ...carolChain]), denied(/leaf #0 .* outlives its parent/));
    const fits = handMade(carol, web, false, new Date(carol.issued.notAfter.getTime()));
    assert.equal(check([fits, ...carolChain]).spiffeId, web);
  });

  it('refuses: a chain of 10 certificates (nine pass)', () => {
    const wide = policy(['info', 'delegate', 'issue'], null);
    let parent = { issuer: rootIssuer, certificateDer: root.der, policy: wide };
    const chain: Buffer[] = [];
    const names: string[] = [];
    for (let i = 0; i < 9; i++) {
      const next = delegate(parent, `n${i}`, wide);
      names.push(`n${i}`);
      chain.unshift(next.issued.der);
      parent = next.parent;
    }
    chain.unshift(signedLeaf(parent.issuer, idOf(names, '/web')).der);
    assert.equal(chain.length, 10);
    assert.equal(DEFAULT_MAX_CHAIN_LENGTH, 9);
    assert.throws(() => check(chain), denied(/10 certificates; at most 9 are accepted/));
    // Nine are fine: the nine delegations alone, read as a chain ending at n8.
    assert.deepEqual(check(chain.slice(1), { endsAtDelegation: true }).subtree, names);
    // maxLength narrows it.
    assert.throws(
      () => check(chain.slice(1), { endsAtDelegation: true, maxLength: 8 }),
      denied(/9 certificates; at most 8/),
    );
  });

  it('refuses: an empty chain and unreadable certificates', () => {
    assert.throws(() => check([]), denied(/the certificate chain is empty/));
    assert.throws(() => check([Buffer.from('garbage')]), denied(/chain certificate #0 is unreadable/));
    assert.throws(
      () => check([carol.issued.der.subarray(0, 50), alice.issued.der]),
      denied(/chain certificate #0 is unreadable/),
    );
  });

  it('refuses: a chain that carries no policy at all', () => {
    // A deployment identity: not a delegated name, so not a delegate at all.
    const node = signedLeaf(replicaIssuer, `spiffe://${TD}/node/n1`);
    assert.throws(() => check([node.der, replica.der]), denied(/is not in a delegation subtree/));
    // A delegated-looking name the deployment signed without any policy.
    const bare = signedLeaf(replicaIssuer, idOf(['ops']));
    assert.throws(() => check([bare.der, replica.der]), denied(/carries no delegation policy/));
  });
});

describe('checkDelegationChain: names of delegations', () => {
  it('refuses: a CA with a policy above the delegations but a path-form, wrong-host or deeper ID', () => {
    for (const id of [
      `spiffe://${TD}/d/alice`, // the old path form
      `spiffe://${TD}/admin/alice`,
      `spiffe://${TD}`,
      'spiffe://alice.d.other.test',
      'spiffe://alice.d.example.test/web', // a path
      'spiffe://carol.alice.d.example.test', // two levels down with nothing above it
    ]) {
      const ca = signedCa(replicaIssuer, [uri(id)], ALICE, { pathLen: 1 });
      const leaf = signedLeaf(ca.issuer, idOf(['alice'], '/web'));
      assert.throws(
        () => check([leaf.der, ca.certificate.der, replica.der]),
        denied(
          /carries a policy, so it must be a direct delegation named spiffe:\/\/<name>\.d\.example\.test/,
        ),
        id,
      );
      assert.throws(
        () => check([ca.certificate.der, replica.der], { endsAtDelegation: true }),
        denied(/must be a direct delegation/),
        `${id} (as the end)`,
      );
    }
    // Without any SPIFFE ID either.
    const anonymous = signedCa(replicaIssuer, [], ALICE, { commonName: 'anonymous' });
    assert.throws(
      () => check([anonymous.certificate.der, replica.der], { endsAtDelegation: true }),
      denied(/it names nothing/),
    );
  });

  it('refuses: a delegation-named CA without a policy', () => {
    const ca = signedCa(replicaIssuer, [uri(idOf(['alice']))], null);
    assert.throws(
      () => check([ca.certificate.der, replica.der], { endsAtDelegation: true }),
      denied(/names a delegation subtree but carries no policy/),
    );
  });

  it('refuses: a CA beneath a delegation that is not exactly one level below its parent', () => {
    for (const [id, why] of [
      [idOf(['alice', 'carol', 'x']), 'two levels below'],
      [idOf(['alice']), "the parent's own host"],
      [idOf(['bob']), 'a sibling of the parent'],
      [idOf(['alice', 'bob', 'x']), "under a sibling's host"],
      [idOf(['alice', 'carol'], '/sub'), 'a path in a child host'],
    ] as const) {
      const ca = signedCa(alice.issuer, [uri(id)], policy(['info'], null));
      assert.throws(
        () => check([ca.certificate.der, alice.issued.der], { endsAtDelegation: true }),
        denied(/must be named one level below it/),
        why,
      );
    }
    // Outside the delegated hosts altogether.
    for (const id of [
      `spiffe://${TD}/admin/x`,
      `spiffe://${TD}/d/alice/x`,
      'spiffe://x.alice.d.other.test',
    ]) {
      const ca = signedCa(alice.issuer, [uri(id)], policy(['info'], null));
      assert.throws(
        () => check([ca.certificate.der, alice.issued.der], { endsAtDelegation: true }),
        denied(/outside the subtree of CA #1/),
        id,
      );
    }
    // One level down is accepted.
    const ok = signedCa(alice.issuer, [uri(idOf(['alice', 'x']))], policy(['info'], null));
    assert.deepEqual(check([ok.certificate.der, alice.issued.der], { endsAtDelegation: true }).subtree, [
      'alice',
      'x',
    ]);
  });

  it('refuses: a CA beneath a delegation without a policy', () => {
    const ca = signedCa(alice.issuer, [uri(idOf(['alice', 'x']))], null);
    assert.throws(
      () => check([ca.certificate.der, alice.issued.der], { endsAtDelegation: true }),
      denied(/is a CA beneath a delegation without a policy/),
    );
  });

  it('refuses: a CA beneath a delegation without "delegate" above it', () => {
    // carol lacks "delegate": a CA she signs anyway is refused (her pathLen 0 would stop OpenSSL too).
    const sub = signedCa(carol.issuer, [uri(idOf(['alice', 'carol', 'sub']))], policy(['info'], null));
    assert.throws(
      () => check([sub.certificate.der, ...carolChain], { endsAtDelegation: true }),
      denied(
        /CA #0 .* was made by CA #1 "CN=sigil delegation alice\/carol", which lacks the "delegate" permission/,
      ),
    );
    // gina may issue but not delegate, with a pathLen that lets OpenSSL accept a CA beneath her.
    const gina = delegate(alice.parent, 'gina', policy(['info', 'issue'], null), { pathLen: 1 });
    const ginaSub = signedCa(
      gina.issuer,
      [uri(idOf(['alice', 'gina', 'sub']))],
      policy(['info', 'issue'], null),
    );
    const web = signedLeaf(ginaSub.issuer, idOf(['alice', 'gina', 'sub'], '/web'));
    assert.throws(
      () => check([web.der, ginaSub.certificate.der, gina.issued.der, alice.issued.der]),
      denied(/lacks the "delegate" permission/),
    );
    // dave holds "delegate": a sub-delegation made properly under him passes mid-chain.
    const frank = delegate(dave.parent, 'frank', policy(['info'], null), { pathLen: 0 });
    const frankIdentity = delegateLeaf(frank.parent);
    const result = check([frankIdentity.der, frank.issued.der, dave.issued.der, alice.issued.der]);
    assert.deepEqual(result.subtree, ['alice', 'dave', 'frank']);
    assert.deepEqual([...result.effective.permissions], ['info']);
  });
});

describe('checkDelegationChain: leaves', () => {
  it('refuses: a path leaf or a command certificate from a delegation without "issue"', () => {
    const daveChain = [dave.issued.der, alice.issued.der];
    const web = signedLeaf(dave.issuer, idOf(['alice', 'dave'], '/web'));
    assert.throws(
      () => check([web.der, ...daveChain]),
      denied(
        /leaf #0 .* was made by CA #1 "CN=sigil delegation alice\/dave", which lacks the "issue" permission/,
      ),
    );
    const ci = signedLeaf(dave.issuer, idOf(['alice', 'dave', 'ci']), { policy: policy(['info'], null) });
    assert.throws(() => check([ci.der, ...daveChain]), denied(/lacks the "issue" permission/));
    // A command certificate without a policy of its own is held to the same rule.
    const bare = signedLeaf(dave.issuer, idOf(['alice', 'dave', 'ci']));
    assert.throws(() => check([bare.der, ...daveChain]), denied(/lacks the "issue" permission/));
    // The delegate's own identity needs no "issue".
    const own = signedLeaf(dave.issuer, idOf(['alice', 'dave']));
    assert.deepEqual(check([own.der, ...daveChain]).effective, DAVE);
  });

  it('"issue" is judged on the effective policy: a sub-delegation cannot hold what its parent lacks', () => {
    const erin = signedCa(
      dave.issuer,
      [uri(idOf(['alice', 'dave', 'erin']))],
      policy(['info', 'issue'], null),
    );
    const web = signedLeaf(erin.issuer, idOf(['alice', 'dave', 'erin'], '/web'));
    assert.throws(
      () => check([web.der, erin.certificate.der, dave.issued.der, alice.issued.der]),
      denied(/escalates .*permission issue not held/),
    );
  });

  it("refuses: a leaf in another host (a sibling's, a deeper one with a path, the parent's, the trust domain's)", () => {
    const outside: [string, string][] = [
      [idOf(['alice', 'bob']), "the sibling bob's identity"],
      [idOf(['alice', 'bob'], '/web'), "a workload in bob's host"],
      [idOf(['alice', 'bob', 'ci']), "a command certificate under bob's host"],
      [idOf(['alice', 'carol', 'x'], '/web'), 'a path in a deeper host'],
      [idOf(['alice', 'carol', 'x', 'y']), 'two names below'],
      [idOf(['alice']), "the parent alice's identity"],
      [idOf(['alice'], '/web'), "a workload in alice's host"],
      [`spiffe://${TD}/admin/x`, 'an admin of the trust domain'],
      [`spiffe://${TD}/replica/r1`, 'a replica of the trust domain'],
      [`spiffe://${TD}/d/alice/carol/web`, 'the old path form'],
      ['spiffe://carol.alice.d.other.test/web', 'another trust domain'],
    ];
    for (const [id, what] of outside) {
      const leaf = signedLeaf(carol.issuer, id);
      assert.throws(() => check([leaf.der, ...carolChain]), denied(/outside the subtree of CA #1/), what);
    }
    const none = signedLeaf(carol.issuer, '', { uris: [], sans: [dnsName('web.example.test')] });
    assert.throws(() => check([none.der, ...carolChain]), denied(/has no SPIFFE ID, outside the subtree/));
  });

  it('sibling isolation: OpenSSL refuses a URI in a sibling host too, and the sibling itself passes', async () => {
    const intruder = signedLeaf(carol.issuer, idOf(['alice', 'bob'], '/web'));
    const verdict = await opensslVerdict(intruder.der, carolChain);
    assert.equal(verdict.ok, false);
    assert.match(verdict.error, /permitted subtree violation/);
    const own = signedLeaf(bob.issuer, idOf(['alice', 'bob'], '/web'));
    assert.ok((await opensslVerdict(own.der, [bob.issued.der, alice.issued.der])).ok);
    assert.deepEqual(check([own.der, bob.issued.der, alice.issued.der]).subtree, ['alice', 'bob']);
  });

  it('refuses: a leaf directly under the deployment with a path or a deeper host', () => {
    for (const id of [idOf(['ops'], '/web'), idOf(['alice', 'ops'])]) {
      const leaf = signedLeaf(replicaIssuer, id, { policy: policy(['info'], null) });
      assert.throws(() => check([leaf.der, replica.der]), denied(/is not in a delegation subtree/), id);
    }
  });

  it('refuses: two URI SANs beneath a delegation (two SPIFFE IDs, or a SPIFFE ID and another URI)', () => {
    const twoIds = signedLeaf(carol.issuer, '', {
      uris: [idOf(['alice', 'carol'], '/web'), idOf(['alice', 'carol'], '/db')],
    });
    assert.throws(() => check([twoIds.der, ...carolChain]), denied(/carries 2 SPIFFE IDs; at most one/));
    const other = signedLeaf(carol.issuer, '', {
      uris: [idOf(['alice', 'carol'], '/web'), 'https://admin.example.test/'],
    });
    assert.throws(
      () => check([other.der, ...carolChain]),
      denied(/carries 2 URI SANs; beneath a delegation only the SPIFFE ID is allowed/),
    );
    // On a CA beneath a delegation too.
    const ca = signedCa(
      alice.issuer,
      [uri(idOf(['alice', 'x'])), uri('urn:example:x')],
      policy(['info'], null),
    );
    assert.throws(
      () => check([ca.certificate.der, alice.issued.der], { endsAtDelegation: true }),
      denied(/carries 2 URI SANs/),
    );
  });

  it('refuses: a common name that looks like a host name or IP address but is not a SAN', () => {
    const id = idOf(['alice', 'carol'], '/web');
    for (const commonName of [
      'evil.example.com',
      'EVIL.Example.com',
      'evil.example.com.',
      '*.example.com',
      'w*.example.com',
      'a_b.example.com',
      '10.0.0.1',
      '127.0.0.1',
      'fd00::1',
      '::1',
    ]) {
      const leaf = signedLeaf(carol.issuer, id, { commonName });
      assert.throws(
        () => check([leaf.der, ...carolChain]),
        denied(/has the common name .* which looks like a host name or IP address but is not among its SANs/),
        commonName,
      );
    }
    // An IPv6 CN is compared as an address: another spelling of a SAN's address is that SAN.
    const spelled = signedLeaf(carol.issuer, id, { commonName: 'FD00:0::1', sans: [ipAddress('fd00::1')] });
    assert.equal(check([spelled.der, ...carolChain]).spiffeId, id);
    // Being another SAN type does not help: an IP-looking CN with only a DNS SAN of the same text is not there.
    const mismatched = signedLeaf(carol.issuer, id, {
      commonName: '10.0.0.2',
      sans: [ipAddress('10.0.0.1')],
    });
    assert.throws(() => check([mismatched.der, ...carolChain]), denied(/common name "10\.0\.0\.2"/));
  });

  it('accepts: a host-like common name that is also a SAN, and one that does not look like a host', () => {
    const id = idOf(['alice', 'carol'], '/web');
    const cases = [
      { commonName: 'api.example.test', sans: [dnsName('api.example.test')] },
      { commonName: 'API.Example.Test', sans: [dnsName('api.example.test')] },
      { commonName: '10.0.0.1', sans: [ipAddress('10.0.0.1')] },
      { commonName: 'fd00::1', sans: [ipAddress('fd00::1')] },
      { commonName: 'sigil workload alice/carol web', sans: [] },
      { commonName: 'spiffe://carol.alice.d.example.test/web', sans: [] },
    ];
    for (const { commonName, sans } of cases) {
      const leaf = signedLeaf(carol.issuer, id, { commonName, sans });
      assert.equal(check([leaf.der, ...carolChain]).spiffeId, id, commonName);
    }
  });

  it('refuses: a CA certificate as the leaf; accepted as the end of a chain with endsAtDelegation', () => {
    assert.throws(
      () => check(carolChain),
      denied(/is a CA certificate; a delegate calls with its identity leaf, never with a CA/),
    );
    assert.equal(check(carolChain, { endsAtDelegation: true }).spiffeId, CAROL_ID);
    // endsAtDelegation with a leaf at the end is refused: it is not a delegation.
    const identity = signedLeaf(carol.issuer, CAROL_ID);
    assert.throws(
      () => check([identity.der, ...carolChain], { endsAtDelegation: true }),
      denied(/is not a CA but is not the leaf/),
    );
  });

  it('refuses: a non-CA in the middle of a chain', () => {
    const identity = signedLeaf(carol.issuer, CAROL_ID);
    const below = signedLeaf(carol.issuer, idOf(['alice', 'carol'], '/web'));
    assert.throws(
      () => check([below.der, identity.der, ...carolChain]),
      denied(/#1 .* is not a CA but is not the leaf/),
    );
  });

  it('a command certificate from the same chain check as the server applies: checkDelegationChain with explicit options', () => {
    const ci = signedLeaf(carol.issuer, idOf(['alice', 'carol', 'ci']), { policy: policy(['info'], null) });
    const result = checkDelegationChain([ci.der, ...carolChain], { trustDomain: TD, policyOid: OID });
    assert.equal(result.key, '/alice/carol/ci');
    // Under another trust domain the same chain is no delegation at all.
    assert.throws(
      () => checkDelegationChain([ci.der, ...carolChain], { trustDomain: 'other.test', policyOid: OID }),
      denied(/carries a policy, so it must be a direct delegation/),
    );
  });

  it('HOUR is shorter than every delegation here (sanity of the fixtures)', () => {
    assert.ok(carol.issued.notAfter.getTime() - Date.now() > HOUR);
  });
});
