// `sigil agent --exec CMD` (issue #10): CMD runs after each renewal or
// re-join, as step's --exec does, with the new files already in place and
// the SIGIL_* variables set; its failure is logged and never stops the agent.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { NodeAgent, type RenewalOutcome } from '../../src/agent/agent.ts';
import { RenewalHook } from '../../src/agent/renewal-hook.ts';
import { createLogger } from '../../src/logging.ts';
import { createRootCertificate, Issuer } from '../../src/pki/issuer.ts';
import { generateKeyPair, readPrivateKey } from '../../src/pki/keys.ts';
import { uriName } from '../../src/pki/names.ts';
import { encodePem } from '../../src/pki/pem.ts';
import { repoRoot } from '../cli/pki-helpers.ts';
import { enrol, nodeFile, sigil, startTestServer, tempDir } from './server-fixture.ts';

const server = await startTestServer();

async function enrolledNode(): Promise<string> {
  const dir = join(tempDir('sigil-node-'), 'node');
  const result = await enrol(await server.token('--auto-approve'), dir);
  assert.equal(result.code, 0, result.stderr);
  return dir;
}

function serialOf(pem: string | Buffer): string {
  return new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
}

/** Replaces cert.pem with a certificate for the node's key that expired two hours ago. */
function expireCertificate(dir: string): void {
  const nodeKey = readPrivateKey(readFileSync(join(dir, 'key.pem')), { source: 'key.pem' });
  const past = new Date(Date.now() - 3 * 3_600_000);
  const ca = generateKeyPair('p256');
  const root = createRootCertificate({
    privateKey: ca.privateKey,
    subject: { commonName: 'old' },
    now: past,
  });
  const expired = Issuer.fromCertificate(root.der, ca.privateKey).issue({
    publicKey: createPublicKey(nodeKey),
    profile: 'server+client',
    subject: { commonName: nodeFile(dir).nodeId },
    sans: [uriName(nodeFile(dir).spiffeId ?? '')],
    ttlMs: 3_600_000,
    now: past,
  });
  writeFileSync(join(dir, 'cert.pem'), encodePem('CERTIFICATE', expired.der));
}

/** A logger whose JSON lines land in `lines`. */
function capturingLogger(lines: Record<string, unknown>[]) {
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      callback();
    },
  });
  return createLogger({ destination, pretty: false, level: 'info' });
}

// The command copies the files it is told about, so the test sees exactly
// what was in place when it ran.
const COPY =
  'cp "$SIGIL_CERT_FILE" "$OUT/cert.pem" && cp "$SIGIL_KEY_FILE" "$OUT/key.pem" && ' +
  'printf "%s %s %s %s\\n" "$SIGIL_EVENT" "$SIGIL_SERIAL" "$SIGIL_PREVIOUS_SERIAL" "$SIGIL_NODE_ID" > "$OUT/event"';

