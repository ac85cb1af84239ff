// The strict chain checks (src/transport/chain-strictness.ts) rule by rule,
// on certificates the openssl CLI makes with exactly the extensions a test
// needs (sigil's own issuer cannot make a non-conforming certificate); the
// server-name matching without common-name fallback or partial wildcards
// (verifyServerName); and both opt-outs over real TLS 1.3 connections:
// channelCredentials' `strictChain` and MtlsServer's `strictChain`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { PeerCertificate } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { SigilError } from '../../src/errors.ts';
import {
  type ChainRule,
  checkChainStrictness,
  checkChainStrictnessOptions,
} from '../../src/transport/chain-strictness.ts';
import { channelCredentials } from '../../src/transport/client-credentials.ts';
import { EmbeddedCA } from '../../src/transport/embedded-ca.ts';
import { verifyServerName } from '../../src/transport/server-verification.ts';
import { StaticMaterialSource } from '../../src/transport/static-source.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';
import { startTlsGrpcPeer, whoAmI, whoAmIClient } from './client-fixtures.ts';
import { callUnary, closedAfterTests } from './fixtures.ts';

const dir = tempDir('sigil-strictness-');
const sigil = EmbeddedCA.create({ addresses: ['localhost', '127.0.0.1'], intermediate: true });
after(() => sigil.close());

interface Minted {
  readonly pem: string;
  readonly der: Buffer;
  readonly keyPem: string;
  readonly certPath: string;
  readonly keyPath: string;
}

let serial = 1;

/** The certificates of a PEM bundle, DER, in order. */
function derOf(pem: string): Buffer[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)].map(
    (match) => new X509Certificate(match[0]).raw,
  );
}

/**
 * A certificate from the openssl CLI with exactly `extensions` (openssl
 * config lines; SKI and AKI are left out unless listed). Self-signed
 * without `issuer`.
 */
