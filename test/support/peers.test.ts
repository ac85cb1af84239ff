// The independent-peer harness (test/support/peers.ts) must be able to fail
// both ways: chains made here with the openssl CLI that every peer must accept,
// and chains every peer that checks them must refuse (untrusted root, expired
// leaf, URI outside the intermediate's name constraint). It also records what
// the peers do where they differ: custom extension OIDs with a 128-bit arc,
// pyca's refusal of URI name constraints, and grpcio's handling of them.
//
// A peer missing on this machine skips its tests with the reason printed; under
// CI (which installs golang-go, python3-cryptography and python3-grpcio) a
// missing peer fails instead. pyca's path validation (cryptography 42+) is
// optional: Debian's cryptography only parses.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { opensslIn } from './openssl-in.ts';
import {
  type ChainRequest,
  findPythonInterpreters,
  type GoVerifier,
  needPeer,
  type Opened,
  openPeer,
  type PythonGrpcPeer,
  type PythonGrpcServer,
  type PythonVerifier,
  pythonGrpcCall,
  startGoVerifier,
  startPythonGrpcServer,
  startPythonVerifier,
  verifyWithOpenssl,
} from './peers.ts';
import { tempDir } from './temp-dir.ts';

// ---------------------------------------------------------------------------
// certificates, made with the openssl CLI

const dir = tempDir('sigil-peers-test-');
const { openssl } = opensslIn(dir);

interface Issued {
  readonly name: string;
  readonly cert: string;
  readonly key: string;
}

const CA_EXTENSIONS = [
  'basicConstraints=critical,CA:TRUE',
  'keyUsage=critical,keyCertSign,cRLSign',
  'subjectKeyIdentifier=hash',
];
const INTERMEDIATE_EXTENSIONS = [
  'basicConstraints=critical,CA:TRUE,pathlen:0',
  'keyUsage=critical,keyCertSign,cRLSign',
  'subjectKeyIdentifier=hash',
  'authorityKeyIdentifier=keyid',
];
const leafExtensions = (usage: 'clientAuth' | 'serverAuth', san: string): string[] => [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature',
  `extendedKeyUsage=${usage}`,
  'subjectKeyIdentifier=hash',
  'authorityKeyIdentifier=keyid',
  `subjectAltName=${san}`,
];

