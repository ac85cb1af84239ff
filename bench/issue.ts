// Certificates issued per second, in-process on one core, for a P-256, an
// Ed25519 and an RSA-2048 issuer. The leaf is what sigil issues most: profile
// server+client with a SPIFFE ID, a DNS name and an IP (so basicConstraints,
// keyUsage, extKeyUsage, SAN, SKI and AKI). Baselines, measured in the same
// interleaved runs:
//   node-crypto-sign  raw node:crypto signatures/s with the same issuer key over
//                     a 500-byte message: the ceiling for any issuer.
//   peculiar-x509     the same certificate through @peculiar/x509's
//                     X509CertificateGenerator.create with WebCrypto keys.
// Subject keys come from a pregenerated pool: key generation is not measured.
// Targets (information only, never asserted): P-256 issuance at least 50% of
// the raw sign rate and at least 30x @peculiar/x509.
//
// Two more cases follow the issuers (P-256 subject keys, P-256 issuer):
//   key-import  a subject key imported from its SPKI DER, fresh KeyObject each
//               time, the way each path makes it: the old CSR path
//               (createPublicKey on DER options, then keyTypeOf) vs
//               publicKeyFromSpki (proof of possession, and readCsr now); and
//               the same keys issued for straight after import, since what
//               the import caches decides what issuing costs.
//   readCsr     CSRs read per second: the strict DER reader vs the
//               library-based reader it replaced (test/support), with the
//               median of per-round ratios next to the ratio of medians.
import {
  createPublicKey,
  type KeyObject,
  X509Certificate as NodeX509Certificate,
  randomBytes,
  sign,
  type webcrypto,
} from 'node:crypto';
import { createCsr, readCsr } from '../src/pki/csr.ts';
import { createRootCertificate, Issuer } from '../src/pki/issuer.ts';
import { generateKeyPair, type KeyType, keyTypeOf, publicKeyFromSpki, spkiDer } from '../src/pki/keys.ts';
import { dnsName, type GeneralName, ipAddress, spiffeId, uriName } from '../src/pki/names.ts';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  type X509CertificateCreateParamsBase,
  X509CertificateGenerator,
} from '../src/pki/x509-library.ts';
import { readCsrWithLibrary } from '../test/support/csr-library-reader.ts';
import { compare, type Limits, median, type Operation, type Report } from './measure.ts';

export const description =
  'certificates issued per second (server+client leaf) vs raw signing and @peculiar/x509';

const CASES: readonly {
  name: string;
  keyType: KeyType;
  digest: string | null;
  webCrypto: WebCryptoAlgorithms;
}[] = [
  {
    name: 'p256',
    keyType: 'p256',
    digest: 'sha256',
    webCrypto: { key: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  },
  {
    name: 'ed25519',
    keyType: 'ed25519',
    digest: null,
    webCrypto: { key: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
  },
  {
    name: 'rsa2048',
    keyType: 'rsa2048',
    digest: 'sha256',
    webCrypto: {
      key: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    },
  },
];

interface WebCryptoAlgorithms {
  key: Parameters<KeyObject['toCryptoKey']>[0];
  sign: NonNullable<X509CertificateCreateParamsBase['signingAlgorithm']>;
}

const SUBJECT_POOL_SIZE = 32;
const HOUR = 3_600_000;
const SPIFFE_ID = spiffeId('example.org', 'ns', 'prod', 'sa', 'api');
const DNS_NAME = 'api.prod.example.org';
const IP = '10.1.2.3';
const SANS: readonly GeneralName[] = [uriName(SPIFFE_ID), dnsName(DNS_NAME), ipAddress(IP)];

/** A positive 128-bit serial as hex (top bit clear, never zero). */
function serialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] & 0x7f) | 0x01;
  return bytes.toString('hex');
}

/** Refuse to measure work that does not produce a valid certificate from the issuer. */
function checkIssued(der: Buffer | ArrayBuffer, issuerDer: Buffer, what: string): void {
  const cert = new NodeX509Certificate(Buffer.from(der as ArrayBuffer));
  const issuer = new NodeX509Certificate(issuerDer);
  const sans = cert.subjectAltName ?? '';
  if (
    !cert.verify(issuer.publicKey) ||
    !cert.checkIssued(issuer) ||
    !sans.includes(`URI:${SPIFFE_ID}`) ||
    !sans.includes(`DNS:${DNS_NAME}`) ||
    !sans.includes(`IP Address:${IP}`) ||
    cert.keyUsage?.length !== 2
  ) {
    throw new Error(`${what} did not produce the expected certificate`);
  }
}

