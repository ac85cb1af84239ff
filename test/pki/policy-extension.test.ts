import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SigilError } from '../../src/errors.ts';
import { signatureAlgorithmFor, signWith } from '../../src/pki/algorithms.ts';
import { readCertificates } from '../../src/pki/certificate.ts';
import {
  bitString,
  boolean,
  derNull,
  explicit,
  ia5String,
  integer,
  namedBits,
  octetString,
  printableString,
  sequence,
  setOf,
  Tag,
  time,
  tlv,
  unsignedInteger,
  utf8String,
} from '../../src/pki/der.ts';
import { encodeSubject } from '../../src/pki/distinguished-name.ts';
import { extension } from '../../src/pki/extensions.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, spkiDer } from '../../src/pki/keys.ts';
import {
  DEFAULT_POLICY_OID,
  DEFAULT_POLICY_OID_TEXT,
  decodePolicy,
  encodePolicy,
  findPolicyExtension,
  intersectPolicies,
  isNarrowing,
  type Limits,
  MAX_OID_ARC,
  PERMISSIONS,
  type Permission,
  type Policy,
  type PolicyOid,
  parsePermissions,
  parsePolicyOid,
  policyExtension,
  policyToJson,
  readPolicy,
} from '../../src/pki/policy-extension.ts';
import { invalid } from '../support/refusals.ts';
import { tempDir } from '../support/temp-dir.ts';

const dir = tempDir('sigil-policy-');

