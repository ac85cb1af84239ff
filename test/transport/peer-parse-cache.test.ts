// The per-connection certificate reading shared by the strict chain checks and
// the peer identity (src/transport/certificate-parts.ts and its caches):
// keyed by the exact bytes (a look-alike with one byte changed is read and
// judged afresh), bounded, a refused chain refused again on the next
// connection, and the strict-DER fast paths reading exactly what asn1js and
// @peculiar/asn1-x509 read (anything they decline goes the old way).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  AuthorityKeyIdentifier,
  BasicConstraints,
  ExtendedKeyUsage,
  KeyUsage,
  KeyUsageFlags,
  NameConstraints,
  SubjectAlternativeName,
} from '@peculiar/asn1-x509';
import { DerError } from '../../src/pki/der-reader.ts';
import { BoundedCertificateCache } from '../../src/transport/certificate-cache.ts';
import { certificateParts, readStructureAsn1 } from '../../src/transport/certificate-parts.ts';
import { readStructureDer } from '../../src/transport/certificate-structure-der.ts';
import { checkChainStrictness } from '../../src/transport/chain-strictness.ts';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import {
  basicConstraintsDer,
  hasKeyIdentifierDer,
  itemCountDer,
  keyUsageDer,
  subtreesEmptyDer,
} from '../../src/transport/extension-values-der.ts';
import { generalNamesDer } from '../../src/transport/general-names-der.ts';
import { identityFromChain } from '../../src/transport/peer-identity.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { tempDir } from '../support/temp-dir.ts';
import { callUnary, closedAfterTests } from './fixtures.ts';

const sigil = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate: true });
after(() => sigil.close());
const dir = tempDir('sigil-peer-parse-');

function derOf(pem: string): Buffer[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)].map(
    (match) => new X509Certificate(match[0]).raw,
  );
}

/** A node-shaped chain from the embedded CA: [leaf, intermediate, root]. */
function nodeChain(name: string): Buffer[] {
  return [...derOf(sigil.issueClient(name).certificateChain), derOf(sigil.chainPem()).at(-1) as Buffer];
}

/** A copy of `der` with the first occurrence of `from` replaced by `to` (same length). */
function withBytes(der: Buffer, from: Buffer, to: Buffer): Buffer {
  assert.equal(from.length, to.length);
  const at = der.indexOf(from);
  assert.ok(at >= 0, `the certificate holds ${from.toString('hex')}`);
  const copy = Buffer.from(der);
  to.copy(copy, at);
  return copy;
}

let serial = 1;

interface Minted {
  readonly pem: string;
  readonly der: Buffer;
  readonly keyPem: string;
  readonly certPath: string;
  readonly keyPath: string;
}

