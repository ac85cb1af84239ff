// Issuing delegations and the leaves inside them (src/pki/delegation-certificates.ts):
// what issueDelegation and issueDelegateLeaf write (SPIFFE IDs on hosts,
// pathLen, the policy under the deployment's OID, name constraints) and
// refuse; and what a plain verifier (openssl verify) then refuses among the
// leaves a delegate could sign with its own key.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, id_ce_nameConstraints, NameConstraints } from '@peculiar/asn1-x509';
import { SigilError } from '../../src/errors.ts';
import { type NameGrants, NO_DNS, NO_GRANTS, parseGrants } from '../../src/pki/delegation-certificates.ts';
import { dnsName, type GeneralName, ipAddress } from '../../src/pki/names.ts';
import { DEFAULT_POLICY_OID, type Permission, readPolicy } from '../../src/pki/policy-extension.ts';
import { ExtendedKeyUsage } from '../../src/pki/profiles.ts';
import { pemOf } from '../support/pem.ts';
import { denied, invalid } from '../support/refusals.ts';
import {
  ALICE,
  ALICE_ESCALATIONS,
  CAROL,
  check,
  DAVE,
  DAY,
  type Delegate,
  delegate,
  delegateLeaf,
  HOUR,
  idOf,
  limits,
  OID,
  opensslVerifier,
  type Parent,
  policy,
  signedCa,
  signedLeaf,
  TD,
  testDeployment,
  uri,
} from './delegation-fixtures.ts';

const { root, rootIssuer, replica, replicaIssuer, admin, alice, carol, dave } = testDeployment();

// frank was given DNS names and IP ranges; erin, under him, a part of them.
const FRANK = policy(['info', 'create', 'delegate', 'issue'], limits());
const frank = delegate(admin, 'frank', FRANK, {
  pathLen: 1,
  ttlMs: 10 * DAY,
  dnsNames: ['example.com', 'Frank.Example.Test'],
  ipRanges: ['10.0.0.0/8', 'fd00::/16'],
});
const erin = delegate(frank.parent, 'erin', policy(['info', 'issue'], null), {
  pathLen: 0,
  dnsNames: ['erin.frank.example.test'],
  ipRanges: ['10.1.0.0/16'],
});

const uris = (der: Buffer): string[] =>
  (new X509Certificate(der).subjectAltName ?? '')
    .split(', ')
    .filter((name) => name.startsWith('URI:'))
    .map((name) => name.slice(4));

interface Constraints {
  readonly critical: boolean;
  readonly permitted: string[];
  readonly excluded: string[];
}

/** The name constraints of a certificate, read with @peculiar/asn1-x509: "DNS:x", "IP:10.0.0.0/8", "URI:h". */
function constraintsOf(der: Buffer): Constraints | null {
  const certificate = AsnConvert.parse(der, Certificate);
  const found = certificate.tbsCertificate.extensions?.find((e) => e.extnID === id_ce_nameConstraints);
  if (!found) return null;
  const value = AsnConvert.parse(found.extnValue, NameConstraints);
  const show = (subtrees: NameConstraints['permittedSubtrees']): string[] =>
    [...(subtrees ?? [])].map(({ base }) => {
      if (base.dNSName !== undefined) return `DNS:${base.dNSName}`;
      if (base.iPAddress !== undefined) return `IP:${base.iPAddress}`;
      if (base.uniformResourceIdentifier !== undefined) return `URI:${base.uniformResourceIdentifier}`;
      return `other:${JSON.stringify(base)}`;
    });
  return {
    critical: found.critical,
    permitted: show(value.permittedSubtrees),
    excluded: show(value.excludedSubtrees),
  };
}

const opensslText = (der: Buffer): string =>
  execFileSync('openssl', ['x509', '-noout', '-text'], { input: pemOf(der), encoding: 'utf8' });

/** openssl verify -x509_strict of a leaf under the root, with its chain up to the replica. */
const opensslVerdict = opensslVerifier(root, replica);

const chainOf = (...delegates: Delegate[]): Buffer[] => delegates.map((d) => d.issued.der);