const openssl = (args: string[], input?: Buffer): string =>
  execFileSync('openssl', args, { cwd: dir, input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

const refusedWith = (pattern: RegExp) =>
  invalid(new RegExp(`^malformed sigil policy extension: .*${pattern.source}`));
const refused = refusedWith(/./);

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

/** Seeded PRNG (mulberry32), so failures replay. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const policy = (permissions: readonly Permission[], limits: Limits | null = null): Policy => ({
  version: 1,
  permissions: new Set(permissions),
  limits,
});

const LIMITS: Limits = {
  workloads: 2,
  cpus: [200, 1, 0, 1],
  memoryMiB: 4096,
  blockMiB: 128,
  bridges: ['lan-1', 'br0'],
  issuancePerHour: 60,
};
const EXAMPLE = policy(['info', 'create', 'delegate', 'admin'], LIMITS);

// Computed by hand from the ASN.1 in policy-extension.ts:
//   bits info(0) create(1) delegate(7) → C1; admin(10) → 20; highest bit 10 → 5 unused
//   cpus sorted per DER (200 = 02 02 00 C8 sorts after the one-byte integers), duplicates dropped
//   bridges sorted: "br0" < "lan-1"
const EXAMPLE_DER = hex(`
  30 32
     02 01 01
     03 03 05 c1 20
     30 28
        02 01 02
        31 0a  02 01 00  02 01 01  02 02 00 c8
        02 02 10 00
        02 02 00 80
        30 0c  0c 03 62 72 30  0c 05 6c 61 6e 2d 31
        02 01 3c`);

/** The example's limits, member by member, so refusal tests can swap one out. */
const limitMembers = (): Buffer[] => [
  integer(2),
  setOf(integer(0), integer(1), integer(200)),
  integer(4096),
  integer(128),
  sequence(utf8String('br0'), utf8String('lan-1')),
  integer(60),
];
const policyWith = (options: {
  version?: Buffer;
  permissions?: Buffer;
  limits?: Buffer[] | null;
}): Buffer => {
  const members = [options.version ?? integer(1), options.permissions ?? namedBits([0, 1, 7, 10])];
  const limits = options.limits === undefined ? limitMembers() : options.limits;
  if (limits) members.push(sequence(...limits));
  return sequence(...members);
};
const withLimit = (index: number, value: Buffer): Buffer => {
  const limits = limitMembers();
  limits[index] = value;
  return policyWith({ limits });
};
const LIMIT_NAMES = ['workloads', 'cpus', 'memoryMiB', 'blockMiB', 'bridges', 'issuancePerHour'];

function randomPolicy(random: () => number): Policy {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const permissions = PERMISSIONS.filter(() => random() < 0.5);
  if (random() < 0.25) return policy(permissions);
  const edges = [0, 1, 127, 128, 255, 256, 65535, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER];
  const amount = (): number => (random() < 0.5 ? pick(edges) : Math.floor(random() * 1e9));
  const cpus = Array.from({ length: Math.floor(random() * 24) }, () =>
    random() < 0.5 ? Math.floor(random() * 256) : Math.floor(random() * 4096),
  );
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-';
  const name = () =>
    Array.from({ length: 1 + Math.floor(random() * (random() < 0.1 ? 64 : 12)) }, () =>
      pick([...alphabet]),
    ).join('');
  const bridges = Array.from({ length: random() < 0.05 ? 64 : Math.floor(random() * 6) }, name);
  return policy(permissions, {
    workloads: amount(),
    cpus,
    memoryMiB: amount(),
    blockMiB: amount(),
    bridges: [...new Set(bridges)].slice(0, 64),
    issuancePerHour: amount(),
  });
}

/** What a policy should decode back to: permissions in bit order, cpus and bridges sorted, unique. */
function canonical(p: Policy): ReturnType<typeof policyToJson> {
  const json = policyToJson(p);
  if (json.limits) {
    json.limits.cpus = [...new Set(json.limits.cpus)].sort((a, b) => a - b);
    json.limits.bridges = [...new Set(json.limits.bridges)].sort();
  }
  return json;
}

/** The deployment OID most tests here use: the default. */
const OID = DEFAULT_POLICY_OID;

describe('policy extension: identity (the OID is a deployment setting)', () => {
  it('the default is 2.999.7445.1, under the example arc, with its DER', () => {
    assert.equal(DEFAULT_POLICY_OID_TEXT, '2.999.7445.1');
    assert.equal(DEFAULT_POLICY_OID.text, DEFAULT_POLICY_OID_TEXT);
    // 2*40+999 = 1079 = 0x88 0x37 in base 128; 7445 = 0xba 0x15; 1.
    assert.equal(DEFAULT_POLICY_OID.der.toString('hex'), '06058837ba1501');
    assert.deepEqual(parsePolicyOid(DEFAULT_POLICY_OID_TEXT), DEFAULT_POLICY_OID);
    assert.ok(Object.isFrozen(DEFAULT_POLICY_OID));
  });

  it('parsePolicyOid accepts dotted OIDs of three or more arcs below 2^28, with their DER', () => {
    const cases: [string, string][] = [
      ['1.3.6.1.4.1.99999.1', '06092b0601040186 8d1f01'],
      ['2.999.1', '0603883701'],
      ['0.0.0', '0602 0000'],
      ['0.39.5', '0602 2705'],
      ['1.39.5', '0602 4f05'],
      ['2.40.5', '0602 7805'],
      ['1.2.840.113549.1.9.99', '06092a864886f70d010963'],
      [`2.999.${MAX_OID_ARC}`, '0606 8837 ffffff7f'],
      ['1.3.6.1.4.1.0.1', '06072b060104010001'],
    ];
    for (const [text, derHex] of cases) {
      const parsed = parsePolicyOid(text);
      assert.equal(parsed.text, text);
      assert.equal(parsed.der.toString('hex'), derHex.replace(/\s+/g, ''), text);
      // openssl reads the DER back as the same dotted text.
      const shown = openssl(['asn1parse', '-inform', 'DER'], parsed.der);
      assert.match(shown, new RegExp(`OBJECT\\s*:${text.replaceAll('.', '\\.')}\\s*$`, 'm'), text);
    }
  });

  it('parsePolicyOid refuses malformed OIDs, naming the problem', () => {
    const cases: [unknown, RegExp][] = [
      ['1.3', /use at least three arcs/],
      ['2.999', /use at least three arcs/],
      ['1', /give dotted decimal arcs/],
      ['', /give dotted decimal arcs/],
      [`2.999.${MAX_OID_ARC + 1}`, /every arc must be below 2\^28 \(268435456\)/],
      ['2.999.7445.1.340282366920938463463374607431768211455', /every arc must be below 2\^28/],
      ['2.25.55506409673561962886091138008118191280', /every arc must be below 2\^28/],
      ['1.3.06.1', /arcs have no leading zeros/],
      ['01.3.6', /arcs have no leading zeros/],
      ['2.999.00', /arcs have no leading zeros/],
      ['1.3.6.x', /give dotted decimal arcs/],
      ['1.3.-6', /give dotted decimal arcs/],
      ['1.3.6.', /give dotted decimal arcs/],
      ['.1.3.6', /give dotted decimal arcs/],
      ['1..3.6', /give dotted decimal arcs/],
      [' 1.3.6', /give dotted decimal arcs/],
      ['1.3.6\n', /give dotted decimal arcs/],
      ['１.３.６', /give dotted decimal arcs/],
      ['1.3.6.1e3', /give dotted decimal arcs/],
      ['3.1.1', /the first arc is 0, 1 or 2/],
      ['9.1.1', /the first arc is 0, 1 or 2/],
      ['0.40.1', /under 0 and 1 the second arc is at most 39/],
      ['1.40.1', /under 0 and 1 the second arc is at most 39/],
      ['1.999.1', /under 0 and 1 the second arc is at most 39/],
      [undefined, /give dotted decimal arcs/],
      [123, /give dotted decimal arcs/],
    ];
    for (const [text, reason] of cases) {
      assert.throws(
        () => parsePolicyOid(text as string),
        invalid(new RegExp(`^invalid policy OID .*: ${reason.source}`)),
        JSON.stringify(text),
      );
    }
  });

  it('two OIDs whose dotted text differs have different DER', () => {
    const texts = [
      '2.999.7445.1',
      '2.999.7445.2',
      '2.999.7445.1.0',
      '2.999.7445.10',
      '2.999.74451',
      '2.999.744.51',
      '2.9997.445.1',
      '1.39.1',
      '2.39.1',
      '0.39.1',
      '2.0.1',
      '1.3.6.1.4.1.1',
      '1.3.6.1.4.1.128',
      '1.3.6.1.4.1.16383',
      '1.3.6.1.4.1.16384',
    ];
    const ders = new Map<string, string>();
    for (const text of texts) {
      const der = parsePolicyOid(text).der.toString('hex');
      assert.equal(ders.get(der), undefined, `${text} and ${ders.get(der)} share DER ${der}`);
      ders.set(der, text);
    }
    assert.equal(ders.size, texts.length);
  });
});

describe('policy extension: permissions', () => {
  it('PERMISSIONS lists the bits in order, info first and admin last', () => {
    assert.deepEqual(
      [...PERMISSIONS],
      [
        'info',
        'create',
        'destroy',
        'console',
        'log',
        'stats',
        'block',
        'delegate',
        'revoke',
        'issue',
        'admin',
      ],
    );
  });

  it('parsePermissions reads a comma-separated list', () => {
    assert.deepEqual([...parsePermissions('info,create')], ['info', 'create']);
    assert.deepEqual([...parsePermissions(' admin , info ,info')], ['info', 'admin']);
    assert.equal(parsePermissions('').size, 0);
    assert.equal(parsePermissions(PERMISSIONS.join(',')).size, PERMISSIONS.length);
  });

  it('parsePermissions refuses unknown names and empty items', () => {
    assert.throws(
      () => parsePermissions('info,root'),
      invalid(/unknown permission "root" \(known: info, create/),
    );
    assert.throws(() => parsePermissions('Info'), invalid(/unknown permission "Info"/));
    assert.throws(() => parsePermissions('info,,create'), invalid(/empty item/));
  });
});

describe('policy extension: encoding', () => {
  it('DER of a fixed example is exactly the hand-computed vector', () => {
    assert.equal(encodePolicy(EXAMPLE).toString('hex'), EXAMPLE_DER.toString('hex'));
    assert.deepEqual(policyToJson(decodePolicy(EXAMPLE_DER)), {
      version: 1,
      permissions: ['info', 'create', 'delegate', 'admin'],
      limits: { ...LIMITS, cpus: [0, 1, 200], bridges: ['br0', 'lan-1'] },
    });
  });

  it('a command certificate policy (no limits) and an empty permission set', () => {
    // info(0) log(4) → 88, 3 unused bits; no limits member at all.
    assert.equal(encodePolicy(policy(['log', 'info'])).toString('hex'), '3007020101030203' + '88');
    assert.equal(encodePolicy(policy([])).toString('hex'), '3006020101030100');
    assert.deepEqual(policyToJson(decodePolicy(hex('3006020101030100'))), {
      version: 1,
      permissions: [],
      limits: null,
    });
    const zero: Limits = {
      workloads: 0,
      cpus: [],
      memoryMiB: 0,
      blockMiB: 0,
      bridges: [],
      issuancePerHour: 0,
    };
    assert.equal(
      encodePolicy(policy([], zero)).toString('hex'),
      '3018020101030100' + '3010' + '020100' + '3100' + '020100' + '020100' + '3000' + '020100',
    );
  });

  it('policyExtension is the given OID with the encoded value, ready for the issuer', () => {
    const ext = policyExtension(EXAMPLE, OID);
    assert.equal(ext.oid, DEFAULT_POLICY_OID_TEXT);
    assert.deepEqual(ext.value, EXAMPLE_DER);
    assert.equal((ext as { critical?: boolean }).critical, undefined);
    const other = policyExtension(EXAMPLE, parsePolicyOid('1.3.6.1.4.1.99999.7'));
    assert.equal(other.oid, '1.3.6.1.4.1.99999.7');
    assert.deepEqual(other.value, EXAMPLE_DER);
  });

  it('round trips of seeded random policies', () => {
    const random = prng(0x5161);
    for (let i = 0; i < 500; i++) {
      const p = randomPolicy(random);
      const der = encodePolicy(p);
      const back = decodePolicy(der);
      assert.deepEqual(policyToJson(back), canonical(p), `policy #${i}`);
      assert.deepEqual(encodePolicy(back), der, `policy #${i} re-encodes identically`);
    }
  });

  it('decodes a value that sits at an offset inside a larger buffer', () => {
    const big = Buffer.concat([Buffer.alloc(7, 0xaa), EXAMPLE_DER, Buffer.alloc(5, 0xbb)]);
    const view = big.subarray(7, 7 + EXAMPLE_DER.length);
    assert.deepEqual(policyToJson(decodePolicy(view)), policyToJson(decodePolicy(EXAMPLE_DER)));
  });

  it('the largest policy (every permission, cpu and bridge at its maximum) round trips', () => {
    const limits: Limits = {
      workloads: Number.MAX_SAFE_INTEGER,
      cpus: Array.from({ length: 4096 }, (_, i) => 4095 - i),
      memoryMiB: Number.MAX_SAFE_INTEGER,
      blockMiB: Number.MAX_SAFE_INTEGER,
      bridges: Array.from({ length: 64 }, (_, i) => `${String(i).padStart(2, '0')}${'x'.repeat(62)}`),
      issuancePerHour: Number.MAX_SAFE_INTEGER,
    };
    const p = policy(PERMISSIONS, limits);
    assert.deepEqual(policyToJson(decodePolicy(encodePolicy(p))), canonical(p));
  });

  it('refuses to encode what it would refuse to decode', () => {
    const bad = (limits: Partial<Limits>, pattern: RegExp) =>
      assert.throws(() => encodePolicy(policy(['info'], { ...LIMITS, ...limits })), invalid(pattern));
    bad({ workloads: -1 }, /workloads must be a whole number/);
    bad({ memoryMiB: 1.5 }, /memoryMiB must be a whole number/);
    bad({ blockMiB: 2 ** 53 }, /blockMiB must be a whole number from 0 to 9007199254740991/);
    bad({ issuancePerHour: Number.NaN }, /issuancePerHour/);
    bad({ cpus: [4096] }, /cpu id 4096 is not a whole number from 0 to 4095/);
    bad({ cpus: [-1] }, /cpu id -1/);
    bad({ bridges: [''] }, /bridge name "" must be 1 to 64 characters/);
    bad({ bridges: ['x'.repeat(65)] }, /bridge name/);
    bad({ bridges: ['br 0'] }, /bridge name "br 0"/);
    bad({ bridges: ['brü'] }, /bridge name "brü"/);
    bad({ bridges: Array.from({ length: 65 }, (_, i) => `br${i}`) }, /at most 64 bridges, not 65/);
    assert.throws(
      () => encodePolicy({ ...EXAMPLE, permissions: new Set(['info', 'root']) } as unknown as Policy),
      invalid(/unknown permission "root"/),
    );
    assert.throws(
      () => encodePolicy({ ...EXAMPLE, version: 2 } as unknown as Policy),
      invalid(/policy version 2 is not supported/),
    );
  });
});

describe('policy extension: in certificates', () => {
  const caKey = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey: caKey.privateKey,
    subject: { commonName: 'policy test root' },
  });
  const issuer = Issuer.fromIssued(root, caKey.privateKey);
  const leafKey = generateKeyPair('p256');
  const issue = (p: Policy, policyOid: PolicyOid = OID) =>
    issuer.issue({
      publicKey: leafKey.publicKey,
      profile: 'client',
      sans: [{ type: 'uri', value: 'spiffe://alice.d.example.test' }],
      extensions: [policyExtension(p, policyOid)],
    }).der;
  const escaped = (text: string) => text.replaceAll('.', '\\.');

  /** A certificate signed here with exactly the given extensions (for ones the Issuer refuses to write). */
  function handMadeCertificate(extensions: Buffer[]): Buffer {
    const algorithm = signatureAlgorithmFor(caKey.privateKey);
    const name = encodeSubject({ commonName: 'hand made' });
    const now = Date.now();
    const tbs = sequence(
      explicit(0, integer(2)),
      unsignedInteger(Buffer.of(1, 2, 3)),
      algorithm.algorithmIdentifier,
      name,
      sequence(time(new Date(now - 60_000)), time(new Date(now + 3_600_000))),
      name,
      spkiDer(leafKey.publicKey),
      explicit(3, sequence(...extensions)),
    );
    const signature = signWith(algorithm, caKey.privateKey, tbs);
    return sequence(tbs, algorithm.algorithmIdentifier, bitString(signature));
  }

  /** A self-signed certificate from `openssl req -x509` with one extra extension (openssl -addext syntax). */
  function opensslCertificate(name: string, addext: string): Buffer {
    openssl(
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1'].concat(
        ['-subj', `/CN=${name}`, '-addext', addext, '-keyout', `${name}.key`, '-out', `${name}.pem`],
      ),
    );
    return readCertificates(readFileSync(join(dir, `${name}.pem`)))[0];
  }

  it('openssl shows the dotted OID on a certificate from the Issuer, and readPolicy reads it back', () => {
    for (const policyOid of [
      OID,
      parsePolicyOid('1.3.6.1.4.1.99999.7.1'),
      parsePolicyOid(`2.999.${MAX_OID_ARC}.1`),
    ]) {
      const der = issue(EXAMPLE, policyOid);
      const text = openssl(['x509', '-inform', 'DER', '-noout', '-text'], der);
      const line = text.split('\n').find((l) => l.includes(policyOid.text));
      assert.ok(line, `openssl -text lists ${policyOid.text}:\n${text}`);
      assert.match(line, new RegExp(`^\\s*${escaped(policyOid.text)}:\\s*$`), 'non-critical');
      const found = findPolicyExtension(der, policyOid);
      assert.deepEqual(found, { critical: false, value: EXAMPLE_DER });
      const read = readPolicy(der, policyOid);
      assert.ok(read);
      assert.deepEqual(policyToJson(read), policyToJson(decodePolicy(EXAMPLE_DER)));
      // A fresh copy of the bytes (no cache hit) reads the same.
      assert.deepEqual(policyToJson(readPolicy(Buffer.from(der), policyOid) as Policy), policyToJson(read));
    }
  });

  it('an extension under another OID is not found, on the same buffer too', () => {
    const der = issue(EXAMPLE, OID);
    const other = parsePolicyOid('1.3.6.1.4.1.99999.7.1');
    assert.deepEqual(readPolicy(der, OID), decodePolicy(EXAMPLE_DER));
    // The cache is per OID: the answer for one does not leak into the other.
    assert.equal(findPolicyExtension(der, other), null);
    assert.equal(readPolicy(der, other), null);
    assert.deepEqual(findPolicyExtension(der, OID), { critical: false, value: EXAMPLE_DER });
    // Both OIDs in one certificate: each finds its own.
    const both = handMadeCertificate([
      extension(OID.text, false, EXAMPLE_DER),
      extension(other.text, false, encodePolicy(policy(['info']))),
    ]);
    assert.deepEqual(policyToJson(readPolicy(both, OID) as Policy), policyToJson(decodePolicy(EXAMPLE_DER)));
    assert.deepEqual(readPolicy(both, other), policy(['info']));
  });

  it('a certificate without the extension has no policy', () => {
    assert.equal(findPolicyExtension(root.der, OID), null);
    assert.equal(readPolicy(root.der, OID), null);
  });

  it('a certificate made by openssl with the extension reads the same (another encoder)', () => {
    const der = opensslCertificate('plain', `${OID.text}=DER:${EXAMPLE_DER.toString('hex')}`);
    assert.deepEqual(policyToJson(readPolicy(der, OID) as Policy), policyToJson(decodePolicy(EXAMPLE_DER)));
  });

  it('refuses: the extension marked critical', () => {
    const der = opensslCertificate('critical', `${OID.text}=critical,DER:${EXAMPLE_DER.toString('hex')}`);
    assert.match(
      openssl(['x509', '-in', 'critical.pem', '-noout', '-text']),
      new RegExp(`${escaped(OID.text)}: critical`),
    );
    assert.equal(findPolicyExtension(der, OID)?.critical, true);
    assert.throws(() => readPolicy(der, OID), refusedWith(/marked critical/));
    // The same, signed here.
    const ours = handMadeCertificate([extension(OID.text, true, EXAMPLE_DER)]);
    assert.throws(() => readPolicy(ours, OID), refusedWith(/marked critical/));
  });

  it('refuses: the extension present twice in one certificate', () => {
    const twice = handMadeCertificate([
      extension(OID.text, false, EXAMPLE_DER),
      extension(OID.text, false, encodePolicy(policy(['info']))),
    ]);
    assert.throws(() => findPolicyExtension(twice, OID), refusedWith(/more than once/));
  });

  it('refuses: a malformed value inside an otherwise valid certificate', () => {
    const der = handMadeCertificate([extension(OID.text, false, hex('3003020102'))]);
    assert.equal(findPolicyExtension(der, OID)?.critical, false);
    assert.throws(() => readPolicy(der, OID), refusedWith(/version 2 is not supported/));
  });

  it('an OID that only shares a prefix with ours is not ours', () => {
    const longer = handMadeCertificate([extension(`${OID.text}.1`, false, EXAMPLE_DER)]);
    assert.equal(findPolicyExtension(longer, OID), null);
    const shorter = handMadeCertificate([extension('2.999.7445', false, EXAMPLE_DER)]);
    assert.equal(findPolicyExtension(shorter, OID), null);
    // And the other way round: ours is not found under the longer one.
    assert.equal(
      findPolicyExtension(
        handMadeCertificate([extension(OID.text, false, EXAMPLE_DER)]),
        parsePolicyOid(`${OID.text}.1`),
      ),
      null,
    );
  });

  it('refuses garbage in place of a certificate', () => {
    for (const bad of [Buffer.alloc(0), Buffer.from('hello'), EXAMPLE_DER, root.der.subarray(0, 100)]) {
      assert.throws(
        () => findPolicyExtension(bad, OID),
        invalid(/^certificate: not a valid X\.509 certificate/),
      );
      assert.throws(() => readPolicy(bad, OID), invalid(/^certificate: not a valid X\.509 certificate/));
    }
  });
});