/** A certificate from the openssl CLI with exactly `extensions`; self-signed without `issuer`. */
function mint(subject: string, extensions: readonly string[], issuer?: Minted): Minted {
  const name = `c${serial++}`;
  const keyPem = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.pem`);
  const extPath = join(dir, `${name}.cnf`);
  writeFileSync(keyPath, keyPem);
  writeFileSync(extPath, `[req]\ndistinguished_name=dn\n[dn]\n[e]\n${extensions.join('\n')}\n`);
  const signer = issuer ? ['-CA', issuer.certPath, '-CAkey', issuer.keyPath] : [];
  execFileSync(
    'openssl',
    ['req', '-x509', '-new', '-key', keyPath, '-subj', subject, '-days', '2', '-set_serial', String(serial)]
      .concat(signer)
      .concat(['-config', extPath, '-extensions', 'e', '-out', certPath]),
    { stdio: 'pipe' },
  );
  const pem = readFileSync(certPath, 'utf8');
  return { pem, der: new X509Certificate(pem).raw, keyPem, certPath, keyPath };
}

const CA = [
  'basicConstraints=critical,CA:TRUE,pathlen:1',
  'keyUsage=critical,keyCertSign,cRLSign',
  'subjectKeyIdentifier=hash',
  'authorityKeyIdentifier=keyid,issuer',
];
const root = mint('/CN=parse root/O=sigil tests', CA);
const intermediate = mint(
  '/CN=parse intermediate',
  [...CA, 'nameConstraints=critical,permitted;DNS:example.com,excluded;IP:10.0.0.0/255.0.0.0'],
  root,
);
const corpus: Minted[] = [
  root,
  intermediate,
  mint(
    '/CN=many names',
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth,clientAuth',
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid',
      'subjectAltName=DNS:a.example.com,DNS:B.Example.com,IP:127.0.0.1,IP:::1,IP:2001:db8::8:800:200c:417a,URI:spiffe://example.com/x',
    ],
    intermediate,
  ),
  mint('/CN=v3 bare leaf', ['subjectAltName=email:someone@example.com,DNS:mail.example.com'], intermediate),
  mint('/CN=policy', ['policyConstraints=requireExplicitPolicy:0', 'inhibitAnyPolicy=1', ...CA], root),
  mint('/CN=soft basic constraints', ['basicConstraints=CA:TRUE', 'keyUsage=keyCertSign'], root),
];

describe('the cache is keyed by the exact bytes', () => {
  test('an intermediate with one byte changed is judged afresh: refused where the original passes', () => {
    const chain = nodeChain('look-alike');
    assert.equal(checkChainStrictness(chain), undefined, 'the node chain conforms');
    // basicConstraints (2.5.29.19), critical TRUE → FALSE: one byte.
    const soft = withBytes(
      chain[1],
      Buffer.from('0603551d130101ff', 'hex'),
      Buffer.from('0603551d13010100', 'hex'),
    );
    const before = Buffer.from(chain[1]);
    const refused = checkChainStrictness([chain[0], soft, chain[2]]);
    assert.ok(refused, 'the look-alike is refused');
    assert.match(refused.message, /strict check "ca-basic-constraints-not-critical".*intermediate CA/);
    // Asked again, each gets its own verdict; nothing cached was changed.
    assert.ok(checkChainStrictness([chain[0], soft, chain[2]]));
    assert.equal(checkChainStrictness(chain), undefined);
    assert.deepEqual(chain[1], before);
  });

  test('a leaf with one byte changed in its SPIFFE ID yields its own identity', () => {
    const chain = nodeChain('node-a');
    const first = identityFromChain(chain, 'deployment');
    assert.equal(first.spiffeId, `spiffe://${sigil.trustDomain}/client/node-a`);
    const lookAlike = withBytes(chain[0], Buffer.from('/client/node-a'), Buffer.from('/client/node-b'));
    const second = identityFromChain([lookAlike, chain[1]], 'deployment');
    assert.equal(second.spiffeId, `spiffe://${sigil.trustDomain}/client/node-b`);
    assert.notEqual(second.fingerprint, first.fingerprint);
    assert.equal(
      identityFromChain(chain, 'deployment').spiffeId,
      first.spiffeId,
      'the original is unchanged',
    );
  });

  test('a caller changing the buffer it passed cannot change what was cached', () => {
    const chain = nodeChain('mutable');
    const identity = identityFromChain(chain, 'deployment');
    const pristine = Buffer.from(chain[0]);
    identity.extensions[0].value.fill(0);
    chain[0].fill(0, 0, chain[0].length);
    const again = identityFromChain([pristine, chain[1]], 'deployment');
    assert.equal(again.spiffeId, identity.spiffeId);
    assert.notDeepEqual(again.extensions[0].value, identity.extensions[0].value);
  });
});

describe('BoundedCertificateCache', () => {
  test('is bounded and forgets the least recently used entry first', () => {
    const cache = new BoundedCertificateCache<string>(2);
    const reads: string[] = [];
    const read = (der: Uint8Array) => {
      const text = Buffer.from(der).toString();
      reads.push(text);
      return text;
    };
    cache.get(Buffer.from('a'), read);
    cache.get(Buffer.from('b'), read);
    cache.get(Buffer.from('a'), read); // a is now the most recently used
    cache.get(Buffer.from('c'), read); // b goes
    assert.equal(cache.size, 2);
    assert.ok(cache.has(Buffer.from('a')));
    assert.ok(!cache.has(Buffer.from('b')));
    assert.ok(cache.has(Buffer.from('c')));
    cache.get(Buffer.from('b'), read);
    assert.deepEqual(reads, ['a', 'b', 'c', 'b']);
    assert.equal(cache.size, 2);
  });

  test('reads bytes that differ by one bit afresh, and refuses a limit below 1', () => {
    const cache = new BoundedCertificateCache<number>(8);
    let reads = 0;
    const read = () => ++reads;
    assert.equal(cache.get(Buffer.from([1, 2, 3]), read), 1);
    assert.equal(cache.get(Buffer.from([1, 2, 3]), read), 1);
    assert.equal(cache.get(Buffer.from([1, 2, 2]), read), 2);
    assert.throws(() => new BoundedCertificateCache(0), RangeError);
  });

  test('the shared certificate reading stays bounded under many distinct leaves', () => {
    const first = nodeChain('bound-first')[0];
    const firstReading = certificateParts(first);
    assert.equal(certificateParts(Buffer.from(first)), firstReading, 'the same bytes find the same reading');
    let last: Buffer = first;
    for (let i = 0; i < 1100; i++) {
      last = nodeChain(`bound-${i}`)[0];
      certificateParts(last);
    }
    const lastReading = certificateParts(last);
    assert.equal(certificateParts(Buffer.from(last)), lastReading, 'a recent leaf is still cached');
    // 1,100 other leaves later the first was forgotten: its bytes are read again, to an equal reading.
    const again = certificateParts(first);
    assert.notEqual(again, firstReading);
    assert.ok('structure' in again && 'structure' in firstReading);
    assert.deepEqual(comparable(again.structure), comparable(firstReading.structure));
  });
});

