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
import {
  type KeyObject,
  X509Certificate as NodeX509Certificate,
  randomBytes,
  sign,
  type webcrypto,
} from 'node:crypto';
import { createRootCertificate, Issuer } from '../src/pki/issuer.ts';
import { generateKeyPair, type KeyType } from '../src/pki/keys.ts';
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
import { compare, type Limits, type Operation, type Report } from './measure.ts';

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
}