describe('issueDelegation: what it writes', () => {
  it('the SPIFFE ID of its host, the subtree, pathLen, the policy under the given OID and a CA certificate', () => {
    assert.equal(alice.issued.id, 'spiffe://alice.d.example.test');
    assert.equal(carol.issued.id, 'spiffe://carol.alice.d.example.test');
    assert.deepEqual(alice.issued.subtree, ['alice']);
    assert.deepEqual(carol.issued.subtree, ['alice', 'carol']);
    assert.deepEqual(uris(carol.issued.der), ['spiffe://carol.alice.d.example.test']);
    assert.equal(alice.issued.pathLen, 2);
    assert.equal(carol.issued.pathLen, 0);
    const x509 = new X509Certificate(carol.issued.der);
    assert.equal(x509.ca, true);
    assert.match(x509.subject, /CN=sigil delegation alice\/carol/);
    assert.ok(x509.checkIssued(new X509Certificate(alice.issued.der)));
    assert.deepEqual(readPolicy(carol.issued.der, OID), CAROL);
    assert.deepEqual(carol.issued.policy, CAROL);
    // Under another OID the certificate carries no policy at all.
    assert.equal(readPolicy(carol.issued.der, DEFAULT_POLICY_OID), null);
    assert.match(opensslText(carol.issued.der), /^\s*2\.999\.42\.7:\s*$/m);
    assert.deepEqual(
      check([carol.issued.der, alice.issued.der], { endsAtDelegation: true }).effective,
      CAROL,
    );
  });

  it("defaults: pathLen one below the parent, lifetime the parent's remaining one", () => {
    const bare = delegate(alice.parent, 'bare', policy(['info'], null));
    assert.equal(bare.issued.pathLen, 1);
    assert.equal(bare.issued.notAfter.getTime(), alice.issued.notAfter.getTime());
    // Under a parent without pathLen (the replica intermediate here) it stays unlimited.
    const top = delegate(admin, 'top', policy(['info'], null));
    assert.equal(top.issued.pathLen, null);
  });

  it('name constraints without grants: its host and beneath, DNS "invalid", every IPv4 and IPv6 address excluded', () => {
    assert.equal(NO_DNS, 'invalid');
    assert.deepEqual(NO_GRANTS, { dnsNames: [], ipRanges: [] });
    assert.deepEqual(carol.issued.grants, NO_GRANTS);
    assert.deepEqual(constraintsOf(carol.issued.der), {
      critical: true,
      permitted: ['DNS:invalid', 'URI:carol.alice.d.example.test', 'URI:.carol.alice.d.example.test'],
      excluded: ['IP:0.0.0.0/0', 'IP:::/0'],
    });
    // openssl reads the same.
    const text = opensslText(carol.issued.der);
    assert.match(text, /X509v3 Name Constraints: critical/);
    assert.match(
      text,
      /Permitted:\s+DNS:invalid\s+URI:carol\.alice\.d\.example\.test\s+URI:\.carol\.alice\.d\.example\.test/,
    );
    assert.match(text, /Excluded:\s+IP:0\.0\.0\.0\/0\.0\.0\.0\s+IP:0:0:0:0:0:0:0:0\/0:0:0:0:0:0:0:0/);
  });

  it('name constraints with grants: the DNS names and IP ranges granted, nothing excluded', () => {
    assert.deepEqual(frank.issued.grants, {
      dnsNames: ['example.com', 'frank.example.test'],
      ipRanges: ['10.0.0.0/8', 'fd00::/16'],
    });
    assert.deepEqual(constraintsOf(frank.issued.der), {
      critical: true,
      permitted: [
        'DNS:example.com',
        'DNS:frank.example.test',
        'IP:10.0.0.0/8',
        'IP:fd00::/16',
        'URI:frank.d.example.test',
        'URI:.frank.d.example.test',
      ],
      excluded: [],
    });
    assert.deepEqual(constraintsOf(erin.issued.der), {
      critical: true,
      permitted: [
        'DNS:erin.frank.example.test',
        'IP:10.1.0.0/16',
        'URI:erin.frank.d.example.test',
        'URI:.erin.frank.d.example.test',
      ],
      excluded: [],
    });
    // An IPv4 grant alone: IPv6 has no permitted range, so none is allowed (and nothing is excluded).
    const v4 = delegate(admin, 'v4', policy(['info', 'issue'], null), { ipRanges: ['192.0.2.0/24'] });
    assert.deepEqual(constraintsOf(v4.issued.der)?.permitted, [
      'DNS:invalid',
      'IP:192.0.2.0/24',
      'URI:v4.d.example.test',
      'URI:.v4.d.example.test',
    ]);
  });
});