describe('a refused chain stays refused', () => {
  test('a non-conforming client chain is refused on every connection, not only the first', async () => {
    const { start, client } = closedAfterTests();
    const clientLeaf = mint(
      '/CN=signing client',
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyCertSign',
        'extendedKeyUsage=clientAuth',
        'subjectKeyIdentifier=hash',
        'authorityKeyIdentifier=keyid',
        `subjectAltName=URI:spiffe://${sigil.trustDomain}/client/signing`,
      ],
      root,
    );
    const material = new StaticMaterialSource({ ...sigil.issueServer(), trustBundle: root.pem });
    const presented = { certificateChain: clientLeaf.pem, privateKey: clientLeaf.keyPem };
    const strict = await start({ material });
    for (let connection = 1; connection <= 2; connection++) {
      await assert.rejects(callUnary(client(strict.port, sigil.chainPem(), presented)));
      const refusals = strict.failures.filter((f) => f.reason === 'CERT_CHAIN_NOT_STRICT');
      assert.equal(refusals.length, connection, `connection ${connection} refused`);
      assert.match(refusals[connection - 1].message, /strict check "non-ca-key-cert-sign"/);
      assert.equal(strict.server.connections.size, 0);
    }
  });

  test('checkChainStrictness gives the same refusal twice', () => {
    const soft = corpus[5];
    const first = checkChainStrictness([soft.der, root.der]);
    const second = checkChainStrictness([soft.der, root.der]);
    assert.ok(first && second);
    assert.equal(second.message, first.message);
    assert.match(first.message, /ca-basic-constraints-not-critical/);
  });
});

/** A structure with its extension values as hex, for comparing. */
function comparable(structure: ReturnType<typeof readStructureAsn1>) {
  const { strictDer: _reader, ...rest } = structure;
  return {
    ...rest,
    extensions: structure.extensions.map((e) => ({ ...e, value: Buffer.from(e.value).toString('hex') })),
  };
}

