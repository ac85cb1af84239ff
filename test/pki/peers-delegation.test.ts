// Security issue #9 as peers sigil did not write see it. A delegation made
// by sigil's own code (issueDelegation under a root and an intermediate made
// with src/pki, granted DNS "localhost" and IP 127.0.0.1/32), and leaves the
// delegate forges under it with the openssl CLI:
//
//   spiffe://<td>/admin/x, spiffe://<td>/node/x, spiffe://<td>/replica/x
//                          the deployment's own names (outside the URI constraint)
//   spiffe://bob.d.<td>/w  a sibling delegation's host
//   IP 10.0.0.1            an address the delegation was not granted
//   DNS evil.example.com   a name it was not granted
//   CN=www.example.com     a host-like common name and no SANs
//
// are refused by `openssl verify`, Go's crypto/x509, pyca/cryptography and a
// grpcio server (test/support/peers.ts); a leaf inside the subtree is accepted
// by openssl, Go and grpcio (the control that shows each peer can say yes).
// And the policy extension's OID: a delegation carrying it under the default
// 2.999.7445.1 or an organisation's 1.3.6.1.4.1.55555.7.1 is parsed by Go
// and by both Pythons, with the OID listed; under a 128-bit 2.25 arc Go cannot
// parse it (the control for why sigil refuses such OIDs).
//
// A peer missing here skips its tests with the reason printed; under CI
// (.ci/run installs golang-go, python3-cryptography and python3-grpcio) it
// fails instead. pyca's path validation (cryptography 42+) is not installed by
// CI: without it that test skips, saying so.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { issueDelegateLeaf, issueDelegation } from '../../src/pki/delegation-certificates.ts';
import { checkDelegationChain } from '../../src/pki/delegation-chain.ts';
import { oid } from '../../src/pki/der.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, privateKeyToPem } from '../../src/pki/keys.ts';
import { parseSpiffeId } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import {
  DEFAULT_POLICY_OID,
  PERMISSIONS,
  type Policy,
  type PolicyOid,
  parsePermissions,
  parsePolicyOid,
} from '../../src/pki/policy-extension.ts';
import { type Forged, Forger, openssl as opensslCli } from '../server/forgery-fixtures.ts';
import {
  type ChainRequest,
  findPythonInterpreters,
  type GoVerifier,
  inCi,
  needPeer,
  type Opened,
  openPeer,
  PeerUnavailableError,
  type PythonGrpcServer,
  type PythonVerifier,
  pythonGrpcCall,
  startGoVerifier,
  startPythonGrpcServer,
  startPythonVerifier,
  verifyWithOpenssl,
} from '../support/peers.ts';
import { refusal } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const TD = 'sigil.internal';
const DAY = 24 * 3_600_000;
const pem = (der: Buffer): string => encodePem('CERTIFICATE', der);

const EVERYTHING: Policy = {
  version: 1,
  permissions: new Set(PERMISSIONS),
  limits: {
    workloads: 100,
    cpus: [0, 1, 2, 3],
    memoryMiB: 65536,
    blockMiB: 65536,
    bridges: [],
    issuancePerHour: 1000,
  },
};
const ALICE: Policy = {
  version: 1,
  permissions: parsePermissions('info,create,delegate,issue'),
  limits: { workloads: 4, cpus: [0, 1], memoryMiB: 4096, blockMiB: 0, bridges: [], issuancePerHour: 100 },
};

// --- the deployment and its delegations, made by sigil's own code ----------------------

const rootKey = generateKeyPair('p256');
const root = createRootCertificate({
  privateKey: rootKey.privateKey,
  subject: { commonName: 'peers delegation root' },
  ttlMs: 30 * DAY,
});
const intermediateKey = generateKeyPair('p256');
const intermediate = Issuer.fromIssued(root, rootKey.privateKey).issue({
  publicKey: intermediateKey.publicKey,
  profile: 'intermediate',
  subject: { commonName: 'sigil replica-a #1' },
  ttlMs: 20 * DAY,
  pathLen: 8,
});
const replica = {
  issuer: Issuer.fromIssued(intermediate, intermediateKey.privateKey),
  certificateDer: intermediate.der,
};

