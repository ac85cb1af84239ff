// cfssl's `serve` as the baseline of bench/server.ts: Debian's golang-cfssl
// package (`apt-get install -y golang-cfssl`), a P-256 root CA made here with
// sigil's PKI code, `cfssl serve` on a free port on 127.0.0.1, and one probe
// request that checks it signs before anything is measured.
//
// Two set-ups:
//   production  TLS (a server certificate from the same root; Go's net/http
//               then speaks HTTP/2) and cfssl's certificate database: SQLite
//               in WAL with synchronous=FULL, the schema of cfssl's
//               certdb/sqlite/migrations, one row written per certificate.
//   bare        plaintext HTTP/1.1 and no database: cheaper than anything a
//               user would deploy, kept as a labelled reference.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { accessSync, constants, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { createCsr } from '../../src/pki/csr.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { dnsName, ipAddress, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { watchChild } from './child-process.ts';

export const CFSSL_INSTALL_HINT =
  'install it with `apt-get install -y golang-cfssl` (Debian/Ubuntu), or point SIGIL_BENCH_CFSSL at a cfssl binary';

const START_TIMEOUT_MS = 15_000;
const SIGN_PATH = '/api/v1/cfssl/sign';

/**
 * cfssl's certdb/sqlite/migrations (001_CreateCertificates.sql and
 * 002_AddMetadataToCertificates.sql): the rows cfssl writes per certificate.
 * Debian's cfssl (a 2016 snapshot) fills the 001 columns; the 002 ones stay NULL.
 */
const CFSSL_SQLITE_SCHEMA = `
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier) REFERENCES certificates(serial_number, authority_key_identifier)
);
ALTER TABLE certificates ADD COLUMN "issued_at" timestamp;
ALTER TABLE certificates ADD COLUMN "not_before" timestamp;
ALTER TABLE certificates ADD COLUMN "metadata" text;
ALTER TABLE certificates ADD COLUMN "sans" text;
ALTER TABLE certificates ADD COLUMN "common_name" text;
`;

/** The cfssl binary: $SIGIL_BENCH_CFSSL, else `cfssl` on PATH; null when there is none. */
export function findCfssl(): string | null {
  const explicit = process.env.SIGIL_BENCH_CFSSL;
  const candidates =
    explicit !== undefined && explicit !== ''
      ? [explicit]
      : (process.env.PATH ?? '').split(delimiter).map((dir) => join(dir, 'cfssl'));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** "1.2.0 (go1.19.8)" or what `cfssl version` says first. */
export function cfsslVersion(binary: string): string {
  try {
    const text = execFileSync(binary, ['version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const version = /Version:\s*(\S+)/.exec(text)?.[1] ?? 'unknown version';
    const runtime = /Runtime:\s*(\S+)/.exec(text)?.[1];
    return runtime ? `${version} (${runtime})` : version;
  } catch {
    return 'unknown version';
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface CfsslOptions {
  /** TLS with a server certificate from the signing root (HTTP/2), else plaintext HTTP/1.1. */
  readonly tls: boolean;
  /** cfssl's certificate database (SQLite, WAL, synchronous=FULL), else none. */
  readonly database: boolean;
}

export interface CfsslServer {
  /** https://127.0.0.1:PORT or http://127.0.0.1:PORT */
  readonly url: string;
  readonly pid: number;
  readonly version: string;
  /** The root (PEM) that signs and that issued the TLS certificate: what a TLS client trusts. */
  readonly rootPem: string;
  /** The negotiated application protocol of the probe: "h2" over TLS, "http/1.1" in plaintext. */
  readonly protocol: string;
  /** What the probe certificate carried: cfssl may drop SANs it does not know. */
  readonly probeSans: string;
  /** The SQLite file of the certificate database, or null. */
  readonly databasePath: string | null;
  /** Rows in the database's `certificates` table (0 without a database). */
  certificateRows(): number;
  stop(): Promise<void>;
}

interface Answer {
  readonly status: number;
  readonly text: string;
  readonly protocol: string;
}

function postHttp1(url: URL, body: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json' }, timeout: 5000 },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
            protocol: `http/${response.httpVersion}`,
          }),
        );
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
    request.end(body);
  });
}

/** One POST on a fresh HTTP/2-over-TLS session that must negotiate h2 (ALPN) and trust only `rootPem`. */
function postHttp2(url: URL, body: string, rootPem: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url.origin, { ca: rootPem, minVersion: 'TLSv1.3' });
    const fail = (error: Error): void => {
      session.destroy();
      reject(error);
    };
    session.on('error', fail);
    session.setTimeout(5000, () => fail(new Error('timed out')));
    const stream = session.request({
      ':method': 'POST',
      ':path': url.pathname,
      'content-type': 'application/json',
    });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on('response', (headers) => {
      status = Number(headers[':status']);
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const protocol = session.alpnProtocol ?? 'none';
      session.close();
      resolve({ status, text: Buffer.concat(chunks).toString('utf8'), protocol });
    });
    stream.on('error', fail);
    stream.end(body);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An empty certificate database with cfssl's schema, in WAL; returns the db-config file's path. */
function createCertificateDatabase(dir: string): { configPath: string; databasePath: string } {
  const databasePath = join(dir, 'certdb.sqlite');
  const db = new DatabaseSync(databasePath);
  try {
    db.exec('PRAGMA journal_mode = WAL');
    db.exec(CFSSL_SQLITE_SCHEMA);
  } finally {
    db.close();
  }
  const configPath = join(dir, 'db-config.json');
  // mattn/go-sqlite3 applies _journal_mode and _synchronous on every connection it opens.
  writeFileSync(
    configPath,
    JSON.stringify({
      driver: 'sqlite3',
      data_source: `file:${databasePath}?_journal_mode=WAL&_synchronous=FULL`,
    }),
  );
  return { configPath, databasePath };
}