describe('issueDelegation: refusals', () => {
  it('refuses: escalation of each limit and each permission', () => {
    for (const [what, greedy, reason] of ALICE_ESCALATIONS) {
      assert.throws(
        () => delegate(alice.parent, 'dan', greedy),
        denied(new RegExp(`the delegation escalates its parent's policy: .*${reason.source}`)),
        what,
      );
    }
  });

  it('refuses: a parent without the "delegate" permission', () => {
    assert.throws(
      () => delegate(carol.parent, 'erin', policy(['info'], null)),
      denied(/the parent lacks the "delegate" permission; it may not create delegations/),
    );
  });

  it('refuses: pathLen overflow', () => {
    assert.throws(
      () => delegate(alice.parent, 'dan', policy(['info'], null), { pathLen: 2 }),
      denied(/pathLen overflow: the requested pathLen 2 is not below the parent's pathLen 2/),
    );
    // A parent at pathLen 0 may hold "delegate" yet issue no CA beneath it.
    const bob = delegate(alice.parent, 'bob', policy(['info', 'delegate'], null), { pathLen: 0 });
    assert.throws(
      () => delegate(bob.parent, 'x', policy(['info'], null)),
      denied(/pathLen overflow: the parent has pathLen 0, so no CA may be issued beneath it/),
    );
  });

  it('refuses: a delegation that outlives its parent (not clamped)', () => {
    assert.throws(
      () => delegate(alice.parent, 'dan', policy(['info'], null), { ttlMs: 11 * DAY }),
      denied(/the delegation would outlive its parent: it would end .*, the parent ends/),
    );
  });

  it('refuses: names that are not DNS labels (invalid_argument)', () => {
    for (const bad of ['.', '_', 'a_b', 'a.b', 'Alice', 'x'.repeat(64), '', '-a', 'a/b', '..']) {
      assert.throws(
        () => delegate(alice.parent, bad, policy(['info'], null)),
        invalid(/delegation name .* must be 1 to 63 lower-case letters, digits or inner hyphens/),
        JSON.stringify(bad),
      );
    }
    // 63 characters are fine.
    assert.equal(
      delegate(alice.parent, 'x'.repeat(63), policy(['info'], null)).issued.id,
      `spiffe://${'x'.repeat(63)}.alice.d.example.test`,
    );
  });

  it('refuses: a host over 253 characters', () => {
    const wide = policy(['info', 'delegate', 'issue'], null);
    let parent: Parent = admin;
    for (const name of ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63)])
      parent = delegate(parent, name, wide).parent;
    // 63*3 + 2 dots + 15 = 206; another 47 + 1 dot makes 254.
    assert.throws(
      () => delegate(parent, 'e'.repeat(47), wide),
      invalid(/would have a host of 254 characters; at most 253 fit/),
    );
    assert.equal(delegate(parent, 'e'.repeat(46), wide).issued.id.length, 'spiffe://'.length + 253);
  });

  it("refuses: a parent that is not a CA, or a stated parent policy beyond its certificate's", () => {
    const leaf = signedLeaf(alice.issuer, idOf(['alice'], '/web'));
    assert.throws(
      () =>
        delegate(
          { issuer: alice.issuer, certificateDer: leaf.der, policy: ALICE },
          'x',
          policy(['info'], null),
        ),
      denied(/is not a CA; it cannot delegate/),
    );
    // carol's certificate lacks "delegate": claiming it for her does not make it so.
    const claimed = policy(['info', 'create', 'issue', 'delegate'], CAROL.limits);
    assert.throws(
      () => delegate({ ...carol.parent, policy: claimed }, 'x', policy(['info'], null)),
      denied(/the parent policy exceeds the parent certificate's: permission delegate not held/),
    );
  });

  it('refuses: a parent CA whose SPIFFE ID is a workload path in a delegated host', () => {
    const odd = signedCa(alice.issuer, [uri(idOf(['alice'], '/ca'))], policy(['info', 'delegate'], null), {
      pathLen: 1,
    });
    assert.throws(
      () =>
        delegate(
          {
            issuer: odd.issuer,
            certificateDer: odd.certificate.der,
            policy: policy(['info', 'delegate'], null),
          },
          'x',
          policy(['info'], null),
        ),
      denied(/the parent is a workload certificate, not a delegation/),
    );
  });
});