export async function run(report: Report, limits: Limits): Promise<void> {
  const subjects = Array.from({ length: SUBJECT_POOL_SIZE }, () => generateKeyPair('p256').publicKey);
  const subjectCryptoKeys = subjects.map((key) =>
    key.toCryptoKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']),
  );
  const message = randomBytes(500);

  for (const c of CASES) {
    process.stderr.write(`case ${c.name}\n`);
    const issuerKeys = generateKeyPair(c.keyType);
    const root = createRootCertificate({
      privateKey: issuerKeys.privateKey,
      subject: { commonName: `Bench Root ${c.name}`, organization: 'sigil bench' },
    });
    const issuer = Issuer.fromCertificate(root.der, issuerKeys.privateKey);

    // @peculiar/x509 with WebCrypto keys from the same key material.
    const signingKey = issuerKeys.privateKey.toCryptoKey(c.webCrypto.key, false, ['sign']);
    const rootCert = new X509Certificate(root.der);
    const authorityKeyId = rootCert.getExtension(SubjectKeyIdentifierExtension)?.keyId;
    if (authorityKeyId === undefined) throw new Error('bench root has no subject key identifier');
    const constantExtensions = {
      basic: new BasicConstraintsExtension(false, undefined, true),
      keyUsage: new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
      extKeyUsage: new ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth]),
      authorityKeyId: new AuthorityKeyIdentifierExtension(authorityKeyId),
    };
    const peculiarIssue = async (subjectKey: webcrypto.CryptoKey) => {
      const now = Date.now();
      return X509CertificateGenerator.create({
        serialNumber: serialHex(),
        subject: [{ CN: [SPIFFE_ID] }],
        issuer: rootCert.subjectName,
        notBefore: new Date(now - 30_000),
        notAfter: new Date(now + 24 * HOUR),
        publicKey: subjectKey,
        signingKey,
        signingAlgorithm: c.webCrypto.sign,
        extensions: [
          constantExtensions.basic,
          constantExtensions.keyUsage,
          constantExtensions.extKeyUsage,
          new SubjectAlternativeNameExtension([
            { type: 'url', value: SPIFFE_ID },
            { type: 'dns', value: DNS_NAME },
            { type: 'ip', value: IP },
          ]),
          await SubjectKeyIdentifierExtension.create(subjectKey),
          constantExtensions.authorityKeyId,
        ],
      });
    };

    let next = 0;
    const ours: Operation = () =>
      issuer.issue({ publicKey: subjects[next++ % SUBJECT_POOL_SIZE], profile: 'server+client', sans: SANS });
    const peculiar: Operation = () => peculiarIssue(subjectCryptoKeys[next++ % SUBJECT_POOL_SIZE]);
    const rawSign: Operation = () => sign(c.digest, message, issuerKeys.privateKey);

    checkIssued(
      issuer.issue({ publicKey: subjects[0], profile: 'server+client', sans: SANS }).der,
      root.der,
      'sigil',
    );
    checkIssued((await peculiarIssue(subjectCryptoKeys[0])).rawData, root.der, '@peculiar/x509');

    const medians = await compare(
      { sigil: ours, 'node-crypto-sign': rawSign, 'peculiar-x509': peculiar },
      limits,
      (line) => process.stderr.write(`${line}\n`),
    );
    report({
      case: c.name,
      metric: 'certs_per_s',
      value: medians.sigil,
      baselines: {
        'node-crypto-sign': medians['node-crypto-sign'],
        'peculiar-x509': medians['peculiar-x509'],
      },
    });
  }
  await keyImport(report, limits);
  await csrReading(report, limits);
}

/**
 * `compare` one run at a time, so each round's ratio to `reference` is known:
 * rounds see the same machine, and the median of per-round ratios is less
 * noisy than the ratio of two medians.
 */
async function compareByRound(
  subjects: Readonly<Record<string, Operation>>,
  reference: string,
  limits: Limits,
): Promise<{ medians: Record<string, number>; ratios: Record<string, number> }> {
  const rates: Record<string, number[]> = Object.fromEntries(Object.keys(subjects).map((n) => [n, []]));
  for (let round = 0; round < limits.runs; round++) {
    const one = await compare(subjects, { ...limits, runs: 1, warmupMs: round === 0 ? limits.warmupMs : 1 });
    for (const [name, value] of Object.entries(one)) rates[name].push(value);
    const line = Object.entries(one).map(([name, value]) => `${name} ${Math.round(value)}/s`);
    process.stderr.write(`  round ${round + 1}/${limits.runs}: ${line.join(', ')}\n`);
  }
  const medians = Object.fromEntries(Object.entries(rates).map(([n, v]) => [n, median(v)]));
  const ratios = Object.fromEntries(
    Object.entries(rates).map(([n, v]) => [n, median(v.map((rate, i) => rate / rates[reference][i]))]),
  );
  return { medians, ratios };
}