/** Rows of `certificates`, read through a separate read-only connection (WAL lets it see committed rows). */
function countCertificateRows(databasePath: string): number {
  const db = new DatabaseSync(databasePath, { readOnly: true });
  try {
    const row = db.prepare('SELECT count(*) AS n FROM certificates').get() as { n: number };
    return Number(row.n);
  } finally {
    db.close();
  }
}

/**
 * Writes a P-256 root (ca.pem, ca-key.pem as SEC1) into `dir` and starts
 * `cfssl serve -address 127.0.0.1 -port N -ca ca.pem -ca-key ca-key.pem`
 * with its default signing policy, plus -tls-cert/-tls-key and -db-config
 * as `options` ask. `-loglevel 2` (warnings): cfssl logs a line per signed
 * certificate at its default level, sigil's server logs nothing per
 * successful call, so neither pays for per-request logging. Resolves once a
 * probe CSR (P-256, a DNS SAN and a SPIFFE URI SAN) is signed.
 */
export async function startCfssl(binary: string, dir: string, options: CfsslOptions): Promise<CfsslServer> {
  const caKeys = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey: caKeys.privateKey,
    subject: { commonName: 'cfssl bench root' },
    ttlMs: 24 * 3600_000,
  });
  const rootPem = encodePem('CERTIFICATE', root.der);
  const certificatePath = join(dir, 'ca.pem');
  const keyPath = join(dir, 'ca-key.pem');
  writeFileSync(certificatePath, rootPem);
  writeFileSync(keyPath, caKeys.privateKey.export({ type: 'sec1', format: 'pem' }) as string, {
    mode: 0o600,
  });

  const port = await freePort();
  const args = [
    'serve',
    '-address',
    '127.0.0.1',
    '-port',
    String(port),
    '-ca',
    certificatePath,
    '-ca-key',
    keyPath,
    '-loglevel',
    '2',
  ];
  if (options.tls) {
    const tlsKeys = generateKeyPair('p256');
    const tlsCertificate = Issuer.fromIssued(root, caKeys.privateKey).issue({
      publicKey: tlsKeys.publicKey,
      profile: 'server',
      subject: { commonName: 'cfssl bench server' },
      sans: [dnsName('localhost'), ipAddress('127.0.0.1')],
      ttlMs: 24 * 3600_000,
    });
    const tlsCertificatePath = join(dir, 'tls.pem');
    const tlsKeyPath = join(dir, 'tls-key.pem');
    writeFileSync(tlsCertificatePath, encodePem('CERTIFICATE', tlsCertificate.der));
    writeFileSync(tlsKeyPath, tlsKeys.privateKey.export({ type: 'sec1', format: 'pem' }) as string, {
      mode: 0o600,
    });
    args.push('-tls-cert', tlsCertificatePath, '-tls-key', tlsKeyPath);
  }
  let databasePath: string | null = null;
  if (options.database) {
    const database = createCertificateDatabase(dir);
    databasePath = database.databasePath;
    args.push('-db-config', database.configPath);
  }

  const child: ChildProcess = spawn(binary, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const watched = watchChild(child);
  const stop = (): Promise<void> => watched.stop(5000);

  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const probeKey = generateKeyPair('p256');
  const csr = createCsr(probeKey.privateKey, {
    commonName: 'cfssl-probe',
    sans: [dnsName('probe.bench.internal'), uriName('spiffe://bench.internal/bench/probe')],
  });
  const body = JSON.stringify({ certificate_request: encodePem('CERTIFICATE REQUEST', csr) });
  const signUrl = new URL(SIGN_PATH, url);
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (watched.exited) throw new Error(`cfssl serve exited during start-up:\n${watched.output()}`);
    let answer: Answer;
    try {
      answer = options.tls ? await postHttp2(signUrl, body, rootPem) : await postHttp1(signUrl, body);
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(
          `cfssl serve did not answer within ${START_TIMEOUT_MS / 1000} s ` +
            `(${error instanceof Error ? error.message : String(error)}):\n${watched.output()}`,
        );
      }
      await sleep(50);
      continue;
    }
    const parsed = JSON.parse(answer.text) as { success?: boolean; result?: { certificate?: string } };
    if (parsed.success !== true || typeof parsed.result?.certificate !== 'string') {
      await stop();
      throw new Error(
        `cfssl serve refused the probe CSR (HTTP ${answer.status}): ${answer.text.slice(0, 300)}`,
      );
    }
    if (options.tls && answer.protocol !== 'h2') {
      await stop();
      throw new Error(`cfssl serve over TLS negotiated ${answer.protocol}, not h2`);
    }
    const probe = new X509Certificate(parsed.result.certificate);
    const rows = databasePath === null ? 0 : countCertificateRows(databasePath);
    if (databasePath !== null && rows !== 1) {
      await stop();
      throw new Error(`cfssl serve signed the probe but its database holds ${rows} certificate rows, not 1`);
    }
    return {
      url,
      pid: child.pid as number,
      version: cfsslVersion(binary),
      rootPem,
      protocol: answer.protocol,
      probeSans: probe.subjectAltName ?? '(none)',
      databasePath,
      certificateRows: () => (databasePath === null ? 0 : countCertificateRows(databasePath)),
      stop,
    };
  }
}