describe('policy extension: refusals', () => {
  it('garbage', () => {
    for (const bad of ['', '00', 'ff', '0500', '3000', '3100', '0c03627230', 'deadbeef', '30020500']) {
      assert.throws(() => decodePolicy(hex(bad)), refused, bad);
    }
    assert.throws(() => decodePolicy(Buffer.from('{"version":1}')), refused);
    assert.throws(
      () => decodePolicy('3006020101030100' as unknown as Buffer),
      refusedWith(/not a byte buffer/),
    );
    const random = prng(7);
    for (let i = 0; i < 300; i++) {
      const bytes = Buffer.from(
        Array.from({ length: 1 + Math.floor(random() * 80) }, () => Math.floor(random() * 256)),
      );
      assert.throws(() => decodePolicy(bytes), refused, bytes.toString('hex'));
    }
  });

  it('truncation at every byte position of a valid encoding', () => {
    for (const der of [EXAMPLE_DER, encodePolicy(policy(['info']))]) {
      for (let length = 0; length < der.length; length++) {
        assert.throws(() => decodePolicy(der.subarray(0, length)), refused, `first ${length} bytes`);
      }
    }
  });

  it('trailing bytes', () => {
    assert.throws(
      () => decodePolicy(Buffer.concat([EXAMPLE_DER, Buffer.of(0)])),
      refusedWith(/1 trailing byte after the policy/),
    );
    assert.throws(
      () => decodePolicy(Buffer.concat([EXAMPLE_DER, EXAMPLE_DER])),
      refusedWith(/52 trailing bytes/),
    );
  });

  it('wrong types at every position', () => {
    assert.throws(
      () => decodePolicy(tlv(Tag.set, integer(1), namedBits([0]))),
      refusedWith(/the policy must be a SEQUENCE, not a SET/),
    );
    assert.throws(
      () => decodePolicy(integer(1)),
      refusedWith(/the policy must be a SEQUENCE, not an INTEGER/),
    );
    for (const wrong of [
      boolean(true),
      octetString(Buffer.of(1)),
      utf8String('1'),
      derNull(),
      explicit(0, integer(1)),
    ]) {
      assert.throws(
        () => decodePolicy(policyWith({ version: wrong })),
        refusedWith(/version must be an INTEGER, not/),
      );
    }
    for (const wrong of [
      integer(3),
      octetString(Buffer.of(0, 0xc1)),
      sequence(),
      tlv(0x23, bitString(Buffer.of(0x80), 7)),
    ]) {
      assert.throws(
        () => decodePolicy(policyWith({ permissions: wrong })),
        refusedWith(/permissions must be a BIT STRING/),
      );
    }
    for (const wrong of [integer(0), tlv(Tag.set, ...limitMembers()), octetString(Buffer.of(0)), derNull()]) {
      assert.throws(
        () => decodePolicy(sequence(integer(1), namedBits([0]), wrong)),
        refusedWith(/limits must be a SEQUENCE/),
      );
    }
    const wrongs: Buffer[][] = [
      [utf8String('2'), boolean(false), octetString(Buffer.of(2))], // workloads
      [sequence(integer(0)), integer(0), octetString(Buffer.alloc(0))], // cpus
      [derNull(), bitString(Buffer.of(0x10))], // memoryMiB
      [bitString(Buffer.of(0x80)), printableString('128')], // blockMiB
      [tlv(Tag.set, utf8String('br0')), utf8String('br0'), integer(0)], // bridges
      [octetString(Buffer.of(60)), sequence(integer(60))], // issuancePerHour
    ];
    for (const [index, values] of wrongs.entries()) {
      const name = LIMIT_NAMES[index];
      for (const wrong of values) {
        assert.throws(
          () => decodePolicy(withLimit(index, wrong)),
          refusedWith(new RegExp(`${name} must be a`)),
          `${name} as ${wrong.toString('hex')}`,
        );
      }
    }
    assert.throws(
      () => decodePolicy(withLimit(1, tlv(Tag.set, integer(0), utf8String('1')))),
      refusedWith(/cpu id #2 must be an INTEGER, not a UTF8String/),
    );
    for (const wrong of [
      printableString('br0'),
      ia5String('br0'),
      octetString(Buffer.from('br0')),
      tlv(0x2c, utf8String('br0')),
    ]) {
      assert.throws(
        () => decodePolicy(withLimit(4, sequence(wrong))),
        refusedWith(/bridge #1 must be a UTF8String/),
      );
    }
  });

  it('missing members and members version 1 does not know', () => {
    assert.throws(() => decodePolicy(sequence()), refusedWith(/version is missing/));
    assert.throws(() => decodePolicy(sequence(integer(1))), refusedWith(/permissions is missing/));
    for (let keep = 0; keep < 6; keep++) {
      assert.throws(
        () => decodePolicy(policyWith({ limits: limitMembers().slice(0, keep) })),
        refusedWith(new RegExp(`${LIMIT_NAMES[keep]} is missing`)),
      );
    }
    // Fail closed: a trailing member might be a restriction this reader cannot honour.
    assert.throws(
      () => decodePolicy(sequence(integer(1), namedBits([0]), sequence(...limitMembers()), integer(0))),
      refusedWith(/at most 3 members, this one has 4/),
    );
    assert.throws(
      () => decodePolicy(policyWith({ limits: [...limitMembers(), integer(0)] })),
      refusedWith(/limits have 7 members; version 1 defines 6/),
    );
  });

  it('huge integers', () => {
    for (const huge of [2n ** 53n, 2n ** 64n, 2n ** 71n - 1n, 2n ** 1000n]) {
      for (const index of [0, 2, 3, 5]) {
        assert.throws(
          () => decodePolicy(withLimit(index, integer(huge))),
          refusedWith(new RegExp(`${LIMIT_NAMES[index]} .*too large`)),
          `${LIMIT_NAMES[index]} = ${huge}`,
        );
      }
      assert.throws(
        () => decodePolicy(withLimit(1, setOf(integer(huge)))),
        refusedWith(/cpu id #1 .*too large/),
      );
      assert.throws(
        () => decodePolicy(policyWith({ version: integer(huge) })),
        refusedWith(/version .*too large/),
      );
    }
    assert.throws(
      () => decodePolicy(withLimit(1, setOf(integer(4096)))),
      refusedWith(/cpu id #1 4096 is out of range/),
    );
    // The largest safe integer is the largest accepted quantity.
    const max = decodePolicy(withLimit(0, integer(Number.MAX_SAFE_INTEGER)));
    assert.equal(max.limits?.workloads, Number.MAX_SAFE_INTEGER);
  });

  it('negative integers', () => {
    for (const negative of [-1n, -128n, -(2n ** 63n)]) {
      for (const index of [0, 2, 3, 5]) {
        assert.throws(
          () => decodePolicy(withLimit(index, integer(negative))),
          refusedWith(new RegExp(`${LIMIT_NAMES[index]} is negative`)),
        );
      }
      assert.throws(
        () => decodePolicy(withLimit(1, setOf(integer(negative)))),
        refusedWith(/cpu id #1 is negative/),
      );
      assert.throws(
        () => decodePolicy(policyWith({ version: integer(negative) })),
        refusedWith(/version is negative/),
      );
    }
  });

  it('unknown version', () => {
    for (const version of [0, 2, 3, 255, 1000]) {
      assert.throws(
        () => decodePolicy(policyWith({ version: integer(version) })),
        refusedWith(new RegExp(`version ${version} is not supported \\(this sigil reads version 1\\)`)),
      );
    }
    // A version 2 value is refused before its (possibly different) members are looked at.
    assert.throws(
      () => decodePolicy(sequence(integer(2), utf8String('new'), sequence(), integer(0))),
      refusedWith(/version 2 is not supported/),
    );
  });

  it('bits beyond admin', () => {
    for (const bits of [[11], [0, 11], [10, 11], [15], [0, 23], [63]]) {
      assert.throws(
        () => decodePolicy(policyWith({ permissions: namedBits(bits) })),
        refusedWith(
          new RegExp(
            `set bit ${bits.find((b) => b > 10)}, beyond the last known permission \\(admin, bit 10\\)`,
          ),
        ),
        `bits ${bits}`,
      );
    }
  });

  it('a permissions BIT STRING not in DER form', () => {
    const bad: [Buffer, RegExp][] = [
      [bitString(Buffer.of(0x80, 0x00), 0), /trailing zero bits/], // info, then eight zero bits
      [bitString(Buffer.of(0x80), 0), /trailing zero bits/], // info with seven trailing zero bits
      [bitString(Buffer.of(0x81), 7), /non-zero padding bits/],
      [bitString(Buffer.of(0x80), 8), /[Uu]nused bits/], // asn1js itself refuses this one
      [bitString(Buffer.alloc(0), 3), /[Uu]nused bits/],
    ];
    for (const [permissions, pattern] of bad) {
      assert.throws(
        () => decodePolicy(policyWith({ permissions })),
        refusedWith(pattern),
        permissions.toString('hex'),
      );
    }
  });

  it('duplicate cpus', () => {
    assert.throws(
      () => decodePolicy(withLimit(1, tlv(Tag.set, integer(0), integer(1), integer(1)))),
      refusedWith(/cpu 1 appears twice in the cpus SET/),
    );
  });

  it('cpus out of DER order', () => {
    assert.throws(
      () => decodePolicy(withLimit(1, tlv(Tag.set, integer(200), integer(1)))),
      refusedWith(/cpus SET is not in DER order \(1 after 200\)/),
    );
  });

  it('bridges: bad names, duplicates, unsorted, too many', () => {
    const bridges = (...names: Buffer[]) => decodePolicy(withLimit(4, sequence(...names)));
    assert.throws(() => bridges(utf8String('')), refusedWith(/bridge #1 is not 1 to 64 characters/));
    assert.throws(() => bridges(utf8String('x'.repeat(65))), refusedWith(/bridge #1 is not/));
    assert.throws(() => bridges(utf8String('br0'), utf8String('brü')), refusedWith(/bridge #2 is not/));
    assert.throws(() => bridges(tlv(Tag.utf8String, Buffer.of(0x62, 0x00))), refusedWith(/bridge #1 is not/));
    assert.throws(
      () => bridges(utf8String('br0'), utf8String('br0')),
      refusedWith(/bridge "br0" appears twice/),
    );
    assert.throws(
      () => bridges(utf8String('lan'), utf8String('br0')),
      refusedWith(/not in canonical \(sorted\) order/),
    );
    const many = Array.from({ length: 65 }, (_, i) => utf8String(`br${String(i).padStart(2, '0')}`));
    assert.throws(() => bridges(...many), refusedWith(/65 bridges \(at most 64\)/));
  });

  it('non-canonical DER (long-form lengths, indefinite lengths, padded integers)', () => {
    const variants = [
      // long-form length on the outer SEQUENCE
      Buffer.concat([Buffer.of(0x30, 0x81, 0x32), EXAMPLE_DER.subarray(2)]),
      // indefinite length on the outer SEQUENCE
      Buffer.concat([Buffer.of(0x30, 0x80), EXAMPLE_DER.subarray(2), Buffer.of(0, 0)]),
      // version 1 written as 02 02 00 01
      policyWith({ version: tlv(Tag.integer, Buffer.of(0, 1)) }),
      // workloads 2 written with a padding byte
      withLimit(0, tlv(Tag.integer, Buffer.of(0, 2))),
      // an empty INTEGER
      withLimit(5, tlv(Tag.integer, Buffer.alloc(0))),
    ];
    for (const der of variants) assert.throws(() => decodePolicy(der), refused, der.toString('hex'));
    assert.throws(() => decodePolicy(variants[0]), refusedWith(/not in DER canonical form/));
  });

  it('an oversized value is refused unread', () => {
    const big = tlv(Tag.sequence, integer(1), namedBits([0]), octetString(Buffer.alloc(40_000)));
    assert.throws(() => decodePolicy(big), refusedWith(/bytes \(at most 32768\)/));
  });

  it('never throws anything but our error (seeded mutations of valid encodings)', () => {
    const random = prng(0xbad);
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const der = Buffer.from(i % 2 ? EXAMPLE_DER : encodePolicy(randomPolicy(random)));
      const flips = 1 + Math.floor(random() * 3);
      for (let f = 0; f < flips; f++) der[Math.floor(random() * der.length)] = Math.floor(random() * 256);
      try {
        const p = decodePolicy(der);
        assert.deepEqual(encodePolicy(p), der, 'anything accepted is canonical');
        accepted++;
      } catch (error) {
        assert.ok(error instanceof SigilError && error.code === 'invalid_argument', String(error));
      }
    }
    assert.ok(accepted < 3000);
  });
});

describe('policy extension: narrowing', () => {
  const parent = policy(['info', 'create', 'destroy', 'console', 'delegate'], {
    workloads: 4,
    cpus: [0, 1, 2],
    memoryMiB: 8192,
    blockMiB: 1024,
    bridges: ['br0', 'lan'],
    issuancePerHour: 100,
  });
  const parentLimits = parent.limits as Limits;

  it('a policy narrows itself; smaller policies narrow it', () => {
    assert.deepEqual(isNarrowing(parent, parent), { ok: true });
    const child = policy(['info', 'create'], {
      workloads: 2,
      cpus: [1],
      memoryMiB: 1024,
      blockMiB: 0,
      bridges: ['lan'],
      issuancePerHour: 10,
    });
    assert.deepEqual(isNarrowing(child, parent), { ok: true });
    assert.deepEqual(isNarrowing(policy([]), parent), { ok: true });
  });

  it('a child without limits (a command certificate) narrows any parent', () => {
    assert.deepEqual(isNarrowing(policy(['info']), parent), { ok: true });
    assert.deepEqual(isNarrowing(policy(['info']), policy(['info', 'admin'])), { ok: true });
  });

  for (const permission of PERMISSIONS) {
    it(`refuses escalation of the ${permission} permission`, () => {
      const without = policy(
        PERMISSIONS.filter((p) => p !== permission),
        parentLimits,
      );
      const result = isNarrowing(policy([permission]), without);
      assert.equal(result.ok, false);
      assert.match(
        (result as { reason: string }).reason,
        new RegExp(`^permission ${permission} not held by the parent$`),
      );
    });
  }

  for (const quantity of ['workloads', 'memoryMiB', 'blockMiB', 'issuancePerHour'] as const) {
    it(`refuses escalation of the ${quantity} limit`, () => {
      const child = policy(['info'], { ...parentLimits, [quantity]: parentLimits[quantity] + 1 });
      const result = isNarrowing(child, parent);
      assert.equal(result.ok, false);
      assert.equal(
        (result as { reason: string }).reason,
        `${quantity} ${parentLimits[quantity] + 1} exceeds the parent's ${parentLimits[quantity]}`,
      );
    });
  }

  it('refuses escalation of the cpus limit', () => {
    const result = isNarrowing(policy(['info'], { ...parentLimits, cpus: [1, 3, 7] }), parent);
    assert.deepEqual(result, { ok: false, reason: 'cpus 3,7 not granted by the parent (it has 0,1,2)' });
  });

  it('refuses escalation of the bridges limit', () => {
    const result = isNarrowing(policy(['info'], { ...parentLimits, bridges: ['lan', 'wan'] }), parent);
    assert.deepEqual(result, { ok: false, reason: 'bridges wan not granted by the parent (it has br0,lan)' });
  });

  it('refuses limits under a parent without limits (no resources at all), even all-zero ones', () => {
    const zero: Limits = {
      workloads: 0,
      cpus: [],
      memoryMiB: 0,
      blockMiB: 0,
      bridges: [],
      issuancePerHour: 0,
    };
    const result = isNarrowing(policy(['info'], zero), policy(['info', 'admin']));
    assert.equal(result.ok, false);
    assert.match((result as { reason: string }).reason, /^limits: the parent grants no resources/);
  });

  it('names every escalation at once', () => {
    const child = policy(['info', 'admin', 'revoke'], { ...parentLimits, workloads: 5, cpus: [9] });
    const result = isNarrowing(child, parent);
    assert.deepEqual(result, {
      ok: false,
      reason:
        "permissions revoke, admin not held by the parent; workloads 5 exceeds the parent's 4; " +
        'cpus 9 not granted by the parent (it has 0,1,2)',
    });
  });
});

describe('policy extension: intersection', () => {
  it('intersects permissions and takes the smaller of every limit', () => {
    const a = policy(['info', 'create', 'admin'], {
      workloads: 4,
      cpus: [3, 0, 1],
      memoryMiB: 100,
      blockMiB: 5,
      bridges: ['lan', 'br0'],
      issuancePerHour: 9,
    });
    const b = policy(['admin', 'log', 'info'], {
      workloads: 2,
      cpus: [1, 2, 3],
      memoryMiB: 200,
      blockMiB: 1,
      bridges: ['lan', 'wan'],
      issuancePerHour: 10,
    });
    const expected = {
      version: 1,
      permissions: ['info', 'admin'],
      limits: {
        workloads: 2,
        cpus: [1, 3],
        memoryMiB: 100,
        blockMiB: 1,
        bridges: ['lan'],
        issuancePerHour: 9,
      },
    };
    assert.deepEqual(policyToJson(intersectPolicies(a, b)), expected);
    assert.deepEqual(policyToJson(intersectPolicies(b, a)), expected);
  });

  it('no limits on either side means no resources', () => {
    const a = policy(['info'], LIMITS);
    assert.equal(intersectPolicies(a, policy(['info'])).limits, null);
    assert.equal(intersectPolicies(policy(['info']), a).limits, null);
  });

  it('the intersection narrows both, is idempotent and encodes (seeded random policies)', () => {
    const random = prng(42);
    for (let i = 0; i < 300; i++) {
      const a = randomPolicy(random);
      const b = randomPolicy(random);
      const both = intersectPolicies(a, b);
      assert.deepEqual(isNarrowing(both, a), { ok: true }, `#${i} narrows a`);
      assert.deepEqual(isNarrowing(both, b), { ok: true }, `#${i} narrows b`);
      assert.deepEqual(policyToJson(intersectPolicies(both, both)), policyToJson(both));
      assert.deepEqual(policyToJson(intersectPolicies(a, b)), policyToJson(intersectPolicies(b, a)));
      assert.deepEqual(policyToJson(decodePolicy(encodePolicy(both))), policyToJson(both));
    }
  });

  it('the effective policy of a chain is the intersection along it', () => {
    const admin = policy(PERMISSIONS, {
      workloads: 10,
      cpus: [0, 1, 2, 3],
      memoryMiB: 1 << 16,
      blockMiB: 1 << 20,
      bridges: ['br0', 'lan', 'wan'],
      issuancePerHour: 1000,
    });
    const alice = policy(['info', 'create', 'destroy', 'delegate', 'issue'], {
      workloads: 2,
      cpus: [0, 1],
      memoryMiB: 4096,
      blockMiB: 0,
      bridges: ['lan'],
      issuancePerHour: 60,
    });
    const carol = policy(['info', 'create'], { ...(alice.limits as Limits), workloads: 1, cpus: [1] });
    const effective = [admin, alice, carol].reduce(intersectPolicies);
    assert.deepEqual(policyToJson(effective), policyToJson(carol));
  });
});