function delegation(
  name: string,
  policyOid: PolicyOid,
  grants = { dnsNames: ['localhost'], ipRanges: ['127.0.0.1/32'] },
) {
  const keys = generateKeyPair('p256');
  const issued = issueDelegation({
    parent: { ...replica, policy: EVERYTHING },
    trustDomain: TD,
    policyOid,
    publicKey: keys.publicKey,
    name,
    policy: ALICE,
    grants,
  });
  return { issued, key: keys.privateKey };
}

const alice = delegation('alice', DEFAULT_POLICY_OID);
const ORG_OID = parsePolicyOid('1.3.6.1.4.1.55555.7.1');
// parsePolicyOid refuses arcs of 2^28 and more, so the control's OID is built by hand.
const BIG_OID_TEXT = '2.25.55506409673561962886091138008118191280';
const BIG_OID: PolicyOid = { text: BIG_OID_TEXT, der: oid(BIG_OID_TEXT) };

/** A delegation under `policyOid` and its own identity leaf (both sigil's), as chain requests need them. */
function oidChain(name: string, policyOid: PolicyOid): ChainRequest {
  const made = delegation(name, policyOid);
  const keys = generateKeyPair('p256');
  const leaf = issueDelegateLeaf({
    parent: { issuer: Issuer.fromIssued(made.issued, made.key), certificateDer: made.issued.der },
    trustDomain: TD,
    policyOid,
    publicKey: keys.publicKey,
  });
  return {
    roots: [pem(root.der)],
    intermediates: [pem(made.issued.der), pem(intermediate.der)],
    leaf: pem(leaf.der),
    usage: 'client',
  };
}

// --- what alice forges with openssl ---------------------------------------------------

const forger = new Forger(
  tempDir('sigil-peers-delegation-'),
  pem(alice.issued.der) + pem(intermediate.der),
  privateKeyToPem(alice.key),
);

interface Case {
  readonly leaf: Forged;
  /** How a client that checks names asks for it: as a client certificate, or as a server for `host`. */
  readonly host?: string;
}

const inHost = `spiffe://alice.d.${TD}`;
const forgedCases: Record<string, () => Promise<Case>> = {
  [`spiffe://${TD}/admin/x`]: async () => ({
    leaf: await forger.mint({ commonName: 'x', uris: [`spiffe://${TD}/admin/x`] }),
  }),
  [`spiffe://${TD}/node/x`]: async () => ({
    leaf: await forger.mint({ commonName: 'x', uris: [`spiffe://${TD}/node/x`] }),
  }),
  [`spiffe://${TD}/replica/x`]: async () => ({
    leaf: await forger.mint({ commonName: 'x', uris: [`spiffe://${TD}/replica/x`], dns: ['localhost'] }),
    host: 'localhost',
  }),
  "a sibling's host (spiffe://bob.d.<td>/w)": async () => ({
    leaf: await forger.mint({ commonName: 'w', uris: [`spiffe://bob.d.${TD}/w`] }),
  }),
  'an IP SAN not granted (10.0.0.1)': async () => ({
    leaf: await forger.mint({ commonName: 'api', uris: [`${inHost}/api`], ips: ['10.0.0.1'] }),
    host: '10.0.0.1',
  }),
  'a DNS name not granted (evil.example.com)': async () => ({
    leaf: await forger.mint({ commonName: 'api', uris: [`${inHost}/api`], dns: ['evil.example.com'] }),
    host: 'evil.example.com',
  }),
  'a CN-only host-like leaf (CN=www.example.com, no SANs)': async () => ({
    leaf: await forger.mint({ commonName: 'www.example.com' }),
    host: 'www.example.com',
  }),
};

let forged: Record<string, Case>;
let inside: Case;

const chainOf = (c: Case, usage: 'client' | 'server'): ChainRequest => ({
  roots: [pem(root.der)],
  intermediates: [pem(alice.issued.der), pem(intermediate.der)],
  leaf: c.leaf.cert,
  usage,
  ...(usage === 'server' && c.host ? { dnsName: c.host } : {}),
});

/** Both questions a peer may be asked about a leaf: as a client certificate, and (with a host) as a server's. */
const questions = (c: Case): ChainRequest[] => [
  chainOf(c, 'client'),
  ...(c.host ? [chainOf(c, 'server')] : []),
];