describe('name grants', () => {
  it('parseGrants: lower-cases, removes duplicates, canonicalises ranges', () => {
    assert.deepEqual(parseGrants(undefined), NO_GRANTS);
    assert.deepEqual(parseGrants({}), NO_GRANTS);
    assert.deepEqual(
      parseGrants({
        dnsNames: ['API.Example.COM', 'api.example.com', '.svc.example.com'],
        ipRanges: ['10.0.0.0/8', 'FD00:0::/16', 'fd00::/16'],
      }),
      { dnsNames: ['api.example.com', '.svc.example.com'], ipRanges: ['10.0.0.0/8', 'fd00::/16'] },
    );
  });

  it('parseGrants: refuses wildcards, malformed names, ranges with host bits and non-ranges', () => {
    assert.throws(() => parseGrants({ dnsNames: ['*.example.com'] }), invalid(/no wildcards/));
    for (const bad of ['bad..name', 'a b', '10.0.0.1', '-x.example.com', '']) {
      assert.throws(() => parseGrants({ dnsNames: [bad] }), SigilError, JSON.stringify(bad));
    }
    for (const bad of ['10.0.0.1/8', '10.0.0.0', '10.0.0.0/33', 'fd00::1/16', 'example.com/8']) {
      assert.throws(() => parseGrants({ ipRanges: [bad] }), invalid(/IP range/), bad);
    }
  });

  it("a sub-delegation within its parent's grants is accepted", () => {
    for (const grants of [
      { dnsNames: ['example.com'] }, // the same name
      { dnsNames: ['api.example.com', 'x.y.frank.example.test'] }, // names beneath
      { ipRanges: ['10.0.0.0/8'] },
      { ipRanges: ['10.255.255.255/32', '10.128.0.0/9'] },
      { ipRanges: ['fd00:1::/32', 'fd00::/16'] },
      {},
    ] as Partial<NameGrants>[]) {
      const child = delegate(frank.parent, 'kid', policy(['info'], null), { pathLen: 0, ...grants });
      assert.deepEqual(child.issued.grants, parseGrants(grants), JSON.stringify(grants));
    }
  });

  it("a sub-delegation grant outside its parent's is refused, naming it", () => {
    const cases: [Partial<NameGrants>, RegExp][] = [
      [
        { dnsNames: ['example.org'] },
        /DNS names: example\.org is not within example\.com, frank\.example\.test/,
      ],
      [{ dnsNames: ['notexample.com'] }, /notexample\.com is not within/],
      [{ dnsNames: ['com'] }, /com is not within/],
      [{ dnsNames: ['example.test'] }, /example\.test is not within/],
      [{ ipRanges: ['11.0.0.0/8'] }, /IP ranges: 11\.0\.0\.0\/8 is not within 10\.0\.0\.0\/8, fd00::\/16/],
      [{ ipRanges: ['10.0.0.0/7'] }, /10\.0\.0\.0\/7 is not within/],
      [{ ipRanges: ['0.0.0.0/0'] }, /0\.0\.0\.0\/0 is not within/],
      [{ ipRanges: ['fd01::/16'] }, /fd01::\/16 is not within/],
      [{ ipRanges: ['::/0'] }, /::\/0 is not within/],
    ];
    for (const [grants, reason] of cases) {
      assert.throws(
        () => delegate(frank.parent, 'kid', policy(['info'], null), { pathLen: 0, ...grants }),
        denied(new RegExp(`the delegation escalates its parent's .*${reason.source}`)),
        JSON.stringify(grants),
      );
    }
    // A parent granted nothing can grant nothing.
    assert.throws(
      () => delegate(alice.parent, 'kid', policy(['info'], null), { dnsNames: ['example.com'] }),
      denied(/DNS names: example\.com is not within nothing/),
    );
    assert.throws(
      () => delegate(alice.parent, 'kid', policy(['info'], null), { ipRanges: ['10.0.0.0/8'] }),
      denied(/IP ranges: 10\.0\.0\.0\/8 is not within nothing/),
    );
    // Under a subdomains-only grant, the domain itself is outside.
    const dotted = { ...frank.parent, grants: { dnsNames: ['.svc.example.com'], ipRanges: [] } };
    assert.throws(
      () => delegate(dotted, 'kid', policy(['info'], null), { pathLen: 0, dnsNames: ['svc.example.com'] }),
      denied(/svc\.example\.com is not within \.svc\.example\.com/),
    );
  });

  it("grants are held to the parent certificate's own name constraints, whatever the parent states", () => {
    // No grants stated for a delegation parent: its certificate still bounds the child.
    const { grants: _aliceGrants, ...aliceUnstated } = alice.parent;
    assert.throws(
      () => delegate(aliceUnstated, 'kid', policy(['info'], null), { dnsNames: ['evil.example.com'] }),
      denied(/escalates its parent certificate's DNS names: evil\.example\.com is not within nothing/),
    );
    assert.throws(
      () => delegate(aliceUnstated, 'kid', policy(['info'], null), { ipRanges: ['0.0.0.0/0'] }),
      denied(/escalates its parent certificate's IP ranges: 0\.0\.0\.0\/0 is not within nothing/),
    );
    // Stating more than the certificate carries does not help either.
    const overstated = {
      ...frank.parent,
      grants: { dnsNames: ['example.org'], ipRanges: ['192.168.0.0/16'] },
    };
    assert.throws(
      () =>
        delegate(overstated, 'kid', policy(['info'], null), { pathLen: 0, dnsNames: ['api.example.org'] }),
      denied(
        /escalates its parent certificate's DNS names: api\.example\.org is not within example\.com, frank\.example\.test/,
      ),
    );
    assert.throws(
      () => delegate(overstated, 'kid', policy(['info'], null), { pathLen: 0, ipRanges: ['192.168.1.0/24'] }),
      denied(
        /escalates its parent certificate's IP ranges: 192\.168\.1\.0\/24 is not within 10\.0\.0\.0\/8, fd00::\/16/,
      ),
    );
    // Within the certificate's constraints, with nothing stated, is accepted.
    const { grants: _frankGrants, ...frankUnstated } = frank.parent;
    const kid = delegate(frankUnstated, 'kid', policy(['info'], null), {
      pathLen: 0,
      dnsNames: ['a.example.com'],
      ipRanges: ['fd00:1::/32'],
    });
    assert.deepEqual(kid.issued.grants, { dnsNames: ['a.example.com'], ipRanges: ['fd00:1::/32'] });
    // A deployment CA has no name constraints: anything may be granted beneath it.
    assert.deepEqual(
      delegate(admin, 'wide', policy(['info'], null), { dnsNames: ['example.net'], ipRanges: ['0.0.0.0/0'] })
        .issued.grants,
      { dnsNames: ['example.net'], ipRanges: ['0.0.0.0/0'] },
    );
  });

  it('a subdomains-only DNS grant (".svc.example.com", as `sigil delegate --dns` documents) is written as a name constraint', async () => {
    // Fails while src/pki/extensions.ts constraintHost accepts a leading "." for URI constraints only.
    const svc = delegate(admin, 'svc', policy(['info', 'issue'], null), { dnsNames: ['.svc.example.com'] });
    assert.deepEqual(constraintsOf(svc.issued.der)?.permitted.slice(0, 1), ['DNS:.svc.example.com']);
    const inside = signedLeaf(svc.issuer, idOf(['svc'], '/api'), {
      profile: 'server',
      sans: [dnsName('api.svc.example.com')],
    });
    assert.ok((await opensslVerdict(inside.der, chainOf(svc))).ok);
    const domain = signedLeaf(svc.issuer, idOf(['svc'], '/api'), {
      profile: 'server',
      sans: [dnsName('svc.example.com')],
    });
    assert.match((await opensslVerdict(domain.der, chainOf(svc))).error, /permitted subtree violation/);
  });
});

describe('openssl verify of leaves a delegate signs', () => {
  const carolChain = chainOf(carol, alice);
  const erinChain = chainOf(erin, frank);
  const server = (issuer: Delegate['issuer'], id: string, sans: GeneralName[], commonName?: string) =>
    signedLeaf(issuer, id, { profile: 'server', sans, ...(commonName ? { commonName } : {}) }).der;

  it('accepts in-host leaves: a workload, the identity, a command certificate', async () => {
    for (const id of [
      idOf(['alice', 'carol'], '/web'),
      idOf(['alice', 'carol']),
      idOf(['alice', 'carol', 'ci']),
      idOf(['alice', 'carol', 'ci'], '/deep'),
    ]) {
      const verdict = await opensslVerdict(signedLeaf(carol.issuer, id).der, carolChain);
      assert.ok(verdict.ok, `${id}: ${verdict.output}`);
    }
  });

  it('refuses a URI outside the delegation host: a sibling, the parent, the trust domain, another trust domain', async () => {
    for (const id of [
      idOf(['alice', 'bob'], '/web'),
      idOf(['alice']),
      idOf(['alice'], '/web'),
      `spiffe://${TD}/admin/x`,
      `spiffe://${TD}/d/alice/carol/web`,
      'spiffe://carol.alice.d.other.test/web',
      'spiffe://xcarol.alice.d.example.test/web',
    ]) {
      const verdict = await opensslVerdict(signedLeaf(carol.issuer, id).der, carolChain);
      assert.equal(verdict.ok, false, id);
      assert.match(verdict.error, /permitted subtree violation/, id);
    }
  });

  it('refuses a DNS name outside the grant; accepts one inside', async () => {
    const id = idOf(['frank', 'erin'], '/api');
    for (const name of ['erin.frank.example.test', 'api.erin.frank.example.test']) {
      const verdict = await opensslVerdict(server(erin.issuer, id, [dnsName(name)]), erinChain, {
        dnsName: name,
      });
      assert.ok(verdict.ok, `${name}: ${verdict.output}`);
    }
    // Outside erin's grant, though within frank's, and outside both.
    for (const name of [
      'frank.example.test',
      'api.example.com',
      'evil.example.org',
      'xerin.frank.example.test',
    ]) {
      const verdict = await opensslVerdict(server(erin.issuer, id, [dnsName(name)]), erinChain);
      assert.match(verdict.error, /permitted subtree violation/, name);
    }
    // carol was given no DNS names: any DNS name under her is refused.
    const carolDns = server(carol.issuer, idOf(['alice', 'carol'], '/api'), [dnsName('carol.example.test')]);
    assert.match((await opensslVerdict(carolDns, carolChain)).error, /permitted subtree violation/);
  });

  it('refuses an IP address when none was granted, IPv4 and IPv6', async () => {
    const id = idOf(['alice', 'carol'], '/api');
    for (const address of ['127.0.0.1', '10.0.0.1', '::1', 'fd00::1']) {
      const verdict = await opensslVerdict(server(carol.issuer, id, [ipAddress(address)]), carolChain);
      assert.equal(verdict.ok, false, address);
      assert.match(verdict.error, /excluded subtree violation/, address);
    }
  });

  it('refuses an IP address outside the granted ranges; accepts one inside', async () => {
    const id = idOf(['frank', 'erin'], '/api');
    const inside = await opensslVerdict(server(erin.issuer, id, [ipAddress('10.1.2.3')]), erinChain, {
      dnsName: '10.1.2.3',
    });
    assert.ok(inside.ok, inside.output);
    for (const address of ['10.2.0.1', '192.0.2.1', 'fd00::1', '::1']) {
      const verdict = await opensslVerdict(server(erin.issuer, id, [ipAddress(address)]), erinChain);
      assert.match(verdict.error, /permitted subtree violation/, address);
    }
    // frank's own IPv6 grant.
    const v6 = await opensslVerdict(
      server(frank.issuer, idOf(['frank'], '/api'), [ipAddress('fd00::1')]),
      chainOf(frank),
      { dnsName: 'fd00::1' },
    );
    assert.ok(v6.ok, v6.output);
  });

  it('refuses a CN-only host-like leaf under a DNS constraint; accepts one whose CN is inside the grant', async () => {
    // No DNS SAN: OpenSSL checks a host-like CN against the DNS constraints.
    const outside = await opensslVerdict(
      server(carol.issuer, idOf(['alice', 'carol'], '/web'), [], 'evil.example.com'),
      carolChain,
    );
    assert.match(outside.error, /permitted subtree violation/);
    const erinOutside = await opensslVerdict(
      server(erin.issuer, idOf(['frank', 'erin'], '/web'), [], 'api.example.com'),
      erinChain,
    );
    assert.match(erinOutside.error, /permitted subtree violation/);
    const inside = await opensslVerdict(
      server(erin.issuer, idOf(['frank', 'erin'], '/web'), [], 'api.erin.frank.example.test'),
      erinChain,
    );
    assert.ok(inside.ok, inside.output);
  });

  it("constraints stack: a leaf of erin within frank's grant but outside erin's is refused at erin", async () => {
    const verdict = await opensslVerdict(
      server(erin.issuer, idOf(['frank', 'erin'], '/api'), [dnsName('x.example.com')]),
      erinChain,
    );
    assert.match(verdict.error, /permitted subtree violation/);
  });
});

describe('issueDelegateLeaf: the delegate identity leaf (no name)', () => {
  it("carries the parent's SPIFFE ID, is a client certificate, passes openssl and gets the delegation's effective policy", async () => {
    const identity = delegateLeaf(carol.parent);
    assert.equal(identity.id, carol.issued.id);
    assert.equal(identity.id, 'spiffe://carol.alice.d.example.test');
    assert.deepEqual(uris(identity.der), [carol.issued.id]);

    const x509 = new X509Certificate(identity.der);
    assert.equal(x509.ca, false);
    assert.deepEqual(x509.keyUsage, [ExtendedKeyUsage.clientAuth]);
    assert.match(x509.subject, /CN=sigil delegate alice\/carol/);
    assert.ok(x509.checkIssued(new X509Certificate(carol.issued.der)));
    assert.equal(readPolicy(identity.der, OID), null, 'an identity leaf carries no policy of its own');
    // Default lifetime: the parent's remaining one.
    assert.equal(identity.notAfter.getTime(), carol.issued.notAfter.getTime());

    const chain = chainOf(carol, alice);
    const client = await opensslVerdict(identity.der, chain, { usage: 'client' });
    assert.ok(client.ok, client.output);
    const asServer = await opensslVerdict(identity.der, chain, { usage: 'server' });
    assert.equal(asServer.ok, false, 'it is not a server certificate');

    const result = check([identity.der, ...chain, replica.der]);
    assert.equal(result.key, '/alice/carol');
    assert.deepEqual(result.effective, CAROL);
  });

  it('an identity leaf needs no "issue": a delegate without it still gets its own identity', () => {
    const identity = delegateLeaf(dave.parent);
    assert.equal(identity.id, 'spiffe://dave.alice.d.example.test');
    assert.deepEqual(check([identity.der, ...chainOf(dave, alice)]).effective, DAVE);
  });

  it('honours a ttl within the parent', () => {
    const identity = delegateLeaf(carol.parent, { ttlMs: HOUR });
    const lifetime = identity.notAfter.getTime() - Date.now();
    assert.ok(lifetime <= HOUR && lifetime > HOUR - 60_000, `lifetime ${lifetime}`);
  });

  it('refuses: an identity leaf under a parent that is not a delegation', () => {
    for (const parent of [
      { issuer: replicaIssuer, certificateDer: replica.der },
      { issuer: rootIssuer, certificateDer: root.der },
    ]) {
      assert.throws(() => delegateLeaf(parent), denied(/an identity leaf needs a delegation as its parent/));
    }
  });

  it('refuses: a ttl past the parent (not clamped)', () => {
    assert.throws(
      () => delegateLeaf(carol.parent, { ttlMs: 6 * DAY }),
      denied(/the certificate would outlive its parent/),
    );
    assert.throws(
      () => delegateLeaf(carol.parent, { name: 'cmd', policy: policy(['info'], null), ttlMs: 6 * DAY }),
      denied(/the certificate would outlive its parent/),
    );
  });
});

describe('issueDelegateLeaf: command certificates (a name and a policy without limits)', () => {
  const INFO = policy(['info'], null);

  it('land one name below the parent (spiffe://<name>.<host>) and check with the command policy intersected', async () => {
    const command = delegateLeaf(carol.parent, { name: 'ops', policy: INFO });
    assert.equal(command.id, 'spiffe://ops.carol.alice.d.example.test');
    assert.deepEqual(uris(command.der), [command.id]);
    const x509 = new X509Certificate(command.der);
    assert.equal(x509.ca, false);
    assert.deepEqual(x509.keyUsage, [ExtendedKeyUsage.clientAuth]);
    assert.match(x509.subject, /CN=sigil command alice\/carol\/ops/);
    assert.deepEqual(readPolicy(command.der, OID), INFO);
    assert.equal(readPolicy(command.der, DEFAULT_POLICY_OID), null);
    const result = check([command.der, ...chainOf(carol, alice)]);
    assert.deepEqual(result.subtree, ['alice', 'carol', 'ops']);
    assert.equal(result.key, '/alice/carol/ops');
    assert.deepEqual(result.effective, INFO);
    assert.ok((await opensslVerdict(command.der, chainOf(carol, alice))).ok);
  });

  it("an admin's command certificate under the replica intermediate lands at spiffe://<name>.d.<td>", () => {
    const command = delegateLeaf(
      { issuer: replicaIssuer, certificateDer: replica.der },
      { name: 'ops', policy: policy(['info', 'revoke'], null), ttlMs: HOUR },
    );
    assert.equal(command.id, 'spiffe://ops.d.example.test');
    const result = check([command.der, replica.der]);
    assert.deepEqual(result.subtree, ['ops']);
    assert.deepEqual([...result.effective.permissions].sort(), ['info', 'revoke']);
    assert.equal(result.effective.limits, null);
  });

  it('a named leaf without a policy inherits the effective policy', () => {
    const named = delegateLeaf(carol.parent, { name: 'web' });
    assert.equal(named.id, 'spiffe://web.carol.alice.d.example.test');
    assert.deepEqual(check([named.der, ...chainOf(carol, alice)]).effective, CAROL);
  });

  it('refuses: a command certificate carrying limits (invalid_argument)', () => {
    assert.throws(
      () =>
        delegateLeaf(carol.parent, {
          name: 'ops',
          policy: policy(['info'], limits({ workloads: 1, cpus: [1], bridges: ['br0'] })),
        }),
      invalid(/a command certificate carries permissions only, no resource limits/),
    );
  });

  it("refuses: a command certificate whose policy escalates the parent's", () => {
    for (const permission of ['destroy', 'delegate', 'revoke', 'admin'] as Permission[]) {
      assert.throws(
        () => delegateLeaf(carol.parent, { name: 'ops', policy: policy(['info', permission], null) }),
        denied(
          new RegExp(
            `the command certificate escalates its parent's policy: permission ${permission} not held`,
          ),
        ),
        permission,
      );
    }
  });

  it('refuses: a parent without "issue" issuing a named leaf (with or without a policy)', () => {
    for (const extra of [{ policy: policy(['info'], null) }, {}]) {
      assert.throws(
        () => delegateLeaf(dave.parent, { name: 'ops', ...extra }),
        denied(/the parent lacks the "issue" permission/),
      );
    }
  });

  it('refuses: a name that is not a DNS label', () => {
    for (const bad of ['Ops', '', 'a/b', '..', '.', '_', 'a.b', 'x'.repeat(64)]) {
      assert.throws(
        () => delegateLeaf(carol.parent, { name: bad }),
        invalid(/delegation name/),
        JSON.stringify(bad),
      );
    }
  });
});