async function keyImport(report: Report, limits: Limits): Promise<void> {
  process.stderr.write('case key-import (P-256 subject keys, P-256 issuer)\n');
  const spkis = Array.from({ length: SUBJECT_POOL_SIZE }, () => spkiDer(generateKeyPair('p256').publicKey));
  const issuerKeys = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey: issuerKeys.privateKey,
    subject: { commonName: 'Bench Root' },
  });
  const issuer = Issuer.fromCertificate(root.der, issuerKeys.privateKey);
  // The CSR path before issue 14: DER options object, then the key type check.
  const csrPathImport = (der: Buffer) => {
    const key = createPublicKey({ key: der, format: 'der', type: 'spki' });
    keyTypeOf(key);
    return key;
  };
  let next = 0;
  const spki = () => spkis[next++ % SUBJECT_POOL_SIZE];
  const issueFor = (publicKey: KeyObject) =>
    issuer.issue({ publicKey, profile: 'server+client', sans: SANS });
  checkIssued(issueFor(csrPathImport(spki())).der, root.der, 'old CSR key import');
  checkIssued(issueFor(publicKeyFromSpki(spki())).der, root.der, 'publicKeyFromSpki');
  const { medians, ratios } = await compareByRound(
    {
      'import-publicKeyFromSpki': () => publicKeyFromSpki(spki()),
      'import-old-csr-path': () => csrPathImport(spki()),
      'issue-after-publicKeyFromSpki': () => issueFor(publicKeyFromSpki(spki())),
      'issue-after-old-csr-import': () => issueFor(csrPathImport(spki())),
    },
    'import-old-csr-path',
    limits,
  );
  report({
    case: 'key-import',
    metric: 'keys_per_s',
    value: medians['import-publicKeyFromSpki'],
    baselines: { 'old-csr-path': medians['import-old-csr-path'] },
  });
  report({
    case: 'key-import',
    metric: 'speedup_median_per_round',
    value: ratios['import-publicKeyFromSpki'],
    baselines: {},
  });
  report({
    case: 'key-import',
    metric: 'imported_and_issued_per_s',
    value: medians['issue-after-publicKeyFromSpki'],
    baselines: { 'old-csr-path': medians['issue-after-old-csr-import'] },
  });
  report({
    case: 'key-import',
    metric: 'issue_speedup_median_per_round',
    value: ratios['issue-after-publicKeyFromSpki'] / ratios['issue-after-old-csr-import'],
    baselines: {},
  });
}

async function csrReading(report: Report, limits: Limits): Promise<void> {
  process.stderr.write('case readCsr (P-256 CSRs, CN + SPIFFE URI + DNS + IP SANs)\n');
  const csrs = Array.from({ length: SUBJECT_POOL_SIZE }, (_, i) =>
    createCsr(generateKeyPair('p256').privateKey, { commonName: `node-${i}`, sans: SANS }),
  );
  for (const csr of csrs.slice(0, 2)) {
    const fresh = readCsr(csr);
    const old = readCsrWithLibrary(csr);
    if (
      fresh.subject !== old.subject ||
      fresh.sans.length !== SANS.length ||
      old.sans.length !== SANS.length
    ) {
      throw new Error('the two CSR readers disagree on the bench CSRs');
    }
  }
  let next = 0;
  const { medians, ratios } = await compareByRound(
    {
      'strict-der-reader': () => readCsr(csrs[next++ % SUBJECT_POOL_SIZE]),
      'library-reader': () => readCsrWithLibrary(csrs[next++ % SUBJECT_POOL_SIZE]),
    },
    'library-reader',
    limits,
  );
  report({
    case: 'readCsr',
    metric: 'csrs_per_s',
    value: medians['strict-der-reader'],
    baselines: { 'library-reader': medians['library-reader'] },
  });
  report({
    case: 'readCsr',
    metric: 'speedup_median_per_round',
    value: ratios['strict-der-reader'],
    baselines: {},
  });
}
