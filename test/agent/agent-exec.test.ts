// `sigil agent --exec CMD` (issue #10): CMD runs after each renewal or
// re-join, as step's --exec does, with the new files already in place and
// the SIGIL_* variables set; its failure is logged and never stops the agent.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { NodeAgent, type RenewalOutcome } from '../../src/agent/agent.ts';
import { RenewalHook } from '../../src/agent/renewal-hook.ts';
import { readPrivateKey } from '../../src/pki/keys.ts';
import { sigil, startSigil } from '../support/cli.ts';
import { capturingLogger } from '../support/log-lines.ts';
import { serialOf } from '../support/serials.ts';
import { tempDir } from '../support/temp-dir.ts';
import { expireCertificate, nodeFile, startTestServer } from './server-fixture.ts';

const server = await startTestServer();

// The command copies the files it is told about, so the test sees exactly
// what was in place when it ran.
const COPY =
  'cp "$SIGIL_CERT_FILE" "$OUT/cert.pem" && cp "$SIGIL_KEY_FILE" "$OUT/key.pem" && ' +
  'printf "%s %s %s %s\\n" "$SIGIL_EVENT" "$SIGIL_SERIAL" "$SIGIL_PREVIOUS_SERIAL" "$SIGIL_NODE_ID" > "$OUT/event"';

describe('sigil agent --exec', { concurrency: 4 }, () => {
  test('--once --force runs the command after the renewal, with the new files in place', async () => {
    const dir = await server.enrolledNode();
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
    const dir = await server.enrolledNode();
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
    const dir = await server.enrolledNode();
    const out = tempDir('sigil-exec-');
    const result = await sigil(['agent', '--dir', dir, '--once', '--exec', `touch ${out}/ran`]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(existsSync(join(out, 'ran')), false);
  });

  test('the long-running agent runs it after a re-join (expired certificate), then stops on SIGTERM', async () => {
    const dir = await server.enrolledNode();
    expireCertificate(dir);
    const out = tempDir('sigil-exec-');
    const agent = startSigil(['agent', '--dir', dir, '--json', '--exec', COPY.replaceAll('$OUT', out)], {
      timeoutMs: 90_000,
    });
    await agent.printed('--exec command');
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0, agent.stderr());
    const [event, serial] = readFileSync(join(out, 'event'), 'utf8').split(' ');
    assert.equal(event, 'rejoined');
    assert.equal(serial, serialOf(readFileSync(join(dir, 'cert.pem'))));
    assert.equal(readFileSync(join(out, 'cert.pem'), 'utf8'), readFileSync(join(dir, 'cert.pem'), 'utf8'));
  });

  test('a running NodeAgent with a RenewalHook runs it for each scheduled renewal', async () => {
    const dir = await server.enrolledNode();
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