describe('the strict-DER fast paths read what the libraries read', () => {
  const certificates = [
    ...corpus.map((m) => m.der),
    ...nodeChain('differential'),
    ...derOf(sigil.issueServer().certificateChain),
  ];

  test('the certificate structure equals asn1js reading, certificate by certificate', () => {
    for (const der of certificates) {
      assert.deepEqual(comparable(readStructureDer(der)), comparable(readStructureAsn1(der)));
    }
  });

  test('subjectAltName names equal @peculiar/asn1-x509 reading', () => {
    let compared = 0;
    for (const der of certificates) {
      const san = readStructureAsn1(der).extensions.find((e) => e.oid === '2.5.29.17');
      if (!san) continue;
      const library = AsnConvert.parse(san.value, SubjectAlternativeName).map((name) => ({ ...name }));
      let fast: ReturnType<typeof generalNamesDer>;
      try {
        fast = generalNamesDer(san.value);
      } catch (error) {
        // Declined (here: an email name) — the library then reads it, as before.
        assert.ok(error instanceof DerError);
        assert.ok(library.some((name) => name.rfc822Name !== undefined));
        continue;
      }
      compared++;
      assert.equal(fast.length, library.length);
      for (const [index, name] of fast.entries()) {
        const expected = library[index];
        if ('iPAddress' in name) {
          assert.ok(expected.iPAddress);
          const canonical = (text: string) => identityText(text);
          assert.equal(canonical(name.iPAddress), canonical(expected.iPAddress));
        } else
          assert.deepEqual(
            name,
            Object.fromEntries(Object.entries(expected).filter(([, v]) => v !== undefined)),
          );
      }
    }
    assert.ok(compared >= 3, `compared ${compared} subjectAltNames`);
  });

  test("the strict checks' extension facts equal @peculiar/asn1-x509 reading", () => {
    const seen = new Set<string>();
    for (const der of certificates) {
      for (const { oid, value } of readStructureAsn1(der).extensions) {
        seen.add(oid);
        if (oid === '2.5.29.19') {
          const library = AsnConvert.parse(value, BasicConstraints);
          assert.deepEqual(
            basicConstraintsDer(value),
            library.pathLenConstraint === undefined
              ? { ca: library.cA }
              : { ca: library.cA, pathLen: library.pathLenConstraint },
          );
        } else if (oid === '2.5.29.15') {
          const bits = AsnConvert.parse(value, KeyUsage).toNumber();
          assert.deepEqual(keyUsageDer(value), {
            keyCertSign: (bits & KeyUsageFlags.keyCertSign) !== 0,
            cRLSign: (bits & KeyUsageFlags.cRLSign) !== 0,
          });
        } else if (oid === '2.5.29.35') {
          const library = AsnConvert.parse(value, AuthorityKeyIdentifier);
          assert.equal(hasKeyIdentifierDer(value), library.keyIdentifier !== undefined);
        } else if (oid === '2.5.29.37') {
          assert.equal(itemCountDer(value), AsnConvert.parse(value, ExtendedKeyUsage).length);
        } else if (oid === '2.5.29.17') {
          assert.equal(itemCountDer(value), AsnConvert.parse(value, SubjectAlternativeName).length);
        } else if (oid === '2.5.29.30') {
          const library = AsnConvert.parse(value, NameConstraints);
          const empty = !library.permittedSubtrees?.length && !library.excludedSubtrees?.length;
          assert.equal(subtreesEmptyDer(value), empty);
        }
      }
    }
    for (const oid of ['2.5.29.19', '2.5.29.15', '2.5.29.35', '2.5.29.37', '2.5.29.17', '2.5.29.30']) {
      assert.ok(seen.has(oid), `the corpus has extension ${oid}`);
    }
  });

  test('a certificate outside strict DER is declined by the fast path and read by asn1js as before', () => {
    const der = corpus[2].der;
    // The outer length in long form with a leading zero octet: valid BER, not DER.
    assert.equal(der[1], 0x82);
    const ber = Buffer.concat([der.subarray(0, 1), Buffer.from([0x83, 0x00]), der.subarray(2)]);
    assert.throws(() => readStructureDer(ber), DerError);
    assert.deepEqual(comparable(readStructureAsn1(ber)), comparable(readStructureAsn1(der)));
    // OpenSSL reads it too, so the checks and the identity take the libraries' way, with the same outcome.
    const parts = certificateParts(ber);
    assert.ok('structure' in parts && !parts.structure.strictDer, 'read by asn1js');
    assert.equal(checkChainStrictness([ber, intermediate.der, root.der]), undefined);
    const viaLibrary = identityFromChain([ber, intermediate.der], 'deployment');
    const viaFastPath = identityFromChain([der, intermediate.der], 'deployment');
    assert.deepEqual(viaLibrary.extensions, viaFastPath.extensions);
    assert.deepEqual(viaLibrary.ipAddresses, viaFastPath.ipAddresses);
    assert.equal(viaLibrary.spiffeId, viaFastPath.spiffeId);
  });

  test('the peer identity of every corpus leaf names what the library reads', () => {
    const identity = identityFromChain([corpus[2].der, intermediate.der], 'deployment');
    assert.equal(identity.spiffeId, 'spiffe://example.com/x');
    assert.deepEqual(identity.dnsNames, ['a.example.com', 'b.example.com']);
    assert.deepEqual(identity.ipAddresses, ['127.0.0.1', '::1', '2001:db8::8:800:200c:417a']);
    const mail = identityFromChain([corpus[3].der, intermediate.der], 'deployment');
    assert.deepEqual(mail.dnsNames, ['mail.example.com']);
    assert.equal(mail.spiffeId, null);
  });
});

/** Canonical text of an IP address, through Node's own parser. */
function identityText(text: string): string {
  return new URL(`http://${text.includes(':') ? `[${text}]` : text}/`).hostname;
}