function mint(subject: string, extensions: readonly string[], issuer?: Minted): Minted {
  const name = `c${serial++}`;
  const keyPem = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.pem`);
  const extPath = join(dir, `${name}.cnf`);
  writeFileSync(keyPath, keyPem);
  const lines = [...extensions];
  const has = (name: string, oid: string) => lines.some((l) => l.startsWith(name) || l.startsWith(`${oid}=`));
  if (!has('subjectKeyIdentifier', '2.5.29.14')) lines.push('subjectKeyIdentifier=none');
  if (!has('authorityKeyIdentifier', '2.5.29.35')) lines.push('authorityKeyIdentifier=none');
  writeFileSync(extPath, `[req]\ndistinguished_name=dn\n[dn]\n[e]\n${lines.join('\n')}\n`);
  const signer = issuer ? ['-CA', issuer.certPath, '-CAkey', issuer.keyPath] : [];
  const args = ['req', '-x509', '-new', '-key', keyPath, '-subj', subject, '-days', '2'];
  args.push(
    '-set_serial',
    String(serial),
    ...signer,
    '-config',
    extPath,
    '-extensions',
    'e',
    '-out',
    certPath,
  );
  execFileSync('openssl', args, { stdio: 'pipe' });
  const pem = readFileSync(certPath, 'utf8');
  return { pem, der: new X509Certificate(pem).raw, keyPem, certPath, keyPath };
}

const CA = [
  'basicConstraints=critical,CA:TRUE',
  'keyUsage=critical,keyCertSign,cRLSign',
  'subjectKeyIdentifier=hash',
];
const ISSUED = ['authorityKeyIdentifier=keyid'];
const LEAF = [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature',
  'extendedKeyUsage=serverAuth,clientAuth',
  'subjectKeyIdentifier=hash',
  'authorityKeyIdentifier=keyid',
  'subjectAltName=DNS:localhost,IP:127.0.0.1',
];

const root = mint('/CN=strict root', CA);
const intermediate = mint('/CN=strict intermediate', [...CA, ...ISSUED], root);
const leaf = mint('/CN=localhost', LEAF, intermediate);
const goodChain = [leaf.der, intermediate.der, root.der];

/** A leaf like LEAF with some lines replaced (by extension name) or added. */
function leafWith(
  changes: readonly string[],
  issuer: Minted = intermediate,
  subject = '/CN=localhost',
): Minted {
  const key = (line: string) => line.split('=')[0];
  const replaced = new Set(changes.map(key));
  return mint(
    subject,
    [...LEAF.filter((l) => !replaced.has(key(l))), ...changes.filter((l) => !l.endsWith('='))],
    issuer,
  );
}

/** The chain is refused by `rule`; returns the refusal. */
function refusedBy(chain: readonly Buffer[], rule: ChainRule, options = {}): SigilError {
  const error = checkChainStrictness(chain, options);
  assert.ok(error instanceof SigilError, `expected a refusal by "${rule}"`);
  refusal('unauthenticated', new RegExp(`strict check "${rule}"`))(error);
  return error;
}

describe('checkChainStrictness accepts what conforms', () => {
  test('a conforming openssl chain, with and without its root', () => {
    assert.equal(checkChainStrictness(goodChain), undefined);
    // A server that knows only the intermediate: the chain stops there and is checked as far as it goes.
    assert.equal(checkChainStrictness([leaf.der, intermediate.der]), undefined);
  });

  test('every chain sigil issues: embedded CA server and client leaves, with an intermediate', () => {
    const sigilRoot = derOf(sigil.chainPem()).at(-1) as Buffer;
    for (const issued of [sigil.issueServer(), sigil.issueClient('alice')]) {
      const chain = [...derOf(issued.certificateChain), sigilRoot];
      assert.equal(chain.length, 3, 'leaf, intermediate, root');
      assert.equal(checkChainStrictness(chain), undefined);
    }
  });

  test('a lone self-signed certificate (the peer is its own trust anchor) is exempt, as in OpenSSL', () => {
    const selfSigned = mint('/CN=pinned', ['keyUsage=critical,digitalSignature,keyCertSign']);
    assert.equal(checkChainStrictness([selfSigned.der]), undefined);
  });

  test('an empty subject is fine for a leaf whose subjectAltName is critical', () => {
    const nameless = leafWith(['subjectAltName=critical,DNS:localhost'], intermediate, '/');
    assert.equal(checkChainStrictness([nameless.der, intermediate.der, root.der]), undefined);
  });
});

describe('checkChainStrictness refuses each rule, naming it and the certificate', () => {
  test('issuer-not-ca: a root without basicConstraints', () => {
    const bare = mint('/CN=no bc root', [
      'keyUsage=critical,keyCertSign,cRLSign',
      'subjectKeyIdentifier=hash',
    ]);
    const child = leafWith([], bare);
    const error = refusedBy([child.der, bare.der], 'issuer-not-ca');
    assert.match(error.message, /trust anchor "CN=no bc root" .*no basicConstraints/);
  });

  test('ca-basic-constraints-not-critical: a root whose basicConstraints is not critical', () => {
    const soft = mint('/CN=soft root', ['basicConstraints=CA:TRUE', ...CA.slice(1)]);
    refusedBy([leafWith([], soft).der, soft.der], 'ca-basic-constraints-not-critical');
  });

  test('ca-missing-key-usage: a CA without keyUsage, and an issuer whose keyUsage lacks keyCertSign', () => {
    const noKu = mint('/CN=no ku root', ['basicConstraints=critical,CA:TRUE', 'subjectKeyIdentifier=hash']);
    refusedBy([leafWith([], noKu).der, noKu.der], 'ca-missing-key-usage');
    const crlOnly = mint('/CN=crl-only root', [
      'basicConstraints=critical,CA:TRUE',
      'keyUsage=critical,cRLSign',
      'subjectKeyIdentifier=hash',
    ]);
    const error = refusedBy([leafWith([], crlOnly).der, crlOnly.der], 'ca-missing-key-usage');
    assert.match(error.message, /lacks keyCertSign/);
  });

  test('ca-missing-subject-key-identifier: an intermediate without a subjectKeyIdentifier', () => {
    const noSki = mint('/CN=no ski intermediate', [...CA.slice(0, 2), ...ISSUED], root);
    // openssl cannot derive an AKI from an issuer without SKI: give the leaf one by hand.
    const child = leafWith(['authorityKeyIdentifier=', `2.5.29.35=DER:30168014${'ab'.repeat(20)}`], noSki);
    const error = refusedBy([child.der, noSki.der, root.der], 'ca-missing-subject-key-identifier');
    assert.match(error.message, /intermediate CA "CN=no ski intermediate"/);
  });

  test('missing-authority-key-identifier: a leaf, and an intermediate, without one; the anchor needs none', () => {
    const orphan = leafWith(['authorityKeyIdentifier=none']);
    const error = refusedBy([orphan.der, intermediate.der, root.der], 'missing-authority-key-identifier');
    assert.match(error.message, /leaf certificate "CN=localhost"/);
    // On a server the chain may be the leaf alone: the rule still applies to it.
    refusedBy([orphan.der], 'missing-authority-key-identifier');
    const noAki = mint('/CN=no aki intermediate', CA, root);
    refusedBy([leafWith([], noAki).der, noAki.der, root.der], 'missing-authority-key-identifier');
    assert.equal(checkChainStrictness([leaf.der, intermediate.der, root.der]), undefined, 'root has no AKI');
  });

  test('critical-key-identifier: a critical authorityKeyIdentifier, a critical subjectKeyIdentifier', () => {
    const criticalAki = leafWith(['authorityKeyIdentifier=critical,keyid']);
    refusedBy([criticalAki.der, intermediate.der, root.der], 'critical-key-identifier');
    const criticalSki = leafWith(['subjectKeyIdentifier=critical,hash']);
    refusedBy([criticalSki.der, intermediate.der, root.der], 'critical-key-identifier');
  });

  test('non-ca-key-cert-sign: a leaf that may sign certificates', () => {
    const signer = leafWith(['keyUsage=critical,digitalSignature,keyCertSign']);
    refusedBy([signer.der, intermediate.der, root.der], 'non-ca-key-cert-sign');
  });

  test('path-length-misuse: a pathLenConstraint on a certificate that is not a CA', () => {
    const pathLen = leafWith(['basicConstraints=critical,CA:FALSE,pathlen:0']);
    refusedBy([pathLen.der, intermediate.der, root.der], 'path-length-misuse');
  });

  test('empty-issuer: a certificate signed by a CA with an empty name', () => {
    const nameless = mint('/', [...CA]);
    const child = leafWith([], nameless);
    refusedBy([child.der, nameless.der], 'empty-issuer');
  });

  test('empty-subject: a leaf without a subject whose subjectAltName is not critical, and a nameless CA', () => {
    const nameless = leafWith([], intermediate, '/');
    refusedBy([nameless.der, intermediate.der, root.der], 'empty-subject');
    const namelessCa = mint('/', [...CA, ...ISSUED], root);
    const error = refusedBy([namelessCa.der, root.der], 'empty-subject');
    assert.match(error.message, /empty subject, serial [0-9a-f]+\)" has an empty subject but is a CA/);
  });

  test('empty-extension: an empty subjectAltName, an empty extKeyUsage', () => {
    const emptySan = leafWith(['subjectAltName=', '2.5.29.17=DER:3000']);
    refusedBy([emptySan.der, intermediate.der, root.der], 'empty-extension');
    const emptyEku = leafWith(['extendedKeyUsage=', '2.5.29.37=DER:3000']);
    const error = refusedBy([emptyEku.der, intermediate.der, root.der], 'empty-extension');
    assert.match(error.message, /extKeyUsage/);
  });

  test('signature-algorithm-mismatch: TBSCertificate names another algorithm than the signature', () => {
    // ecdsa-with-SHA256 is 1.2.840.10045.4.3.2; rewrite the outer copy (the last one) to SHA-384.
    const oid = Buffer.from('06082a8648ce3d040302', 'hex');
    const der = Buffer.from(leaf.der);
    const outer = der.lastIndexOf(oid);
    assert.ok(outer > der.indexOf(oid), 'two copies of the algorithm');
    der[outer + oid.length - 1] = 0x03;
    refusedBy([der, intermediate.der, root.der], 'signature-algorithm-mismatch');
  });

  test('extensions-require-v3: a version 1 certificate with extensions', () => {
    // The version field: [0] { INTEGER 2 } right at the start of TBSCertificate.
    const der = Buffer.from(leaf.der);
    const at = der.indexOf(Buffer.from('a003020102', 'hex'));
    assert.ok(at > 0 && at < 16);
    der[at + 4] = 0x00;
    const error = refusedBy([der, intermediate.der, root.der], 'extensions-require-v3');
    assert.match(error.message, /version 1/);
  });

  test('name-constraints-misuse: nameConstraints in a leaf, and an empty nameConstraints in a CA', () => {
    const constrainedLeaf = leafWith(['nameConstraints=critical,permitted;DNS:localhost']);
    refusedBy([constrainedLeaf.der, intermediate.der, root.der], 'name-constraints-misuse');
    const emptyNc = mint('/CN=empty nc', [...CA, ...ISSUED, '2.5.29.30=critical,DER:3000'], root);
    const error = refusedBy([leafWith([], emptyNc).der, emptyNc.der, root.der], 'name-constraints-misuse');
    assert.match(error.message, /neither permitted nor excluded/);
  });

  test('policy-constraints-not-critical: a non-critical policyConstraints', () => {
    const soft = mint('/CN=soft pc', [...CA, ...ISSUED, 'policyConstraints=requireExplicitPolicy:0'], root);
    refusedBy([leafWith([], soft).der, soft.der, root.der], 'policy-constraints-not-critical');
  });

  test('unreadable-certificate: a certificate the checks cannot read is refused, never skipped', () => {
    refusedBy([Buffer.from('not a certificate'), root.der], 'unreadable-certificate');
    assert.ok(checkChainStrictness([]) instanceof SigilError, 'an empty chain is refused');
  });

  test('max-chain-depth: intermediates beyond the limit; self-issued ones do not count', () => {
    refusedBy(goodChain, 'max-chain-depth', { maxChainDepth: 0 });
    assert.equal(checkChainStrictness(goodChain, { maxChainDepth: 1 }), undefined);
    assert.equal(checkChainStrictness([leafWith([], root).der, root.der], { maxChainDepth: 0 }), undefined);
    // A key rollover: a second intermediate with the first one's name, signed by it.
    const rolled = mint('/CN=strict intermediate', [...CA, ...ISSUED], intermediate);
    const chain = [leafWith([], rolled).der, rolled.der, intermediate.der, root.der];
    assert.equal(checkChainStrictness(chain, { maxChainDepth: 1 }), undefined);
    const error = refusedBy(chain, 'max-chain-depth', { maxChainDepth: 0 });
    assert.match(error.message, /1 intermediate CA, more than the 0 allowed/);
  });

  test('checkChainStrictnessOptions refuses a depth that is not a whole number', () => {
    for (const bad of [-1, 1.5, Number.NaN]) {
      assert.throws(() => checkChainStrictnessOptions({ maxChainDepth: bad }), /maxChainDepth/);
    }
    assert.doesNotThrow(() => checkChainStrictnessOptions({ maxChainDepth: 0 }));
  });
});

describe('verifyServerName: DNS and IP SANs only, whole-label wildcards only', () => {
  const presented = (minted: Minted, serverName: string) => ({
    serverName,
    certificate: new X509Certificate(minted.pem).toLegacyObject() as PeerCertificate,
  });
  const check = (minted: Minted, name: string, legacy = false) =>
    verifyServerName(name, legacy ? { nodeCheckServerIdentity: true } : {}).check(presented(minted, name));

  test('no subject common name fallback: not without SANs, not with only an IP SAN', () => {
    const cnOnly = leafWith(['subjectAltName='], intermediate, '/CN=cn.example.com');
    const error = check(cnOnly, 'cn.example.com');
    assert.ok(error instanceof SigilError);
    assert.match(error.message, /not valid for "cn\.example\.com".*common name is not used/);
    const ipOnly = leafWith(['subjectAltName=IP:10.0.0.1'], intermediate, '/CN=cn.example.com');
    assert.ok(check(ipOnly, 'cn.example.com') instanceof SigilError);
    // The opt-out restores Node's checkServerIdentity, common-name fallback included.
    assert.equal(check(cnOnly, 'cn.example.com', true), undefined);
    assert.equal(check(ipOnly, 'cn.example.com', true), undefined);
  });

  test('partial-label wildcards never match; Node matched them', () => {
    const partial = leafWith(['subjectAltName=DNS:b*z.example.com']);
    for (const host of ['buzz.example.com', 'bz.example.com']) {
      assert.ok(check(partial, host) instanceof SigilError, host);
    }
    assert.equal(check(partial, 'buzz.example.com', true), undefined, "Node's semantics match it");
  });

  test('a whole leftmost "*" matches exactly one label, case-insensitively, ignoring a trailing dot', () => {
    const wildcard = leafWith(['subjectAltName=DNS:*.example.com']);
    assert.equal(check(wildcard, 'a.example.com'), undefined);
    assert.equal(check(wildcard, 'A.Example.COM.'), undefined);
    for (const host of ['example.com', 'a.b.example.com', 'a.example.org', 'a..example.com']) {
      assert.ok(check(wildcard, host) instanceof SigilError, host);
    }
  });

  test('no wildcard over a single-label parent, and none for IP addresses', () => {
    const tld = leafWith(['subjectAltName=DNS:*.com']);
    assert.ok(check(tld, 'example.com') instanceof SigilError);
    const star = leafWith(['subjectAltName=DNS:*.0.0.1']);
    assert.ok(check(star, '127.0.0.1') instanceof SigilError);
  });

  test('IP addresses match IP SANs byte for byte, never DNS SANs', () => {
    const v6 = leafWith(['subjectAltName=IP:::1,DNS:10.1.1.1']);
    assert.equal(check(v6, '0:0:0:0:0:0:0:1'), undefined);
    assert.equal(check(v6, '::1'), undefined);
    assert.ok(check(v6, '10.1.1.1') instanceof SigilError, 'an address written as a DNS SAN');
    assert.equal(check(leaf, '127.0.0.1'), undefined);
    assert.ok(check(leaf, '127.0.0.2') instanceof SigilError);
  });

  test('exact DNS names still match, and the description says which rules apply', () => {
    assert.equal(check(leaf, 'localhost'), undefined);
    assert.ok(check(leaf, 'otherhost') instanceof SigilError);
    assert.match(
      verifyServerName('x', { nodeCheckServerIdentity: true }).description,
      /Node's checkServerIdentity/,
    );
  });
});

describe('the opt-outs over real TLS 1.3 connections', () => {
  test('channelCredentials refuses a non-conforming server chain by default; strictChain: false accepts it', async (t) => {
    const orphan = leafWith(['authorityKeyIdentifier=none']);
    const peer = await startTlsGrpcPeer({
      cert: `${orphan.pem}${intermediate.pem}`,
      key: orphan.keyPem,
      ca: sigil.chainPem(),
    });
    t.after(() => peer.close());
    const material = new StaticMaterialSource({ ...sigil.issueClient('strict'), trustBundle: root.pem });
    const call = async (options: Parameters<typeof channelCredentials>[0]) => {
      const client = whoAmIClient(peer.port, channelCredentials(options), {
        'grpc.ssl_target_name_override': 'localhost',
      });
      t.after(() => client.close());
      return whoAmI(client);
    };
    await assert.rejects(call({ material }), (error: grpc.ServiceError) => {
      assert.match(
        error.details,
        /strict check "missing-authority-key-identifier".*leaf certificate "CN=localhost"/,
      );
      return true;
    });
    assert.equal(typeof (await call({ material, strictChain: false })), 'string');
  });

  test('channelCredentials applies maxChainDepth to the verified chain, and refuses a bad one up front', async (t) => {
    const peer = await startTlsGrpcPeer({
      cert: `${leaf.pem}${intermediate.pem}`,
      key: leaf.keyPem,
      ca: sigil.chainPem(),
    });
    t.after(() => peer.close());
    const material = new StaticMaterialSource({ ...sigil.issueClient('depth'), trustBundle: root.pem });
    const call = async (maxChainDepth: number) => {
      const client = whoAmIClient(
        peer.port,
        channelCredentials({ material, strictChain: { maxChainDepth } }),
        {
          'grpc.ssl_target_name_override': 'localhost',
        },
      );
      t.after(() => client.close());
      return whoAmI(client);
    };
    await assert.rejects(call(0), /strict check "max-chain-depth"/);
    assert.equal(typeof (await call(1)), 'string');
    assert.throws(
      () => channelCredentials({ material, strictChain: { maxChainDepth: -1 } }),
      /maxChainDepth/,
    );
  });

  test('MtlsServer refuses a non-conforming client chain by default, reporting why; strictChain: false admits it', async () => {
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
    const server = sigil.issueServer();
    const material = new StaticMaterialSource({ ...server, trustBundle: root.pem });
    const presented = { certificateChain: clientLeaf.pem, privateKey: clientLeaf.keyPem };

    const strict = await start({ material });
    await assert.rejects(callUnary(client(strict.port, sigil.chainPem(), presented)));
    const failure = strict.failures.find((f) => f.reason === 'CERT_CHAIN_NOT_STRICT');
    assert.ok(failure, `a CERT_CHAIN_NOT_STRICT failure among ${JSON.stringify(strict.failures)}`);
    assert.match(
      failure.message,
      /strict check "non-ca-key-cert-sign".*leaf certificate "CN=signing client"/,
    );
    assert.equal(strict.server.connections.size, 0);

    const lenient = await start({ material, strictChain: false });
    const answer = await callUnary(client(lenient.port, sigil.chainPem(), presented));
    assert.ok(answer.response.length > 0);
    assert.deepEqual(lenient.failures, []);
  });
});
