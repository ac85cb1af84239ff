// cfssl's `serve` as the baseline of bench/server.ts: Debian's golang-cfssl
// package (`apt-get install -y golang-cfssl`), a P-256 root CA made here with
// sigil's PKI code, `cfssl serve` on a free port on 127.0.0.1, and one probe
// request that checks it signs before anything is measured.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { accessSync, constants, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { createCsr } from '../../src/pki/csr.ts';
import { createRootCertificate } from '../../src/pki/issuer.ts';
import { generateKeyPair } from '../../src/pki/keys.ts';
import { dnsName, uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { watchChild } from './child-process.ts';

export const CFSSL_INSTALL_HINT =
  'install it with `apt-get install -y golang-cfssl` (Debian/Ubuntu), or point SIGIL_BENCH_CFSSL at a cfssl binary';

const START_TIMEOUT_MS = 15_000;

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

export interface CfsslServer {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly version: string;
  /** What the probe certificate carried: cfssl may drop SANs it does not know. */
  readonly probeSans: string;
  stop(): Promise<void>;
}

function post(url: URL, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json' }, timeout: 5000 },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
    request.end(body);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Writes a P-256 root (ca.pem, ca-key.pem as SEC1) into `dir` and starts
 * `cfssl serve -address 127.0.0.1 -port N -ca ca.pem -ca-key ca-key.pem`
 * with its default signing policy. `-loglevel 2` (warnings): cfssl logs a
 * line per signed certificate at its default level, sigil's server logs
 * nothing per successful call, so neither pays for per-request logging.
 * Resolves once a probe CSR (P-256, a DNS SAN and a SPIFFE URI SAN) is signed.
 */
export async function startCfssl(binary: string, dir: string): Promise<CfsslServer> {
  const caKeys = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey: caKeys.privateKey,
    subject: { commonName: 'cfssl bench root' },
    ttlMs: 24 * 3600_000,
  });
  const certificatePath = join(dir, 'ca.pem');
  const keyPath = join(dir, 'ca-key.pem');
  writeFileSync(certificatePath, encodePem('CERTIFICATE', root.der));
  writeFileSync(keyPath, caKeys.privateKey.export({ type: 'sec1', format: 'pem' }) as string, {
    mode: 0o600,
  });

  const port = await freePort();
  const child: ChildProcess = spawn(
    binary,
    [
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
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const watched = watchChild(child);
  const stop = (): Promise<void> => watched.stop(5000);

  const url = `http://127.0.0.1:${port}`;
  const probeKey = generateKeyPair('p256');
  const csr = createCsr(probeKey.privateKey, {
    commonName: 'cfssl-probe',
    sans: [dnsName('probe.bench.internal'), uriName('spiffe://bench.internal/bench/probe')],
  });
  const body = JSON.stringify({ certificate_request: encodePem('CERTIFICATE REQUEST', csr) });
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (watched.exited) throw new Error(`cfssl serve exited during start-up:\n${watched.output()}`);
    try {
      const answer = await post(new URL('/api/v1/cfssl/sign', url), body);
      const parsed = JSON.parse(answer.text) as { success?: boolean; result?: { certificate?: string } };
      if (parsed.success !== true || typeof parsed.result?.certificate !== 'string') {
        await stop();
        throw new Error(
          `cfssl serve refused the probe CSR (HTTP ${answer.status}): ${answer.text.slice(0, 300)}`,
        );
      }
      const probe = new X509Certificate(parsed.result.certificate);
      return { url, version: cfsslVersion(binary), probeSans: probe.subjectAltName ?? '(none)', stop };
    } catch (error) {
      if (error instanceof Error && error.message.startsWith('cfssl serve refused')) throw error;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(
          `cfssl serve did not answer within ${START_TIMEOUT_MS / 1000} s:\n${watched.output()}`,
        );
      }
      await sleep(50);
    }
  }
}