describe('peers sigil did not write, on a delegation sigil made', () => {
  let go: Opened<GoVerifier> = {};
  let pyca: Opened<PythonVerifier> = {};
  let parseOnly: Opened<PythonVerifier> = {};
  let grpcServer: Opened<PythonGrpcServer> = {};

  before(async () => {
    const entries = await Promise.all(
      Object.entries(forgedCases).map(async ([name, make]) => [name, await make()] as const),
    );
    forged = Object.fromEntries(entries);
    inside = {
      leaf: await forger.mint({
        commonName: 'w',
        uris: [`${inHost}/w`],
        dns: ['localhost'],
        ips: ['127.0.0.1'],
      }),
      host: 'localhost',
    };
    const interpreters = await findPythonInterpreters();
    const debian = interpreters.find((i) => i.cryptography !== null && !i.canVerify);
    [go, pyca, parseOnly, grpcServer] = await Promise.all([
      openPeer(startGoVerifier),
      openPeer(async () => {
        const verifier = await startPythonVerifier();
        if (!verifier.canVerify) {
          await verifier.close();
          throw new PeerUnavailableError(
            'cryptography',
            `no Python here has cryptography 42+ (x509.verification); found ${interpreters.map((i) => `${i.executable}: ${i.cryptography}`).join(', ')}`,
          );
        }
        return verifier;
      }),
      openPeer(async () => {
        if (!debian)
          throw new PeerUnavailableError(
            'cryptography',
            `no Python with a parse-only cryptography (< 42, as Debian's 38); found ${interpreters.map((i) => `${i.executable}: ${i.cryptography}`).join(', ') || 'none'}`,
          );
        return startPythonVerifier({ python: debian.executable });
      }),
      openPeer(() => startPythonGrpcServer({ roots: [pem(root.der)] })),
    ]);
  });

  after(async () => {
    await Promise.all([
      go.value?.close(),
      pyca.value?.close(),
      parseOnly.value?.close(),
      grpcServer.value?.close(),
    ]);
  });

  test('openssl verify refuses every forged leaf (name constraints, the CN included) and accepts the one inside the subtree', async () => {
    const asked = Object.entries(forged).flatMap(([name, c]) =>
      questions(c).map((question) => ({ name, question })),
    );
    const verdicts = await Promise.all(asked.map(({ question }) => verifyWithOpenssl(question)));
    asked.forEach(({ name, question }, index) => {
      const verdict = verdicts[index];
      assert.equal(verdict.ok, false, `openssl accepted ${name} (${question.usage})`);
      assert.match(verdict.error, /(permitted|excluded) subtree violation/, `${name}: ${verdict.output}`);
    });
    for (const question of questions(inside)) {
      const verdict = await verifyWithOpenssl({ ...question, strict: true });
      assert.equal(verdict.ok, true, `the leaf inside (${question.usage}): ${verdict.output}`);
    }
  });

  test("Go's crypto/x509 refuses every forged leaf and accepts the one inside the subtree", async (t) => {
    const peer = needPeer(t, go);
    if (!peer) return;
    t.diagnostic(peer.goVersion);
    const CN_ONLY = 'a CN-only host-like leaf (CN=www.example.com, no SANs)';
    for (const [name, c] of Object.entries(forged)) {
      if (name === CN_ONLY) continue;
      for (const question of questions(c)) {
        const verdict = await peer.verify(question);
        assert.equal(verdict.ok, false, `Go accepted ${name} (${question.usage})`);
        assert.match(
          verdict.error,
          /not permitted by any constraint|excluded by constraint|not authorized to sign/,
          `${name}: ${verdict.error}`,
        );
      }
    }
    // Go never reads a common name as a host name (since 1.15): the CN-only leaf is refused as the
    // server www.example.com because it has no SAN, and as a client certificate, where it names
    // nothing Go would ever match, no constraint applies to it (recorded, not asserted).
    const asServer = await peer.verify(chainOf(forged[CN_ONLY], 'server'));
    assert.equal(asServer.ok, false, 'Go accepted the CN-only leaf as the server www.example.com');
    assert.match(asServer.error, /legacy Common Name|not valid for/, asServer.error);
    const asClient = await peer.verify(chainOf(forged[CN_ONLY], 'client'));
    t.diagnostic(
      `Go on the CN-only leaf as a client certificate: ${asClient.ok ? 'accepted (a CN is no name to Go)' : asClient.error}`,
    );
    for (const question of questions(inside)) {
      const verdict = await peer.verify(question);
      assert.equal(verdict.ok, true, `the leaf inside (${question.usage}): ${verdict.error}`);
      assert.deepEqual(verdict.leafUris, [`${inHost}/w`]);
    }
  });

  test('pyca/cryptography (42+) refuses every forged leaf, and every URI-constrained chain', async (t) => {
    const peer = pyca.value;
    if (!peer) {
      // Optional even under CI: Debian's cryptography (what .ci/run installs) cannot verify paths.
      console.log(`# skipping "${t.name}": ${pyca.reason}`);
      t.skip(pyca.reason);
      return;
    }
    t.diagnostic(`${peer.verifier} (${peer.interpreter.executable})`);
    for (const [name, c] of Object.entries(forged)) {
      for (const question of questions(c)) {
        const verdict = await peer.verify(question);
        assert.equal(verdict.parsed, true, `${name}: ${verdict.error}`);
        assert.equal(verdict.ok, false, `pyca accepted ${name} (${question.usage})`);
        assert.equal(verdict.verified, false);
      }
    }
    // pyca's verifier (its webpki profile) implements DNS and IP name constraints only: a chain
    // holding any other kind, such as every sigil delegation's URI constraint, is refused as
    // "unsupported name constraint", whatever the leaf. So pyca cannot tell the subtree's own leaf
    // from a forged one; it refuses both, which is safe. Should pyca learn URI constraints, this
    // assertion flips and the leaf inside must then be accepted, as by openssl and Go.
    for (const question of questions(inside)) {
      const verdict = await peer.verify(question);
      assert.equal(
        verdict.ok,
        false,
        `pyca now accepts a URI-constrained chain (${question.usage}): update this test`,
      );
      assert.match(verdict.error, /unsupported name constraint/);
    }
  });

  test("Debian's cryptography 38 only parses: every chain parses and the delegation's policy OID is listed", async (t) => {
    const peer = needPeer(t, parseOnly);
    if (!peer) return;
    t.diagnostic(`${peer.verifier} (${peer.interpreter.executable})`);
    assert.equal(peer.canVerify, false);
    for (const c of [...Object.values(forged), inside]) {
      const verdict = await peer.verify(chainOf(c, 'client'));
      assert.equal(verdict.parsed, true, verdict.error);
      assert.equal(verdict.verified, null, 'a parse-only verdict never claims a verification');
      const delegationCert = verdict.certificates.find((info) => info.role === 'intermediate');
      assert.ok(
        delegationCert?.extensionOids.includes(DEFAULT_POLICY_OID.text),
        JSON.stringify(verdict.certificates),
      );
      assert.deepEqual(delegationCert?.uris, [inHost]);
    }
  });

  test('a grpcio server trusting the root refuses every forged client leaf at the handshake and admits the one inside', async (t) => {
    const server = needPeer(t, grpcServer);
    if (!server) return;
    t.diagnostic(`grpcio ${server.interpreter.grpcio} (${server.interpreter.grpcTls})`);
    const callAs = (c: Case) =>
      pythonGrpcCall({
        port: server.port,
        roots: server.serverCertificate,
        cert: [c.leaf.cert, pem(alice.issued.der), pem(intermediate.der)],
        key: c.leaf.key,
        serverName: 'localhost',
      });
    const [insideResult, ...forgedResults] = await Promise.all(
      [inside, ...Object.values(forged)].map(callAs),
    );
    assert.equal(insideResult.ok, true, `the leaf inside: ${insideResult.code}: ${insideResult.details}`);
    assert.deepEqual(
      (insideResult.response as { subjectAlternativeNames: string[] }).subjectAlternativeNames.filter((n) =>
        n.startsWith('spiffe:'),
      ),
      [`${inHost}/w`],
    );
    Object.keys(forged).forEach((name, index) => {
      const result = forgedResults[index];
      assert.equal(result.ok, false, `grpcio admitted ${name}`);
      assert.equal(result.code, 'UNAVAILABLE', `${name}: ${result.details}`);
    });
  });

  test('a URI with userinfo (spiffe://alice.d.<td>:1@<td>/admin/x): sigil and Go refuse it; OpenSSL 3.0 and grpcio are recorded', async (t) => {
    // OpenSSL up to 3.0 at least takes a URI's host to end at the first ":" after "//", so its
    // URI name constraint check reads this host as alice.d.<td> and lets it pass; a generic URL
    // parser reads userinfo "alice.d.<td>:1" and host <td>. It is no SPIFFE ID (SPIFFE forbids
    // userinfo and ports), so sigil never reads it as one; a peer that trusts the root and
    // authorizes with a generic URL parser on top of such an OpenSSL would be fooled.
    const uri = `spiffe://alice.d.${TD}:1@${TD}/admin/x`;
    const leaf = await forger.mint({ commonName: 'x', uris: [uri] });
    assert.throws(() => parseSpiffeId(uri), /invalid SPIFFE ID/);
    assert.throws(
      () =>
        checkDelegationChain([leaf.der, alice.issued.der, intermediate.der], {
          trustDomain: TD,
          policyOid: DEFAULT_POLICY_OID,
        }),
      refusal('permission_denied'),
    );
    const question = chainOf({ leaf }, 'client');
    const openssl = await verifyWithOpenssl(question);
    const cli = (await opensslCli(['version'])).trim();
    t.diagnostic(
      `openssl verify (${cli}): ${openssl.ok ? 'ACCEPTS it' : openssl.error}; Node's own OpenSSL is ${process.versions.openssl}`,
    );
    const peer = needPeer(t, go);
    if (!peer) return;
    const verdict = await peer.verify(question);
    assert.equal(verdict.ok, false, 'Go accepted the userinfo URI');
    assert.match(verdict.error, /not permitted by any constraint/);
    if (grpcServer.value) {
      const result = await pythonGrpcCall({
        port: grpcServer.value.port,
        roots: grpcServer.value.serverCertificate,
        cert: [leaf.cert, pem(alice.issued.der), pem(intermediate.der)],
        key: leaf.key,
        serverName: 'localhost',
      });
      t.diagnostic(
        `grpcio (${grpcServer.value.interpreter.grpcTls}): ${
          result.ok
            ? `ADMITS it, reporting ${JSON.stringify((result.response as { subjectAlternativeNames: string[] }).subjectAlternativeNames)}`
            : `${result.code}`
        }`,
      );
    }
  });

  test('the policy OID: 2.999.7445.1 and 1.3.6.1.4.1.55555.7.1 parse in Go and both Pythons; a 128-bit 2.25 arc fails in Go (control)', async (t) => {
    const chains = {
      [DEFAULT_POLICY_OID.text]: oidChain('short', DEFAULT_POLICY_OID),
      [ORG_OID.text]: oidChain('org', ORG_OID),
    };
    const listed = (
      certificates: readonly { role: string; extensionOids: readonly string[] }[],
      text: string,
    ) => certificates.some((info) => info.role === 'intermediate' && info.extensionOids.includes(text));
    const peer = needPeer(t, go);
    if (!peer) return;
    for (const [text, chain] of Object.entries(chains)) {
      const verdict = await peer.verify(chain);
      assert.equal(verdict.ok, true, `Go on ${text}: ${verdict.error}`);
      assert.ok(listed(verdict.certificates, text), `Go did not list ${text}`);
    }
    const big = await peer.verify(oidChain('big', BIG_OID));
    assert.equal(big.ok, false, 'Go parsed a 128-bit OID arc');
    assert.match(big.error, /malformed extension OID field/);

    for (const [what, opened] of [
      ['cryptography 42+', pyca],
      ["Debian's parse-only cryptography", parseOnly],
    ] as const) {
      const python = opened.value;
      if (!python) {
        // Debian's is what CI installs; a newer one is optional.
        if (inCi && opened === parseOnly) throw new Error(`${opened.reason} (.ci/run installs it)`);
        t.diagnostic(`not checked with ${what}: ${opened.reason}`);
        console.log(`# policy OIDs not checked with ${what}: ${opened.reason}`);
        continue;
      }
      for (const [text, chain] of Object.entries(chains)) {
        const verdict = await python.verify(chain);
        assert.equal(verdict.parsed, true, `${python.verifier} on ${text}: ${verdict.error}`);
        assert.ok(listed(verdict.certificates, text), `${python.verifier} did not list ${text}`);
      }
      const bigInPython = await python.verify(oidChain('big', BIG_OID));
      t.diagnostic(
        `${python.verifier} on ${BIG_OID_TEXT}: ${bigInPython.parsed ? 'parsed' : `parse failure: ${bigInPython.error}`}`,
      );
    }
  });
});