describe('sigil agent --exec', { concurrency: 4 }, () => {
  test('--once --force runs the command after the renewal, with the new files in place', async () => {
    const dir = await enrolledNode();
    const out = tempDir('sigil-exec-');
    const old = serialOf(readFileSync(join(dir, 'cert.pem')));
    const result = await sigil(
      ['agent', '--dir', dir, '--once', '--force', '--json', '--exec', COPY.replaceAll('$OUT', out)],
      {},
    );
    assert.equal(result.code, 0, result.stderr);
    const renewed = JSON.parse(result.stdout) as { action: string; serial: string };
    assert.equal(renewed.action, 'renewed');
    // What the command copied is the renewed certificate and its key, as they are now on disk.
    assert.equal(readFileSync(join(out, 'cert.pem'), 'utf8'), readFileSync(join(dir, 'cert.pem'), 'utf8'));
    assert.equal(serialOf(readFileSync(join(out, 'cert.pem'))), renewed.serial);
    assert.ok(
      new X509Certificate(readFileSync(join(out, 'cert.pem'))).checkPrivateKey(
        readPrivateKey(readFileSync(join(out, 'key.pem'))),
      ),
    );
    assert.equal(
      readFileSync(join(out, 'event'), 'utf8'),
      `renewed ${renewed.serial} ${old} ${nodeFile(dir).nodeId}\n`,
    );
  });

  test('a failing command is logged and is not fatal: the renewal stands, exit 0', async () => {
    const dir = await enrolledNode();
    const old = serialOf(readFileSync(join(dir, 'cert.pem')));
    const result = await sigil([
      'agent',
      '--dir',
      dir,
      '--once',
      '--force',
      '--json',
      '--exec',
      'echo reload refused >&2; exit 3',
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.notEqual(serialOf(readFileSync(join(dir, 'cert.pem'))), old, 'renewed all the same');
    const warning = result.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { msg: string; problem?: string; stderr?: string; level: number })
      .find((line) => line.msg.startsWith('--exec command failed'));
    assert.ok(warning, result.stderr);
    assert.equal(warning.problem, 'exited with status 3');
    assert.equal(warning.stderr, 'reload refused');
  });

  test('--once with nothing due does not run the command', async () => {
    const dir = await enrolledNode();
    const out = tempDir('sigil-exec-');
    const result = await sigil(['agent', '--dir', dir, '--once', '--exec', `touch ${out}/ran`]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(existsSync(join(out, 'ran')), false);
  });

  test('the long-running agent runs it after a re-join (expired certificate), then stops on SIGTERM', async () => {
    const dir = await enrolledNode();
    expireCertificate(dir);
    const out = tempDir('sigil-exec-');
    const child = spawn(
      process.execPath,
      [
        join(repoRoot, 'bin', 'sigil.js'),
        'agent',
        '--dir',
        dir,
        '--json',
        '--exec',
        COPY.replaceAll('$OUT', out),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], timeout: 90_000 },
    );
    let stderr = '';
    const ran = new Promise<void>((resolve) => {
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
        if (stderr.includes('--exec command')) resolve();
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await ran;
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
    const [event, serial] = readFileSync(join(out, 'event'), 'utf8').split(' ');
    assert.equal(event, 'rejoined');
    assert.equal(serial, serialOf(readFileSync(join(dir, 'cert.pem'))));
    assert.equal(readFileSync(join(out, 'cert.pem'), 'utf8'), readFileSync(join(dir, 'cert.pem'), 'utf8'));
  });

  test('a running NodeAgent with a RenewalHook runs it for each scheduled renewal', async () => {
    const dir = await enrolledNode();
    const out = tempDir('sigil-exec-');
    const lines: Record<string, unknown>[] = [];
    const logger = capturingLogger(lines);
    // A clock 20 hours ahead: the 24-hour certificate is due at once.
    const agent = await NodeAgent.open({ dir, now: () => new Date(Date.now() + 20 * 3_600_000) });
    const hook = new RenewalHook({
      command: COPY.replaceAll('$OUT', out),
      dir,
      nodeId: agent.info.nodeId,
      logger,
    });
    const results = new Promise<RenewalOutcome>((resolve) => {
      agent.once('renewed', (outcome) => {
        hook.run(outcome).then(() => resolve(outcome));
      });
    });
    agent.start();
    try {
      const outcome = await results;
      assert.equal(outcome.kind, 'renewed');
      assert.equal(readFileSync(join(out, 'event'), 'utf8').split(' ')[1], outcome.certificate.serial);
      assert.ok(lines.some((line) => line.msg === '--exec command ran after the renewal'));
    } finally {
      await agent.close();
      await hook.idle();
    }
  });

  test('a command that does not finish is killed after the timeout and reported', async () => {
    const lines: Record<string, unknown>[] = [];
    const hook = new RenewalHook({
      command: 'sleep 60',
      dir: tempDir('sigil-exec-'),
      nodeId: 'n-test',
      logger: capturingLogger(lines),
      timeoutMs: 200,
    });
    const certificate = {
      serial: 'ab',
      spiffeId: null,
      notBefore: new Date(),
      notAfter: new Date(),
      renewAt: new Date(),
    };
    const result = await hook.run({ kind: 'renewed', certificate, previousSerial: 'aa' });
    assert.equal(result.ok, false);
    assert.match(result.problem ?? '', /still running after 200 ms; killed/);
    assert.ok(lines.some((line) => String(line.msg).startsWith('--exec command failed')));
  });
});
