// `sigil pki quickstart`: everything two gRPC processes need for mutual TLS,
// in one command instead of the usual page of openssl:
//
//   DIR/ca.pem                     the trust anchor both sides load
//   DIR/server.pem, server.key     serverAuth; the given DNS/IP names + spiffe://<td>/server/<first name>
//   DIR/client.pem, client.key     clientAuth; spiffe://<td>/client/<client name>
//   DIR/ca/                        the CA itself, a directory `sigil pki issue --dir DIR/ca` accepts
//
// All files are written at once; nothing is left behind when anything fails.

import { join } from 'node:path';
import { type PlannedFile, PRIVATE, PUBLIC, writeFilesAtomically } from '../files/file-sets.ts';
import { parseCertificate } from '../pki/certificate.ts';
import { parseDuration } from '../pki/duration.ts';
import { Issuer } from '../pki/issuer.ts';
import {
  describeKeyType,
  generateKeyPair,
  type KeyType,
  parseKeyType,
  privateKeyToPem,
} from '../pki/keys.ts';
import { caDirectoryFiles, certificatePem, createCa } from './ca-directory.ts';
import { DEFAULT_ROOT_NAME } from './ca-names.ts';
import { type CertificateSummary, summarizeCertificate } from './certificate-summary.ts';
import { withDirectories } from './directories.ts';
import { describeSans, issueLeaf, type LeafNames, type LeafProfile, planLeafNames } from './leaf.ts';
import { printResult, progress } from './output.ts';

export interface QuickstartCommandOptions {
  readonly out: string;
  readonly dns: readonly string[];
  readonly ip: readonly string[];
  readonly keyType: string;
  readonly trustDomain: string;
  readonly clientName: string;
  readonly ttl: string;
  readonly caTtl: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

interface LeafResult extends CertificateSummary {
  readonly key: string;
  readonly spiffeId: string;
  readonly sans: readonly { readonly type: string; readonly value: string }[];
}

export interface QuickstartResult {
  readonly dir: string;
  readonly keyType: KeyType;
  readonly trustDomain: string;
  readonly trustBundle: string;
  readonly server: LeafResult;
  readonly client: LeafResult;
  readonly caDirectory: string;
  readonly root: CertificateSummary;
}

export function runQuickstart(options: QuickstartCommandOptions): void {
  const dir = options.out;
  const caDir = join(dir, 'ca');
  const keyType = parseKeyType(options.keyType);
  const ttlMs = parseDuration(options.ttl);
  const caTtlMs = parseDuration(options.caTtl);
  const defaults = options.dns.length === 0 && options.ip.length === 0;
  const dns = defaults ? ['localhost'] : options.dns;
  const ip = defaults ? ['127.0.0.1'] : options.ip;

  progress(`generating ${describeKeyType(keyType)} keys…`);
  const ca = createCa({
    keyType,
    trustDomain: options.trustDomain,
    rootName: DEFAULT_ROOT_NAME,
    ttlMs: caTtlMs,
  });
  const { trustDomain } = ca.metadata;
  const serverNames = planLeafNames({ profile: 'server', trustDomain, dns, ips: ip });
  const clientNames = planLeafNames({ profile: 'client', trustDomain, name: options.clientName });
  const issuer = Issuer.fromCertificate(ca.root.der, ca.root.key);
  const files: PlannedFile[] = [
    { path: join(dir, 'ca.pem'), contents: certificatePem(ca.root.der), mode: PUBLIC },
  ];
  const leaf = (profile: LeafProfile, names: LeafNames, base: string): LeafResult => {
    const keys = generateKeyPair(keyType);
    const issued = issueLeaf({ issuer, profile, names, publicKey: keys.publicKey, ttlMs });
    const path = join(dir, `${base}.pem`);
    const key = join(dir, `${base}.key`);
    files.push(
      { path, contents: certificatePem(issued.der), mode: PUBLIC },
      { path: key, contents: privateKeyToPem(keys.privateKey), mode: PRIVATE },
    );
    return {
      ...summarizeCertificate(parseCertificate(issued.der), path),
      key,
      spiffeId: names.spiffeId,
      sans: names.sans.map(({ type, value }) => ({ type, value })),
    };
  };
  const server = leaf('server', serverNames, 'server');
  const client = leaf('client', clientNames, 'client');
  files.push(...caDirectoryFiles(caDir, ca));
  withDirectories([dir, caDir], () => writeFilesAtomically(files, { force: options.force }));

  const result: QuickstartResult = {
    dir,
    keyType,
    trustDomain,
    trustBundle: join(dir, 'ca.pem'),
    server,
    client,
    caDirectory: caDir,
    root: summarizeCertificate(ca.root.info, join(caDir, ca.metadata.files.rootCertificate)),
  };
  printResult(options, result, () => quickstartText(result));
}

function quickstartText(r: QuickstartResult): string {
  const row = (name: string, what: string) => `  ${name.padEnd(24)}${what}`;
  return [
    `created a PKI for mutual TLS in ${r.dir} (${describeKeyType(r.keyType)}, trust domain ${r.trustDomain})`,
    row('ca.pem', `trust anchor for both sides (root SHA-256 ${r.root.fingerprintSha256})`),
    row('server.pem, server.key', `serverAuth, ${describeSans(r.server.sans)}`),
    row('client.pem, client.key', `clientAuth, ${describeSans(r.client.sans)}`),
    row(
      'ca/',
      `the CA; issue more with: sigil pki issue --dir ${r.caDirectory} --server --dns <name> --out <prefix>`,
    ),
    `server and client certificates are valid until ${r.server.notAfter}; private keys are mode 0600`,
    '',
    'check them:',
    `  openssl verify -CAfile ${r.trustBundle} ${r.server.path} ${r.client.path}`,
    'try a mutual-TLS handshake (TLS 1.3, client certificate required):',
    `  openssl s_server -accept 8443 -tls1_3 -Verify 1 -verify_return_error -cert ${r.server.path} -key ${r.server.key} -CAfile ${r.trustBundle}`,
    `  openssl s_client -connect 127.0.0.1:8443 -tls1_3 -cert ${r.client.path} -key ${r.client.key} -CAfile ${r.trustBundle}`,
  ].join('\n');
}