let files = 0;
/** A P-256 key and a request config whose [ext] section holds `extensions`. */
function prepare(commonName: string, extensions: readonly string[]): { base: string; config: string } {
  const base = `c${files++}`;
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${base}.key`);
  const config = `${base}.cnf`;
  writeFileSync(
    join(dir, config),
    [
      '[req]',
      'distinguished_name = dn',
      'prompt = no',
      '[dn]',
      `CN = ${commonName}`,
      '[ext]',
      ...extensions,
      '',
    ].join('\n'),
  );
  return { base, config };
}

function read(base: string, name: string): Issued {
  return {
    name,
    cert: readFileSync(join(dir, `${base}.pem`), 'utf8'),
    key: readFileSync(join(dir, `${base}.key`), 'utf8'),
  };
}

/** A positive random serial number. */
const serial = (): string => {
  const bytes = randomBytes(12);
  bytes[0] &= 0x7f;
  return '0x' + bytes.toString('hex');
};

function makeRoot(name: string): Issued {
  const { base, config } = prepare(name, CA_EXTENSIONS);
  openssl(
    'req',
    ...['-x509', '-new', '-key', `${base}.key`, '-config', config, '-extensions', 'ext', '-days', '3650'],
    ...['-set_serial', serial(), '-out', `${base}.pem`],
  );
  return read(base, name);
}

/**
 * A certificate for `name` signed by `issuer`. With `dates` (openssl's
 * YYYYMMDDHHMMSSZ) it goes through `openssl ca`, which can backdate; otherwise
 * `openssl x509 -req` for `days` from now.
 */
function issue(
  name: string,
  issuer: Issued,
  extensions: readonly string[],
  options: { days?: number; dates?: { start: string; end: string } } = {},
): Issued {
  const { base, config } = prepare(name, extensions);
  openssl('req', '-new', '-key', `${base}.key`, '-config', config, '-out', `${base}.csr`);
  writeFileSync(join(dir, `${base}.issuer.pem`), issuer.cert);
  writeFileSync(join(dir, `${base}.issuer.key`), issuer.key);
  if (options.dates) {
    writeFileSync(join(dir, `${base}.index`), '');
    writeFileSync(join(dir, `${base}.serial`), serial().slice(2) + '\n');
    writeFileSync(
      join(dir, `${base}.ca.cnf`),
      [
        '[ca]',
        'default_ca = issuer',
        '[issuer]',
        `database = ${base}.index`,
        `serial = ${base}.serial`,
        'new_certs_dir = .',
        'default_md = sha256',
        'policy = anything',
        'unique_subject = no',
        '[anything]',
        'commonName = supplied',
        '',
      ].join('\n'),
    );
    openssl(
      'ca',
      ...['-batch', '-notext', '-config', `${base}.ca.cnf`, '-cert', `${base}.issuer.pem`],
      ...['-keyfile', `${base}.issuer.key`, '-in', `${base}.csr`, '-out', `${base}.pem`],
      ...[
        '-startdate',
        options.dates.start,
        '-enddate',
        options.dates.end,
        '-extfile',
        config,
        '-extensions',
        'ext',
      ],
    );
  } else {
    openssl(
      'x509',
      ...['-req', '-in', `${base}.csr`, '-CA', `${base}.issuer.pem`, '-CAkey', `${base}.issuer.key`],
      ...['-set_serial', serial(), '-days', String(options.days ?? 30), '-sha256'],
      ...['-extfile', config, '-extensions', 'ext', '-out', `${base}.pem`],
    );
  }
  return read(base, name);
}

const root = makeRoot('Peers Root');
const otherRoot = makeRoot('Peers Other Root');
const inter = issue('Peers Intermediate', root, INTERMEDIATE_EXTENSIONS, { days: 3650 });
const clientLeaf = issue('web-1', inter, leafExtensions('clientAuth', 'URI:spiffe://example.org/node/web-1'));
const serverLeaf = issue('localhost', inter, leafExtensions('serverAuth', 'DNS:localhost,IP:127.0.0.1'));
const expiredLeaf = issue(
  'expired',
  inter,
  leafExtensions('clientAuth', 'URI:spiffe://example.org/node/old'),
  {
    dates: { start: '20200101000000Z', end: '20200201000000Z' },
  },
);
// A whole hierarchy under a root nobody in these tests trusts.
const strangerInter = issue('Stranger Intermediate', otherRoot, INTERMEDIATE_EXTENSIONS, { days: 3650 });
const strangerLeaf = issue(
  'stranger',
  strangerInter,
  leafExtensions('clientAuth', 'URI:spiffe://example.org/node/web-1'),
);
// A delegated intermediate constrained to alice's URI host, a leaf inside it and a forged one outside.
const delegated = issue(
  'Alice Delegation',
  root,
  [
    ...INTERMEDIATE_EXTENSIONS,
    'nameConstraints=critical,permitted;URI:alice.d.example.org,permitted;URI:.alice.d.example.org',
  ],
  { days: 3650 },
);
const insideLeaf = issue(
  'alice-1',
  delegated,
  leafExtensions('clientAuth', 'URI:spiffe://alice.d.example.org/w/1'),
);
const forgedLeaf = issue(
  'forged',
  delegated,
  leafExtensions('clientAuth', 'URI:spiffe://example.org/admin/x'),
);
// Custom non-critical extensions on the intermediate: small arcs, and a 128-bit arc under 2.25.
const SMALL_OID = '2.999.60.1';
const BIG_OID = '2.25.55506409673561962886091138008118191280';
const customInter = issue(
  'Custom Extension Intermediate',
  root,
  [...INTERMEDIATE_EXTENSIONS, `${SMALL_OID}=ASN1:UTF8String:sigil`],
  { days: 3650 },
);
const customLeaf = issue(
  'custom',
  customInter,
  leafExtensions('clientAuth', 'URI:spiffe://example.org/node/c'),
);
const bigArcInter = issue(
  'Big Arc Intermediate',
  root,
  [...INTERMEDIATE_EXTENSIONS, `${BIG_OID}=ASN1:UTF8String:sigil`],
  { days: 3650 },
);
const bigArcLeaf = issue('big', bigArcInter, leafExtensions('clientAuth', 'URI:spiffe://example.org/node/b'));

/** The question "is `leaf` (issued by `issuer`) a client of `roots`?". */
const clientChain = (leaf: Issued, issuer: Issued, roots: readonly Issued[] = [root]): ChainRequest => ({
  roots: roots.map((r) => r.cert),
  intermediates: [issuer.cert],
  leaf: leaf.cert,
  usage: 'client',
});

// ---------------------------------------------------------------------------

describe('openssl verify', () => {
  it('accepts a valid root → intermediate → leaf client chain, strict or not', async () => {
    const plain = await verifyWithOpenssl(clientChain(clientLeaf, inter));
    assert.equal(plain.ok, true, plain.output);
    const strict = await verifyWithOpenssl({ ...clientChain(clientLeaf, inter), strict: true });
    assert.equal(strict.ok, true, strict.output);
  });

  it('checks the purpose and the host name', async () => {
    const server = { ...clientChain(serverLeaf, inter), usage: 'server' as const };
    assert.equal((await verifyWithOpenssl({ ...server, dnsName: 'localhost' })).ok, true);
    assert.equal((await verifyWithOpenssl({ ...server, dnsName: '127.0.0.1' })).ok, true);
    const otherHost = await verifyWithOpenssl({ ...server, dnsName: 'elsewhere.example' });
    assert.equal(otherHost.ok, false);
    assert.match(otherHost.error, /hostname mismatch/);
    const clientAsServer = await verifyWithOpenssl({ ...clientChain(clientLeaf, inter), usage: 'server' });
    assert.equal(clientAsServer.ok, false);
    assert.match(clientAsServer.error, /unsuitable certificate purpose/);
  });

  it('refuses an untrusted root, an expired leaf and a time before the chain began', async () => {
    const untrusted = await verifyWithOpenssl(clientChain(strangerLeaf, strangerInter));
    assert.equal(untrusted.ok, false);
    assert.match(untrusted.error, /unable to get (local )?issuer certificate/);
    const wrongRoot = await verifyWithOpenssl(clientChain(clientLeaf, inter, [otherRoot]));
    assert.equal(wrongRoot.ok, false);
    const expired = await verifyWithOpenssl(clientChain(expiredLeaf, inter));
    assert.equal(expired.ok, false);
    assert.match(expired.error, /certificate has expired/);
    const tooEarly = await verifyWithOpenssl({
      ...clientChain(clientLeaf, inter),
      at: '2001-01-01T00:00:00Z',
    });
    assert.equal(tooEarly.ok, false);
    assert.match(tooEarly.error, /not yet valid/);
  });

  it('enforces the URI name constraint: inside accepted, outside refused', async () => {
    const inside = await verifyWithOpenssl(clientChain(insideLeaf, delegated));
    assert.equal(inside.ok, true, inside.output);
    const forged = await verifyWithOpenssl(clientChain(forgedLeaf, delegated));
    assert.equal(forged.ok, false);
    assert.match(forged.error, /permitted subtree violation/);
  });

  it('accepts custom non-critical extensions on the intermediate', async () => {
    assert.equal((await verifyWithOpenssl(clientChain(customLeaf, customInter))).ok, true);
    assert.equal((await verifyWithOpenssl(clientChain(bigArcLeaf, bigArcInter))).ok, true);
  });
});

describe('Go crypto/x509 (peers/verify.go)', () => {
  let go: Opened<GoVerifier> = {};
  before(async () => {
    go = await openPeer(startGoVerifier);
  });
  after(() => go.value?.close());

  it('accepts a valid client chain and reports it', async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    t.diagnostic(peer.goVersion);
    const verdict = await peer.verify(clientChain(clientLeaf, inter));
    assert.equal(verdict.ok, true, verdict.error);
    assert.equal(verdict.error, '');
    assert.deepEqual(verdict.chains, [['CN=web-1', 'CN=Peers Intermediate', 'CN=Peers Root']]);
    assert.deepEqual(verdict.leafUris, ['spiffe://example.org/node/web-1']);
    assert.ok(verdict.leafExtensionOids.includes('2.5.29.17'), 'the SAN extension is listed');
    const server = await peer.verify({
      ...clientChain(serverLeaf, inter),
      usage: 'server',
      dnsName: 'localhost',
    });
    assert.equal(server.ok, true, server.error);
  });

  it('checks the usage and the host name', async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    const clientAsServer = await peer.verify({ ...clientChain(clientLeaf, inter), usage: 'server' });
    assert.equal(clientAsServer.ok, false);
    assert.match(clientAsServer.error, /incompatible key usage/);
    const otherHost = await peer.verify({
      ...clientChain(serverLeaf, inter),
      usage: 'server',
      dnsName: 'elsewhere.example',
    });
    assert.equal(otherHost.ok, false);
    assert.match(otherHost.error, /not elsewhere\.example|valid for/);
  });

  it('refuses an untrusted root, an expired leaf and a time before the chain began', async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    const untrusted = await peer.verify(clientChain(strangerLeaf, strangerInter));
    assert.equal(untrusted.ok, false);
    assert.match(untrusted.error, /unknown authority/);
    const wrongRoot = await peer.verify(clientChain(clientLeaf, inter, [otherRoot]));
    assert.equal(wrongRoot.ok, false);
    assert.match(wrongRoot.error, /unknown authority/);
    const expired = await peer.verify(clientChain(expiredLeaf, inter));
    assert.equal(expired.ok, false);
    assert.match(expired.error, /expired/);
    const tooEarly = await peer.verify({
      ...clientChain(clientLeaf, inter),
      at: new Date('2001-01-01T00:00:00Z'),
    });
    assert.equal(tooEarly.ok, false);
    assert.match(tooEarly.error, /expired or is not yet valid/);
  });

  it('enforces the URI name constraint: inside accepted, outside refused', async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    const inside = await peer.verify(clientChain(insideLeaf, delegated));
    assert.equal(inside.ok, true, inside.error);
    const forged = await peer.verify(clientChain(forgedLeaf, delegated));
    assert.equal(forged.ok, false);
    assert.match(forged.error, /not permitted by any constraint/);
    assert.deepEqual(forged.leafUris, ['spiffe://example.org/admin/x']);
  });

  it(`parses and accepts an intermediate with the non-critical extension ${SMALL_OID}`, async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    const verdict = await peer.verify(clientChain(customLeaf, customInter));
    assert.equal(verdict.ok, true, verdict.error);
    const intermediate = verdict.certificates.find((c) => c.role === 'intermediate');
    assert.ok(intermediate?.extensionOids.includes(SMALL_OID), JSON.stringify(verdict.certificates));
  });

  it('cannot parse an intermediate with a 128-bit arc under 2.25 (the known problem)', async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    const verdict = await peer.verify(clientChain(bigArcLeaf, bigArcInter));
    t.diagnostic(`Go on ${BIG_OID}: ${verdict.error}`);
    assert.equal(verdict.ok, false);
    assert.match(verdict.error, /^intermediate 0: x509: malformed extension OID field/);
    assert.deepEqual(verdict.chains, []);
  });

  it('answers many requests in one process, in order, and survives bad ones', async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    const requests = Array.from({ length: 24 }, (_, i) =>
      i % 3 === 0
        ? clientChain(clientLeaf, inter)
        : i % 3 === 1
          ? clientChain(strangerLeaf, strangerInter)
          : { ...clientChain(clientLeaf, inter), leaf: 'not a certificate' },
    );
    const verdicts = await Promise.all(requests.map((r) => peer.verify(r)));
    assert.deepEqual(
      verdicts.map((v) => v.ok),
      requests.map((_, i) => i % 3 === 0),
    );
    assert.match(verdicts[2].error, /no CERTIFICATE block/);
  });
});

describe('pyca/cryptography (peers/verify.py)', () => {
  let py: Opened<PythonVerifier> = {};
  before(async () => {
    py = await openPeer(() => startPythonVerifier());
  });
  after(() => py.value?.close());

  /** The verifier when it can validate paths; skips `t` (with the reason) when it only parses. */
  function needVerifier(t: TestContext): PythonVerifier | undefined {
    const peer = needPeer(t, py);
    if (!peer) return undefined;
    if (!peer.canVerify) {
      t.skip(
        `${peer.interpreter.executable} has cryptography ${peer.interpreter.cryptography} without ` +
          'x509.verification (42+): parse-only',
      );
      return undefined;
    }
    return peer;
  }

  it('picks the interpreter whose cryptography can verify, when there is one', async (t) => {
    const peer = needPeer(t, py);
    if (!peer) return;
    const all = await findPythonInterpreters();
    for (const i of all)
      t.diagnostic(
        `${i.executable}: Python ${i.python}, cryptography ${i.cryptography}, verify ${i.canVerify}, grpcio ${i.grpcio}` +
          (i.grpcTls ? ` (${i.grpcTls})` : ''),
      );
    t.diagnostic(`chosen: ${peer.interpreter.executable} → ${peer.verifier}`);
    assert.equal(
      peer.canVerify,
      all.some((i) => i.canVerify && i.cryptography !== null),
    );
    assert.equal(peer.verifier, `${peer.canVerify ? 'pyca' : 'parse-only'}-${peer.interpreter.cryptography}`);
  });

  it(`every interpreter with cryptography parses the chain with ${SMALL_OID} and lists the OID`, async (t) => {
    const interpreters = (await findPythonInterpreters()).filter((i) => i.cryptography !== null);
    if (interpreters.length === 0) {
      needPeer(t, py); // skips with the reason, or fails under CI
      return;
    }
    for (const interpreter of interpreters) {
      const session = await startPythonVerifier({ python: interpreter.executable });
      try {
        const verdict = await session.verify(clientChain(customLeaf, customInter));
        assert.equal(verdict.parsed, true, `${session.verifier}: ${verdict.error}`);
        assert.equal(verdict.ok, true, `${session.verifier}: ${verdict.error}`);
        assert.equal(verdict.verified, session.canVerify ? true : null);
        const intermediate = verdict.certificates.find((c) => c.role === 'intermediate');
        assert.ok(intermediate?.extensionOids.includes(SMALL_OID), JSON.stringify(verdict.certificates));
        assert.deepEqual(verdict.leafUris, ['spiffe://example.org/node/c']);

        // Record what this version does with the 128-bit arc (cryptography 38 refuses to parse it).
        const big = await session.verify(clientChain(bigArcLeaf, bigArcInter));
        t.diagnostic(
          `${session.verifier} (${interpreter.executable}) on ${BIG_OID}: ` +
            (big.parsed ? `parsed, ok=${big.ok}` : `parse failure: ${big.error}`),
        );
        if (!big.parsed) {
          assert.equal(big.ok, false);
          assert.match(big.error, /^intermediate 0: /);
        } else {
          const bigInter = big.certificates.find((c) => c.role === 'intermediate');
          assert.ok(bigInter?.extensionOids.includes(BIG_OID));
        }

        // A certificate that is not one is a verdict, not a crash.
        const garbage = await session.verify({ ...clientChain(customLeaf, customInter), leaf: 'nonsense' });
        assert.equal(garbage.ok, false);
        assert.equal(garbage.parsed, false);
      } finally {
        await session.close();
      }
    }
  });

  it('verifies a valid client chain and a valid server chain', async (t) => {
    const peer = needVerifier(t);
    if (!peer) return;
    const client = await peer.verify(clientChain(clientLeaf, inter));
    assert.equal(client.ok, true, client.error);
    assert.equal(client.verified, true);
    assert.deepEqual(client.chains, [['CN=web-1', 'CN=Peers Intermediate', 'CN=Peers Root']]);
    const server = await peer.verify({
      ...clientChain(serverLeaf, inter),
      usage: 'server',
      dnsName: 'localhost',
    });
    assert.equal(server.ok, true, server.error);
    const byIp = await peer.verify({
      ...clientChain(serverLeaf, inter),
      usage: 'server',
      dnsName: '127.0.0.1',
    });
    assert.equal(byIp.ok, true, byIp.error);
    const custom = await peer.verify(clientChain(customLeaf, customInter));
    assert.equal(custom.ok, true, custom.error);
  });

  it('refuses an untrusted root, an expired leaf, a wrong usage and a wrong host', async (t) => {
    const peer = needVerifier(t);
    if (!peer) return;
    const refusals = {
      untrusted: await peer.verify(clientChain(strangerLeaf, strangerInter)),
      wrongRoot: await peer.verify(clientChain(clientLeaf, inter, [otherRoot])),
      expired: await peer.verify(clientChain(expiredLeaf, inter)),
      tooEarly: await peer.verify({ ...clientChain(clientLeaf, inter), at: '2001-01-01T00:00:00Z' }),
      clientAsServer: await peer.verify({
        ...clientChain(clientLeaf, inter),
        usage: 'server',
        dnsName: 'localhost',
      }),
      otherHost: await peer.verify({
        ...clientChain(serverLeaf, inter),
        usage: 'server',
        dnsName: 'elsewhere.example',
      }),
    };
    for (const [name, verdict] of Object.entries(refusals)) {
      assert.equal(verdict.ok, false, name);
      assert.equal(verdict.verified, false, name);
      assert.notEqual(verdict.error, '', name);
    }
    assert.match(refusals.expired.error, /not valid at validation time/);
  });

  it('refuses the forged leaf; URI name constraints are unsupported (reported as they are)', async (t) => {
    const peer = needVerifier(t);
    if (!peer) return;
    const inside = await peer.verify(clientChain(insideLeaf, delegated));
    const forged = await peer.verify(clientChain(forgedLeaf, delegated));
    t.diagnostic(`${peer.verifier}: inside → ${inside.error || 'ok'}; forged → ${forged.error || 'ok'}`);
    assert.equal(forged.ok, false);
    assert.equal(forged.verified, false);
    // pyca (up to 48 at least) refuses every chain with a URI name constraint; should a later
    // version check them, the leaf inside must then be accepted.
    if (!inside.ok) assert.match(inside.error, /unsupported name constraint/);
  });
});

describe('Python grpcio (peers/grpc_server.py)', () => {
  let server: Opened<PythonGrpcServer> = {};
  before(async () => {
    server = await openPeer(() => startPythonGrpcServer({ roots: [root.cert] }));
  });
  after(() => server.value?.close());

  const callAs = (peer: PythonGrpcServer, leaf: Issued, issuer: Issued) =>
    pythonGrpcCall({
      port: peer.port,
      roots: peer.serverCertificate,
      cert: [leaf.cert, issuer.cert],
      key: leaf.key,
      serverName: 'localhost',
    });

  it('accepts a valid client chain and answers with the verified identity', async (t) => {
    const peer = needPeer(t, server);
    if (!peer) return;
    t.diagnostic(
      `grpcio ${peer.interpreter.grpcio} (${peer.interpreter.grpcTls}) under ${peer.interpreter.executable}`,
    );
    const result = await callAs(peer, clientLeaf, inter);
    assert.equal(result.ok, true, `${result.code}: ${result.details}`);
    const who = result.response as PythonGrpcPeer;
    assert.equal(who.transportSecurityType, 'ssl');
    assert.equal(who.commonName, 'web-1');
    assert.deepEqual(who.subjectAlternativeNames, ['spiffe://example.org/node/web-1']);
    assert.match(who.pemCert ?? '', /BEGIN CERTIFICATE/);
  });

  it('refuses a client chain from an untrusted root and an expired client leaf', async (t) => {
    const peer = needPeer(t, server);
    if (!peer) return;
    const untrusted = await callAs(peer, strangerLeaf, strangerInter);
    assert.equal(untrusted.ok, false);
    assert.equal(untrusted.code, 'UNAVAILABLE', untrusted.details);
    const expired = await callAs(peer, expiredLeaf, inter);
    assert.equal(expired.ok, false);
    assert.equal(expired.code, 'UNAVAILABLE', expired.details);
  });

  it('records what grpcio does with a leaf outside the URI name constraint', async (t) => {
    const peer = needPeer(t, server);
    if (!peer) return;
    const inside = await callAs(peer, insideLeaf, delegated);
    assert.equal(inside.ok, true, `the leaf inside the constraint: ${inside.code}: ${inside.details}`);
    const forged = await callAs(peer, forgedLeaf, delegated);
    const finding = forged.ok
      ? `ACCEPTS the forged leaf spiffe://example.org/admin/x (answered as ${JSON.stringify((forged.response as PythonGrpcPeer).subjectAlternativeNames)})`
      : `refuses the forged leaf spiffe://example.org/admin/x at the handshake (${forged.code}: ${forged.details})`;
    t.diagnostic(
      `URI name constraint: grpcio ${peer.interpreter.grpcio} with ${peer.interpreter.grpcTls} ${finding}; ` +
        'the leaf inside (spiffe://alice.d.example.org/w/1) is accepted',
    );
    if (!forged.ok) assert.equal(forged.code, 'UNAVAILABLE', forged.details);
  });

  it('as a client, verifies the server against its roots and name', async (t) => {
    const first = needPeer(t, server);
    if (!first) return;
    const named = await startPythonGrpcServer({
      roots: [root.cert],
      cert: [serverLeaf.cert, inter.cert],
      key: serverLeaf.key,
    });
    try {
      const call = (roots: Issued, serverName: string) =>
        pythonGrpcCall({
          port: named.port,
          roots: roots.cert,
          cert: [clientLeaf.cert, inter.cert],
          key: clientLeaf.key,
          serverName,
        });
      const trusted = await call(root, 'localhost');
      assert.equal(trusted.ok, true, `${trusted.code}: ${trusted.details}`);
      const wrongRoots = await call(otherRoot, 'localhost');
      assert.equal(wrongRoots.ok, false);
      assert.equal(wrongRoots.code, 'UNAVAILABLE', wrongRoots.details);
      const wrongName = await call(root, 'elsewhere.example');
      assert.equal(wrongName.ok, false);
      assert.equal(wrongName.code, 'UNAVAILABLE', wrongName.details);
    } finally {
      await named.close();
    }
  });
});
