import assert from 'node:assert/strict';
import { type KeyObject, X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { signatureAlgorithmFor, signWith } from '../../src/pki/algorithms.ts';
import { type LinkedChain, linkPresentedChain, MAX_LINKS } from '../../src/pki/chain-links.ts';
import { bitString, explicit, integer, sequence, time, unsignedInteger } from '../../src/pki/der.ts';
import { encodeSubject } from '../../src/pki/distinguished-name.ts';
import {
  authorityKeyIdentifier,
  basicConstraints,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
} from '../../src/pki/extensions.ts';
import {
  createRootCertificate,
  Issuer,
  keyIdentifier,
  type SignedCertificate,
} from '../../src/pki/issuer.ts';
import { generateKeyPair, spkiDer } from '../../src/pki/keys.ts';
import { PERMISSIONS } from '../../src/pki/policy-extension.ts';
import { KeyUsageBit } from '../../src/pki/profiles.ts';
import { sha256 } from '../support/fingerprint.ts';
import { denied } from '../support/refusals.ts';
import {
  DAY,
  delegate,
  HOUR,
  idOf,
  type Parent,
  policy,
  TD,
  testIntermediate,
  testRoot,
} from './delegation-fixtures.ts';

const ADMIN = policy([...PERMISSIONS], null);
const WIDE = policy(['info', 'delegate', 'issue'], null);

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// --- the control plane's CAs: a root and a replica intermediate ----------------

const { certificate: root, issuer: rootIssuer } = testRoot('sigil presented-chain test root');
const {
  certificate: intermediate,
  key: intermediateKey,
  issuer: intermediateIssuer,
} = testIntermediate(rootIssuer, 'sigil presented-chain test intermediate');

const rootX509 = new X509Certificate(root.der);
const intermediateX509 = new X509Certificate(intermediate.der);
const serverCas = [rootX509, intermediateX509];

const admin: Parent = { issuer: intermediateIssuer, certificateDer: intermediate.der, policy: ADMIN };
const alice = delegate(admin, 'alice', WIDE, { ttlMs: 10 * DAY });
const carol = delegate(alice.parent, 'carol', WIDE, { ttlMs: 5 * DAY });
// A delegation directly under the root.
const bob = delegate({ issuer: rootIssuer, certificateDer: root.der, policy: ADMIN }, 'bob', WIDE, {
  ttlMs: 10 * DAY,
});

/** A client leaf signed by `issuer`: the workload `path` in the host of `subtree`. */
function leaf(issuer: Issuer, subtree: string[], path = '/web'): SignedCertificate {
  return issuer.issue({
    publicKey: generateKeyPair('p256').publicKey,
    profile: 'client',
    sans: [{ type: 'uri', value: idOf(subtree, path) }],
    ttlMs: HOUR,
  });
}

const web = leaf(carol.issuer, ['alice', 'carol']);

/** A certificate assembled by hand: for what the Issuer refuses to write (non-CA signers, forged names). */
function handMade(o: {
  signer: KeyObject;
  issuerName: Buffer;
  subjectName: Buffer;
  publicKey: KeyObject;
  extensions: Buffer[];
  serial?: Buffer;
  notBefore?: Date;
  notAfter?: Date;
}): Buffer {
  const algorithm = signatureAlgorithmFor(o.signer);
  const now = Date.now();
  const tbs = sequence(
    explicit(0, integer(2)),
    unsignedInteger(o.serial ?? Buffer.of(0x12, 0x34, 0x56)),
    algorithm.algorithmIdentifier,
    o.issuerName,
    sequence(time(o.notBefore ?? new Date(now - 60_000)), time(o.notAfter ?? new Date(now + DAY))),
    o.subjectName,
    spkiDer(o.publicKey),
    explicit(3, sequence(...o.extensions)),
  );
  return sequence(tbs, algorithm.algorithmIdentifier, bitString(signWith(algorithm, o.signer, tbs)));
}

const now = () => new Date();

/** The DER of each link, for comparing chains. */
const ders = (chain: LinkedChain): Buffer[] => chain.links.map((link) => link.der);

describe('linkPresentedChain: linking', () => {
  it('links leaf → carol → alice → the server intermediate, with serials, fingerprints and issuedByServer', () => {
    const chain = linkPresentedChain(web.der, [carol.issued.der, alice.issued.der], serverCas, now());
    assert.deepEqual(ders(chain), [web.der, carol.issued.der, alice.issued.der]);
    assert.deepEqual(
      chain.links.map((link) => link.issuedByServer),
      [false, false, true],
    );
    assert.deepEqual(
      chain.links.map((link) => link.serial),
      [web.serialHex, carol.issued.serialHex, alice.issued.serialHex],
    );
    assert.deepEqual(
      chain.links.map((link) => link.fingerprint),
      [sha256(web.der), sha256(carol.issued.der), sha256(alice.issued.der)],
    );
    for (const link of chain.links) {
      assert.match(link.fingerprint, /^[0-9a-f]{64}$/);
      assert.match(link.serial, /^[1-9a-f][0-9a-f]*$/);
      assert.ok(link.certificate.raw.equals(link.der));
    }
    assert.ok(chain.anchor.raw.equals(intermediate.der), 'anchored at the intermediate');
  });

  it('links a delegation signed directly by the root', () => {
    const bobLeaf = leaf(bob.issuer, ['bob']);
    const chain = linkPresentedChain(bobLeaf.der, [bob.issued.der], serverCas, now());
    assert.deepEqual(ders(chain), [bobLeaf.der, bob.issued.der]);
    assert.deepEqual(
      chain.links.map((link) => link.issuedByServer),
      [false, true],
    );
    assert.ok(chain.anchor.raw.equals(root.der), 'anchored at the root');
    // With only the intermediate as a server CA, bob's chain leads nowhere.
    assert.throws(
      () => linkPresentedChain(bobLeaf.der, [bob.issued.der], [intermediateX509], now()),
      denied(/does not lead to this control plane's CAs/),
    );
  });

  it('a leaf signed by a server CA needs nothing presented: one link, issuedByServer', () => {
    const plain = intermediateIssuer.issue({
      publicKey: generateKeyPair('p256').publicKey,
      profile: 'client',
      sans: [{ type: 'uri', value: `spiffe://${TD}/node/n1` }],
      ttlMs: HOUR,
    });
    const chain = linkPresentedChain(plain.der, [], serverCas, now());
    assert.equal(chain.links.length, 1);
    assert.equal(chain.links[0].issuedByServer, true);
    assert.equal(chain.links[0].serial, plain.serialHex);
    assert.ok(chain.anchor.raw.equals(intermediate.der));
    // Presented certificates are not needed and not used.
    const again = linkPresentedChain(plain.der, [carol.issued.der, alice.issued.der], serverCas, now());
    assert.deepEqual(ders(again), [plain.der]);
  });

  it('the order of the presented certificates does not matter', () => {
    const expected = [web.der, carol.issued.der, alice.issued.der];
    for (const presented of [
      [carol.issued.der, alice.issued.der],
      [alice.issued.der, carol.issued.der],
    ]) {
      const chain = linkPresentedChain(web.der, presented, serverCas, now());
      assert.deepEqual(ders(chain), expected);
    }
  });

  it('extra unrelated certificates are ignored', () => {
    const otherKey = generateKeyPair('p256');
    const otherRoot = createRootCertificate({
      privateKey: otherKey.privateKey,
      subject: { commonName: 'some other root' },
      ttlMs: DAY,
    });
    const otherIssuer = Issuer.fromIssued(otherRoot, otherKey.privateKey);
    const otherCa = otherIssuer.issue({
      publicKey: generateKeyPair('p256').publicKey,
      profile: 'intermediate',
      subject: { commonName: 'some other intermediate' },
      ttlMs: HOUR,
    });
    const otherLeaf = leaf(otherIssuer, ['alice', 'carol']);
    const bobLeaf = leaf(bob.issuer, ['bob'], '/x');
    const presented = [
      otherRoot.der,
      bob.issued.der,
      alice.issued.der,
      otherCa.der,
      otherLeaf.der,
      bobLeaf.der,
      carol.issued.der,
      intermediate.der,
      root.der,
    ];
    const chain = linkPresentedChain(web.der, presented, serverCas, now());
    assert.deepEqual(ders(chain), [web.der, carol.issued.der, alice.issued.der]);
    assert.ok(chain.anchor.raw.equals(intermediate.der));
  });

  it('reports serials canonically: lower-case hex without leading zeros', () => {
    // A serial whose hex starts with a zero nibble (0x0abc): X509Certificate says "0ABC".
    const carolSki = keyIdentifier(spkiDer(new X509Certificate(carol.issued.der).publicKey));
    const der = handMade({
      signer: carol.key,
      issuerName: Buffer.from(carol.issued.subjectDer),
      subjectName: encodeSubject({ commonName: 'serial test' }),
      publicKey: generateKeyPair('p256').publicKey,
      serial: Buffer.of(0x0a, 0xbc),
      extensions: [
        basicConstraints(false),
        authorityKeyIdentifier(carolSki),
        subjectAltName([{ type: 'uri', value: idOf(['alice', 'carol'], '/serial') }]),
      ],
    });
    assert.equal(new X509Certificate(der).serialNumber, '0ABC');
    const chain = linkPresentedChain(der, [alice.issued.der, carol.issued.der], serverCas, now());
    assert.equal(chain.links[0].serial, 'abc');
  });

  it(`accepts ${MAX_LINKS} links (leaf and ${MAX_LINKS - 1} presented CAs)`, () => {
    const { leafDer, cas } = tower(MAX_LINKS - 1);
    const chain = linkPresentedChain(leafDer, cas, serverCas, now());
    assert.equal(chain.links.length, MAX_LINKS);
    assert.deepEqual(
      chain.links.map((link) => link.issuedByServer),
      [...Array(MAX_LINKS - 1).fill(false), true],
    );
  });
});

/** `depth` CAs stacked under the intermediate and a leaf below them; `cas` lists the leaf's issuer first. */
function tower(depth: number): { leafDer: Buffer; cas: Buffer[] } {
  let issuer = intermediateIssuer;
  const cas: Buffer[] = [];
  for (let i = 0; i < depth; i++) {
    const key = generateKeyPair('p256');
    const ca = issuer.issue({
      publicKey: key.publicKey,
      profile: 'intermediate',
      subject: { commonName: `tower ${i}` },
      ttlMs: DAY,
    });
    cas.unshift(ca.der);
    issuer = Issuer.fromIssued(ca, key.privateKey);
  }
  return { leafDer: leaf(issuer, ['tower']).der, cas };
}

describe('linkPresentedChain: refusals', () => {
  it('refuses: a missing link (alice not presented)', () => {
    assert.throws(
      () => linkPresentedChain(web.der, [carol.issued.der], serverCas, now()),
      denied(
        /the chain of "CN=sigil delegation alice\/carol" does not lead to this control plane's CAs.*sigil-chain-bin/,
      ),
    );
    assert.throws(
      () => linkPresentedChain(web.der, [alice.issued.der], serverCas, now()),
      denied(/the chain of ".*web.*" does not lead to this control plane's CAs/),
    );
    assert.throws(
      () => linkPresentedChain(web.der, [], serverCas, now()),
      denied(/does not lead to this control plane's CAs/),
    );
  });

  it('refuses: garbage bytes among the presented certificates, even when the chain would link', () => {
    assert.throws(
      () =>
        linkPresentedChain(
          web.der,
          [carol.issued.der, alice.issued.der, Buffer.from('garbage')],
          serverCas,
          now(),
        ),
      denied(/presented chain certificate #3 is not a readable certificate/),
    );
    assert.throws(
      () => linkPresentedChain(web.der, [Buffer.alloc(0)], serverCas, now()),
      denied(/presented chain certificate #1 is not a readable certificate/),
    );
    // A truncated certificate is garbage too.
    assert.throws(
      () =>
        linkPresentedChain(web.der, [carol.issued.der.subarray(0, 100), alice.issued.der], serverCas, now()),
      denied(/presented chain certificate #1 is not a readable certificate/),
    );
  });

  it('refuses: an unreadable client certificate', () => {
    assert.throws(
      () => linkPresentedChain(Buffer.from('nope'), [], serverCas, now()),
      denied(/the client certificate is not a readable certificate/),
    );
  });

  it('refuses: a forged CA with the server intermediate as issuer name and AKI, signed by another key', () => {
    // Two CAs with the same subject name "sigil delegation alice": the genuine
    // one, signed by the intermediate, and an impostor whose issuer name and
    // AKI name the intermediate but which a rogue key signed.
    const rogueKey = generateKeyPair('p256');
    const impostorKey = generateKeyPair('p256');
    const impostorSpki = spkiDer(impostorKey.publicKey);
    const impostorDer = handMade({
      signer: rogueKey.privateKey,
      issuerName: Buffer.from(intermediate.subjectDer),
      subjectName: Buffer.from(alice.issued.subjectDer),
      publicKey: impostorKey.publicKey,
      extensions: [
        basicConstraints(true, 1),
        keyUsage([KeyUsageBit.digitalSignature, KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
        subjectKeyIdentifier(keyIdentifier(impostorSpki)),
        authorityKeyIdentifier(intermediate.subjectKeyId),
        subjectAltName([{ type: 'uri', value: idOf(['alice']) }]),
      ],
    });
    const impostor = new X509Certificate(impostorDer);
    const genuine = new X509Certificate(alice.issued.der);
    assert.equal(impostor.subject, genuine.subject, 'same subject name');
    assert.equal(impostor.issuer, genuine.issuer, 'same issuer name');
    // Name and AKI say "issued by the intermediate"; only the signature says otherwise.
    assert.equal(impostor.checkIssued(intermediateX509), true);
    assert.equal(genuine.checkIssued(intermediateX509), true);
    assert.equal(impostor.verify(intermediateX509.publicKey), false);
    assert.equal(genuine.verify(intermediateX509.publicKey), true);

    const impostorIssuer = Issuer.fromCertificate(impostorDer, impostorKey.privateKey);
    const forgedLeaf = leaf(impostorIssuer, ['alice']);
    const genuineLeaf = leaf(alice.issuer, ['alice']);
    assert.deepEqual(ders(linkPresentedChain(genuineLeaf.der, [alice.issued.der], serverCas, now())), [
      genuineLeaf.der,
      alice.issued.der,
    ]);
    assert.throws(
      () => linkPresentedChain(forgedLeaf.der, [impostorDer], serverCas, now()),
      denied(/the chain of "CN=sigil delegation alice" does not lead to this control plane's CAs/),
    );
    // Presenting the genuine alice as well does not help the forged leaf.
    assert.throws(
      () => linkPresentedChain(forgedLeaf.der, [alice.issued.der, impostorDer], serverCas, now()),
      denied(/does not lead to this control plane's CAs/),
    );
  });

  it('refuses: a leaf whose issuer name and AKI name alice but which another key signed', () => {
    // A self-made CA with alice's subject name and alice's SKI, but its own key:
    // its leaves carry alice as issuer name and AKI.
    const impostorKey = generateKeyPair('p256');
    const impostorDer = handMade({
      signer: impostorKey.privateKey,
      issuerName: Buffer.from(alice.issued.subjectDer),
      subjectName: Buffer.from(alice.issued.subjectDer),
      publicKey: impostorKey.publicKey,
      extensions: [
        basicConstraints(true, 1),
        keyUsage([KeyUsageBit.digitalSignature, KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
        subjectKeyIdentifier(alice.issued.subjectKeyId),
      ],
    });
    const forgedLeaf = leaf(Issuer.fromCertificate(impostorDer, impostorKey.privateKey), ['alice']);
    const forged = new X509Certificate(forgedLeaf.der);
    const genuine = new X509Certificate(alice.issued.der);
    assert.equal(forged.issuer, genuine.subject);
    assert.equal(forged.checkIssued(genuine), true, 'name and AKI match the genuine alice');
    assert.equal(forged.verify(genuine.publicKey), false);
    assert.throws(
      () => linkPresentedChain(forgedLeaf.der, [alice.issued.der], serverCas, now()),
      denied(/the chain of ".*alice\.d\.example\.test\/web.*" does not lead to this control plane's CAs/),
    );
    // Presenting the impostor CA itself leads nowhere either: it is self-signed, not by the server.
    assert.throws(
      () => linkPresentedChain(forgedLeaf.der, [impostorDer, alice.issued.der], serverCas, now()),
      denied(/does not lead to this control plane's CAs/),
    );
  });

  it('refuses: a non-CA certificate in the middle of the chain', () => {
    const midKey = generateKeyPair('p256');
    const midSki = keyIdentifier(spkiDer(midKey.publicKey));
    const midName = encodeSubject({ commonName: 'not a ca' });
    // Signed by the intermediate; basicConstraints CA:false and no keyUsage, so
    // nothing but the CA flag stops it from signing.
    const midDer = handMade({
      signer: intermediateKey,
      issuerName: Buffer.from(intermediate.subjectDer),
      subjectName: midName,
      publicKey: midKey.publicKey,
      extensions: [
        basicConstraints(false),
        subjectKeyIdentifier(midSki),
        authorityKeyIdentifier(intermediate.subjectKeyId),
        subjectAltName([{ type: 'uri', value: idOf(['mid']) }]),
      ],
    });
    const leafDer = handMade({
      signer: midKey.privateKey,
      issuerName: midName,
      subjectName: encodeSubject({ commonName: 'below a non-ca' }),
      publicKey: generateKeyPair('p256').publicKey,
      extensions: [
        basicConstraints(false),
        authorityKeyIdentifier(midSki),
        subjectAltName([{ type: 'uri', value: idOf(['mid'], '/web') }]),
      ],
    });
    const mid = new X509Certificate(midDer);
    assert.equal(mid.ca, false);
    assert.equal(
      new X509Certificate(leafDer).checkIssued(mid),
      true,
      'the leaf does name and verify under mid',
    );
    assert.throws(
      () => linkPresentedChain(leafDer, [midDer], serverCas, now()),
      denied(/"CN=not a ca" signs a certificate but is not a CA/),
    );
  });

  it('refuses: a link that has expired (now past its notAfter), or is not yet valid', () => {
    // carol ends after 5 days, alice after 10: between them only carol is expired.
    const later = new Date(carol.issued.notAfter.getTime() + HOUR);
    assert.ok(later < alice.issued.notAfter);
    assert.throws(
      () => linkPresentedChain(web.der, [carol.issued.der, alice.issued.der], serverCas, later),
      denied(
        new RegExp(
          `"CN=sigil delegation alice/carol" in the chain is not valid at ${escapeRegExp(later.toISOString())}`,
        ),
      ),
    );
    // Past alice's end as well: carol is reported first (the walk goes upwards).
    const muchLater = new Date(alice.issued.notAfter.getTime() + HOUR);
    assert.throws(
      () => linkPresentedChain(web.der, [carol.issued.der, alice.issued.der], serverCas, muchLater),
      denied(/"CN=sigil delegation alice\/carol" in the chain is not valid/),
    );
    // Before the links begin.
    const earlier = new Date(carol.issued.notBefore.getTime() - HOUR);
    assert.throws(
      () => linkPresentedChain(web.der, [carol.issued.der, alice.issued.der], serverCas, earlier),
      denied(/in the chain is not valid at/),
    );
    // At carol's last second it still links.
    const last = new Date(carol.issued.notAfter.getTime());
    assert.equal(
      linkPresentedChain(web.der, [carol.issued.der, alice.issued.der], serverCas, last).links.length,
      3,
    );
  });

  it(`refuses: more than ${MAX_LINKS} links (leaf and ${MAX_LINKS} presented CAs)`, () => {
    const { leafDer, cas } = tower(MAX_LINKS);
    assert.throws(
      () => linkPresentedChain(leafDer, cas, serverCas, now()),
      denied(new RegExp(`the certificate chain has more than ${MAX_LINKS} certificates \\(root excluded\\)`)),
    );
  });
});

describe('linkPresentedChain: two presented certificates for one key', () => {
  // A delegation re-issued with the same key (renewal): both copies name the
  // same subject and key, so both "sign" carol's leaves. Only one is valid now.
  const reissue = (ttlMs: number): Buffer =>
    alice.issuer.issue({
      publicKey: new X509Certificate(carol.issued.der).publicKey,
      profile: 'intermediate',
      subject: { commonName: 'sigil delegation alice/carol' },
      sans: [{ type: 'uri', value: idOf(['alice', 'carol']) }],
      ttlMs,
    }).der;
  const shortCopy = reissue(DAY);
  const longCopy = reissue(4 * DAY);
  const at = new Date(Date.now() + 2 * DAY);

  it('links through the valid copy when it is presented first', () => {
    assert.ok(new X509Certificate(web.der).checkIssued(new X509Certificate(shortCopy)));
    assert.ok(new X509Certificate(web.der).verify(new X509Certificate(shortCopy).publicKey));
    const chain = linkPresentedChain(web.der, [longCopy, shortCopy, alice.issued.der], serverCas, at);
    assert.deepEqual(ders(chain), [web.der, longCopy, alice.issued.der]);
  });

  it('links through the valid copy whatever the order, even when an expired copy of the same delegation comes first', () => {
    // Of the candidates that sign, linkPresentedChain takes one valid at `at`,
    // not merely the first presented.
    const chain = linkPresentedChain(web.der, [shortCopy, longCopy, alice.issued.der], serverCas, at);
    assert.deepEqual(ders(chain), [web.der, longCopy, alice.issued.der]);
  });
});
